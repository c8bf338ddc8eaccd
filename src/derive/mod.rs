//! Answers to queries: one entry point, [`answer`], for the session, the
//! REPL, the library and anything else that asks for a derivative.
//!
//! It takes a typed query, the function as typed and as written, and the
//! settings; it picks the route (the shared reverse sweep for gradients,
//! Kronecker-form identification for Jacobians, Hessians through the
//! gradient), folds the user's names back in, projects gradients with
//! respect to symmetric matrices, and simplifies. The result is an
//! [`Answer`] that carries everything needed to print, check or generate
//! code for it later, including the conventions it was derived under.

use crate::ast::{Ident, QueryKind};
pub use crate::conventions::Conventions;
use crate::diff::backward::{larger_than, Adjoints, Program, Slice, WHOLE_SIMPLIFY_NODES};
use crate::diff::chain::{self, Derivation};
pub use crate::diff::chain::{Lhs, Step};
use crate::diff::rule::Rule;
use crate::egraph::Limits;
use crate::error::{Error, Result, Span};
use crate::ir::{self, Expr, Name, Op, VecOrder};
use crate::typeck::{Env, Written};
use std::collections::HashMap;
use std::rc::Rc;

/// What is asked, with the variables a derivative is taken with respect to.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// `d(F)`
    Differential,
    /// `d²(F)`
    SecondDifferential,
    /// `d³(F)`
    ThirdDifferential,
    /// `∂F/∂X` or `grad(F, X)`: shaped like `X` for a scalar `F`.
    Gradient {
        /// The variable.
        x: Ident,
    },
    /// `∂F/∂Xᵀ`, `∂F/∂vec(X)ᵀ` or `jacobian(F, X)`.
    Jacobian {
        /// The variable.
        x: Ident,
    },
    /// `hessian(F, X)`, or the mixed `hessian(F, X, Y)`.
    Hessian {
        /// The first variable (rows).
        x: Ident,
        /// The second variable (columns), when it is not `x`.
        y: Option<Ident>,
    },
    /// `simplify(e)`
    Simplify,
    /// `shape(e)`
    Shape,
    /// A bare expression.
    Show,
}

impl Query {
    /// The query a parsed statement asks.
    pub fn new(kind: QueryKind, wrt: Option<&Ident>, wrt2: Option<&Ident>) -> Query {
        let var = || wrt.cloned().expect("the parser gives derivative queries their variable");
        match kind {
            QueryKind::Differential => Query::Differential,
            QueryKind::SecondDifferential => Query::SecondDifferential,
            QueryKind::ThirdDifferential => Query::ThirdDifferential,
            QueryKind::Gradient => Query::Gradient { x: var() },
            QueryKind::Jacobian => Query::Jacobian { x: var() },
            QueryKind::Hessian => Query::Hessian { x: var(), y: wrt2.cloned() },
            QueryKind::Simplify => Query::Simplify,
            QueryKind::Shape => Query::Shape,
            QueryKind::Show => Query::Show,
        }
    }

    /// Its kind, without the variables.
    pub fn kind(&self) -> QueryKind {
        match self {
            Query::Differential => QueryKind::Differential,
            Query::SecondDifferential => QueryKind::SecondDifferential,
            Query::ThirdDifferential => QueryKind::ThirdDifferential,
            Query::Gradient { .. } => QueryKind::Gradient,
            Query::Jacobian { .. } => QueryKind::Jacobian,
            Query::Hessian { .. } => QueryKind::Hessian,
            Query::Simplify => QueryKind::Simplify,
            Query::Shape => QueryKind::Shape,
            Query::Show => QueryKind::Show,
        }
    }

    /// Whether it asks for a derivative (or a differential).
    pub fn is_derivative(&self) -> bool {
        !matches!(self, Query::Simplify | Query::Shape | Query::Show)
    }

    /// The variable of a derivative.
    pub fn wrt(&self) -> Option<&Ident> {
        match self {
            Query::Gradient { x } | Query::Jacobian { x } | Query::Hessian { x, .. } => Some(x),
            _ => None,
        }
    }

    /// The second variable of a mixed second derivative.
    pub fn wrt2(&self) -> Option<&Ident> {
        match self {
            Query::Hessian { y, .. } => y.as_ref(),
            _ => None,
        }
    }
}

