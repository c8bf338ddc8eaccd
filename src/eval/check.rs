//! Finite-difference checks of symbolic derivatives.
//!
//! Symbolic sizes get small distinct values (2, 3, 5, …) so that a missing
//! transpose cannot hide; matrices get random values, square ones
//! diagonally dominant so that inverses, determinants and `log det` exist.
//! If an expression is undefined there (a `log` of a negative entry), the
//! check draws again with positive entries.

use super::{vec_of, EvalError, Evaluator, Mat, Values};
use crate::ast::QueryKind;
use crate::diff::chain::{Conventions, Layout};
use crate::session::Answer;
use crate::typeck::{Binding, Env};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Central-difference step.
const STEP: f64 = 1e-5;
/// Largest relative error accepted.
pub const TOLERANCE: f64 = 1e-5;

/// Sizes given to symbols, in the order symbols are first met.
const SIZES: [usize; 6] = [2, 3, 5, 4, 6, 7];

/// Random values for every declared matrix.
pub fn random_values(env: &Env, rng: &mut StdRng, positive: bool) -> Values {
    let mut v = Values::default();
    let mut next = 0;
    for (binding, _) in env.names.values() {
        if let Binding::Matrix { shape, .. } = binding {
            for d in [&shape.rows, &shape.cols] {
                for s in d.symbols() {
                    if !v.sizes.contains_key(s) {
                        v.sizes.insert(s.to_string(), SIZES[next % SIZES.len()] + 6 * (next / SIZES.len()));
                        next += 1;
                    }
                }
            }
        }
    }
    for (name, (binding, _)) in &env.names {
        if let Binding::Matrix { shape, symmetric } = binding {
            let (r, c) = (shape.rows.eval(&v.sizes).unwrap_or(1), shape.cols.eval(&v.sizes).unwrap_or(1));
            let mut m =
                Mat::from_fn(
                    r,
                    c,
                    |_, _| {
                        if positive {
                            rng.random_range(0.5..1.5)
                        } else {
                            rng.random_range(-1.0..1.0)
                        }
                    },
                );
            if r == c && r > 1 {
                m = m * 0.3 + Mat::identity(r, r) * 2.0;
            }
            if *symmetric {
                m = (&m + m.transpose()) * 0.5;
            }
            v.mats.insert(name.clone(), m);
        }
    }
    v
}

/// `∂vec(F)/∂vec(X)ᵀ` by central differences (numerator layout).
fn numeric_jacobian(
    env: &Env,
    values: &Values,
    f: &crate::ir::Expr,
    x: &str,
    order: crate::ir::VecOrder,
) -> Result<Mat, EvalError> {
    let x0 = Evaluator::new(env, values).name(x)?;
    let (r, c) = x0.shape();
    let f_at = |xv: Mat| -> Result<Mat, EvalError> {
        let mut vals = values.clone();
        vals.mats.insert(x.to_string(), xv);
        Ok(vec_of(&Evaluator::new(env, &vals).eval(f)?, order))
    };
    let n_out = f_at(x0.clone())?.nrows();
    let mut j = Mat::zeros(n_out, r * c);
    for i in 0..r {
        for k in 0..c {
            let h = STEP * x0[(i, k)].abs().max(1.0);
            let (mut plus, mut minus) = (x0.clone(), x0.clone());
            plus[(i, k)] += h;
            minus[(i, k)] -= h;
            let col = (f_at(plus)? - f_at(minus)?) / (2.0 * h);
            j.set_column(super::vec_index(i, k, r, c, order), &col.column(0));
        }
    }
    Ok(j)
}

/// For a symmetric variable, entries `(i, k)` and `(k, i)` move together:
/// the columns of a Jacobian for the pairs `i ≤ k`, summed.
fn collapse_symmetric(j: &Mat, n: usize, order: crate::ir::VecOrder) -> Mat {
    let mut out = Mat::zeros(j.nrows(), n * (n + 1) / 2);
    let mut col = 0;
    for i in 0..n {
        for k in i..n {
            let mut c = j.column(super::vec_index(i, k, n, n, order)).into_owned();
            if i != k {
                c += j.column(super::vec_index(k, i, n, n, order));
            }
            out.set_column(col, &c);
            col += 1;
        }
    }
    out
}

/// Whether `x` is declared symmetric.
fn is_symmetric(env: &Env, x: &str) -> bool {
    matches!(env.names.get(x), Some((Binding::Matrix { symmetric: true, .. }, _)))
}

/// A random direction for `x`: symmetric when `x` is declared symmetric.
fn direction(env: &Env, x: &str, like: &Mat, rng: &mut StdRng) -> Mat {
    let d = Mat::from_fn(like.nrows(), like.ncols(), |_, _| rng.random_range(-1.0..1.0));
    if is_symmetric(env, x) {
        (&d + d.transpose()) * 0.5
    } else {
        d
    }
}

fn relative_error(a: &Mat, n: &Mat) -> f64 {
    let scale = a.norm().max(n.norm());
    if scale < 1e-9 {
        0.0
    } else {
        (a - n).norm() / scale.max(1e-3)
    }
}

