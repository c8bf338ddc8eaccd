//! The reference evaluator: a script's meaning computed straight from the
//! parsed text, on arrays.
//!
//! `--check` compares each derivative with finite differences of the
//! function *as written*, evaluated here, so that the check does not share
//! the typing, the IR or the simplifier it is checking. Shapes come from the
//! arrays themselves:
//!
//! - `+ - ∘ ./` broadcast the way NumPy does: a 1×1 operand against
//!   anything, a `1×n` row against `m×n`, an `m×1` column against `m×n`;
//! - a product where either side is 1×1 scales, otherwise it needs as many
//!   columns on the left as rows on the right; `/` divides by a 1×1;
//! - a name is its value in [`Values::mats`] (which overrides a definition),
//!   else its definition evaluated from the text; a size name used as a value
//!   is that size; a bare `I` takes the size typing inferred for it
//!   ([`Written::identities`]).
//!
//! Every value is bounded by [`MAX_ENTRIES`](super::MAX_ENTRIES) entries and
//! every product by [`MAX_PRODUCT_WORK`](super::MAX_PRODUCT_WORK), checked
//! before anything is allocated.

use super::{ensure_entries, ensure_product, matrix_power, user_function, vec_index, EvalError, Mat, Values};
use crate::ast::{BinOp, DimAst, Expr, ExprKind, Ident, Postfix};
use crate::ir::VecOrder;
use crate::typeck::{Binding, Derived, Env, Written};
use num_traits::ToPrimitive;
use std::collections::HashMap;

/// The value of an expression as written, with these values for its names.
///
/// Definitions are evaluated from their text once per call; a value in
/// `values.mats` for a defined name replaces its definition.
///
/// ```
/// use matdiff::eval::{reference, Mat, Values};
/// let mut s = matdiff::Session::default();
/// let a = s.answers("A: 2 x 2; F = 3 A; ∂F/∂vec(A)^T").unwrap().remove(0);
/// let mut values = Values::default();
/// values.mats.insert("A".into(), Mat::identity(2, 2));
/// let f = reference::evaluate(&s.env, &a.written, &values).unwrap();
/// assert_eq!(f, Mat::identity(2, 2) * 3.0);
/// ```
pub fn evaluate(env: &Env, written: &Written, values: &Values) -> Result<Mat, EvalError> {
    Reference { env, values, cache: HashMap::new() }.expr(&written.expr, written)
}

/// The widest step of the finite differences that evaluate a derivative
/// defined as a value; [`partial`] also tries half, a quarter and an eighth.
/// A wide step's error is truncation (smooth, about `h⁶` times a seventh
/// derivative), a narrow step's is rounding (about `ε |f| / h`, which every
/// later difference divides by its own step): the right step depends on the
/// function, so the one where successive estimates agree best is taken.
const DERIVATIVE_STEP: f64 = 4e-2;

/// `∂F/∂x` along one entry `(i, j)` of `x0`: five-point central differences
/// with steps `h` and `2h`, Richardson-extrapolated (error `O(h⁶)`), for
/// `h` = [`DERIVATIVE_STEP`] / 2ᵏ (k = 0…3), taking the estimate that agrees
/// best with the one at the next wider step.
fn partial(f: &dyn Fn(&Mat) -> Result<Mat, EvalError>, x0: &Mat, i: usize, j: usize) -> Result<Mat, EvalError> {
    let at = |t: f64| {
        let mut x = x0.clone();
        x[(i, j)] += t;
        f(&x)
    };
    // Values at ±h0·2ᵐ for m = -3…2, keyed by m.
    let h0 = DERIVATIVE_STEP / 8.0;
    let mut plus = Vec::new();
    let mut minus = Vec::new();
    for m in 0..6 {
        let t = h0 * f64::from(1 << m);
        plus.push(at(t)?);
        minus.push(at(-t)?);
    }
    if plus.iter().chain(&minus).any(|m| m.shape() != plus[0].shape()) {
        return err("the function's shape changes with its arguments");
    }
    let five =
        |m: usize| ((&plus[m] - &minus[m]) * 8.0 - (&plus[m + 1] - &minus[m + 1])) / (12.0 * h0 * f64::from(1 << m));
    // The extrapolated estimate with steps h0·2ᵐ and h0·2ᵐ⁺¹, m = 0…3.
    let estimates: Vec<Mat> = (0..4).map(|m| (five(m) * 16.0 - five(m + 1)) / 15.0).collect();
    let best = (0..3)
        .min_by(|&a, &b| {
            let gap = |m: usize| (&estimates[m] - &estimates[m + 1]).amax();
            gap(a).total_cmp(&gap(b))
        })
        .unwrap_or(0);
    Ok(estimates[best].clone())
}

