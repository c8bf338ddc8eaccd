//! A session: declarations, definitions and queries, in order.
//!
//! Each statement either succeeds or leaves the session as it was, so a REPL
//! can go on after an error.

use crate::ast::{QueryKind, ShapeAst, Stmt};
use crate::conventions::Conventions;
pub use crate::derive::Answer;
use crate::derive::{self, Query, Sweeps};
use crate::error::{Error, Result};
use crate::ir::VecOrder;
pub use crate::render::{CheckResult, Format};
use crate::render::{Renderer, Shown};
use crate::shape::{Dim, Shape};
use crate::typeck::{Binding, Env};
use std::collections::BTreeSet;

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
#[allow(clippy::large_enum_variant)] // one per statement: boxing buys nothing
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
    /// The answer to `∂F/∂(X, Y, …)`: a backward program.
    Backward(derive::Backward),
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
    /// Reverse sweeps of scalar functions, shared by their gradient queries.
    sweeps: Sweeps,
    /// Names given to derivatives used inside expressions, with the text
    /// each stands for (`g` for `∂D/∂x`).
    meanings: std::collections::HashMap<String, String>,
    /// Hessian-vector products by lifted name, with what to define if
    /// their vector turns out to be a matrix.
    fallbacks: std::collections::HashMap<String, crate::syntax::lift::Fallback>,
    /// The named adjoints that the values of lifted derivatives use.
    hidden: BTreeSet<String>,
}

impl Session {
    /// An empty session.
    pub fn new(options: Options) -> Session {
        Session { options, ..Session::default() }
    }

    /// A Python module with one NumPy function per answer, in order (see
    /// [`crate::codegen::numpy`]), or an error when an answer's code would
    /// build an array too large to allocate.
    ///
    /// ```
    /// let mut s = matdiff::Session::default();
    /// let answers = s.answers("x: n; A: n x n; grad(x^T A x, x)").unwrap();
    /// let py = s.numpy(&answers).unwrap();
    /// assert!(py.contains("def grad_q1_x(A, x):"));
    /// ```
    pub fn numpy(&self, answers: &[Answer]) -> Result<String> {
        self.code(&crate::codegen::numpy::NumPy, answers)
    }

    /// A Python module with one NumPy function per item: an answer, or a
    /// backward program (`value_and_grad_L`, see [`crate::codegen::functions_of`]).
    pub fn numpy_of(&self, items: &[crate::codegen::Item]) -> Result<String> {
        self.code_of(&crate::codegen::numpy::NumPy, items)
    }

    /// A Python module with one function per answer, in order, written for
    /// a backend: NumPy, JAX or PyTorch ([`Format::backend`]). Every
    /// backend's function has the same name and parameters.
    ///
    /// ```
    /// use matdiff::session::{Format, Session};
    /// let mut s = Session::default();
    /// let answers = s.answers("x: n; A: n x n; grad(x^T A x, x)").unwrap();
    /// let py = s.code(Format::Torch.backend().unwrap(), &answers).unwrap();
    /// assert!(py.starts_with("import torch\n") && py.contains("def grad_q1_x(A, x):"));
    /// ```
    pub fn code(&self, backend: &dyn crate::codegen::Backend, answers: &[Answer]) -> Result<String> {
        crate::codegen::module(backend, &self.env, &crate::codegen::functions(&self.env, answers))
    }

    /// A Python module with one function per item (an answer, or a backward
    /// program, `value_and_grad_L`), written for a backend.
    pub fn code_of(&self, backend: &dyn crate::codegen::Backend, items: &[crate::codegen::Item]) -> Result<String> {
        crate::codegen::module(backend, &self.env, &crate::codegen::functions_of(&self.env, items))
    }

    /// Changes the `vec` order for the statements that follow.
    pub fn set_vec_order(&mut self, order: VecOrder) {
        self.options.conventions.order = order;
    }

