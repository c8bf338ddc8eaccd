//! The surface syntax tree, as written, with spans. Names are not resolved and
//! shapes are not known here; `typeck` turns this into the typed IR.

use crate::error::Span;
use num_rational::BigRational;

/// Operator precedence, lowest to highest. The parser's Pratt table is
/// built in this order and the printers bracket by it, so text that is
/// printed reads back the way it was meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prec {
    /// Anything: a whole expression, a function's argument.
    Top,
    /// `a + b`, `a - b`
    Sum,
    /// `-a`
    Neg,
    /// `a ∘ b`, `a ./ b`
    Elementwise,
    /// `a ⊗ b`
    Kron,
    /// `a b`, `a * b`, `a / s`
    Product,
    /// `aᵀ`, `a⁻¹`, `aᵏ`, `a .^ k`
    Postfix,
    /// Names, numbers, calls, brackets.
    Atom,
}

impl Prec {
    /// The operator levels, lowest first (what the parser's table lists).
    pub const OPERATORS: [Prec; 6] =
        [Prec::Sum, Prec::Neg, Prec::Elementwise, Prec::Kron, Prec::Product, Prec::Postfix];
}

/// A size as written in a declaration: a number or a symbol.
#[derive(Debug, Clone, PartialEq)]
pub enum DimAst {
    /// `3`
    Num(u64),
    /// `n`
    Sym(String),
}

/// A declared shape.
#[derive(Debug, Clone, PartialEq)]
pub enum ShapeAst {
    /// `scalar`
    Scalar,
    /// `n` (a column vector) or `n x m`.
    Matrix(DimAst, Option<DimAst>),
}

/// A name with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where.
    pub span: Span,
}

/// What a query asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// `d(F)`
    Differential,
    /// `d²(F)`
    SecondDifferential,
    /// `d³(F)`
    ThirdDifferential,
    /// `∂F/∂X` or `grad(F, X)`: a gradient shaped like `X` for scalar `F`.
    Gradient,
    /// `∂F/∂Xᵀ`, `∂F/∂vec(X)ᵀ` or `jacobian(F, X)`.
    Jacobian,
    /// `hessian(F, X)`
    Hessian,
    /// `simplify(e)`
    Simplify,
    /// `shape(e)`
    Shape,
    /// A bare expression.
    Show,
}

/// One statement of a script.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `A, B: n x m symmetric`
    Decl {
        /// Declared names.
        names: Vec<Ident>,
        /// Their shape.
        shape: ShapeAst,
        /// Declared symmetric.
        symmetric: bool,
        /// The shape's span.
        shape_span: Span,
    },
    /// `f, g: R -> R`
    FnDecl {
        /// Declared function names.
        names: Vec<Ident>,
    },
    /// `name = expr`
    Def {
        /// The defined name.
        name: Ident,
        /// Its definition.
        body: Expr,
    },
    /// `g = ∂f/∂x`, `H = hessian(f, x)`: a derivative defined as a value.
    DerivativeDef {
        /// The defined name.
        name: Ident,
        /// The derivative: a gradient, Jacobian or Hessian query.
        query: Box<Stmt>,
    },
    /// `∂F/∂(X, Y, …)` or `grad(F, X, Y, …)`: the gradients of a scalar by
    /// several variables, as one backward program.
    Gradients {
        /// The function.
        expr: Expr,
        /// The variables, in the order asked.
        vars: Vec<Ident>,
        /// The whole statement.
        span: Span,
    },
    /// A query or bare expression.
    Query {
        /// What is asked.
        kind: QueryKind,
        /// The function (or expression).
        expr: Expr,
        /// The variable, for derivatives.
        wrt: Option<Ident>,
        /// The second variable of a mixed second derivative, `hessian(F, X, Y)`.
        wrt2: Option<Ident>,
        /// The whole statement.
        span: Span,
    },
}

impl Stmt {
    /// The span of the whole statement (for queries) or its first name.
    pub fn span(&self) -> Span {
        match self {
            Stmt::Decl { names, shape_span, .. } => names[0].span.to(*shape_span),
            Stmt::FnDecl { names } => names[0].span,
            Stmt::Def { name, body } => name.span.to(body.span),
            Stmt::DerivativeDef { name, query } => name.span.to(query.span()),
            Stmt::Query { span, .. } | Stmt::Gradients { span, .. } => *span,
        }
    }
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*` or juxtaposition
    Mul,
    /// `/` (by a scalar)
    Div,
    /// `⊗`
    Kron,
    /// `∘`
    Hadamard,
    /// `./`
    HadamardDiv,
}

/// Postfix operators.
#[derive(Debug, Clone, PartialEq)]
pub enum Postfix {
    /// `ᵀ`
    Transpose,
    /// `⁻¹`
    Inverse,
    /// `^k` (integer)
    Power(i64),
    /// `.^ k` (rational)
    HadamardPow(BigRational),
}

/// An expression as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it is.
    pub kind: ExprKind,
    /// Where.
    pub span: Span,
}

/// Expression forms.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// An exact number.
    Num(BigRational),
    /// A name (matrix, defined name).
    Name(String),
    /// `I` or `I_n`.
    Identity(Option<DimAst>),
    /// `-e`
    Neg(Box<Expr>),
    /// `a op b`
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `e op`
    Postfix(Box<Expr>, Postfix),
    /// `‖e‖`
    Norm(Box<Expr>),
    /// `(e)` — kept so that `x (y)` can be told from `f(y)`.
    Paren(Box<Expr>),
    /// `name'…(args)`: a function call, or a product when `name` is a matrix.
    Call {
        /// The callee's name.
        name: Ident,
        /// Number of primes (`f''` has 2).
        primes: usize,
        /// `vec^-1(…)`.
        inverse: bool,
        /// The arguments.
        args: Vec<Expr>,
    },
    /// `∂F/∂X`, `grad(F, X)`, `jacobian(F, X)` or `hessian(F, X)` inside an
    /// expression: a [`Stmt::Query`] of that kind, whose value is used.
    Derivative(Box<Stmt>),
}

impl Expr {
    /// Nesting depth of the tree (used to bound recursion on user input).
    pub fn depth(&self) -> usize {
        1 + match &self.kind {
            ExprKind::Num(_) | ExprKind::Name(_) | ExprKind::Identity(_) => 0,
            ExprKind::Neg(e) | ExprKind::Postfix(e, _) | ExprKind::Norm(e) | ExprKind::Paren(e) => e.depth(),
            ExprKind::Binary(_, a, b) => a.depth().max(b.depth()),
            ExprKind::Call { args, .. } => args.iter().map(Expr::depth).max().unwrap_or(0),
            ExprKind::Derivative(q) => match &**q {
                Stmt::Query { expr, .. } => expr.depth(),
                _ => 0,
            },
        }
    }
}