/// The numerator-layout Jacobian `∂vec(F)/∂vec(x)ᵀ`.
fn jacobian(f: &dyn Fn(&Mat) -> Result<Mat, EvalError>, x0: &Mat, order: VecOrder) -> Result<Mat, EvalError> {
    let (r, c) = x0.shape();
    let mut cols: Vec<(usize, Mat)> = Vec::with_capacity(r * c);
    for i in 0..r {
        for j in 0..c {
            cols.push((vec_index(i, j, r, c, order), super::vec_of(&partial(f, x0, i, j)?, order)));
        }
    }
    let rows = cols.first().map_or(0, |(_, v)| v.nrows());
    ensure_entries(rows, r * c)?;
    let mut jac = Mat::zeros(rows, r * c);
    for (k, v) in cols {
        jac.set_column(k, &v.column(0));
    }
    Ok(jac)
}

/// The value of a derivative defined as a value (`g = ∂f/∂x`), from finite
/// differences of its function as written: a check of a derivative of `g`
/// then differences differences, sharing nothing with the engine.
pub fn derivative(env: &Env, d: &Derived, values: &Values) -> Result<Mat, EvalError> {
    use crate::ast::QueryKind;
    let value_of = |n: &str| Reference { env, values, cache: HashMap::new() }.name(n);
    let with = |n: &str, x: &Mat, values: &Values| {
        let mut v = values.clone();
        v.mats.insert(n.to_string(), x.clone());
        v
    };
    let order = d.conventions.order;
    let x0 = value_of(&d.wrt)?;
    let f = |x: &Mat| evaluate(env, &d.function, &with(&d.wrt, x, values));
    let symmetric = |n: &str| matches!(env.names.get(n), Some((Binding::Matrix { symmetric: true, .. }, _)));
    // ∂f/∂x of a scalar f, shaped like x; in the symmetric matrices for a symmetric x.
    let gradient = |f: &dyn Fn(&Mat) -> Result<Mat, EvalError>, x0: &Mat| -> Result<Mat, EvalError> {
        let mut g = Mat::zeros(x0.nrows(), x0.ncols());
        for i in 0..x0.nrows() {
            for j in 0..x0.ncols() {
                let p = partial(f, x0, i, j)?;
                if p.shape() != (1, 1) {
                    return err("the function is not a scalar");
                }
                g[(i, j)] = p[(0, 0)];
            }
        }
        Ok(if symmetric(&d.wrt) && g.is_square() { (&g + g.transpose()) * 0.5 } else { g })
    };
    let scalar = f(&x0)?.shape() == (1, 1);
    match d.kind {
        QueryKind::Gradient if scalar => gradient(&f, &x0),
        QueryKind::Gradient | QueryKind::Jacobian => {
            let j = jacobian(&f, &x0, order)?;
            Ok(if d.conventions.layout == crate::conventions::Layout::Denominator { j.transpose() } else { j })
        }
        QueryKind::Hessian => {
            if symmetric(&d.wrt) || d.wrt2.as_deref().is_some_and(symmetric) {
                return err("a Hessian by a symmetric matrix, defined as a value, cannot be evaluated here");
            }
            // The Jacobian, along the second variable, of vec of the gradient.
            let y = d.wrt2.clone().unwrap_or_else(|| d.wrt.clone());
            let y0 = value_of(&y)?;
            let grad_at = |yv: &Mat| -> Result<Mat, EvalError> {
                let moved = with(&y, yv, values);
                let x0 = Reference { env, values: &moved, cache: HashMap::new() }.name(&d.wrt)?;
                let f = |x: &Mat| evaluate(env, &d.function, &with(&d.wrt, x, &moved));
                Ok(super::vec_of(&gradient(&f, &x0)?, order))
            };
            jacobian(&grad_at, &y0, order)
        }
        _ => err("not a derivative"),
    }
}