/// The function a query is about.
#[derive(Debug, Clone)]
pub struct Function {
    /// As typed.
    pub expr: Expr,
    /// As written, for the reference evaluator.
    pub written: Written,
    /// How answers name it: a plain name, or the text in brackets.
    pub label: String,
}

/// How an answer is derived.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// Layout and `vec` order.
    pub conventions: Conventions,
    /// Bounds on equality saturation.
    pub limits: Limits,
    /// Whether to keep the derivation's steps.
    pub steps: bool,
}

/// Reverse sweeps of scalar functions, shared by their gradient queries,
/// and the simplified forms of the adjoints they name, shared likewise.
/// A sweep stays valid while no definition is added (the key counts them).
#[derive(Debug, Clone, Default)]
pub struct Sweeps {
    programs: HashMap<(Expr, usize, VecOrder), Program>,
    simplified: HashMap<(Expr, VecOrder, usize), Expr>,
}

/// The answer to a query.
#[derive(Debug, Clone)]
pub struct Answer {
    /// What was asked.
    pub query: Query,
    /// The left-hand side, for derivatives (`∂L/∂W1`).
    pub lhs: Option<Lhs>,
    /// The answer.
    pub expr: Expr,
    /// The adjoints the answer uses by name, in the order computed
    /// (`δd2 = …`): those of a backward program used more than once. Each
    /// mentions only the script's names and the adjoints before it.
    pub adjoints: Adjoints,
    /// The definition each named adjoint belongs to (`δd2` is `∂L/∂d2`),
    /// for the derivation's lines.
    pub adjoint_of: Rc<HashMap<Name, Name>>,
    /// The derivation, ending with the answer (with steps kept).
    pub steps: Vec<Step>,
    /// The query's span in the source.
    pub span: Span,
    /// The function, typed.
    pub function: Expr,
    /// The function as written, for the reference evaluator.
    pub written: Rc<Written>,
    /// For `d(F)` and `d²(F)`: the names whose differentials may appear,
    /// which a check perturbs together.
    pub varying: Vec<String>,
    /// The conventions the answer was derived under; checking, printing
    /// and code generation use these, whatever the session's are later.
    pub conventions: Conventions,
    /// Whether its text (and its adjoints') writes every identity's size: set
    /// when a bare `I` (as in the textbook's `n1ᵀ ⊗ I`) would not read back
    /// on its own.
    pub sized_identities: bool,
}

impl Answer {
    /// What kind of query it answers.
    pub fn kind(&self) -> QueryKind {
        self.query.kind()
    }

    /// The variable of a derivative.
    pub fn wrt(&self) -> Option<&str> {
        self.query.wrt().map(|x| x.name.as_str())
    }

    /// The second variable of a mixed second derivative.
    pub fn wrt2(&self) -> Option<&str> {
        self.query.wrt2().map(|y| y.name.as_str())
    }

    /// The answer in a text notation, identities sized when they must be.
    pub fn render(&self, n: crate::print::Notation) -> String {
        self.render_expr(&self.expr, n)
    }

    /// An expression of the answer (itself or an adjoint's body) in a text
    /// notation: adjoint names spelled for it (`δd2`, ASCII `delta_d2`),
    /// identities sized when they must be.
    fn render_expr(&self, e: &Expr, n: crate::print::Notation) -> String {
        let e = if n == crate::print::Notation::Ascii && !self.adjoints.is_empty() {
            let names = crate::diff::backward::names(&self.adjoints);
            ir::map_bottom_up(e, &mut |x| match &x.op {
                Op::Var { name, .. } if names.contains(name) => ir::var(&ascii_adjoint(name), x.shape.clone(), false),
                _ => x,
            })
        } else {
            e.clone()
        };
        if self.sized_identities {
            crate::print::render_sized(&e, n)
        } else {
            crate::print::render(&e, n)
        }
    }

