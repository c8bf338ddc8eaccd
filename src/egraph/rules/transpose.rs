//! Transposes move toward the leaves.

use super::super::{Math, Shapes};
use super::scalar;
use egg::{rewrite as rw, Rewrite};

pub(super) fn rules() -> Vec<Rewrite<Math, Shapes>> {
    vec![
        rw!("transpose-involution"; "(T (T ?a))"          => "?a"),
        rw!("transpose-product";    "(T (* ?a ?b))"       => "(* (T ?b) (T ?a))"),
        rw!("transpose-sum";        "(T (+ ?a ?b))"       => "(+ (T ?a) (T ?b))"),
        rw!("transpose-scale";      "(T (scale ?s ?a))"   => "(scale ?s (T ?a))"),
        rw!("transpose-kron";       "(T (kron ?a ?b))"    => "(kron (T ?a) (T ?b))"),
        rw!("transpose-hadamard";   "(T (o ?a ?b))"       => "(o (T ?a) (T ?b))"),
        rw!("transpose-inverse";    "(T (inv ?a))"        => "(inv (T ?a))"),
        rw!("transpose-diag";       "(T (diag ?a))"       => "(diag ?a)"),
        rw!("transpose-scalar";     "(T ?a)"              => "?a" if scalar("?a")),
    ]
}
