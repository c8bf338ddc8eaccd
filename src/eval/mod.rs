//! Numeric evaluation of typed expressions with concrete values, used to
//! check derivatives against finite differences.

pub mod check;
pub mod flops;
pub mod reference;

use crate::ir::{Builtin, Expr, Func, Kind, Op, VecOrder};
use crate::shape::Shape;
use crate::typeck::Env;
use nalgebra::DMatrix;
use num_traits::ToPrimitive;
use std::collections::HashMap;

/// A dense matrix of `f64`.
pub type Mat = DMatrix<f64>;

/// Concrete values: sizes for symbols, matrices for names, directions for differentials.
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// Symbolic sizes.
    pub sizes: HashMap<String, usize>,
    /// Declared matrices (and overridden intermediates).
    pub mats: HashMap<String, Mat>,
    /// Values of `dX`; names missing here have `dX = 0`.
    pub diffs: HashMap<String, Mat>,
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalError(pub String);

/// The most entries any value met during an evaluation may have: 2²⁴
/// (16,777,216 entries, 128 MiB of `f64`). Larger ones are refused before
/// they are allocated.
pub const MAX_ENTRIES: usize = 1 << 24;

/// The most multiply-adds a single matrix product may take (2³²).
pub const MAX_PRODUCT_WORK: u64 = 1 << 32;

/// The largest exponent, in size, of a matrix power `X^k`.
pub const MAX_EXPONENT: u64 = 1_000_000;

/// Refuses an `r×c` value over [`MAX_ENTRIES`].
pub fn ensure_entries(r: usize, c: usize) -> Result<(), EvalError> {
    match r.checked_mul(c) {
        Some(n) if n <= MAX_ENTRIES => Ok(()),
        _ => Err(EvalError(format!("a {r}×{c} value is too large to evaluate (at most {MAX_ENTRIES} entries)"))),
    }
}

/// Refuses an `r×k` by `k×c` product whose result or cost is over the limits.
pub fn ensure_product(r: usize, k: usize, c: usize) -> Result<(), EvalError> {
    ensure_entries(r, c)?;
    let work = (r as u64).checked_mul(k as u64).and_then(|w| w.checked_mul(c as u64));
    match work {
        Some(w) if w <= MAX_PRODUCT_WORK => Ok(()),
        _ => Err(EvalError(format!(
            "a {r}×{k} by {k}×{c} product is too costly to evaluate (at most {MAX_PRODUCT_WORK} multiply-adds)"
        ))),
    }
}

/// `x^k` for a square `x`, by repeated squaring; a negative `k` is a power
/// of the inverse.
pub fn matrix_power(x: &Mat, k: i64) -> Result<Mat, EvalError> {
    let n = x.nrows();
    if x.ncols() != n {
        return Err(EvalError(format!("a matrix power needs a square matrix, not {}×{}", n, x.ncols())));
    }
    if k.unsigned_abs() > MAX_EXPONENT {
        return Err(EvalError(format!("the exponent {k} is too large (at most {MAX_EXPONENT} in size)")));
    }
    ensure_product(n, n, n)?;
    let mut base =
        if k < 0 { x.clone().try_inverse().ok_or_else(|| EvalError("singular matrix".into()))? } else { x.clone() };
    let mut acc = Mat::identity(n, n);
    let mut e = k.unsigned_abs();
    while e > 0 {
        if e & 1 == 1 {
            acc = &acc * &base;
        }
        e >>= 1;
        if e > 0 {
            base = &base * &base;
        }
        if acc.iter().chain(base.iter()).any(|v| !v.is_finite()) {
            return Err(EvalError(format!("a matrix power to the {k} is not finite at these values")));
        }
    }
    Ok(acc)
}

/// The value of a declared function `f` differentiated `k` times at `x`:
/// matdiff stands in `f(x) = sin(x + c) + x²/4` with `c` fixed by the name.
pub fn user_function(name: &str, k: u32, x: f64) -> f64 {
    let c = name.bytes().fold(0.3f64, |a, b| (a * 7.0 + f64::from(b)) % 3.0);
    let s = (x + c + f64::from(k) * std::f64::consts::FRAC_PI_2).sin();
    match k {
        0 => s + x * x / 4.0,
        1 => s + x / 2.0,
        2 => s + 0.5,
        _ => s,
    }
}

fn scalar_fn(f: &Func, x: f64) -> f64 {
    match f {
        Func::Builtin(Builtin { kind: Kind::Elementwise { eval, .. }, .. }) => eval(x),
        Func::Builtin(_) => f64::NAN,
        Func::User(n, k) => user_function(n, *k, x),
    }
}

