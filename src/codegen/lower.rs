//! Rewrites of an answer, before code is generated for it, that keep its
//! value and make the code pass over fewer large arrays.
//!
//! A broadcast `a 1ᵀ` (a column spread across columns, or `1 b`, a row
//! spread down rows) is a view in every backend, but an operation applied to
//! it works on every entry of the spread matrix. Applied to the vector
//! before it is spread, the same operation touches one row or column:
//!
//! - `(a 1ᵀ) .^ k` is `(a .^ k) 1ᵀ`;
//! - `(a 1ᵀ) ∘ (b 1ᵀ)` and `(a 1ᵀ) ./ (b 1ᵀ)` are `(a ∘ b) 1ᵀ` and `(a ./ b) 1ᵀ`;
//! - a 1×1 factor `s (a 1ᵀ)` is `(s a) 1ᵀ`, and `s ((a 1ᵀ) ∘ Y)` (or `./ Y`)
//!   scales the vector, not the product: `(s a) 1ᵀ ∘ Y` (but `-(a 1ᵀ)` stays,
//!   as a sum subtracts it).
//!
//! - a row sum of a product or quotient by a column spread across,
//!   `((a 1ᵀ) ∘ Y) 1` or `(Y ./ (a 1ᵀ)) 1`, is `a ∘ (Y 1)` or `(Y 1) ./ a`:
//!   the vector is applied to the sums, not to every entry; and a row sum
//!   written as a column sum of the transpose, `(1ᵀ Yᵀ)ᵀ`, is `Y 1`.
//!
//! Printed answers are not rewritten: `s2 ones(1, d)` reads better there.

use crate::ir::{self, BigRational, Expr, Op};
use num_traits::One;

/// A broadcast: the vector it spreads, and whether the ones are on the right
/// (`a 1ᵀ`, a column spread across) or on the left (`1 b`, a row spread down).
pub(super) fn broadcast(e: &Expr) -> Option<(&Expr, bool)> {
    match &e.op {
        Op::MatMul(a, o) if matches!(o.op, Op::Ones) && a.shape.cols.is_one() && o.shape.rows.is_one() => {
            Some((a, true))
        }
        Op::MatMul(o, b) if matches!(o.op, Op::Ones) && b.shape.rows.is_one() && o.shape.cols.is_one() => {
            Some((b, false))
        }
        _ => None,
    }
}

/// `v` spread the way `like` (a broadcast) spreads its vector.
fn spread_like(v: Expr, like: &Expr) -> Expr {
    match &like.op {
        Op::MatMul(_, o) if matches!(o.op, Op::Ones) => ir::node_matmul(v, o.clone()),
        Op::MatMul(o, _) => ir::node_matmul(o.clone(), v),
        _ => unreachable!("spread_like of a broadcast"),
    }
}

/// Two broadcasts of one direction and shape: their vectors.
fn alike<'e>(x: &'e Expr, y: &'e Expr) -> Option<(&'e Expr, &'e Expr)> {
    let ((a, ra), (b, rb)) = (broadcast(x)?, broadcast(y)?);
    (ra == rb && x.shape == y.shape && a.shape == b.shape).then_some((a, b))
}

/// `c1 (a ∘ b) + c2 (a ∘ c)` (a shared factor on either side of either
/// product) as `a ∘ (c1 b + c2 c)`: one pass less.
fn factored(t1: &Expr, t2: &Expr) -> Option<Expr> {
    let ((c1, x), (c2, y)) = (t1.split_coef(), t2.split_coef());
    let (Op::Hadamard(p, q), Op::Hadamard(r, s)) = (&x.op, &y.op) else { return None };
    let (a, b, c) = if p == r {
        (p, q, s)
    } else if p == s {
        (p, q, r)
    } else if q == r {
        (q, p, s)
    } else if q == s {
        (q, p, r)
    } else {
        return None;
    };
    let inner = ir::sum_of(vec![ir::scale(c1, b.clone()), ir::scale(c2, c.clone())]);
    Some(ir::hadamard(a.clone(), inner))
}

/// Whether `o` is a column of ones.
fn ones_column(o: &Expr) -> bool {
    matches!(o.op, Op::Ones) && o.shape.cols.is_one()
}

