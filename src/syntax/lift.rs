//! Derivatives inside expressions, defined first.
//!
//! `P = λ (‖∂D/∂x‖ - 1)²` runs as `g = ∂D/∂x` and then `P = λ (‖g‖ - 1)²`,
//! so the type checker, the chain rule, the numeric check and the code
//! generators only ever meet derivatives defined as values, which they
//! already differentiate, check and compute. Each lifted name is fresh
//! (never a name the script or the session uses) and says what it stands
//! for, so the output can show it.
//!
//! A Hessian times a vector, `hessian(f, x) v` or `vᵀ hessian(f, x)`, with
//! `v` constant in `x` and `x` a vector, becomes `∂(gᵀ v)/∂x` with
//! `g = ∂f/∂x`: the product at the cost of about two gradients, without
//! the Hessian (Pearlmutter's identity `H v = ∂(∇fᵀ v)/∂x`).

use crate::ast::{BinOp, DimAst, Expr, ExprKind, Ident, Postfix, QueryKind, ShapeAst, Stmt};
use crate::error::Span;
use std::collections::{BTreeSet, HashMap, HashSet};

/// How a declared variable is oriented, which decides how a
/// Hessian-vector product is written through its gradient.
#[derive(Debug, Clone, PartialEq)]
pub enum Orientation {
    /// `n×1` (or `1×1`).
    Column,
    /// `1×n`.
    Row,
    /// `m×n`, with its sizes as written.
    Matrix(DimAst, DimAst),
}

/// What the lifting needs to know of the session the script runs in.
pub struct Scope<'a> {
    /// Whether the session already has this name.
    pub taken: &'a dyn Fn(&str) -> bool,
    /// The session's definitions whose values depend on a name.
    pub dependents: &'a dyn Fn(&str) -> BTreeSet<String>,
    /// A declared matrix's orientation (`None` for other names).
    pub orientation: &'a dyn Fn(&str) -> Option<Orientation>,
}

/// The Hessian and product to define instead of a Hessian-vector product
/// whose `v` turns out not to be a vector (known only once shapes are).
#[derive(Debug, Clone)]
pub struct Fallback {
    /// `H = hessian(f, x)`.
    pub hessian: Stmt,
    /// The product through `H`: the value the lifted name stands for.
    pub product: Expr,
}

/// A script with its derivatives lifted into definitions.
#[derive(Debug, Default)]
pub struct Lifted {
    /// The statements, each lifted definition before its first use.
    pub stmts: Vec<Stmt>,
    /// Each lifted name with the text it stands for (`g` for `∂D/∂x`).
    pub meanings: HashMap<String, String>,
    /// Hessian-vector products, by lifted name, and what to define when
    /// their vector is a matrix.
    pub fallbacks: HashMap<String, Fallback>,
}

/// Lifts every derivative inside an expression into a definition of its own.
pub fn lift(stmts: Vec<Stmt>, src: &str, scope: &Scope) -> Lifted {
    let words = words(src);
    let mut cx = Lifter {
        src,
        scope,
        taken: Box::new(move |n: &str| words.contains(n)),
        chosen: HashSet::new(),
        orientation: HashMap::new(),
        mentions: HashMap::new(),
        defined: HashMap::new(),
        out: Lifted::default(),
    };
    for s in stmts {
        let s = cx.stmt(s);
        cx.note(&s);
        cx.out.stmts.push(s);
    }
    cx.out
}

/// Every word of the script, comments aside, that could be a name.
fn words(src: &str) -> HashSet<String> {
    let is_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || ('\u{391}'..='\u{3C9}').contains(&c);
    src.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(|c: char| !is_char(c)))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

struct Lifter<'a> {
    src: &'a str,
    scope: &'a Scope<'a>,
    /// Whether the script writes this word anywhere.
    taken: Box<dyn Fn(&str) -> bool>,
    chosen: HashSet<String>,
    /// Vectors the script declares.
    orientation: HashMap<String, Option<Orientation>>,
    /// The names each of the script's definitions depends on, transitively.
    mentions: HashMap<String, BTreeSet<String>>,
    /// Each derivative lifted so far, by what it asks, so the same one
    /// written twice is one name.
    defined: HashMap<String, String>,
    out: Lifted,
}

