//! Names and shapes: the surface AST to the typed IR.
//!
//! Every operator checks its operands' shapes and reports a disagreement
//! with both shapes and the offending text. The size of a bare `I` (and of a
//! broadcast `0`) is inferred from its context by unification.

use crate::ast::{self, BinOp, DimAst, ExprKind, Postfix};
use crate::error::{Error, Result, Span};
use crate::ir::{self, Expr, Func, VecOrder};
use crate::shape::{Dim, Shape, Unifier};
use num_traits::Zero;
use std::collections::{BTreeMap, HashMap};

/// What a name stands for.
#[derive(Debug, Clone)]
pub enum Binding {
    /// A declared matrix.
    Matrix {
        /// Its shape.
        shape: Shape,
        /// Declared symmetric.
        symmetric: bool,
    },
    /// A defined name and its typed definition.
    Def {
        /// The definition.
        body: Expr,
        /// The definition as written, for the reference evaluator; `None`
        /// for the names an answer introduces (adjoints of a backward
        /// program) and for derivatives.
        written: Option<std::rc::Rc<Written>>,
        /// For a derivative defined as a value (`g = ∂f/∂x`): what it is the
        /// derivative of, which the reference evaluator differentiates
        /// numerically.
        derived: Option<std::rc::Rc<Derived>>,
        /// How many terms its differential expands a matrix power into,
        /// through the definitions it uses ([`crate::ir::power_terms`]).
        power_terms: u64,
    },
    /// A declared scalar function.
    Func,
}

/// An expression as written, with what typing inferred that the text does
/// not say: the size of each bare `I` and the `vec` order in force. The
/// reference evaluator ([`crate::eval::reference`]) reads this, not the typed
/// IR, so that a check does not share the code it checks.
#[derive(Debug, Clone)]
pub struct Written {
    /// The expression.
    pub expr: ast::Expr,
    /// The inferred size of each bare `I`, by its span.
    pub identities: std::collections::HashMap<Span, Dim>,
    /// The `vec` order in force when it was typed.
    pub order: VecOrder,
}

/// A derivative defined as a value: `g = ∂f/∂x`, `H = hessian(f, x)`.
#[derive(Debug, Clone)]
pub struct Derived {
    /// Which derivative.
    pub kind: ast::QueryKind,
    /// The function, as written.
    pub function: std::rc::Rc<Written>,
    /// The variable.
    pub wrt: String,
    /// The second variable of a mixed Hessian.
    pub wrt2: Option<String>,
    /// The conventions it was derived under (layout and `vec` order).
    pub conventions: crate::conventions::Conventions,
}

/// Declarations and definitions in force.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Every name, with where it was introduced.
    pub names: BTreeMap<String, (Binding, Span)>,
    /// Defined names in the order they were defined.
    pub defs: Vec<String>,
}

/// Names a user may not declare.
pub const RESERVED: &[&str] = &[
    "I",
    "tr",
    "det",
    "logdet",
    "diag",
    "vec",
    "unvec",
    "sum",
    "norm",
    "inv",
    "kron",
    "d",
    "grad",
    "jacobian",
    "hessian",
    "simplify",
    "shape",
    "ones",
    "K_",
    "scalar",
    "symmetric",
];

impl Env {
    /// The typed expression a name stands for (a leaf carrying its shape).
    pub fn leaf(&self, name: &str) -> Option<Expr> {
        match &self.names.get(name)?.0 {
            Binding::Matrix { shape, symmetric } => Some(ir::var(name, shape.clone(), *symmetric)),
            Binding::Def { body, .. } => Some(ir::var(name, body.shape.clone(), false)),
            Binding::Func => None,
        }
    }

    /// The definition of a defined name.
    pub fn definition(&self, name: &str) -> Option<&Expr> {
        match &self.names.get(name)?.0 {
            Binding::Def { body, .. } => Some(body),
            _ => None,
        }
    }

    /// Checks that a name may be introduced here.
    pub fn check_new(&self, id: &ast::Ident, src: &str) -> Result<()> {
        if RESERVED.contains(&id.name.as_str()) || crate::functions::lookup(&id.name).is_some() {
            return Err(Error::name(
                id.span,
                format!("`{}` is a built-in name and cannot be redefined", id.name),
                "built-in",
            )
            .with_help("choose another name"));
        }
        if let Some((binding, at)) = self.names.get(&id.name) {
            let how = match binding {
                Binding::Matrix { .. } => "declared",
                Binding::Def { .. } => "defined",
                Binding::Func => "declared as a function",
            };
            // The first use may be in another script or an earlier REPL input.
            let same_text = at.start < id.span.start && src.get(at.start..at.end) == Some(id.name.as_str());
            let place = if same_text { format!(" on line {}", at.line_col(src).0) } else { String::new() };
            return Err(Error::name(id.span, format!("`{}` is already {how}{place}", id.name), "used again here")
                .with_help("each name is declared or defined once; choose a new name"));
        }
        Ok(())
    }

    /// The definition of a defined name, as written.
    pub fn written(&self, name: &str) -> Option<&Written> {
        match &self.names.get(name)?.0 {
            Binding::Def { written, .. } => written.as_deref(),
            _ => None,
        }
    }

    /// This environment with `defs` defined after its own definitions: the
    /// names an answer introduces (`δd2` of a backward program), so that
    /// the answer can be evaluated, typed and turned into code.
    pub fn with_definitions(&self, defs: &[(ir::Name, Expr)]) -> Env {
        let mut env = self.clone();
        for (name, body) in defs {
            let def = Binding::Def { body: body.clone(), written: None, derived: None, power_terms: 1 };
            env.names.insert(name.to_string(), (def, Span::default()));
            env.defs.push(name.to_string());
        }
        env
    }

