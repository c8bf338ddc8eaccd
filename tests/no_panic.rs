//! No input makes matdiff panic, overflow the stack or hang: random text,
//! random soups of the language's tokens, and random well-typed scripts are
//! run through a session (and any error rendered), each in a thread with the
//! large stack the binary uses, within a time bound.

use matdiff::diff::chain::{Conventions, Layout};
use matdiff::ir::VecOrder;
use matdiff::session::{Format, Options, Outcome, Session};
use proptest::prelude::*;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The longest a single case may take (debug build, busy machine).
const TIME_LIMIT: Duration = Duration::from_secs(3);
/// How long to wait before declaring a case hung.
const HANG_LIMIT: Duration = Duration::from_secs(30);
/// Cases per property.
const CASES: u32 = 500;

/// Runs a script as the binary does and reports a panic, a hang or a slow run.
fn run_guarded(src: &str) -> Result<(), String> {
    run_with(src, Options::default(), false)
}

/// Runs a script with these options, rendering every outcome (and, with
/// `all`, the NumPy module and the finite-difference check of each answer).
fn run_with(src: &str, options: Options, all: bool) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let text = src.to_string();
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let start = Instant::now();
            let outcome = std::panic::catch_unwind(|| {
                let mut session = Session::new(options);
                match session.run(&text) {
                    Ok(outcomes) => {
                        for o in &outcomes {
                            let _ = session.render_outcome(o);
                        }
                        if all {
                            let answers: Vec<_> = outcomes
                                .into_iter()
                                .filter_map(|o| match o {
                                    Outcome::Answer(a) => Some(a),
                                    _ => None,
                                })
                                .collect();
                            let _ = session.numpy(&answers);
                            for a in &answers {
                                let _ = session.check(a);
                            }
                        }
                    }
                    Err(e) => {
                        let rendered = e.render("<input>", &text);
                        assert!(rendered.starts_with("error at <input>:"), "{rendered}");
                    }
                }
            });
            let _ = tx.send((outcome.map_err(panic_message), start.elapsed()));
        })
        .map_err(|e| format!("cannot spawn: {e}"))?;
    match rx.recv_timeout(HANG_LIMIT) {
        Ok((Ok(()), took)) if took <= TIME_LIMIT => Ok(()),
        Ok((Ok(()), took)) => Err(format!("took {took:?} (limit {TIME_LIMIT:?}) on {src:?}")),
        Ok((Err(msg), _)) => Err(format!("panicked: {msg} on {src:?}")),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("hung (over {HANG_LIMIT:?}) on {src:?}")),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!("worker died on {src:?}")),
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".into()
    }
}

/// Characters of the language, with a few neighbours.
const ALPHABET: &[char] = &[
    '(', ')', '[', ']', '+', '-', '−', '*', '/', '^', '\'', 'ᵀ', '⊤', '⊗', '∘', '⊙', '.', ',', ';', ':', '=', '#', '∂',
    '|', '‖', ' ', ' ', ' ', '\n', '\t', 'x', 'n', 'm', 'A', 'B', 'I', 'T', 'R', 'd', 'f', 'L', 'W', '_', '0', '1',
    '2', '3', '9', '⁻', '¹', '²', '³', '×', '→', '>', 'σ', 'ℝ', '·', '\r', '\u{A0}', '$',
];

/// Tokens of the language.
const TOKENS: &[&str] = &[
    "A",
    "B",
    "C",
    "x",
    "y",
    "W",
    "W1",
    "b",
    "L",
    "f",
    "g",
    "n",
    "m",
    "s",
    "0",
    "1",
    "2",
    "3",
    "0.5",
    ".25",
    "1/2",
    "10000000000000000000000",
    "(",
    ")",
    "(",
    ")",
    ",",
    ";",
    "\n",
    "\n",
    "=",
    ":",
    "+",
    "-",
    "−",
    "*",
    "·",
    "/",
    "./",
    ".*",
    "∘",
    "⊙",
    "⊗",
    "^T",
    "^⊤",
    "ᵀ",
    "'",
    "''",
    "^-1",
    "^(-1)",
    "⁻¹",
    "^2",
    "^-2",
    "^(3)",
    "²",
    "³",
    ".^2",
    ".^(1/2)",
    ".^-1",
    "‖",
    "||",
    "tr",
    "det",
    "logdet",
    "diag",
    "vec",
    "unvec",
    "vec^-1",
    "sum",
    "norm",
    "inv",
    "kron",
    "ones",
    "exp",
    "log",
    "sin",
    "cos",
    "tanh",
    "sigmoid",
    "σ",
    "sqrt",
    "softplus",
    "relu",
    "abs",
    "d",
    "d(",
    "grad",
    "jacobian",
    "hessian",
    "simplify",
    "shape",
    "∂",
    "∂L/∂A",
    "∂L/∂x^T",
    "∂L/∂vec(W)^T",
    "I",
    "I_n",
    "I_3",
    "R -> R",
    "ℝ → ℝ",
    "scalar",
    "symmetric",
    "x",
    "×",
    "A: n x n",
    "B: n x m",
    "x: n",
    "y: 1 x n",
    "s: scalar",
    "f: R -> R",
    "W: 2 x 3",
    "S: n x n symmetric",
    "#",
    "# comment\n",
    " ",
    "  ",
];

