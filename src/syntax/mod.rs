//! Text to surface AST: the pest grammar in `grammar/matdiff.pest`, and the
//! operator precedence (a Pratt table) here.
//!
//! Precedence, lowest to highest: `+ -`; unary minus; `∘ ./`; `⊗`; products
//! (`*`, `/`, juxtaposition); postfix `ᵀ ⁻¹ ^k .^k`. So `a ∘ b W` is
//! `a ∘ (b W)`, `A ⊗ B C` is `A ⊗ (B C)` and `-A B` is `-(A B)`.

use crate::ast::*;
use crate::error::{Error, Result, Span};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Zero};
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser as _;
use std::sync::OnceLock;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/matdiff.pest"]
struct Grammar;

/// Longest line accepted, in bytes.
pub const MAX_LINE: usize = 65_536;
/// Deepest bracket nesting accepted.
pub const MAX_NESTING: usize = 200;
/// Deepest expression tree accepted.
pub const MAX_DEPTH: usize = 2_000;

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::prefix(Rule::neg))
            .op(Op::infix(Rule::hadamard, Assoc::Left) | Op::infix(Rule::hadamard_div, Assoc::Left))
            .op(Op::infix(Rule::kron, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left)
                | Op::infix(Rule::div, Assoc::Left)
                | Op::infix(Rule::implicit, Assoc::Left))
            .op(Op::postfix(Rule::transpose)
                | Op::postfix(Rule::inverse)
                | Op::postfix(Rule::power)
                | Op::postfix(Rule::hadamard_pow))
    })
}

/// Parses a whole script into statements.
///
/// ```
/// let stmts = matdiff::syntax::parse("A: n x n\nB = A A^T; tr(B)").unwrap();
/// assert_eq!(stmts.len(), 3);
/// ```
pub fn parse(src: &str) -> Result<Vec<Stmt>> {
    check_limits(src)?;
    pest::set_call_limit(std::num::NonZeroUsize::new(20_000_000));
    let mut pairs = Grammar::parse(Rule::program, src).map_err(|e| syntax_error(src, e))?;
    let program = pairs.next().expect("program rule");
    let mut out = Vec::new();
    for pair in program.into_inner() {
        if pair.as_rule() == Rule::EOI {
            break;
        }
        let stmt = statement(pair)?;
        if let Stmt::Query { expr, .. } | Stmt::Def { body: expr, .. } = &stmt {
            if expr.depth() > MAX_DEPTH {
                return Err(Error::limit(
                    expr.span,
                    format!("this expression nests more than {MAX_DEPTH} levels deep"),
                ));
            }
        }
        out.push(stmt);
    }
    Ok(out)
}

/// Parses one expression (no statements around it).
///
/// ```
/// let e = matdiff::syntax::parse_expr("(n2 - y)(n2 - y)^T").unwrap();
/// assert!(matches!(e.kind, matdiff::ast::ExprKind::Binary(matdiff::ast::BinOp::Mul, _, _)));
/// ```
pub fn parse_expr(src: &str) -> Result<Expr> {
    match parse(src)?.pop() {
        Some(Stmt::Query {
            kind: QueryKind::Show,
            expr,
            ..
        }) => Ok(expr),
        _ => Err(Error::Syntax {
            message: "expected one expression".into(),
            span: Span::new(0, src.len()),
            label: "not an expression".into(),
        }),
    }
}

/// Rejects inputs that would make parsing slow or deep before pest sees them.
fn check_limits(src: &str) -> Result<()> {
    let mut offset = 0;
    for line in src.split('\n') {
        if line.len() > MAX_LINE {
            return Err(Error::limit(
                Span::new(offset, offset),
                format!(
                    "line is {} bytes long; the longest line accepted is {MAX_LINE} bytes",
                    line.len()
                ),
            ));
        }
        offset += line.len() + 1;
    }
    let mut depth = 0usize;
    let mut norm_open = false;
    for (i, c) in src.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '‖' => {
                norm_open = !norm_open;
                if norm_open {
                    depth += 1
                } else {
                    depth = depth.saturating_sub(1)
                }
            }
            '\n' => depth = 0,
            _ => {}
        }
        if depth > MAX_NESTING {
            return Err(Error::limit(
                Span::new(i, i + 1),
                format!("brackets nest more than {MAX_NESTING} levels deep"),
            ));
        }
    }
    Ok(())
}

