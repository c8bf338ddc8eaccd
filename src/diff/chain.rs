//! The chain rule through the user's definitions.
//!
//! Derivatives of a defined name are expressed through the intermediates
//! (`f2'(d2)`, `n2 - y`), never by expanding definitions back into inputs.
//! Definitions are processed from the last to the first (reverse
//! topological order), so each intermediate is visited once.

use super::backward::{self, Adjoints, Program};
use super::identify::{self, NotIdentified};
use super::rule::Rule;
use crate::error::{Error, Result, Span};
use crate::ir::{self, Expr, Name, Op, VecOrder};
use crate::typeck::Env;
use std::collections::{BTreeMap, BTreeSet};

pub use crate::conventions::{Conventions, Layout};

/// The left-hand side of a derivation step.
#[derive(Debug, Clone, PartialEq)]
pub enum Lhs {
    /// `dF`
    Differential(String),
    /// `d²F`
    SecondDifferential(String),
    /// `d³F`
    ThirdDifferential(String),
    /// `∂F/∂Xᵀ`, or `∂F/∂vec(X)ᵀ` when `vec` is set.
    Jacobian {
        /// The function, as written.
        f: String,
        /// The variable.
        x: String,
        /// Whether `X` is a matrix (written `vec(X)`).
        vec: bool,
    },
    /// `∂²F/∂x∂xᵀ`, or `∂²F/∂vec(X)∂vec(X)ᵀ` when `vec` is set; mixed,
    /// `∂²F/∂x∂yᵀ`, when `y` is set.
    Hessian {
        /// The function, as written.
        f: String,
        /// The variable.
        x: String,
        /// Whether `X` is a matrix.
        vec: bool,
        /// The second variable of a mixed derivative, and whether it is a matrix.
        y: Option<(String, bool)>,
    },
    /// `∂F/∂X`
    Gradient {
        /// The function, as written.
        f: String,
        /// The variable.
        x: String,
    },
}

/// One line of a derivation: `lhs = [formula =] rhs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What is being computed.
    pub lhs: Lhs,
    /// How it is composed from earlier lines (chain factors), if shown.
    pub formula: Option<Vec<Vec<Lhs>>>,
    /// `vec⁻¹` of the line before.
    pub reshape: bool,
    /// The value.
    pub rhs: Expr,
    /// The rules it used (empty when it restates the line before).
    pub rules: Vec<super::rule::Rule>,
}

/// An answer and the steps that led to it.
#[derive(Debug, Clone)]
pub struct Derivation {
    /// The answer.
    pub answer: Expr,
    /// The steps, in textbook order; the last one is the answer.
    pub steps: Vec<Step>,
    /// Intermediates the answer uses by name, in the order computed: the
    /// adjoints `δu` of a gradient and the Jacobians `J_u` of a Jacobian
    /// sweep that more than one path would otherwise repeat.
    pub named: Adjoints,
}

/// The names that depend on `x` (including `x`), following definitions.
fn dependents(env: &Env, x: &str) -> BTreeSet<String> {
    let mut dep = BTreeSet::from([x.to_string()]);
    for u in &env.defs {
        if let Some(body) = env.definition(u) {
            if dep.iter().any(|v| body.mentions(v)) {
                dep.insert(u.clone());
            }
        }
    }
    dep
}

/// Writes subexpressions that equal a definition with the defined name
/// (`σ(X w)` becomes `p` after `p = σ(X w)`), innermost first.
pub fn fold_names(env: &Env, e: &Expr) -> Expr {
    Folder::new(env).fold(e)
}

/// [`fold_names`] for many expressions, with the definitions looked up once.
pub struct Folder<'e> {
    bodies: std::collections::HashMap<&'e Expr, &'e str>,
    /// Names whose values are derivatives.
    derived: std::collections::HashSet<&'e str>,
}

