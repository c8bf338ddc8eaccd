//! `matdiff._core`: the engine behind the Python package `matdiff`.
//!
//! Three stateless functions over a script's text: [`derive`] renders every
//! answer (text, ASCII, LaTeX and JSON), [`code`] writes one answer's NumPy,
//! JAX or PyTorch module, and [`check`] compares one answer with finite
//! differences. The engine's values are not shared between threads, so each
//! call derives the script again (milliseconds) rather than keeping a
//! session alive; the Python package caches what it was given.
//!
//! Every call runs on a thread of its own with a large stack, as the command
//! line does (recursion on user input is bounded by the parser's limits, far
//! from that stack's), and without holding the interpreter's lock.

use matdiff::codegen::Item;
use matdiff::conventions::{Conventions, Layout, VecOrder};
use matdiff::error::Span;
use matdiff::render::Shown;
use matdiff::session::{Format, Options, Outcome, Session};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

pyo3::create_exception!(
    matdiff,
    MatdiffError,
    PyValueError,
    "A script matdiff cannot answer: a syntax error, an unknown name, shapes that do not \
     agree, or an answer that cannot be checked or turned into code. `line` and `column` \
     (1-based) locate the offending `text`; `message` says what is wrong and `report` \
     shows the line with the text underlined."
);

/// The stack of the thread that runs the engine, as the command line's.
const STACK: usize = 512 << 20;

/// An engine error, located in the script.
struct Located {
    message: String,
    line: usize,
    column: usize,
    text: String,
    report: String,
}

impl Located {
    fn new(message: String, span: Span, src: &str, report: String) -> Located {
        let (line, column) = span.line_col(src);
        let floor = |mut i: usize| {
            i = i.min(src.len());
            while !src.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        let text = src[floor(span.start)..floor(span.end.max(span.start))].to_string();
        Located { message, line, column, text, report }
    }

    fn of(e: &matdiff::Error, src: &str) -> Located {
        Located::new(e.to_string(), e.span(), src, e.render("<script>", src))
    }

    fn into_err(self, py: Python<'_>) -> PyErr {
        let mut head = format!("line {}, column {}", self.line, self.column);
        if !self.text.is_empty() {
            head.push_str(&format!(", at `{}`", self.text));
        }
        let err = MatdiffError::new_err(format!("{head}: {}\n\n{}", self.message, self.report.trim_end()));
        let value = err.value(py);
        let _ = value.setattr("line", self.line);
        let _ = value.setattr("column", self.column);
        let _ = value.setattr("text", self.text);
        let _ = value.setattr("message", self.message);
        let _ = value.setattr("report", self.report);
        err
    }
}

/// Why a call failed: the script, or the engine itself.
enum Failure {
    Script(Located),
    Usage(String),
    Internal(String),
}

impl Failure {
    fn into_err(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Script(l) => l.into_err(py),
            Failure::Usage(m) => PyValueError::new_err(m),
            Failure::Internal(m) => PyRuntimeError::new_err(m),
        }
    }
}

/// Runs `f` on a thread with a large stack, without the interpreter's lock.
fn engine<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, Failure> + Send) -> PyResult<T> {
    let out = py.detach(|| {
        std::thread::scope(|s| match std::thread::Builder::new().stack_size(STACK).spawn_scoped(s, f) {
            Ok(h) => h.join().unwrap_or_else(|_| Err(Failure::Internal("matdiff: internal failure".into()))),
            Err(e) => Err(Failure::Internal(format!("matdiff: cannot start a thread: {e}"))),
        })
    });
    out.map_err(|f| f.into_err(py))
}

fn conventions(layout: &str, vec: &str) -> Result<Conventions, Failure> {
    let layout = match layout {
        "denominator" => Layout::Denominator,
        "numerator" => Layout::Numerator,
        other => return Err(Failure::Usage(format!("layout must be \"denominator\" or \"numerator\", not {other:?}"))),
    };
    let order = match vec {
        "row" => VecOrder::Row,
        "col" => VecOrder::Col,
        other => return Err(Failure::Usage(format!("vec must be \"row\" or \"col\", not {other:?}"))),
    };
    Ok(Conventions { layout, order })
}

/// A script run to its end: the session and what its queries answered.
struct Run {
    session: Session,
    items: Vec<(Item, Span)>,
}

fn run(src: &str, layout: &str, vec: &str, steps: bool) -> Result<Run, Failure> {
    let conventions = conventions(layout, vec)?;
    let mut session = Session::new(Options { steps, conventions, ..Options::default() });
    let outcomes = session.run(src).map_err(|e| Failure::Script(Located::of(&e, src)))?;
    let items = outcomes
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Answer(a) => {
                let span = a.span;
                Some((Item::Answer(a), span))
            }
            Outcome::Backward(b) => {
                let span = b.span;
                Some((Item::Backward(b), span))
            }
            Outcome::Declared | Outcome::Defined { .. } => None,
        })
        .collect();
    Ok(Run { session, items })
}

impl Run {
    fn item(&self, index: usize) -> Result<&(Item, Span), Failure> {
        self.items.get(index).ok_or_else(|| Failure::Usage(format!("the script has no answer {index}")))
    }

