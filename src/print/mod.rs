//! One precedence-aware printer for every notation.
//!
//! Precedence levels mirror the parser's Pratt table, so that the printed
//! text parses back to an equal expression with no redundant parentheses.
//! Products are associative, so chains print flat: `(n1ᵀ ⊗ I) diag(f2'(d2)) 2(n2 - y)ᵀ`.

use crate::ast::Prec;
use crate::ir::{Expr, Op};
use num_rational::BigRational;
use num_traits::{One, Signed};

pub mod latex;
pub use latex::latex;

/// Expressions debug-print as their text, which is what a failing test
/// wants to show.
impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&text(self))
    }
}

/// Whether `e` prints with a division last (`x / m`, `2 y / m`), so that
/// a bracket right after it would make the divisor read as a call.
fn ends_with_division(e: &Expr) -> bool {
    match &e.op {
        Op::Div(..) => true,
        Op::MatMul(_, b) => ends_with_division(b),
        Op::Scale(s, x) => match s.as_num() {
            Some(c) if !c.is_integer() && c.numer().is_one() => true,
            _ => ends_with_division(x),
        },
        _ => false,
    }
}

/// Which spelling to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notation {
    /// Unicode: `Xᵀ`, `X⁻¹`, `A ⊗ B`, `a ∘ b`, `‖x‖²`, `σ(x)`.
    Unicode,
    /// ASCII: `X^T`, `X^-1`, `kron(A, B)`, `a .* b`, `||x||^2`, `sigmoid(x)`.
    Ascii,
}

/// The terms of a sum in printing order: a sum that starts with a negative
/// term starts instead with its first positive one, as `1 - tanh(x)²` is
/// written, not `-tanh(x)² + 1`.
pub(crate) fn positive_first(ts: &[Expr]) -> std::borrow::Cow<'_, [Expr]> {
    let negative = |t: &Expr| t.split_coef().0.is_negative();
    match ts.iter().position(|t| !negative(t)) {
        Some(j) if j > 0 => {
            let mut v = ts.to_vec();
            let t = v.remove(j);
            v.insert(0, t);
            std::borrow::Cow::Owned(v)
        }
        _ => std::borrow::Cow::Borrowed(ts),
    }
}

/// Unicode text.
///
/// ```
/// use matdiff::{ir, shape::{Dim, Shape}};
/// let x = ir::var("x", Shape::new(Dim::sym("n"), Dim::one()), false);
/// assert_eq!(matdiff::print::text(&ir::matmul(ir::transpose(x.clone()), x)), "xᵀ x");
/// ```
pub fn text(e: &Expr) -> String {
    render(e, Notation::Unicode)
}

/// ASCII text.
pub fn ascii(e: &Expr) -> String {
    render(e, Notation::Ascii)
}

/// Text in the given notation.
pub fn render(e: &Expr, n: Notation) -> String {
    let mut out = String::new();
    Printer { n, sized: false }.go(e, Prec::Top, &mut out);
    out
}

/// Text in the given notation with every identity's size written (`I_n`,
/// `(I_m ⊗ I_n)` for a product of sizes), for an answer whose bare `I`
/// would not read back on its own.
///
/// ```
/// use matdiff::{ir, print, shape::{Dim, Shape}};
/// let i = ir::identity(Dim::sym("m").mul(&Dim::sym("n")));
/// assert_eq!(print::text(&i), "I");
/// assert_eq!(print::render_sized(&i, print::Notation::Unicode), "(I_m ⊗ I_n)");
/// ```
pub fn render_sized(e: &Expr, n: Notation) -> String {
    let mut out = String::new();
    Printer { n, sized: true }.go(e, Prec::Top, &mut out);
    out
}

const ADD: Prec = Prec::Sum;
const NEG: Prec = Prec::Neg;
const HAD: Prec = Prec::Elementwise;
const KRON: Prec = Prec::Kron;
const MUL: Prec = Prec::Product;
const POST: Prec = Prec::Postfix;
const ATOM: Prec = Prec::Atom;

struct Printer {
    n: Notation,
    /// Whether identities print with their sizes.
    sized: bool,
}

/// A positive integer exponent that prints as a superscript.
pub(crate) fn small_power(k: &BigRational) -> Option<i64> {
    use num_traits::ToPrimitive;
    (k.is_integer() && k.is_positive()).then(|| k.to_integer().to_i64()).flatten()
}

fn superscript(k: i64) -> String {
    let digits = "⁰¹²³⁴⁵⁶⁷⁸⁹";
    let mut s = String::new();
    if k < 0 {
        s.push('⁻');
    }
    for c in k.unsigned_abs().to_string().chars() {
        s.push(digits.chars().nth(c as usize - '0' as usize).unwrap_or('?'));
    }
    s
}

fn rational(r: &BigRational) -> String {
    if r.is_integer() {
        r.numer().to_string()
    } else {
        format!("{}/{}", r.numer(), r.denom())
    }
}

impl Printer {
    fn ascii(&self) -> bool {
        self.n == Notation::Ascii
    }