fn span(p: &Pair<Rule>) -> Span {
    let s = p.as_span();
    Span::new(s.start(), s.end())
}

fn rule_name(r: &Rule) -> Option<&'static str> {
    Some(match r {
        Rule::EOI => "end of input",
        Rule::expr | Rule::postfix_free => "an expression",
        Rule::ident => "a name",
        Rule::integer | Rule::dim => "a size (a number or a name)",
        Rule::number | Rule::signed_number | Rule::signed_int => "a number",
        Rule::add
        | Rule::sub
        | Rule::mul
        | Rule::div
        | Rule::kron
        | Rule::hadamard
        | Rule::hadamard_div
        | Rule::implicit => "an operator",
        Rule::transpose | Rule::inverse | Rule::power | Rule::hadamard_pow | Rule::tpose => {
            "a postfix operator (ᵀ, ⁻¹, ^k)"
        }
        Rule::shape_spec | Rule::scalar_kw => "a shape (`n x m`, `n` or `scalar`)",
        Rule::property => "a property (`symmetric`)",
        Rule::wrt | Rule::vec_wrt => "a variable (`∂X`, `∂Xᵀ` or `∂vec(X)ᵀ`)",
        Rule::paren | Rule::call | Rule::norm | Rule::identity | Rule::callee => "an expression",
        Rule::neg => "an expression",
        _ => return None,
    })
}

fn syntax_error(src: &str, e: pest::error::Error<Rule>) -> Error {
    use pest::error::{ErrorVariant, InputLocation};
    let pos = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let expected = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives.iter().filter_map(rule_name).collect();
            names.sort();
            names.dedup();
            names
        }
        ErrorVariant::CustomError { .. } => vec![],
    };
    let rest = &src[pos.min(src.len())..];
    let found: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace())
        .take(12)
        .collect();
    let found_desc = if rest.is_empty() || rest.starts_with('\n') {
        "the end of the line".to_string()
    } else if found.is_empty() {
        format!("{:?}", rest.chars().next().unwrap_or(' '))
    } else {
        format!("`{found}`")
    };
    let message = if matches!(e.variant, ErrorVariant::CustomError { .. }) {
        "the parser gave up on this input (it is too complex)".to_string()
    } else if expected.is_empty() {
        format!("unexpected {found_desc}")
    } else {
        format!("expected {}, found {found_desc}", join_or(&expected))
    };
    let len = rest.chars().next().map_or(0, char::len_utf8);
    let label = if expected.is_empty() {
        "unexpected".to_string()
    } else {
        format!("expected {}", join_or(&expected))
    };
    Error::Syntax {
        message,
        span: Span::new(pos, pos + len),
        label,
    }
}

fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [a] => a.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn ident(p: Pair<Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span(&p),
    }
}

