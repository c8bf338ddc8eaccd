//! The built-in functions, one table row each.
//!
//! A row ([`Builtin`]) says everything the pipeline needs: the spellings
//! (text, ASCII, LaTeX, and the code of NumPy, JAX and PyTorch), the value, the derivative or differential
//! (written with the IR's own operations, so identification and reverse
//! mode need no new rule), the shape rule and the cost. Adding a function
//! is adding a row here, plus its tests; typing, differentials, printing,
//! evaluation, code generation, the cost models and the REPL's completion
//! all read this table.

use crate::ir::{self, rat, Builtin, Expr, Func, Kind, Op};
use crate::shape::Shape;
use nalgebra::DMatrix;
use num_rational::BigRational;
use num_traits::One;

/// Every built-in function, in the order the help lists them.
pub static BUILTINS: &[&Builtin] = &[
    &EXP,
    &LOG,
    &SIN,
    &COS,
    &TANH,
    &SIGMOID,
    &SQRT,
    &SOFTPLUS,
    &RELU,
    &ABS,
    &STEP,
    &SIGN,
    &MEAN,
    &SOFTMAX,
    &LOG_SOFTMAX,
    &LOGSUMEXP,
];

/// The built-in with this name (text or ASCII spelling).
///
/// ```
/// let f = matdiff::functions::lookup("sigmoid").unwrap();
/// assert_eq!(f.name(false), "σ");
/// ```
pub fn lookup(name: &str) -> Option<Func> {
    BUILTINS.iter().find(|b| b.name == name || b.ascii == name).map(|b| Func::Builtin(b))
}

/// Every spelling of every built-in, for suggestions and completion.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().flat_map(|b| if b.name == b.ascii { vec![b.name] } else { vec![b.name, b.ascii] })
}

fn app(b: &'static Builtin, x: &Expr) -> Expr {
    ir::apply(Func::Builtin(b), x.clone())
}

fn ones(x: &Expr) -> Expr {
    ir::ones(x.shape.clone())
}

fn half() -> BigRational {
    BigRational::new(1.into(), 2.into())
}

