//! Layer norms written out in a backward program, found so that a backend
//! with a fused layer-norm backward computes the adjoint of the norm's input
//! in one call ([`Backend::layer_norm_backward`](super::Backend)).
//!
//! A script writes a layer norm of the rows of `H` as definitions such as
//!
//! ```text
//! C = H - H ones(d, 1) / d
//! s = sqrt((C ∘ C) ones(d, 1) / d + ε)
//! N = C ./ s ∘ γ + β
//! ```
//!
//! (the mean and variance may be named too, `γ` and `β` may be absent). Its
//! backward, as the chain rule writes it, is about eleven passes over `T×d`
//! arrays; an eager framework's own layer-norm backward is one kernel.
//!
//! **Why replacing the adjoint is sound.** When `H` and the norm's
//! intermediates (`C`, `s`, …) are used by nothing but the norm, every path
//! from the loss to `H` goes through `N`, so the adjoint `δH` equals the norm's
//! backward applied to `δN`, however the derivation wrote it. The match reads
//! only the forward definitions; what the adjoints say is not parsed. `δH`
//! is then given the textbook form of that backward
//!
//! ```text
//! δH = (G - mean(G) 1ᵀ - X̂ ∘ mean(G ∘ X̂) 1ᵀ) ./ (s 1ᵀ),   G = δN ∘ 1 γ,   X̂ = C ./ (s 1ᵀ)
//! ```
//!
//! (row means), which has the same value and names what the fused call reads,
//! so that the generator computes exactly what it needs, and a backend
//! without the call could still evaluate it.
//!
//! **The gain's and bias's gradients.** The same call gives `1ᵀ(δN ∘ X̂)` and
//! `1ᵀ δN`, which are `∂L/∂γ` and `∂L/∂β` when `γ` and `β` are declared
//! matrices that reach the loss only through this norm; the program then
//! takes them from it, and `X̂` need not be kept for the backward pass.

use crate::ir::{self, BigRational, Builtin, Expr, Func, Name, Op};
use crate::shape::{Dim, Shape};
use crate::typeck::Env;
use std::collections::{HashMap, HashSet};

/// A layer norm `N = C ./ (s 1ᵀ) ∘ 1 γ + 1 β` whose input's adjoint is named.
#[derive(Debug, Clone)]
pub(super) struct LayerNorm {
    /// The adjoint of the norm's input (`δH`), to compute with the fused call.
    pub target: Name,
    /// The adjoint of the norm's output (`δN`).
    pub grad: Expr,
    /// The centred rows `C` (`T×d`), as the script writes them.
    pub centred: Expr,
    /// The rows' standard deviations `s` (`T×1`).
    pub sd: Expr,
    /// The gain `γ` (`1×d`), when there is one.
    pub gain: Option<Expr>,
    /// Which of the program's gradients are `∂L/∂γ` and `∂L/∂β`, when the
    /// fused call can give them too: `γ` and `β` are declared matrices that
    /// reach the loss only through this norm, and there is a gain.
    pub params: Option<(Option<usize>, Option<usize>)>,
}

impl LayerNorm {
    /// The value of [`target`](Self::target), in the textbook form.
    pub fn adjoint(&self) -> Expr {
        let Shape { rows: t, cols: d } = self.centred.shape.clone();
        let across = |v: Expr| ir::node_matmul(v, ir::ones(Shape::new(Dim::one(), d.clone())));
        let mean = |x: Expr| {
            across(ir::div(ir::node_matmul(x, ir::ones(Shape::new(d.clone(), Dim::one()))), ir::size(d.clone())))
        };
        let spread_sd = across(self.sd.clone());
        let normalised = ir::hadamard_div(self.centred.clone(), spread_sd.clone());
        let g = match &self.gain {
            Some(gain) => {
                ir::hadamard(self.grad.clone(), ir::node_matmul(ir::ones(Shape::new(t, Dim::one())), gain.clone()))
            }
            None => self.grad.clone(),
        };
        let projected = ir::hadamard(normalised.clone(), mean(ir::hadamard(g.clone(), normalised)));
        ir::hadamard_div(ir::sum_of(vec![g.clone(), ir::neg(mean(g)), ir::neg(projected)]), spread_sd)
    }
}