impl Lifter<'_> {
    fn stmt(&mut self, s: Stmt) -> Stmt {
        match s {
            Stmt::Def { name, body } => Stmt::Def { name, body: self.expr(body) },
            Stmt::DerivativeDef { name, query } => Stmt::DerivativeDef { name, query: Box::new(self.stmt(*query)) },
            Stmt::Query { kind, expr, wrt, wrt2, span } => Stmt::Query { kind, expr: self.expr(expr), wrt, wrt2, span },
            Stmt::Gradients { expr, vars, span } => Stmt::Gradients { expr: self.expr(expr), vars, span },
            s @ (Stmt::Decl { .. } | Stmt::FnDecl { .. }) => s,
        }
    }

    /// Notes what a statement declares or defines, for the statements after it.
    fn note(&mut self, s: &Stmt) {
        match s {
            Stmt::Decl { names, shape, .. } => {
                let o = match shape {
                    ShapeAst::Scalar | ShapeAst::Matrix(_, None) | ShapeAst::Matrix(_, Some(DimAst::Num(1))) => {
                        Some(Orientation::Column)
                    }
                    ShapeAst::Matrix(DimAst::Num(1), Some(_)) => Some(Orientation::Row),
                    ShapeAst::Matrix(m, Some(n)) => Some(Orientation::Matrix(m.clone(), n.clone())),
                };
                for n in names {
                    self.orientation.insert(n.name.clone(), o.clone());
                }
            }
            Stmt::Def { name, body } => {
                let m = self.closure(body);
                self.mentions.insert(name.name.clone(), m);
            }
            Stmt::DerivativeDef { name, query } => {
                if let Stmt::Query { expr, wrt, wrt2, .. } = &**query {
                    let mut m = self.closure(expr);
                    m.extend(wrt.iter().chain(wrt2).map(|w| w.name.clone()));
                    self.mentions.insert(name.name.clone(), m);
                }
            }
            _ => {}
        }
    }

    /// The names `e` mentions and, through the script's definitions, depends on.
    fn closure(&self, e: &Expr) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        names_in(e, &mut names);
        let through: Vec<String> =
            names.iter().filter_map(|n| self.mentions.get(n)).flat_map(|m| m.iter().cloned()).collect();
        names.extend(through);
        names
    }

    /// Whether `e`'s value may change with `x`.
    fn depends_on(&self, e: &Expr, x: &str) -> bool {
        let names = self.closure(e);
        let dependents = (self.scope.dependents)(x);
        names.iter().any(|n| n == x || dependents.contains(n))
    }

    fn orientation_of(&self, x: &str) -> Option<Orientation> {
        match self.orientation.get(x) {
            Some(o) => o.clone(),
            None => (self.scope.orientation)(x),
        }
    }

    /// The first of `base`, `base2`, `base3`, … that nothing uses.
    fn fresh(&mut self, base: &str, span: Span) -> Ident {
        let name = std::iter::once(base.to_string())
            .chain((2..).map(|k| format!("{base}{k}")))
            .find(|n| !(self.taken)(n) && !(self.scope.taken)(n) && !self.chosen.contains(n))
            .expect("a free name");
        self.chosen.insert(name.clone());
        Ident { name, span }
    }

    fn text(&self, span: Span) -> &str {
        self.src.get(span.start..span.end).unwrap_or("")
    }

    /// Defines `query` under a fresh name and returns the name (the name
    /// already given to the same derivative, if there is one).
    fn define(&mut self, base: &str, query: Stmt, meaning: String, span: Span) -> Expr {
        let key = match &query {
            Stmt::Query { kind, expr, wrt, wrt2, .. } => {
                let text: String = self.text(expr.span).split_whitespace().collect();
                let var = |w: &Option<Ident>| w.as_ref().map_or(String::new(), |w| w.name.clone());
                format!("{kind:?} {text} {} {}", var(wrt), var(wrt2))
            }
            _ => String::new(),
        };
        if let Some(name) = self.defined.get(&key) {
            return Expr { kind: ExprKind::Name(name.clone()), span };
        }
        let name = self.fresh(base, span);
        self.defined.insert(key, name.name.clone());
        self.out.meanings.insert(name.name.clone(), meaning);
        let s = Stmt::DerivativeDef { name: name.clone(), query: Box::new(query) };
        self.note(&s);
        self.out.stmts.push(s);
        Expr { kind: ExprKind::Name(name.name), span }
    }

    fn expr(&mut self, e: Expr) -> Expr {
        let span = e.span;
        let boxed = |x: Expr| Box::new(x);
        let kind = match e.kind {
            ExprKind::Derivative(q) => {
                let q = self.stmt(*q);
                let base = match &q {
                    Stmt::Query { kind: QueryKind::Hessian, .. } => "H",
                    Stmt::Query { kind: QueryKind::Jacobian, .. } => "J",
                    _ => "g",
                };
                let meaning = self.text(span).to_string();
                return self.define(base, q, meaning, span);
            }
            ExprKind::Binary(BinOp::Mul, a, b) => {
                if let Some(p) = self.product(&a, &b, span) {
                    return p;
                }
                ExprKind::Binary(BinOp::Mul, boxed(self.expr(*a)), boxed(self.expr(*b)))
            }
            ExprKind::Binary(op, a, b) => ExprKind::Binary(op, boxed(self.expr(*a)), boxed(self.expr(*b))),
            ExprKind::Neg(a) => ExprKind::Neg(boxed(self.expr(*a))),
            ExprKind::Postfix(a, p) => ExprKind::Postfix(boxed(self.expr(*a)), p),
            ExprKind::Norm(a) => ExprKind::Norm(boxed(self.expr(*a))),
            ExprKind::Paren(a) => ExprKind::Paren(boxed(self.expr(*a))),
            ExprKind::Call { name, primes, inverse, args } => {
                ExprKind::Call { name, primes, inverse, args: args.into_iter().map(|a| self.expr(a)).collect() }
            }
            k @ (ExprKind::Num(_) | ExprKind::Name(_) | ExprKind::Identity(_)) => k,
        };
        Expr { kind, span }
    }

    /// `hessian(f, x) v` or `vᵀ hessian(f, x)` as `∂(gᵀ v)/∂x` with
    /// `g = ∂f/∂x`, when `x` is a vector and `v` does not depend on it.
    fn product(&mut self, a: &Expr, b: &Expr, span: Span) -> Option<Expr> {
        let (hessian, v, right) = match (hessian_of(a), hessian_of(b)) {
            (Some(h), _) => (h, b, true),
            (None, Some(h)) => (h, a, false),
            _ => return None,
        };
        let Stmt::Query { expr: f, wrt: Some(x), span: h_span, .. } = hessian else { return None };
        let orientation = self.orientation_of(&x.name)?;
        if matches!(v.kind, ExprKind::Num(_)) || self.depends_on(v, &x.name) {
            return None;
        }
        let f = self.expr(f.clone());
        let f_text = self.text(f.span).to_string();
        let f_text = if matches!(f.kind, ExprKind::Name(_)) { f_text } else { format!("({f_text})") };
        let gradient =
            Stmt::Query { kind: QueryKind::Gradient, expr: f.clone(), wrt: Some(x.clone()), wrt2: None, span: *h_span };
        let g = self.define("g", gradient, format!("∂{f_text}/∂{}", x.name), *h_span);
        let v = self.expr(v.clone());
        let t = |e: Expr| Expr { span: e.span, kind: ExprKind::Postfix(Box::new(e), Postfix::Transpose) };
        let mul = |a: Expr, b: Expr| Expr { span, kind: ExprKind::Binary(BinOp::Mul, Box::new(a), Box::new(b)) };
        let call = |f: &str, args: Vec<Expr>| Expr {
            span,
            kind: ExprKind::Call { name: Ident { name: f.to_string(), span }, primes: 0, inverse: false, args },
        };
        // H is symmetric: H v = ∂(gᵀ v)/∂x and vᵀ H = (H v)ᵀ for a column x;
        // for a row x the gradient is a row and the transposes swap; for a
        // matrix X, H v = vec(∂ sum(G ∘ unvec(v))/∂X), in the `vec` order in force.
        let (function, transposed, vectorised) = match (&orientation, right) {
            (Orientation::Column, true) => (mul(t(g), v.clone()), false, false),
            (Orientation::Column, false) => (mul(v.clone(), g), true, false),
            (Orientation::Row, true) => (mul(g, v.clone()), true, false),
            (Orientation::Row, false) => (mul(g, t(v.clone())), false, false),
            (Orientation::Matrix(m, n), _) => {
                let size = |d: &DimAst| size(d, span);
                let column = if right { v.clone() } else { t(v.clone()) };
                let hadamard = Expr {
                    span,
                    kind: ExprKind::Binary(
                        BinOp::Hadamard,
                        Box::new(g),
                        Box::new(call("unvec", vec![column, size(m), size(n)])),
                    ),
                };
                (call("sum", vec![hadamard]), !right, true)
            }
        };
        let query = Stmt::Query { kind: QueryKind::Gradient, expr: function, wrt: Some(x.clone()), wrt2: None, span };
        let text = self.text(span).to_string();
        let meaning = match (transposed, vectorised) {
            (_, true) => format!("unvec({text})"),
            (true, false) => format!("({text})ᵀ"),
            (false, false) => text,
        };
        let name = self.define("Hv", query, meaning, span);
        let name = if vectorised { call("vec", vec![name]) } else { name };
        // If `v` is a matrix, the product is the Hessian's, defined as such.
        let h_name = self.fresh("H", *h_span);
        let h = Expr { kind: ExprKind::Name(h_name.name.clone()), span: *h_span };
        let product = if right { mul(h, v) } else { mul(v, h) };
        let hessian = Stmt::DerivativeDef {
            name: h_name,
            query: Box::new(Stmt::Query {
                kind: QueryKind::Hessian,
                expr: f,
                wrt: Some(x.clone()),
                wrt2: None,
                span: *h_span,
            }),
        };
        let product = match (transposed, &orientation) {
            (_, Orientation::Matrix(m, n)) => {
                let size = |d: &DimAst| size(d, span);
                let column = if transposed { t(product) } else { product };
                call("unvec", vec![column, size(m), size(n)])
            }
            (true, _) => t(product),
            (false, _) => product,
        };
        let lifted = match &name.kind {
            ExprKind::Call { args, .. } => &args[0],
            _ => &name,
        };
        let ExprKind::Name(n) = &lifted.kind else { unreachable!("a lifted name") };
        self.out.fallbacks.insert(n.clone(), Fallback { hessian, product });
        Some(if transposed { t(name) } else { name })
    }
}

