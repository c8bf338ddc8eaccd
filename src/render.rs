//! Answers and definitions as the user sees them: text, ASCII, LaTeX and
//! JSON lines, with the left-hand sides and derivation steps a textbook
//! writes. (NumPy, JAX and PyTorch code is [`crate::codegen`]'s.)

use crate::ast::QueryKind;
use crate::derive::{Answer, Backward, Lhs, Step};
use crate::ir::Expr;
use crate::print::{self, Notation};
use crate::shape::Shape;
use itertools::Itertools;
use std::collections::HashSet;

/// Output notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Unicode text (the default).
    #[default]
    Text,
    /// ASCII text.
    Ascii,
    /// LaTeX.
    Latex,
    /// One JSON object per line.
    Json,
    /// A Python module with one NumPy function per query.
    Numpy,
    /// A Python module with one JAX (`jax.numpy`) function per query.
    Jax,
    /// A Python module with one PyTorch function per query.
    Torch,
}

impl Format {
    /// The code generator's backend of a format that is Python code
    /// (`numpy`, `jax`, `torch`); `None` for the notations.
    ///
    /// ```
    /// use matdiff::session::Format;
    /// assert_eq!(Format::Torch.backend().unwrap().name(), "PyTorch");
    /// assert!(Format::Latex.backend().is_none());
    /// ```
    pub fn backend(self) -> Option<&'static dyn crate::codegen::Backend> {
        match self {
            Format::Numpy => Some(&crate::codegen::numpy::NumPy),
            Format::Jax => Some(&crate::codegen::jax::Jax),
            Format::Torch => Some(&crate::codegen::torch::Torch),
            Format::Text | Format::Ascii | Format::Latex | Format::Json => None,
        }
    }
}

/// Renders in one format, with or without derivation steps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Renderer {
    /// The notation.
    pub format: Format,
    /// Whether derivations are shown step by step.
    pub steps: bool,
}

impl Renderer {
    /// A definition's line: its name and shape (`None` in the code formats).
    pub fn definition(&self, name: &str, shape: &Shape) -> Option<String> {
        Some(match self.format {
            Format::Numpy | Format::Jax | Format::Torch => return None,
            Format::Json => serde_json::json!({ "definition": name, "shape": shape_json(shape) }).to_string(),
            Format::Ascii => format!("{name}: {}", shape.display(true)),
            Format::Latex => format!(
                r"{} \in \mathbb{{R}}^{{{} \times {}}}",
                print::latex::name(name, !shape.is_scalar()),
                shape.rows,
                shape.cols
            ),
            Format::Text => format!("{name}: {shape}"),
        })
    }

    /// A name given to a derivative used inside an expression, with what it
    /// stands for: `g = ∂D/∂x: 1×d`.
    pub fn lifted(&self, name: &str, meaning: &str, shape: &Shape) -> Option<String> {
        Some(match self.format {
            Format::Json => {
                serde_json::json!({ "definition": name, "of": meaning, "shape": shape_json(shape) }).to_string()
            }
            Format::Ascii => format!("{name} = {meaning}: {}", shape.display(true)),
            Format::Text => format!("{name} = {meaning}: {shape}"),
            _ => return self.definition(name, shape),
        })
    }

    /// An answer, with the result of its numeric check. In JSON the check
    /// (and, with steps, the derivation) is part of the answer's object;
    /// other formats show the answer alone.
    pub fn answer(&self, a: &Answer, check: Option<CheckResult>) -> String {
        self.answer_after(a, check, &mut Shown::new())
    }

    /// An answer printed after others: its named adjoints are written
    /// first, each one line `δd2 = …`, except those in `shown` (printed
    /// before with the same value), which are then added to `shown`. So a
    /// script's answers write each shared adjoint once. JSON objects always
    /// carry all their adjoints.
    pub fn answer_after(&self, a: &Answer, check: Option<CheckResult>, shown: &mut Shown) -> String {
        let fmt = self.format;
        let notation = if fmt == Format::Ascii { Notation::Ascii } else { Notation::Unicode };
        let mut lines = Vec::new();
        if !matches!(fmt, Format::Json | Format::Numpy | Format::Jax | Format::Torch) {
            for (i, (name, body)) in a.adjoints.iter().enumerate() {
                if shown.adjoints.insert((name.clone(), body.clone())) {
                    // With steps, what the adjoint is: δd2 = ∂L/∂d2 = ….
                    let meaning = match (&a.lhs, a.adjoint_of.get(name)) {
                        (Some(Lhs::Gradient { f, .. }), Some(u)) if self.steps => {
                            let l = Lhs::Gradient { f: f.clone(), x: u.to_string() };
                            format!("{} = ", self.lhs(&l, &bold_names(a)))
                        }
                        _ => String::new(),
                    };
                    let (name, value) = if fmt == Format::Latex {
                        (print::latex::name(name, !body.shape.is_scalar()), print::latex(body))
                    } else {
                        a.adjoint_line(i, notation)
                    };
                    lines.push(format!("{name} = {meaning}{value}"));
                }
            }
        }
        lines.push(self.answer_alone(a, check, shown));
        lines.join("\n")
    }