    /// The named adjoints the answer uses, `(name, value)` in a text
    /// notation, in the order they are computed.
    ///
    /// ```
    /// let mut s = matdiff::Session::default();
    /// s.run("W: n x n; x: n; z1 = tanh(W x) + x; z2 = tanh(W z1) + z1; z3 = tanh(W z2) + z2").unwrap();
    /// let a = s.answers("L = sum(z3); ∂L/∂W").unwrap().pop().unwrap();
    /// // z2 is used twice in z3 (a residual connection): its adjoint is named.
    /// let lines = a.adjoint_lines(matdiff::print::Notation::Ascii);
    /// assert_eq!(lines, [("delta_z2".to_string(), "W^T (1 - tanh(W z2) .^ 2) + 1".to_string())]);
    /// assert!(a.ascii().contains("delta_z2"));
    /// ```
    pub fn adjoint_lines(&self, n: crate::print::Notation) -> Vec<(String, String)> {
        (0..self.adjoints.len()).map(|i| self.adjoint_line(i, n)).collect()
    }

    /// The `i`-th named adjoint, `(name, value)` in a text notation.
    pub fn adjoint_line(&self, i: usize, n: crate::print::Notation) -> (String, String) {
        let (name, body) = &self.adjoints[i];
        let name = if n == crate::print::Notation::Ascii { ascii_adjoint(name) } else { name.to_string() };
        (name, self.render_expr(body, n))
    }

    /// The names in force for the answer: `env` with the answer's adjoints
    /// defined, so that it can be evaluated or turned into code.
    pub fn env<'e>(&self, env: &'e Env) -> std::borrow::Cow<'e, Env> {
        if self.adjoints.is_empty() {
            std::borrow::Cow::Borrowed(env)
        } else {
            std::borrow::Cow::Owned(env.with_definitions(&self.adjoints))
        }
    }

    /// The answer's value at `values`, its adjoints computed on the way.
    pub fn value(
        &self,
        env: &Env,
        values: &crate::eval::Values,
    ) -> std::result::Result<crate::eval::Mat, crate::eval::EvalError> {
        crate::eval::Evaluator::new(&self.env(env), values).eval(&self.expr)
    }

    /// The answer in Unicode text.
    ///
    /// ```
    /// let mut s = matdiff::Session::default();
    /// let a = s.answers("A: n x n; grad(tr(A A), A)").unwrap().remove(0);
    /// assert_eq!(a.text(), "2 Aᵀ");
    /// assert_eq!(a.latex(), r"2 \, \mathbf{A}^\top");
    /// assert_eq!(a.expr.shape.to_string(), "n×n");
    /// ```
    pub fn text(&self) -> String {
        self.render(crate::print::Notation::Unicode)
    }

    /// The answer in ASCII text.
    pub fn ascii(&self) -> String {
        self.render(crate::print::Notation::Ascii)
    }

    /// The answer in LaTeX.
    pub fn latex(&self) -> String {
        crate::print::latex(&self.expr)
    }
}

/// The ASCII spelling of an adjoint's name: `δd2` is `delta_d2`.
fn ascii_adjoint(name: &str) -> String {
    match name.strip_prefix('δ') {
        Some(rest) => format!("delta_{rest}"),
        None => name.to_string(),
    }
}

/// What the derivation needs of its surroundings beyond the query.
pub struct Context<'a> {
    /// Names in force.
    pub env: &'a Env,
    /// How to derive.
    pub settings: Settings,
    /// Which names vary in `d(F)` (declared data such as targets do not).
    pub varies: &'a dyn Fn(&str) -> bool,
    /// Reverse sweeps to share between gradient queries.
    pub sweeps: &'a mut Sweeps,
}

/// The variable of a derivative, as a leaf carrying its shape.
fn variable(env: &Env, x: &Ident) -> Result<Expr> {
    env.leaf(&x.name).ok_or_else(|| {
        Error::unsupported(
            x.span,
            format!("`{}` is not a declared or defined matrix; derivatives are taken with respect to one", x.name),
        )
    })
}

/// Refuses a derivative whose matrix powers would expand past
/// [`crate::diff::MAX_POWER_TERMS`] terms (`d(Xᵏ)` has `k`).
fn bounded(env: &Env, f: &Expr, span: Span) -> Result<()> {
    let terms = env.power_terms(f);
    if terms > crate::diff::MAX_POWER_TERMS {
        return Err(Error::limit(
            span,
            format!(
                "the differential of this matrix power has {terms} terms (d(Xᵏ) has k); matdiff writes at most {}",
                crate::diff::MAX_POWER_TERMS
            ),
        ));
    }
    Ok(())
}

