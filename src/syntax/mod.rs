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

pub mod lift;

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
        // The levels come from `Prec`, which the printers share.
        Prec::OPERATORS.into_iter().fold(PrattParser::new(), |p, level| {
            p.op(match level {
                Prec::Sum => Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left),
                Prec::Neg => Op::prefix(Rule::neg),
                Prec::Elementwise => {
                    Op::infix(Rule::hadamard, Assoc::Left) | Op::infix(Rule::hadamard_div, Assoc::Left)
                }
                Prec::Kron => Op::infix(Rule::kron, Assoc::Left),
                Prec::Product => {
                    Op::infix(Rule::mul, Assoc::Left)
                        | Op::infix(Rule::div, Assoc::Left)
                        | Op::infix(Rule::implicit, Assoc::Left)
                }
                Prec::Postfix | Prec::Top | Prec::Atom => {
                    Op::postfix(Rule::transpose)
                        | Op::postfix(Rule::inverse)
                        | Op::postfix(Rule::power)
                        | Op::postfix(Rule::hadamard_pow)
                }
            })
        })
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
    if let Some((stmt_start, err)) = check_brackets(src) {
        // Report an error in an earlier statement first.
        parse_statements(&src[..stmt_start])?;
        return Err(err);
    }
    parse_statements(src)
}

/// Parses statement by statement, so that the parser's work limit applies to
/// each statement rather than to the whole script.
fn parse_statements(src: &str) -> Result<Vec<Stmt>> {
    pest::set_call_limit(std::num::NonZeroUsize::new(20_000_000));
    let mut out = Vec::new();
    for (start, end) in statement_ranges(src) {
        let text = &src[start..end];
        if text.trim_start_matches(|c: char| c.is_whitespace()).is_empty() {
            continue;
        }
        let shift = |s: Span| Span::new(s.start + start, s.end + start);
        let mut pairs = Grammar::parse(Rule::program, text)
            .map_err(|e| syntax_error(text, detailed_error(text).unwrap_or(e)).map_spans(&shift))?;
        let program = pairs.next().expect("program rule");
        BASE.with(|b| b.set(start));
        let stmts: Result<Vec<Stmt>> =
            program.into_inner().filter(|p| p.as_rule() != Rule::EOI).map(statement).collect();
        BASE.with(|b| b.set(0));
        for stmt in stmts? {
            check_depth(&stmt)?;
            out.push(stmt);
        }
    }
    Ok(out)
}