fn soup(tokens: Vec<&'static str>, glue: Vec<bool>) -> String {
    let mut s = String::new();
    for (t, g) in tokens.iter().zip(glue) {
        s.push_str(t);
        if g {
            s.push(' ');
        }
    }
    s
}

/// Declarations that random expressions below are typed against.
const PRELUDE: &str = "A, B: n x n\nS: n x n symmetric\nx, y: n\nr: 1 x n\nW: n x m\nV: m x n\ns: scalar\nf: R -> R\n";

/// A random expression over the prelude's names, mostly well typed: an n×n
/// matrix, an n-vector or a scalar.
fn square() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("A".to_string()),
        Just("B".to_string()),
        Just("S".to_string()),
        Just("I".to_string()),
        Just("x y'".to_string()),
        Just("W V".to_string()),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} - {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} ∘ {b})")),
            inner.clone().prop_map(|a| format!("({a})ᵀ")),
            inner.clone().prop_map(|a| format!("inv({a})")),
            inner.clone().prop_map(|a| format!("({a})^2")),
            inner.clone().prop_map(|a| format!("f({a})")),
            inner.clone().prop_map(|a| format!("exp({a})")),
            inner.clone().prop_map(|a| format!("diag(diag({a}))")),
            inner.clone().prop_map(|a| format!("s {a}")),
            inner.prop_map(|a| format!("2({a})/3")),
        ]
    })
}

fn scalar_of(m: String, pick: u8) -> String {
    match pick % 6 {
        0 => format!("tr({m})"),
        1 => format!("x' {m} x"),
        2 => format!("sum({m})"),
        3 => format!("logdet({m})"),
        4 => format!("‖{m}‖²"),
        _ => format!("r {m} y"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6e6f_7061_6e69_6331),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(src in ".{0,200}") {
        run_guarded(&src).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn text_in_the_alphabet_never_panics(chars in prop::collection::vec(prop::sample::select(ALPHABET), 0..200)) {
        let src: String = chars.into_iter().collect();
        run_guarded(&src).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn token_soup_never_panics(
        tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..60),
        glue in prop::collection::vec(any::<bool>(), 60),
    ) {
        run_guarded(&soup(tokens, glue)).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn token_soup_after_declarations_never_panics(
        tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..40),
        glue in prop::collection::vec(any::<bool>(), 40),
    ) {
        run_guarded(&format!("{PRELUDE}{}", soup(tokens, glue))).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn derivatives_of_random_expressions_never_panic(m in square(), pick in any::<u8>(), wrt in 0usize..5) {
        let var = ["A", "B", "S", "x", "W"][wrt];
        let l = scalar_of(m.clone(), pick);
        let src = format!("{PRELUDE}M = {m}\nL = {l}\nd(L)\n∂L/∂{var}\n∂M/∂vec({var})ᵀ\ngrad(L, {var})\n");
        run_guarded(&src).map_err(TestCaseError::fail)?;
    }
}

fn options(pick: u8) -> Options {
    let format = [Format::Text, Format::Ascii, Format::Latex, Format::Json][usize::from(pick % 4)];
    let layout = if pick & 4 == 0 { Layout::Denominator } else { Layout::Numerator };
    let order = if pick & 8 == 0 { VecOrder::Row } else { VecOrder::Col };
    Options { format, steps: pick & 16 != 0, conventions: Conventions { layout, order }, ..Options::default() }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES / 2,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6e6f_7061_6e69_6332),
        ..ProptestConfig::default()
    })]

    /// Every output format, both conventions, steps, NumPy and the numeric check.
    #[test]
    fn answers_render_and_check_in_every_form(m in square(), pick in any::<u8>(), wrt in 0usize..5, opts in any::<u8>()) {
        let var = ["A", "B", "S", "x", "W"][wrt];
        let l = scalar_of(m.clone(), pick);
        let src = format!(
            "{PRELUDE}M = {m}\nL = {l}\nd(L)\n∂L/∂{var}\n∂M/∂vec({var})ᵀ\ngrad(L, {var})\nhessian(L, {var})\nshape(M)\nsimplify(L)\n"
        );
        run_with(&src, options(opts), true).map_err(TestCaseError::fail)?;
    }
}