/// Answers a query about `f`; `span` is the query's place in the source.
///
/// ```
/// use matdiff::derive::{self, Context, Query, Settings, Sweeps};
/// let mut s = matdiff::Session::default();
/// s.run("x: n; A: n x n").unwrap();
/// let q = matdiff::syntax::parse("grad(x^T A x, x)").unwrap();
/// let matdiff::ast::Stmt::Query { kind, expr, wrt, wrt2, span } = &q[0] else { panic!() };
/// let (typed, written) = s.env.check_written(expr, Default::default()).unwrap();
/// let f = derive::Function { expr: typed, written, label: "f".into() };
/// let cx = Context { env: &s.env, settings: Settings::default(), varies: &|_| true, sweeps: &mut Sweeps::default() };
/// let a = derive::answer(cx, &Query::new(*kind, wrt.as_ref(), wrt2.as_ref()), f, *span).unwrap();
/// assert_eq!(a.text(), "(A + Aᵀ) x");
/// ```
pub fn answer(cx: Context<'_>, query: &Query, f: Function, span: Span) -> Result<Answer> {
    let Context { env, settings, varies, sweeps } = cx;
    let conv = settings.conventions;
    let Function { expr: typed, written, label } = f;
    if query.is_derivative() {
        bounded(env, &typed, span)?;
    }
    let mut varying = Vec::new();
    let mut adjoints = Vec::new();
    let mut adjoint_of = Rc::default();
    let mut presimplified = false;
    let (lhs, deriv) = match query {
        Query::Differential => {
            let d = chain::differential(env, &typed, &label, varies, conv.order);
            let body = chain::definition_of(env, &typed);
            varying = env.names.keys().filter(|n| varies(n) && body.mentions(n)).cloned().collect();
            (Some(Lhs::Differential(label.clone())), d)
        }
        Query::SecondDifferential | Query::ThirdDifferential => {
            let third = matches!(query, Query::ThirdDifferential);
            let d = chain::higher_differential(env, &typed, &label, varies, if third { 3 } else { 2 });
            let mut names = Vec::new();
            d.steps[0].rhs.diff_names(&mut names);
            varying = names.iter().map(|n| n.to_string()).collect();
            let lhs =
                if third { Lhs::ThirdDifferential(label.clone()) } else { Lhs::SecondDifferential(label.clone()) };
            (Some(lhs), d)
        }
        Query::Gradient { x } if typed.shape.is_scalar() => {
            let g = gradient(env, &typed, &label, x, settings, sweeps)?;
            adjoints = g.adjoints;
            adjoint_of = g.adjoint_of;
            presimplified = g.presimplified;
            (Some(g.lhs), g.derivation)
        }
        Query::Gradient { x } | Query::Jacobian { x } => {
            variable(env, x)?;
            let d = chain::jacobian(env, &typed, &label, &x.name, conv, x.span)?;
            let lhs = d.steps.last().expect("answer step").lhs.clone();
            adjoints = d.named.clone();
            (Some(lhs), d)
        }
        Query::Hessian { x, y } => {
            if !typed.shape.is_scalar() {
                return Err(Error::unsupported(
                    span,
                    format!("`{label}` is {}, not a scalar: a Hessian needs a scalar function", typed.shape),
                ));
            }
            if let Some(y) = y {
                variable(env, y)?;
            }
            let y = y.as_ref().map(|y| y.name.as_str());
            let (d, _) = chain::hessian(env, &typed, &label, &x.name, y, conv.order, x.span)?;
            adjoints = d.named.clone();
            (Some(d.steps.last().expect("answer step").lhs.clone()), d)
        }
        Query::Simplify | Query::Show | Query::Shape => {
            (None, Derivation { answer: crate::simplify::tidy(&typed), steps: vec![], named: vec![] })
        }
    };
    let folder = chain::Folder::new(env);
    let fold = |e: &Expr| if query.is_derivative() { folder.fold(e) } else { e.clone() };
    let mut steps: Vec<Step> = if settings.steps {
        deriv.steps.into_iter().map(|s| Step { rhs: fold(&s.rhs), ..s }).collect()
    } else {
        deriv.steps
    };
    let mut expr = fold(&deriv.answer);
    let symmetrised = match query {
        Query::Gradient { x } => symmetric_variable(env, x, &expr),
        _ => false,
    };
    if symmetrised {
        expr = symmetrise(expr);
    }
    // Cheapest equal form, for answers meant to be evaluated; Kronecker
    // forms and differentials keep their textbook shape.
    if matches!(query, Query::Simplify | Query::Show | Query::Gradient { .. } | Query::Hessian { .. }) && !presimplified
    {
        expr = crate::egraph::simplify_in(&expr, conv.order, settings.limits, &known(env)).expr;
    }
    let adjoints = simplified_adjoints(env, &folder, adjoints, settings, sweeps);
    // The derivation ends with the answer itself, as printed without steps:
    // the last step gets the simplified form, and a gradient made symmetric
    // gets a line of its own after the unsymmetric one.
    if let Some(lhs) = &lhs {
        match steps.last_mut() {
            Some(last) if last.lhs == *lhs && !symmetrised => last.rhs = expr.clone(),
            _ => {
                let rules = if symmetrised { vec![Rule::Symmetric] } else { vec![] };
                steps.push(Step { rules, lhs: lhs.clone(), formula: None, reshape: false, rhs: expr.clone() })
            }
        }
    }
    let sized_identities = sized_identities(env, &expr, &adjoints, conv.order);
    Ok(Answer {
        sized_identities,
        adjoints,
        adjoint_of,
        query: query.clone(),
        lhs,
        expr,
        steps,
        span,
        function: typed,
        written: Rc::new(written),
        varying,
        conventions: conv,
    })
}