/// `Y 1` (a row sum, `ones` a column of ones) with a factor spread across
/// the columns of `Y` taken out of the sum.
fn row_sum(y: &Expr, ones: &Expr) -> Expr {
    let sum = |m: &Expr| ir::node_matmul(m.clone(), ones.clone());
    let across = |b: &Expr| match broadcast(b) {
        Some((a, true)) => Some(a.clone()),
        _ => None,
    };
    match &y.op {
        Op::Hadamard(p, q) => match (across(p), across(q)) {
            (Some(a), _) => ir::hadamard(a, row_sum(q, ones)),
            (None, Some(a)) => ir::hadamard(row_sum(p, ones), a),
            _ => sum(y),
        },
        Op::HadamardDiv(p, q) => match across(q) {
            Some(a) => ir::hadamard_div(row_sum(p, ones), a),
            None => sum(y),
        },
        _ => sum(y),
    }
}

/// One node, its children already rewritten.
fn node(e: Expr) -> Expr {
    match &e.op {
        // `(c 1ᵀ Yᵀ)ᵀ` is `c Y 1`.
        Op::Transpose(x) => {
            let (c, inner) = x.split_coef();
            match &inner.op {
                Op::MatMul(o, t) if matches!(o.op, Op::Ones) && o.shape.rows.is_one() => match &t.op {
                    Op::Transpose(y) => ir::scale(c, row_sum(y, &ir::ones(o.shape.transposed()))),
                    _ => e,
                },
                _ => e,
            }
        }
        Op::MatMul(y, o) if ones_column(o) => row_sum(y, o),
        // A sum of transposes is the transpose of a sum: one view, and the
        // sum inside may be the one computed elsewhere.
        Op::Add(ts) if !e.shape.is_scalar() && ts.iter().all(|t| matches!(t.split_coef().1.op, Op::Transpose(_))) => {
            let inner: Vec<Expr> = ts
                .iter()
                .map(|t| {
                    let (c, x) = t.split_coef();
                    let Op::Transpose(y) = &x.op else { unreachable!("checked") };
                    ir::scale(c, y.clone())
                })
                .collect();
            ir::node_transpose(node(ir::sum_of(inner)))
        }
        Op::Add(ts) if ts.len() == 2 => factored(&ts[0], &ts[1]).unwrap_or(e),
        Op::HadamardPow(x, k) => match broadcast(x) {
            Some((a, _)) => spread_like(ir::hadamard_pow(a.clone(), k.clone()), x),
            None => e,
        },
        Op::Hadamard(x, y) => match alike(x, y) {
            Some((a, b)) => spread_like(ir::hadamard(a.clone(), b.clone()), x),
            None => e,
        },
        Op::HadamardDiv(x, y) => match alike(x, y) {
            Some((a, b)) => spread_like(ir::hadamard_div(a.clone(), b.clone()), x),
            None => e,
        },
        // `-B` is left alone: a sum subtracts it for nothing.
        Op::Scale(s, x) if s.shape.is_scalar() && s.as_num() != Some(&-BigRational::one()) => {
            let scaled = |b: &Expr| {
                let (a, _) = broadcast(b)?;
                Some(spread_like(ir::scalar_mul(s.clone(), a.clone()), b))
            };
            match &x.op {
                _ if broadcast(x).is_some() => scaled(x).unwrap_or(e),
                Op::Hadamard(p, q) => match (scaled(p), scaled(q)) {
                    (Some(p), _) => ir::hadamard(p, q.clone()),
                    (None, Some(q)) => ir::hadamard(p.clone(), q),
                    _ => e,
                },
                Op::HadamardDiv(p, q) => match scaled(p) {
                    Some(p) => ir::hadamard_div(p, q.clone()),
                    None => e,
                },
                _ => e,
            }
        }
        _ => e,
    }
}

