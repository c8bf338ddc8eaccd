//! Local clean-up of results, bottom-up:
//! - numeric and 1×1 factors move to the front of products, Hadamard and
//!   Kronecker products (`n0ᵀ (2a ∘ b)` becomes `2 n0ᵀ (a ∘ b)`);
//! - sums factor common left or right factors (`A x + Aᵀ x` becomes `(A + Aᵀ) x`);
//! - the constructors of [`crate::ir`] collect like terms and merge powers.

use crate::ir::{self, Expr, Op};

/// Splits `c s₁ s₂ X` into its numeric coefficient, its 1×1 factors and `X`.
fn split_scalars(e: &Expr) -> (Vec<Expr>, Expr) {
    match &e.op {
        Op::Scale(s, x) if !x.shape.is_scalar() => {
            let (mut ss, base) = split_scalars(x);
            ss.insert(0, s.clone());
            (ss, base)
        }
        _ => (vec![], e.clone()),
    }
}

fn with_scalars(ss: Vec<Expr>, x: Expr) -> Expr {
    ss.into_iter().rev().fold(x, |acc, s| ir::scalar_mul(s, acc))
}

fn hoist(a: &Expr, b: &Expr, build: fn(Expr, Expr) -> Expr) -> Option<Expr> {
    let ((ca, a1), (cb, b1)) = (a.split_coef(), b.split_coef());
    let (mut sa, a2) = split_scalars(&a1);
    let (sb, b2) = split_scalars(&b1);
    let c = ca * cb;
    if sa.is_empty() && sb.is_empty() && c == ir::rat(1) {
        return None;
    }
    sa.extend(sb);
    Some(ir::scale(c, with_scalars(sa, build(a2, b2))))
}

/// Factors terms sharing a right (or left) factor: `A x + B x = (A + B) x`.
fn factor(terms: &[Expr]) -> Option<Expr> {
    for right in [true, false] {
        let split = |t: &Expr| -> Option<(Expr, Expr)> {
            let (c, x) = t.split_coef();
            match &x.op {
                Op::MatMul(a, b) if right => Some((ir::scale(c, a.clone()), b.clone())),
                Op::MatMul(a, b) => Some((a.clone(), ir::scale(c, b.clone()))),
                _ => None,
            }
        };
        let parts: Vec<Option<(Expr, Expr)>> = terms.iter().map(split).collect();
        for (i, p) in parts.iter().enumerate() {
            let Some((_, key)) = p else { continue };
            let key = if right { key.clone() } else { p.as_ref().expect("part").0.clone() };
            let same: Vec<usize> = (i..terms.len())
                .filter(|&j| parts[j].as_ref().is_some_and(|(a, b)| if right { *b == key } else { *a == key }))
                .collect();
            if same.len() < 2 {
                continue;
            }
            let others: Vec<Expr> = same
                .iter()
                .map(|&j| {
                    let (a, b) = parts[j].clone().expect("part");
                    if right {
                        a
                    } else {
                        b
                    }
                })
                .collect();
            let grouped = if right {
                ir::matmul(tidy(&ir::sum_of(others)), key)
            } else {
                ir::matmul(key, tidy(&ir::sum_of(others)))
            };
            let grouped = local(grouped);
            let mut rest: Vec<Expr> =
                terms.iter().enumerate().filter(|(j, _)| !same.contains(j)).map(|(_, t)| t.clone()).collect();
            rest.insert(0, grouped);
            return Some(ir::sum_of(rest));
        }
    }
    None
}

/// Tidies an expression (see the module docs).
///
/// ```
/// use matdiff::{ir, shape::{Dim, Shape}};
/// let a = ir::var("a", Shape::new(Dim::one(), Dim::sym("n")), false);
/// let b = ir::var("b", Shape::new(Dim::one(), Dim::sym("n")), false);
/// let e = ir::hadamard(ir::scale(ir::rat(2), a), b);
/// assert_eq!(matdiff::print::text(&matdiff::simplify::tidy(&e)), "2(a ∘ b)");
/// ```
pub fn tidy(e: &Expr) -> Expr {
    ir::map_bottom_up_shared(e, &mut local)
}

/// One rewrite at the root, assuming the children are tidy.
fn local(n: Expr) -> Expr {
    {
        let changed = match &n.op {
            Op::MatMul(a, b) => hoist(a, b, ir::matmul),
            Op::Hadamard(a, b) => hoist(a, b, ir::hadamard),
            Op::Kron(a, b) => hoist(a, b, ir::kron),
            Op::Scale(s, x) if s.as_num().is_none() => {
                let (c, x2) = x.split_coef();
                (c != ir::rat(1)).then(|| ir::scale(c, ir::scalar_mul(s.clone(), x2)))
            }
            Op::Add(ts) if ts.iter().all(|t| matches!(t.split_coef().1.op, Op::DiagMat(_))) => {
                // diag(a) + c diag(b) = diag(a + c b)
                let inner = ts
                    .iter()
                    .map(|t| {
                        let (c, d) = t.split_coef();
                        let v = d.op.children()[0].clone();
                        ir::scale(c, v)
                    })
                    .collect::<Vec<_>>();
                if inner.iter().all(|v| v.shape == inner[0].shape) {
                    Some(ir::diag_mat(ir::sum_of(inner)))
                } else {
                    None
                }
            }
            Op::Add(ts) => factor(ts),
            _ => None,
        };
        changed.unwrap_or(n)
    }
}
