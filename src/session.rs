//! A session: declarations, definitions and queries, in order.
//!
//! Each statement either succeeds or leaves the session as it was, so a REPL
//! can go on after an error.

use crate::ast::{QueryKind, ShapeAst, Stmt};
use crate::diff::chain::{self, Conventions, Derivation, Layout, Lhs, Step};
use crate::error::{Error, Result, Span};
use crate::ir::{Expr, VecOrder};
use crate::print::{self, Notation};
use crate::shape::{Dim, Shape};
use crate::typeck::{Binding, Env};
use std::collections::BTreeSet;

/// Output notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Unicode text (the default).
    #[default]
    Text,
    /// ASCII text.
    Ascii,
    /// LaTeX.
    Latex,
    /// One JSON object per line.
    Json,
    /// A Python module with one NumPy function per query.
    Numpy,
}

/// How answers are computed and shown.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Output notation.
    pub format: Format,
    /// Print derivations step by step.
    pub steps: bool,
    /// Layout and `vec` order.
    pub conventions: Conventions,
    /// Bounds on equality saturation.
    pub limits: crate::egraph::Limits,
}

/// What a statement produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Names were declared.
    Declared,
    /// A name was defined, with its shape.
    Defined {
        /// The name.
        name: String,
        /// Its shape.
        shape: Shape,
    },
    /// A query's answer.
    Answer(Answer),
}

/// The answer to a query.
#[derive(Debug, Clone)]
pub struct Answer {
    /// What was asked.
    pub kind: QueryKind,
    /// The left-hand side, as a step label.
    pub lhs: Lhs,
    /// The answer.
    pub expr: Expr,
    /// The derivation.
    pub steps: Vec<Step>,
    /// The query's span in the source.
    pub span: Span,
    /// The function, typed (for checking derivatives).
    pub function: Option<Expr>,
    /// The function as written, for the reference evaluator.
    pub written: Option<std::rc::Rc<crate::typeck::Written>>,
    /// The variable, for derivative queries.
    pub wrt: Option<String>,
    /// The second variable of a mixed second derivative `hessian(F, X, Y)`.
    pub wrt2: Option<String>,
    /// The conventions the answer was derived under; checking, printing
    /// and code generation use these, whatever the session's are later.
    pub conventions: Conventions,
    /// For `d(F)`: the names whose differentials may appear (those `F`
    /// mentions directly that vary), which a check perturbs together.
    pub varying: Vec<String>,
}

impl Answer {
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
        print::text(&self.expr)
    }

    /// The answer in ASCII text.
    pub fn ascii(&self) -> String {
        print::ascii(&self.expr)
    }

    /// The answer in LaTeX.
    pub fn latex(&self) -> String {
        print::latex(&self.expr)
    }
}

/// Declarations, definitions and settings.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Names in force.
    pub env: Env,
    /// Settings.
    pub options: Options,
    /// Names that derivative queries differentiate with respect to; `d(F)`
    /// treats declared matrices outside this set as constants.
    targets: BTreeSet<String>,
    /// Reverse sweeps of scalar functions, shared by their gradient queries;
    /// valid while no definition is added.
    sweeps: std::collections::HashMap<(Expr, usize, VecOrder), std::collections::BTreeMap<crate::ir::Name, Expr>>,
}

impl Session {
    /// An empty session.
    pub fn new(options: Options) -> Session {
        Session { options, ..Session::default() }
    }