/// `e` rewritten as the module docs say.
pub fn lower(e: &Expr) -> Expr {
    ir::map_bottom_up(e, &mut node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::{Dim, Shape};

    fn col(n: &str) -> Expr {
        ir::var(n, Shape::new(Dim::sym("t"), Dim::one()), false)
    }

    fn across(a: Expr) -> Expr {
        ir::node_matmul(a, ir::ones(Shape::new(Dim::one(), Dim::sym("d"))))
    }

    /// `lower(e)` has `e`'s value at random arrays (`t = 3`, `d = 4`), by
    /// the evaluator, which knows nothing of lowering.
    fn keeps_its_value(e: &Expr) {
        use crate::eval::{Evaluator, Mat, Values};
        let mut values = Values::default();
        values.sizes.extend([("t".to_string(), 3), ("d".to_string(), 4)]);
        let mut seed = 0.3_f64;
        let mut random = |r, c| {
            Mat::from_fn(r, c, |_, _| {
                seed = (seed * 997.0 + 0.123).fract();
                0.5 + seed
            })
        };
        for (name, r, c) in [("s", 3, 1), ("a", 3, 1), ("C", 3, 4), ("M", 3, 4), ("A", 3, 3), ("B", 3, 3), ("E", 3, 3)]
        {
            values.mats.insert(name.to_string(), random(r, c));
        }
        let env = crate::typeck::Env::default();
        let want = Evaluator::new(&env, &values).eval(e).expect("evaluates");
        let got = Evaluator::new(&env, &values).eval(&lower(e)).expect("evaluates");
        assert!((&want - &got).abs().max() < 1e-12 * want.abs().max().max(1.0), "{}", crate::print::text(e));
    }

    #[test]
    fn operations_on_a_broadcast_act_on_its_vector() {
        let (s, c) = (col("s"), ir::var("C", Shape::new(Dim::sym("t"), Dim::sym("d")), false));
        let pow = ir::hadamard_pow(across(s.clone()), ir::rat(2));
        assert_eq!(crate::print::text(&lower(&pow)), "s .^ 2 ones(1, d)");
        keeps_its_value(&pow);
        let scaled = ir::scale(ir::rat(3), ir::hadamard(across(s.clone()), c.clone()));
        assert_eq!(crate::print::text(&lower(&scaled)), "3 s ones(1, d) ∘ C");
        keeps_its_value(&scaled);
        let quotient = ir::hadamard_div(across(col("a")), across(s));
        assert_eq!(crate::print::text(&lower(&quotient)), "(a ./ s) ones(1, d)");
        keeps_its_value(&quotient);
        // A factor shared by two products is taken out, and a sum of
        // transposes is one transpose: `Eᵀ ∘ Aᵀ - (A ∘ B)ᵀ` is `(A ∘ (E - B))ᵀ`.
        let sq = |n: &str| ir::var(n, Shape::new(Dim::sym("t"), Dim::sym("t")), false);
        let (a, b, c2) = (sq("A"), sq("B"), sq("E"));
        let e = ir::sub(
            ir::node_transpose(ir::hadamard(c2.clone(), a.clone())),
            ir::node_transpose(ir::hadamard(a.clone(), b.clone())),
        );
        keeps_its_value(&e);
        assert_eq!(lower(&e), ir::node_transpose(ir::hadamard(a, ir::sub(c2, b))));
        // Row sums: the spread vector divides the sums, not every entry,
        // and a column sum of a transpose is a row sum.
        let m = ir::var("M", Shape::new(Dim::sym("t"), Dim::sym("d")), false);
        let ones_col = ir::ones(Shape::new(Dim::sym("d"), Dim::one()));
        let sums = ir::node_matmul(ir::hadamard_div(m.clone(), across(col("s"))), ones_col.clone());
        assert_eq!(crate::print::text(&lower(&sums)), "M ones(d, 1) ./ s");
        keeps_its_value(&sums);
        let product = ir::node_matmul(ir::hadamard(across(col("a")), m.clone()), ones_col.clone());
        assert_eq!(crate::print::text(&lower(&product)), "a ∘ M ones(d, 1)");
        keeps_its_value(&product);
        let transposed = ir::node_transpose(ir::scale(
            ir::rat(-1),
            ir::node_matmul(ir::ones(Shape::new(Dim::one(), Dim::sym("d"))), ir::node_transpose(m.clone())),
        ));
        assert_eq!(crate::print::text(&lower(&transposed)), "-M ones(d, 1)");
        keeps_its_value(&transposed);
        // Not a broadcast: left alone.
        let plain = ir::scale(ir::rat(3), ir::hadamard(c.clone(), c));
        assert_eq!(lower(&plain), plain);
    }
}
