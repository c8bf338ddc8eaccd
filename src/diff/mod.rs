//! Differentials: `d(·)` for every operator, linear in the differentials of names.
//!
//! A name's differential stays a leaf (`dn2`), so results are written in the
//! user's own names; the chain rule through definitions lives in [`chain`].

pub mod backward;
pub mod chain;
pub mod identify;
pub mod rule;

use crate::ir::{self, rat, Builtin, Expr, Func, Kind, Op};
use num_rational::BigRational;
use num_traits::One;

/// Replaces the differential `d name` by `to`.
pub fn substitute_diff(e: &Expr, name: &str, to: &Expr) -> Expr {
    ir::map_bottom_up(e, &mut |n| match &n.op {
        Op::Diff(m) if &**m == name => to.clone(),
        _ => n,
    })
}

/// `⟨a, b⟩` for equal shapes, written as a textbook would: `aᵀb` for columns,
/// `a bᵀ` for rows, `tr(aᵀb)` for matrices.
pub fn inner(a: Expr, b: Expr) -> Expr {
    let s = a.shape.clone();
    if s.is_scalar() {
        ir::matmul(a, b)
    } else if s.cols.is_one() {
        ir::matmul(ir::transpose(a), b)
    } else if s.rows.is_one() {
        ir::matmul(a, ir::transpose(b))
    } else {
        ir::trace(ir::matmul(ir::transpose(a), b))
    }
}

/// The differential of `e`: every name `X` varies by `dX`.
///
/// ```
/// use matdiff::{ir, shape::{Dim, Shape}};
/// let n = Dim::sym("n");
/// let a = ir::var("A", Shape::new(n.clone(), n.clone()), false);
/// let x = ir::var("x", Shape::new(n, Dim::one()), false);
/// let q = ir::product([ir::transpose(x.clone()), a, x]);
/// assert_eq!(matdiff::print::text(&matdiff::diff::differential(&q)), "(dxᵀ A + xᵀ dA) x + xᵀ A dx");
/// ```
pub fn differential(e: &Expr) -> Expr {
    let d = differential;
    let z = || ir::zero(e.shape.clone());
    match &e.op {
        Op::Var { name, .. } => ir::diff(name, e.shape.clone()),
        Op::Diff(_) | Op::Num(_) | Op::Identity | Op::Zero | Op::Ones | Op::Size(_) | Op::Commutation(..) => z(),
        Op::Add(ts) => ir::sum_of(ts.iter().map(d).collect()),
        Op::Scale(s, x) => ir::add(ir::scalar_mul(d(s), x.clone()), ir::scalar_mul(s.clone(), d(x))),
        Op::MatMul(a, b) => ir::add(ir::matmul(d(a), b.clone()), ir::matmul(a.clone(), d(b))),
        Op::Div(a, s) => {
            ir::sub(ir::div(d(a), s.clone()), ir::div(ir::scalar_mul(d(s), a.clone()), ir::power(s.clone(), 2)))
        }
        Op::Transpose(x) => ir::transpose(d(x)),
        Op::Inverse(_) => ir::neg(ir::product([e.clone(), d(e_inner(e)), e.clone()])),
        Op::Power(x, k) => power_differential(x, *k),
        Op::Hadamard(a, b) => ir::add(ir::hadamard(d(a), b.clone()), ir::hadamard(a.clone(), d(b))),
        Op::HadamardDiv(a, b) => ir::sub(
            ir::hadamard_div(d(a), b.clone()),
            ir::hadamard_div(ir::hadamard(a.clone(), d(b)), ir::hadamard_pow(b.clone(), rat(2))),
        ),
        Op::HadamardPow(a, k) => {
            ir::hadamard(ir::scale(k.clone(), ir::hadamard_pow(a.clone(), k - BigRational::one())), d(a))
        }
        Op::Kron(a, b) => ir::add(ir::kron(d(a), b.clone()), ir::kron(a.clone(), d(b))),
        Op::Vec(x, o) => ir::vec(d(x), *o),
        Op::Unvec(x, o) => ir::unvec(d(x), e.shape.clone(), *o),
        Op::DiagMat(x) => ir::diag_mat(d(x)),
        Op::DiagVec(x) => ir::diag_vec(d(x)),
        Op::Trace(x) => ir::trace(d(x)),
        Op::Det(x) => ir::scalar_mul(e.clone(), ir::trace(ir::matmul(ir::inverse(x.clone()), d(x)))),
        Op::Logdet(x) => ir::trace(ir::matmul(ir::inverse(x.clone()), d(x))),
        Op::Sum(x) => ir::sum(d(x)),
        Op::Norm(x) => ir::div(inner(x.clone(), d(x)), e.clone()),
        Op::Apply(f, x) => match f {
            Func::Builtin(Builtin { kind: Kind::Matrix { differential, .. }, .. }) => differential(x, d(x)),
            _ => {
                let fp = crate::functions::derivative(f, x, 1).expect("an elementwise function's derivative");
                ir::hadamard(fp, d(x))
            }
        },
    }
}

pub use crate::ir::{power_terms, MAX_POWER_TERMS};

fn e_inner(e: &Expr) -> &Expr {
    e.op.children()[0]
}

fn power_differential(x: &Expr, k: i64) -> Expr {
    if let Op::Norm(y) = &x.op {
        // d‖y‖ᵏ = k ‖y‖ᵏ⁻² ⟨y, dy⟩
        return ir::scalar_mul(ir::scale(rat(k), ir::power(x.clone(), k - 2)), inner(y.clone(), differential(y)));
    }
    if x.shape.is_scalar() {
        return ir::scalar_mul(ir::scale(rat(k), ir::power(x.clone(), k - 1)), differential(x));
    }
    let (base, dbase, m) = if k > 0 {
        (x.clone(), differential(x), k)
    } else {
        let inv = ir::inverse(x.clone());
        let dinv = differential(&inv);
        (inv, dinv, -k)
    };
    let terms = (0..m)
        .map(|i| ir::product([ir::power(base.clone(), i), dbase.clone(), ir::power(base.clone(), m - 1 - i)]))
        .collect();
    ir::sum_of(terms)
}