    /// Parses a script and notes which names its derivative queries
    /// differentiate with respect to (see [`Session::exec`] for `d(F)`).
    pub fn prepare(&mut self, src: &str) -> Result<Vec<Stmt>> {
        use crate::syntax::lift::{lift, Orientation, Scope};
        let stmts = crate::syntax::parse(src)?;
        let env = &self.env;
        let dim = |d: &Dim| match d.as_num() {
            Some(k) => crate::ast::DimAst::Num(k),
            None => crate::ast::DimAst::Sym(d.to_string()),
        };
        let orientation = |x: &str| match env.names.get(x) {
            Some((Binding::Matrix { shape, .. }, _)) if shape.cols.is_one() => Some(Orientation::Column),
            Some((Binding::Matrix { shape, .. }, _)) if shape.rows.is_one() => Some(Orientation::Row),
            Some((Binding::Matrix { shape, .. }, _)) => Some(Orientation::Matrix(dim(&shape.rows), dim(&shape.cols))),
            _ => None,
        };
        let scope = Scope {
            taken: &|n: &str| env.names.contains_key(n),
            dependents: &|x: &str| self.dependents([x.to_string()].into()),
            orientation: &orientation,
        };
        let lifted = lift(stmts, src, &scope);
        let stmts = lifted.stmts;
        self.meanings.extend(lifted.meanings);
        self.fallbacks.extend(lifted.fallbacks);
        for s in &stmts {
            let s = match s {
                Stmt::DerivativeDef { query, .. } => &**query,
                s => s,
            };
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
            .flat_map(|o| match o {
                Outcome::Answer(a) => vec![a],
                Outcome::Backward(b) => b.gradients,
                _ => vec![],
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
            Stmt::Def { name, .. } | Stmt::DerivativeDef { name, .. } => vec![name.name.as_str()],
            Stmt::Query { .. } | Stmt::Gradients { .. } => vec![],
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
                let power_terms = self.env.power_terms(&t);
                self.env.names.insert(
                    name.name.clone(),
                    (Binding::Def { body: t, written: Some(written), derived: None, power_terms }, name.span),
                );
                self.env.defs.push(name.name.clone());
                Ok(Outcome::Defined { name: name.name.clone(), shape })
            }
            Stmt::DerivativeDef { name, query } if self.fallbacks.contains_key(&name.name) => {
                // `hessian(f, x) v` as `∂(gᵀ v)/∂x` needs a vector `v`; with a
                // matrix, the product is the Hessian's.
                let Stmt::Query { expr, .. } = &**query else { unreachable!("a lifted query") };
                let scalar = self
                    .env
                    .check_written(expr, self.options.conventions.order)
                    .is_ok_and(|(t, _)| t.shape.is_scalar());
                if scalar {
                    return self.define_derivative(name, query, src);
                }
                let fallback = self.fallbacks[&name.name].clone();
                let Stmt::DerivativeDef { name: h, .. } = &fallback.hessian else { unreachable!("a Hessian") };
                let h = h.name.clone();
                self.exec(&fallback.hessian, src)?;
                let out = self.exec(&Stmt::Def { name: name.clone(), body: fallback.product }, src);
                if out.is_err() {
                    self.env.names.remove(&h);
                    self.env.defs.retain(|d| *d != h);
                }
                out
            }
            Stmt::DerivativeDef { name, query } => self.define_derivative(name, query, src),
            Stmt::Gradients { expr, vars, span } => {
                self.targets.extend(vars.iter().map(|w| w.name.clone()));
                let (typed, written) = self.env.check_written(expr, self.options.conventions.order)?;
                let label = label_of(&src[expr.span.start..expr.span.end]);
                let cx = derive::Context {
                    env: &self.env,
                    settings: self.settings(),
                    varies: &|_| true,
                    sweeps: &mut self.sweeps,
                };
                let f = derive::Function { expr: typed, written, label };
                derive::backward(cx, f, vars, *span).map(Outcome::Backward)
            }
            Stmt::Query { kind, expr, wrt, wrt2, span } => {
                self.targets.extend(wrt.iter().chain(wrt2).map(|w| w.name.clone()));
                let query = Query::new(*kind, wrt.as_ref(), wrt2.as_ref());
                let (typed, written) = self.env.check_written(expr, self.options.conventions.order)?;
                // A derivative shown, simplified or sized shows its value.
                let typed = if query.is_derivative() { typed } else { self.inline_lifted(typed) };
                let label = label_of(&src[expr.span.start..expr.span.end]);
                let varying = match kind {
                    QueryKind::Differential | QueryKind::SecondDifferential | QueryKind::ThirdDifferential => {
                        self.varying()
                    }
                    _ => BTreeSet::new(),
                };
                let all = self.targets.is_empty();
                let cx = derive::Context {
                    env: &self.env,
                    settings: self.settings(),
                    varies: &|n: &str| all || varying.contains(n),
                    sweeps: &mut self.sweeps,
                };
                let f = derive::Function { expr: typed, written, label };
                derive::answer(cx, &query, f, *span).map(Outcome::Answer)
            }
        }
    }

    /// Defines a derivative as a value: `g = ∂f/∂x`.
    fn define_derivative(&mut self, name: &crate::ast::Ident, query: &Stmt, src: &str) -> Result<Outcome> {
        self.env.check_new(name, src)?;
        let Outcome::Answer(a) = self.exec_inner(query, src)? else { unreachable!("a derivative query answers") };
        let Stmt::Query { kind, wrt, wrt2, .. } = query else { unreachable!("the parser makes queries") };
        // The answer's named adjoints are definitions its value uses.
        for (n, body) in &a.adjoints {
            if !self.env.names.contains_key(&**n) {
                if self.meanings.contains_key(&name.name) {
                    self.hidden.insert(n.to_string());
                }
                let def = Binding::Def { body: body.clone(), written: None, derived: None, power_terms: 1 };
                self.env.names.insert(n.to_string(), (def, name.span));
                self.env.defs.push(n.to_string());
            }
        }
        let derived = crate::typeck::Derived {
            kind: *kind,
            function: std::rc::Rc::clone(&a.written),
            wrt: wrt.as_ref().map(|w| w.name.clone()).unwrap_or_default(),
            wrt2: wrt2.as_ref().map(|w| w.name.clone()),
            conventions: a.conventions,
        };
        let shape = a.expr.shape.clone();
        let power_terms = self.env.power_terms(&a.expr);
        let def = Binding::Def { body: a.expr, written: None, derived: Some(std::rc::Rc::new(derived)), power_terms };
        self.env.names.insert(name.name.clone(), (def, name.span));
        self.env.defs.push(name.name.clone());
        Ok(Outcome::Defined { name: name.name.clone(), shape })
    }

    /// Checks a derivative against central finite differences at random
    /// values: the largest relative error, or `None` for other queries.
    pub fn check(&self, a: &Answer) -> std::result::Result<Option<f64>, crate::eval::EvalError> {
        crate::eval::check::check(&self.env, a, a.conventions, 0x5eed)
    }

    /// `e` with the names given to derivatives inside expressions replaced by
    /// their values (whose own lifted names are replaced in turn).
    fn inline_lifted(&self, e: crate::ir::Expr) -> crate::ir::Expr {
        let mut e = e;
        let lifted = |n: &str| self.meanings.contains_key(n) || self.hidden.contains(n);
        for _ in 0..=self.meanings.len() + self.hidden.len() {
            if !self.meanings.keys().chain(&self.hidden).any(|n| e.mentions(n)) {
                break;
            }
            e = crate::ir::map_bottom_up(&e, &mut |x| match &x.op {
                crate::ir::Op::Var { name, .. } if lifted(name) => self.env.definition(name).cloned().unwrap_or(x),
                _ => x,
            });
        }
        e
    }

    /// Names that vary in `d(F)`: the targets and what depends on them.
    fn varying(&self) -> BTreeSet<String> {
        self.dependents(self.targets.clone())
    }

    /// `names` and the definitions whose values depend on them.
    fn dependents(&self, names: BTreeSet<String>) -> BTreeSet<String> {
        let mut v = names;
        for u in &self.env.defs {
            if let Some(body) = self.env.definition(u) {
                if v.iter().any(|t| body.mentions(t)) {
                    v.insert(u.clone());
                }
            }
        }
        v
    }

    /// How the session derives: its conventions, limits and steps.
    fn settings(&self) -> derive::Settings {
        derive::Settings {
            conventions: self.options.conventions,
            limits: self.options.limits,
            steps: self.options.steps,
        }
    }

    /// How the session renders: its format, with or without steps.
    pub fn renderer(&self) -> Renderer {
        Renderer { format: self.options.format, steps: self.options.steps }
    }

    /// Renders an outcome in the session's format (`None` for declarations,
    /// and for everything in the code formats, whose module is printed once
    /// for all answers by [`Session::code`]).
    pub fn render_outcome(&self, o: &Outcome) -> Option<String> {
        self.render_outcome_after(o, &mut Shown::new())
    }

    /// Renders an outcome after others of the same output, as the command
    /// line prints a script: adjoints and derivation lines already in
    /// `shown` are not written again.
    pub fn render_outcome_after(&self, o: &Outcome, shown: &mut Shown) -> Option<String> {
        match o {
            Outcome::Declared => None,
            _ if self.options.format.backend().is_some() => None,
            Outcome::Defined { name, shape } => match self.meanings.get(name) {
                Some(meaning) => self.renderer().lifted(name, meaning, shape),
                None => self.renderer().definition(name, shape),
            },
            Outcome::Answer(a) => Some(self.render_after(a, None, shown)),
            Outcome::Backward(b) => Some(self.renderer().backward(b, &[], shown)),
        }
    }

    /// Renders an answer in the session's format.
    pub fn render(&self, a: &Answer) -> String {
        self.render_checked(a, None)
    }

    /// Renders an answer in the session's format, with the result of its
    /// numeric check (see [`Renderer::answer`]). The code formats (NumPy,
    /// JAX, PyTorch) give the answer's module, or the reason it cannot be
    /// generated as a Python comment.
    pub fn render_checked(&self, a: &Answer, check: Option<CheckResult>) -> String {
        self.render_after(a, check, &mut Shown::new())
    }

    /// Renders an answer after others of the same output: named adjoints
    /// and derivation lines already in `shown` are not written again (see [`Renderer::answer_after`]).
    pub fn render_after(&self, a: &Answer, check: Option<CheckResult>, shown: &mut Shown) -> String {
        match self.options.format.backend() {
            Some(backend) => match self.code(backend, std::slice::from_ref(a)) {
                Ok(module) => module,
                Err(e) => format!("# {e}\n"),
            },
            None => self.renderer().answer_after(a, check, shown),
        }
    }
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