    /// A Python module with one NumPy function per answer, in order (see
    /// [`crate::print::numpy`]), or an error when an answer's code would
    /// build an array too large to allocate.
    ///
    /// ```
    /// let mut s = matdiff::Session::default();
    /// let answers = s.answers("x: n; A: n x n; grad(x^T A x, x)").unwrap();
    /// let py = s.numpy(&answers).unwrap();
    /// assert!(py.contains("def grad_q1_x(A, x):"));
    /// ```
    pub fn numpy(&self, answers: &[Answer]) -> Result<String> {
        let ids = print::numpy::Identifiers::new(&self.env);
        let mut used = BTreeSet::new();
        let functions: Vec<print::numpy::Function> = answers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                // A name of the script stands for itself; an expression is `q1`, `q2`, … by position.
                let ident = |s: &str| {
                    if self.env.names.contains_key(s) {
                        ids.name(s)
                    } else {
                        format!("q{}", i + 1)
                    }
                };
                let base = match (&a.kind, &a.lhs) {
                    (QueryKind::Differential, Lhs::Differential(f)) => format!("d_{}", ident(f)),
                    (_, Lhs::SecondDifferential(f)) => format!("d2_{}", ident(f)),
                    (_, Lhs::Gradient { f, x }) => format!("grad_{}_{}", ident(f), ident(x)),
                    (_, Lhs::Jacobian { f, x, .. }) => format!("jacobian_{}_{}", ident(f), ident(x)),
                    (_, Lhs::Hessian { f, x, .. }) => format!("hessian_{}_{}", ident(f), ident(x)),
                    _ => format!("expr_{}", i + 1),
                };
                let mut name = base.clone();
                let mut k = 2;
                while !used.insert(name.clone()) {
                    name = format!("{base}_{k}");
                    k += 1;
                }
                let expr = match a.kind {
                    QueryKind::Shape => a.function.clone().unwrap_or_else(|| a.expr.clone()),
                    _ => a.expr.clone(),
                };
                let doc = match a.kind {
                    QueryKind::Shape | QueryKind::Show | QueryKind::Simplify => print::text(&expr),
                    _ => format!("{} = {}", lhs_text(&a.lhs, Notation::Unicode), print::text(&a.expr)),
                };
                print::numpy::Function { name, expr, doc, span: a.span }
            })
            .collect();
        print::numpy::module(&self.env, &functions)
    }

    /// Changes the `vec` order for the statements that follow.
    pub fn set_vec_order(&mut self, order: VecOrder) {
        self.options.conventions.order = order;
    }

    /// Parses a script and notes which names its derivative queries
    /// differentiate with respect to (see [`Session::exec`] for `d(F)`).
    pub fn prepare(&mut self, src: &str) -> Result<Vec<Stmt>> {
        let stmts = crate::syntax::parse(src)?;
        for s in &stmts {
            if let Stmt::Query { wrt, wrt2, .. } = s {
                self.targets.extend(wrt.iter().chain(wrt2).map(|w| w.name.clone()));
            }
        }
        Ok(stmts)
    }

    /// Runs a whole script, stopping at the first error.
    ///
    /// ```
    /// use matdiff::session::{Session, Outcome};
    /// let mut s = Session::default();
    /// let out = s.run("x: n\nA: n x n\nf = x^T A x\n∂f/∂x").unwrap();
    /// let Outcome::Answer(a) = &out[3] else { panic!() };
    /// assert_eq!(s.render(a), "∂f/∂x = (A + Aᵀ) x");
    /// ```
    pub fn run(&mut self, src: &str) -> Result<Vec<Outcome>> {
        let stmts = self.prepare(src)?;
        stmts.iter().map(|s| self.exec(s, src)).collect()
    }

    /// Runs a script and returns only the answers to its queries.
    ///
    /// ```
    /// let mut s = matdiff::Session::default();
    /// let a = s.answers("X: m x n; grad(tr(X^T X), X)").unwrap();
    /// assert_eq!(s.render(&a[0]), "∂(tr(X^T X))/∂X = 2 X");
    /// ```
    pub fn answers(&mut self, src: &str) -> Result<Vec<Answer>> {
        Ok(self
            .run(src)?
            .into_iter()
            .filter_map(|o| match o {
                Outcome::Answer(a) => Some(a),
                _ => None,
            })
            .collect())
    }

    /// Runs one statement; on error the session is unchanged.
    ///
    /// `d(F)` differentiates with respect to the names the script's
    /// derivative queries mention and the definitions that depend on them;
    /// other declared matrices (data such as targets) are constants. With no
    /// derivative queries, every name varies.
    pub fn exec(&mut self, stmt: &Stmt, src: &str) -> Result<Outcome> {
        // Undo log: the names this statement may introduce, and the definitions so far.
        let introduced: Vec<&str> = match stmt {
            Stmt::Decl { names, .. } | Stmt::FnDecl { names } => names.iter().map(|n| n.name.as_str()).collect(),
            Stmt::Def { name, .. } => vec![name.name.as_str()],
            Stmt::Query { .. } => vec![],
        };
        let fresh: Vec<&str> = introduced.into_iter().filter(|n| !self.env.names.contains_key(*n)).collect();
        let defs = self.env.defs.len();
        let out = self.exec_inner(stmt, src);
        if out.is_err() {
            for n in fresh {
                self.env.names.remove(n);
            }
            self.env.defs.truncate(defs);
        }
        out
    }

    fn exec_inner(&mut self, stmt: &Stmt, src: &str) -> Result<Outcome> {
        match stmt {
            Stmt::Decl { names, shape, symmetric, shape_span } => {
                let shape = match shape {
                    ShapeAst::Scalar => Shape::scalar(),
                    ShapeAst::Matrix(r, c) => {
                        let dim = |d: &crate::ast::DimAst| match d {
                            crate::ast::DimAst::Num(n) => Dim::num(*n),
                            crate::ast::DimAst::Sym(s) => Dim::sym(s),
                        };
                        Shape::new(dim(r), c.as_ref().map_or(Dim::one(), dim))
                    }
                };
                if *symmetric && !shape.is_square() {
                    return Err(Error::shape(
                        *shape_span,
                        format!("a symmetric matrix must be square, but this shape is {shape}"),
                        "not square",
                    ));
                }
                for n in names {
                    self.env.check_new(n, src)?;
                    self.env.names.insert(
                        n.name.clone(),
                        (Binding::Matrix { shape: shape.clone(), symmetric: *symmetric }, n.span),
                    );
                }
                Ok(Outcome::Declared)
            }
            Stmt::FnDecl { names } => {
                for n in names {
                    self.env.check_new(n, src)?;
                    self.env.names.insert(n.name.clone(), (Binding::Func, n.span));
                }
                Ok(Outcome::Declared)
            }
            Stmt::Def { name, body } => {
                self.env.check_new(name, src)?;
                let (t, written) = self.env.check_written(body, self.options.conventions.order)?;
                let shape = t.shape.clone();
                let written = std::rc::Rc::new(written);
                self.env.names.insert(name.name.clone(), (Binding::Def { body: t, written }, name.span));
                self.env.defs.push(name.name.clone());
                Ok(Outcome::Defined { name: name.name.clone(), shape })
            }
            Stmt::Query { kind, expr, wrt, wrt2, span } => {
                self.targets.extend(wrt.iter().chain(wrt2).map(|w| w.name.clone()));
                let (f, written) = self.env.check_written(expr, self.options.conventions.order)?;
                if !matches!(kind, QueryKind::Simplify | QueryKind::Show | QueryKind::Shape) {
                    // Differentiating expands matrix powers term by term: refuse
                    // what would not fit rather than run out of time or memory.
                    let mut used = vec![f.clone()];
                    for d in self.env.defs.iter().rev() {
                        if used.iter().any(|e| e.mentions(d)) {
                            used.extend(self.env.definition(d).cloned());
                        }
                    }
                    let terms = used.iter().map(crate::diff::power_terms).max().unwrap_or(1);
                    if terms > crate::diff::MAX_POWER_TERMS {
                        return Err(Error::limit(
                            expr.span,
                            format!(
                                "the differential of this matrix power has {terms} terms (d(Xᵏ) has k); \
                                 matdiff writes at most {}",
                                crate::diff::MAX_POWER_TERMS
                            ),
                        ));
                    }
                }
                let mut checked = f.clone();
                let mut moving = Vec::new();
                let label = label_of(&src[expr.span.start..expr.span.end]);
                let conv = self.options.conventions;
                let (lhs, deriv) = match kind {
                    QueryKind::Differential => {
                        let varying = self.varying();
                        let all = self.targets.is_empty();
                        let varies = |n: &str| all || varying.contains(n);
                        let d = chain::differential(&self.env, &f, &label, &varies, conv.order);
                        let body = chain::definition_of(&self.env, &f);
                        moving = self.env.names.keys().filter(|n| varies(n) && body.mentions(n)).cloned().collect();
                        (Lhs::Differential(label.clone()), d)
                    }
                    QueryKind::SecondDifferential => {
                        let varying = self.varying();
                        let all = self.targets.is_empty();
                        let d = chain::second_differential(&self.env, &f, &label, &|n| all || varying.contains(n));
                        let mut names = Vec::new();
                        d.steps[0].rhs.diff_names(&mut names);
                        moving = names.iter().map(|n| n.to_string()).collect();
                        (Lhs::SecondDifferential(label.clone()), d)
                    }
                    QueryKind::Gradient | QueryKind::Jacobian => {
                        let w = wrt.as_ref().expect("variable");
                        let xe = self.env.leaf(&w.name).ok_or_else(|| {
                            Error::unsupported(w.span, format!("`{}` is not a declared or defined matrix; derivatives are taken with respect to one", w.name))
                        })?;
                        let self_gradient = matches!(&f.op, crate::ir::Op::Var { name, .. } if **name == *w.name);
                        // The answer does not depend on `--steps`: the shared reverse sweep gives
                        // it; the derivation shown with `--steps` is computed beside it.
                        if *kind == QueryKind::Gradient && f.shape.is_scalar() && !self_gradient {
                            let key = (f.clone(), self.env.defs.len(), conv.order);
                            if !self.sweeps.contains_key(&key) {
                                let sweep = chain::sweep(&self.env, &f, conv.order)
                                    .map_err(|e| Error::unsupported(w.span, e.0))?;
                                self.sweeps.insert(key.clone(), sweep);
                            }
                            let answer = self.sweeps[&key]
                                .get(w.name.as_str())
                                .cloned()
                                .unwrap_or_else(|| crate::ir::zero(xe.shape.clone()));
                            let lhs = Lhs::Gradient { f: label.clone(), x: w.name.clone() };
                            let mut steps =
                                vec![Step { lhs: lhs.clone(), formula: None, reshape: false, rhs: answer.clone() }];
                            if self.options.steps {
                                if let Ok(g) = chain::gradient(&self.env, &f, &label, &w.name, conv.order, w.span) {
                                    steps = g.steps;
                                    let kronecker = if xe.shape.is_vector() {
                                        None
                                    } else {
                                        let denominator = Conventions { layout: Layout::Denominator, ..conv };
                                        chain::jacobian(&self.env, &f, &label, &w.name, denominator, w.span).ok()
                                    };
                                    if let Some(j) = kronecker {
                                        steps = j.steps;
                                        steps.push(Step {
                                            lhs: lhs.clone(),
                                            formula: None,
                                            reshape: true,
                                            rhs: g.answer,
                                        });
                                    }
                                }
                            }
                            (lhs, Derivation { answer, steps })
                        } else if *kind == QueryKind::Gradient && f.shape.is_scalar() {
                            let g = chain::gradient(&self.env, &f, &label, &w.name, conv.order, w.span)?;
                            (Lhs::Gradient { f: label.clone(), x: w.name.clone() }, g)
                        } else {
                            let d = chain::jacobian(&self.env, &f, &label, &w.name, conv, w.span)?;
                            let lhs = d.steps.last().expect("answer step").lhs.clone();
                            (lhs, d)
                        }
                    }
                    QueryKind::Hessian => {
                        let w = wrt.as_ref().expect("variable");
                        if !f.shape.is_scalar() {
                            return Err(Error::unsupported(
                                *span,
                                format!("`{label}` is {}, not a scalar: a Hessian needs a scalar function", f.shape),
                            ));
                        }
                        if let Some(y) = wrt2 {
                            if self.env.leaf(&y.name).is_none() {
                                return Err(Error::unsupported(
                                    y.span,
                                    format!("`{}` is not a declared or defined matrix; derivatives are taken with respect to one", y.name),
                                ));
                            }
                        }
                        let y = wrt2.as_ref().map(|y| y.name.as_str());
                        let (d, g) = chain::hessian(&self.env, &f, &label, &w.name, y, conv.order, w.span)?;
                        checked = g;
                        (d.steps.last().expect("answer step").lhs.clone(), d)
                    }
                    QueryKind::Simplify | QueryKind::Show | QueryKind::Shape => {
                        let e = crate::simplify::tidy(&f);
                        (Lhs::Differential(String::new()), Derivation { answer: e, steps: vec![] })
                    }
                };
                let fold = |e: &Expr| match kind {
                    QueryKind::Simplify | QueryKind::Show | QueryKind::Shape => e.clone(),
                    _ => chain::fold_names(&self.env, e),
                };
                let steps = if self.options.steps {
                    deriv.steps.into_iter().map(|s| Step { rhs: fold(&s.rhs), ..s }).collect()
                } else {
                    deriv.steps
                };
                let mut expr = fold(&deriv.answer);
                // With respect to a symmetric matrix, the gradient is the one in the space of
                // symmetric matrices: (G + Gᵀ)/2, whatever form of F was simplified with Sᵀ = S.
                let symmetric_wrt = wrt.as_ref().and_then(|w| self.env.leaf(&w.name)).is_some_and(|x| {
                    matches!(x.op, crate::ir::Op::Var { symmetric: true, .. }) && !x.shape.is_scalar()
                });
                let symmetrised =
                    *kind == QueryKind::Gradient && wrt2.is_none() && symmetric_wrt && expr.shape.is_square();
                if symmetrised {
                    let half = crate::ir::scale(
                        crate::ir::BigRational::new(1.into(), 2.into()),
                        crate::ir::sum_of(vec![expr.clone(), crate::ir::transpose(expr)]),
                    );
                    expr = crate::simplify::tidy(&half);
                }
                // Cheapest equal form, for answers meant to be evaluated; Kronecker
                // forms and differentials keep their textbook shape.
                if matches!(kind, QueryKind::Simplify | QueryKind::Show | QueryKind::Gradient | QueryKind::Hessian) {
                    expr = crate::egraph::simplify(&expr, conv.order, self.options.limits).expr;
                }
                // The derivation ends with the answer itself, as printed without `--steps`:
                // the last step gets the simplified form, and a gradient made symmetric
                // gets a line of its own after the unsymmetric one.
                let mut steps = steps;
                if !matches!(kind, QueryKind::Simplify | QueryKind::Show | QueryKind::Shape) {
                    match steps.last_mut() {
                        Some(last) if last.lhs == lhs && !symmetrised => last.rhs = expr.clone(),
                        _ => steps.push(Step { lhs: lhs.clone(), formula: None, reshape: false, rhs: expr.clone() }),
                    }
                }
                Ok(Outcome::Answer(Answer {
                    kind: *kind,
                    lhs,
                    expr,
                    steps,
                    span: *span,
                    function: Some(checked),
                    written: Some(std::rc::Rc::new(written)),
                    wrt: wrt.as_ref().map(|w| w.name.clone()),
                    wrt2: wrt2.as_ref().map(|w| w.name.clone()),
                    varying: moving,
                    conventions: conv,
                }))
            }
        }
    }

    /// Checks a derivative against central finite differences at random
    /// values: the largest relative error, or `None` for other queries.
    pub fn check(&self, a: &Answer) -> std::result::Result<Option<f64>, crate::eval::EvalError> {
        crate::eval::check::check(&self.env, a, a.conventions, 0x5eed)
    }

    /// Names that vary in `d(F)`: the targets and what depends on them.
    fn varying(&self) -> BTreeSet<String> {
        let mut v = self.targets.clone();
        for u in &self.env.defs {
            if let Some(body) = self.env.definition(u) {
                if v.iter().any(|t| body.mentions(t)) {
                    v.insert(u.clone());
                }
            }
        }
        v
    }

    /// Renders an outcome in the session's format (`None` for declarations,
    /// and for everything in the NumPy format, whose module is printed once
    /// for all answers by [`Session::numpy`]).
    pub fn render_outcome(&self, o: &Outcome) -> Option<String> {
        match o {
            Outcome::Declared => None,
            _ if self.options.format == Format::Numpy => None,
            Outcome::Defined { name, shape } => Some(match self.options.format {
                Format::Json => serde_json::json!({ "definition": name, "shape": shape_json(shape) }).to_string(),
                Format::Ascii => format!("{name}: {}", shape.display(true)),
                Format::Latex => format!(
                    r"{} \in \mathbb{{R}}^{{{} \times {}}}",
                    print::latex::name(name, !shape.is_scalar()),
                    shape.rows,
                    shape.cols
                ),
                Format::Text | Format::Numpy => format!("{name}: {shape}"),
            }),
            Outcome::Answer(a) => Some(self.render(a)),
        }
    }

    /// Renders an answer in the session's format.
    pub fn render(&self, a: &Answer) -> String {
        self.render_checked(a, None)
    }

    /// Renders an answer in the session's format, with the result of its
    /// numeric check. In JSON the check (and, with `--steps`, the
    /// derivation) is part of the answer's object; other formats show the
    /// answer alone. The NumPy format gives the answer's module, or the
    /// reason it cannot be generated as a Python comment.
    pub fn render_checked(&self, a: &Answer, check: Option<CheckResult>) -> String {
        let fmt = self.options.format;
        let notation = if fmt == Format::Ascii { Notation::Ascii } else { Notation::Unicode };
        let expr = |e: &Expr| match fmt {
            Format::Latex => print::latex(e),
            _ => print::render(e, notation),
        };
        let shape = |s: &Shape| s.display(fmt == Format::Ascii);
        match fmt {
            Format::Numpy => match self.numpy(std::slice::from_ref(a)) {
                Ok(module) => module,
                Err(e) => format!("# {e}\n"),
            },
            Format::Json => self.json(a, check).to_string(),
            _ => match a.kind {
                QueryKind::Shape => {
                    let f = a.function.as_ref().expect("function");
                    format!("{}: {}", expr(f), shape(&f.shape))
                }
                QueryKind::Show => format!("{} : {}", expr(&a.expr), shape(&a.expr.shape)),
                QueryKind::Simplify => expr(&a.expr),
                _ if self.options.steps && !a.steps.is_empty() => self.render_steps(&a.steps),
                _ => format!("{} = {}", self.lhs(&a.lhs), expr(&a.expr)),
            },
        }
    }

    /// The JSON object of an answer: `query`, `text`, `ascii`, `latex`,
    /// `shape`, the conventions it was derived under (`layout`, `vec`), then
    /// `steps` with `--steps` and `check` when it was checked.
    fn json(&self, a: &Answer, check: Option<CheckResult>) -> serde_json::Value {
        let query = match a.kind {
            QueryKind::Shape | QueryKind::Show | QueryKind::Simplify => format!("{:?}", a.kind).to_lowercase(),
            _ => lhs_text(&a.lhs, Notation::Unicode),
        };
        let conv = a.conventions;
        let mut obj = serde_json::json!({
            "query": query,
            "text": print::text(&a.expr),
            "ascii": print::ascii(&a.expr),
            "latex": print::latex(&a.expr),
            "shape": shape_json(&a.expr.shape),
            "layout": conv.layout.name(),
            "vec": conv.order.name(),
        });
        let derivative = !matches!(a.kind, QueryKind::Shape | QueryKind::Show | QueryKind::Simplify);
        if self.options.steps && derivative {
            let lines = step_lines(&a.steps, LineStyle::Unicode);
            let steps: Vec<serde_json::Value> = a
                .steps
                .iter()
                .zip(lines)
                .map(|(s, line)| {
                    serde_json::json!({
                        "lhs": lhs_text(&s.lhs, Notation::Unicode),
                        "lhs_ascii": lhs_text(&s.lhs, Notation::Ascii),
                        "lhs_latex": lhs_latex(&s.lhs),
                        "text": print::text(&s.rhs),
                        "ascii": print::ascii(&s.rhs),
                        "latex": print::latex(&s.rhs),
                        "line": line,
                    })
                })
                .collect();
            obj["steps"] = serde_json::Value::Array(steps);
        }
        if let Some(c) = check {
            obj["check"] = serde_json::json!({
                "relative_error": c.relative_error,
                "tolerance": crate::eval::check::TOLERANCE,
                "passed": c.passed,
            });
        }
        obj
    }

    fn lhs(&self, l: &Lhs) -> String {
        match self.options.format {
            Format::Latex => lhs_latex(l),
            Format::Ascii => lhs_text(l, Notation::Ascii),
            _ => lhs_text(l, Notation::Unicode),
        }
    }

    fn render_steps(&self, steps: &[Step]) -> String {
        let style = match self.options.format {
            Format::Latex => LineStyle::Latex,
            Format::Ascii => LineStyle::Ascii,
            _ => LineStyle::Unicode,
        };
        let lines = step_lines(steps, style);
        if style == LineStyle::Latex {
            format!(
                "\\begin{{aligned}}\n{}\n\\end{{aligned}}",
                lines.iter().map(|l| l.replacen(" = ", " &= ", 1)).collect::<Vec<_>>().join(" \\\\\n")
            )
        } else {
            lines.join("\n")
        }
    }
}

