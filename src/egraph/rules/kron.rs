//! Kronecker products, guarded by the shape analysis.

use super::super::{Math, Shapes};
use super::products_fit;
use egg::{rewrite as rw, Rewrite};

pub(super) fn rules() -> Vec<Rewrite<Math, Shapes>> {
    vec![
        rw!("kron-mixed-product"; "(* (kron ?a ?b) (kron ?c ?d))" => "(kron (* ?a ?c) (* ?b ?d))"
            if products_fit("?a", "?c", "?b", "?d")),
        rw!("kron-scale-left";  "(kron (scale ?s ?a) ?b)" => "(scale ?s (kron ?a ?b))"),
        rw!("kron-scale-right"; "(kron ?a (scale ?s ?b))" => "(scale ?s (kron ?a ?b))"),
        rw!("kron-inverse";     "(inv (kron ?a ?b))"      => "(kron (inv ?a) (inv ?b))"),
    ]
}
