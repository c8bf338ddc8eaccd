//! Finite-difference checks of symbolic derivatives.
//!
//! A check is a second opinion: every finite difference is of the function
//! as written, evaluated by [`super::reference`] straight from the parsed
//! script on arrays, never of the typed, simplified form under test. Only
//! the answer itself is evaluated from the IR ([`super::Evaluator`]), under the
//! conventions it was derived under.
//!
//! - A gradient or Jacobian is compared with the Jacobian of `vec(F)` by
//!   central differences, entry by entry when the variable is small, along
//!   random directions otherwise.
//! - A Hessian `∂²F/∂vec(X)∂vec(Y)ᵀ` is compared with mixed second
//!   differences of `F` along random pairs of directions `u` (for `X`) and
//!   `w` (for `Y`): `uᵀ H w`.
//! - `d(F)` holds every name whose differential may appear at its value and
//!   moves them all along random directions; `d²(F)` likewise with second
//!   differences.
//!
//! A variable declared `symmetric` moves along symmetric directions only.
//!
//! Symbolic sizes get small distinct values (2, 3, 5, …) so that a missing
//! transpose cannot hide; matrices get random values, square ones
//! diagonally dominant so that inverses, determinants and `log det` exist.
//! If an expression is undefined there (a `log` of a negative entry), the
//! check draws again with positive entries.

use super::{reference, vec_of, EvalError, Mat, Values};
use crate::ast::{Expr as Ast, ExprKind, QueryKind};
use crate::conventions::{Conventions, Layout};
use crate::derive::Answer;
use crate::ir::VecOrder;
use crate::typeck::{Binding, Env, Written};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Central-difference step.
const STEP: f64 = 1e-5;
/// The step of the five-point differences taken of a function that uses a
/// derivative defined as a value (see [`reference::derivative`]).
const NESTED_STEP: f64 = 1e-3;
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

/// Largest variable whose Jacobian is taken entry by entry; larger ones are
/// compared along [`DIRECTIONS`] random directions.
const FULL_JACOBIAN: usize = 64;
/// Random directions (or pairs of directions, for a Hessian) per draw.
const DIRECTIONS: usize = 8;

/// `F` as written, with these values.
fn f_at(env: &Env, f: &Written, values: &Values) -> Result<Mat, EvalError> {
    reference::evaluate(env, f, values)
}

/// The value of a name from the reference evaluator: given, or its
/// definition evaluated from the text.
fn value_of(env: &Env, name: &str, values: &Values, order: VecOrder) -> Result<Mat, EvalError> {
    let expr = Ast { kind: ExprKind::Name(name.to_string()), span: crate::error::Span::default() };
    let w = Written { expr, identities: Default::default(), order };
    reference::evaluate(env, &w, values)
}

/// The values with each of `names` held at its value (a defined name then
/// no longer follows its definition), and those values.
fn hold(env: &Env, values: &Values, names: &[String], order: VecOrder) -> Result<(Values, Vec<Mat>), EvalError> {
    let mut held = values.clone();
    let mut at = Vec::new();
    for n in names {
        let v = value_of(env, n, values, order)?;
        held.mats.insert(n.clone(), v.clone());
        at.push(v);
    }
    Ok((held, at))
}

/// `F` with each name `names[i]` moved to `at[i] + t · dirs[i]`.
fn moved(
    env: &Env,
    f: &Written,
    held: &Values,
    names: &[String],
    at: &[Mat],
    dirs: &[Mat],
    t: f64,
) -> Result<Mat, EvalError> {
    let mut vals = held.clone();
    for ((n, x0), d) in names.iter().zip(at).zip(dirs) {
        vals.mats.insert(n.clone(), x0 + d * t);
    }
    f_at(env, f, &vals)
}

