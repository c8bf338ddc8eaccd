//! LaTeX for KaTeX and MathJax.

use crate::ast::Prec;
use crate::ir::{Expr, Func, Op};
use num_traits::{One, Signed};

/// LaTeX markup of an expression: matrices in bold, `^\top`, `\otimes`, `\odot`.
///
/// ```
/// use matdiff::{ir, shape::{Dim, Shape}};
/// let w = ir::var("W1", Shape::new(Dim::num(2), Dim::num(3)), false);
/// assert_eq!(matdiff::print::latex(&ir::transpose(w)), r"\mathbf{W}_{1}^\top");
/// ```
pub fn latex(e: &Expr) -> String {
    let mut out = String::new();
    go(e, Prec::Top, &mut out);
    out
}

/// The LaTeX command of a Greek letter (`λ` is `\lambda`), if it is one.
pub fn greek(c: char) -> Option<&'static str> {
    const LETTERS: &[(char, &str)] = &[
        ('α', r"\alpha"),
        ('β', r"\beta"),
        ('γ', r"\gamma"),
        ('δ', r"\delta"),
        ('ε', r"\varepsilon"),
        ('ϵ', r"\epsilon"),
        ('ζ', r"\zeta"),
        ('η', r"\eta"),
        ('θ', r"\theta"),
        ('ϑ', r"\vartheta"),
        ('ι', r"\iota"),
        ('κ', r"\kappa"),
        ('λ', r"\lambda"),
        ('μ', r"\mu"),
        ('ν', r"\nu"),
        ('ξ', r"\xi"),
        ('π', r"\pi"),
        ('ρ', r"\rho"),
        ('σ', r"\sigma"),
        ('τ', r"\tau"),
        ('υ', r"\upsilon"),
        ('φ', r"\varphi"),
        ('ϕ', r"\phi"),
        ('χ', r"\chi"),
        ('ψ', r"\psi"),
        ('ω', r"\omega"),
        ('Γ', r"\Gamma"),
        ('Δ', r"\Delta"),
        ('Θ', r"\Theta"),
        ('Λ', r"\Lambda"),
        ('Ξ', r"\Xi"),
        ('Π', r"\Pi"),
        ('Σ', r"\Sigma"),
        ('Υ', r"\Upsilon"),
        ('Φ', r"\Phi"),
        ('Ψ', r"\Psi"),
        ('Ω', r"\Omega"),
    ];
    LETTERS.iter().find(|(g, _)| *g == c).map(|(_, l)| *l)
}

/// Letters as LaTeX: Greek letters as commands (`\lambda`, never the
/// Unicode letter, which pdflatex refuses), others as they are.
fn letters(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match greek(c) {
            Some(g) => {
                if !out.is_empty() && !out.ends_with(' ') {
                    out.push(' ');
                }
                out.push_str(g);
                out.push(' ');
            }
            None => out.push(c),
        }
    }
    out.trim_end().to_string()
}

/// A name as LaTeX: letters in bold for matrices (`\mathbf{W}`, and
/// `\boldsymbol{\Sigma}` for a name with Greek letters), Greek letters as
/// commands, trailing digits as a subscript.
///
/// ```
/// use matdiff::print::latex::name;
/// assert_eq!(name("Σ", true), r"\boldsymbol{\Sigma}");
/// assert_eq!(name("λ", false), r"\lambda");
/// assert_eq!(name("W1", true), r"\mathbf{W}_{1}");
/// ```
pub fn name(n: &str, bold: bool) -> String {
    // An adjoint `δX`: δ before the name it is the adjoint of.
    if let Some(rest) = n.strip_prefix('δ').filter(|r| r.starts_with(|c: char| c.is_alphabetic())) {
        return format!(r"\delta {}", name(rest, bold));
    }
    let split = n.find(|c: char| c.is_ascii_digit() || c == '_').unwrap_or(n.len());
    let (head, tail) = n.split_at(split);
    let tail = tail.trim_start_matches('_');
    let has_greek = head.chars().any(|c| greek(c).is_some());
    let head = match head {
        h if h.chars().count() > 1 && !bold && !has_greek => format!(r"\operatorname{{{h}}}"),
        h => letters(h),
    };
    let head = match (bold, has_greek) {
        (true, true) => format!(r"\boldsymbol{{{head}}}"),
        (true, false) => format!(r"\mathbf{{{head}}}"),
        _ => head,
    };
    if tail.is_empty() {
        head
    } else {
        format!("{head}_{{{tail}}}")
    }
}

fn row_of_ones(e: &Expr) -> bool {
    matches!(e.op, Op::Ones) && e.shape.rows.is_one() && !e.shape.cols.is_one()
}

fn level(e: &Expr) -> Prec {
    match &e.op {
        Op::Ones if row_of_ones(e) => Prec::Postfix,
        Op::Add(_) => Prec::Sum,
        Op::Num(r) if r.is_negative() => Prec::Neg,
        Op::Scale(s, _) if s.as_num().is_some_and(|c| c.is_negative()) => Prec::Neg,
        Op::Hadamard(..) | Op::HadamardDiv(..) => Prec::Elementwise,
        Op::Kron(..) => Prec::Kron,
        Op::Scale(..) | Op::MatMul(..) | Op::Div(..) => Prec::Product,
        Op::Size(d) if d.as_product_text().contains(' ') => Prec::Product,
        Op::Transpose(_) | Op::Inverse(_) | Op::Power(..) | Op::HadamardPow(..) => Prec::Postfix,
        _ => Prec::Atom,
    }
}