    /// The precedence level of the node as printed.
    fn level(&self, e: &Expr) -> Prec {
        match &e.op {
            Op::Add(_) => ADD,
            Op::Num(r) if r.is_negative() => NEG,
            Op::Num(r) if !r.is_integer() => MUL,
            Op::Scale(s, _) if s.as_num().is_some_and(|c| c.is_negative()) => NEG,
            Op::Scale(..) | Op::MatMul(..) | Op::Div(..) => MUL,
            Op::Size(d) if d.as_product_text().contains(' ') => MUL,
            Op::Hadamard(..) | Op::HadamardDiv(..) => HAD,
            Op::Kron(..) if !self.ascii() => KRON,
            Op::Transpose(_) | Op::Inverse(_) | Op::Power(..) | Op::HadamardPow(..) => POST,
            _ => ATOM,
        }
    }

    fn go(&self, e: &Expr, min: Prec, out: &mut String) {
        if self.level(e) < min {
            out.push('(');
            self.body(e, out);
            out.push(')');
        } else {
            self.body(e, out);
        }
    }

    fn power(&self, x: &Expr, k: i64, out: &mut String) {
        let ascii = self.ascii();
        // `(X²)³` needs its parentheses: `X²³` would read as X to the 23.
        let nested = matches!(x.op, Op::Power(..))
            || matches!(&x.op, Op::HadamardPow(y, j) if y.shape.is_scalar() && small_power(j).is_some());
        let min = if nested && !ascii { ATOM } else { POST };
        self.go(x, min, out);
        if ascii {
            out.push_str(&format!("^{k}"));
        } else {
            out.push_str(&superscript(k));
        }
    }