/// Both matrices, if their shapes agree (an internal error otherwise, never a panic).
fn same_shape(a: Mat, b: Mat) -> Result<(Mat, Mat), EvalError> {
    if a.shape() != b.shape() {
        return Err(EvalError(format!("internal shape disagreement: {:?} and {:?}", a.shape(), b.shape())));
    }
    Ok((a, b))
}

/// The matrix, if it is square (an internal error otherwise, never a panic).
fn square(m: Mat) -> Result<Mat, EvalError> {
    if !m.is_square() {
        return Err(EvalError(format!(
            "internal shape disagreement: {}x{} where a square matrix was expected",
            m.nrows(),
            m.ncols()
        )));
    }
    Ok(m)
}

/// The entry of a 1×1 matrix.
fn scalar_of(m: &Mat) -> Result<f64, EvalError> {
    if m.shape() != (1, 1) {
        return Err(EvalError(format!(
            "internal shape disagreement: {}x{} where a scalar was expected",
            m.nrows(),
            m.ncols()
        )));
    }
    Ok(m[(0, 0)])
}

/// Position of entry `(i, j)` of an `r×c` matrix in its `vec`.
pub fn vec_index(i: usize, j: usize, r: usize, c: usize, order: VecOrder) -> usize {
    match order {
        VecOrder::Row => i * c + j,
        VecOrder::Col => j * r + i,
    }
}

/// `vec(m)` in the given order.
pub fn vec_of(m: &Mat, order: VecOrder) -> Mat {
    let (r, c) = m.shape();
    let mut v = Mat::zeros(r * c, 1);
    for i in 0..r {
        for j in 0..c {
            v[(vec_index(i, j, r, c, order), 0)] = m[(i, j)];
        }
    }
    v
}

/// `vec⁻¹(v)` to `r×c`.
pub fn unvec_of(v: &Mat, r: usize, c: usize, order: VecOrder) -> Mat {
    Mat::from_fn(r, c, |i, j| v[(vec_index(i, j, r, c, order), 0)])
}

/// An evaluator over an environment, caching defined names.
pub struct Evaluator<'a> {
    env: &'a Env,
    values: &'a Values,
    cache: HashMap<String, Mat>,
}