    fn answer_alone(&self, a: &Answer, check: Option<CheckResult>, shown: &mut Shown) -> String {
        let fmt = self.format;
        let notation = if fmt == Format::Ascii { Notation::Ascii } else { Notation::Unicode };
        let expr = |e: &Expr| match fmt {
            Format::Latex => print::latex(e),
            _ if a.sized_identities => print::render_sized(e, notation),
            _ => print::render(e, notation),
        };
        let shape = |s: &Shape| s.display(fmt == Format::Ascii);
        match fmt {
            Format::Numpy | Format::Jax | Format::Torch => {
                unreachable!("the session renders code through codegen")
            }
            Format::Json => self.json(a, check).to_string(),
            _ => match a.kind() {
                QueryKind::Shape => format!("{}: {}", expr(&a.function), shape(&a.function.shape)),
                QueryKind::Show => format!("{}: {}", expr(&a.expr), shape(&a.expr.shape)),
                QueryKind::Simplify => expr(&a.expr),
                _ if self.steps && !a.steps.is_empty() => self.render_steps(&a.steps, &bold_names(a), shown),
                _ => {
                    let rhs = if fmt == Format::Latex { print::latex(&a.expr) } else { a.render(notation) };
                    match &a.lhs {
                        Some(lhs) => format!("{} = {rhs}", self.lhs(lhs, &bold_names(a))),
                        None => rhs,
                    }
                }
            },
        }
    }

