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
    },
    /// A declared scalar function.
    Func,
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
    "R",
    "scalar",
    "symmetric",
];

impl Env {
    /// The typed expression a name stands for (a leaf carrying its shape).
    pub fn leaf(&self, name: &str) -> Option<Expr> {
        match &self.names.get(name)?.0 {
            Binding::Matrix { shape, symmetric } => Some(ir::var(name, shape.clone(), *symmetric)),
            Binding::Def { body } => Some(ir::var(name, body.shape.clone(), false)),
            Binding::Func => None,
        }
    }

    /// The definition of a defined name.
    pub fn definition(&self, name: &str) -> Option<&Expr> {
        match &self.names.get(name)?.0 {
            Binding::Def { body } => Some(body),
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
        if let Some((_, at)) = self.names.get(&id.name) {
            let (line, _) = at.line_col(src);
            return Err(Error::name(
                id.span,
                format!("`{}` is already declared or defined (line {line})", id.name),
                "second time",
            )
            .with_help("each name is declared or defined once; choose a new name"));
        }
        Ok(())
    }

    /// Types an expression.
    pub fn check(&self, e: &ast::Expr) -> Result<Expr> {
        let mut cx = Checker {
            env: self,
            uni: Unifier::default(),
            idents: Vec::new(),
        };
        let t = cx.expr(e)?;
        if cx.uni.is_empty() {
            return Ok(t);
        }
        if !cx.uni.finish() {
            return Err(Error::shape(
                e.span,
                "the sizes here cannot all agree",
                "inconsistent sizes",
            ));
        }
        for (d, span) in &cx.idents {
            if cx.uni.resolve(d).has_vars() {
                return Err(Error::shape(
                    *span,
                    "cannot infer the size of this identity or zero",
                    "size unknown",
                )
                .with_help("write the size, as in I_n or I_3"));
            }
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

fn describe(e: &ast::Expr, src_shape: &Shape) -> String {
    let what = match &e.kind {
        ExprKind::Name(n) => format!("`{n}`"),
        _ => "the left side".into(),
    };
    format!("{what} is {src_shape}")
}

fn side(e: &ast::Expr, t: &Expr, default: &str) -> String {
    match &e.kind {
        ExprKind::Name(n) => format!("`{n}` is {}", t.shape),
        _ => format!("{default} is {}", t.shape),
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
            ExprKind::Call {
                name,
                primes,
                inverse,
                args,
            } => self.call(name, *primes, *inverse, args, e.span),
        }
    }

    fn name(&mut self, n: &str, span: Span) -> Result<Expr> {
        if let Some(t) = self.env.leaf(n) {
            return Ok(t);
        }
        if matches!(self.env.names.get(n), Some((Binding::Func, _))) || Func::builtin(n).is_some() {
            return Err(Error::name(
                span,
                format!("`{n}` is a function; apply it to an argument"),
                "a function",
            )
            .with_help(format!("write {n}(x)")));
        }
        let mut err = Error::name(
            span,
            format!("unknown name `{n}`"),
            "not declared or defined",
        );
        let close = self
            .env
            .names
            .keys()
            .filter(|k| edit_distance(k, n) <= 2)
            .min_by_key(|k| edit_distance(k, n));
        err = match close {
            Some(k) => err.with_help(format!("did you mean `{k}`?")),
            None => err.with_help(format!("declare it first, as in `{n}: n x m`")),
        };
        Err(err)
    }

    fn binary(
        &mut self,
        op: BinOp,
        ta: Expr,
        tb: Expr,
        a: &ast::Expr,
        b: &ast::Expr,
        span: Span,
    ) -> Result<Expr> {
        let mismatch = |what: &str, ta: &Expr, tb: &Expr| {
            Error::shape(
                span,
                format!(
                    "{what}: {}, {}",
                    side(a, ta, "the left side"),
                    side(b, tb, "the right side")
                ),
                format!("{} and {}", ta.shape, tb.shape),
            )
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
                    return Err(mismatch(verb, &ta, &tb));
                }
                let (ta, tb) = (self.settle(ta), self.settle(tb));
                Ok(if op == BinOp::Add {
                    ir::add(ta, tb)
                } else {
                    ir::sub(ta, tb)
                })
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
                    return Err(mismatch("inner sizes differ", &ta, &tb)
                        .with_help("a product A B needs as many columns in A as rows in B; a transpose may be missing"));
                }
                Ok(ir::matmul(self.settle(ta), self.settle(tb)))
            }
            BinOp::Div => {
                if !(self.uni.unify(&tb.shape.rows, &Dim::one())
                    && self.uni.unify(&tb.shape.cols, &Dim::one()))
                {
                    return Err(mismatch("can only divide by a scalar", &ta, &tb)
                        .with_help("for elementwise division write A ./ B"));
                }
                if tb.is_zero() {
                    return Err(Error::shape(b.span, "division by zero", "zero"));
                }
                Ok(ir::div(ta, self.settle(tb)))
            }
            BinOp::Kron => Ok(ir::kron(ta, tb)),
            BinOp::Hadamard | BinOp::HadamardDiv => {
                let ta = self.broadcast(ta, &tb);
                let tb = self.broadcast(tb, &ta);
                if !ta.shape.is_scalar() && !tb.shape.is_scalar() && !self.same_shape(&ta, &tb) {
                    return Err(mismatch(
                        "elementwise operations need equal shapes",
                        &ta,
                        &tb,
                    ));
                }
                if op == BinOp::HadamardDiv && tb.is_zero() {
                    return Err(Error::shape(b.span, "division by zero", "zero"));
                }
                let (ta, tb) = (self.settle(ta), self.settle(tb));
                Ok(if op == BinOp::Hadamard {
                    ir::hadamard(ta, tb)
                } else {
                    ir::hadamard_div(ta, tb)
                })
            }
        }
    }