    /// An item in one notation: its named adjoints, then the answer (or each
    /// gradient of a backward program), with steps when the run has them.
    fn show(&mut self, index: usize, format: Format) -> String {
        self.session.options.format = format;
        let mut shown = Shown::new();
        match &self.items[index].0 {
            Item::Answer(a) => self.session.render_after(a, None, &mut shown),
            Item::Backward(b) => self.session.renderer().backward(b, &[], &mut shown),
        }
    }
}

/// One answer as the package sees it.
struct Shown4 {
    program: bool,
    json: String,
    text: String,
    ascii: String,
    latex: String,
    line: usize,
    column: usize,
}

/// Derives every query of `script`: for each answer, in order, a dict with
/// `kind` (`"answer"`, or `"program"` for `∂L/∂(X, Y, …)`), `json` (the
/// `--format json` object, steps included when asked), the full display in
/// `text`, `ascii` and `latex`, and the query's `line` and `column`.
#[pyfunction]
#[pyo3(signature = (script, layout = "denominator", vec = "row", steps = false))]
fn derive<'py>(
    py: Python<'py>,
    script: &str,
    layout: &str,
    vec: &str,
    steps: bool,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let shown = engine(py, || {
        let mut r = run(script, layout, vec, steps)?;
        let mut out = Vec::new();
        for i in 0..r.items.len() {
            let (line, column) = r.items[i].1.line_col(script);
            out.push(Shown4 {
                program: matches!(r.items[i].0, Item::Backward(_)),
                json: r.show(i, Format::Json),
                text: r.show(i, Format::Text),
                ascii: r.show(i, Format::Ascii),
                latex: r.show(i, Format::Latex),
                line,
                column,
            });
        }
        Ok(out)
    })?;
    shown
        .into_iter()
        .map(|s| {
            let d = PyDict::new(py);
            d.set_item("kind", if s.program { "program" } else { "answer" })?;
            d.set_item("json", s.json)?;
            d.set_item("text", s.text)?;
            d.set_item("ascii", s.ascii)?;
            d.set_item("latex", s.latex)?;
            d.set_item("line", s.line)?;
            d.set_item("column", s.column)?;
            Ok(d)
        })
        .collect()
}

/// The Python module of answer `index` of `script` for a backend (`"numpy"`,
/// `"jax"` or `"torch"`): one function with the parameters of the command
/// line's `--format` of that name; `value_and_grad_L` for a backward program,
/// or the function of its gradient `gradient` alone.
#[pyfunction]
#[pyo3(signature = (script, index, backend, layout = "denominator", vec = "row", gradient = None))]
fn code(
    py: Python<'_>,
    script: &str,
    index: usize,
    backend: &str,
    layout: &str,
    vec: &str,
    gradient: Option<usize>,
) -> PyResult<String> {
    engine(py, || {
        let format = match backend {
            "numpy" => Format::Numpy,
            "jax" => Format::Jax,
            "torch" => Format::Torch,
            other => {
                return Err(Failure::Usage(format!("backend must be \"numpy\", \"jax\" or \"torch\", not {other:?}")))
            }
        };
        let backend = format.backend().ok_or_else(|| Failure::Internal("no code generator".into()))?;
        let r = run(script, layout, vec, false)?;
        let item = match (&r.item(index)?.0, gradient) {
            (Item::Backward(b), Some(g)) => Item::Answer(
                b.gradients
                    .get(g)
                    .cloned()
                    .ok_or_else(|| Failure::Usage(format!("the program has no gradient {g}")))?,
            ),
            (item, _) => item.clone(),
        };
        r.session.code_of(backend, &[item]).map_err(|e| Failure::Script(Located::of(&e, script)))
    })
}

/// The largest relative error between answer `index` of `script` and
/// central finite differences at random values (`None` for a query that is
/// not a derivative). For a backward program, of gradient `gradient`, or the
/// largest over all of them.
#[pyfunction]
#[pyo3(signature = (script, index, gradient = None, layout = "denominator", vec = "row"))]
fn check(
    py: Python<'_>,
    script: &str,
    index: usize,
    gradient: Option<usize>,
    layout: &str,
    vec: &str,
) -> PyResult<Option<f64>> {
    engine(py, || {
        let r = run(script, layout, vec, false)?;
        let (item, span) = r.item(index)?;
        let answers = match (item, gradient) {
            (Item::Answer(a), _) => vec![a],
            (Item::Backward(b), None) => b.gradients.iter().collect(),
            (Item::Backward(b), Some(g)) => {
                vec![b.gradients.get(g).ok_or_else(|| Failure::Usage(format!("the program has no gradient {g}")))?]
            }
        };
        let mut worst: Option<f64> = None;
        for a in answers {
            match r.session.check(a) {
                Ok(Some(e)) => worst = Some(worst.map_or(e, |w| w.max(e))),
                Ok(None) => {}
                Err(e) => {
                    let message = format!("cannot check this answer numerically: {}", e.0);
                    let report = message.clone();
                    return Err(Failure::Script(Located::new(message, *span, script, report)));
                }
            }
        }
        Ok(worst)
    })
}

/// The extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MatdiffError", m.py().get_type::<MatdiffError>())?;
    m.add_function(wrap_pyfunction!(derive, m)?)?;
    m.add_function(wrap_pyfunction!(code, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add("TOLERANCE", matdiff::eval::check::TOLERANCE)?;
    // A fingerprint of the sources this extension was built from, so that the
    // tests can refuse a stale installation (see build.rs).
    m.add("__source_hash__", env!("MATDIFF_SOURCE_HASH"))?;
    Ok(())
}
