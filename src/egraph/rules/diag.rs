//! Diagonal matrices and Hadamard products: `diag(a) b = a ∘ b`.

use super::super::{Math, Shapes};
use super::{both, column, row, same_shape, transposed_shape};
use egg::{rewrite as rw, Rewrite};

pub(super) fn rules() -> Vec<Rewrite<Math, Shapes>> {
    let mut rules = vec![
        rw!("diag-times-column";   "(* (diag ?a) ?b)" => "(o ?a ?b)" if both(column("?b"), same_shape("?a", "?b"))),
        rw!("diag-times-column-t"; "(* (diag ?a) ?b)" => "(o (T ?a) ?b)" if both(column("?b"), transposed_shape("?a", "?b"))),
        rw!("row-times-diag";      "(* ?b (diag ?a))" => "(o ?b ?a)" if both(row("?b"), same_shape("?a", "?b"))),
        rw!("row-times-diag-t";    "(* ?b (diag ?a))" => "(o ?b (T ?a))" if both(row("?b"), transposed_shape("?a", "?b"))),
        rw!("diag-diag";           "(* (diag ?a) (diag ?b))" => "(diag (o ?a ?b))" if same_shape("?a", "?b")),
        rw!("diag-sum";            "(+ (diag ?a) (diag ?b))" => "(diag (+ ?a ?b))" if same_shape("?a", "?b")),
        rw!("diag-scale";          "(scale ?s (diag ?a))"    => "(diag (scale ?s ?a))"),
        rw!("hadamard-commute";    "(o ?a ?b)" => "(o ?b ?a)"),
    ];
    rules.extend(rw!("hadamard-assoc"; "(o (o ?a ?b) ?c)" <=> "(o ?a (o ?b ?c))"));
    rules
}