/// What the simplifier may use of the session's definitions.
fn known(env: &Env) -> crate::egraph::Known {
    let derived = env
        .defs
        .iter()
        .filter(|n| matches!(env.names.get(*n), Some((crate::typeck::Binding::Def { derived: Some(_), .. }, _))))
        .map(|n| Name::from(n.as_str()))
        .collect();
    crate::egraph::Known::new(
        env.defs.iter().filter_map(|n| Some((Name::from(n.as_str()), env.definition(n)?.clone()))).collect(),
    )
    .with_derived(derived)
}

/// Whether the gradient by `x` is taken in the space of symmetric matrices:
/// `x` is declared symmetric (and is not 1×1).
fn symmetric_variable(env: &Env, x: &Ident, gradient: &Expr) -> bool {
    env.leaf(&x.name).is_some_and(|v| matches!(v.op, Op::Var { symmetric: true, .. }) && !v.shape.is_scalar())
        && gradient.shape.is_square()
}

/// With respect to a symmetric matrix, the gradient is the one in the space
/// of symmetric matrices: `(G + Gᵀ)/2`, whatever form of F was simplified
/// with `Sᵀ = S`.
/// `eᵀ` with the transpose pushed through sums, scales, quotients,
/// products and inverses down to the leaves.
fn transposed(e: &Expr) -> Expr {
    match &e.op {
        Op::Add(ts) => ir::sum_of(ts.iter().map(transposed).collect()),
        Op::Scale(s, x) => ir::scalar_mul(s.clone(), transposed(x)),
        Op::Div(a, s) => ir::div(transposed(a), s.clone()),
        Op::MatMul(a, b) => ir::matmul(transposed(b), transposed(a)),
        Op::Hadamard(a, b) => ir::hadamard(transposed(a), transposed(b)),
        Op::Inverse(x) => ir::inverse(transposed(x)),
        _ => ir::transpose(e.clone()),
    }
}

/// A gradient that is already symmetric (`Gᵀ` is written as `G`, product
/// chains read flat, with `Sᵀ = S` for a symmetric `S`) is its own
/// symmetrisation.
fn symmetrise(g: Expr) -> Expr {
    let t = crate::simplify::tidy(&transposed(&g));
    if crate::print::text(&t) == crate::print::text(&g) {
        return g;
    }
    let half = ir::BigRational::new(1.into(), 2.into());
    crate::simplify::tidy(&ir::scale(half, ir::sum_of(vec![g.clone(), t])))
}

