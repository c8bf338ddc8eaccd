//! Traces: cyclic, transpose-blind, linear; `tr(a bᵀ) = bᵀ a`.

use super::super::{Math, Shapes};
use super::column;
use egg::{rewrite as rw, Rewrite};

pub(super) fn rules() -> Vec<Rewrite<Math, Shapes>> {
    vec![
        rw!("trace-transpose"; "(tr (T ?a))"        => "(tr ?a)"),
        rw!("trace-cyclic";    "(tr (* ?a ?b))"     => "(tr (* ?b ?a))"),
        rw!("trace-outer";     "(tr (* ?a ?b))"     => "(* ?b ?a)" if column("?a")),
        rw!("trace-scale";     "(tr (scale ?s ?a))" => "(scale ?s (tr ?a))"),
        rw!("trace-sum";       "(tr (+ ?a ?b))"     => "(+ (tr ?a) (tr ?b))"),
    ]
}