/// Byte ranges of the statements: text between separators (newlines and
/// `;`), comments included (a `;` in a comment separates nothing).
fn statement_ranges(src: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut comment = false;
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => comment = true,
            b'\n' | b'\r' => {
                out.push((start, i));
                comment = false;
                if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            b';' if !comment => {
                out.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push((start, src.len()));
    out
}

/// Parses again with pest's record of what it tried at the furthest point,
/// which makes better messages but slows every parse, so it is on only here.
/// The setting is global: a lock keeps two threads from turning it off
/// under each other.
fn detailed_error(text: &str) -> Option<pest::error::Error<Rule>> {
    static DETAIL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = DETAIL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    pest::set_error_detail(true);
    let result = Grammar::parse(Rule::program, text);
    pest::set_error_detail(false);
    result.err()
}

fn check_depth(stmt: &Stmt) -> Result<()> {
    if let Stmt::DerivativeDef { query, .. } = stmt {
        return check_depth(query);
    }
    if let Stmt::Query { expr, .. } | Stmt::Def { body: expr, .. } = stmt {
        if expr.depth() > MAX_DEPTH {
            return Err(Error::limit(expr.span, format!("this expression nests more than {MAX_DEPTH} levels deep")));
        }
    }
    Ok(())
}

thread_local! {
    /// Where the statement being converted starts in the script: pest's
    /// positions are relative to the statement.
    static BASE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Parses one expression (no statements around it).
///
/// ```
/// let e = matdiff::syntax::parse_expr("(n2 - y)(n2 - y)^T").unwrap();
/// assert!(matches!(e.kind, matdiff::ast::ExprKind::Binary(matdiff::ast::BinOp::Mul, _, _)));
/// ```
pub fn parse_expr(src: &str) -> Result<Expr> {
    match parse(src)?.pop() {
        Some(Stmt::Query { kind: QueryKind::Show, expr, .. }) => Ok(expr),
        _ => Err(Error::syntax(Span::new(0, src.len()), "expected one expression", "not an expression")),
    }
}

/// Rejects inputs that would make parsing slow or deep before pest sees them.
fn check_limits(src: &str) -> Result<()> {
    let mut offset = 0;
    for line in src.split('\n') {
        if line.len() > MAX_LINE {
            return Err(Error::limit(
                Span::new(offset, offset),
                format!("line is {} bytes long; the longest line accepted is {MAX_LINE} bytes", line.len()),
            ));
        }
        offset += line.len() + 1;
    }
    let mut depth = 0usize;
    let mut bars = 0usize;
    let mut comment = false;
    for (i, c) in src.char_indices() {
        if comment && c != '\n' {
            continue;
        }
        match c {
            '#' => comment = true,
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            // Norm bars cannot tell opening from closing here; count them all.
            '‖' | '|' => bars += 1,
            '\n' => {
                comment = false;
                depth = 0;
                bars = 0;
            }
            _ => {}
        }
        if depth > MAX_NESTING || bars > 2 * MAX_NESTING {
            return Err(Error::limit(
                Span::new(i, i + c.len_utf8()),
                format!("brackets nest more than {MAX_NESTING} levels deep"),
            ));
        }
    }
    Ok(())
}

/// Finds, in the first statement that has one, a bracket that is never
/// closed or a `)` that closes nothing. Returns where that statement starts,
/// and the error.
fn check_brackets(src: &str) -> Option<(usize, Error)> {
    let never_closed = |at: usize, bracket: &str| {
        let (what, help) = if bracket == "(" {
            ("(", "add `)` where the bracketed expression ends")
        } else {
            (bracket, "a norm is written between two bars, as in ‖x‖ or ||x||")
        };
        Error::syntax(
            Span::new(at, at + bracket.len()),
            format!("this `{what}` is never closed"),
            "not closed by the end of the statement",
        )
        .with_help(help)
    };
    let mut open: Vec<(usize, &'static str)> = Vec::new();
    let mut stmt_start = 0;
    let mut comment = false;
    let mut chars = src.char_indices().peekable();
    loop {
        let next = chars.next();
        let (i, c) = next.unwrap_or((src.len(), '\n'));
        if comment && c != '\n' {
            continue;
        }
        match c {
            '#' => comment = true,
            '\n' | '\r' | ';' => {
                comment = false;
                if let Some(&(at, b)) = open.last() {
                    return Some((stmt_start, never_closed(at, b)));
                }
                stmt_start = i + 1;
            }
            '(' => open.push((i, "(")),
            ')' => match open.last() {
                Some((_, "(")) => {
                    open.pop();
                }
                Some(&(at, b)) => return Some((stmt_start, never_closed(at, b))),
                None => {
                    let e = Error::syntax(Span::new(i, i + 1), "this `)` has no matching `(`", "unmatched `)`")
                        .with_help("remove it, or add `(` where the bracketed expression starts");
                    return Some((stmt_start, e));
                }
            },
            '‖' | '|' => {
                let bar = if c == '‖' {
                    "‖"
                } else if chars.next_if(|&(_, d)| d == '|').is_some() {
                    "||"
                } else {
                    continue;
                };
                if open.last().is_some_and(|(_, b)| *b == bar) {
                    open.pop();
                } else {
                    open.push((i, bar));
                }
            }
            _ => {}
        }
        // The end of the text ended the last statement above.
        next?;
    }
}

fn span(p: &Pair<Rule>) -> Span {
    let s = p.as_span();
    let base = BASE.with(|b| b.get());
    Span::new(base + s.start(), base + s.end())
}

/// What the parser was ready to accept where it stopped, in words.
#[derive(Default)]
struct Expected {
    expr: bool,
    name_or_paren: bool,
    size: bool,
    shape: bool,
    variable: bool,
    op: bool,
    close: bool,
    comma: bool,
    equals: bool,
    times: bool,
    reals: bool,
    arrow: bool,
    property: bool,
    end: bool,
}

impl Expected {
    fn rule(&mut self, r: Rule) {
        match r {
            Rule::EOI => self.end = true,
            Rule::expr
            | Rule::paren
            | Rule::call
            | Rule::callee
            | Rule::norm
            | Rule::identity
            | Rule::number
            | Rule::ident
            | Rule::neg => self.expr = true,
            Rule::postfix_free => self.name_or_paren = true,
            Rule::add
            | Rule::sub
            | Rule::mul
            | Rule::div
            | Rule::kron
            | Rule::hadamard
            | Rule::hadamard_div
            | Rule::implicit
            | Rule::transpose
            | Rule::inverse
            | Rule::power
            | Rule::superscript
            | Rule::hadamard_pow
            | Rule::primes
            | Rule::vec_inverse => self.op = true,
            Rule::dim | Rule::integer => self.size = true,
            Rule::shape_spec | Rule::scalar_kw => self.shape = true,
            Rule::property => self.property = true,
            Rule::wrt | Rule::vec_wrt | Rule::tpose => self.variable = true,
            Rule::signed_int | Rule::signed_number => self.expr = true,
            _ => {}
        }
    }

    /// A literal the parser wanted, as pest prints it (`0..9` for a range).
    fn token(&mut self, token: &str) {
        let chars: Vec<char> = token.chars().collect();
        if chars.len() == 4 && chars[1] == '.' && chars[2] == '.' {
            // A range of letters or digits: a name or a number could go here.
            self.expr = true;
            return;
        }
        match token {
            "\n" | "\r\n" | "\r" | ";" => self.end = true,
            ")" => self.close = true,
            "," => self.comma = true,
            "=" => self.equals = true,
            "x" | "×" => self.times = true,
            "R" | "ℝ" => self.reals = true,
            "->" | "→" => self.arrow = true,
            "symmetric" => self.property = true,
            "scalar" => self.shape = true,
            "vec" => self.variable = true,
            "(" | "I" | "‖" | "||" | "-" | "−" => self.expr = true,
            "+" | "*" | "·" | "/" | "⊗" | "∘" | "⊙" | ".*" | "./" | ".^" | "'" | "ᵀ" | "^" | "^T" | "^⊤" | "^-1"
            | "^(-1)" | "⁻¹" | "⁻" | "²" | "³" => self.op = true,
            _ => {}
        }
    }

    /// Drops what the context makes irrelevant (after an operand, any
    /// operand could follow as a product, but "an operator" says it).
    fn tidy(&mut self) {
        if self.times || self.property || self.shape || self.size {
            // In a declaration: `*` means `x`, digits continue a size.
            self.op = false;
            self.expr = false;
        }
        if self.shape {
            self.size = false;
        }
        if self.reals {
            self.expr = false;
        }
        if self.op || self.variable || self.name_or_paren {
            self.expr = false;
        }
    }

    fn words(&self) -> Vec<&'static str> {
        let all = [
            (self.expr, "an expression"),
            (self.name_or_paren, "a name or a bracketed expression"),
            (self.shape, "a shape (`n x m`, `n` or `scalar`)"),
            (self.size, "a size (a number or a name)"),
            (self.variable, "a variable (`X`, `Xᵀ` or `vec(X)ᵀ`)"),
            (self.op, "an operator"),
            (self.close, "`)`"),
            (self.comma, "`,`"),
            (self.equals, "`=`"),
            (self.times, "`x`"),
            (self.reals, "`R`"),
            (self.arrow, "`->`"),
            (self.property, "`symmetric`"),
            (self.end, "the end of the statement"),
        ];
        all.iter().filter(|(on, _)| *on).map(|(_, w)| *w).collect()
    }
}

/// Characters the language uses (besides ASCII letters, digits and spaces).
const SYMBOLS: &str = "()+-−*·/⊗∘⊙.^'ᵀ⊤⁻⁰¹²³⁴⁵⁶⁷⁸⁹‖|,;:=#∂→>_×ℝ";

fn known_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || c.is_whitespace()
        || ('\u{3B1}'..='\u{3C9}').contains(&c)
        || ('\u{391}'..='\u{3A9}').contains(&c)
        || SYMBOLS.contains(c)
}

/// The token at the start of `rest`, for "found …".
fn token_at(rest: &str) -> String {
    const MULTI: &[&str] = &["^(-1)", "^-1", "^T", "^⊤", "->", "./", ".*", ".^", "||", "⁻¹"];
    if let Some(m) = MULTI.iter().find(|m| rest.starts_with(**m)) {
        return m.to_string();
    }
    let mut chars = rest.chars();
    let Some(c) = chars.next() else { return String::new() };
    let word = |c: char| c.is_alphanumeric() || c == '_';
    if word(c) {
        rest.chars().take_while(|&c| word(c)).take(20).collect()
    } else if c == '.' && chars.next().is_some_and(|d| d.is_ascii_digit()) {
        rest.chars().take_while(|&c| c == '.' || c.is_ascii_digit()).take(20).collect()
    } else {
        c.to_string()
    }
}

/// The statement around a byte offset, without leading spaces.
fn statement_around(src: &str, at: usize) -> Span {
    let at = at.min(src.len());
    let start = src[..at].rfind(['\n', ';']).map_or(0, |i| i + 1);
    let start = start + (src[start..].len() - src[start..].trim_start_matches([' ', '\t']).len());
    let end = src[at..].find(['\n', ';']).map_or(src.len(), |i| at + i);
    Span::new(start.min(end), end)
}

fn syntax_error(src: &str, e: pest::error::Error<Rule>) -> Error {
    use pest::error::{ErrorVariant, InputLocation};
    let loc = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let positives = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.as_slice(),
        ErrorVariant::CustomError { .. } => {
            return Error::syntax(
                statement_around(src, loc),
                "this statement is too complex for the parser (too much nesting or ambiguity)",
                "too complex",
            )
            .with_help("split it with definitions, as in `t = …` on one line and then `t` in the next");
        }
    };
    // The parser's furthest attempt, with the literal tokens it wanted there,
    // says more than the rules alone.
    let attempts = e.parse_attempts().filter(|a| a.max_position >= loc && a.max_position <= src.len());
    let pos = attempts.as_ref().map_or(loc, |a| a.max_position);
    let mut want = Expected::default();
    if pos == loc {
        positives.iter().for_each(|r| want.rule(*r));
    }
    for t in attempts.as_ref().map(|a| a.expected_tokens()).unwrap_or_default() {
        want.token(&t.to_string());
    }
    want.tidy();
    let words = want.words();
    let rest = &src[pos..];
    let at_end = rest.is_empty() || rest.starts_with('\n') || rest.starts_with("\r\n");
    let found = token_at(rest);
    let span = Span::new(pos, pos + if at_end { 0 } else { rest.chars().next().map_or(0, char::len_utf8) });
    if let Some(c) = rest.chars().next().filter(|c| !known_char(*c)) {
        return Error::syntax(span, format!("`{c}` is not part of the matdiff language"), "unknown symbol").with_help(
            "names are Latin or Greek letters, digits and _; operators are + - * / ./ ∘ (or .*) ⊗ ^ and ' or ᵀ",
        );
    }
    let found_desc = if at_end { "the end of the line".to_string() } else { format!("`{found}`") };
    let expected = join_or(&words);
    let message = if words.is_empty() {
        format!("unexpected {found_desc}")
    } else {
        format!("expected {expected}, found {found_desc}")
    };
    let label = if words.is_empty() { "unexpected".to_string() } else { format!("expected {expected}") };
    let err = Error::syntax(span, message, label);
    let statement = &src[statement_around(src, pos).start.min(pos)..pos];
    let in_list = statement.contains("/∂(") && !statement[statement.rfind("/∂(").unwrap_or(0)..].contains(')');
    let help = if in_list && (want.comma || want.close || want.expr) {
        Some("list the variables by name, as in `∂L/∂(W1, b1, W2, b2)` (or `grad(L, W1, b1, W2, b2)`)")
    } else if want.reals {
        Some("a scalar function is declared as `f: R -> R` (or `f, g: R -> R`)")
    } else if want.times || want.property || want.size || want.shape {
        Some("a shape is `rows x columns` with whole-number or named sizes, as in `W: 2 x 3`, `x: n` or `s: scalar`, optionally followed by `symmetric`")
    } else if want.variable {
        Some("differentiate with respect to a declared name: `∂L/∂X`, `∂y/∂xᵀ` or `∂L/∂vec(W)ᵀ`")
    } else if want.name_or_paren {
        Some("write the function as a name or in brackets: `∂L/∂X` or `∂(xᵀ A x)/∂x`")
    } else if found == ":" {
        Some("a declaration is `name: shape`, as in `W: 2 x 3`; declare several names with commas: `A, B: n x n`")
    } else if found == "=" {
        Some("a definition has a single name on the left: `name = expression`")
    } else {
        None
    };
    match help {
        Some(h) => err.with_help(h),
        None => err,
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
    Ident { name: p.as_str().to_string(), span: span(&p) }
}

fn statement(p: Pair<Rule>) -> Result<Stmt> {
    let sp = span(&p);
    match p.as_rule() {
        Rule::fn_decl => {
            let names = p.into_inner().next().expect("names").into_inner().map(ident).collect();
            Ok(Stmt::FnDecl { names })
        }
        Rule::decl => {
            let mut inner = p.into_inner();
            let names = inner.next().expect("names").into_inner().map(ident).collect();
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
            Ok(Stmt::Decl { names, shape, symmetric, shape_span })
        }
        Rule::definition => {
            let mut inner = p.into_inner();
            let name = ident(inner.next().expect("name"));
            let rhs = inner.next().expect("body");
            if rhs.as_rule() == Rule::expr {
                return Ok(Stmt::Def { name, body: expr(rhs)? });
            }
            let rhs_span = span(&rhs);
            match statement(rhs)? {
                Stmt::Query { kind: QueryKind::Simplify, expr: body, .. } => Ok(Stmt::Def { name, body }),
                q @ Stmt::Query { kind: QueryKind::Gradient | QueryKind::Jacobian | QueryKind::Hessian, .. } => {
                    Ok(Stmt::DerivativeDef { name, query: Box::new(q) })
                }
                _ => Err(Error::syntax(rhs_span, "a definition holds one value", "not a value").with_help(
                    "define one derivative at a time, as in `g = ∂L/∂W` or `H = hessian(L, w)`; \
                     several gradients at once are a query of their own: `∂L/∂(W1, b1)`",
                )),
            }
        }
        Rule::third_query => {
            let e = expr(p.into_inner().next().expect("expr"))?;
            Ok(Stmt::Query { kind: QueryKind::ThirdDifferential, expr: e, wrt: None, wrt2: None, span: sp })
        }
        Rule::second_query => {
            let e = expr(p.into_inner().next().expect("expr"))?;
            Ok(Stmt::Query { kind: QueryKind::SecondDifferential, expr: e, wrt: None, wrt2: None, span: sp })
        }
        Rule::diff_query => {
            let e = expr(p.into_inner().next().expect("expr"))?;
            Ok(Stmt::Query { kind: QueryKind::Differential, expr: e, wrt: None, wrt2: None, span: sp })
        }
        Rule::partial_query => partial(p),
        Rule::call_query => {
            let mut inner = p.into_inner();
            let kw = inner.next().expect("kw").as_str();
            let args: Vec<Expr> = inner.map(expr).collect::<Result<_>>()?;
            call_query(kw, args, sp)
        }
        Rule::expr => Ok(Stmt::Query { kind: QueryKind::Show, expr: expr(p)?, wrt: None, wrt2: None, span: sp }),
        r => unreachable!("statement rule {r:?}"),
    }
}

/// `∂F/∂X`, `∂F/∂Xᵀ`, `∂F/∂vec(X)ᵀ` or `∂F/∂(X, Y, …)`, as a query or
/// inside an expression.
fn partial(p: Pair<Rule>) -> Result<Stmt> {
    let sp = span(&p);
    let mut inner = p.into_inner();
    let f = inner.next().expect("f").into_inner().next().expect("f");
    let f = primary(f)?;
    let wrt = inner.next().expect("wrt");
    if wrt.as_rule() == Rule::wrt_list {
        return Ok(Stmt::Gradients { expr: f, vars: wrt.into_inner().map(ident).collect(), span: sp });
    }
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
    Ok(Stmt::Query { kind, expr: f, wrt: var, wrt2: None, span: sp })
}

/// `grad(F, X)`, `jacobian(F, X)`, `hessian(F, X)`, `simplify(e)` and
/// `shape(e)`, with their arguments checked.
fn call_query(kw: &str, args: Vec<Expr>, sp: Span) -> Result<Stmt> {
    let kind = match kw {
        "grad" => QueryKind::Gradient,
        "jacobian" => QueryKind::Jacobian,
        "hessian" => QueryKind::Hessian,
        "simplify" => QueryKind::Simplify,
        _ => QueryKind::Shape,
    };
    let want = if matches!(kind, QueryKind::Simplify | QueryKind::Shape) { 1 } else { 2 };
    let mixed = kind == QueryKind::Hessian && args.len() == 3;
    let several = kind == QueryKind::Gradient && args.len() > 2;
    if args.len() != want && !mixed && !several {
        let usage = if want == 1 { format!("{kw}(expression)") } else { format!("{kw}(F, X)") };
        return Err(Error::syntax(
            sp,
            format!(
                "`{}` takes {want}{} argument{}, found {}",
                kw,
                match kind {
                    QueryKind::Hessian => " or 3",
                    QueryKind::Gradient => " or more",
                    _ => "",
                },
                if want == 1 { "" } else { "s" },
                args.len()
            ),
            "wrong number of arguments",
        )
        .with_help(if want == 1 {
            format!("write {usage}")
        } else if kind == QueryKind::Hessian {
            "write hessian(F, X), or hessian(F, X, Y) for the mixed derivative".to_string()
        } else if kind == QueryKind::Gradient {
            "write grad(F, X), or grad(F, X, Y, …) for several gradients in one backward pass".to_string()
        } else {
            format!("write {usage}, where X is the declared matrix to differentiate with respect to")
        }));
    }
    let mut args = args.into_iter();
    let f = args.next().expect("f");
    let variable = |a: Option<Expr>| match a {
        None => Ok(None),
        Some(Expr { kind: ExprKind::Name(n), span }) => Ok(Some(Ident { name: n, span })),
        Some(other) => Err(Error::name(
            other.span,
            "derivatives are taken with respect to a declared matrix, written by its name",
            "not a name",
        )
        .with_help(format!("write the matrix's name, as in {}(F, X)", kw))),
    };
    if several {
        let vars = args.map(|a| variable(Some(a)).map(|v| v.expect("a variable"))).collect::<Result<_>>()?;
        return Ok(Stmt::Gradients { expr: f, vars, span: sp });
    }
    let wrt = variable(args.next())?;
    let wrt2 = variable(args.next())?;
    Ok(Stmt::Query { kind, expr: f, wrt, wrt2, span: sp })
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
            if n > crate::shape::MAX_SIZE {
                return Err(Error::limit(sp, format!("size {n} is too large (at most {})", crate::shape::MAX_SIZE)));
            }
            Ok(DimAst::Num(n))
        }
        _ => Ok(DimAst::Sym(inner.as_str().to_string())),
    }
}

