//! Rewrite rules, one file per family. Rules are directed where a direction
//! is clearly simpler, and guarded by shapes where sizes must agree.

mod diag;
mod identity;
mod kron;
mod product;
mod trace;
mod transpose;

use super::{Graph, Math, Shapes};
use crate::shape::Shape;
use egg::{Id, Rewrite, Subst, Var};

/// Every rule.
pub fn all() -> Vec<Rewrite<Math, Shapes>> {
    [transpose::rules(), product::rules(), diag::rules(), kron::rules(), trace::rules(), identity::rules()]
        .into_iter()
        .flatten()
        .collect()
}

fn var(v: &str) -> Var {
    v.parse().expect("pattern variable")
}

fn shape(egraph: &Graph, subst: &Subst, v: Var) -> Shape {
    egraph[subst[v]].data.shape.clone()
}

/// `v` is 1×1.
pub(crate) fn scalar(v: &str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let v = var(v);
    move |g, _, s| shape(g, s, v).is_scalar()
}

/// `v` is a column vector (and not 1×1).
pub(crate) fn column(v: &str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let v = var(v);
    move |g, _, s| {
        let sh = shape(g, s, v);
        sh.cols.is_one() && !sh.rows.is_one()
    }
}

/// `v` is a row vector (and not 1×1).
pub(crate) fn row(v: &str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let v = var(v);
    move |g, _, s| {
        let sh = shape(g, s, v);
        sh.rows.is_one() && !sh.cols.is_one()
    }
}

/// `a` and `b` have one shape.
pub(crate) fn same_shape(a: &str, b: &str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let (a, b) = (var(a), var(b));
    move |g, _, s| shape(g, s, a) == shape(g, s, b)
}

/// `a` has the shape of `b` transposed.
pub(crate) fn transposed_shape(a: &str, b: &str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let (a, b) = (var(a), var(b));
    move |g, _, s| shape(g, s, a) == shape(g, s, b).transposed()
}

/// `A B` and `C D` are both defined: the inner sizes agree.
pub(crate) fn products_fit(a: &str, c: &str, b: &str, d: &str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let (a, b, c, d) = (var(a), var(b), var(c), var(d));
    move |g, _, s| shape(g, s, a).cols == shape(g, s, c).rows && shape(g, s, b).cols == shape(g, s, d).rows
}

/// `v` is an identity.
pub(crate) fn identity(v: &str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let v = var(v);
    move |g, _, s| g[s[v]].data.identity
}

/// `v` is a zero.
pub(crate) fn zero(v: &str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let v = var(v);
    move |g, _, s| g[s[v]].data.zero
}

/// Both conditions.
pub(crate) fn both(
    a: impl Fn(&mut Graph, Id, &Subst) -> bool,
    b: impl Fn(&mut Graph, Id, &Subst) -> bool,
) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    move |g, id, s| a(g, id, s) && b(g, id, s)
}