// One argument per column of the table: a row reads left to right.
#[allow(clippy::too_many_arguments)]
const fn elementwise(
    name: &'static str,
    ascii: &'static str,
    latex: &'static str,
    eval: fn(f64) -> f64,
    derivative: fn(&Expr) -> Expr,
    at_zero: Option<i64>,
    [numpy, jax, torch]: [&'static str; 3],
    cost: f64,
) -> Builtin {
    Builtin {
        name,
        ascii,
        latex,
        kind: Kind::Elementwise { eval, derivative, at_zero },
        numpy,
        numpy_helper: None,
        jax,
        jax_helper: None,
        torch,
        torch_helper: None,
        cost,
    }
}

/// The code of a function that NumPy, JAX and PyTorch all call `name`:
/// `np.name({x})`, `jnp.name({x})`, `torch.name({x})`.
macro_rules! same {
    ($name:literal) => {
        [concat!("np.", $name, "({x})"), concat!("jnp.", $name, "({x})"), concat!("torch.", $name, "({x})")]
    };
}

/// `exp`
pub static EXP: Builtin = elementwise("exp", "exp", r"\exp", f64::exp, |x| app(&EXP, x), Some(1), same!("exp"), 4.0);
/// `log`, natural
pub static LOG: Builtin =
    elementwise("log", "log", r"\log", f64::ln, |x| ir::hadamard_div(ones(x), x.clone()), None, same!("log"), 4.0);
/// `sin`
pub static SIN: Builtin = elementwise("sin", "sin", r"\sin", f64::sin, |x| app(&COS, x), Some(0), same!("sin"), 4.0);
/// `cos`
pub static COS: Builtin =
    elementwise("cos", "cos", r"\cos", f64::cos, |x| ir::neg(app(&SIN, x)), Some(1), same!("cos"), 4.0);
/// `tanh`, with `tanh' = 1 - tanh²`
pub static TANH: Builtin = elementwise(
    "tanh",
    "tanh",
    r"\tanh",
    f64::tanh,
    |x| ir::sub(ones(x), ir::hadamard_pow(app(&TANH, x), rat(2))),
    Some(0),
    same!("tanh"),
    4.0,
);
/// `σ`, the logistic sigmoid, with `σ' = σ ∘ (1 - σ)`
pub static SIGMOID: Builtin = Builtin {
    name: "σ",
    ascii: "sigmoid",
    latex: r"\sigma",
    kind: Kind::Elementwise {
        eval: |x| 1.0 / (1.0 + (-x).exp()),
        derivative: |x| ir::hadamard(app(&SIGMOID, x), ir::sub(ones(x), app(&SIGMOID, x))),
        at_zero: None,
    },
    numpy: "_sigmoid({x})",
    numpy_helper: Some(("_sigmoid", "def _sigmoid(x):\n    return 0.5 * (1.0 + np.tanh(0.5 * x))\n")),
    jax: "_sigmoid({x})",
    jax_helper: Some(("_sigmoid", "def _sigmoid(x):\n    return 0.5 * (1.0 + jnp.tanh(0.5 * x))\n")),
    torch: "torch.sigmoid({x})",
    torch_helper: None,
    cost: 4.0,
};
/// `sqrt`
pub static SQRT: Builtin = elementwise(
    "sqrt",
    "sqrt",
    r"\operatorname{sqrt}",
    f64::sqrt,
    |x| ir::hadamard_div(ir::scale(half(), ones(x)), app(&SQRT, x)),
    Some(0),
    same!("sqrt"),
    4.0,
);
/// `softplus(x) = log(1 + eˣ)`, with `softplus' = σ`
pub static SOFTPLUS: Builtin = Builtin {
    torch: "_softplus({x})",
    torch_helper: Some(("_softplus", "def _softplus(x):\n    return torch.logaddexp(x, torch.zeros_like(x))\n")),
    ..elementwise(
        "softplus",
        "softplus",
        r"\operatorname{softplus}",
        |x| x.max(0.0) + (-x.abs()).exp().ln_1p(),
        |x| app(&SIGMOID, x),
        None,
        ["np.logaddexp(0.0, {x})", "jnp.logaddexp(0.0, {x})", ""],
        4.0,
    )
};
/// `relu(x) = max(x, 0)`, with `relu' = step`
pub static RELU: Builtin = elementwise(
    "relu",
    "relu",
    r"\operatorname{relu}",
    |x| x.max(0.0),
    |x| app(&STEP, x),
    Some(0),
    ["np.maximum({x}, 0.0)", "jnp.maximum({x}, 0.0)", "torch.relu({x})"],
    4.0,
);
/// `abs`, with `abs' = sign`
pub static ABS: Builtin =
    elementwise("abs", "abs", r"\operatorname{abs}", f64::abs, |x| app(&SIGN, x), Some(0), same!("abs"), 4.0);
/// The Heaviside step, 0 at 0: the derivative of `relu`.
pub static STEP: Builtin = elementwise(
    "step",
    "step",
    r"\operatorname{step}",
    |x| f64::from(u8::from(x > 0.0)),
    |x| ir::zero(x.shape.clone()),
    Some(0),
    ["({x} > 0).astype(_dtype)", "({x} > 0).astype(_dtype)", "({x} > 0).to(_dtype)"],
    4.0,
);
/// The sign function, 0 at 0: the derivative of `abs`.
pub static SIGN: Builtin = elementwise(
    "sign",
    "sign",
    r"\operatorname{sign}",
    |x| {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    },
    |x| ir::zero(x.shape.clone()),
    Some(0),
    same!("sign"),
    4.0,
);
/// `mean(X)`, the mean of all entries (1×1): `d mean(X) = sum(dX) / (m n)`.
pub static MEAN: Builtin = Builtin {
    name: "mean",
    ascii: "mean",
    latex: r"\operatorname{mean}",
    kind: Kind::Matrix {
        shape: |_| Shape::scalar(),
        eval: |x| DMatrix::from_element(1, 1, x.mean()),
        differential: |x, dx| ir::div(ir::sum(dx), ir::size(x.shape.len())),
    },
    numpy: "np.mean({x}, keepdims=True)",
    numpy_helper: None,
    jax: "jnp.mean({x}, keepdims=True)",
    jax_helper: None,
    torch: "torch.mean({x}).reshape(1, 1)",
    torch_helper: None,
    cost: 1.0,
};

/// Whether `softmax` and its kin normalise `x` as a whole: a column vector
/// (one column) is one distribution; otherwise each row is.
fn whole(x: &Shape) -> bool {
    x.cols.is_one()
}

/// Each row of `m` (or the whole column), shifted by its largest entry so
/// that `exp` never overflows: the shifted values and the shifts.
fn shifted(m: &DMatrix<f64>) -> (DMatrix<f64>, Vec<f64>) {
    let mut out = m.clone();
    if m.ncols() == 1 {
        let top = m.max();
        out.add_scalar_mut(-top);
        (out, vec![top])
    } else {
        let tops: Vec<f64> = m.row_iter().map(|r| r.max()).collect();
        for (i, t) in tops.iter().enumerate() {
            out.row_mut(i).add_scalar_mut(-t);
        }
        (out, tops)
    }
}

/// `log Σ exp` of each row (or of the whole column), computed stably.
fn lse(m: &DMatrix<f64>) -> DMatrix<f64> {
    let (z, tops) = shifted(m);
    let e = z.map(f64::exp);
    if m.ncols() == 1 {
        DMatrix::from_element(1, 1, tops[0] + e.sum().ln())
    } else {
        DMatrix::from_fn(m.nrows(), 1, |i, _| tops[i] + e.row(i).sum().ln())
    }
}

/// `log_softmax` of each row of `m` (or of the whole column): `m` less the
/// row's `log Σ exp`.
fn log_softmax_values(m: &DMatrix<f64>) -> DMatrix<f64> {
    let l = lse(m);
    DMatrix::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)] - if m.ncols() == 1 { l[(0, 0)] } else { l[(i, 0)] })
}