    fn call(&self, name: &str, args: &[&Expr], out: &mut String) {
        out.push_str(name);
        out.push('(');
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            self.go(a, Prec::Top, out);
        }
        out.push(')');
    }

    /// The value a broadcast operand spreads, if it is one: `s` for
    /// `s ones(m, n)`, the row `r` for `ones(m, 1) r`, the column `c` for
    /// `c ones(1, n)`.
    fn spread(e: &Expr) -> Option<Expr> {
        let (c, base) = e.split_coef();
        let row = |x: &Expr| x.shape.rows.is_one();
        let col = |x: &Expr| x.shape.cols.is_one();
        match &base.op {
            Op::Scale(s, ones) if matches!(ones.op, Op::Ones) => Some(crate::ir::scale(c, s.clone())),
            Op::MatMul(ones, r) if matches!(ones.op, Op::Ones) && col(ones) && row(r) => {
                Some(crate::ir::scale(c, r.clone()))
            }
            Op::MatMul(v, ones) if matches!(ones.op, Op::Ones) && row(ones) && col(v) => {
                Some(crate::ir::scale(c, v.clone()))
            }
            _ => None,
        }
    }

    /// `1` for the all-ones matrix where a number broadcasts (sums, `./`),
    /// and `s` for `s ones(m, n)`: the language broadcasts a 1×1 operand
    /// there, so the text reads back as the same matrix. A caller makes sure
    /// another operand carries the shape.
    fn operand(&self, e: &Expr, min: Prec, out: &mut String) {
        if let Some(s) = Self::spread(e) {
            return self.go(&s, min.max(POST), out);
        }
        let (c, base) = e.split_coef();
        if matches!(base.op, Op::Ones) {
            let s = rational(&c);
            if c.is_negative() || !c.is_integer() {
                out.push('(');
                out.push_str(&s);
                out.push(')');
            } else {
                out.push_str(&s);
            }
        } else {
            self.go(e, min, out)
        }
    }

    fn body(&self, e: &Expr, out: &mut String) {
        let ascii = self.ascii();
        match &e.op {
            Op::Var { name, .. } => out.push_str(name),
            Op::Diff(name) => {
                out.push('d');
                out.push_str(name);
            }
            Op::Num(r) => out.push_str(&rational(r)),
            Op::Identity if self.sized => {
                let d = &e.shape.rows;
                let mut parts: Vec<String> = d.symbols().map(|s| format!("I_{s}")).collect();
                if d.coef() != 1 || parts.is_empty() {
                    parts.insert(0, format!("I_{}", d.coef()));
                }
                if parts.len() == 1 {
                    out.push_str(&parts[0]);
                } else {
                    let sep = if self.ascii() { ", " } else { " ⊗ " };
                    let (open, close) = if self.ascii() { ("kron(", ")") } else { ("(", ")") };
                    out.push_str(open);
                    if self.ascii() && parts.len() > 2 {
                        // kron takes two arguments: nest them.
                        let last = parts.pop().unwrap_or_default();
                        let inner = parts.iter().rev().fold(last, |acc, p| format!("kron({p}, {acc})"));
                        out.push_str(&inner[5..inner.len() - 1]);
                    } else {
                        out.push_str(&parts.join(sep));
                    }
                    out.push_str(close);
                }
            }
            Op::Identity => out.push('I'),
            Op::Zero => out.push('0'),
            Op::Ones => {
                out.push_str(&format!("ones({}, {})", e.shape.rows.as_product_text(), e.shape.cols.as_product_text()))
            }
            Op::Size(d) => out.push_str(&d.as_product_text()),
            Op::Commutation(r, c, _) => out.push_str(&format!("K_({},{})", r.as_product_text(), c.as_product_text())),
            Op::Add(ts) => {
                let ts = &positive_first(ts);
                // A broadcast term prints as the value it spreads only where
                // the sum read left to right already has its full shape, or
                // gets it from the very next term: two broadcasts never meet.
                let spread = |t: &Expr| matches!(t.split_coef().1.op, Op::Ones) || Self::spread(t).is_some();
                let full = |i: usize| ts.get(i).is_some_and(|t| !spread(t));
                let mut shaped = e.shape.is_scalar() || full(1);
                for (i, t) in ts.iter().enumerate() {
                    let term = |t: &Expr, min: Prec, out: &mut String| {
                        if shaped {
                            self.operand(t, min, out)
                        } else {
                            self.go(t, min, out)
                        }
                    };
                    let (c, _) = t.split_coef();
                    if i == 0 {
                        term(t, ADD, out);
                    } else if c.is_negative() {
                        out.push_str(" - ");
                        term(&crate::ir::neg(t.clone()), NEG, out);
                    } else {
                        out.push_str(" + ");
                        term(t, NEG, out);
                    }
                    shaped |= full(i);
                }
            }
            Op::Scale(s, x) => match s.as_num() {
                Some(c) if c.is_negative() => {
                    out.push('-');
                    if (-c).is_one() {
                        self.go(x, HAD, out);
                    } else {
                        self.body(&crate::ir::scale(-c, x.clone()), out);
                    }
                }
                Some(c) if !c.is_integer() && c.numer().is_one() => {
                    self.go(x, MUL, out);
                    out.push_str(&format!(" / {}", c.denom()));
                }
                Some(c) => {
                    out.push_str(&rational(c));
                    let mut rest = String::new();
                    self.go(x, MUL, &mut rest);
                    if !rest.starts_with('(') {
                        out.push(' ');
                    }
                    out.push_str(&rest);
                }
                None => {
                    let min = if matches!(s.op, Op::MatMul(..) | Op::Div(..) | Op::Scale(..)) { POST } else { MUL };
                    self.go(s, min, out);
                    out.push(' ');
                    self.go(x, MUL, out);
                }
            },
            Op::MatMul(a, b) => {
                // `(y / u)(x + y)`: without its brackets the divisor would
                // read as a function applied to the next factor.
                let min = if ends_with_division(a) { ATOM } else { MUL };
                self.go(a, min, out);
                out.push(' ');
                self.go(b, MUL, out);
            }
            Op::Div(a, s) => {
                self.go(a, MUL, out);
                out.push_str(" / ");
                self.go(s, POST, out);
            }
            Op::Hadamard(a, b) => {
                self.go(a, HAD, out);
                out.push_str(if ascii { " .* " } else { " ∘ " });
                self.go(b, KRON, out);
            }
            Op::HadamardDiv(a, b) => {
                self.operand(a, HAD, out);
                out.push_str(" ./ ");
                self.go(b, KRON, out);
            }
            Op::Kron(a, b) if ascii => self.call("kron", &[a, b], out),
            Op::Kron(a, b) => {
                self.go(a, KRON, out);
                out.push_str(" ⊗ ");
                self.go(b, MUL, out);
            }
            Op::Transpose(x) => {
                self.go(x, POST, out);
                out.push_str(if ascii { "^T" } else { "ᵀ" });
            }
            Op::Inverse(x) => {
                self.go(x, POST, out);
                out.push_str(if ascii { "^-1" } else { "⁻¹" });
            }
            Op::Power(x, k) => self.power(x, *k, out),
            // An entrywise power of a 1×1 value is its power: `tanh(t)²`.
            Op::HadamardPow(x, k) if x.shape.is_scalar() && small_power(k).is_some() => {
                self.power(x, small_power(k).expect("checked"), out)
            }
            Op::HadamardPow(x, k) => {
                self.go(x, POST, out);
                out.push_str(" .^ ");
                if k.is_integer() && !k.is_negative() {
                    out.push_str(&rational(k));
                } else {
                    out.push_str(&format!("({})", rational(k)));
                }
            }
            Op::Vec(x, _) => self.call("vec", &[x], out),
            Op::Unvec(x, _) => {
                let s = &e.shape;
                out.push_str("unvec(");
                self.go(x, Prec::Top, out);
                out.push_str(&format!(", {}, {})", s.rows, s.cols));
            }
            Op::DiagMat(x) | Op::DiagVec(x) => self.call("diag", &[x], out),
            Op::Trace(x) => self.call("tr", &[x], out),
            Op::Det(x) => self.call("det", &[x], out),
            Op::Logdet(x) => self.call("logdet", &[x], out),
            Op::Sum(x) => self.call("sum", &[x], out),
            Op::Norm(x) => {
                let bar = if ascii { "||" } else { "‖" };
                out.push_str(bar);
                self.go(x, Prec::Top, out);
                out.push_str(bar);
            }
            Op::Apply(f, x) => self.call(&f.name(ascii), &[x], out),
        }
    }
}