fn statement(p: Pair<Rule>) -> Result<Stmt> {
    let sp = span(&p);
    match p.as_rule() {
        Rule::fn_decl => {
            let names = p
                .into_inner()
                .next()
                .expect("names")
                .into_inner()
                .map(ident)
                .collect();
            Ok(Stmt::FnDecl { names })
        }
        Rule::decl => {
            let mut inner = p.into_inner();
            let names = inner
                .next()
                .expect("names")
                .into_inner()
                .map(ident)
                .collect();
            let shape_pair = inner.next().expect("shape");
            let shape_span = span(&shape_pair);
            let mut dims = shape_pair.into_inner();
            let first = dims.next().expect("dim");
            let shape = if first.as_rule() == Rule::scalar_kw {
                ShapeAst::Scalar
            } else {
                ShapeAst::Matrix(dim(first)?, dims.next().map(dim).transpose()?)
            };
            let symmetric = inner.any(|q| q.as_rule() == Rule::property);
            Ok(Stmt::Decl {
                names,
                shape,
                symmetric,
                shape_span,
            })
        }
        Rule::definition => {
            let mut inner = p.into_inner();
            let name = ident(inner.next().expect("name"));
            let body = expr(inner.next().expect("body"))?;
            Ok(Stmt::Def { name, body })
        }
        Rule::diff_query => {
            let e = expr(p.into_inner().next().expect("expr"))?;
            Ok(Stmt::Query {
                kind: QueryKind::Differential,
                expr: e,
                wrt: None,
                span: sp,
            })
        }
        Rule::partial_query => {
            let mut inner = p.into_inner();
            let f = inner.next().expect("f").into_inner().next().expect("f");
            let f = primary(f)?;
            let wrt = inner.next().expect("wrt");
            let mut kind = QueryKind::Gradient;
            let mut var = None;
            for q in wrt.into_inner() {
                match q.as_rule() {
                    Rule::ident => var = Some(ident(q)),
                    Rule::vec_wrt => {
                        kind = QueryKind::Jacobian;
                        var = Some(ident(q.into_inner().next().expect("ident")));
                    }
                    Rule::tpose => kind = QueryKind::Jacobian,
                    _ => {}
                }
            }
            Ok(Stmt::Query {
                kind,
                expr: f,
                wrt: var,
                span: sp,
            })
        }
        Rule::call_query => {
            let mut inner = p.into_inner();
            let kw = inner.next().expect("kw");
            let kind = match kw.as_str() {
                "grad" => QueryKind::Gradient,
                "jacobian" => QueryKind::Jacobian,
                "hessian" => QueryKind::Hessian,
                "simplify" => QueryKind::Simplify,
                _ => QueryKind::Shape,
            };
            let args: Vec<Expr> = inner.map(expr).collect::<Result<_>>()?;
            let want = if matches!(kind, QueryKind::Simplify | QueryKind::Shape) {
                1
            } else {
                2
            };
            if args.len() != want {
                return Err(Error::Syntax {
                    message: format!(
                        "`{}` takes {want} argument{}, found {}",
                        kw.as_str(),
                        if want == 1 { "" } else { "s" },
                        args.len()
                    ),
                    span: sp,
                    label: "wrong number of arguments".into(),
                });
            }
            let mut args = args.into_iter();
            let f = args.next().expect("f");
            let wrt =
                match args.next() {
                    None => None,
                    Some(Expr {
                        kind: ExprKind::Name(n),
                        span,
                    }) => Some(Ident { name: n, span }),
                    Some(other) => return Err(Error::unsupported(
                        other.span,
                        "derivatives are taken with respect to a declared matrix: write its name",
                    )),
                };
            Ok(Stmt::Query {
                kind,
                expr: f,
                wrt,
                span: sp,
            })
        }
        Rule::expr => Ok(Stmt::Query {
            kind: QueryKind::Show,
            expr: expr(p)?,
            wrt: None,
            span: sp,
        }),
        r => unreachable!("statement rule {r:?}"),
    }
}

fn dim(p: Pair<Rule>) -> Result<DimAst> {
    let inner = p.into_inner().next().expect("dim");
    match inner.as_rule() {
        Rule::integer => {
            let sp = span(&inner);
            let n: u64 = inner
                .as_str()
                .parse()
                .map_err(|_| Error::limit(sp, format!("size {} is too large", inner.as_str())))?;
            if n == 0 {
                return Err(Error::shape(sp, "a size must be at least 1", "zero size"));
            }
            if n > 1_000_000 {
                return Err(Error::limit(
                    sp,
                    format!("size {n} is too large (at most 1000000)"),
                ));
            }
            Ok(DimAst::Num(n))
        }
        _ => Ok(DimAst::Sym(inner.as_str().to_string())),
    }
}

