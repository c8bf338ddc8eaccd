//! A second opinion on derivatives, shared by the derivative tests: central
//! differences along a random direction that moves every varying name at
//! once (symmetric matrices symmetrically), so that an answer missing a term
//! fails even where the built-in check would not look.

use matdiff::ast::QueryKind;
use matdiff::diff::chain::{Conventions, Layout};
use matdiff::eval::check::random_values;
use matdiff::eval::{unvec_of, vec_of, Evaluator, Mat, Values};
use matdiff::ir::{Expr, Op};
use matdiff::session::{Answer, Session};
use matdiff::typeck::{Binding, Env};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeSet;

/// The derivative at 0 of `g`, by central differences at steps `h` and `h/2`
/// combined (Richardson): exact to O(h⁴), with a rounding error of about
/// 1e-16 |g| / h.
pub fn derivative_at_zero(g: &dyn Fn(f64) -> Result<Mat, String>, h: f64) -> Result<Mat, String> {
    let d = |t: f64| -> Result<Mat, String> { Ok((g(t)? - g(-t)?) / (2.0 * t)) };
    Ok((d(h / 2.0)? * 4.0 - d(h)?) / 3.0)
}

/// The checker's relative error: `‖got - want‖ / max(‖got‖, ‖want‖, 1e-3)`.
pub fn relative(got: &Mat, want: &Mat) -> Result<f64, String> {
    if got.shape() != want.shape() {
        return Err(format!("the answer gives {:?}, differences give {:?}", got.shape(), want.shape()));
    }
    let scale = got.norm().max(want.norm());
    Ok(if scale < 1e-9 { 0.0 } else { (got - want).norm() / scale.max(1e-3) })
}

/// The answer against differences of its function along a random direction,
/// at random values drawn from `seed` (entries in [-1, 1], or positive where
/// the function is undefined). A gradient or Jacobian moves its variable. A
/// `d(F)` moves every name that varies in it, all at once: the names the
/// script differentiates with respect to (`targets`; all names when there
/// are none) and the definitions that depend on them. (`Session::check`
/// compares a `d(F)` only in the differentials it mentions, so it cannot see
/// a dropped term.)
pub fn along_error(s: &Session, a: &Answer, targets: &BTreeSet<String>, seed: u64) -> Result<f64, String> {
    // A Hessian is the Jacobian of the gradient (with respect to its first
    // variable), along its second variable; the gradient's named adjoints
    // are definitions then.
    let (gradient, with_adjoints);
    let (f, env) = if a.kind() == QueryKind::Hessian {
        gradient = gradient_of(s, a)?;
        with_adjoints = gradient.env(&s.env).into_owned();
        (&gradient.expr, &with_adjoints)
    } else {
        (&a.function, &s.env)
    };
    let (body, names) = if a.kind() == QueryKind::Differential {
        let body = match &f.op {
            Op::Var { name, .. } => env.definition(name).cloned().unwrap_or_else(|| f.clone()),
            _ => f.clone(),
        };
        let mut varying = targets.clone();
        for u in &env.defs {
            if env.definition(u).is_some_and(|b| varying.iter().any(|t| b.mentions(t))) {
                varying.insert(u.clone());
            }
        }
        let names: Vec<String> = env
            .names
            .keys()
            .filter(|n| (targets.is_empty() || varying.contains(*n)) && body.mentions(n))
            .cloned()
            .collect();
        (body, names)
    } else {
        let x = a.wrt2().or(a.wrt()).ok_or("no variable")?;
        (f.clone(), vec![x.to_string()])
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut last = String::new();
    for positive in [false, true] {
        let values = random_values(env, &mut rng, positive);
        match along_once(env, s.options.conventions, a, &body, &names, &values, &mut rng) {
            Ok(e) => return Ok(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn along_once(
    env: &Env,
    conv: Conventions,
    a: &Answer,
    body: &Expr,
    names: &[String],
    values: &Values,
    rng: &mut StdRng,
) -> Result<f64, String> {
    let mut ev = Evaluator::new(env, values);
    let mut dirs = Vec::new();
    for n in names {
        let x0 = ev.name(n).map_err(|e| e.0)?;
        let mut dir = Mat::from_fn(x0.nrows(), x0.ncols(), |_, _| rng.random_range(-1.0..1.0));
        let symmetric = matches!(env.names.get(n), Some((Binding::Matrix { symmetric: true, .. }, _)));
        if symmetric {
            dir = (&dir + dir.transpose()) * 0.5;
        }
        dirs.push((n.clone(), x0, dir));
    }
    let moved = |t: f64| -> Result<Mat, String> {
        let mut v = values.clone();
        for (n, x0, dir) in &dirs {
            v.mats.insert(n.clone(), x0 + dir * t);
        }
        Evaluator::new(env, &v).eval(body).map_err(|e| e.0)
    };
    let want = derivative_at_zero(&moved, 1e-3)?;
    let got = if a.kind() == QueryKind::Differential {
        let mut v = values.clone();
        for (n, _, dir) in &dirs {
            v.diffs.insert(n.clone(), dir.clone());
        }
        a.value(env, &v).map_err(|e| e.0)?
    } else {
        let d = a.value(env, values).map_err(|e| e.0)?;
        let dir = &dirs[0].2;
        if a.kind() == QueryKind::Gradient && body.shape.is_scalar() {
            if d.shape() != dir.shape() {
                return Err(format!("the gradient is {:?}, the variable {:?}", d.shape(), dir.shape()));
            }
            Mat::from_element(1, 1, d.component_mul(dir).sum())
        } else {
            let hessian = a.kind() == QueryKind::Hessian;
            let j = if conv.layout == Layout::Denominator && !hessian { d.transpose() } else { d };
            if j.ncols() != dir.len() || j.nrows() != want.len() {
                return Err(format!(
                    "the Jacobian is {:?} (numerator layout), expected {}x{}",
                    j.shape(),
                    want.len(),
                    dir.len()
                ));
            }
            let jd = j * vec_of(dir, conv.order);
            unvec_of(&jd, want.nrows(), want.ncols(), conv.order)
        }
    };
    relative(&got, &want)
}

/// The gradient of a Hessian's function with respect to its first variable.
fn gradient_of(s: &Session, a: &Answer) -> Result<Answer, String> {
    use matdiff::derive::{self, Context, Query, Settings, Sweeps};
    let x = a.query.wrt().ok_or("no variable")?.clone();
    let cx = Context {
        env: &s.env,
        settings: Settings { conventions: a.conventions, ..Settings::default() },
        varies: &|_| true,
        sweeps: &mut Sweeps::default(),
    };
    let f = derive::Function { expr: a.function.clone(), written: (*a.written).clone(), label: "f".into() };
    derive::answer(cx, &Query::Gradient { x }, f, a.span).map_err(|e| format!("{e}"))
}