struct Reference<'a> {
    env: &'a Env,
    values: &'a Values,
    cache: HashMap<String, Mat>,
}

/// Where an expression is, for messages.
fn at(e: &Expr) -> String {
    format!("bytes {}..{}", e.span.start, e.span.end)
}

fn err<T>(msg: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError(msg.into()))
}

fn scalar(x: f64) -> Mat {
    Mat::from_element(1, 1, x)
}

fn is_scalar(m: &Mat) -> bool {
    m.shape() == (1, 1)
}

fn require_square(m: &Mat, what: &str) -> Result<(), EvalError> {
    if m.is_square() {
        Ok(())
    } else {
        err(format!("{what} needs a square matrix, not {}×{}", m.nrows(), m.ncols()))
    }
}

/// `a op b` with NumPy broadcasting over two axes.
fn broadcast(a: &Mat, b: &Mat, op: impl Fn(f64, f64) -> f64, what: &str) -> Result<Mat, EvalError> {
    let axis = |x: usize, y: usize| {
        if x == y || y == 1 {
            Some(x)
        } else if x == 1 {
            Some(y)
        } else {
            None
        }
    };
    let (Some(r), Some(c)) = (axis(a.nrows(), b.nrows()), axis(a.ncols(), b.ncols())) else {
        return err(format!(
            "{what}: shapes {}×{} and {}×{} do not broadcast",
            a.nrows(),
            a.ncols(),
            b.nrows(),
            b.ncols()
        ));
    };
    ensure_entries(r, c)?;
    let pick =
        |m: &Mat, i: usize, j: usize| m[(if m.nrows() == 1 { 0 } else { i }, if m.ncols() == 1 { 0 } else { j })];
    Ok(Mat::from_fn(r, c, |i, j| op(pick(a, i, j), pick(b, i, j))))
}

/// A product: a 1×1 factor scales, otherwise rows meet columns.
fn product(a: &Mat, b: &Mat) -> Result<Mat, EvalError> {
    if is_scalar(a) {
        return Ok(b * a[(0, 0)]);
    }
    if is_scalar(b) {
        return Ok(a * b[(0, 0)]);
    }
    if a.ncols() != b.nrows() {
        return err(format!("cannot multiply {}×{} by {}×{}", a.nrows(), a.ncols(), b.nrows(), b.ncols()));
    }
    ensure_product(a.nrows(), a.ncols(), b.ncols())?;
    Ok(a * b)
}

fn kron(a: &Mat, b: &Mat) -> Result<Mat, EvalError> {
    let r = a.nrows().saturating_mul(b.nrows());
    let c = a.ncols().saturating_mul(b.ncols());
    ensure_entries(r, c)?;
    Ok(a.kronecker(b))
}

fn identity(n: usize) -> Result<Mat, EvalError> {
    ensure_entries(n, n)?;
    Ok(Mat::identity(n, n))
}