fn expr(p: Pair<Rule>) -> Result<Expr> {
    pratt()
        .map_primary(primary)
        .map_prefix(|op, rhs| {
            let rhs = rhs?;
            let sp = span(&op).to(rhs.span);
            Ok(Expr {
                kind: ExprKind::Neg(Box::new(rhs)),
                span: sp,
            })
        })
        .map_postfix(|lhs, op| {
            let lhs = lhs?;
            let sp = lhs.span.to(span(&op));
            let post = postfix(op)?;
            Ok(Expr {
                kind: ExprKind::Postfix(Box::new(lhs), post),
                span: sp,
            })
        })
        .map_infix(|lhs, op, rhs| {
            let (lhs, rhs) = (lhs?, rhs?);
            let bop = match op.as_rule() {
                Rule::add => BinOp::Add,
                Rule::sub => BinOp::Sub,
                Rule::mul | Rule::implicit => BinOp::Mul,
                Rule::div => BinOp::Div,
                Rule::kron => BinOp::Kron,
                Rule::hadamard => BinOp::Hadamard,
                Rule::hadamard_div => BinOp::HadamardDiv,
                r => unreachable!("infix {r:?}"),
            };
            let sp = lhs.span.to(rhs.span);
            Ok(Expr {
                kind: ExprKind::Binary(bop, Box::new(lhs), Box::new(rhs)),
                span: sp,
            })
        })
        .parse(p.into_inner())
}

fn superscript_value(s: &str) -> i64 {
    let mut neg = false;
    let mut v: i64 = 0;
    for c in s.chars() {
        match c {
            '⁻' => neg = true,
            _ => {
                let d = "⁰¹²³⁴⁵⁶⁷⁸⁹".chars().position(|x| x == c).unwrap_or(0) as i64;
                v = v.saturating_mul(10).saturating_add(d);
            }
        }
    }
    if neg {
        -v
    } else {
        v
    }
}

fn postfix(op: Pair<Rule>) -> Result<Postfix> {
    let sp = span(&op);
    Ok(match op.as_rule() {
        Rule::transpose => Postfix::Transpose,
        Rule::inverse => Postfix::Inverse,
        Rule::power => {
            let inner = op.into_inner().next().expect("power");
            let k = if inner.as_rule() == Rule::superscript {
                superscript_value(inner.as_str())
            } else {
                inner
                    .as_str()
                    .replace('−', "-")
                    .parse::<i64>()
                    .map_err(|_| Error::limit(sp, "exponent is too large"))?
            };
            if k.abs() > 1_000 {
                return Err(Error::limit(
                    sp,
                    format!("exponent {k} is too large (at most 1000 in size)"),
                ));
            }
            if k == -1 {
                Postfix::Inverse
            } else {
                Postfix::Power(k)
            }
        }
        Rule::hadamard_pow => {
            let mut nums = op.into_inner().map(|n| number(n.as_str(), sp));
            let a = nums.next().expect("exponent")?;
            let k = match nums.next() {
                Some(b) => {
                    let b = b?;
                    if b.is_zero() {
                        return Err(Error::shape(
                            sp,
                            "division by zero in the exponent",
                            "zero denominator",
                        ));
                    }
                    a / b
                }
                None => a,
            };
            Postfix::HadamardPow(k)
        }
        r => unreachable!("postfix {r:?}"),
    })
}

/// An exact rational from a decimal literal: `0.25` is `1/4`.
fn number(text: &str, sp: Span) -> Result<BigRational> {
    let text = text.replace('−', "-");
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text.as_str()),
    };
    if body.len() > 40 {
        return Err(Error::limit(
            sp,
            format!("the number {body} has too many digits (at most 40)"),
        ));
    }
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = format!("{int}{frac}");
    let numer: BigInt = digits
        .parse()
        .map_err(|_| Error::limit(sp, "malformed number"))?;
    let denom = num_traits::pow(BigInt::from(10), frac.len());
    let r = BigRational::new(
        numer,
        if denom.is_zero() {
            BigInt::one()
        } else {
            denom
        },
    );
    Ok(if neg { -r } else { r })
}

