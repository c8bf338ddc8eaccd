//! The cost model: floating-point operations (and memory written) of one
//! operation, from the shapes of its operands, with symbolic sizes counted
//! as [`SYMBOLIC_SIZE`]. Equality saturation extracts by it, the input of a
//! simplification is priced by it, and the code generator orders products
//! by it, so all three agree on what is cheaper.

use crate::ir::Func;
use crate::shape::{Dim, Shape};

/// How large a symbolic size counts.
pub const SYMBOLIC_SIZE: f64 = 1000.0;

/// A size as a number for costing.
#[inline]
pub fn size(d: &Dim) -> f64 {
    d.estimate(SYMBOLIC_SIZE)
}

/// The number of entries of a shape, for costing.
#[inline]
pub fn area(s: &Shape) -> f64 {
    size(&s.rows) * size(&s.cols)
}

/// An operation, as far as its cost is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Operation<'a> {
    /// A name, number or constant matrix: nothing to compute.
    Leaf,
    /// A transpose, or a `vec` in the order the data is stored: a view.
    View,
    /// `a + b`, `a ∘ b`, `a ./ b`, `a .^ k`: one operation per entry.
    Elementwise,
    /// `s a`, `a / s`, `sum(a)`, `‖a‖`: one operation per entry of `a`.
    Reduce,
    /// `f(a)` for a function of the table (or a declared one).
    Apply(&'a Func),
    /// `a b`
    Product,
    /// `a⁻¹`, `det(a)`, `log det a`
    Factor,
    /// `aᵏ`
    Power,
    /// `a ⊗ b`, built
    Kron,
    /// `diag(v)`, built
    DiagMat,
    /// `diag(A)`, `tr(A)`
    Diagonal,
}

/// The cost of one operation on operands of the given shapes (the first
/// operand is the one that sets the work; a product needs both).
#[inline]
pub fn operation(op: Operation<'_>, args: &[&Shape]) -> f64 {
    let arg = |i: usize| args.get(i).copied();
    let n = |i: usize| arg(i).map_or(1.0, |s| size(&s.rows));
    let a = |i: usize| arg(i).map_or(1.0, area);
    match op {
        Operation::Leaf | Operation::View => 1.0,
        Operation::Elementwise | Operation::Reduce => a(0),
        Operation::Apply(f) => f.cost() * a(0),
        Operation::Product => n(0) * arg(0).map_or(1.0, |s| size(&s.cols)) * arg(1).map_or(1.0, |s| size(&s.cols)),
        Operation::Factor => n(0).powi(3),
        Operation::Power => 2.0 * n(0).powi(3),
        Operation::Kron => a(0) * a(1),
        Operation::DiagMat => a(0) * a(0),
        Operation::Diagonal => n(0),
    }
}