/// A size as an expression: its value.
fn size(d: &DimAst, span: Span) -> Expr {
    let kind = match d {
        DimAst::Num(k) => ExprKind::Num(crate::ir::rat(i64::try_from(*k).unwrap_or(i64::MAX))),
        DimAst::Sym(s) => ExprKind::Name(s.clone()),
    };
    Expr { kind, span }
}

/// The `hessian(f, x)` query an operand is, brackets aside (not a mixed one).
fn hessian_of(e: &Expr) -> Option<&Stmt> {
    match &e.kind {
        ExprKind::Paren(inner) => hessian_of(inner),
        ExprKind::Derivative(q) => match &**q {
            s @ Stmt::Query { kind: QueryKind::Hessian, wrt2: None, .. } => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// The names an expression mentions, inside derivatives too.
fn names_in(e: &Expr, out: &mut BTreeSet<String>) {
    match &e.kind {
        ExprKind::Name(n) => {
            out.insert(n.clone());
        }
        ExprKind::Num(_) | ExprKind::Identity(_) => {}
        ExprKind::Neg(a) | ExprKind::Postfix(a, _) | ExprKind::Norm(a) | ExprKind::Paren(a) => names_in(a, out),
        ExprKind::Binary(_, a, b) => {
            names_in(a, out);
            names_in(b, out);
        }
        ExprKind::Call { name, args, .. } => {
            out.insert(name.name.clone());
            args.iter().for_each(|a| names_in(a, out));
        }
        ExprKind::Derivative(q) => {
            if let Stmt::Query { expr, wrt, wrt2, .. } = &**q {
                names_in(expr, out);
                out.extend(wrt.iter().chain(wrt2).map(|w| w.name.clone()));
            }
        }
    }
}