fn primary(p: Pair<Rule>) -> Result<Expr> {
    let sp = span(&p);
    let kind = match p.as_rule() {
        Rule::number => ExprKind::Num(number(p.as_str(), sp)?),
        Rule::ident => ExprKind::Name(p.as_str().to_string()),
        Rule::identity => ExprKind::Identity(p.into_inner().next().map(dim).transpose()?),
        Rule::paren => ExprKind::Paren(Box::new(expr(p.into_inner().next().expect("inner"))?)),
        Rule::norm => ExprKind::Norm(Box::new(expr(p.into_inner().next().expect("inner"))?)),
        Rule::call => {
            let mut inner = p.into_inner();
            let callee = inner.next().expect("callee");
            let mut parts: Pairs<Rule> = callee.into_inner();
            let name = ident(parts.next().expect("name"));
            let mut primes = 0;
            let mut inverse = false;
            for q in parts {
                match q.as_rule() {
                    Rule::primes => primes = q.as_str().len(),
                    Rule::vec_inverse => inverse = true,
                    _ => {}
                }
            }
            let args = inner.map(expr).collect::<Result<_>>()?;
            ExprKind::Call {
                name,
                primes,
                inverse,
                args,
            }
        }
        Rule::expr => return expr(p),
        r => unreachable!("primary {r:?}"),
    };
    Ok(Expr { kind, span: sp })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(src: &str) -> String {
        fn go(e: &Expr) -> String {
            match &e.kind {
                ExprKind::Num(n) => n.to_string(),
                ExprKind::Name(n) => n.clone(),
                ExprKind::Identity(_) => "I".into(),
                ExprKind::Neg(a) => format!("(neg {})", go(a)),
                ExprKind::Binary(op, a, b) => format!("({op:?} {} {})", go(a), go(b)),
                ExprKind::Postfix(a, p) => format!("({p:?} {})", go(a)),
                ExprKind::Norm(a) => format!("(norm {})", go(a)),
                ExprKind::Paren(a) => go(a),
                ExprKind::Call {
                    name, primes, args, ..
                } => {
                    format!(
                        "({}{} {})",
                        name.name,
                        "'".repeat(*primes),
                        args.iter().map(go).collect::<Vec<_>>().join(" ")
                    )
                }
            }
        }
        go(&parse_expr(src).unwrap())
    }

    #[test]
    fn juxtaposition_is_a_product() {
        assert_eq!(
            show("(n2 - y)(n2 - y)^T"),
            "(Mul (Sub n2 y) (Transpose (Sub n2 y)))"
        );
        assert_eq!(show("2(n2 - y)^T"), "(Mul 2 (Transpose (Sub n2 y)))");
        assert_eq!(show("n0 W1 + b1"), "(Add (Mul n0 W1) b1)");
    }

    #[test]
    fn precedence() {
        assert_eq!(show("a ∘ b W"), "(Hadamard a (Mul b W))");
        assert_eq!(show("A ⊗ B C"), "(Kron A (Mul B C))");
        assert_eq!(show("-A B"), "(neg (Mul A B))");
        assert_eq!(show("A - B - C"), "(Sub (Sub A B) C)");
        assert_eq!(show("X'^-1"), "(Inverse (Transpose X))");
        assert_eq!(show("‖A x - b‖²"), "(Power(2) (norm (Sub (Mul A x) b)))");
        assert_eq!(
            show("f'(d2) .* x ./ y"),
            "(HadamardDiv (Hadamard (f' d2) x) y)"
        );
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(show("0.5"), "1/2");
        assert_eq!(show("1.25"), "5/4");
        assert_eq!(
            show("A .^ (1/2)"),
            "(HadamardPow(Ratio { numer: 1, denom: 2 }) A)"
        );
    }

    #[test]
    fn statements() {
        let s = parse("W: 2 x 3; A, B: n × n symmetric\nf, g: R -> R\nd1 = n0 W1 + b1\nd(L)\n∂L/∂vec(W2)^T\n∂L/∂n2ᵀ\ngrad(L, W1)\n# comment\n").unwrap();
        assert_eq!(s.len(), 8);
        assert!(matches!(&s[1], Stmt::Decl { symmetric: true, names, .. } if names.len() == 2));
        assert!(matches!(
            &s[5],
            Stmt::Query {
                kind: QueryKind::Jacobian,
                ..
            }
        ));
        assert!(matches!(
            &s[6],
            Stmt::Query {
                kind: QueryKind::Jacobian,
                ..
            }
        ));
        assert!(matches!(
            &s[7],
            Stmt::Query {
                kind: QueryKind::Gradient,
                ..
            }
        ));
    }

    #[test]
    fn errors_point_at_the_text() {
        let e = parse("A: 2 x 2\nB = (A + A").unwrap_err();
        assert_eq!(e.span().line_col("A: 2 x 2\nB = (A + A"), (2, 11));
        assert!(parse(&"(".repeat(10_000)).is_err());
    }
}
