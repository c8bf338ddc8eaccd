//! Counting the floating-point operations of evaluating an expression, the
//! way the generated code evaluates it (numbers scale the smallest factor of
//! a product; transposes are free). Named intermediates count as given.

use crate::ir::{Expr, Op};
use std::collections::HashMap;

/// Operations to evaluate `e` with these sizes for the symbols.
///
/// ```
/// use matdiff::{ir, shape::{Dim, Shape}};
/// let n = Dim::sym("n");
/// let a = ir::var("A", Shape::new(n.clone(), n.clone()), false);
/// let x = ir::var("x", Shape::new(n, Dim::one()), false);
/// let sizes = [("n".to_string(), 10)].into();
/// assert_eq!(matdiff::eval::flops::count(&ir::matmul(a, x), &sizes), 100);
/// ```
pub fn count(e: &Expr, sizes: &HashMap<String, usize>) -> u64 {
    let dim = |d: &crate::shape::Dim| d.eval(sizes).unwrap_or(1) as u64;
    let area = |x: &Expr| dim(&x.shape.rows) * dim(&x.shape.cols);
    if let Op::Add(ts) = &e.op {
        // `a - b` is one subtraction, and a number in a sum broadcasts.
        let term = |t: &Expr| match &t.op {
            Op::Scale(s, x) if s.as_num().is_some_and(|c| *c == crate::ir::rat(-1)) => count(x, sizes),
            _ if matches!(t.split_coef().1.op, Op::Ones) => 0,
            _ => count(t, sizes),
        };
        return ts.iter().map(term).sum::<u64>() + area(e) * (ts.len() as u64 - 1);
    }
    let kids: u64 = e.op.children().iter().map(|c| count(c, sizes)).sum();
    let own = match &e.op {
        Op::Var { .. } | Op::Diff(_) | Op::Num(_) | Op::Identity | Op::Zero | Op::Ones | Op::Transpose(_) => 0,
        Op::Size(_) | Op::Commutation(..) | Op::Vec(..) | Op::Unvec(..) => 0,
        Op::Add(_) => unreachable!("handled above"),
        Op::MatMul(a, b) => dim(&a.shape.rows) * dim(&a.shape.cols) * dim(&b.shape.cols),
        Op::Scale(s, x) if s.as_num().is_some() => {
            let factors = x.factors();
            factors.iter().map(area).min().unwrap_or(0)
        }
        Op::Scale(..) | Op::Div(..) | Op::Hadamard(..) | Op::HadamardDiv(..) | Op::HadamardPow(..) | Op::Apply(..) => {
            area(e)
        }
        Op::Inverse(x) | Op::Det(x) | Op::Logdet(x) => dim(&x.shape.rows).pow(3),
        Op::Power(x, k) => dim(&x.shape.rows).pow(3) * k.unsigned_abs(),
        Op::Kron(..) | Op::DiagMat(_) => area(e),
        Op::DiagVec(x) | Op::Trace(x) => dim(&x.shape.rows),
        Op::Sum(x) | Op::Norm(x) => area(x),
    };
    kids + own
}