    /// How many terms the differential of `e` expands a matrix power into,
    /// through definitions: the most of `e`'s own and of every defined name
    /// it uses (each definition's count is kept when it is defined).
    pub fn power_terms(&self, e: &Expr) -> u64 {
        let mut names = Vec::new();
        e.var_names(&mut names);
        names
            .iter()
            .filter_map(|n| match self.names.get(&**n) {
                Some((Binding::Def { power_terms, .. }, _)) => Some(*power_terms),
                _ => None,
            })
            .fold(ir::power_terms(e), u64::max)
    }

    /// Whether `name` is a size: a symbol in a declared matrix's shape that
    /// names nothing else. Used in an expression, a size is its value.
    pub fn is_size(&self, name: &str) -> bool {
        !matches!(self.names.get(name), Some((Binding::Def { .. } | Binding::Func, _)))
            && self.names.values().any(|(b, _)| match b {
                Binding::Matrix { shape, .. } => shape.rows.symbols().chain(shape.cols.symbols()).any(|s| s == name),
                _ => false,
            })
    }

    /// Types an expression, and records it as written.
    ///
    /// Typing runs twice when the text has a bare `I`: the first pass infers
    /// every size by unification, the second builds the IR with those sizes
    /// known, so that no constructor ever decides on a size still unknown
    /// (an `I ⊗ A` inside a product is never mistaken for a scale).
    pub fn check_written(&self, e: &ast::Expr, order: VecOrder) -> Result<(Expr, Written)> {
        let mut cx = Checker::new(self, order, None);
        let t = cx.expr(e)?;
        let written = |identities| Written { expr: e.clone(), identities, order };
        if cx.uni.is_empty() {
            return Ok((t, written(HashMap::new())));
        }
        if !cx.uni.finish() {
            return Err(Error::shape(e.span, "the sizes here cannot all agree", "inconsistent sizes"));
        }
        let mut pinned = HashMap::new();
        for (d, span) in &cx.idents {
            let d = cx.uni.resolve(d);
            if d.has_vars() {
                return Err(Error::shape(*span, "cannot infer the size of this identity", "size unknown")
                    .with_help("write the size, as in I_n or I_3"));
            }
            pinned.insert(*span, d);
        }
        let t = Checker::new(self, order, Some(&pinned)).expr(e)?;
        debug_assert!(!t.shape.has_vars());
        Ok((t, written(pinned)))
    }

    /// Types an expression, with `vec` stacking in the given order.
    pub fn check(&self, e: &ast::Expr, order: VecOrder) -> Result<Expr> {
        Ok(self.check_written(e, order)?.0)
    }
}

struct Checker<'a> {
    env: &'a Env,
    /// The `vec` order in force.
    order: VecOrder,
    uni: Unifier,
    /// Inferred sizes of bare `I`, to report if they stay unknown.
    idents: Vec<(Dim, Span)>,
    /// The sizes of bare `I`s, once inferred (the second pass).
    pinned: Option<&'a HashMap<Span, Dim>>,
}

/// Every name the language gives a meaning to: operations, query words
/// and the built-in functions of [`crate::functions`] (for completion).
pub fn language_names() -> impl Iterator<Item = &'static str> {
    CALLABLE.iter().chain(QUERIES).copied().chain(crate::functions::names())
}

/// Built-in operations written as calls (the table's functions aside).
const CALLABLE: &[&str] = &["tr", "det", "logdet", "diag", "vec", "unvec", "sum", "norm", "inv", "kron", "ones"];
/// Query keywords.
const QUERIES: &[&str] = &["grad", "jacobian", "hessian", "simplify", "shape"];

/// An operand's transpose, in words: `` `bᵀ` `` for a name.
fn what_t(e: &ast::Expr, side: &str) -> String {
    match what(e, "") {
        s if s.is_empty() => format!("the transpose of the {side}"),
        s => format!("{}ᵀ`", s.trim_end_matches('`')),
    }
}

/// What an operand is, in words: its name if it has one.
fn what(e: &ast::Expr, default: &str) -> String {
    match &e.kind {
        ExprKind::Name(n) => format!("`{n}`"),
        ExprKind::Identity(_) => "`I`".into(),
        ExprKind::Paren(x) if matches!(x.kind, ExprKind::Name(_)) => what(x, default),
        _ => default.into(),
    }
}

fn describe(e: &ast::Expr, src_shape: &Shape) -> String {
    format!("{} is {src_shape}", what(e, "this expression"))
}

/// `n columns`, `1 row`.
fn count(d: &crate::shape::Dim, one: &str, many: &str) -> String {
    if d.is_one() {
        format!("1 {one}")
    } else {
        format!("{d} {many}")
    }
}