/// The layer norms of a backward program whose input adjoint can be
/// computed by the fused backward, one for each such adjoint: `env` holds
/// the script's definitions (not the adjoints), `loss` is the function
/// differentiated, `adjoints` the program's named adjoints, `adjoint_of` the
/// definition each belongs to, and `wrt` the variable of each gradient.
pub(super) fn layer_norms(
    env: &Env,
    loss: &Expr,
    adjoints: &[(Name, Expr)],
    adjoint_of: &HashMap<Name, Name>,
    wrt: &[Name],
) -> Vec<LayerNorm> {
    let named: HashSet<&Name> = adjoints.iter().map(|(n, _)| n).collect();
    let adjoint = |def: &str| -> Option<&Name> {
        adjoint_of.iter().find(|(a, d)| named.contains(a) && &***d == def).map(|(a, _)| a)
    };
    let mut found = vec![];
    for n in &env.defs {
        let Some(delta_n) = adjoint(n) else { continue };
        let Some(m) = Match::of(env, n) else { continue };
        let Some(target) = adjoint(&m.input) else { continue };
        if !m.sound(env, loss) {
            continue;
        }
        let shape = env.definition(n).expect("a definition").shape.clone();
        // `C ./ s` and then `(C ./ s) ∘ γ + β` are both norms of one input:
        // the later, which includes the other, is kept.
        found.retain(|f: &LayerNorm| f.target != *target);
        let gradient = |x: &Option<Expr>| {
            let name = m.parameter(env, loss, x.as_ref()?)?;
            wrt.iter().position(|w| *w == name)
        };
        let params = m.gain.is_some().then(|| (gradient(&m.gain), gradient(&m.bias)));
        found.push(LayerNorm {
            target: target.clone(),
            grad: ir::var(delta_n, shape, false),
            centred: m.centred,
            sd: m.sd,
            gain: m.gain,
            params: params.filter(|p| *p != (None, None)),
        });
    }
    found
}

/// A definition found to be a layer norm of the rows of the name `input`.
struct Match {
    input: Name,
    centred: Expr,
    sd: Expr,
    gain: Option<Expr>,
    bias: Option<Expr>,
    /// The other operands (`β`, `ε`), which must not depend on the input.
    others: Vec<Expr>,
    /// The norm's definitions: its output and the intermediates it names.
    defs: Vec<Name>,
}

impl Match {
    /// `out` as a layer norm, when its definition is one.
    fn of(env: &Env, out: &str) -> Option<Match> {
        let mut defs = vec![Name::from(out)];
        let body = env.definition(out)?;
        let mut others = vec![];
        // N = X̂ ∘ 1 γ + 1 β, either order of each, γ and β optional.
        let (scaled, bias) = match &body.op {
            Op::Add(ts) if ts.len() == 2 => match (row_spread(&ts[0]), row_spread(&ts[1])) {
                (_, Some(b)) => (ts[0].clone(), Some(b)),
                (Some(b), None) => (ts[1].clone(), Some(b)),
                _ => return None,
            },
            _ => (body.clone(), None),
        };
        others.extend(bias.clone());
        let (normalised, gain) = match &scaled.op {
            Op::Hadamard(x, y) => match (row_spread(x), row_spread(y)) {
                (_, Some(g)) => (x.clone(), Some(g)),
                (Some(g), None) => (y.clone(), Some(g)),
                _ => return None,
            },
            _ => (scaled, None),
        };
        // X̂ = C ./ (s 1ᵀ)
        let Op::HadamardDiv(centred, spread) = &resolve(env, &normalised, &mut defs).op else { return None };
        let (sd, true) = super::lower::broadcast(spread)? else { return None };
        let input = centre_of(env, centred, &mut defs)?;
        // s = sqrt(v + ε), v = mean(C ∘ C)
        let Op::Apply(Func::Builtin(f), inner) = &resolve(env, sd, &mut defs).op else { return None };
        if !is(f, &crate::functions::SQRT) {
            return None;
        }
        let Op::Add(ts) = &inner.op else { return None };
        let [a, b] = ts.as_slice() else { return None };
        // The names a failed try resolves are not the norm's.
        let variance = |v: &Expr, defs: &mut Vec<Name>| {
            let mut named = defs.clone();
            let squares = row_mean(resolve(env, v, &mut named))?;
            let square = match &squares.op {
                Op::Hadamard(x, y) if same(env, x, y) => x,
                Op::HadamardPow(x, k) if *k == ir::rat(2) => x,
                _ => return None,
            };
            same(env, square, centred).then(|| *defs = named)
        };
        let eps = if variance(a, &mut defs).is_some() {
            b
        } else if variance(b, &mut defs).is_some() {
            a
        } else {
            return None;
        };
        others.push(eps.clone());
        Some(Match { input, centred: centred.clone(), sd: sd.clone(), gain, bias, others, defs })
    }

    /// Whether every path from `loss` to the input goes through the output:
    /// the input and the intermediates are used by no definition but the
    /// norm's and not by `loss` itself, and the gain, bias and `ε` do not
    /// depend on them.
    fn sound(&self, env: &Env, loss: &Expr) -> bool {
        let hidden: HashSet<&str> = self.defs[1..].iter().map(|n| &**n).chain(std::iter::once(&*self.input)).collect();
        let mentions = |e: &Expr| {
            let mut names = vec![];
            e.var_names(&mut names);
            names.iter().any(|n| hidden.contains(&**n))
        };
        let own: HashSet<&str> = self.defs.iter().map(|n| &**n).collect();
        let outside = env.defs.iter().filter(|d| !own.contains(d.as_str()) && **d != *self.input);
        if mentions(loss) || outside.clone().any(|d| env.definition(d).is_some_and(mentions)) {
            return false;
        }
        let mut seen = HashSet::new();
        self.gain.iter().chain(&self.others).all(|e| !depends(env, e, &hidden, &mut seen))
    }

