//! Identification (Magnus & Neudecker): from a differential, linear in `dX`,
//! to the derivative.
//!
//! Two routes, each exact:
//! - [`jacobian`]: `vec(dF) = J vec(dX)`, in Kronecker form (`n1 ⊗ I`), using
//!   `vec(A X B) = (A ⊗ Bᵀ) vec X` for rows or `(Bᵀ ⊗ A) vec X` for columns;
//! - [`adjoint`]: reverse mode, `⟨Ḡ, dF⟩ = ⟨X̄, dX⟩`, which gives the matrix
//!   gradient without building Kronecker products or diagonal matrices
//!   (`n0ᵀ (ḡ ∘ f1'(d1))`).

use crate::ir::{self, Expr, Op, VecOrder};
use crate::shape::{Dim, Shape};
use std::collections::BTreeMap;

/// Why a derivative could not be identified in Kronecker form.
#[derive(Debug, Clone, PartialEq)]
pub struct NotIdentified(pub String);

/// `J` with `vec(e) = J vec(dX)`, for `e` linear in the differentials
/// (other names' differentials count as zero).
pub fn jacobian(e: &Expr, x: &str, x_shape: &Shape, order: VecOrder) -> Result<Expr, NotIdentified> {
    let rows = e.shape.len();
    let cols = x_shape.len();
    let zero = || ir::zero(Shape::new(rows.clone(), cols.clone()));
    if !e.mentions_diff(x) {
        return Ok(zero());
    }
    let j = |f: &Expr| jacobian(f, x, x_shape, order);
    let id = ir::identity;
    Ok(match &e.op {
        Op::Diff(_) => id(cols),
        Op::Add(ts) => ir::sum_of(ts.iter().map(j).collect::<Result<_, _>>()?),
        Op::Scale(s, m) if !s.has_diff() => ir::scalar_mul(s.clone(), j(m)?),
        Op::Scale(s, m) if !m.has_diff() => ir::matmul(ir::vec(m.clone(), order), j(s)?),
        Op::MatMul(a, f) if !a.has_diff() => {
            let q = f.shape.cols.clone();
            let k = match order {
                VecOrder::Row => ir::kron(a.clone(), id(q)),
                VecOrder::Col => ir::kron(id(q), a.clone()),
            };
            ir::matmul(k, j(f)?)
        }
        Op::MatMul(f, b) if !b.has_diff() => {
            let p = f.shape.rows.clone();
            let k = match order {
                VecOrder::Row => ir::kron(id(p), ir::transpose(b.clone())),
                VecOrder::Col => ir::kron(ir::transpose(b.clone()), id(p)),
            };
            ir::matmul(k, j(f)?)
        }
        Op::Div(f, s) if !s.has_diff() => ir::div(j(f)?, s.clone()),
        Op::Transpose(f) => ir::matmul(ir::commutation(f.shape.rows.clone(), f.shape.cols.clone(), order), j(f)?),
        Op::Hadamard(a, f) | Op::Hadamard(f, a) if !a.has_diff() => {
            ir::matmul(ir::diag_mat(ir::vec(a.clone(), order)), j(f)?)
        }
        Op::HadamardDiv(f, a) if !a.has_diff() => {
            ir::matmul(ir::inverse(ir::diag_mat(ir::vec(a.clone(), order))), j(f)?)
        }
        Op::Kron(a, b) if !a.has_diff() || !b.has_diff() => {
            let f = if a.has_diff() { a } else { b };
            ir::matmul(kron_jacobian(a, b, a.has_diff(), order), j(f)?)
        }
        Op::DiagMat(f) => ir::matmul(diag_selection(f.shape.len(), order), j(f)?),
        Op::DiagVec(f) => ir::matmul(ir::transpose(diag_selection(f.shape.rows.clone(), order)), j(f)?),
        Op::Vec(f, o) | Op::Unvec(f, o) if *o == order => j(f)?,
        Op::Trace(f) => ir::matmul(ir::transpose(ir::vec(id(f.shape.rows.clone()), order)), j(f)?),
        Op::Sum(f) => ir::matmul(ir::ones(Shape::new(Dim::one(), f.shape.len())), j(f)?),
        _ => {
            return Err(NotIdentified(format!("no Kronecker form for `{}` with respect to {x}", crate::print::text(e))))
        }
    })
}

/// `J` with `vec(A ⊗ B) = J vec(A)` (when `left`) or `J vec(B)`:
/// `vec(A ⊗ B) = P (vec A ⊗ vec B)` with `P` a permutation of commutation matrices.
fn kron_jacobian(a: &Expr, b: &Expr, left: bool, order: VecOrder) -> Expr {
    let id = ir::identity;
    let (m, n) = (a.shape.rows.clone(), a.shape.cols.clone());
    let (p, q) = (b.shape.rows.clone(), b.shape.cols.clone());
    let perm = match order {
        VecOrder::Row => ir::kron(ir::kron(id(m.clone()), ir::commutation(n.clone(), p.clone(), order)), id(q.clone())),
        VecOrder::Col => ir::kron(ir::kron(id(n.clone()), ir::commutation(q.clone(), m.clone(), order)), id(p.clone())),
    };
    let spread = if left {
        ir::kron(id(m.mul(&n)), ir::vec(b.clone(), order))
    } else {
        ir::kron(ir::vec(a.clone(), order), id(p.mul(&q)))
    };
    ir::matmul(perm, spread)
}