/// Named adjoints in the user's names and simplified, each once for every
/// query that uses it.
fn simplified_adjoints(
    env: &Env,
    folder: &chain::Folder,
    adjoints: Adjoints,
    settings: Settings,
    sweeps: &mut Sweeps,
) -> Adjoints {
    let order = settings.conventions.order;
    let known = known(env);
    adjoints
        .into_iter()
        .map(|(name, body)| {
            let key = (folder.fold(&body), order, env.defs.len());
            let simple = match sweeps.simplified.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let s = crate::egraph::simplify_in(&key.0, order, settings.limits, &known).expr;
                    sweeps.simplified.insert(key, s.clone());
                    s
                }
            };
            (name, simple)
        })
        .collect()
}

/// Whether an answer must write every identity's size: when a bare `I` in
/// it, or in one of its adjoints, would not read back.
fn sized_identities(env: &Env, expr: &Expr, adjoints: &Adjoints, order: VecOrder) -> bool {
    let env = env.with_definitions(adjoints);
    !reads_back(&env, expr, order, true) || adjoints.iter().any(|(_, b)| !reads_back(&env, b, order, false))
}

/// Whether the text of `e`, read where its shape is known (between
/// identities of its size, with `in_context`) or alone (an adjoint's
/// definition), types to that shape: false when a bare `I` in it needs more
/// context than that (several bare `I`s in one Kronecker chain). A textbook
/// form such as `n1ᵀ ⊗ I` reads back and keeps its bare `I`.
fn reads_back(env: &Env, e: &Expr, order: VecOrder, in_context: bool) -> bool {
    let mut has_identity = false;
    let mut stack = vec![e.clone()];
    while let Some(x) = stack.pop() {
        if matches!(x.op, Op::Identity) {
            has_identity = true;
            break;
        }
        stack.extend(x.op.children().into_iter().cloned());
    }
    if !has_identity {
        return true;
    }
    let sized =
        |d: &crate::shape::Dim| crate::print::render_sized(&ir::identity(d.clone()), crate::print::Notation::Unicode);
    let text = if in_context {
        format!("{} ({}) {}", sized(&e.shape.rows), crate::print::text(e), sized(&e.shape.cols))
    } else {
        crate::print::text(e)
    };
    match crate::syntax::parse_expr(&text).and_then(|a| env.check(&a, order)) {
        Ok(t) => t.shape == e.shape,
        Err(_) => false,
    }
}

/// A gradient as [`gradient`] writes it.
struct Gradient {
    lhs: Lhs,
    derivation: Derivation,
    /// The adjoints it names.
    adjoints: Adjoints,
    /// The definition of each adjoint.
    adjoint_of: Rc<HashMap<Name, Name>>,
    /// Whether it is already simplified, piece by piece.
    presimplified: bool,
}

/// The gradient of a scalar: from the backward program shared by every
/// gradient query of `f`, so the answer never depends on whether steps are
/// kept, with the adjoints it uses more than once by name; with steps, the
/// textbook derivation (Kronecker form, then `vec⁻¹`) beside it.
fn gradient(env: &Env, f: &Expr, label: &str, x: &Ident, settings: Settings, sweeps: &mut Sweeps) -> Result<Gradient> {
    let conv = settings.conventions;
    let xe = variable(env, x)?;
    let lhs = Lhs::Gradient { f: label.to_string(), x: x.name.clone() };
    if matches!(&f.op, Op::Var { name, .. } if **name == *x.name) {
        let derivation = chain::gradient(env, f, label, &x.name, conv.order, x.span)?;
        return Ok(Gradient { lhs, derivation, adjoints: vec![], adjoint_of: Rc::default(), presimplified: false });
    }
    let program = program(env, f, conv.order, sweeps, x.span)?;
    let root = program.grads.get(x.name.as_str()).cloned().unwrap_or_else(|| ir::zero(xe.shape.clone()));
    let adjoint_of = Rc::clone(&program.of);
    let (slice, large) = write_roots(env, f, &[root], settings, sweeps);
    let presimplified = large[0];
    let adjoints = slice.adjoints;
    let answer = slice.roots.into_iter().next().expect("the answer");
    let mut steps = vec![Step { rules: vec![], lhs: lhs.clone(), formula: None, reshape: false, rhs: answer.clone() }];
    if settings.steps {
        if let Ok(g) = chain::gradient(env, f, label, &x.name, conv.order, x.span) {
            steps = g.steps;
            let kronecker = if xe.shape.is_vector() {
                None
            } else {
                let denominator = Conventions { layout: crate::conventions::Layout::Denominator, ..conv };
                chain::jacobian(env, f, label, &x.name, denominator, x.span).ok()
            };
            if let Some(j) = kronecker {
                steps = j.steps;
                let rules = vec![Rule::Reshape];
                steps.push(Step { rules, lhs: lhs.clone(), formula: None, reshape: true, rhs: g.answer });
            }
        }
    }
    Ok(Gradient { lhs, derivation: Derivation { answer, steps, named: vec![] }, adjoints, adjoint_of, presimplified })
}