/// The largest relative error of the answer against finite differences over
/// a few random draws, or `None` when the query is not a derivative.
pub fn check(env: &Env, answer: &Answer, conv: Conventions, seed: u64) -> Result<Option<f64>, EvalError> {
    let Some(f) = &answer.function else {
        return Ok(None);
    };
    let derivative = matches!(
        answer.kind,
        QueryKind::Gradient
            | QueryKind::Jacobian
            | QueryKind::Differential
            | QueryKind::Hessian
            | QueryKind::SecondDifferential
    );
    if !derivative {
        return Ok(None);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut worst: f64 = 0.0;
    for trial in 0..3 {
        let mut last = Err(EvalError("no values".into()));
        for positive in [false, true] {
            let values = random_values(env, &mut rng, positive || trial == 2);
            last = check_once(env, answer, f, conv, &values, &mut rng);
            if last.is_ok() {
                break;
            }
        }
        worst = worst.max(last?);
    }
    Ok(Some(worst))
}

fn check_once(
    env: &Env,
    answer: &Answer,
    f: &crate::ir::Expr,
    conv: Conventions,
    values: &Values,
    rng: &mut StdRng,
) -> Result<f64, EvalError> {
    let order = conv.order;
    match answer.kind {
        QueryKind::SecondDifferential => {
            // d²F against the second difference along all varying names at once.
            let mut dirs = Values::default();
            let mut ev = Evaluator::new(env, values);
            for n in &answer.varying {
                let x0 = ev.name(n)?;
                dirs.mats.insert(n.clone(), direction(env, n, &x0, rng));
            }
            // Second differences, Richardson-extrapolated: error O(h⁴) + O(ε/h²).
            let h = 2e-3;
            let at = |t: f64| -> Result<Mat, EvalError> {
                let mut vals = values.clone();
                for (n, d) in &dirs.mats {
                    let x0 = Evaluator::new(env, values).name(n)?;
                    vals.mats.insert(n.clone(), x0 + d * t);
                }
                Evaluator::new(env, &vals).eval(f)
            };
            let centre = at(0.0)?;
            let second = |h: f64| -> Result<Mat, EvalError> { Ok((at(h)? - &centre * 2.0 + at(-h)?) / (h * h)) };
            let expected = (second(h / 2.0)? * 4.0 - second(h)?) / 3.0;
            let mut vals = values.clone();
            vals.diffs = dirs.mats;
            let got = Evaluator::new(env, &vals).eval(&answer.expr)?;
            Ok(relative_error(&got, &expected))
        }
        QueryKind::Differential => {
            // Every name whose differential may appear moves, so that an
            // answer missing a term fails.
            let mut names: Vec<crate::ir::Name> = answer.varying.iter().map(|n| n.as_str().into()).collect();
            answer.expr.diff_names(&mut names);
            // The differentials of the names in dF are independent: hold
            // every one of those names at its value while another moves.
            let mut held = values.clone();
            for n in &names {
                let v = Evaluator::new(env, values).name(n)?;
                held.mats.insert(n.to_string(), v);
            }
            let values = &held;
            let mut vals = values.clone();
            let mut ev = Evaluator::new(env, values);
            let mut expected = Mat::zeros(vec_of(&ev.eval(f)?, order).nrows(), 1);
            for n in &names {
                let x0 = ev.name(n)?;
                let dir = direction(env, n, &x0, rng);
                let j = numeric_jacobian(env, values, f, n, order)?;
                expected += j * vec_of(&dir, order);
                vals.diffs.insert(n.to_string(), dir);
            }
            let got = vec_of(&Evaluator::new(env, &vals).eval(&answer.expr)?, order);
            Ok(relative_error(&got, &expected))
        }
        _ => {
            // A Hessian is checked as the Jacobian of the gradient, with respect to the last variable.
            let x = answer.wrt2.as_deref().or(answer.wrt.as_deref()).ok_or_else(|| EvalError("no variable".into()))?;
            let num = numeric_jacobian(env, values, f, x, order)?;
            let got = Evaluator::new(env, values).eval(&answer.expr)?;
            let got = if answer.kind == QueryKind::Gradient && f.shape.is_scalar() {
                vec_of(&got, order).transpose()
            } else if conv.layout == Layout::Denominator && answer.kind != QueryKind::Hessian {
                got.transpose()
            } else {
                got
            };
            // A symmetric variable moves only symmetrically: compare on pairs of entries.
            let (got, num) = if is_symmetric(env, x) && got.ncols() == num.ncols() {
                let n = Evaluator::new(env, values).name(x)?.nrows();
                (collapse_symmetric(&got, n, order), collapse_symmetric(&num, n, order))
            } else {
                (got, num)
            };
            if got.shape() != num.shape() {
                return Err(EvalError(format!(
                    "answer is {}x{}, finite differences give {}x{}",
                    got.nrows(),
                    got.ncols(),
                    num.nrows(),
                    num.ncols()
                )));
            }
            Ok(relative_error(&got, &num))
        }
    }
}
