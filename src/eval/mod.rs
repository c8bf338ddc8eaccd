//! Numeric evaluation of typed expressions with concrete values, used to
//! check derivatives against finite differences.

pub mod check;
pub mod flops;

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
            x.eval(&self.values.sizes).ok_or_else(|| EvalError(format!("no value for size {x}")))
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
            Op::Scale(s, x) => self.eval(x)? * self.eval(s)?[(0, 0)],
            Op::MatMul(a, b) => {
                let (a, b) = (self.eval(a)?, self.eval(b)?);
                if a.ncols() != b.nrows() {
                    return Err(EvalError(format!("internal shape disagreement in {}", crate::print::text(e))));
                }
                a * b
            }
            Op::Div(a, s) => self.eval(a)? / self.eval(s)?[(0, 0)],
            Op::Transpose(x) => self.eval(x)?.transpose(),
            Op::Inverse(x) => self.eval(x)?.try_inverse().ok_or_else(|| EvalError("singular matrix".into()))?,
            Op::Power(x, k) => {
                let mut base = self.eval(x)?;
                if *k < 0 {
                    base = base.try_inverse().ok_or_else(|| EvalError("singular matrix".into()))?;
                }
                let mut acc = Mat::identity(r, c);
                for _ in 0..k.unsigned_abs() {
                    acc = &acc * &base;
                }
                acc
            }
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
            Op::Kron(a, b) => self.eval(a)?.kronecker(&self.eval(b)?),
            Op::Vec(x, o) => vec_of(&self.eval(x)?, *o),
            Op::Unvec(x, o) => unvec_of(&self.eval(x)?, r, c, *o),
            Op::DiagMat(x) => {
                let v = self.eval(x)?;
                let entries: Vec<f64> = v.iter().copied().collect();
                Mat::from_diagonal(&nalgebra::DVector::from_vec(entries))
            }
            Op::DiagVec(x) => {
                let m = self.eval(x)?;
                Mat::from_fn(r, 1, |i, _| m[(i, i)])
            }
            Op::Trace(x) => Mat::from_element(1, 1, self.eval(x)?.trace()),
            Op::Det(x) => Mat::from_element(1, 1, self.eval(x)?.determinant()),
            Op::Logdet(x) => Mat::from_element(1, 1, self.eval(x)?.determinant().ln()),
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