    /// The JSON object of an answer: `query`, `text`, `ascii`, `latex`,
    /// `shape`, the conventions it was derived under (`layout`, `vec`), then
    /// `steps` with `--steps` and `check` when it was checked.
    fn json(&self, a: &Answer, check: Option<CheckResult>) -> serde_json::Value {
        let query = match a.kind() {
            QueryKind::Shape | QueryKind::Show | QueryKind::Simplify => format!("{:?}", a.kind()).to_lowercase(),
            _ => a.lhs.as_ref().map_or_else(String::new, |l| lhs_text(l, Notation::Unicode)),
        };
        let conv = a.conventions;
        let mut obj = serde_json::json!({
            "query": query,
            "text": a.text(),
            "ascii": a.ascii(),
            "latex": print::latex(&a.expr),
            "shape": shape_json(&a.expr.shape),
            "layout": conv.layout.name(),
            "vec": conv.order.name(),
        });
        if !a.adjoints.is_empty() {
            obj["adjoints"] = adjoints_json(a);
        }
        let derivative = !matches!(a.kind(), QueryKind::Shape | QueryKind::Show | QueryKind::Simplify);
        if self.steps && derivative {
            let bold = bold_names(a);
            let lines = step_lines(&a.steps, LineStyle::Unicode, &bold);
            let steps: Vec<serde_json::Value> = a
                .steps
                .iter()
                .zip(lines)
                .map(|(s, line)| {
                    serde_json::json!({
                        "lhs": lhs_text(&s.lhs, Notation::Unicode),
                        "lhs_ascii": lhs_text(&s.lhs, Notation::Ascii),
                        "lhs_latex": lhs_latex(&s.lhs, &bold),
                        "text": print::text(&s.rhs),
                        "ascii": print::ascii(&s.rhs),
                        "latex": print::latex(&s.rhs),
                        "line": line,
                        "rules": s.rules.iter().map(|r| serde_json::json!({
                            "name": r.name(),
                            "text": r.text(),
                            "ascii": r.ascii(),
                            "latex": r.latex(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            obj["steps"] = serde_json::Value::Array(steps);
        }
        if let Some(c) = check {
            obj["check"] = serde_json::json!({
                "relative_error": c.relative_error,
                "tolerance": crate::eval::check::TOLERANCE,
                "passed": c.passed,
            });
        }
        obj
    }

    /// A backward program: its adjoints, each once (none in `shown`), then
    /// its gradients, one line each. In JSON, one object: `query`,
    /// `adjoints`, and `gradients`, each an answer's object (without its
    /// adjoints) with its check from `checks`.
    pub fn backward(&self, b: &Backward, checks: &[Option<CheckResult>], shown: &mut Shown) -> String {
        let check = |i: usize| checks.get(i).copied().flatten();
        if self.format != Format::Json {
            let lines: Vec<String> =
                b.gradients.iter().enumerate().map(|(i, g)| self.answer_after(g, check(i), shown)).collect();
            return lines.join("\n");
        }
        let gradients: Vec<serde_json::Value> = b
            .gradients
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let mut o = self.json(g, check(i));
                if let Some(o) = o.as_object_mut() {
                    o.remove("adjoints");
                }
                o
            })
            .collect();
        let conv = b.gradients.first().map(|g| g.conventions).unwrap_or_default();
        let every = Answer { adjoints: b.adjoints.clone(), ..b.gradients[0].clone() };
        serde_json::json!({
            "query": backward_query(b, Notation::Unicode),
            "ascii_query": backward_query(b, Notation::Ascii),
            "adjoints": adjoints_json(&every),
            "gradients": gradients,
            "layout": conv.layout.name(),
            "vec": conv.order.name(),
        })
        .to_string()
    }

    fn lhs(&self, l: &Lhs, bold: &Bold) -> String {
        match self.format {
            Format::Latex => lhs_latex(l, bold),
            Format::Ascii => lhs_text(l, Notation::Ascii),
            _ => lhs_text(l, Notation::Unicode),
        }
    }

    /// The derivation, one line per step with the rules it used; a line an
    /// earlier answer printed (a chain factor two queries share) is not
    /// repeated, except the last, which is the answer.
    fn render_steps(&self, steps: &[Step], bold: &Bold, shown: &mut Shown) -> String {
        let style = match self.format {
            Format::Latex => LineStyle::Latex,
            Format::Ascii => LineStyle::Ascii,
            _ => LineStyle::Unicode,
        };
        let lines = step_lines(steps, style, bold);
        let last = lines.len().saturating_sub(1);
        let shown_lines: Vec<String> = lines
            .into_iter()
            .zip(steps)
            .enumerate()
            .filter(|(i, (line, _))| shown.steps.insert(line.clone()) || *i == last)
            .map(|(_, (line, step))| {
                let line = if style == LineStyle::Latex { line.replacen(" = ", " &= ", 1) } else { line };
                if step.rules.is_empty() {
                    return line;
                }
                // Which rules the line used: a comment in text, a note in
                // the right-hand column in LaTeX.
                let name = |r: &crate::diff::rule::Rule| match style {
                    LineStyle::Latex => r.latex(),
                    LineStyle::Ascii => r.ascii(),
                    LineStyle::Unicode => r.text(),
                };
                match style {
                    LineStyle::Latex => format!(r"{line} && \quad {}", step.rules.iter().map(name).join(r";\ ")),
                    _ => format!("{line}  # {}", step.rules.iter().map(name).join("; ")),
                }
            })
            .collect();
        if style == LineStyle::Latex {
            format!("\\begin{{aligned}}\n{}\n\\end{{aligned}}", shown_lines.join(" \\\\\n"))
        } else {
            shown_lines.join("\n")
        }
    }
}

/// `∂L/∂(W1, b1)`, ASCII `grad(L, W1, b1)`.
pub fn backward_query(b: &Backward, n: Notation) -> String {
    let vars: Vec<&str> = b.gradients.iter().filter_map(|g| g.wrt()).collect();
    match n {
        Notation::Ascii => format!("grad({}, {})", b.label, vars.join(", ")),
        Notation::Unicode => format!("∂{}/∂({})", b.label, vars.join(", ")),
    }
}

/// An answer's named adjoints as JSON: name (also in ASCII and LaTeX),
/// value in text, ASCII and LaTeX, and shape.
fn adjoints_json(a: &Answer) -> serde_json::Value {
    let ascii = a.adjoint_lines(Notation::Ascii);
    let adjoints: Vec<serde_json::Value> = a
        .adjoints
        .iter()
        .zip(a.adjoint_lines(Notation::Unicode).into_iter().zip(ascii))
        .map(|((name, body), ((_, text), (ascii_name, ascii)))| {
            serde_json::json!({
                "name": name.to_string(),
                "name_ascii": ascii_name,
                "name_latex": print::latex::name(name, !body.shape.is_scalar()),
                "text": text,
                "ascii": ascii,
                "latex": print::latex(body),
                "shape": shape_json(&body.shape),
            })
        })
        .collect();
    serde_json::Value::Array(adjoints)
}

/// What a script's earlier answers printed: named adjoints with their
/// values, and derivation lines, so that later answers do not repeat them.
#[derive(Debug, Clone, Default)]
pub struct Shown {
    adjoints: HashSet<(crate::ir::Name, Expr)>,
    steps: HashSet<String>,
}

impl Shown {
    /// Nothing printed yet.
    pub fn new() -> Shown {
        Shown::default()
    }
}

/// The result of comparing a derivative with finite differences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckResult {
    /// The largest relative error.
    pub relative_error: f64,
    /// Whether it is within [`crate::eval::check::TOLERANCE`].
    pub passed: bool,
}

impl CheckResult {
    /// The result for a relative error.
    pub fn new(relative_error: f64) -> CheckResult {
        CheckResult { relative_error, passed: relative_error <= crate::eval::check::TOLERANCE }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineStyle {
    Unicode,
    Ascii,
    Latex,
}

/// One line per step: `lhs = [formula =] [vec⁻¹(previous) =] rhs`. A
/// reshape followed by a step with the same left-hand side (a gradient made
/// symmetric) is written `vec⁻¹(previous) = rhs`, so that the last line
/// alone names the answer.
fn step_lines(steps: &[Step], style: LineStyle, bold: &Bold) -> Vec<String> {
    let lhs = |l: &Lhs| match style {
        LineStyle::Latex => lhs_latex(l, bold),
        LineStyle::Ascii => lhs_text(l, Notation::Ascii),
        LineStyle::Unicode => lhs_text(l, Notation::Unicode),
    };
    let latex = style == LineStyle::Latex;
    let mut lines = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let rhs = match style {
            LineStyle::Latex => print::latex(&s.rhs),
            LineStyle::Ascii => print::render(&s.rhs, Notation::Ascii),
            LineStyle::Unicode => print::render(&s.rhs, Notation::Unicode),
        };
        let superseded = s.reshape && steps.get(i + 1).is_some_and(|n| n.lhs == s.lhs);
        let mut parts = if superseded { vec![] } else { vec![lhs(&s.lhs)] };
        if let Some(f) = &s.formula {
            let sep = if latex { r" \, " } else { " " };
            let terms: Vec<String> = f.iter().map(|p| p.iter().map(&lhs).collect::<Vec<_>>().join(sep)).collect();
            parts.push(terms.join(" + "));
        }
        if s.reshape {
            if let Some(p) = i.checked_sub(1).map(|j| &steps[j]) {
                let inner = lhs(&p.lhs);
                parts.push(match style {
                    LineStyle::Latex => format!(r"\operatorname{{vec}}^{{-1}}\left({inner}\right)"),
                    LineStyle::Ascii => format!("unvec({inner})"),
                    LineStyle::Unicode => format!("vec⁻¹({inner})"),
                });
            }
        }
        parts.push(rhs);
        lines.push(parts.join(" = "));
    }
    lines
}

fn shape_json(s: &Shape) -> serde_json::Value {
    serde_json::json!([s.rows.to_string(), s.cols.to_string()])
}

/// A step's left-hand side in text.
pub fn lhs_text(l: &Lhs, n: Notation) -> String {
    let (d, t) = match n {
        Notation::Unicode => ("∂", "ᵀ"),
        Notation::Ascii => ("d", "^T"),
    };
    match l {
        Lhs::Differential(f) => format!("d{f}"),
        Lhs::SecondDifferential(f) => match n {
            Notation::Unicode => format!("d²{f}"),
            Notation::Ascii => format!("d^2{f}"),
        },
        Lhs::ThirdDifferential(f) => match n {
            Notation::Unicode => format!("d³{f}"),
            Notation::Ascii => format!("d^3{f}"),
        },
        Lhs::Jacobian { f, x, vec: true } => format!("{d}{f}/{d}vec({x}){t}"),
        Lhs::Jacobian { f, x, vec: false } => format!("{d}{f}/{d}{x}{t}"),
        Lhs::Gradient { f, x } => format!("{d}{f}/{d}{x}"),
        Lhs::Hessian { f, x, vec, y } => {
            let var = |n: &str, v: bool| if v { format!("{d}vec({n})") } else { format!("{d}{n}") };
            let second = match y {
                Some((y, yv)) => var(y, *yv),
                None => var(x, *vec),
            };
            format!("{d}²{f}/{}{second}{t}", var(x, *vec))
        }
    }
}

/// The names an answer writes as matrices or vectors (in bold in LaTeX):
/// those of its function, its value, its steps and adjoints that are not
/// 1×1, and the variable of a gradient or Kronecker form that is not.
type Bold = HashSet<String>;

fn bold_names(a: &Answer) -> Bold {
    let mut out = Bold::new();
    let mut stack: Vec<Expr> = vec![a.function.clone(), a.expr.clone()];
    stack.extend(a.steps.iter().map(|s| s.rhs.clone()));
    stack.extend(a.adjoints.iter().map(|(_, b)| b.clone()));
    let mut seen = HashSet::new();
    while let Some(e) = stack.pop() {
        if !seen.insert(e.clone()) {
            continue;
        }
        match &e.op {
            crate::ir::Op::Var { name, .. } | crate::ir::Op::Diff(name) if !e.shape.is_scalar() => {
                out.insert(name.to_string());
            }
            op => stack.extend(op.children().into_iter().cloned()),
        }
    }
    // A Jacobian's sides from its shape: one row per entry of the variable
    // in denominator layout, one column per entry in numerator layout.
    let denominator = a.conventions.layout == crate::conventions::Layout::Denominator;
    for s in &a.steps {
        if let Lhs::Jacobian { f, x, .. } = &s.lhs {
            let (rows, cols) = (&s.rhs.shape.rows, &s.rhs.shape.cols);
            let (lx, lf) = if denominator { (rows, cols) } else { (cols, rows) };
            if !lx.is_one() {
                out.insert(x.clone());
            }
            if !lf.is_one() {
                out.insert(f.clone());
            }
        }
    }
    for s in a.steps.iter().map(|s| &s.lhs).chain(&a.lhs) {
        match s {
            Lhs::Gradient { x, .. } if !a.expr.shape.is_scalar() && Some(s) == a.lhs.as_ref() => {
                out.insert(x.clone());
            }
            Lhs::Jacobian { x, vec: true, .. } => {
                out.insert(x.clone());
            }
            _ => {}
        }
    }
    out
}

fn lhs_latex(l: &Lhs, bold: &Bold) -> String {
    use crate::print::latex::name;
    let n = |s: &str| {
        if s.chars().all(|c| c.is_alphanumeric() || c == '_') {
            name(s, bold.contains(s))
        } else {
            s.to_string()
        }
    };
    match l {
        Lhs::Differential(f) => format!(r"\mathrm{{d}}{}", n(f)),
        Lhs::SecondDifferential(f) => format!(r"\mathrm{{d}}^2{}", n(f)),
        Lhs::ThirdDifferential(f) => format!(r"\mathrm{{d}}^3{}", n(f)),
        Lhs::Jacobian { f, x, vec: true } => {
            format!(r"\frac{{\partial {}}}{{\partial \operatorname{{vec}}({})^\top}}", n(f), n(x))
        }
        Lhs::Jacobian { f, x, vec: false } => {
            format!(r"\frac{{\partial {}}}{{\partial {}^\top}}", n(f), n(x))
        }
        Lhs::Gradient { f, x } => format!(r"\frac{{\partial {}}}{{\partial {}}}", n(f), n(x)),
        Lhs::Hessian { f, x, vec, y } => {
            let var = |name: &str, v: bool| {
                if v {
                    format!(r"\operatorname{{vec}}({})", n(name))
                } else {
                    n(name)
                }
            };
            let second = match y {
                Some((y, yv)) => var(y, *yv),
                None => var(x, *vec),
            };
            format!(r"\frac{{\partial^2 {}}}{{\partial {} \, \partial {second}^\top}}", n(f), var(x, *vec))
        }
    }
}