fn expr(p: Pair<Rule>) -> Result<Expr> {
    // The Pratt parser recurses once per prefix operator; refuse long runs
    // before it starts, so that no input can exhaust the stack.
    let mut run = 0;
    for q in p.clone().into_inner() {
        run = if q.as_rule() == Rule::neg { run + 1 } else { 0 };
        if run > MAX_DEPTH {
            return Err(Error::limit(span(&q), format!("this expression nests more than {MAX_DEPTH} levels deep")));
        }
    }
    // Each node carries its depth, so that a tree deeper than the limit is
    // never built (taking it apart would recurse as deep).
    let deeper = |e: Expr, depth: usize| -> Result<(Expr, usize)> {
        if depth > MAX_DEPTH {
            return Err(Error::limit(e.span, format!("this expression nests more than {MAX_DEPTH} levels deep")));
        }
        Ok((e, depth))
    };
    let tree = pratt()
        .map_primary(|q| {
            let e = primary(q)?;
            let d = e.depth();
            deeper(e, d)
        })
        .map_prefix(|op, rhs| {
            let (rhs, d) = rhs?;
            let sp = span(&op).to(rhs.span);
            deeper(Expr { kind: ExprKind::Neg(Box::new(rhs)), span: sp }, d + 1)
        })
        .map_postfix(|lhs, op| {
            let (lhs, d) = lhs?;
            let sp = lhs.span.to(span(&op));
            let post = postfix(op)?;
            deeper(Expr { kind: ExprKind::Postfix(Box::new(lhs), post), span: sp }, d + 1)
        })
        .map_infix(|lhs, op, rhs| {
            let ((lhs, dl), (rhs, dr)) = (lhs?, rhs?);
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
            deeper(Expr { kind: ExprKind::Binary(bop, Box::new(lhs), Box::new(rhs)), span: sp }, dl.max(dr) + 1)
        })
        .parse(p.into_inner());
    tree.map(|(e, _)| e)
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
                return Err(Error::limit(sp, format!("exponent {k} is too large (at most 1000 in size)")));
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
                        return Err(Error::shape(sp, "division by zero in the exponent", "zero denominator"));
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
        return Err(Error::limit(sp, format!("the number {body} has too many digits (at most 40)")));
    }
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = format!("{int}{frac}");
    let numer: BigInt = digits.parse().map_err(|_| Error::limit(sp, "malformed number"))?;
    let denom = num_traits::pow(BigInt::from(10), frac.len());
    let r = BigRational::new(numer, if denom.is_zero() { BigInt::one() } else { denom });
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
        Rule::partial_expr => ExprKind::Derivative(Box::new(partial(p)?)),
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
            let args: Vec<Expr> = inner.map(expr).collect::<Result<_>>()?;
            let derivative = matches!(name.name.as_str(), "grad" | "jacobian" | "hessian") && primes == 0 && !inverse;
            if !derivative {
                ExprKind::Call { name, primes, inverse, args }
            } else {
                match call_query(&name.name, args, sp)? {
                    q @ Stmt::Query { .. } => ExprKind::Derivative(Box::new(q)),
                    _ => {
                        return Err(Error::syntax(
                            sp,
                            "several gradients at once are not one value",
                            "several gradients",
                        )
                        .with_help(
                            "ask for them on a line of their own, as in `grad(L, W1, b1)`, or take one at a time",
                        ))
                    }
                }
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
                ExprKind::Call { name, primes, args, .. } => {
                    format!(
                        "({}{} {})",
                        name.name,
                        "'".repeat(*primes),
                        args.iter().map(go).collect::<Vec<_>>().join(" ")
                    )
                }
                ExprKind::Derivative(q) => match &**q {
                    Stmt::Query { kind, expr, wrt, .. } => {
                        format!("({kind:?} {} {})", go(expr), wrt.as_ref().map_or("", |w| w.name.as_str()))
                    }
                    _ => "?".into(),
                },
            }
        }
        go(&parse_expr(src).unwrap())
    }

    #[test]
    fn juxtaposition_is_a_product() {
        assert_eq!(show("(n2 - y)(n2 - y)^T"), "(Mul (Sub n2 y) (Transpose (Sub n2 y)))");
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
        assert_eq!(show("f'(d2) .* x ./ y"), "(HadamardDiv (Hadamard (f' d2) x) y)");
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(show("0.5"), "1/2");
        assert_eq!(show("1.25"), "5/4");
        assert_eq!(show("A .^ (1/2)"), "(HadamardPow(Ratio { numer: 1, denom: 2 }) A)");
    }

    #[test]
    fn statements() {
        let s = parse("W: 2 x 3; A, B: n × n symmetric\nf, g: R -> R\nd1 = n0 W1 + b1\nd(L)\n∂L/∂vec(W2)^T\n∂L/∂n2ᵀ\ngrad(L, W1)\n# comment\n").unwrap();
        assert_eq!(s.len(), 8);
        assert!(matches!(&s[1], Stmt::Decl { symmetric: true, names, .. } if names.len() == 2));
        assert!(matches!(&s[5], Stmt::Query { kind: QueryKind::Jacobian, .. }));
        assert!(matches!(&s[6], Stmt::Query { kind: QueryKind::Jacobian, .. }));
        assert!(matches!(&s[7], Stmt::Query { kind: QueryKind::Gradient, .. }));
    }

    #[test]
    fn errors_point_at_the_text() {
        // An unclosed bracket is reported where it opens.
        let e = parse("A: 2 x 2\nB = (A + A").unwrap_err();
        assert_eq!(e.span().line_col("A: 2 x 2\nB = (A + A"), (2, 5));
        let e = parse("A: 2 x 2\nB = A + ").unwrap_err();
        assert_eq!(e.span().line_col("A: 2 x 2\nB = A + "), (2, 9));
        assert!(parse(&"(".repeat(10_000)).is_err());
    }

    #[test]
    fn an_earlier_error_is_reported_before_an_unclosed_bracket() {
        let src = "A: 2 x\nB = (A";
        assert_eq!(parse(src).unwrap_err().span().line_col(src), (1, 7));
        let src = "# a comment with ( is ignored\nA: 2 x 2\nB = A + A)";
        assert_eq!(parse(src).unwrap_err().span().line_col(src), (3, 10));
    }

    #[test]
    fn derivatives_inside_expressions() {
        assert_eq!(show("‖∂f/∂x‖^2"), "(Power(2) (norm (Gradient f x)))");
        assert_eq!(show("hessian(f, x) v"), "(Mul (Hessian f x) v)");
        assert_eq!(show("vᵀ ∂(A x)/∂xᵀ"), "(Mul (Transpose v) (Jacobian (Mul A x) x))");
        assert_eq!(show("2 grad(tr(A), A)"), "(Mul 2 (Gradient (tr A) A))");
        // Several gradients at once are a query, not a value.
        assert!(parse("A: n x n; B = grad(tr(A), A, A) + A").is_err());
        // A derivative on its own line is still a query.
        assert!(matches!(parse("∂f/∂x").unwrap()[0], Stmt::Query { kind: QueryKind::Gradient, .. }));
    }

    #[test]
    fn partial_of_a_call() {
        let s = parse("A: n x n\n∂tr(A)/∂A").unwrap();
        assert!(matches!(
            &s[1],
            Stmt::Query { kind: QueryKind::Gradient, expr: Expr { kind: ExprKind::Call { .. }, .. }, .. }
        ));
    }

    #[test]
    fn failed_calls_are_not_parsed_twice() {
        // Each level used to be parsed as a call and again as a name times
        // brackets: exponential time.
        let src = format!("y = {}A,{}", "a(".repeat(150), ")".repeat(150));
        let start = std::time::Instant::now();
        assert!(parse(&src).is_err());
        assert!(start.elapsed() < std::time::Duration::from_secs(1), "{:?}", start.elapsed());
    }
}