/// `softmax(x)` of the same shape (the differentials below need it).
fn softmax_of(x: &Expr) -> Expr {
    app(&SOFTMAX, x)
}

/// `(g) ones(n, 1)`: the sums of the rows of `g`.
fn row_sums(g: Expr) -> Expr {
    let n = g.shape.cols.clone();
    ir::matmul(g, ir::ones(Shape::new(n, crate::shape::Dim::one())))
}

/// `c ones(1, n)`: a column repeated across `n` columns.
fn across(c: Expr, n: &crate::shape::Dim) -> Expr {
    ir::matmul(c, ir::ones(Shape::new(crate::shape::Dim::one(), n.clone())))
}

/// `softmax(X)`: `exp` normalised to sum 1 along each row, or over the whole
/// of a column vector. `d softmax = P ∘ dX - P ∘ (rows of P ∘ dX summed)`.
pub static SOFTMAX: Builtin = Builtin {
    name: "softmax",
    ascii: "softmax",
    latex: r"\operatorname{softmax}",
    kind: Kind::Matrix {
        shape: |x| x.clone(),
        eval: |m| log_softmax_values(m).map(f64::exp),
        differential: |x, dx| {
            let p = softmax_of(x);
            let g = ir::hadamard(p.clone(), dx.clone());
            if whole(&x.shape) {
                ir::sub(g, ir::scalar_mul(ir::matmul(ir::transpose(p.clone()), dx), p))
            } else {
                ir::sub(g.clone(), ir::hadamard(p, across(row_sums(g), &x.shape.cols)))
            }
        },
    },
    numpy: "_softmax({x})",
    numpy_helper: Some((
        "_softmax",
        "def _softmax(x):\n    axis = 0 if x.shape[1] == 1 else 1\n    \
         e = np.exp(x - np.max(x, axis=axis, keepdims=True))\n    \
         return e / np.sum(e, axis=axis, keepdims=True)\n",
    )),
    jax: "_softmax({x})",
    jax_helper: Some((
        "_softmax",
        "def _softmax(x):\n    axis = 0 if x.shape[1] == 1 else 1\n    \
         e = jnp.exp(x - jnp.max(x, axis=axis, keepdims=True))\n    \
         return e / jnp.sum(e, axis=axis, keepdims=True)\n",
    )),
    torch: "_softmax({x})",
    torch_helper: Some((
        "_softmax",
        "def _softmax(x):\n    return torch.softmax(x, dim=0 if x.shape[1] == 1 else 1)\n",
    )),
    cost: 8.0,
};

