//! Products, scalars and sums. Associativity is free (so matrix chains can be
//! reordered by cost); sums factor rather than expand.

use super::super::{Math, Shapes};
use super::{both, row, scalar};
use egg::{rewrite as rw, Rewrite};

pub(super) fn rules() -> Vec<Rewrite<Math, Shapes>> {
    let mut rules = vec![
        rw!("scale-out-left";   "(* (scale ?s ?a) ?b)"       => "(scale ?s (* ?a ?b))"),
        rw!("scale-out-right";  "(* ?a (scale ?s ?b))"       => "(scale ?s (* ?a ?b))"),
        rw!("scale-scale";      "(scale ?s (scale ?t ?a))"   => "(scale (* ?s ?t) ?a)"),
        rw!("scale-sum";        "(+ (scale ?s ?a) (scale ?t ?a))" => "(scale (+ ?s ?t) ?a)"),
        rw!("scalar-product-left";  "(* ?s ?a)"  => "(scale ?s ?a)" if both(scalar("?s"), row("?a"))),
        rw!("sum-twice";        "(+ ?a ?a)"                  => "(scale 2 ?a)"),
        rw!("factor-right";     "(+ (* ?a ?c) (* ?b ?c))"    => "(* (+ ?a ?b) ?c)"),
        rw!("factor-left";      "(+ (* ?a ?b) (* ?a ?c))"    => "(* ?a (+ ?b ?c))"),
        rw!("factor-scale";     "(+ (scale ?s ?a) (scale ?s ?b))" => "(scale ?s (+ ?a ?b))"),
        rw!("hadamard-scale-left";  "(o (scale ?s ?a) ?b)"   => "(scale ?s (o ?a ?b))"),
        rw!("hadamard-scale-right"; "(o ?a (scale ?s ?b))"   => "(scale ?s (o ?a ?b))"),
        rw!("div-scale";        "(/ (scale ?s ?a) ?t)"       => "(scale ?s (/ ?a ?t))"),
    ];
    rules.extend(rw!("product-assoc"; "(* (* ?a ?b) ?c)" <=> "(* ?a (* ?b ?c))"));
    rules
}