impl<'a> Checker<'a> {
    fn new(env: &'a Env, order: VecOrder, pinned: Option<&'a HashMap<Span, Dim>>) -> Checker<'a> {
        Checker { env, order, uni: Unifier::default(), idents: Vec::new(), pinned }
    }

    fn zonk(&self, e: Expr) -> Expr {
        if self.uni.is_empty() {
            return e;
        }
        self.zonk_node(&e)
    }

    /// [`Checker::zonk`] of one node. Mid-pass, sizes unified only as far as
    /// they can be so far may resolve a sum's or an elementwise operation's
    /// operands to unequal shapes; such a node is left as it is, and the
    /// unifier's final check reports the conflict.
    fn zonk_node(&self, e: &Expr) -> Expr {
        let kids: Vec<Expr> = e.op.children().into_iter().map(|c| self.zonk_node(c)).collect();
        let elementwise = matches!(e.op, ir::Op::Add(_) | ir::Op::Hadamard(..) | ir::Op::HadamardDiv(..));
        let mut fixed = kids.iter().map(|k| &k.shape).filter(|s| !s.has_vars());
        if elementwise && fixed.next().is_some_and(|first| fixed.any(|s| s != first)) {
            return e.clone();
        }
        let same = kids.iter().zip(e.op.children()).all(|(a, b)| std::ptr::eq(a, b) || a == b);
        let n = if same { e.clone() } else { ir::rebuild(e, kids) };
        match &n.op {
            ir::Op::Identity if n.shape.has_vars() => ir::identity(self.uni.resolve(&n.shape.rows)),
            ir::Op::Zero if n.shape.has_vars() => ir::zero(self.uni.resolve_shape(&n.shape)),
            ir::Op::Ones if n.shape.has_vars() => ir::ones(self.uni.resolve_shape(&n.shape)),
            _ => n,
        }
    }

    fn settle(&self, e: Expr) -> Expr {
        if e.shape.has_vars() {
            self.zonk(e)
        } else {
            e
        }
    }

    fn dim(&self, d: &DimAst) -> Dim {
        match d {
            DimAst::Num(n) => Dim::num(*n),
            DimAst::Sym(s) => Dim::sym(s),
        }
    }

    fn same_shape(&mut self, a: &Expr, b: &Expr) -> bool {
        self.uni.unify(&a.shape.rows, &b.shape.rows) && self.uni.unify(&a.shape.cols, &b.shape.cols)
    }

    /// Brings the operands of `+ - ∘ ./` to one shape, the one rule of
    /// broadcasting (SPEC section 5): a 1×1 side stands for itself in every
    /// entry of the other's shape; a `1×n` row against `m×n` repeats `m` times
    /// (`ones(m, 1) r`), an `m×1` column against `m×n` repeats `n` times
    /// (`c ones(1, n)`). Only a literal 1 broadcasts. Broadcasting is written
    /// into the IR as those products, so every later stage (derivatives,
    /// which then sum over the repeated axis; simplification; evaluation;
    /// code) sees operands of equal shapes and needs no rule of its own.
    /// Returns `None` when the shapes cannot be brought together.
    fn broadcast(&mut self, op: BinOp, ta: Expr, tb: Expr) -> Option<(Expr, Expr)> {
        let (sa, sb) = (self.uni.resolve_shape(&ta.shape), self.uni.resolve_shape(&tb.shape));
        let elementwise = matches!(op, BinOp::Hadamard | BinOp::HadamardDiv);
        // A 1×1 side: `∘` and `./` scale or divide (the IR constructors know
        // how); `+` and `-` need the other side's shape in full.
        let spread = |x: Expr, to: &Shape| {
            if elementwise {
                x
            } else if x.is_zero() {
                ir::zero(to.clone())
            } else {
                ir::scalar_mul(x, ir::ones(to.clone()))
            }
        };
        if sa == sb {
            return Some((ta, tb));
        }
        if sa.is_scalar() {
            return Some((spread(ta, &sb), tb));
        }
        if sb.is_scalar() {
            return Some((ta, spread(tb, &sa)));
        }
        if sa.has_vars() || sb.has_vars() {
            return self.same_shape(&ta, &tb).then_some((ta, tb));
        }
        let rows = |x: Expr, m: &Dim| ir::matmul(ir::ones(Shape::new(m.clone(), Dim::one())), x);
        let cols = |x: Expr, n: &Dim| ir::matmul(x, ir::ones(Shape::new(Dim::one(), n.clone())));
        if sa.cols == sb.cols && sa.rows.is_one() {
            return Some((rows(ta, &sb.rows), tb));
        }
        if sa.cols == sb.cols && sb.rows.is_one() {
            return Some((ta, rows(tb, &sa.rows)));
        }
        if sa.rows == sb.rows && sa.cols.is_one() {
            return Some((cols(ta, &sb.cols), tb));
        }
        if sa.rows == sb.rows && sb.cols.is_one() {
            return Some((ta, cols(tb, &sa.cols)));
        }
        None
    }

    /// What would fit, when two shapes do not broadcast.
    fn broadcast_help(&self, ta: &Expr, tb: &Expr, a: &ast::Expr, b: &ast::Expr) -> Option<String> {
        let (sa, sb) = (self.uni.resolve_shape(&ta.shape), self.uni.resolve_shape(&tb.shape));
        if sa.has_vars() || sb.has_vars() {
            return None;
        }
        let fits = |x: &Shape, y: &Shape| {
            x == y
                || (x.cols == y.cols && (x.rows.is_one() || y.rows.is_one()))
                || (x.rows == y.rows && (x.cols.is_one() || y.cols.is_one()))
        };
        Some(if fits(&sa.transposed(), &sb) {
            format!("{} would fit: a transpose may be missing", what_t(a, "left side"))
        } else if fits(&sa, &sb.transposed()) {
            format!("{} would fit: a transpose may be missing", what_t(b, "right side"))
        } else {
            "besides equal shapes, only a 1×1 side, a 1×n row against m×n or an m×1 column against m×n broadcasts"
                .to_string()
        })
    }

    fn expr(&mut self, e: &ast::Expr) -> Result<Expr> {
        let t = self.expr_inner(e)?;
        let too_large = |d: &Dim| d.coef() > crate::shape::MAX_DERIVED_SIZE;
        if too_large(&t.shape.rows) || too_large(&t.shape.cols) {
            return Err(Error::limit(
                e.span,
                format!(
                    "this expression is {}, larger than matdiff handles (at most {} along a side)",
                    t.shape,
                    crate::shape::MAX_DERIVED_SIZE
                ),
            ));
        }
        Ok(self.settle(t))
    }

    fn expr_inner(&mut self, e: &ast::Expr) -> Result<Expr> {
        if matches!(e.kind, ExprKind::Call { .. } | ExprKind::Postfix(..)) {
            if let Some(product) = self.matrix_call(e) {
                return self.expr_inner(&product);
            }
        }
        match &e.kind {
            ExprKind::Num(r) => Ok(ir::num(r.clone())),
            ExprKind::Name(n) => self.name(n, e.span),
            ExprKind::Identity(None) => {
                if let Some(d) = self.pinned.and_then(|p| p.get(&e.span)) {
                    return Ok(ir::identity(d.clone()));
                }
                let n = self.uni.fresh();
                self.idents.push((n.clone(), e.span));
                Ok(ir::identity(n))
            }
            ExprKind::Identity(Some(d)) => Ok(ir::identity(self.dim(d))),
            ExprKind::Neg(x) => Ok(ir::neg(self.expr(x)?)),
            ExprKind::Paren(x) => self.expr(x),
            ExprKind::Norm(x) => Ok(ir::norm(self.expr(x)?)),
            ExprKind::Postfix(x, p) => {
                let t = self.expr(x)?;
                self.postfix(t, p, x, e.span)
            }
            ExprKind::Binary(op, a, b) => {
                let (ta, tb) = (self.expr(a)?, self.expr(b)?);
                self.binary(*op, ta, tb, a, b, e.span)
            }
            ExprKind::Call { name, primes, inverse, args } => self.call(name, *primes, *inverse, args, e.span),
            // A session defines each derivative inside an expression first
            // (`syntax::lift`) and names it; one reaches here only unlifted.
            ExprKind::Derivative(_) => {
                Err(Error::name(e.span, "a derivative must be defined before it is used", "a derivative")
                    .with_help("define it as a value, as in `g = ∂f/∂x`, then use `g`"))
            }
        }
    }

    /// `A (B)ᵀ` with a matrix `A` parses as a call `A(B)` under a postfix, but
    /// means the product `A · (B)ᵀ`; likewise `S^-1 (x)` is `S⁻¹ · (x)` and
    /// `I (x)` is `I · (x)`. Returns that product, or `None` for a real call.
    fn matrix_call(&self, e: &ast::Expr) -> Option<ast::Expr> {
        let mut chain = Vec::new();
        let mut cur = e;
        while let ExprKind::Postfix(x, p) = &cur.kind {
            chain.push((p.clone(), cur.span.end));
            cur = x;
        }
        let ExprKind::Call { name, primes, inverse, args } = &cur.kind else { return None };
        if args.len() != 1 {
            return None;
        }
        let n = name.name.as_str();
        // A size before brackets is a product too; the scan of declarations
        // that finds a size runs only for a name that is nothing else.
        let unbound =
            !self.env.names.contains_key(n) && crate::functions::lookup(n).is_none() && !CALLABLE.contains(&n);
        let kind = if self.env.leaf(n).is_some() || (*primes == 0 && unbound && self.env.is_size(n)) {
            ExprKind::Name(n.to_string())
        } else if n == "I" {
            ExprKind::Identity(None)
        } else {
            ExprKind::Identity(Some(identity_size(n.strip_prefix("I_")?)?))
        };
        let at = |kind| ast::Expr { kind, span: name.span };
        let mut lhs = at(kind);
        if primes % 2 == 1 {
            lhs = at(ExprKind::Postfix(Box::new(lhs), Postfix::Transpose));
        }
        if *inverse {
            lhs = at(ExprKind::Postfix(Box::new(lhs), Postfix::Inverse));
        }
        let open = args[0].span.start.saturating_sub(1).max(name.span.end);
        let mut rhs =
            ast::Expr { kind: ExprKind::Paren(Box::new(args[0].clone())), span: Span::new(open, cur.span.end) };
        for (p, end) in chain.into_iter().rev() {
            rhs = ast::Expr { span: Span::new(rhs.span.start, end), kind: ExprKind::Postfix(Box::new(rhs), p) };
        }
        Some(ast::Expr {
            kind: ExprKind::Binary(BinOp::Mul, Box::new(lhs), Box::new(rhs)),
            span: Span::new(cur.span.start, e.span.end),
        })
    }

    fn name(&mut self, n: &str, span: Span) -> Result<Expr> {
        if let Some(t) = self.env.leaf(n) {
            return Ok(t);
        }
        if self.env.is_size(n) {
            return Ok(ir::size(Dim::sym(n)));
        }
        if matches!(self.env.names.get(n), Some((Binding::Func, _)))
            || crate::functions::lookup(n).is_some()
            || CALLABLE.contains(&n)
        {
            return Err(Error::name(span, format!("`{n}` is a function; apply it to an argument"), "a function")
                .with_help(format!("write {n}(X)")));
        }
        if n == "d" {
            return Err(Error::name(span, "`d` is reserved for differentials", "reserved")
                .with_help("ask for a differential on its own line, as in d(L)"));
        }
        if QUERIES.contains(&n) {
            return Err(Error::name(span, format!("`{n}` is a query, not a value"), "a query")
                .with_help(format!("ask it on its own line, as in {n}(…)")));
        }
        if RESERVED.contains(&n) {
            return Err(Error::name(span, format!("`{n}` is a reserved word"), "reserved")
                .with_help("it belongs in declarations such as `f: R -> R`, `s: scalar` or `S: n x n symmetric`"));
        }
        let mut err = Error::name(span, format!("unknown name `{n}`"), "not declared or defined");
        // `df/dx`: a derivative written as a fraction of differentials.
        if let Some(f) = n.strip_prefix('d').filter(|f| self.env.names.contains_key(*f)) {
            return Err(err.with_help(format!(
                "for a derivative write ∂{f}/∂x or grad({f}, x); for the differential, d({f}) on its own line"
            )));
        }
        let close = self
            .env
            .names
            .iter()
            .filter(|(k, (b, _))| !matches!(b, Binding::Func) && plausible(k, n))
            .map(|(k, _)| k)
            .min_by_key(|k| edit_distance(k, n));
        err = match close {
            Some(k) => err.with_help(format!("did you mean `{k}`?")),
            None => err.with_help(format!("declare it first, as in `{n}: n x m`")),
        };
        Err(err)
    }

    fn binary(&mut self, op: BinOp, ta: Expr, tb: Expr, a: &ast::Expr, b: &ast::Expr, span: Span) -> Result<Expr> {
        let mismatch = |cx: &Self, verb: &str, ta: &Expr, tb: &Expr| {
            let (sa, sb) = (cx.shown(&ta.shape), cx.shown(&tb.shape));
            let side = |e: &ast::Expr, s: &str, default: &str| {
                if matches!(e.kind, ExprKind::Identity(None)) && s.contains('?') {
                    "`I` is square".to_string()
                } else {
                    format!("{} is {s}", what(e, default))
                }
            };
            Error::shape(
                span,
                format!("{verb}: {} but {}", side(a, &sa, "the left side"), side(b, &sb, "the right side")),
                format!("{sa} and {sb}"),
            )
            .with_parts(vec![(a.span, sa.clone()), (b.span, sb.clone())])
        };
        match op {
            BinOp::Add | BinOp::Sub => {
                let Some((ta, tb)) = self.broadcast(op, ta.clone(), tb.clone()) else {
                    let verb = if op == BinOp::Add {
                        "cannot add matrices of different shapes"
                    } else {
                        "cannot subtract matrices of different shapes"
                    };
                    let err = mismatch(self, verb, &ta, &tb);
                    return Err(match self.broadcast_help(&ta, &tb, a, b) {
                        Some(help) => err.with_help(help),
                        None => err,
                    });
                };
                let (ta, tb) = (self.settle(ta), self.settle(tb));
                Ok(if op == BinOp::Add { ir::add(ta, tb) } else { ir::sub(ta, tb) })
            }
            BinOp::Mul => {
                if ta.as_num().is_some() {
                    return Ok(ir::scalar_mul(ta, tb));
                }
                if tb.as_num().is_some() {
                    return Ok(ir::scalar_mul(tb, ta));
                }
                let concrete_scalar = |t: &Expr| t.shape.is_scalar();
                if concrete_scalar(&ta) && !tb.shape.rows.is_one() {
                    return Ok(ir::scalar_mul(ta, tb));
                }
                if concrete_scalar(&tb) && !ta.shape.cols.is_one() {
                    return Ok(ir::scalar_mul(tb, ta));
                }
                if !self.uni.unify(&ta.shape.cols, &tb.shape.rows) {
                    let (sa, sb) = (self.uni.resolve_shape(&ta.shape), self.uni.resolve_shape(&tb.shape));
                    let (l, r) = (what(a, "the left factor"), what(b, "the right factor"));
                    return Err(Error::shape(
                        span,
                        format!(
                            "cannot multiply {l} ({}) by {r} ({}): {l} has {} but {r} has {}",
                            self.shown(&ta.shape),
                            self.shown(&tb.shape),
                            count(&sa.cols, "column", "columns"),
                            count(&sb.rows, "row", "rows")
                        ),
                        format!("{} and {}", self.shown(&ta.shape), self.shown(&tb.shape)),
                    )
                    .with_parts(vec![(a.span, self.shown(&ta.shape)), (b.span, self.shown(&tb.shape))])
                    .with_help("a product A B needs as many columns in A as rows in B; a transpose may be missing"));
                }
                let (ta, tb) = (self.settle(ta), self.settle(tb));
                if ta.shape.has_vars() || tb.shape.has_vars() {
                    // First pass: sizes still unknown, so no simplification may
                    // decide on them; the second pass builds the real product.
                    return Ok(ir::node_matmul(ta, tb));
                }
                Ok(ir::matmul(ta, tb))
            }
            BinOp::Div => {
                if !(self.uni.unify(&tb.shape.rows, &Dim::one()) && self.uni.unify(&tb.shape.cols, &Dim::one())) {
                    let sb = self.shown(&tb.shape);
                    return Err(Error::shape(
                        span,
                        format!("`/` divides by a scalar, but {}", describe(b, &self.uni.resolve_shape(&tb.shape))),
                        format!("{sb}, not 1×1"),
                    )
                    .with_parts(vec![(b.span, format!("{sb}, not a scalar"))])
                    .with_help("for elementwise division write A ./ B; for a matrix inverse write A B^-1"));
                }
                if tb.is_zero() {
                    return Err(Error::shape(b.span, "division by zero", "this is zero"));
                }
                Ok(ir::div(ta, self.settle(tb)))
            }
            BinOp::Kron => Ok(ir::kron(ta, tb)),
            BinOp::Hadamard | BinOp::HadamardDiv => {
                let Some((ta, tb)) = self.broadcast(op, ta.clone(), tb.clone()) else {
                    let verb = if op == BinOp::Hadamard {
                        "an elementwise product needs shapes that broadcast"
                    } else {
                        "an elementwise division needs shapes that broadcast"
                    };
                    let err = mismatch(self, verb, &ta, &tb);
                    return Err(match self.broadcast_help(&ta, &tb, a, b) {
                        Some(help) => err.with_help(help),
                        None => err,
                    });
                };
                if op == BinOp::HadamardDiv && tb.is_zero() {
                    return Err(Error::shape(b.span, "division by zero", "this is zero"));
                }
                let (ta, tb) = (self.settle(ta), self.settle(tb));
                Ok(if op == BinOp::Hadamard { ir::hadamard(ta, tb) } else { ir::hadamard_div(ta, tb) })
            }
        }
    }

    fn square(&mut self, t: &Expr, x: &ast::Expr, what: &str) -> Result<()> {
        if !self.uni.unify(&t.shape.rows, &t.shape.cols) {
            let shape = self.uni.resolve_shape(&t.shape);
            let err = Error::shape(
                x.span,
                format!("{what} needs a square matrix, but {}", describe(x, &shape)),
                format!("{} is not square", self.shown(&t.shape)),
            );
            return Err(match what {
                "a matrix power" => err.with_help("for an elementwise power write X .^ k"),
                "the inverse" => err.with_help("only a square matrix has an inverse; a transpose may be missing"),
                _ => err,
            });
        }
        Ok(())
    }

    /// A shape as far as it is known, for messages.
    fn shown(&self, s: &Shape) -> String {
        self.uni.resolve_shape(s).to_string()
    }

    fn postfix(&mut self, t: Expr, p: &Postfix, x: &ast::Expr, span: Span) -> Result<Expr> {
        Ok(match p {
            Postfix::Transpose => ir::transpose(t),
            Postfix::Inverse => {
                self.square(&t, x, "the inverse")?;
                if t.is_zero() {
                    return Err(Error::shape(span, "the zero matrix has no inverse", "singular"));
                }
                ir::inverse(self.settle(t))
            }
            Postfix::Power(k) => {
                self.square(&t, x, "a matrix power")?;
                if *k < 0 && t.is_zero() {
                    return Err(Error::shape(span, "the zero matrix has no inverse", "singular"));
                }
                ir::power(self.settle(t), *k)
            }
            Postfix::HadamardPow(k) => {
                if k < &num_rational::BigRational::zero() && t.is_zero() {
                    return Err(Error::shape(
                        span,
                        "division by zero: a zero matrix to a negative power",
                        "this is zero",
                    ));
                }
                ir::hadamard_pow(t, k.clone())
            }
        })
    }

    fn size_arg(&self, a: &ast::Expr) -> Result<Dim> {
        match &a.kind {
            ExprKind::Num(r) if r.is_integer() && *r > num_rational::BigRational::zero() => {
                let max = crate::shape::MAX_SIZE;
                let too_large = || Error::limit(a.span, format!("size {r} is too large (at most {max})"));
                let n: u64 = r.to_integer().try_into().map_err(|_| too_large())?;
                if n > max {
                    return Err(too_large());
                }
                Ok(Dim::num(n))
            }
            // A product of sizes, as `ones(2 n, 1)` prints.
            ExprKind::Binary(BinOp::Mul, x, y) => Ok(self.size_arg(x)?.mul(&self.size_arg(y)?)),
            ExprKind::Paren(x) => self.size_arg(x),
            ExprKind::Name(n) if self.env.is_size(n) && self.env.leaf(n).is_none() => Ok(Dim::sym(n)),
            ExprKind::Name(n) if self.env.names.contains_key(n) || RESERVED.contains(&n.as_str()) => {
                Err(Error::name(a.span, format!("`{n}` is not a size"), "not a size")
                    .with_help("a size is a whole number or a size name such as n"))
            }
            ExprKind::Name(n) => Ok(Dim::sym(n)),
            _ => Err(Error::syntax(a.span, "expected a size (a whole number or a size name)", "not a size")),
        }
    }

    fn call(
        &mut self,
        name: &ast::Ident,
        primes: usize,
        inverse: bool,
        args: &[ast::Expr],
        span: Span,
    ) -> Result<Expr> {
        let n = name.name.as_str();
        let arity = |k: usize| -> Result<()> {
            if args.len() != k {
                let usage = match n {
                    "unvec" | "vec" => "unvec(v, rows, columns) or vec^-1(v, rows, columns)".to_string(),
                    "ones" => "ones(rows, columns)".to_string(),
                    "kron" => "kron(A, B)".to_string(),
                    _ => format!("{n}{}(X)", "'".repeat(primes)),
                };
                return Err(Error::syntax(
                    span,
                    format!("`{n}` takes {k} argument{}, found {}", if k == 1 { "" } else { "s" }, args.len()),
                    "wrong number of arguments",
                )
                .with_help(format!("write {usage}")));
            }
            Ok(())
        };
        if inverse && n != "vec" {
            return Err(Error::name(name.span, format!("`{n}^-1` is not a function"), "not a function").with_help(
                format!("for the inverse of a result write ({n}(…))^-1; for a matrix inverse write inv(X) or X^-1"),
            ));
        }
        if primes > 0
            && !matches!(self.env.names.get(n), Some((Binding::Func, _)))
            && crate::functions::lookup(n).is_none()
            && self.env.leaf(n).is_none()
        {
            return Err(Error::name(name.span, format!("unknown function `{n}`"), "not declared")
                .with_help(format!("declare it: `{n}: R -> R`")));
        }
        if (n == "vec" && inverse) || n == "unvec" {
            arity(3)?;
            let v = self.expr(&args[0])?;
            let (r, c) = (self.size_arg(&args[1])?, self.size_arg(&args[2])?);
            let shape = Shape::new(r, c);
            if !(self.uni.unify(&v.shape.rows, &shape.len()) && self.uni.unify(&v.shape.cols, &Dim::one())) {
                return Err(Error::shape(
                    args[0].span,
                    format!(
                        "vec⁻¹ to {shape} needs a column of {} entries, but {}",
                        shape.len(),
                        describe(&args[0], &v.shape)
                    ),
                    format!("{}, not {}", v.shape, Shape::new(shape.len(), Dim::one())),
                ));
            }
            return Ok(ir::unvec(self.settle(v), shape, self.order));
        }
        if n == "K_" {
            // The commutation matrix, as answers print it: K vec(A) = vec(Aᵀ) for an m×n A.
            arity(2)?;
            let (r, c) = (self.size_arg(&args[0])?, self.size_arg(&args[1])?);
            return Ok(ir::commutation(r, c, self.order));
        }
        if n == "ones" {
            arity(2)?;
            return Ok(ir::ones(Shape::new(self.size_arg(&args[0])?, self.size_arg(&args[1])?)));
        }
        if n == "kron" {
            arity(2)?;
            return Ok(ir::kron(self.expr(&args[0])?, self.expr(&args[1])?));
        }
        let one = |cx: &mut Self| -> Result<Expr> {
            arity(1)?;
            cx.expr(&args[0])
        };
        match n {
            "tr" | "det" | "logdet" | "inv" => {
                let t = one(self)?;
                let what = match n {
                    "tr" => "the trace",
                    "det" => "the determinant",
                    "logdet" => "log det",
                    _ => "the inverse",
                };
                self.square(&t, &args[0], what)?;
                let t = self.settle(t);
                return Ok(match n {
                    "tr" => ir::trace(t),
                    "det" => ir::det(t),
                    "logdet" => ir::logdet(t),
                    _ => ir::inverse(t),
                });
            }
            "diag" => {
                let t = one(self)?;
                return if t.shape.is_vector() {
                    Ok(ir::diag_mat(t))
                } else {
                    self.square(&t, &args[0], "diag of a matrix")?;
                    Ok(ir::diag_vec(self.settle(t)))
                };
            }
            "vec" => return Ok(ir::vec(one(self)?, self.order)),
            "sum" => return Ok(ir::sum(one(self)?)),
            "norm" => return Ok(ir::norm(one(self)?)),
            _ => {}
        }
        if let Some(f) = crate::functions::lookup(n) {
            let t = one(self)?;
            if primes > 0 {
                return crate::functions::derivative(&f, &t, primes as u32).ok_or_else(|| {
                    Error::unsupported(span, format!("the derivative of `{n}` is not available in this form"))
                });
            }
            return Ok(ir::apply(f, t));
        }
        match self.env.names.get(n) {
            Some((Binding::Func, _)) => {
                let t = one(self)?;
                Ok(ir::apply(Func::User(n.into(), primes as u32), t))
            }
            Some(_) => {
                // `x (y)` with a matrix `x`: a product, with `x'` a transpose.
                if args.len() != 1 {
                    return Err(Error::name(name.span, format!("`{n}` is a matrix, not a function"), "a matrix"));
                }
                let mut lhs = self.env.leaf(n).expect("matrix");
                if primes % 2 == 1 {
                    lhs = ir::transpose(lhs);
                }
                let lhs_ast = ast::Expr { kind: ExprKind::Name(n.to_string()), span: name.span };
                let mut acc = lhs;
                let mut acc_ast = lhs_ast;
                for a in args {
                    let t = self.expr(a)?;
                    acc = self.binary(BinOp::Mul, acc, t, &acc_ast, a, span)?;
                    acc_ast = ast::Expr { kind: ExprKind::Paren(Box::new(a.clone())), span };
                }
                Ok(acc)
            }
            None => {
                let builtins: Vec<&str> = CALLABLE.iter().copied().chain(crate::functions::names()).collect();
                let declared =
                    self.env.names.iter().filter(|(_, (b, _))| matches!(b, Binding::Func)).map(|(k, _)| k.as_str());
                let close = builtins
                    .iter()
                    .copied()
                    .chain(declared)
                    .filter(|k| plausible(k, n))
                    .min_by_key(|k| edit_distance(k, n));
                const ALIASES: &[(&str, &str)] = &[
                    ("trace", "tr"),
                    ("Tr", "tr"),
                    ("inverse", "inv"),
                    ("determinant", "det"),
                    ("log_det", "logdet"),
                    ("ln", "log"),
                    ("sigma", "σ"),
                    ("transpose", "X' or Xᵀ"),
                    ("t", "X' or Xᵀ"),
                ];
                let alias = ALIASES.iter().find(|(a, _)| *a == n).map(|(_, b)| *b);
                if ["grad", "jacobian", "hessian", "simplify", "shape"].contains(&n) {
                    return Err(Error::name(name.span, format!("`{n}(…)` is a query, not a function"), "a query")
                        .with_help(if matches!(n, "simplify" | "shape") {
                            format!(
                                "ask `{n}(…)` on a line of its own; inside an expression, write the expression itself"
                            )
                        } else {
                            format!("a derivative is written `{n}(F, X)`, with no primes or inverse")
                        }));
                }
                let help = match alias.or(close) {
                    Some(k) => format!("did you mean `{k}`? To use a new scalar function, declare it: `{n}: R -> R`"),
                    None => {
                        let mut list: Vec<&str> = builtins.clone();
                        list.dedup();
                        format!("declare it: `{n}: R -> R`; the built-in functions are {}", list.join(" "))
                    }
                };
                Err(Error::name(name.span, format!("unknown function `{n}`"), "not declared").with_help(help))
            }
        }
    }
}