fn inverse(m: &Mat) -> Result<Mat, EvalError> {
    require_square(m, "the inverse")?;
    m.clone().try_inverse().ok_or_else(|| EvalError("singular matrix".into()))
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `p(t)` for coefficients in increasing degree.
fn poly_at(p: &[f64], t: f64) -> f64 {
    p.iter().rev().fold(0.0, |acc, c| acc * t + c)
}

/// The `k`-th derivative of `g` where `g' = q(g)` for a polynomial `q`,
/// written as a polynomial in `g`: `P₀ = g`, `Pₖ₊₁ = Pₖ'(g) q(g)`.
fn chain_poly(q: &[f64], k: u32) -> Vec<f64> {
    let mut p = vec![0.0, 1.0];
    for _ in 0..k {
        let dp: Vec<f64> = p.iter().enumerate().skip(1).map(|(i, c)| c * i as f64).collect();
        let mut next = vec![0.0; dp.len() + q.len()];
        for (i, a) in dp.iter().enumerate() {
            for (j, b) in q.iter().enumerate() {
                next[i + j] += a * b;
            }
        }
        p = next;
    }
    p
}

/// The built-in elementwise functions, by either spelling: the `k`-th
/// derivative at `x`, or `None` for a name that is not one.
fn builtin(name: &str, k: u32, x: f64) -> Option<f64> {
    let kf = f64::from(k);
    let quarter = std::f64::consts::FRAC_PI_2;
    Some(match name {
        "exp" => x.exp(),
        "log" => match k {
            0 => x.ln(),
            _ => {
                let fact: f64 = (1..k).map(f64::from).product();
                let sign = if k % 2 == 1 { 1.0 } else { -1.0 };
                sign * fact / x.powi(k as i32)
            }
        },
        "sin" => (x + kf * quarter).sin(),
        "cos" => (x + kf * quarter).cos(),
        // tanh' = 1 - tanh².
        "tanh" => poly_at(&chain_poly(&[1.0, 0.0, -1.0], k), x.tanh()),
        // σ' = σ - σ².
        "sigmoid" | "σ" => poly_at(&chain_poly(&[0.0, 1.0, -1.0], k), sigmoid(x)),
        "sqrt" => {
            let c: f64 = (0..k).map(|i| 0.5 - f64::from(i)).product();
            c * x.powf(0.5 - kf)
        }
        "softplus" => match k {
            0 => x.max(0.0) + (-x.abs()).exp().ln_1p(),
            _ => poly_at(&chain_poly(&[0.0, 1.0, -1.0], k - 1), sigmoid(x)),
        },
        "relu" => match k {
            0 => x.max(0.0),
            1 => f64::from(u8::from(x > 0.0)),
            _ => 0.0,
        },
        "abs" => match k {
            0 => x.abs(),
            1 => sign(x),
            _ => 0.0,
        },
        "step" => match k {
            0 => f64::from(u8::from(x > 0.0)),
            _ => 0.0,
        },
        "sign" => match k {
            0 => sign(x),
            _ => 0.0,
        },
        _ => return None,
    })
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// The size in `I_3` or `I_n`.
fn identity_suffix(s: &str) -> Option<DimAst> {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        s.parse().ok().map(DimAst::Num)
    } else {
        s.chars().next().filter(|c| c.is_alphabetic()).map(|_| DimAst::Sym(s.to_string()))
    }
}

/// What stands before the brackets of `A (x)`, `A'(x)`, `S^-1 (x)`, `I (x)`, `I_n (x)`.
enum Callee<'e> {
    Name(&'e str),
    Identity(&'e Ident),
    Sized(DimAst),
}

impl Reference<'_> {
    fn expr(&mut self, e: &Expr, w: &Written) -> Result<Mat, EvalError> {
        let v = self.expr_inner(e, w)?;
        if v.iter().any(|x| !x.is_finite()) {
            return err(format!("the value at {} is not finite at these values", at(e)));
        }
        Ok(v)
    }

    fn expr_inner(&mut self, e: &Expr, w: &Written) -> Result<Mat, EvalError> {
        if let Some(v) = self.matrix_call(e, w)? {
            return Ok(v);
        }
        match &e.kind {
            ExprKind::Num(q) => Ok(scalar(q.to_f64().unwrap_or(f64::NAN))),
            ExprKind::Derivative(_) => Err(EvalError(format!("the derivative at {} is not defined as a value", at(e)))),
            ExprKind::Name(n) => self.name(n),
            ExprKind::Identity(None) => {
                let d = w
                    .identities
                    .get(&e.span)
                    .ok_or_else(|| EvalError(format!("the size of the identity at {} was not recorded", at(e))))?;
                let n = d.eval(&self.values.sizes).ok_or_else(|| EvalError(format!("no value for size {d}")))?;
                identity(n)
            }
            ExprKind::Identity(Some(d)) => identity(self.dim(d)?),
            ExprKind::Neg(x) => Ok(-self.expr(x, w)?),
            ExprKind::Paren(x) => self.expr(x, w),
            ExprKind::Norm(x) => Ok(scalar(self.expr(x, w)?.norm())),
            ExprKind::Postfix(x, p) => {
                let v = self.expr(x, w)?;
                postfix(v, p)
            }
            ExprKind::Binary(op, a, b) => {
                let (a, b) = (self.expr(a, w)?, self.expr(b, w)?);
                match op {
                    BinOp::Add => broadcast(&a, &b, |x, y| x + y, "`+`"),
                    BinOp::Sub => broadcast(&a, &b, |x, y| x - y, "`-`"),
                    BinOp::Hadamard => broadcast(&a, &b, |x, y| x * y, "`∘`"),
                    BinOp::HadamardDiv => broadcast(&a, &b, |x, y| x / y, "`./`"),
                    BinOp::Mul => product(&a, &b),
                    BinOp::Div => {
                        if !is_scalar(&b) {
                            return err(format!("`/` divides by a scalar, not by {}×{}", b.nrows(), b.ncols()));
                        }
                        Ok(a / b[(0, 0)])
                    }
                    BinOp::Kron => kron(&a, &b),
                }
            }
            ExprKind::Call { name, primes, inverse, args } => self.call(name, *primes, *inverse, args, w),
        }
    }

    /// A size, as a number.
    fn dim(&self, d: &DimAst) -> Result<usize, EvalError> {
        match d {
            DimAst::Num(n) => usize::try_from(*n).map_err(|_| EvalError(format!("the size {n} is too large"))),
            DimAst::Sym(s) => {
                self.values.sizes.get(s).copied().ok_or_else(|| EvalError(format!("no value for size {s}")))
            }
        }
    }

    /// A size argument of `ones` or `unvec`: a whole number or a size name.
    fn size_arg(&self, a: &Expr) -> Result<usize, EvalError> {
        match &a.kind {
            ExprKind::Num(q) if q.is_integer() => match q.to_integer().to_usize() {
                Some(n) if n > 0 => Ok(n),
                _ => err(format!("the size at {} is not a positive whole number", at(a))),
            },
            ExprKind::Name(n) if !self.env.names.contains_key(n) => self.dim(&DimAst::Sym(n.clone())),
            // A product of sizes, `2 n`.
            ExprKind::Binary(BinOp::Mul, x, y) => Ok(self.size_arg(x)? * self.size_arg(y)?),
            ExprKind::Paren(x) => self.size_arg(x),
            _ => err(format!("expected a size at {}", at(a))),
        }
    }

    /// Whether `n` is a size in some declared matrix's shape.
    fn is_size(&self, n: &str) -> bool {
        self.env.names.values().any(|(b, _)| match b {
            Binding::Matrix { shape, .. } => shape.rows.symbols().chain(shape.cols.symbols()).any(|s| s == n),
            _ => false,
        })
    }

    fn name(&mut self, n: &str) -> Result<Mat, EvalError> {
        if let Some(m) = self.values.mats.get(n) {
            return Ok(m.clone());
        }
        match self.env.names.get(n).map(|(b, _)| b) {
            Some(Binding::Matrix { .. }) => err(format!("no value for `{n}`")),
            Some(Binding::Def { derived: Some(d), .. }) => {
                if let Some(m) = self.cache.get(n) {
                    return Ok(m.clone());
                }
                let v = derivative(self.env, d, self.values)?;
                self.cache.insert(n.to_string(), v.clone());
                Ok(v)
            }
            Some(Binding::Def { written: None, .. }) => err(format!("`{n}` is not a name of the script")),
            Some(Binding::Def { written: Some(written), .. }) => {
                if let Some(m) = self.cache.get(n) {
                    return Ok(m.clone());
                }
                let written = std::rc::Rc::clone(written);
                let v = self.expr(&written.expr, &written)?;
                self.cache.insert(n.to_string(), v.clone());
                Ok(v)
            }
            Some(Binding::Func) => err(format!("`{n}` is a function; it needs an argument")),
            None if self.is_size(n) => match self.values.sizes.get(n) {
                Some(&k) => Ok(scalar(k as f64)),
                None => err(format!("no value for size {n}")),
            },
            None => err(format!("unknown name `{n}`")),
        }
    }

    /// `A (x)` and the like, which are products, with any postfixes after the
    /// brackets applying to the bracketed factor (`A (B)ᵀ` is `A Bᵀ`).
    fn matrix_call(&mut self, e: &Expr, w: &Written) -> Result<Option<Mat>, EvalError> {
        let mut chain = Vec::new();
        let mut cur = e;
        while let ExprKind::Postfix(x, p) = &cur.kind {
            chain.push(p);
            cur = x;
        }
        let ExprKind::Call { name, primes, inverse, args } = &cur.kind else { return Ok(None) };
        if args.len() != 1 {
            return Ok(None);
        }
        let n = name.name.as_str();
        let callee = match self.env.names.get(n).map(|(b, _)| b) {
            Some(Binding::Matrix { .. } | Binding::Def { .. }) => Callee::Name(n),
            None if *primes == 0 && self.is_size(n) => Callee::Name(n),
            _ if n == "I" => Callee::Identity(name),
            _ => match n.strip_prefix("I_").and_then(identity_suffix) {
                Some(d) => Callee::Sized(d),
                None => return Ok(None),
            },
        };
        let mut rhs = self.expr(&args[0], w)?;
        for p in chain.into_iter().rev() {
            rhs = postfix(rhs, p)?;
        }
        let mut lhs = match callee {
            Callee::Name(n) => self.name(n)?,
            Callee::Identity(id) => match w.identities.get(&id.span) {
                Some(d) => {
                    identity(d.eval(&self.values.sizes).ok_or_else(|| EvalError(format!("no value for size {d}")))?)?
                }
                None => identity(rhs.nrows())?,
            },
            Callee::Sized(d) => identity(self.dim(&d)?)?,
        };
        if primes % 2 == 1 {
            lhs = lhs.transpose();
        }
        if *inverse {
            lhs = self::inverse(&lhs)?;
        }
        product(&lhs, &rhs).map(Some)
    }

    fn call(
        &mut self,
        name: &Ident,
        primes: usize,
        inverse: bool,
        args: &[Expr],
        w: &Written,
    ) -> Result<Mat, EvalError> {
        let n = name.name.as_str();
        let arity = |k: usize| {
            if args.len() == k {
                Ok(())
            } else {
                err(format!("`{n}` takes {k} argument(s), found {}", args.len()))
            }
        };
        if inverse && n != "vec" {
            return err(format!("`{n}^-1` is not a function"));
        }
        if n == "unvec" || n == "vec" && inverse {
            arity(3)?;
            let v = self.expr(&args[0], w)?;
            let (r, c) = (self.size_arg(&args[1])?, self.size_arg(&args[2])?);
            ensure_entries(r, c)?;
            if v.ncols() != 1 || v.nrows() != r * c {
                return err(format!(
                    "vec⁻¹ to {r}×{c} needs a column of {} entries, not {}×{}",
                    r * c,
                    v.nrows(),
                    v.ncols()
                ));
            }
            return Ok(Mat::from_fn(r, c, |i, j| v[(vec_index(i, j, r, c, w.order), 0)]));
        }
        if n == "ones" {
            arity(2)?;
            let (r, c) = (self.size_arg(&args[0])?, self.size_arg(&args[1])?);
            ensure_entries(r, c)?;
            return Ok(Mat::from_element(r, c, 1.0));
        }
        if n == "K_" {
            // The commutation matrix of an r×c matrix: K vec(A) = vec(Aᵀ).
            arity(2)?;
            let (r, c) = (self.size_arg(&args[0])?, self.size_arg(&args[1])?);
            ensure_entries(r * c, r * c)?;
            let mut k = Mat::zeros(r * c, r * c);
            for i in 0..r {
                for j in 0..c {
                    k[(vec_index(j, i, c, r, w.order), vec_index(i, j, r, c, w.order))] = 1.0;
                }
            }
            return Ok(k);
        }
        if n == "kron" {
            arity(2)?;
            return kron(&self.expr(&args[0], w)?, &self.expr(&args[1], w)?);
        }
        arity(1)?;
        let x = self.expr(&args[0], w)?;
        let primed = |v: Mat| if primes == 0 { Ok(v) } else { err(format!("`{n}` has no derivative `{n}'`")) };
        match n {
            "tr" => {
                require_square(&x, "the trace")?;
                return primed(scalar(x.trace()));
            }
            "det" => {
                require_square(&x, "the determinant")?;
                return primed(scalar(x.determinant()));
            }
            "logdet" => {
                require_square(&x, "log det")?;
                return primed(scalar(x.determinant().ln()));
            }
            "inv" => return primed(self::inverse(&x)?),
            "diag" => {
                return primed(if x.nrows() == 1 || x.ncols() == 1 {
                    ensure_entries(x.len(), x.len())?;
                    Mat::from_diagonal(&nalgebra::DVector::from_iterator(x.len(), x.iter().copied()))
                } else {
                    require_square(&x, "diag of a matrix")?;
                    Mat::from_fn(x.nrows(), 1, |i, _| x[(i, i)])
                });
            }
            "vec" => {
                let (r, c) = x.shape();
                return primed(Mat::from_fn(r * c, 1, |k, _| {
                    let (i, j) = match w.order {
                        VecOrder::Row => (k / c, k % c),
                        VecOrder::Col => (k % r, k / r),
                    };
                    x[(i, j)]
                }));
            }
            "sum" => return primed(scalar(x.sum())),
            "mean" => return primed(scalar(x.mean())),
            // Along each row, or over the whole of a column vector.
            "softmax" | "log_softmax" | "logsumexp" => return primed(normalise(n, &x)),
            "norm" => return primed(scalar(x.norm())),
            _ => {}
        }
        let k = u32::try_from(primes).map_err(|_| EvalError("too many primes".into()))?;
        if let Some(Binding::Func) = self.env.names.get(n).map(|(b, _)| b) {
            return Ok(x.map(|v| user_function(n, k, v)));
        }
        if builtin(n, 0, 0.5).is_some() {
            return Ok(x.map(|v| builtin(n, k, v).unwrap_or(f64::NAN)));
        }
        err(format!("unknown function `{n}`"))
    }
}

fn postfix(v: Mat, p: &Postfix) -> Result<Mat, EvalError> {
    match p {
        Postfix::Transpose => Ok(v.transpose()),
        Postfix::Inverse => inverse(&v),
        Postfix::Power(k) => matrix_power(&v, *k),
        Postfix::HadamardPow(q) => {
            if q.is_integer() {
                let k = q.to_integer().to_i32().ok_or_else(|| EvalError(format!("the exponent {q} is too large")))?;
                Ok(v.map(|x| x.powi(k)))
            } else {
                let k = q.to_f64().unwrap_or(f64::NAN);
                Ok(v.map(|x| x.powf(k)))
            }
        }
    }
}

/// `softmax`, `log_softmax` or `logsumexp` of each row of `x`, or of the
/// whole of a column vector, from `log Σ exp` computed around the largest
/// entry.
fn normalise(f: &str, x: &Mat) -> Mat {
    let lse = |v: &[f64]| {
        let top = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        top + v.iter().map(|a| (a - top).exp()).sum::<f64>().ln()
    };
    let groups: Vec<Vec<f64>> = if x.ncols() == 1 {
        vec![x.iter().copied().collect()]
    } else {
        (0..x.nrows()).map(|i| x.row(i).iter().copied().collect()).collect()
    };
    let l: Vec<f64> = groups.iter().map(|g| lse(g)).collect();
    let at = |i: usize| if x.ncols() == 1 { l[0] } else { l[i] };
    match f {
        "logsumexp" if x.ncols() == 1 => Mat::from_element(1, 1, l[0]),
        "logsumexp" => Mat::from_fn(x.nrows(), 1, |i, _| l[i]),
        "log_softmax" => Mat::from_fn(x.nrows(), x.ncols(), |i, j| x[(i, j)] - at(i)),
        _ => Mat::from_fn(x.nrows(), x.ncols(), |i, j| (x[(i, j)] - at(i)).exp()),
    }
}