/// `log_softmax(X) = X - logsumexp(X)`, along each row or over a column
/// vector: `d log_softmax = dX - (rows of softmax ∘ dX summed)`.
pub static LOG_SOFTMAX: Builtin = Builtin {
    name: "log_softmax",
    ascii: "log_softmax",
    latex: r"\operatorname{log\_softmax}",
    kind: Kind::Matrix {
        shape: |x| x.clone(),
        eval: log_softmax_values,
        differential: |x, dx| {
            let p = softmax_of(x);
            if whole(&x.shape) {
                let ones = ir::ones(x.shape.clone());
                ir::sub(dx.clone(), ir::scalar_mul(ir::matmul(ir::transpose(p), dx), ones))
            } else {
                ir::sub(dx.clone(), across(row_sums(ir::hadamard(p, dx)), &x.shape.cols))
            }
        },
    },
    numpy: "_log_softmax({x})",
    numpy_helper: Some((
        "_log_softmax",
        "def _log_softmax(x):\n    axis = 0 if x.shape[1] == 1 else 1\n    \
         z = x - np.max(x, axis=axis, keepdims=True)\n    \
         return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))\n",
    )),
    jax: "_log_softmax({x})",
    jax_helper: Some((
        "_log_softmax",
        "def _log_softmax(x):\n    axis = 0 if x.shape[1] == 1 else 1\n    \
         z = x - jnp.max(x, axis=axis, keepdims=True)\n    \
         return z - jnp.log(jnp.sum(jnp.exp(z), axis=axis, keepdims=True))\n",
    )),
    torch: "_log_softmax({x})",
    torch_helper: Some((
        "_log_softmax",
        "def _log_softmax(x):\n    return torch.log_softmax(x, dim=0 if x.shape[1] == 1 else 1)\n",
    )),
    cost: 8.0,
};

/// `logsumexp(X)`: `log Σ exp` of each row (an `m×1` column), or of a
/// whole column vector (1×1). `d logsumexp = (rows of softmax ∘ dX summed)`.
pub static LOGSUMEXP: Builtin = Builtin {
    name: "logsumexp",
    ascii: "logsumexp",
    latex: r"\operatorname{logsumexp}",
    kind: Kind::Matrix {
        shape: |x| if whole(x) { Shape::scalar() } else { Shape::new(x.rows.clone(), crate::shape::Dim::one()) },
        eval: lse,
        differential: |x, dx| {
            let p = softmax_of(x);
            if whole(&x.shape) {
                ir::matmul(ir::transpose(p), dx)
            } else {
                row_sums(ir::hadamard(p, dx))
            }
        },
    },
    numpy: "_logsumexp({x})",
    numpy_helper: Some((
        "_logsumexp",
        "def _logsumexp(x):\n    axis = 0 if x.shape[1] == 1 else 1\n    \
         m = np.max(x, axis=axis, keepdims=True)\n    \
         return m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))\n",
    )),
    jax: "_logsumexp({x})",
    jax_helper: Some((
        "_logsumexp",
        "def _logsumexp(x):\n    axis = 0 if x.shape[1] == 1 else 1\n    \
         m = jnp.max(x, axis=axis, keepdims=True)\n    \
         return m + jnp.log(jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True))\n",
    )),
    torch: "_logsumexp({x})",
    torch_helper: Some((
        "_logsumexp",
        "def _logsumexp(x):\n    return torch.logsumexp(x, dim=0 if x.shape[1] == 1 else 1, keepdim=True)\n",
    )),
    cost: 8.0,
};