impl<'a> Evaluator<'a> {
    /// An evaluator for these values.
    pub fn new(env: &'a Env, values: &'a Values) -> Evaluator<'a> {
        Evaluator { env, values, cache: HashMap::new() }
    }

    /// Concrete rows and columns of a shape.
    pub fn dims(&self, s: &Shape) -> Result<(usize, usize), EvalError> {
        let d = |x: &crate::shape::Dim| {
            x.eval(&self.values.sizes).ok_or_else(|| match x.symbols().find(|s| !self.values.sizes.contains_key(*s)) {
                Some(s) => EvalError(format!("no value for size {s}")),
                None => EvalError(format!("the size {x} is too large to evaluate")),
            })
        };
        Ok((d(&s.rows)?, d(&s.cols)?))
    }

    /// The value of a name: given, or computed from its definition.
    pub fn name(&mut self, n: &str) -> Result<Mat, EvalError> {
        if let Some(m) = self.values.mats.get(n) {
            return Ok(m.clone());
        }
        if let Some(m) = self.cache.get(n) {
            return Ok(m.clone());
        }
        let body = self.env.definition(n).ok_or_else(|| EvalError(format!("no value for `{n}`")))?.clone();
        let v = self.eval(&body)?;
        self.cache.insert(n.to_string(), v.clone());
        Ok(v)
    }

    /// Evaluates an expression.
    pub fn eval(&mut self, e: &Expr) -> Result<Mat, EvalError> {
        let (r, c) = self.dims(&e.shape)?;
        ensure_entries(r, c)?;
        let v = match &e.op {
            Op::Var { name, .. } => self.name(name)?,
            Op::Diff(n) => self.values.diffs.get(&**n).cloned().unwrap_or_else(|| Mat::zeros(r, c)),
            Op::Num(q) => Mat::from_element(1, 1, q.to_f64().unwrap_or(f64::NAN)),
            Op::Identity => Mat::identity(r, c),
            Op::Zero => Mat::zeros(r, c),
            Op::Ones => Mat::from_element(r, c, 1.0),
            Op::Size(d) => {
                let n = d.eval(&self.values.sizes).ok_or_else(|| EvalError(format!("no value for size {d}")))?;
                Mat::from_element(1, 1, n as f64)
            }
            Op::Commutation(a, b, order) => {
                let (a, b) = self.dims(&Shape::new(a.clone(), b.clone()))?;
                let mut k = Mat::zeros(a * b, a * b);
                for i in 0..a {
                    for j in 0..b {
                        k[(vec_index(j, i, b, a, *order), vec_index(i, j, a, b, *order))] = 1.0;
                    }
                }
                k
            }
            Op::Add(ts) => {
                let mut acc = Mat::zeros(r, c);
                for t in ts {
                    let (sum, v) = same_shape(acc, self.eval(t)?)?;
                    acc = sum + v;
                }
                acc
            }
            Op::Scale(s, x) => self.eval(x)? * scalar_of(&self.eval(s)?)?,
            Op::MatMul(a, b) => {
                let (a, b) = (self.eval(a)?, self.eval(b)?);
                if a.ncols() != b.nrows() {
                    return Err(EvalError(format!("internal shape disagreement in {}", crate::print::text(e))));
                }
                ensure_product(a.nrows(), a.ncols(), b.ncols())?;
                a * b
            }
            Op::Div(a, s) => self.eval(a)? / scalar_of(&self.eval(s)?)?,
            Op::Transpose(x) => self.eval(x)?.transpose(),
            Op::Inverse(x) => {
                square(self.eval(x)?)?.try_inverse().ok_or_else(|| EvalError("singular matrix".into()))?
            }
            Op::Power(x, k) => matrix_power(&self.eval(x)?, *k)?,
            Op::Hadamard(a, b) => {
                let (a, b) = same_shape(self.eval(a)?, self.eval(b)?)?;
                a.component_mul(&b)
            }
            Op::HadamardDiv(a, b) => {
                let (a, b) = same_shape(self.eval(a)?, self.eval(b)?)?;
                a.component_div(&b)
            }
            Op::HadamardPow(a, k) => {
                let k = k.to_f64().unwrap_or(f64::NAN);
                self.eval(a)?.map(|x| x.powf(k))
            }
            Op::Kron(a, b) => {
                let (a, b) = (self.eval(a)?, self.eval(b)?);
                let rows = a.nrows().saturating_mul(b.nrows());
                ensure_entries(rows, a.ncols().saturating_mul(b.ncols()))?;
                a.kronecker(&b)
            }
            Op::Vec(x, o) => vec_of(&self.eval(x)?, *o),
            Op::Unvec(x, o) => {
                let v = self.eval(x)?;
                if v.len() != r * c {
                    return Err(EvalError(format!("internal shape disagreement in {}", crate::print::text(e))));
                }
                unvec_of(&v, r, c, *o)
            }
            Op::DiagMat(x) => {
                let v = self.eval(x)?;
                ensure_entries(v.len(), v.len())?;
                let entries: Vec<f64> = v.iter().copied().collect();
                Mat::from_diagonal(&nalgebra::DVector::from_vec(entries))
            }
            Op::DiagVec(x) => {
                let m = self.eval(x)?;
                if m.nrows() < r || m.ncols() < r {
                    return Err(EvalError(format!("internal shape disagreement in {}", crate::print::text(e))));
                }
                Mat::from_fn(r, 1, |i, _| m[(i, i)])
            }
            Op::Trace(x) => Mat::from_element(1, 1, square(self.eval(x)?)?.trace()),
            Op::Det(x) => Mat::from_element(1, 1, square(self.eval(x)?)?.determinant()),
            Op::Logdet(x) => Mat::from_element(1, 1, square(self.eval(x)?)?.determinant().ln()),
            Op::Sum(x) => Mat::from_element(1, 1, self.eval(x)?.sum()),
            Op::Norm(x) => Mat::from_element(1, 1, self.eval(x)?.norm()),
            Op::Apply(Func::Builtin(Builtin { kind: Kind::Matrix { eval, .. }, .. }), x) => eval(&self.eval(x)?),
            Op::Apply(f, x) => self.eval(x)?.map(|v| scalar_fn(f, v)),
        };
        if v.shape() != (r, c) {
            return Err(EvalError(format!(
                "internal shape disagreement: {} is {}x{}, expected {r}x{c}",
                crate::print::text(e),
                v.nrows(),
                v.ncols()
            )));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(EvalError(format!("`{}` is not finite at these values", crate::print::text(e))));
        }
        Ok(v)
    }
}
