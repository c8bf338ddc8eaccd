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
use std::collections::BTreeMap;

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
        /// The definition as written, for the reference evaluator.
        written: std::rc::Rc<Written>,
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

/// Declarations and definitions in force.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Every name, with where it was introduced.
    pub names: BTreeMap<String, (Binding, Span)>,
    /// Defined names in the order they were defined.
    pub defs: Vec<String>,
    /// The `vec` order in force.
    pub order: VecOrder,
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
        if RESERVED.contains(&id.name.as_str()) || Func::builtin(&id.name).is_some() {
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
            Binding::Def { written, .. } => Some(written),
            _ => None,
        }
    }

    /// Types an expression, and records it as written.
    pub fn check_written(&self, e: &ast::Expr) -> Result<(Expr, Written)> {
        let mut identities = std::collections::HashMap::new();
        let t = self.check_with(e, &mut identities)?;
        Ok((t, Written { expr: e.clone(), identities, order: self.order }))
    }

    /// Types an expression.
    pub fn check(&self, e: &ast::Expr) -> Result<Expr> {
        self.check_with(e, &mut std::collections::HashMap::new())
    }

    /// Types an expression, noting the inferred size of each bare `I`.
    fn check_with(&self, e: &ast::Expr, identities: &mut std::collections::HashMap<Span, Dim>) -> Result<Expr> {
        let mut cx = Checker { env: self, uni: Unifier::default(), idents: Vec::new() };
        let t = cx.expr(e)?;
        if cx.uni.is_empty() {
            return Ok(t);
        }
        if !cx.uni.finish() {
            return Err(Error::shape(e.span, "the sizes here cannot all agree", "inconsistent sizes"));
        }
        for (d, span) in &cx.idents {
            let d = cx.uni.resolve(d);
            if d.has_vars() {
                return Err(Error::shape(*span, "cannot infer the size of this identity or zero", "size unknown")
                    .with_help("write the size, as in I_n or I_3"));
            }
            identities.insert(*span, d);
        }
        Ok(cx.zonk(t))
    }
}

struct Checker<'a> {
    env: &'a Env,
    uni: Unifier,
    /// Inferred sizes of bare `I` and `0`, to report if they stay unknown.
    idents: Vec<(Dim, Span)>,
}

/// Built-in functions that are not elementwise.
const CALLABLE: &[&str] = &["tr", "det", "logdet", "diag", "vec", "unvec", "sum", "norm", "inv", "kron", "ones"];
/// Query keywords.
const QUERIES: &[&str] = &["grad", "jacobian", "hessian", "simplify", "shape"];

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

impl Checker<'_> {
    fn zonk(&self, e: Expr) -> Expr {
        if self.uni.is_empty() {
            return e;
        }
        ir::map_bottom_up(&e, &mut |n| match &n.op {
            ir::Op::Identity if n.shape.has_vars() => ir::identity(self.uni.resolve(&n.shape.rows)),
            ir::Op::Zero if n.shape.has_vars() => ir::zero(self.uni.resolve_shape(&n.shape)),
            ir::Op::Ones if n.shape.has_vars() => ir::ones(self.uni.resolve_shape(&n.shape)),
            _ => n,
        })
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

    /// A number in a sum with a matrix stands for that number in every entry.
    fn broadcast(&mut self, x: Expr, like: &Expr) -> Expr {
        if x.as_num().is_some() && !like.shape.is_scalar() {
            let c = x.as_num().cloned().unwrap_or_default();
            if c.is_zero() {
                return ir::zero(like.shape.clone());
            }
            return ir::scale(c, ir::ones(like.shape.clone()));
        }
        x
    }

    fn expr(&mut self, e: &ast::Expr) -> Result<Expr> {
        let t = self.expr_inner(e)?;
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
        let kind = if self.env.leaf(n).is_some() {
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
        if matches!(self.env.names.get(n), Some((Binding::Func, _)))
            || Func::builtin(n).is_some()
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
                let ta = self.broadcast(ta, &tb);
                let tb = self.broadcast(tb, &ta);
                if !self.same_shape(&ta, &tb) {
                    let verb = if op == BinOp::Add {
                        "cannot add matrices of different shapes"
                    } else {
                        "cannot subtract matrices of different shapes"
                    };
                    return Err(mismatch(self, verb, &ta, &tb));
                }
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
                Ok(ir::matmul(self.settle(ta), self.settle(tb)))
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
                let ta = self.broadcast(ta, &tb);
                let tb = self.broadcast(tb, &ta);
                if !ta.shape.is_scalar() && !tb.shape.is_scalar() && !self.same_shape(&ta, &tb) {
                    let verb = if op == BinOp::Hadamard {
                        "an elementwise product needs equal shapes"
                    } else {
                        "an elementwise division needs equal shapes"
                    };
                    return Err(mismatch(self, verb, &ta, &tb));
                }
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
                let n: u64 = r.to_integer().try_into().map_err(|_| Error::limit(a.span, "size too large"))?;
                Ok(Dim::num(n))
            }
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
            && Func::builtin(n).is_none()
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
            if v.shape.len() != shape.len() || !v.shape.cols.is_one() {
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
            return Ok(ir::unvec(v, shape, self.env.order));
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
            "vec" => return Ok(ir::vec(one(self)?, self.env.order)),
            "sum" => return Ok(ir::sum(one(self)?)),
            "norm" => return Ok(ir::norm(one(self)?)),
            _ => {}
        }
        if let Some(f) = Func::builtin(n) {
            let t = one(self)?;
            if primes > 0 {
                return crate::diff::elementwise_derivative(&f, &t, primes as u32).ok_or_else(|| {
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
                let builtins: Vec<&str> =
                    CALLABLE.iter().copied().chain(Func::BUILTINS.iter().flat_map(|(u, a, _)| [*a, *u])).collect();
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
            Some(Outcome::Answer(a)) => a.function.clone().expect("typed"),
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
}