/// The backward program of a scalar `f`, from one reverse sweep shared by
/// every gradient query of `f`.
fn program<'s>(env: &Env, f: &Expr, order: VecOrder, sweeps: &'s mut Sweeps, span: Span) -> Result<&'s Program> {
    let key = (f.clone(), env.defs.len(), order);
    if !sweeps.programs.contains_key(&key) {
        let sweep = chain::sweep(env, f, order).map_err(|e| Error::unsupported(span, e.0))?;
        sweeps.programs.insert(key.clone(), sweep);
    }
    Ok(&sweeps.programs[&key])
}

/// `roots` of `f`'s backward program (made by [`program`]) with the adjoints
/// they use by name (see [`Program::written`]), and which roots are too
/// large to simplify as a whole: those are put together from the program's
/// adjoints simplified one by one (each once for every query), so a deep
/// chain written inline costs many small simplifications, not one large one.
fn write_roots(env: &Env, f: &Expr, roots: &[Expr], settings: Settings, sweeps: &mut Sweeps) -> (Slice, Vec<bool>) {
    let order = settings.conventions.order;
    let program = sweeps.programs.get_mut(&(f.clone(), env.defs.len(), order)).expect("made by `program`");
    let slice = program.written(roots, false);
    let large: Vec<bool> = slice.roots.iter().map(|r| larger_than(r, WHOLE_SIMPLIFY_NODES)).collect();
    if !large.contains(&true) {
        return (slice, large);
    }
    let folder = chain::Folder::new(env);
    let known = known(env);
    program.simplify_settled(&mut |e| crate::egraph::simplify_in(&folder.fold(e), order, settings.limits, &known).expr);
    (program.written(roots, true), large)
}

/// Every gradient of a scalar at once, `∂L/∂(W1, b1, W2, b2)`: one backward
/// program, as a lecture writes it on the board.
#[derive(Debug, Clone)]
pub struct Backward {
    /// The function, as the answers name it (`L`).
    pub label: String,
    /// The adjoints the gradients use by name, in the order computed.
    pub adjoints: Adjoints,
    /// The gradients, in the order asked; each carries the adjoints it uses,
    /// so that it can be printed, checked or evaluated on its own.
    pub gradients: Vec<Answer>,
    /// The query's place in the source.
    pub span: Span,
}