fn go(e: &Expr, min: Prec, out: &mut String) {
    if level(e) < min {
        out.push_str(r"\left(");
        body(e, out);
        out.push_str(r"\right)");
    } else {
        body(e, out);
    }
}

fn op(name: &str, x: &Expr, out: &mut String) {
    out.push_str(name);
    out.push_str(r"\left(");
    go(x, Prec::Top, out);
    out.push_str(r"\right)");
}

fn body(e: &Expr, out: &mut String) {
    match &e.op {
        Op::Var { name: n, .. } => out.push_str(&name(n, !e.shape.is_scalar())),
        Op::Diff(n) => {
            out.push_str(r"\mathrm{d}");
            out.push_str(&name(n, !e.shape.is_scalar()));
        }
        Op::Num(r) if r.is_integer() => out.push_str(&r.to_string()),
        Op::Num(r) => {
            if r.is_negative() {
                out.push('-');
            }
            out.push_str(&format!(r"\frac{{{}}}{{{}}}", r.numer().abs(), r.denom()))
        }
        Op::Identity => out.push_str(r"\mathbf{I}"),
        Op::Zero => out.push_str(r"\mathbf{0}"),
        // The ones vector with its orientation: `\mathbf{1}^\top G` sums columns.
        Op::Ones if row_of_ones(e) => out.push_str(r"\mathbf{1}^\top"),
        Op::Ones => out.push_str(r"\mathbf{1}"),
        Op::Size(d) => {
            let parts: Vec<String> = d.as_product_text().split(' ').map(|p| name(p, false)).collect();
            out.push_str(&parts.join(r" \, "));
        }
        Op::Commutation(r, c, _) => out.push_str(&format!(r"\mathbf{{K}}_{{{r},{c}}}")),
        Op::Add(ts) => {
            for (i, t) in super::positive_first(ts).iter().enumerate() {
                let (c, _) = t.split_coef();
                if i == 0 {
                    go(t, Prec::Sum, out);
                } else if c.is_negative() {
                    out.push_str(" - ");
                    go(&crate::ir::neg(t.clone()), Prec::Neg, out);
                } else {
                    out.push_str(" + ");
                    go(t, Prec::Neg, out);
                }
            }
        }
        Op::Scale(s, x) => match s.as_num() {
            Some(c) if c.is_negative() => {
                out.push('-');
                if (-c).is_one() {
                    go(x, Prec::Elementwise, out);
                } else {
                    body(&crate::ir::scale(-c, x.clone()), out);
                }
            }
            _ => {
                go(s, Prec::Postfix, out);
                out.push_str(r" \, ");
                go(x, Prec::Product, out);
            }
        },
        Op::MatMul(a, b) => {
            go(a, Prec::Product, out);
            out.push(' ');
            go(b, Prec::Product, out);
        }
        Op::Div(a, s) => {
            out.push_str(r"\frac{");
            go(a, Prec::Top, out);
            out.push_str("}{");
            go(s, Prec::Top, out);
            out.push('}');
        }
        Op::Hadamard(a, b) => {
            go(a, Prec::Elementwise, out);
            out.push_str(r" \odot ");
            go(b, Prec::Kron, out);
        }
        Op::HadamardDiv(a, b) => {
            go(a, Prec::Elementwise, out);
            out.push_str(r" \oslash ");
            go(b, Prec::Kron, out);
        }
        Op::Kron(a, b) => {
            go(a, Prec::Kron, out);
            out.push_str(r" \otimes ");
            go(b, Prec::Product, out);
        }
        Op::Transpose(x) => {
            go(x, Prec::Atom, out);
            out.push_str(r"^\top");
        }
        Op::Inverse(x) => {
            go(x, Prec::Atom, out);
            out.push_str("^{-1}");
        }
        Op::Power(x, k) => {
            go(x, Prec::Atom, out);
            out.push_str(&format!("^{{{k}}}"));
        }
        Op::HadamardPow(x, k) if x.shape.is_scalar() && super::small_power(k).is_some() => {
            go(x, Prec::Atom, out);
            out.push_str(&format!("^{{{k}}}"));
        }
        Op::HadamardPow(x, k) => {
            go(x, Prec::Atom, out);
            out.push_str(&format!(r"^{{\circ {k}}}"));
        }
        Op::Vec(x, _) => op(r"\operatorname{vec}", x, out),
        Op::Unvec(x, _) => op(r"\operatorname{vec}^{-1}", x, out),
        Op::DiagMat(x) | Op::DiagVec(x) => op(r"\operatorname{diag}", x, out),
        Op::Trace(x) => op(r"\operatorname{tr}", x, out),
        Op::Det(x) => op(r"\det", x, out),
        Op::Logdet(x) => op(r"\log\det", x, out),
        Op::Sum(x) => op(r"\operatorname{sum}", x, out),
        Op::Norm(x) => {
            out.push_str(r"\left\lVert ");
            go(x, Prec::Top, out);
            out.push_str(r" \right\rVert");
        }
        Op::Apply(f, x) => {
            let head = match f {
                Func::User(n, k) => format!("{}{}", name(n, false), "'".repeat(*k as usize)),
                Func::Builtin(b) => b.latex.to_string(),
            };
            op(&head, x, out)
        }
    }
}
