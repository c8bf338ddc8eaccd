//! Identities, zeros and inverses.

use super::super::{Math, Shapes};
use super::{identity, zero};
use egg::{rewrite as rw, Rewrite};

pub(super) fn rules() -> Vec<Rewrite<Math, Shapes>> {
    vec![
        rw!("identity-left";    "(* ?i ?a)"     => "?a" if identity("?i")),
        rw!("identity-right";   "(* ?a ?i)"     => "?a" if identity("?i")),
        rw!("scale-one";        "(scale ?i ?a)" => "?a" if identity("?i")),
        rw!("add-zero-left";    "(+ ?z ?a)"     => "?a" if zero("?z")),
        rw!("add-zero-right";   "(+ ?a ?z)"     => "?a" if zero("?z")),
        rw!("inverse-involution"; "(inv (inv ?a))" => "?a"),
    ]
}