/// Answers `∂F/∂(X, Y, …)`: the gradients of the scalar `f` by each of
/// `vars`, written with the adjoints that more than one of them (or one of
/// them more than once) uses named once (`δd2 = …`), the others inline.
///
/// ```
/// let mut s = matdiff::Session::default();
/// s.run("x: 1 x n; W1, W2: n x n; y: 1 x n; d1 = x W1; n1 = tanh(d1); d2 = n1 W2").unwrap();
/// let out = s.run("L = ‖d2 - y‖²; ∂L/∂(W1, W2)").unwrap();
/// let matdiff::session::Outcome::Backward(b) = &out[1] else { panic!() };
/// assert_eq!(b.gradients.len(), 2);
/// assert_eq!(b.adjoints[0].0.as_ref(), "δd2");
/// assert_eq!(b.gradients[1].text(), "n1ᵀ δd2");
/// ```
pub fn backward(cx: Context<'_>, f: Function, vars: &[Ident], span: Span) -> Result<Backward> {
    let Context { env, settings, sweeps, .. } = cx;
    let conv = settings.conventions;
    let Function { expr: typed, written, label } = f;
    if !typed.shape.is_scalar() {
        return Err(Error::unsupported(
            span,
            format!("`{label}` is {}, not a scalar: gradients are of a scalar function", typed.shape),
        ));
    }
    bounded(env, &typed, span)?;
    let leaves = vars.iter().map(|x| variable(env, x)).collect::<Result<Vec<_>>>()?;
    for (i, x) in vars.iter().enumerate() {
        if vars[..i].iter().any(|y| y.name == x.name) {
            return Err(Error::name(x.span, format!("`{}` is asked for twice", x.name), "asked for again"));
        }
        if matches!(&typed.op, Op::Var { name, .. } if **name == *x.name) {
            return Err(Error::unsupported(
                x.span,
                format!("∂{label}/∂{label} is 1: ask for the gradients of {label} by the names it depends on"),
            ));
        }
    }
    let program = program(env, &typed, conv.order, sweeps, span)?;
    let roots: Vec<Expr> = vars
        .iter()
        .zip(&leaves)
        .map(|(x, xe)| program.grads.get(x.name.as_str()).cloned().unwrap_or_else(|| ir::zero(xe.shape.clone())))
        .collect();
    let adjoint_of = Rc::clone(&program.of);
    let (slice, large) = write_roots(env, &typed, &roots, settings, sweeps);
    let folder = chain::Folder::new(env);
    let adjoints = simplified_adjoints(env, &folder, slice.adjoints, settings, sweeps);
    let known = known(env);
    let written = Rc::new(written);
    let closure = crate::diff::backward::Closure::new(&adjoints);
    // Which adjoints must write their identities' sizes, decided once.
    let with_adjoints = env.with_definitions(&adjoints);
    let sized: std::collections::HashSet<&Name> =
        adjoints.iter().filter(|(_, b)| !reads_back(&with_adjoints, b, conv.order, false)).map(|(n, _)| n).collect();
    let gradients = vars
        .iter()
        .zip(slice.roots)
        .zip(large)
        .map(|((x, root), large)| {
            let mut expr = folder.fold(&root);
            if symmetric_variable(env, x, &expr) {
                expr = symmetrise(expr);
            }
            if !large {
                expr = crate::egraph::simplify_in(&expr, conv.order, settings.limits, &known).expr;
            }
            let own = closure.of(&expr);
            let lhs = Lhs::Gradient { f: label.clone(), x: x.name.clone() };
            Answer {
                sized_identities: !reads_back(&with_adjoints, &expr, conv.order, true)
                    || own.iter().any(|(n, _)| sized.contains(n)),
                adjoints: own,
                adjoint_of: Rc::clone(&adjoint_of),
                query: Query::Gradient { x: x.clone() },
                lhs: Some(lhs.clone()),
                steps: vec![Step { rules: vec![], lhs, formula: None, reshape: false, rhs: expr.clone() }],
                expr,
                span,
                function: typed.clone(),
                written: Rc::clone(&written),
                varying: vec![],
                conventions: conv,
            }
        })
        .collect();
    Ok(Backward { label, adjoints, gradients, span })
}

#[cfg(test)]
mod tests {
    use crate::conventions::{Conventions, Layout, VecOrder};
    use crate::session::{Options, Session};

    #[test]
    fn an_answer_keeps_its_conventions_when_the_session_changes() {
        let numerator = Conventions { layout: Layout::Numerator, order: VecOrder::Col };
        let mut s = Session::new(Options { conventions: numerator, ..Options::default() });
        let a = s.answers("X: 2 x 3; A: 3 x 3; F = X A; ∂F/∂vec(X)ᵀ").unwrap().remove(0);
        s.options.conventions = Conventions::default();
        s.set_vec_order(VecOrder::Row);
        assert_eq!(a.conventions, numerator);
        let err = s.check(&a).unwrap().unwrap();
        assert!(err < 1e-6, "checked under the session's new conventions: {err}");
        // The same Jacobian under the new conventions is another matrix.
        let b = s.answers("G = X A; ∂G/∂vec(X)ᵀ").unwrap().remove(0);
        assert_ne!(a.text(), b.text());
    }
}
