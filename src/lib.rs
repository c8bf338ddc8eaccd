//! matdiff: symbolic matrix-differential calculus.
//!
//! Write a forward pass as matrix expressions; matdiff infers shapes, takes
//! differentials, follows the chain rule through your definitions and
//! identifies derivatives the way Magnus & Neudecker do: the Kronecker form
//! `∂L/∂vec(W)ᵀ` and the matrix gradient `∂L/∂W`.
//!
//! # Quick start
//!
//! ```
//! let mut session = matdiff::Session::default();
//! let answers = session.answers("
//!     n0: 1 x 2; W1: 2 x 3; b1: 1 x 3; W2: 3 x 2; b2: 1 x 2; y: 1 x 2
//!     f1, f2: R -> R
//!     d1 = n0 W1 + b1; n1 = f1(d1); d2 = n1 W2 + b2; n2 = f2(d2)
//!     L = (n2 - y)(n2 - y)^T
//!     ∂L/∂vec(W2)^T
//!     ∂L/∂W1
//! ").unwrap();
//! assert_eq!(session.render(&answers[0]), "∂L/∂vec(W2)ᵀ = (n1ᵀ ⊗ I) diag(f2'(d2)) 2(n2 - y)ᵀ");
//! assert_eq!(session.render(&answers[1]), "∂L/∂W1 = 2 n0ᵀ (((n2 - y) ∘ f2'(d2)) W2ᵀ ∘ f1'(d1))");
//! // Every answer can be checked against finite differences.
//! assert!(session.check(&answers[1]).unwrap().unwrap() < 1e-6);
//! ```
//!
//! One-off helpers: [`gradient()`] and [`simplify()`].
//!
//! # Pinning a derivation in a snapshot test
//!
//! Output is deterministic, so a downstream crate can pin a derivation, steps
//! included, with `insta`:
//!
//! ```
//! use matdiff::session::{Options, Session};
//! let mut s = Session::new(Options { steps: true, ..Options::default() });
//! let a = s.answers("x: n; A: n x n; f = x^T A x; ∂f/∂x").unwrap();
//! insta::assert_snapshot!(s.render(&a[0]), @r"
//! df = dxᵀ A x + xᵀ A dx  # product rule; d(Xᵀ) = (dX)ᵀ
//! ∂f/∂x = (A + Aᵀ) x  # chain rule, backward through the definitions
//! ");
//! ```
//!
//! # Pipeline
//!
//! [`syntax`] (text to [`ast`]) → [`typeck`] (names and [`shape`]s, to the
//! typed [`ir`]) → [`diff`] (differentials, identification, the chain rule)
//! → [`simplify`](mod@simplify) and [`egraph`] → [`print`](mod@print)
//! (expressions in Unicode, ASCII, LaTeX) and [`codegen`] (NumPy).
//! [`derive`](mod@derive) answers one query through those stages, under the
//! [`conventions`] it is given; [`render`] shows answers in each output
//! format; [`eval`] evaluates typed expressions, and the script as written
//! ([`eval::reference`]), to check derivatives; [`functions`] is the table
//! of built-in functions; [`session`] runs statements in order.
#![deny(missing_docs)]

pub mod ast;
pub mod codegen;
pub mod conventions;
pub mod cost;
pub mod derive;
pub mod diff;
pub mod egraph;
pub mod error;
pub mod eval;
pub mod functions;
pub mod ir;
pub mod print;
pub mod render;
pub mod session;
pub mod shape;
pub mod simplify;
#[allow(missing_docs)] // the grammar's generated `Rule` enum
pub mod syntax;
pub mod typeck;

pub use error::{Error, Result};
pub use session::{Answer, Session};

/// The gradient `∂f/∂x` of a scalar expression, given declarations.
///
/// An error points into the text it is about: `declarations` for a
/// mistake there, `f` for one in the expression, `x` for an unknown
/// variable, so `err.render("f", f)` underlines the caller's own text.
///
/// ```
/// let g = matdiff::gradient("A: n x n; x: n", "x^T A x", "x").unwrap();
/// assert_eq!(matdiff::print::text(&g), "(A + Aᵀ) x");
/// let err = matdiff::gradient("A: n x n; x: n", "x^T B x", "x").unwrap_err();
/// assert!(err.render("f", "x^T B x").contains("x^T B x"));
/// ```
pub fn gradient(declarations: &str, f: &str, x: &str) -> Result<ir::Expr> {
    let mut s = Session::default();
    s.run(declarations)?;
    let name = x.trim();
    if s.env.leaf(name).is_none() {
        let at = error::Span::new(x.len() - x.trim_start().len(), x.len() - x.trim_start().len() + name.len());
        return Err(Error::unsupported(at, format!("`{name}` is not a declared or defined matrix")));
    }
    let wrt = ast::Ident { name: name.to_string(), span: error::Span::new(0, 0) };
    one_query(&mut s, f, ast::QueryKind::Gradient, Some(wrt))
}

/// The simplified form of an expression, given declarations; errors point
/// into `declarations` or `e`, as for [`gradient()`].
///
/// ```
/// let e = matdiff::simplify("A: n x n", "(A^T)^T I + 0").unwrap();
/// assert_eq!(matdiff::print::text(&e), "A");
/// ```
pub fn simplify(declarations: &str, e: &str) -> Result<ir::Expr> {
    let mut s = Session::default();
    s.run(declarations)?;
    one_query(&mut s, e, ast::QueryKind::Simplify, None)
}

/// Asks one query about the expression `src`, with spans into `src`.
fn one_query(s: &mut Session, src: &str, kind: ast::QueryKind, wrt: Option<ast::Ident>) -> Result<ir::Expr> {
    let expr = syntax::parse_expr(src)?;
    let span = expr.span;
    let stmt = ast::Stmt::Query { kind, expr, wrt, wrt2: None, span };
    match s.exec(&stmt, src)? {
        session::Outcome::Answer(a) => Ok(a.expr),
        _ => unreachable!("a query answers"),
    }
}

/// The README's Rust examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