/// `f⁽ᵏ⁾(x)` of an elementwise function, as an expression (`σ' = σ ∘ (1 - σ)`,
/// `σ''` its derivative in turn); `None` for a function that is not
/// elementwise. `relu' = step` and `abs' = sign`, taking the value 0 at the kink.
///
/// ```
/// use matdiff::{functions, ir, shape::{Dim, Shape}};
/// let z = ir::var("z", Shape::new(Dim::sym("n"), Dim::one()), false);
/// let sigmoid = functions::lookup("σ").unwrap();
/// let d = functions::derivative(&sigmoid, &z, 1).unwrap();
/// assert_eq!(matdiff::print::text(&d), "σ(z) ∘ (1 - σ(z))");
/// ```
pub fn derivative(f: &Func, x: &Expr, order: u32) -> Option<Expr> {
    if order == 0 {
        return Some(ir::apply(f.clone(), x.clone()));
    }
    let derivative = match f {
        Func::User(n, k) => return Some(ir::apply(Func::User(n.clone(), k + order), x.clone())),
        Func::Builtin(Builtin { kind: Kind::Elementwise { derivative, .. }, .. }) => derivative,
        Func::Builtin(_) => return None,
    };
    // Higher orders differentiate the first derivative's expression in a
    // stand-in for `x`, then put `x` back.
    let t = ir::var("\u{0}x", x.shape.clone(), false);
    let mut g = derivative(&t);
    for _ in 1..order {
        g = along(&g, &t)?;
    }
    Some(ir::map_bottom_up(&g, &mut |n| if n == t { x.clone() } else { n }))
}

/// `∂e/∂t` entry by entry, for an `e` built from `t` by elementwise
/// operations only (what first derivatives of elementwise functions are).
fn along(e: &Expr, t: &Expr) -> Option<Expr> {
    if e == t {
        return Some(ones(t));
    }
    if !e.mentions("\u{0}x") {
        return Some(ir::zero(e.shape.clone()));
    }
    Some(match &e.op {
        Op::Add(ts) => ir::sum_of(ts.iter().map(|x| along(x, t)).collect::<Option<_>>()?),
        Op::Scale(s, x) if !s.mentions("\u{0}x") => ir::scalar_mul(s.clone(), along(x, t)?),
        Op::Hadamard(a, b) => ir::add(ir::hadamard(along(a, t)?, b.clone()), ir::hadamard(a.clone(), along(b, t)?)),
        Op::HadamardDiv(a, b) => ir::sub(
            ir::hadamard_div(along(a, t)?, b.clone()),
            ir::hadamard_div(ir::hadamard(a.clone(), along(b, t)?), ir::hadamard_pow(b.clone(), rat(2))),
        ),
        Op::HadamardPow(a, k) => {
            ir::hadamard(ir::scale(k.clone(), ir::hadamard_pow(a.clone(), k - BigRational::one())), along(a, t)?)
        }
        Op::Apply(g, a) => ir::hadamard(derivative(g, a, 1)?, along(a, t)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::session::Session;

    /// `mean` is one row of the table: typed, differentiated, printed,
    /// simplified, evaluated and checked with nothing else to add.
    #[test]
    fn mean_is_one_row_of_the_table() {
        let mut s = Session::default();
        let src = "X: N x d; W: d x k; L = mean(exp(X W)); grad(L, W); hessian(mean(X ∘ X), X); mean(X)";
        let answers = s.answers(src).unwrap();
        assert_eq!(answers[0].text(), "(1 / (N k)) Xᵀ exp(X W)");
        assert_eq!(answers[1].text(), "(2 / (N d)) I");
        assert_eq!(answers[2].text(), "mean(X)");
        assert_eq!(answers[2].latex(), r"\operatorname{mean}\left(\mathbf{X}\right)");
        assert_eq!(answers[2].expr.shape.to_string(), "1×1");
        for a in &answers[..2] {
            assert!(s.check(a).unwrap().unwrap() < 1e-6, "{}", a.text());
        }
        let py = s.numpy(&answers[2..]).unwrap();
        assert!(py.contains("np.mean(X, keepdims=True)"), "{py}");
        assert!(crate::typeck::language_names().any(|n| n == "mean"));
    }
}
