//! Local clean-up of results: numeric factors move to the front of products,
//! Hadamard and Kronecker products (`n0ᵀ (2a ∘ b)` becomes `2 n0ᵀ (a ∘ b)`),
//! where the constructors of [`crate::ir`] collect them.

use crate::ir::{self, Expr, Op};

/// Moves numeric coefficients outward, bottom-up.
///
/// ```
/// use matdiff::{ir, shape::{Dim, Shape}};
/// let a = ir::var("a", Shape::new(Dim::one(), Dim::sym("n")), false);
/// let b = ir::var("b", Shape::new(Dim::one(), Dim::sym("n")), false);
/// let e = ir::hadamard(ir::scale(ir::rat(2), a), b);
/// assert_eq!(matdiff::print::text(&matdiff::simplify::tidy(&e)), "2 (a ∘ b)");
/// ```
pub fn tidy(e: &Expr) -> Expr {
    ir::map_bottom_up(e, &mut |n| {
        let two = |a: &Expr, b: &Expr, build: fn(Expr, Expr) -> Expr| {
            let (ca, a2) = a.split_coef();
            let (cb, b2) = b.split_coef();
            if ca == ir::rat(1) && cb == ir::rat(1) {
                None
            } else {
                Some(ir::scale(ca * cb, build(a2, b2)))
            }
        };
        let hoisted = match &n.op {
            Op::MatMul(a, b) => two(a, b, ir::matmul),
            Op::Hadamard(a, b) => two(a, b, ir::hadamard),
            Op::Kron(a, b) => two(a, b, ir::kron),
            Op::Scale(s, x) if s.as_num().is_none() => {
                let (c, x2) = x.split_coef();
                (c != ir::rat(1)).then(|| ir::scale(c, ir::scalar_mul(s.clone(), x2)))
            }
            _ => None,
        };
        hoisted.unwrap_or(n)
    })
}