/// Scripts that made the simplifier panic (an e-graph class looked up by a
/// term's node index while costing the term before simplification).
#[test]
fn simplifier_regressions_do_not_panic() {
    let cases = [
        "S: n x n symmetric\nA: n x n\nx: n\n∂(x' (S + A A) x)/∂x",
        "S: n x n symmetric\nL = tr(inv(S^2))\nhessian(L, S)",
        "B: n x n\nS: n x n symmetric\nx: n\nL = x' (S - (B - S)^2) x\n∂L/∂x",
    ];
    let failures: Vec<String> = cases.iter().filter_map(|src| run_guarded(src).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Inputs that once threatened the stack or the clock, kept as fixed cases.
#[test]
fn pathological_inputs_finish() {
    let long = |unit: &str, n: usize| unit.repeat(n);
    let cases = [
        long("(", 10_000),
        format!("x: n\ny = {}x{}", long("(", 10_000), long(")", 10_000)),
        format!("x: n\ny = {}x{}", long("(", 199), long(")", 199)),
        format!("x: n\ny = {}x", long("-", 30_000)),
        format!("x: n\ny = {}x", long("- ", 15_000)),
        format!("A: n x n\ny = A{}", long("'", 60_000)),
        format!("A: n x n\ny = A{}", long("ᵀ", 20_000)),
        format!("A: n x n\ny = A{}", long("^T", 30_000)),
        format!("A: n x n\ny = A{}", long(" A", 30_000)),
        format!("A: n x n\ny = A{}", long(" + A", 15_000)),
        format!("A: n x n\ny = A{}", long(" ∘ A", 10_000)),
        format!("A: n x n\ny = {}A{}", long("tr(", 199), long(")", 199)),
        format!("A: n x n\ny = {}A", long("tr(", 199)),
        format!("A: n x n\ny = {}A", long("a(", 199)),
        format!("A: n x n\ny = {}A,{}", long("a(", 199), long(")", 199)),
        format!("A: n x n\n{}A{}", long("d(", 150), long(")", 150)),
        format!("A: n x n\n{}A", long("‖", 30_000)),
        format!("A: n x n\n{}A{}", long("|| ", 5_000), long(" ||", 5_000)),
        format!("A: n x n\n{}A{}", long("||", 10_000), long("||", 10_000)),
        format!("A: n x n\n{}A{}", long("‖ ", 100), long(" ‖", 100)),
        format!("A: n x n\n{}", long("A\n", 200)),
        format!("{}A: n x n\ntr(A)", long("# a comment; with a semicolon\n", 20_000)),
        format!("A: n x n\n{}", long("B = A;", 5_000)),
        long("x: n\n", 20_000),
        (0..1_500).map(|i| format!("a{i}: n x n\n")).collect(),
        format!("A: n x n\nB = A{}", long("^1000", 100)),
        "A: n x n\nB = A^1000 A^1000 A^1000\nd(tr(B))".to_string(),
        "A: 1000000 x 1000000\nB = A ⊗ A ⊗ A ⊗ A\nshape(B)".to_string(),
        format!("A: n x n\nB = {}", long("A ⊗ ", 1_000) + "A"),
        format!("x: n\nB = {}x", long("x ⊗ ", 1_000)),
        format!("A: n x n\nx = {}", long("1", 60_000)),
        format!("A: n x n\nB = A .^ {}", long("9", 60_000)),
    ];
    let mut failures = Vec::new();
    for src in &cases {
        if let Err(e) = run_guarded(src) {
            let e: String = e.chars().take(300).collect();
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