impl<'e> Folder<'e> {
    /// The definitions of `env`, by body.
    pub fn new(env: &'e Env) -> Folder<'e> {
        let derived = env
            .defs
            .iter()
            .filter(|n| matches!(env.names.get(*n), Some((crate::typeck::Binding::Def { derived: Some(_), .. }, _))))
            .map(String::as_str)
            .collect();
        Folder { bodies: env.defs.iter().filter_map(|n| Some((env.definition(n)?, n.as_str()))).collect(), derived }
    }

    /// `e` with every subexpression equal to a definition written as its
    /// name; a whole answer equal to a derivative defined as a value is
    /// still written out (`∂f/∂x = 2 x`, not `∂f/∂x = g`).
    pub fn fold(&self, e: &Expr) -> Expr {
        if self.bodies.is_empty() {
            return e.clone();
        }
        let fold = |e: &Expr| {
            ir::map_bottom_up_shared(e, &mut |n| match self.bodies.get(&n) {
                Some(name) if !matches!(n.op, Op::Var { .. }) => ir::var(name, n.shape.clone(), false),
                _ => n,
            })
        };
        match self.bodies.get(e) {
            Some(name) if self.derived.contains(name) => {
                ir::rebuild(e, e.op.children().into_iter().map(fold).collect())
            }
            _ => fold(e),
        }
    }
}

/// Sets the differentials of names outside `keep` to zero.
pub fn restrict(e: &Expr, keep: &dyn Fn(&str) -> bool) -> Expr {
    ir::map_bottom_up_shared(e, &mut |n| match &n.op {
        Op::Diff(m) if !keep(m) => ir::zero(n.shape.clone()),
        _ => n,
    })
}

struct Root {
    label: String,
    /// The differential of the function, in the names it mentions.
    d: Expr,
    /// The rules taking it used.
    rules: Vec<Rule>,
}

impl Root {
    /// The derivation's first line: `dF = …`, with its rules.
    fn step(&self) -> Step {
        Step {
            rules: self.rules.clone(),
            lhs: Lhs::Differential(self.label.clone()),
            formula: None,
            reshape: false,
            rhs: self.d.clone(),
        }
    }
}

fn root(env: &Env, f: &Expr, f_label: &str, keep: &dyn Fn(&str) -> bool, x: &str) -> Root {
    // ∂F/∂F is the identity: F's own definition is not opened then.
    let own = matches!(&f.op, Op::Var { name, .. } if &**name == x);
    let body = if own { f.clone() } else { definition_of(env, f) };
    let d = super::differential(&body);
    let rules = super::rule::differential_rules(&body, &|n| keep(n) || n == x);
    Root { label: f_label.to_string(), d: restrict(&d, keep), rules }
}

fn jac_lhs(f: &str, x: &str, env: &Env) -> Lhs {
    let vec = env.leaf(x).is_some_and(|e| !e.shape.is_vector());
    Lhs::Jacobian { f: f.to_string(), x: x.to_string(), vec }
}

fn check_wrt(env: &Env, x: &str, span: Span) -> Result<Expr> {
    env.leaf(x).ok_or_else(|| {
        Error::unsupported(
            span,
            format!("`{x}` is not a declared or defined matrix; derivatives are taken with respect to one"),
        )
    })
}

/// `∂F/∂vec(X)ᵀ` in Kronecker form, through definitions.
pub fn jacobian(env: &Env, f: &Expr, f_label: &str, x: &str, conv: Conventions, span: Span) -> Result<Derivation> {
    let xe = check_wrt(env, x, span)?;
    let dep = dependents(env, x);
    let keep = |n: &str| dep.contains(n);
    let root = root(env, f, f_label, &keep, x);
    let present = |j: Expr| conv.present(j);
    let fail = |e: NotIdentified| Error::unsupported(span, e.0);
    let mut steps = vec![root.step()];
    // Accumulated Jacobians of F by each name, with the chain formulas.
    let mut acc: BTreeMap<Name, Vec<(Expr, Vec<Lhs>)>> = BTreeMap::new();
    let edge = |from: &str,
                d: &Expr,
                prefix: Option<(&Expr, &Vec<Vec<Lhs>>)>,
                steps: &mut Vec<Step>,
                acc: &mut BTreeMap<Name, Vec<(Expr, Vec<Lhs>)>>|
     -> Result<()> {
        let mut names = Vec::new();
        d.diff_names(&mut names);
        for v in names {
            let shape = d.diff_shape(&v).expect("shape");
            let j = identify::jacobian(d, &v, &shape, conv.order).map_err(fail)?;
            let lhs = jac_lhs(from, &v, env);
            let rules = super::rule::identification_rules(d, &v, conv.order);
            steps.push(Step { rules, lhs: lhs.clone(), formula: None, reshape: false, rhs: present(j.clone()) });
            match prefix {
                None => acc.entry(v.clone()).or_default().push((j, vec![lhs])),
                Some((ju, paths)) => {
                    let total = ir::matmul(ju.clone(), j);
                    let mut path = paths.first().cloned().unwrap_or_default();
                    if paths.len() == 1 {
                        path.push(lhs);
                    } else {
                        path.clear();
                    }
                    acc.entry(v.clone()).or_default().push((total, path));
                }
            }
        }
        Ok(())
    };
    edge(&root.label, &root.d, None, &mut steps, &mut acc)?;
    // The Jacobian by a definition used on several paths is named once
    // (`J_u`), so that the paths through it do not each repeat it.
    let mut named: Adjoints = Vec::new();
    let mut taken = BTreeSet::new();
    for u in env.defs.iter().rev() {
        if u == x || !dep.contains(u) {
            continue;
        }
        let Some(parts) = acc.remove(u.as_str()) else {
            continue;
        };
        let mut ju = ir::sum_of(parts.iter().map(|(j, _)| j.clone()).collect());
        let paths: Vec<Vec<Lhs>> = parts.into_iter().map(|(_, p)| p).filter(|p| !p.is_empty()).collect();
        let du = restrict(&super::differential(env.definition(u).expect("definition")), &keep);
        let mut uses = Vec::new();
        du.diff_names(&mut uses);
        if uses.len() > 1 && !backward::is_atomic(&ju) {
            let name = backward::fresh(format!("J_{u}"), &|n| env.names.contains_key(n) || taken.contains(n));
            taken.insert(name.clone());
            let v = ir::var(&name, ju.shape.clone(), false);
            named.push((name.as_str().into(), crate::simplify::tidy(&ju)));
            ju = v;
        }
        edge(u, &du, Some((&ju, &paths)), &mut steps, &mut acc)?;
    }
    let parts = acc.remove(x).unwrap_or_default();
    let rows = f.shape.len();
    let j = if parts.is_empty() {
        ir::zero(crate::shape::Shape::new(rows, xe.shape.len()))
    } else {
        ir::sum_of(parts.iter().map(|(j, _)| j.clone()).collect())
    };
    let answer = present(j);
    let mut formula: Vec<Vec<Lhs>> = parts.into_iter().map(|(_, p)| p).collect();
    for p in &mut formula {
        if conv.inner_first() {
            p.reverse();
        }
    }
    let chained = formula.iter().any(|p| p.len() > 1) && formula.iter().all(|p| !p.is_empty());
    let lhs = jac_lhs(&root.label, x, env);
    // The answer replaces a last line of the same derivative (one edge, no
    // chain), and keeps its rules unless the chain rule made it.
    let restated = steps.last().is_some_and(|s| s.lhs == lhs).then(|| steps.pop().expect("a last step").rules);
    let rules = match restated {
        Some(rules) if !chained => rules,
        _ => vec![Rule::Chain],
    };
    steps.push(Step { rules, lhs, formula: chained.then_some(formula), reshape: false, rhs: answer.clone() });
    Ok(Derivation { answer, steps, named })
}

/// What `f` stands for: the definition of a defined name, else `f` itself.
pub fn definition_of(env: &Env, f: &Expr) -> Expr {
    match &f.op {
        Op::Var { name, .. } => env.definition(name).cloned().unwrap_or_else(|| f.clone()),
        _ => f.clone(),
    }
}

/// Reverse mode from a scalar's differential `d` through the definitions
/// whose names `keep` accepts (not into `stop`): the backward program, with
/// the adjoint of each definition passed named once, and the defined names
/// in the order they were passed.
fn reverse(
    env: &Env,
    d: &Expr,
    keep: &dyn Fn(&str) -> bool,
    stop: Option<&str>,
    order: VecOrder,
) -> std::result::Result<(Vec<String>, Program), NotIdentified> {
    let mut bars: BTreeMap<Name, Vec<Expr>> = BTreeMap::new();
    let mut program = Program::default();
    let mut taken = BTreeSet::new();
    let mut passed = Vec::new();
    identify::adjoint(d, ir::int(1), order, &mut bars)?;
    for u in env.defs.iter().rev() {
        if Some(u.as_str()) == stop || !keep(u) {
            continue;
        }
        let Some(parts) = bars.remove(u.as_str()) else {
            continue;
        };
        let bar = crate::simplify::tidy(&ir::sum_of(parts));
        let value = if backward::is_atomic(&bar) {
            bar
        } else {
            let name = backward::adjoint_name(u, &|n| env.names.contains_key(n) || taken.contains(n));
            taken.insert(name.clone());
            let v = ir::var(&name, bar.shape.clone(), false);
            std::rc::Rc::make_mut(&mut program.of).insert(name.as_str().into(), u.as_str().into());
            program.adjoints.push((name.as_str().into(), bar));
            v
        };
        program.grads.insert(u.as_str().into(), value.clone());
        program.passed.insert(u.as_str().into());
        passed.push(u.clone());
        let du = restrict(&super::differential(env.definition(u).expect("definition")), keep);
        identify::adjoint(&du, value, order, &mut bars)?;
    }
    for (n, parts) in bars {
        program.grads.insert(n, crate::simplify::tidy(&ir::sum_of(parts)));
    }
    program.settle();
    Ok((passed, program))
}

/// One reverse sweep from a scalar `F` through every definition: the
/// backward program giving `∂F/∂X` for every name `X` that `F` depends on.
/// Answers to several gradient queries of one function share it, so deriving
/// every layer of an L-layer network costs one sweep, not L.
pub fn sweep(env: &Env, f: &Expr, order: VecOrder) -> std::result::Result<Program, NotIdentified> {
    let d = super::differential(&definition_of(env, f));
    Ok(reverse(env, &d, &|_| true, None, order)?.1)
}

/// The error for an answer too large to write without adjoint names.
pub fn too_large(span: Span, nodes: u64) -> Error {
    Error::limit(
        span,
        format!(
            "written out in full this derivative would have {nodes} nodes, more than the {} matdiff \
             writes: each use of a name repeats its adjoint",
            backward::MAX_INLINE_NODES
        ),
    )
}

/// The reverse sweep from a scalar `F` through the definitions that depend
/// on `x`: `F`'s differential, the definitions passed, the program, and the
/// gradient by `x` in the program's adjoint names.
fn backward_by(
    env: &Env,
    f: &Expr,
    f_label: &str,
    x: &str,
    order: VecOrder,
    span: Span,
) -> Result<(Root, Vec<String>, Program, Expr)> {
    let xe = check_wrt(env, x, span)?;
    if !f.shape.is_scalar() {
        return Err(Error::unsupported(
            span,
            format!(
                "`{f_label}` is {}, not a scalar: its gradient has no shape of `{x}`; ask for ∂{f_label}/∂vec({x})ᵀ",
                f.shape
            ),
        ));
    }
    let dep = dependents(env, x);
    let keep = |n: &str| dep.contains(n);
    let root = root(env, f, f_label, &keep, x);
    let (passed, program) = reverse(env, &root.d, &keep, Some(x), order).map_err(|e| Error::unsupported(span, e.0))?;
    let g = program.grads.get(x).cloned().unwrap_or_else(|| ir::zero(xe.shape.clone()));
    Ok((root, passed, program, g))
}

/// `∂F/∂X` for scalar `F`, shaped like `X`, by reverse mode through
/// definitions, written out in full, with the gradient by each
/// intermediate on the way as a step.
pub fn gradient(env: &Env, f: &Expr, f_label: &str, x: &str, order: VecOrder, span: Span) -> Result<Derivation> {
    let (root, passed, program, g) = backward_by(env, f, f_label, x, order, span)?;
    let mut roots: Vec<Expr> = passed.iter().map(|u| program.grads[u.as_str()].clone()).collect();
    roots.push(g);
    let mut roots = program.inline_all(&roots).map_err(|n| too_large(span, n))?;
    let answer = roots.pop().expect("the answer");
    let step = |x: &str, rhs: Expr| Step {
        rules: vec![Rule::Reverse],
        lhs: Lhs::Gradient { f: root.label.clone(), x: x.to_string() },
        formula: None,
        reshape: false,
        rhs,
    };
    let mut steps = vec![root.step()];
    steps.extend(passed.iter().zip(roots).map(|(u, g)| step(u, g)));
    steps.push(step(x, answer.clone()));
    Ok(Derivation { answer, steps, named: vec![] })
}

/// `dF` in the names `F` mentions directly. For a scalar `F` it is written
/// in identified form, one term per name (`dn2 2(n2 - y)ᵀ`, `tr(Gᵀ dX)`).
/// Names for which `varies` is false are constants.
pub fn differential(env: &Env, f: &Expr, f_label: &str, varies: &dyn Fn(&str) -> bool, order: VecOrder) -> Derivation {
    let d = restrict(&super::differential(&definition_of(env, f)), varies);
    let mut bars: BTreeMap<Name, Vec<Expr>> = BTreeMap::new();
    let identified = f.shape.is_scalar() && identify::adjoint(&d, ir::int(1), order, &mut bars).is_ok();
    let answer = if identified {
        let mut names = Vec::new();
        d.diff_names(&mut names);
        let terms: Vec<Expr> = names
            .iter()
            .filter_map(|n| {
                let g = crate::simplify::tidy(&ir::sum_of(bars.remove(n)?));
                let dn = ir::diff(n, g.shape.clone());
                Some(if g.shape.is_scalar() {
                    ir::matmul(g, dn)
                } else if g.shape.rows.is_one() {
                    ir::matmul(dn, ir::transpose(g))
                } else if g.shape.cols.is_one() {
                    ir::matmul(ir::transpose(g), dn)
                } else {
                    let (c, g) = g.split_coef();
                    ir::scale(c, ir::trace(ir::matmul(ir::transpose(g), dn)))
                })
            })
            .collect();
        if terms.is_empty() {
            ir::int(0)
        } else {
            ir::sum_of(terms)
        }
    } else {
        crate::simplify::tidy(&d)
    };
    let mut rules = super::rule::differential_rules(&definition_of(env, f), varies);
    if identified {
        super::rule::collection_rules(&d, order, &mut rules);
    }
    let steps = vec![Step {
        rules,
        lhs: Lhs::Differential(f_label.to_string()),
        formula: None,
        reshape: false,
        rhs: answer.clone(),
    }];
    Derivation { answer, steps, named: vec![] }
}

/// The Hessian of a scalar `F`: the Jacobian `∂g/∂vec(X)ᵀ` of its gradient
/// `g = vec(∂F/∂X)`, itself taken through the definitions. Returns the
/// derivation and `g`, whose finite differences check the Hessian.
/// With `y`, the mixed derivative `∂²F/∂vec(X)∂vec(Y)ᵀ`: the Jacobian of
/// `vec(∂F/∂X)` with respect to `Y`.
pub fn hessian(
    env: &Env,
    f: &Expr,
    f_label: &str,
    x: &str,
    y: Option<&str>,
    order: VecOrder,
    span: Span,
) -> Result<(Derivation, Expr)> {
    // The gradient as a backward program, its shared adjoints named; the
    // Jacobian sweep then goes through those names like any definition, and
    // names its own shared Jacobians, so neither repeats a path.
    let (root, _, program, g0) = backward_by(env, f, f_label, x, order, span)?;
    let slice = program.written(&[g0], false);
    let grad = slice.roots[0].clone();
    let inner = env.with_definitions(&slice.adjoints);
    let gv = if grad.shape.cols.is_one() { grad.clone() } else { ir::vec(grad.clone(), order) };
    let conv = Conventions { layout: Layout::Numerator, order };
    let j = jacobian(&inner, &gv, f_label, y.unwrap_or(x), conv, span)?;
    let answer = crate::simplify::tidy(&j.answer);
    let mut named = slice.adjoints;
    named.extend(j.named);
    let is_matrix = |n: &str| !env.leaf(n).is_some_and(|e| e.shape.is_vector());
    let step = |rules: Vec<Rule>, lhs: Lhs, rhs: Expr| Step { rules, lhs, formula: None, reshape: false, rhs };
    let mut steps =
        vec![root.step(), step(vec![Rule::Reverse], Lhs::Gradient { f: root.label.clone(), x: x.to_string() }, grad)];
    steps.push(Step {
        rules: vec![Rule::HessianOfGradient],
        lhs: Lhs::Hessian {
            f: f_label.to_string(),
            x: x.to_string(),
            vec: is_matrix(x),
            y: y.map(|y| (y.to_string(), is_matrix(y))),
        },
        formula: None,
        reshape: false,
        rhs: answer.clone(),
    });
    Ok((Derivation { answer, steps, named }, gv))
}

/// The second or third differential, `d²F` or `d³F`, holding the
/// differentials of the varying declared matrices fixed (`d(dX) = 0`):
/// `d²(xᵀAx) = 2 dxᵀ A dx`, `d³(sum(exp(x))) = sum(exp(x) ∘ dx .^ 3)`.
/// Intermediates keep their names as values; their differentials are
/// expanded through their definitions. Each order is a step.
pub fn higher_differential(
    env: &Env,
    f: &Expr,
    f_label: &str,
    varies: &dyn Fn(&str) -> bool,
    order: usize,
) -> Derivation {
    let mut memo: BTreeMap<String, Expr> = BTreeMap::new();
    let mut steps = Vec::new();
    let mut current = f.clone();
    for k in 1..=order {
        current = total_differential(env, &current, varies, &mut memo);
        let lhs = match k {
            1 => Lhs::Differential(f_label.to_string()),
            2 => Lhs::SecondDifferential(f_label.to_string()),
            _ => Lhs::ThirdDifferential(f_label.to_string()),
        };
        let rules = if k == 1 {
            super::rule::differential_rules(&definition_of(env, f), varies)
        } else {
            vec![Rule::HigherDifferential]
        };
        steps.push(Step { rules, lhs, formula: None, reshape: false, rhs: crate::simplify::tidy(&current) });
    }
    let answer = steps.last().expect("one order at least").rhs.clone();
    Derivation { answer, steps, named: vec![] }
}

/// `d(e)` in the differentials of declared matrices only: a defined name's
/// differential is expanded through its definition (memoized).
fn total_differential(env: &Env, e: &Expr, varies: &dyn Fn(&str) -> bool, memo: &mut BTreeMap<String, Expr>) -> Expr {
    let one_level = super::differential(e);
    let mut names = Vec::new();
    one_level.diff_names(&mut names);
    let mut out = one_level;
    for n in names {
        let replacement = match env.definition(&n) {
            Some(body) => {
                if !memo.contains_key(&*n) {
                    let body = body.clone();
                    let t = total_differential(env, &body, varies, memo);
                    memo.insert(n.to_string(), t);
                }
                memo[&*n].clone()
            }
            None if varies(&n) => continue,
            None => ir::zero(out.diff_shape(&n).expect("shape")),
        };
        out = super::substitute_diff(&out, &n, &replacement);
    }
    out
}