    /// The name of the gain or bias `x` when it is a declared matrix that
    /// reaches the loss only through this norm, as that operand: mentioned
    /// by no other definition, nor by `loss`, nor by the norm's other
    /// operands, and not its input. Its gradient is then what the fused call
    /// gives for it.
    fn parameter(&self, env: &Env, loss: &Expr, x: &Expr) -> Option<Name> {
        let Op::Var { name, .. } = &x.op else { return None };
        if env.definition(name).is_some() || *name == self.input {
            return None;
        }
        let out = &*self.defs[0];
        let elsewhere =
            env.defs.iter().filter(|d| d.as_str() != out).any(|d| env.definition(d).is_some_and(|b| b.mentions(name)));
        let only: HashSet<&str> = std::iter::once(&**name).collect();
        let mut seen = HashSet::new();
        let mut operands = self.gain.iter().chain(&self.others).filter(|e| *e != x);
        let through = operands.any(|e| depends(env, e, &only, &mut seen));
        // Once as an operand: `γ` used as the bias too is both.
        let twice = self.gain.iter().chain(&self.others).filter(|e| *e == x).count() > 1;
        (!elsewhere && !loss.mentions(name) && !through && !twice).then(|| name.clone())
    }
}

/// `b` when `t` is `1 b`, a row spread down the rows.
fn row_spread(t: &Expr) -> Option<Expr> {
    super::lower::broadcast(t).filter(|(_, right)| !right).map(|(b, _)| b.clone())
}

/// Whether `b` is the built-in function `f`.
fn is(b: &Builtin, f: &Builtin) -> bool {
    b.ascii == f.ascii
}

/// The definition of a defined name (noting it in `defs`), else `e`.
fn resolve<'e>(env: &'e Env, e: &'e Expr, defs: &mut Vec<Name>) -> &'e Expr {
    match &e.op {
        Op::Var { name, .. } => match env.definition(name) {
            Some(body) => {
                defs.push(name.clone());
                body
            }
            None => e,
        },
        _ => e,
    }
}

/// Whether two operands are one value: equal, or one the name of the other.
fn same(env: &Env, a: &Expr, b: &Expr) -> bool {
    let body = |e: &Expr| match &e.op {
        Op::Var { name, .. } => env.definition(name),
        _ => None,
    };
    a == b || body(a) == Some(b) || body(b) == Some(a)
}

/// `x` when `e` is the mean of each row of `x`: `x 1 / d` or `(1/d) x 1`.
fn row_mean(e: &Expr) -> Option<&Expr> {
    let (sums, divisor) = match &e.op {
        Op::Div(s, k) => (s, k.clone()),
        Op::Scale(c, s) => {
            let c = c.as_num()?;
            if *c == BigRational::from_integer(0.into()) {
                return None;
            }
            (s, ir::num(c.recip()))
        }
        _ => return None,
    };
    let Op::MatMul(x, o) = &sums.op else { return None };
    let d = &x.shape.cols;
    (matches!(o.op, Op::Ones) && o.shape.cols.is_one() && divisor == ir::size(d.clone())).then_some(x)
}

/// The name `H` when `c` is `H - mean(H) 1ᵀ` (row means), either order,
/// the mean named or not.
fn centre_of(env: &Env, c: &Expr, defs: &mut Vec<Name>) -> Option<Name> {
    let Op::Add(ts) = &resolve(env, c, defs).op else { return None };
    let [a, b] = ts.as_slice() else { return None };
    for (h, t) in [(a, b), (b, a)] {
        let Op::Var { name, .. } = &h.op else { continue };
        let (k, spread) = t.split_coef();
        if k != ir::rat(-1) {
            continue;
        }
        let Some((mean, true)) = super::lower::broadcast(&spread) else { continue };
        let mut named = defs.clone();
        if row_mean(resolve(env, mean, &mut named)).is_some_and(|x| x == h) {
            *defs = named;
            return Some(name.clone());
        }
    }
    None
}

/// Whether `e` reads any of `names`, directly or through definitions.
fn depends(env: &Env, e: &Expr, names: &HashSet<&str>, seen: &mut HashSet<Name>) -> bool {
    let mut vars = vec![];
    e.var_names(&mut vars);
    vars.into_iter().any(|n| {
        if names.contains(&*n) {
            return true;
        }
        if !seen.insert(n.clone()) {
            return false;
        }
        env.definition(&n).is_some_and(|body| depends(env, body, names, seen))
    })
}