/// The result of comparing a derivative with finite differences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckResult {
    /// The largest relative error.
    pub relative_error: f64,
    /// Whether it is within [`crate::eval::check::TOLERANCE`].
    pub passed: bool,
}

impl CheckResult {
    /// The result for a relative error.
    pub fn new(relative_error: f64) -> CheckResult {
        CheckResult { relative_error, passed: relative_error <= crate::eval::check::TOLERANCE }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineStyle {
    Unicode,
    Ascii,
    Latex,
}

/// One line per step: `lhs = [formula =] [vec⁻¹(previous) =] rhs`. A
/// reshape followed by a step with the same left-hand side (a gradient made
/// symmetric) is written `vec⁻¹(previous) = rhs`, so that the last line
/// alone names the answer.
fn step_lines(steps: &[Step], style: LineStyle) -> Vec<String> {
    let lhs = |l: &Lhs| match style {
        LineStyle::Latex => lhs_latex(l),
        LineStyle::Ascii => lhs_text(l, Notation::Ascii),
        LineStyle::Unicode => lhs_text(l, Notation::Unicode),
    };
    let latex = style == LineStyle::Latex;
    let mut lines = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let rhs = match style {
            LineStyle::Latex => print::latex(&s.rhs),
            LineStyle::Ascii => print::render(&s.rhs, Notation::Ascii),
            LineStyle::Unicode => print::render(&s.rhs, Notation::Unicode),
        };
        let superseded = s.reshape && steps.get(i + 1).is_some_and(|n| n.lhs == s.lhs);
        let mut parts = if superseded { vec![] } else { vec![lhs(&s.lhs)] };
        if let Some(f) = &s.formula {
            let sep = if latex { r" \, " } else { " " };
            let terms: Vec<String> = f.iter().map(|p| p.iter().map(&lhs).collect::<Vec<_>>().join(sep)).collect();
            parts.push(terms.join(" + "));
        }
        if s.reshape {
            if let Some(p) = i.checked_sub(1).map(|j| &steps[j]) {
                let inner = lhs(&p.lhs);
                parts.push(match style {
                    LineStyle::Latex => format!(r"\operatorname{{vec}}^{{-1}}\left({inner}\right)"),
                    LineStyle::Ascii => format!("unvec({inner})"),
                    LineStyle::Unicode => format!("vec⁻¹({inner})"),
                });
            }
        }
        parts.push(rhs);
        lines.push(parts.join(" = "));
    }
    lines
}

fn shape_json(s: &Shape) -> serde_json::Value {
    serde_json::json!([s.rows.to_string(), s.cols.to_string()])
}

/// A function as written, parenthesized unless it is a plain name.
fn label_of(src: &str) -> String {
    let s = src.trim();
    let balanced = |t: &str| t.chars().filter(|c| *c == '(').count() == t.chars().filter(|c| *c == ')').count();
    let plain = s.chars().all(|c| c.is_alphanumeric() || c == '_');
    let wrapped = s.starts_with('(') && s.ends_with(')') && balanced(&s[1..s.len() - 1]);
    if plain || wrapped {
        s.to_string()
    } else {
        format!("({s})")
    }
}

/// A step's left-hand side in text.
pub fn lhs_text(l: &Lhs, n: Notation) -> String {
    let (d, t) = match n {
        Notation::Unicode => ("∂", "ᵀ"),
        Notation::Ascii => ("d", "^T"),
    };
    match l {
        Lhs::Differential(f) => format!("d{f}"),
        Lhs::SecondDifferential(f) => match n {
            Notation::Unicode => format!("d²{f}"),
            Notation::Ascii => format!("d^2{f}"),
        },
        Lhs::Jacobian { f, x, vec: true } => format!("{d}{f}/{d}vec({x}){t}"),
        Lhs::Jacobian { f, x, vec: false } => format!("{d}{f}/{d}{x}{t}"),
        Lhs::Gradient { f, x } => format!("{d}{f}/{d}{x}"),
        Lhs::Hessian { f, x, vec, y } => {
            let var = |n: &str, v: bool| if v { format!("{d}vec({n})") } else { format!("{d}{n}") };
            let second = match y {
                Some((y, yv)) => var(y, *yv),
                None => var(x, *vec),
            };
            format!("{d}²{f}/{}{second}{t}", var(x, *vec))
        }
    }
}

fn lhs_latex(l: &Lhs) -> String {
    use crate::print::latex::name;
    let n = |s: &str| {
        if s.chars().all(|c| c.is_alphanumeric() || c == '_') {
            name(s, false)
        } else {
            s.to_string()
        }
    };
    match l {
        Lhs::Differential(f) => format!(r"\mathrm{{d}}{}", n(f)),
        Lhs::SecondDifferential(f) => format!(r"\mathrm{{d}}^2{}", n(f)),
        Lhs::Jacobian { f, x, vec: true } => {
            format!(r"\frac{{\partial {}}}{{\partial \operatorname{{vec}}({})^\top}}", n(f), n(x))
        }
        Lhs::Jacobian { f, x, vec: false } => {
            format!(r"\frac{{\partial {}}}{{\partial {}^\top}}", n(f), n(x))
        }
        Lhs::Gradient { f, x } => format!(r"\frac{{\partial {}}}{{\partial {}}}", n(f), n(x)),
        Lhs::Hessian { f, x, vec, y } => {
            let var = |name: &str, v: bool| {
                if v {
                    format!(r"\operatorname{{vec}}({})", n(name))
                } else {
                    n(name)
                }
            };
            let second = match y {
                Some((y, yv)) => var(y, *yv),
                None => var(x, *vec),
            };
            format!(r"\frac{{\partial^2 {}}}{{\partial {} \, \partial {second}^\top}}", n(f), var(x, *vec))
        }
    }
}