/// `S` with `vec(diag(v)) = S v` for a vector `v` of `k` entries:
/// `diag(vec I) (1 ⊗ I)` for rows, `diag(vec I) (I ⊗ 1)` for columns.
fn diag_selection(k: Dim, order: VecOrder) -> Expr {
    let ones = ir::ones(Shape::new(k.clone(), Dim::one()));
    let id = ir::identity(k.clone());
    let spread = match order {
        VecOrder::Row => ir::kron(ones, id.clone()),
        VecOrder::Col => ir::kron(id.clone(), ones),
    };
    ir::matmul(ir::diag_mat(ir::vec(id, order)), spread)
}

/// Reverse mode: adds to `bars[X]` the `X̄` with `⟨bar, e⟩ = Σ ⟨X̄, dX⟩`, for
/// `e` linear in the differentials. Names not in `keep` are skipped.
pub fn adjoint(
    e: &Expr,
    bar: Expr,
    order: VecOrder,
    bars: &mut BTreeMap<ir::Name, Vec<Expr>>,
) -> Result<(), NotIdentified> {
    if !e.has_diff() || bar.is_zero() {
        return Ok(());
    }
    let mut go = |f: &Expr, b: Expr| adjoint(f, b, order, bars);
    match &e.op {
        Op::Diff(n) => {
            bars.entry(n.clone()).or_default().push(bar);
            Ok(())
        }
        Op::Add(ts) => ts.iter().try_for_each(|t| go(t, bar.clone())),
        Op::Scale(s, m) if !s.has_diff() => go(m, ir::scalar_mul(s.clone(), bar)),
        Op::Scale(s, m) if !m.has_diff() => go(s, super::inner(bar, m.clone())),
        Op::MatMul(a, b) if !b.has_diff() => go(a, ir::matmul(bar, ir::transpose(b.clone()))),
        Op::MatMul(a, b) if !a.has_diff() => go(b, ir::matmul(ir::transpose(a.clone()), bar)),
        Op::Div(f, s) if !s.has_diff() => go(f, ir::div(bar, s.clone())),
        Op::Transpose(f) => go(f, ir::transpose(bar)),
        Op::Hadamard(a, b) if !b.has_diff() => go(a, ir::hadamard(bar, b.clone())),
        Op::Hadamard(a, b) if !a.has_diff() => go(b, ir::hadamard(bar, a.clone())),
        Op::HadamardDiv(f, a) if !a.has_diff() => go(f, ir::hadamard_div(bar, a.clone())),
        Op::Vec(f, o) => go(f, ir::unvec(bar, f.shape.clone(), *o)),
        Op::Unvec(f, o) => go(f, ir::vec(bar, *o)),
        Op::DiagMat(f) => {
            let d = ir::diag_vec(bar);
            go(f, if f.shape.rows.is_one() { ir::transpose(d) } else { d })
        }
        Op::DiagVec(f) => go(f, ir::diag_mat(bar)),
        Op::Trace(f) => go(f, ir::scalar_mul(bar, ir::identity(f.shape.rows.clone()))),
        Op::Sum(f) => go(f, ir::scalar_mul(bar, ir::ones(f.shape.clone()))),
        // F̄ = vec⁻¹(Jᵀ vec(Ā)) with J the Jacobian of vec(A ⊗ B) in the linear factor.
        Op::Kron(a, b) if !a.has_diff() || !b.has_diff() => {
            let f = if a.has_diff() { a } else { b };
            let j = kron_jacobian(a, b, a.has_diff(), order);
            go(f, ir::unvec(ir::matmul(ir::transpose(j), ir::vec(bar, order)), f.shape.clone(), order))
        }
        _ => Err(NotIdentified(format!("no reverse-mode rule for `{}`", crate::print::text(e)))),
    }
}

impl Expr {
    /// Whether `d name` occurs.
    pub fn mentions_diff(&self, name: &str) -> bool {
        match &self.op {
            Op::Diff(n) => &**n == name,
            op => op.children().iter().any(|c| c.mentions_diff(name)),
        }
    }
    /// The names whose differentials occur, in order of first appearance.
    pub fn diff_names(&self, out: &mut Vec<ir::Name>) {
        match &self.op {
            Op::Diff(n) => {
                if !out.contains(n) {
                    out.push(n.clone())
                }
            }
            op => op.children().iter().for_each(|c| c.diff_names(out)),
        }
    }
    /// The shape of `d name` where it occurs.
    pub fn diff_shape(&self, name: &str) -> Option<Shape> {
        match &self.op {
            Op::Diff(n) if &**n == name => Some(self.shape.clone()),
            op => op.children().iter().find_map(|c| c.diff_shape(name)),
        }
    }
}