/// The derivative of `F` along the directions, by central differences with
/// Richardson extrapolation (error O(h⁴)).
fn directional(
    env: &Env,
    f: &Written,
    held: &Values,
    names: &[String],
    at: &[Mat],
    dirs: &[Mat],
) -> Result<Mat, EvalError> {
    let h = 1e-3;
    let central = |h: f64| -> Result<Mat, EvalError> {
        let plus = moved(env, f, held, names, at, dirs, h)?;
        let minus = moved(env, f, held, names, at, dirs, -h)?;
        same_shape(&plus, &minus)?;
        Ok((plus - minus) / (2.0 * h))
    };
    Ok((central(h / 2.0)? * 4.0 - central(h)?) / 3.0)
}

fn same_shape(a: &Mat, b: &Mat) -> Result<(), EvalError> {
    if a.shape() != b.shape() {
        return Err(EvalError(format!(
            "the function's shape changes with its arguments: {}x{} and {}x{}",
            a.nrows(),
            a.ncols(),
            b.nrows(),
            b.ncols()
        )));
    }
    Ok(())
}

/// `∂vec(F)/∂vec(X)ᵀ` by central differences (numerator layout), `F` as
/// written; for a function of a derivative defined as a value, five-point
/// differences and an allowance for the reference's own rounding.
fn numeric_jacobian(
    env: &Env,
    f: &Written,
    held: &Values,
    x: &str,
    x0: &Mat,
    order: VecOrder,
) -> Result<(Mat, Option<f64>), EvalError> {
    let (r, c) = x0.shape();
    let at = |xv: Mat| -> Result<Mat, EvalError> {
        let mut vals = held.clone();
        vals.mats.insert(x.to_string(), xv);
        Ok(vec_of(&f_at(env, f, &vals)?, order))
    };
    let n_out = at(x0.clone())?.nrows();
    // A function of a derivative defined as a value is itself evaluated by
    // differences, whose rounding a small step would magnify: five-point
    // differences with a wider step keep both errors small.
    let nested = env.names.values().any(|(b, _)| matches!(b, Binding::Def { derived: Some(_), .. }));
    let mut j = Mat::zeros(n_out, r * c);
    // With nested differences, the same Jacobian at twice the step: their
    // disagreement measures the reference's own rounding.
    let mut wide = Mat::zeros(n_out, r * c);
    for i in 0..r {
        for k in 0..c {
            let scale = x0[(i, k)].abs().max(1.0);
            let h = if nested { NESTED_STEP * scale } else { STEP * scale };
            let along = |t: f64| {
                let mut x = x0.clone();
                x[(i, k)] += t;
                let v = at(x)?;
                if v.nrows() != n_out {
                    return Err(EvalError("the function's shape changes with its arguments".into()));
                }
                Ok(v)
            };
            let at = super::vec_index(i, k, r, c, order);
            let col = if nested {
                let (p1, m1, p2, m2, p4, m4) =
                    (along(h)?, along(-h)?, along(2.0 * h)?, along(-2.0 * h)?, along(4.0 * h)?, along(-4.0 * h)?);
                let w = ((&p2 - &m2) * 8.0 - (&p4 - &m4)) / (24.0 * h);
                wide.set_column(at, &w.column(0));
                ((p1 - m1) * 8.0 - (p2 - m2)) / (12.0 * h)
            } else {
                (along(h)? - along(-h)?) / (2.0 * h)
            };
            j.set_column(at, &col.column(0));
        }
    }
    // Twice the disagreement, per entry, is taken as the rounding allowance,
    // never more than the relative 1e-3 that marks a check as noise elsewhere.
    let noise = nested.then(|| (2.0 * (&j - &wide).amax()).min(1e-3 * j.amax().max(1e-3)));
    Ok((j, noise))
}