/// The size in `I_3` or `I_n`.
fn identity_size(s: &str) -> Option<DimAst> {
    if s.chars().all(|c| c.is_ascii_digit()) {
        let n: u64 = s.parse().ok()?;
        (1..=1_000_000).contains(&n).then_some(DimAst::Num(n))
    } else {
        s.chars().next().filter(|c| c.is_alphabetic()).map(|_| DimAst::Sym(s.to_string()))
    }
}

/// Whether `known` is a plausible misspelling target for `typed`.
fn plausible(known: &str, typed: &str) -> bool {
    let d = edit_distance(known, typed);
    let most = if typed.chars().count() <= 3 { 1 } else { 2 };
    d <= most && d < known.chars().count().max(typed.chars().count())
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use crate::session::{Outcome, Session};

    /// The typed expression of the last line of a script.
    fn typed(src: &str) -> crate::ir::Expr {
        let mut s = Session::default();
        let out = s.run(src).unwrap_or_else(|e| panic!("{}", e.render("<test>", src)));
        match out.last() {
            Some(Outcome::Answer(a)) => a.function.clone(),
            _ => panic!("no answer"),
        }
    }

    #[test]
    fn a_matrix_before_brackets_is_a_product_and_postfixes_bind_to_the_brackets() {
        let decl = "A, B: n x n\nS: n x n\nx, m: n\n";
        let same =
            |a: &str, b: &str| assert_eq!(typed(&format!("{decl}{a}")), typed(&format!("{decl}{b}")), "{a} vs {b}");
        same("A (B)ᵀ", "A Bᵀ");
        same("A(B)'", "A B'");
        same("A (B)^2", "A B^2");
        same("A (B)^-1", "A B^-1");
        same("A (B) .^ 2", "A (B .^ 2)");
        same("A' (B)ᵀ", "Aᵀ Bᵀ");
        // `S^-1 (…)` groups as `S⁻¹ · (…)`, which is equal by associativity.
        same("(x - m)' S^-1 (x - m)", "(x - m)' (inv(S) (x - m))");
        same("(x - m)' S⁻¹ (x - m)", "(x - m)' (inv(S) (x - m))");
        same("I (A + B)", "A + B");
        same("I_n (x)", "x");
    }

    #[test]
    fn misspellings_are_suggested_only_when_plausible() {
        let err = |src: &str| Session::default().run(src).unwrap_err().render("<t>", src);
        assert!(err("weight: 3 x 3\ntr(wieght)").contains("did you mean `weight`?"));
        assert!(err("W1: 3 x 3\ntr(W)").contains("did you mean `W1`?"));
        assert!(!err("A: 3 x 3\ntr(C)").contains("did you mean"));
        assert!(!err("A: 3 x 3\ntr + A").contains("unknown name"));
    }
    /// The answers to a script's queries, each checked numerically.
    fn checked(src: &str) -> Vec<String> {
        let mut s = Session::default();
        let answers = s.answers(src).unwrap_or_else(|e| panic!("{}", e.render("<test>", src)));
        answers
            .iter()
            .map(|a| {
                if let Some(err) = s.check(a).unwrap_or_else(|e| panic!("{src}: {}", e.0)) {
                    assert!(err < 1e-6, "{src}: {} is off by {err:.1e}", a.text());
                }
                a.text()
            })
            .collect()
    }

    #[test]
    fn a_one_by_one_operand_broadcasts_in_elementwise_operations() {
        assert_eq!(checked("s: scalar; L = sum(ones(3, 2) ∘ s); ∂L/∂s"), ["6"]);
        assert_eq!(checked("s: scalar; L = sum(s ∘ ones(3, 2)); ∂L/∂s"), ["6"]);
        assert_eq!(checked("s: scalar; A: 2 x 3; L = sum(s ./ A); ∂L/∂s"), ["sum(1 ./ A)"]);
        checked("s: scalar; A: 2 x 3; L = sum(s ./ A); ∂L/∂A");
        checked("x: n; L = sum(sum(x) ./ x); ∂L/∂x");
        checked("x: n; L = sum(x ./ sum(x)); ∂L/∂x");
        checked("x: 3; A: 3 x 3; L = sum((xᵀ A x) - A); ∂L/∂x; ∂L/∂A");
        assert_eq!(checked("s: scalar; L = sum(s + ones(2, 2)); ∂L/∂s"), ["4"]);
    }

    #[test]
    fn rows_and_columns_broadcast_and_their_gradients_sum_over_the_repeated_axis() {
        checked("X: N x d; W: d x k; b: 1 x k; Y: N x k; L = ‖X W + b - Y‖²; ∂L/∂b; ∂L/∂W");
        checked("X: N x d; c: N; L = sum(exp(X - c)); ∂L/∂c; ∂L/∂X");
        checked("X: 3 x 4; r: 1 x 4; c: 3 x 1; L = sum(X ∘ r + X ./ c); ∂L/∂r; ∂L/∂c");
        assert_eq!(typed("X: N x d; b: 1 x d; X + b").shape, typed("X: N x d; X").shape);
    }

    #[test]
    fn only_a_literal_one_broadcasts() {
        let err = |src: &str| Session::default().run(src).unwrap_err().render("<t>", src);
        assert!(err("X: N x d; b: m x d; X + b").contains("cannot add"));
        assert!(err("x: n; y: 1 x n; x + y").contains("transpose may be missing"));
        assert!(err("A: 2 x 3; B: 3 x 3; A ∘ B").contains("only a 1×1 side"));
    }

    #[test]
    fn a_bare_identity_inside_a_kronecker_product_is_never_a_scale() {
        assert_eq!(checked("A, B: 2 x 2; X: 4 x 4; L = tr((I ⊗ A)(I ⊗ B) X); ∂L/∂X"), ["I ⊗ Bᵀ Aᵀ"]);
        checked("A, B: 2 x 2; X: 4 x 4; L = tr((I ⊗ A)(I ⊗ B) X); ∂L/∂A; ∂L/∂B");
        checked("A: n x n; X: n x m; L = sum((I ⊗ A) vec(X)); ∂L/∂X");
        checked("A: 2 x 2; B: 3 x 3; X: 6 x 6; L = tr((A ⊗ I)(I ⊗ B) X); ∂L/∂X; ∂L/∂A");
        let same = |a: &str, b: &str| assert_eq!(typed(a), typed(b), "{a} vs {b}");
        same("A, B: 2 x 2; X: 4 x 4; tr((I ⊗ A)(I ⊗ B) X)", "A, B: 2 x 2; X: 4 x 4; tr((I_2 ⊗ A)(I_2 ⊗ B) X)");
    }

    #[test]
    fn a_size_is_a_value() {
        checked("O, Y: N x k; L = ‖O - Y‖² / N; ∂L/∂O");
        checked("x: n; L = (sum(x) / n)²; ∂L/∂x");
        // A bare `d` that names a size is that size; `d(…)` stays a differential.
        assert_eq!(checked("X: N x d; w: d; L = sum(X w) / sqrt(d); ∂L/∂w").len(), 1);
        assert_eq!(crate::print::text(&typed("x: n; I_n x + ones(n, 1) - sum(ones(n, 1))")), "x + 1 - n");
    }

    #[test]
    fn a_division_before_brackets_prints_in_brackets() {
        let e = typed("x, y, u: scalar; (y / u)(2 x + y)");
        assert_eq!(crate::print::text(&e), "(y / u) (2 x + y)");
        assert_eq!(typed(&format!("x, y, u: scalar; {}", crate::print::text(&e))), e);
    }

    #[test]
    fn sizes_and_powers_past_the_limits_are_refused() {
        let err = |src: &str| Session::default().run(src).unwrap_err().render("<t>", src);
        assert!(err("ones(18446744073709551615, 2)").contains("too large"));
        assert!(err("A: 1000 x 1000; B = A ⊗ A ⊗ A ⊗ A ⊗ A").contains("larger than matdiff handles"));
        assert!(err("X: 2 x 2; L = tr((X^1000)^1000); ∂L/∂X").contains("at most 256"));
    }
}