    fn square(&mut self, t: &Expr, x: &ast::Expr, what: &str) -> Result<()> {
        if !self.uni.unify(&t.shape.rows, &t.shape.cols) {
            return Err(Error::shape(
                x.span,
                format!(
                    "{what} needs a square matrix, but {}",
                    describe(x, &t.shape)
                ),
                format!("{} is not square", t.shape),
            ));
        }
        Ok(())
    }

    fn postfix(&mut self, t: Expr, p: &Postfix, x: &ast::Expr, span: Span) -> Result<Expr> {
        Ok(match p {
            Postfix::Transpose => ir::transpose(t),
            Postfix::Inverse => {
                self.square(&t, x, "the inverse")?;
                if t.is_zero() {
                    return Err(Error::shape(
                        span,
                        "the zero matrix has no inverse",
                        "singular",
                    ));
                }
                ir::inverse(self.settle(t))
            }
            Postfix::Power(k) => {
                self.square(&t, x, "a matrix power")?;
                if *k < 0 && t.is_zero() {
                    return Err(Error::shape(
                        span,
                        "the zero matrix has no inverse",
                        "singular",
                    ));
                }
                ir::power(self.settle(t), *k)
            }
            Postfix::HadamardPow(k) => {
                if k < &num_rational::BigRational::zero() && t.is_zero() {
                    return Err(Error::shape(span, "division by zero", "zero"));
                }
                ir::hadamard_pow(t, k.clone())
            }
        })
    }

    fn size_arg(&self, a: &ast::Expr) -> Result<Dim> {
        match &a.kind {
            ExprKind::Num(r) if r.is_integer() && *r > num_rational::BigRational::zero() => {
                let n: u64 = r
                    .to_integer()
                    .try_into()
                    .map_err(|_| Error::limit(a.span, "size too large"))?;
                Ok(Dim::num(n))
            }
            ExprKind::Name(n) => Ok(Dim::sym(n)),
            _ => Err(Error::Syntax {
                message: "expected a size (a number or a size name)".into(),
                span: a.span,
                label: "not a size".into(),
            }),
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
                return Err(Error::Syntax {
                    message: format!(
                        "`{n}` takes {k} argument{}, found {}",
                        if k == 1 { "" } else { "s" },
                        args.len()
                    ),
                    span,
                    label: "wrong number of arguments".into(),
                });
            }
            Ok(())
        };
        if inverse && n != "vec" {
            return Err(Error::name(
                name.span,
                format!("`{n}^-1(…)` is not a function"),
                "not a function",
            )
            .with_help("write inv(X) or X^-1 for an inverse"));
        }
        if primes > 0
            && !matches!(self.env.names.get(n), Some((Binding::Func, _)))
            && Func::builtin(n).is_none()
            && self.env.leaf(n).is_none()
        {
            return Err(
                Error::name(name.span, format!("unknown function `{n}`"), "not declared")
                    .with_help(format!("declare it: `{n}: R -> R`")),
            );
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
                        "vec⁻¹ to {shape} needs a column of {} entries, but this is {}",
                        shape.len(),
                        v.shape
                    ),
                    "wrong length",
                ));
            }
            return Ok(ir::unvec(v, shape, self.env.order));
        }
        if n == "ones" {
            arity(2)?;
            return Ok(ir::ones(Shape::new(
                self.size_arg(&args[0])?,
                self.size_arg(&args[1])?,
            )));
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
                return crate::diff::elementwise_derivative(&f, &t, primes as u32).ok_or_else(
                    || {
                        Error::unsupported(
                            span,
                            format!("the derivative of `{n}` is not available in this form"),
                        )
                    },
                );
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
            None => Err(Error::name(name.span, format!("unknown function `{n}`"), "not declared")
                .with_help(format!("declare it: `{n}: R -> R`; built-in functions are tr det logdet diag vec unvec sum norm inv kron exp log sin cos tanh sigmoid σ sqrt softplus relu abs step sign"))),
        }
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}