/// For a symmetric variable, entries `(i, k)` and `(k, i)` move together:
/// the columns of a Jacobian for the pairs `i ≤ k`, summed.
fn collapse_symmetric(j: &Mat, n: usize, order: VecOrder) -> Mat {
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

/// The step of second differences (Richardson-extrapolated with half of it).
const SECOND_STEP: f64 = 2e-3;

/// The rounding error of a Richardson-extrapolated second difference with
/// step `h` of values as large as `scale`: each difference divides sums of
/// values carrying a relative error of about 1e-16 by `(h/2)²`.
fn second_difference_noise(scale: f64, h: f64) -> f64 {
    8.0 * f64::EPSILON * scale / (h * h / 4.0)
}

/// [`compare`] for second differences: a disagreement within their rounding
/// error (`noise`, per entry) does not count, so a function with large
/// values and a zero Hessian is not failed by its own rounding.
fn compare_second(got: &Mat, expected: &Mat, noise: f64) -> Result<f64, EvalError> {
    compare(got, expected)?;
    let excess = (got - expected).map(|d| (d.abs() - noise).max(0.0));
    let scale = got.norm().max(expected.norm());
    Ok(if excess.norm() == 0.0 || scale < 1e-9 { 0.0 } else { excess.norm() / scale.max(1e-3) })
}

/// An error unless the answer has the shape finite differences give.
fn compare(got: &Mat, expected: &Mat) -> Result<f64, EvalError> {
    if got.shape() != expected.shape() {
        return Err(EvalError(format!(
            "answer is {}x{}, finite differences give {}x{}",
            got.nrows(),
            got.ncols(),
            expected.nrows(),
            expected.ncols()
        )));
    }
    Ok(relative_error(got, expected))
}

/// The largest relative error of the answer against finite differences over
/// a few random draws, or `None` when the query is not a derivative.
///
/// `conv` is the conventions the answer was derived under
/// ([`Answer::conventions`], which is what [`crate::Session::check`] passes).
pub fn check(env: &Env, answer: &Answer, conv: Conventions, seed: u64) -> Result<Option<f64>, EvalError> {
    if !answer.query.is_derivative() && !matches!(answer.kind(), QueryKind::Show | QueryKind::Simplify) {
        return Ok(None);
    }
    let f = &answer.written;
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
    f: &Written,
    conv: Conventions,
    values: &Values,
    rng: &mut StdRng,
) -> Result<f64, EvalError> {
    match answer.kind() {
        QueryKind::SecondDifferential => higher_differential(env, answer, f, values, rng, 2),
        QueryKind::ThirdDifferential => higher_differential(env, answer, f, values, rng, 3),
        QueryKind::Differential => differential(env, answer, f, values, rng),
        QueryKind::Hessian => hessian(env, answer, f, conv, values, rng),
        // A value (a simplified expression, or one holding derivatives)
        // against the script's own evaluation of what was written.
        QueryKind::Show | QueryKind::Simplify => {
            let want = f_at(env, f, values)?;
            Ok(relative_error(&answer.value(env, values)?, &want))
        }
        _ => first_order(env, answer, f, conv, values, rng),
    }
}

/// `d(F)`: every name whose differential may appear is held at its value
/// and moves along its own random direction.
fn differential(env: &Env, answer: &Answer, f: &Written, values: &Values, rng: &mut StdRng) -> Result<f64, EvalError> {
    let mut names: Vec<crate::ir::Name> = answer.varying.iter().map(|n| n.as_str().into()).collect();
    answer.expr.diff_names(&mut names);
    let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    names.sort();
    names.dedup();
    let (held, at) = hold(env, values, &names, f.order)?;
    let dirs: Vec<Mat> = names.iter().zip(&at).map(|(n, x0)| direction(env, n, x0, rng)).collect();
    let expected = directional(env, f, &held, &names, &at, &dirs)?;
    let mut vals = values.clone();
    vals.diffs = names.iter().cloned().zip(dirs).collect();
    let got = answer.value(env, &vals)?;
    compare(&got, &expected)
}

/// `d²F` or `d³F` along random directions `dX`, against the central
/// difference of that order, Richardson-extrapolated with half the step:
/// `(F(h) - 2F(0) + F(-h)) / h²` and `(F(2h) - 2F(h) + 2F(-h) - F(-2h)) / 2h³`.
/// A disagreement within the differences' rounding does not count.
fn higher_differential(
    env: &Env,
    answer: &Answer,
    f: &Written,
    values: &Values,
    rng: &mut StdRng,
    order: i32,
) -> Result<f64, EvalError> {
    // (step, offsets k and weights w of Σ w F(k h), divided by hᵒʳᵈᵉʳ)
    let (h, stencil): (f64, &[(f64, f64)]) = match order {
        2 => (SECOND_STEP, &[(1.0, 1.0), (0.0, -2.0), (-1.0, 1.0)]),
        _ => (THIRD_STEP, &[(2.0, 0.5), (1.0, -1.0), (-1.0, 1.0), (-2.0, -0.5)]),
    };
    let names = &answer.varying;
    let (held, at) = hold(env, values, names, f.order)?;
    let dirs: Vec<Mat> = names.iter().zip(&at).map(|(n, x0)| direction(env, n, x0, rng)).collect();
    let centre = f_at(env, f, &held)?;
    let difference = |h: f64| -> Result<Mat, EvalError> {
        let mut sum = &centre * 0.0;
        for &(k, w) in stencil {
            let m = if k == 0.0 { centre.clone() } else { moved(env, f, &held, names, &at, &dirs, k * h)? };
            same_shape(&m, &centre)?;
            sum += m * w;
        }
        Ok(sum / h.powi(order))
    };
    let expected = (difference(h / 2.0)? * 4.0 - difference(h)?) / 3.0;
    let mut vals = values.clone();
    vals.diffs = names.iter().cloned().zip(dirs).collect();
    let got = answer.value(env, &vals)?;
    // Each difference divides sums of values rounded to about 1e-16 of
    // their size by (h/2)ᵒʳᵈᵉʳ.
    let noise = if order == 2 { 8.0 } else { 16.0 } * f64::EPSILON * centre.amax() / (h / 2.0).powi(order);
    compare_second(&got, &expected, noise)
}

/// The step of third differences (Richardson-extrapolated with half of it).
const THIRD_STEP: f64 = 5e-3;

/// `hessian(F, X)` and `hessian(F, X, Y)`: rows index `vec(X)`, columns
/// `vec(Y)`. Compared as `uᵀ H w` with mixed second differences of `F`
/// along random pairs `u`, `w`.
fn hessian(
    env: &Env,
    answer: &Answer,
    f: &Written,
    conv: Conventions,
    values: &Values,
    rng: &mut StdRng,
) -> Result<f64, EvalError> {
    let order = conv.order;
    let x = answer.wrt().ok_or_else(|| EvalError("no variable".into()))?;
    let y = answer.wrt2().unwrap_or(x);
    let names: Vec<String> = if x == y { vec![x.to_string()] } else { vec![x.to_string(), y.to_string()] };
    let (held, at) = hold(env, values, &names, f.order)?;
    let (x0, y0) = (&at[0], &at[at.len() - 1]);
    let centre = f_at(env, f, &held)?;
    if centre.shape() != (1, 1) {
        return Err(EvalError(format!(
            "a Hessian needs a scalar function, and this one is {}x{}",
            centre.nrows(),
            centre.ncols()
        )));
    }
    let h_ans = answer.value(env, values)?;
    if h_ans.shape() != (x0.len(), y0.len()) {
        return Err(EvalError(format!(
            "answer is {}x{}, the Hessian over {x} and {y} is {}x{}",
            h_ans.nrows(),
            h_ans.ncols(),
            x0.len(),
            y0.len()
        )));
    }
    let mut got = Mat::zeros(DIRECTIONS, 1);
    let mut expected = Mat::zeros(DIRECTIONS, 1);
    for k in 0..DIRECTIONS {
        let u = direction(env, x, x0, rng);
        let w = direction(env, y, y0, rng);
        got[(k, 0)] = (vec_of(&u, order).transpose() * &h_ans * vec_of(&w, order))[(0, 0)];
        // F at X + s u, Y + t w (both on X when X is Y).
        let at_st = |s: f64, t: f64| -> Result<f64, EvalError> {
            let mut vals = held.clone();
            if names.len() == 1 {
                vals.mats.insert(x.to_string(), x0 + &u * s + &w * t);
            } else {
                vals.mats.insert(x.to_string(), x0 + &u * s);
                vals.mats.insert(y.to_string(), y0 + &w * t);
            }
            let v = f_at(env, f, &vals)?;
            same_shape(&v, &centre)?;
            Ok(v[(0, 0)])
        };
        let mixed = |h: f64| -> Result<f64, EvalError> {
            Ok((at_st(h, h)? - at_st(h, -h)? - at_st(-h, h)? + at_st(-h, -h)?) / (4.0 * h * h))
        };
        let h = SECOND_STEP;
        expected[(k, 0)] = (mixed(h / 2.0)? * 4.0 - mixed(h)?) / 3.0;
    }
    compare_second(&got, &expected, second_difference_noise(centre.amax(), SECOND_STEP))
}

/// Gradients and Jacobians: `∂F/∂X`, `∂F/∂Xᵀ`, `∂F/∂vec(X)ᵀ`.
fn first_order(
    env: &Env,
    answer: &Answer,
    f: &Written,
    conv: Conventions,
    values: &Values,
    rng: &mut StdRng,
) -> Result<f64, EvalError> {
    let order = conv.order;
    let x = answer.wrt().ok_or_else(|| EvalError("no variable".into()))?;
    let names = [x.to_string()];
    let (held, at) = hold(env, values, &names, f.order)?;
    let x0 = &at[0];
    let scalar_f = f_at(env, f, &held)?.shape() == (1, 1);
    // The answer in numerator layout: one row per entry of vec(F), one column per entry of vec(X).
    let got = answer.value(env, values)?;
    if answer.kind() == QueryKind::Gradient && scalar_f && got.shape() != x0.shape() {
        return Err(EvalError(format!(
            "the gradient is {}x{}, but {x} is {}x{}",
            got.nrows(),
            got.ncols(),
            x0.nrows(),
            x0.ncols()
        )));
    }
    let got = if answer.kind() == QueryKind::Gradient && scalar_f {
        vec_of(&got, order).transpose()
    } else if conv.layout == Layout::Denominator {
        got.transpose()
    } else {
        got
    };
    if x0.len() <= FULL_JACOBIAN {
        let (num, noise) = numeric_jacobian(env, f, &held, x, x0, order)?;
        // A symmetric variable moves only symmetrically: compare on pairs of entries.
        let (got, num) = if is_symmetric(env, x) && got.shape() == num.shape() {
            let n = x0.nrows();
            (collapse_symmetric(&got, n, order), collapse_symmetric(&num, n, order))
        } else {
            (got, num)
        };
        return match noise {
            Some(noise) => compare_second(&got, &num, noise),
            None => compare(&got, &num),
        };
    }
    if got.ncols() != x0.len() {
        return Err(EvalError(format!(
            "answer is {}x{} in numerator layout, but {x} has {} entries",
            got.nrows(),
            got.ncols(),
            x0.len()
        )));
    }
    let mut got_along = Vec::new();
    let mut expected_along = Vec::new();
    for _ in 0..DIRECTIONS {
        let u = direction(env, x, x0, rng);
        got_along.push(&got * vec_of(&u, order));
        let d = directional(env, f, &held, &names, &at, std::slice::from_ref(&u))?;
        expected_along.push(vec_of(&d, order));
    }
    let stack = |cols: &[Mat]| -> Result<Mat, EvalError> {
        let rows = cols[0].nrows();
        if cols.iter().any(|c| c.nrows() != rows) {
            return Err(EvalError("the function's shape changes with its arguments".into()));
        }
        Ok(Mat::from_fn(rows, cols.len(), |i, j| cols[j][(i, 0)]))
    };
    compare(&stack(&got_along)?, &stack(&expected_along)?)
}
