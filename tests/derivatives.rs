//! Textbook derivatives, proved right numerically.
//!
//! Every case is a small script run through a [`Session`]; every answer is
//! compared with central finite differences by [`Session::check`] and must
//! agree to within [`TOLERANCE`], under all four conventions (denominator or
//! numerator layout, `vec` by rows or by columns). Symbolic sizes get the
//! distinct values 2, 3, 5, … from the checker, so a missing transpose shows.
//!
//! `Session::check` compares a `d(F)` answer only in the differentials it
//! mentions, so a dropped term would pass; every `d(F)` here is also
//! compared along random directions in all varying names at once
//! ([`directional_error`]).
//!
//! Then: the scripts of `tests/cases/textbook/`, one check per differential
//! rule (`d(F)` with matrices of sizes 2, 3 and 5), the seed answers of the worked
//! example as text, and planted wrong answers that the checker must reject.
//!
//! Last, the reference evaluator that `--check` takes its differences from
//! (the script as written, on arrays) against hand-computed values, answers
//! planted wrong in ways the typed form would agree with, and the evaluation
//! limits.
//!
//! Cases that once showed an engine bug stay here as regressions.

use crate::along::along_error;
use matdiff::ast::QueryKind;
use matdiff::diff::chain::{Conventions, Layout};
use matdiff::eval::check::TOLERANCE;
use matdiff::ir::{self, rat, VecOrder};
use matdiff::session::{Answer, Options, Session};
use matdiff::shape::{Dim, Shape};
use matdiff::typeck::Binding;
use std::collections::BTreeSet;

// ---- harness ------------------------------------------------------------------

/// The four conventions: layout × `vec` order.
const ALL: [Conventions; 4] = [
    Conventions { layout: Layout::Denominator, order: VecOrder::Row },
    Conventions { layout: Layout::Denominator, order: VecOrder::Col },
    Conventions { layout: Layout::Numerator, order: VecOrder::Row },
    Conventions { layout: Layout::Numerator, order: VecOrder::Col },
];

fn session(conventions: Conventions) -> Session {
    Session::new(Options { conventions, ..Default::default() })
}

fn conv_name(c: Conventions) -> String {
    let layout = match c.layout {
        Layout::Denominator => "denominator",
        Layout::Numerator => "numerator",
    };
    let order = match c.order {
        VecOrder::Row => "row",
        VecOrder::Col => "col",
    };
    format!("--layout {layout} --vec {order}")
}

/// Runs a script; the session and every answer, in order.
fn run(src: &str, conv: Conventions) -> (Session, Vec<Answer>) {
    let mut s = session(conv);
    let answers = s.answers(src).unwrap_or_else(|e| panic!("script failed: {}\n{src}", e.render("<case>", src)));
    (s, answers)
}

/// Checks one answer: `Err` with a message unless the checker agrees.
fn check_answer(s: &Session, a: &Answer, src: &str, conv: Conventions) -> Result<f64, String> {
    let what = || format!("[{}] {}\n    in script: {}", conv_name(conv), s.render(a), src.replace('\n', "; "));
    if !matches!(a.kind(), QueryKind::Gradient | QueryKind::Jacobian | QueryKind::Differential) {
        return Err(format!("not a derivative query: {}", what()));
    }
    match s.check(a) {
        Ok(Some(err)) if err <= TOLERANCE => Ok(err),
        Ok(Some(err)) => Err(format!("relative error {err:.3e}: {}", what())),
        Ok(None) => Err(format!("checker returned None: {}", what())),
        Err(e) => Err(format!("checker failed ({}): {}", e.0, what())),
    }
}

// ---- a second opinion: differences along a direction, in `common/along.rs` --------------

/// Runs `src` under all four conventions and checks every answer, with the
/// checker and along a random direction ([`along_error`]); panics
/// with every failure. Returns the rendered answers under the default
/// conventions.
fn verify(src: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let mut default_render = Vec::new();
    for conv in ALL {
        let (s, answers) = run(src, conv);
        assert!(!answers.is_empty(), "no queries in {src}");
        let targets: BTreeSet<String> = answers.iter().filter_map(|a| a.wrt().map(String::from)).collect();
        for a in &answers {
            if let Err(msg) = check_answer(&s, a, src, conv) {
                failures.push(msg);
            }
            match along_error(&s, a, &targets, 1) {
                Ok(err) if err <= TOLERANCE => {}
                Ok(err) => failures.push(format!(
                    "relative error along a direction {err:.3e}: [{}] {}",
                    conv_name(conv),
                    s.render(a)
                )),
                Err(e) => failures.push(format!("differences along a direction failed ({e}): {}", s.render(a))),
            }
        }
        if conv.layout == Layout::Denominator && conv.order == VecOrder::Row {
            default_render = answers.iter().map(|a| s.render(a)).collect();
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
    default_render
}

/// The rendered answers of a script under the given conventions.
fn rendered(src: &str, conv: Conventions) -> Vec<String> {
    let (s, answers) = run(src, conv);
    answers.iter().map(|a| s.render(a)).collect()
}

/// One `#[test]` per textbook case; each checks every answer under all four
/// conventions.
macro_rules! cases {
    ($($(#[$m:meta])* $name:ident: $src:expr;)*) => {
        $(
            $(#[$m])*
            #[test]
            fn $name() {
                verify($src);
            }
        )*
    };
}

// ---- textbook cases ---------------------------------------------------------------

/// The seed network (examples/backprop.mdiff), with its queries.
const SEED: &str = "
n0: 1 x 2
W1: 2 x 3
b1: 1 x 3
W2: 3 x 2
b2: 1 x 2
y:  1 x 2
f1, f2: R -> R

d1 = n0 W1 + b1
n1 = f1(d1)
d2 = n1 W2 + b2
n2 = f2(d2)
L  = (n2 - y)(n2 - y)^T

d(L)
∂L/∂n2^T
∂n2/∂d2^T
∂d2/∂vec(W2)^T
∂L/∂vec(W2)^T
∂L/∂vec(W1)^T
∂L/∂W1
";

cases! {
    // Traces.
    trace_ax: "A: m x n; X: n x m
        grad(tr(A X), X); grad(tr(A X), A); d(tr(A X)); ∂(tr(A X))/∂vec(X)^T";
    trace_xa_numeric: "A: 3 x 2; X: 2 x 3; grad(tr(X A), X); grad(tr(X A), A); jacobian(tr(X A), A)";
    trace_xtax: "A: n x n; X: n x m
        grad(tr(X^T A X), X); grad(tr(X^T A X), A); d(tr(X^T A X)); ∂(tr(Xᵀ A X))/∂vec(X)ᵀ";
    trace_axb: "A: p x n; X: n x m; B: m x p
        grad(tr(A X B), X); grad(tr(A X B), B); grad(tr(A X B), A); jacobian(tr(A X B), X)";
    trace_x_squared: "X: n x n; grad(tr(X^2), X); grad(tr(X²), X); grad(tr(X X^T), X); d(tr(X^2))";
    trace_x_inverse: "X: n x n; grad(tr(X^-1), X); grad(tr(inv(X)), X); grad(tr(X⁻¹), X); d(tr(X^-1))";
    trace_axbxt: "A: n x n; B: m x m; X: n x m; grad(tr(A X B X^T), X); grad(tr(A X B X^T), B)";

    // Determinants and log det.
    det_x: "X: n x n; grad(det(X), X); d(det(X)); jacobian(det(X), X)";
    det_axb: "A, X, B: n x n; grad(det(A X B), X); grad(det(A X B), A); grad(det(A X B), B)";
    det_x_cubed: "X: n x n; grad(det(X^3), X); grad(det(X³), X); d(det(X^3))";
    det_a_cubed: "A: n x n; grad(det(A^3), A); ∂(det(A^3))/∂vec(A)^T";
    det_numeric: "X: 3 x 3; grad(det(X), X); grad(det(X^T X), X); grad(det(2 X), X)";
    logdet_x: "X: n x n; grad(logdet(X), X); d(logdet(X)); grad(logdet(X^T X), X); grad(logdet(X^-1), X)";
    logdet_rectangular: "X: 5 x 2; grad(logdet(X^T X), X); jacobian(logdet(X^T X), X)";

    // Inverses.
    inverse_bilinear: "X: n x n; a, b: n
        grad(a^T X^-1 b, X); grad(a^T X^-1 b, a); ∂(X^-1)/∂vec(X)^T; d(X^-1); jacobian(X^-1 b, X)";
    inverse_shifted: "A: n x n; x: n
        grad(x^T (A + 3 I)^-1 x, A); grad(x^T (A + 3 I)^-1 x, x); jacobian((A + 3I)^-1 x, A)";

    // Quadratic forms.
    quadratic_form: "x: n; A: n x n
        grad(x^T A x, x); grad(x^T A x, A); jacobian(x^T A x, x); d(x^T A x); ∂(A x)/∂x^T";
    quadratic_form_symmetric: "x: n; S: n x n symmetric
        grad(x^T S x, x); d(x^T S x); jacobian(S x, x); grad(x^T S^-1 x, x)";
    symmetric_variable: "A: n x n; S: n x n symmetric; x: n
        grad(x^T S x, S); grad(tr(A S), S); grad(logdet(S), S); grad(tr(S^-1 A), S); jacobian(S x, S)";
    bilinear_form: "x: n; y: m; A: n x m; grad(x^T A y, A); grad(x^T A y, y); grad(x^T A y, x)";
    rayleigh_quotient: "x: n; A: n x n; r = (x^T A x) / (x^T x); grad(r, x); grad(r, A); d(r)";

    // Least squares, ridge, Frobenius norms.
    least_squares: "A: m x n; x: n; b: m
        grad(‖A x - b‖², x); grad(||A x - b||^2, A); grad((A x - b)^T (A x - b), x); d(‖A x - b‖²)";
    ridge: "A: m x n; x: n; b: m; λ: scalar
        L = ‖A x - b‖² + λ ‖x‖²
        grad(L, x); grad(L, λ); grad(L, A); d(L); ∂L/∂x^T";
    frobenius_norm: "X: m x n
        grad(‖X‖, X); grad(‖X‖², X); grad(norm(X), X); grad(||X||^3, X); d(‖X‖)";
    frobenius_residual: "A: p x m; X: m x n; B: p x n
        grad(‖A X - B‖², X); grad(‖A X - B‖², A); ∂(A X - B)/∂vec(X)^T; grad(‖A X - B‖, B)";
    low_rank_reconstruction: "X: n x p; W: p x m; grad(‖X - X W W^T‖², W)";

    // Logistic regression, softplus.
    logistic_sigma: "w, x: n; y: scalar
        p = σ(w^T x)
        L = -(y log(p) + (1 - y) log(1 - p))
        grad(L, w); d(L); grad(L, x)";
    logistic_sigmoid_ascii: "X: m x n; w: n; y: m
        L = -(y^T log(sigmoid(X w)) + (1 - y)^T log(1 - sigmoid(X w)))
        grad(L, w); grad(L, X)";
    logistic_log_one_plus_exp: "X: m x n; w: n; y: m
        L = sum(log(1 + exp(X w))) - y^T X w
        grad(L, w); grad(L, X); d(L)";
    logistic_scalar_log_one_plus_exp: "w, x: n; y: scalar
        grad(log(1 + exp(-y w^T x)), w); grad(log(1 + exp(-y w^T x)), y)";
    softplus: "X: m x n; w: n
        grad(sum(softplus(X w)), w); jacobian(softplus(X w), w); grad(sum(softplus(X)), X)";
    softmax_cross_entropy: "z, y: n
        L = log(sum(exp(z))) - y^T z
        grad(L, z); jacobian(exp(z) / sum(exp(z)), z)";
    gaussian_log_likelihood: "x, μ: n; P: n x n
        L = logdet(P) - (x - μ)^T P (x - μ)
        grad(L, μ); grad(L, P); d(L)";

    // Networks.
    seed_network: SEED;
    seed_network_tanh_sigma: "
        n0: 1 x 2; W1: 2 x 3; b1: 1 x 3; W2: 3 x 2; b2: 1 x 2; y: 1 x 2
        d1 = n0 W1 + b1
        n1 = tanh(d1)
        d2 = n1 W2 + b2
        n2 = σ(d2)
        L = (n2 - y)(n2 - y)^T
        d(L); ∂L/∂n2^T; ∂n2/∂d2^T; ∂d2/∂vec(W2)^T; ∂L/∂vec(W2)^T; ∂L/∂vec(W1)^T; ∂L/∂W1; ∂L/∂W2
        grad(L, b1); grad(L, n0)";
    seed_network_symbolic: "
        n0: 1 x n; W1: n x m; b1: 1 x m; W2: m x p; b2: 1 x p; y: 1 x p
        f1, f2: R -> R
        d1 = n0 W1 + b1
        n1 = f1(d1)
        d2 = n1 W2 + b2
        n2 = f2(d2)
        L = (n2 - y)(n2 - y)^T
        ∂L/∂vec(W1)^T; ∂L/∂W1; ∂L/∂W2; grad(L, b2); ∂n2/∂vec(W1)^T; d(L)";
    three_layer_network: "
        x: n; W1: m x n; b1: m; W2: p x m; b2: p; W3: 2 x p; y: 2
        h1 = tanh(W1 x + b1)
        h2 = σ(W2 h1 + b2)
        o = W3 h2
        L = ‖o - y‖²
        grad(L, W1); grad(L, W2); grad(L, W3); grad(L, b1); ∂L/∂vec(W1)^T; d(L); jacobian(o, x)";
    network_declared_column: "
        x: n; W: m x n; V: p x m; f, g: R -> R
        h = f(W x)
        o = g(V h)
        L = sum(o)
        grad(L, W); grad(L, V); jacobian(o, W); jacobian(h, x)";
    numeric_network: "
        W: 4 x 3; x: 3; b: 4; y: 4
        L = ‖tanh(W x + b) - y‖²
        grad(L, W); grad(L, b); ∂L/∂vec(W)^T; d(L)";

    // Elementwise functions.
    exp_of_mx: "M: m x n; x: n
        jacobian(exp(M x), x); ∂(exp(M x))/∂vec(M)^T; grad(sum(exp(M x)), M); d(exp(M x))";
    elementwise_power: "X, A: m x n
        grad(sum(X .^ 3), X); grad(sum(A ∘ X .^ 2), X); grad(sum(exp(X) .^ (1/2)), X)
        ∂(X .^ 2)/∂vec(X)^T; grad(sum(exp(X) .^ -1), X)";
    elementwise_division: "A, X: m x n
        grad(sum(A ./ exp(X)), X); grad(sum(X ./ (1 + X ∘ X)), X); ∂(A ./ exp(X))/∂vec(X)^T
        grad(sum(X ./ exp(A)), A)";
    trigonometric: "X: m x n; A: n x m
        grad(tr(A sin(X)) + tr(A cos(X)), X); grad(sum(sqrt(exp(X))), X); jacobian(cos(X), X)";
    relu_abs: "W: m x n; x: n
        grad(sum(relu(W x)), W); grad(sum(abs(W x)), x); jacobian(relu(W x), x); grad(‖relu(W)‖², W)";

    // Kronecker products, vec, diag, sum.
    kron_trace: "A: 3 x 3; X: n x n; grad(tr(A ⊗ X), X); grad(tr(kron(X, A)), X); grad(tr(A ⊗ X), A)";
    kron_sum: "A: 3 x 2; X: n x m; grad(sum(kron(A, X)), X); grad(sum(A ⊗ X), A)";
    kron_jacobian: "A: 2 x 3; X: n x m; ∂(A ⊗ X)/∂vec(X)^T; ∂(X ⊗ A)/∂vec(X)^T; d(A ⊗ X)";
    kron_vectors: "x, y: n; A: n x n; grad(tr(A (x ⊗ y^T)), x); grad(sum(x ⊗ y), y)";
    vec_inner: "X: 2 x 3; c: 6
        grad(c^T vec(X), X); jacobian(vec(X), X); grad(vec(X)^T vec(X), X); grad(c^T vec(X), c)";
    diag_both_ways: "X, A: n x n; v: n
        grad(v^T diag(X), X); grad(tr(diag(v) A), v); grad(sum(diag(v) A diag(v)), v)
        grad(sum(diag(X) v^T), X)";
    jacobian_of_diag_of_vector: "v: n; jacobian(diag(v), v); ∂(diag(v))/∂v^T";
    jacobian_of_diag_of_matrix: "X: n x n; jacobian(diag(X), X); ∂(diag(X))/∂vec(X)^T";
    jacobian_through_diag: "v: n; A: n x m; jacobian(diag(v) A, v); ∂(tr(diag(v) A A^T))/∂v^T";
    sum_all: "A: p x n; X: n x m; B: m x p
        grad(sum(A X B), X); grad(sum(X), X); grad(sum(X ∘ X), X); jacobian(sum(A X), X)";

    // Matrix powers and scalar definitions.
    matrix_powers: "X: n x n; a, b: n
        grad(tr(X^3), X); grad(tr(X^-2), X); grad(a^T X^4 b, X); ∂(X^2)/∂vec(X)^T; d(X^3)";
    scalar_definitions: "x: n; A: n x n
        s = x^T A x
        t = s^2 + 3 s
        u = t / (1 + s^2)
        grad(u, x); grad(t, A); d(u); grad(s, x)";

    // Regressions and constants.
    regression_trace_plus_one: "E: n x n; ∂(tr(E) + 1)/∂E; grad(tr(E) + 1, E)";
    regression_trace_plus_trace_square: "A: n x n; ∂(tr(A) + tr(A²))/∂A; grad(tr(A) + tr(A^2), A)";
    sum_with_constant: "x: n; X: m x n
        grad(x^T x + 5, x); grad(sum(X) + 2, X); grad(3 + tr(X^T X) - 1/2, X); grad(2 + 0.5 ‖X‖², X)";

    // Jacobians and differentials of matrix functions.
    jacobian_linear: "A: p x m; X: m x n; B: n x p
        ∂(A X B)/∂vec(X)^T; jacobian(A X B, X); ∂(X^T)/∂vec(X)^T; ∂(A X)/∂vec(A)^T";
    jacobian_vector: "A: m x n; x: n
        jacobian(A x, x); ∂(A x)/∂x^T; jacobian(tanh(A x), x); jacobian(x^T A^T, x); jacobian(A x, A)";
    jacobian_hadamard: "X, Y: m x n
        ∂(X ∘ Y)/∂vec(X)^T; ∂(X ∘ X)/∂vec(X)^T; ∂(sin(X))/∂vec(X)^T; ∂(X ∘ Y)/∂vec(Y)^T";
    differential_products: "A: m x n; X: n x p; B: p x m
        d(A X B); d(X^T X); d(tr(A X B)); d(A X ⊙ B^T)";
    differential_inverse_det: "X: n x n; d(X^-1); d(det(X)); d(logdet(X)); d(X^2); d(X^-2)";

    // Engine bugs these tests found, now fixed.
    kron_with_diag_gradient: "x: n; H: n x n; grad(tr(x^T ⊗ diag(H)), H); grad(sum(x^T ⊗ diag(H)), H)";
    kron_of_diag_gradient: "v: n; A: 2 x 2; grad(sum(diag(v) ⊗ A), v); grad(sum(A ⊗ diag(v)), v)";
    jacobian_hadamard_with_transposed_row: "z: n; r: 1 x n
        jacobian(exp(z) ∘ r^T, z); jacobian(tanh(z ∘ r^T), z)";
    // Regression: the e-graph simplifier once panicked here (index out of bounds in
    // egg's union-find, from matdiff::egraph::Flops::own).
    egraph_panic_on_gradient: "x: n; s, t: scalar
        grad((s x^T ./ log(1 + exp(x^T))) / (1 + (log(1 + t^2))^2) x, s)";
    jacobian_hadamard_of_row_powers: "x: n; r: 1 x m
        L = sum(tanh(x) * (log(1 + exp(r)) .^ 2))
        jacobian(L, r)";
}

/// Every script in `tests/cases/textbook/`, under all four conventions.
#[test]
fn textbook_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/textbook");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/cases/textbook")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "mdiff"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "textbook scripts missing in {}", dir.display());
    let mut failures = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).expect("read");
        if let Err(p) = std::panic::catch_unwind(|| verify(&src)) {
            let msg = p.downcast_ref::<String>().cloned().unwrap_or_else(|| "panic".into());
            failures.push(format!("{}: {msg}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- textual answers ---------------------------------------------------------------

#[test]
fn regression_answers_as_text() {
    for conv in ALL {
        assert_eq!(rendered("E: n x n; ∂(tr(E) + 1)/∂E", conv), ["∂(tr(E) + 1)/∂E = I"], "{}", conv_name(conv));
        assert_eq!(
            rendered("A: n x n; ∂(tr(A) + tr(A²))/∂A", conv),
            ["∂(tr(A) + tr(A²))/∂A = I + 2 Aᵀ"],
            "{}",
            conv_name(conv)
        );
    }
}

#[test]
fn gradient_text_is_the_same_under_every_convention() {
    let src = "x: n; A: n x n; X: m x n; grad(x^T A x, x); grad(‖X A - X‖², A)";
    let base = rendered(src, Conventions::default());
    for conv in ALL {
        assert_eq!(rendered(src, conv), base, "{}", conv_name(conv));
    }
}

// ---- one check per differential rule -------------------------------------------------

/// Declarations shared by the rule checks: sizes 2, 3 and 5, so that a
/// missing transpose or a swapped factor cannot fit by accident.
const RULE_DECLS: &str = "A: 2 x 3; B: 3 x 5; C: 5 x 2; X, Y: 3 x 5; S, T: 3 x 3; s: scalar
u: 3; w: 5; P: n x m; Q: m x p; f, g: R -> R";

/// Checks `d(F)` for each `F` (all names vary) under all four conventions,
/// and that the differential mentions `dN` for every declared matrix `N`
/// that `F` mentions (the checker only compares the terms present).
fn check_rule(rule: &str, exprs: &[&str]) {
    let mut failures = Vec::new();
    for e in exprs {
        let src = format!("{RULE_DECLS}\nd({e})");
        for conv in ALL {
            let (s, answers) = run(&src, conv);
            let [a] = answers.as_slice() else {
                panic!("one answer expected for {src}");
            };
            assert_eq!(a.kind(), QueryKind::Differential);
            if let Err(msg) = check_answer(&s, a, &format!("d({e})"), conv) {
                failures.push(format!("rule {rule}: {msg}"));
            }
            match along_error(&s, a, &BTreeSet::new(), 1) {
                Ok(err) if err <= TOLERANCE => {}
                Ok(err) => failures.push(format!(
                    "rule {rule}: relative error along a direction {err:.3e}: [{}] {}",
                    conv_name(conv),
                    s.render(a)
                )),
                Err(m) => failures.push(format!("rule {rule}: differences along a direction failed ({m})")),
            }
            let f = &a.function;
            let mut present = Vec::new();
            a.expr.diff_names(&mut present);
            for (name, (binding, _)) in &s.env.names {
                if matches!(binding, Binding::Matrix { .. })
                    && f.mentions(name)
                    && !present.iter().any(|p| &**p == name.as_str())
                {
                    failures.push(format!("rule {rule}: d{name} missing from [{}] {}", conv_name(conv), s.render(a)));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

macro_rules! rules {
    ($($(#[$m:meta])* $name:ident: [$($e:expr),* $(,)?];)*) => {
        mod rule {
            use super::check_rule;
            $(
                $(#[$m])*
                #[test]
                fn $name() {
                    check_rule(stringify!($name), &[$($e),*]);
                }
            )*
        }
    };
}

rules! {
    sum: ["X + Y", "X - 2 Y", "A B + A Y", "-X + Y - X", "P Q + P Q"];
    product: ["A B", "A B C", "A X C", "X^T S", "P Q"];
    scalar_product: ["s X", "(u^T S u) X", "tr(S) A B", "s (A B)", "2 s X"];
    scalar_division: ["X / tr(S)", "A B / exp(s)", "X / (u^T u)", "(u^T S u) / (1 + s^2)"];
    transpose: ["X^T A^T", "A^T A", "B^T", "(A B)^T C^T", "Q^T P^T"];
    inverse: ["S^-1", "inv(S T)", "A S^-1 B", "(S + T)⁻¹", "u^T S^-1 u"];
    power: ["S^2", "S^3", "S^-2", "(u^T u)^3", "A S^4 B", "(A B C)^2"];
    trace: ["tr(A B C)", "tr(S^T T)", "tr(X^T Y)", "tr(S)", "tr(P Q Q^T P^T)"];
    det: ["det(S)", "det(A B B^T A^T)", "det(S T)", "det(S^T)", "det(A B C)"];
    logdet: ["logdet(S)", "logdet(A A^T)", "logdet(S T)", "logdet(S^-1)"];
    hadamard: ["X ∘ Y", "(A B) ∘ (A Y)", "X ⊙ X", "X .* Y .* X", "(P Q) ∘ (P Q)"];
    hadamard_division: ["X ./ exp(Y)", "A B ./ (1 + (A Y) ∘ (A Y))", "1 ./ exp(X)", "X ./ exp(X)"];
    hadamard_power: ["X .^ 3", "exp(X) .^ (1/2)", "exp(A B) .^ -1", "X .^ 2", "exp(S) .^ (3/2)", "exp(X) .^ 0.5"];
    kronecker: ["A ⊗ B", "kron(u, A)", "S ⊗ S", "A ⊗ u^T", "X ⊗ A"];
    vec: ["vec(A B)", "vec(X)^T vec(Y)", "vec(S) ⊗ u", "vec(X^T)", "A vec(u^T)"];
    diag_of_vector: ["diag(u) S", "diag(B w)", "diag(A^T C^T w)", "A diag(u) B"];
    diag_of_matrix: ["diag(S T)", "diag(A^T A)", "diag(X Y^T)", "diag(S)"];
    sum_of_entries: ["sum(A B)", "sum(X ∘ Y)", "sum(S^-1)", "sum(P Q)"];
    norm: ["‖A B‖", "‖u‖", "‖X‖²", "‖X‖^3", "norm(S T)", "||A B - A Y||^2"];
    exp: ["exp(A B)", "exp(S) S", "exp(P Q)"];
    log: ["log(1 + exp(A B))", "log(X ∘ X + 1)", "log(exp(S) T)"];
    sin: ["sin(A B)", "sin(X) ∘ X"];
    cos: ["cos(A B)", "cos(X)^T Y"];
    tanh: ["tanh(A B)", "tanh(S T)"];
    sigmoid: ["σ(A B)", "sigmoid(X) ∘ Y"];
    sqrt: ["sqrt(1 + X ∘ X)", "sqrt(exp(A B))"];
    softplus: ["softplus(A B)", "softplus(X - Y)"];
    relu: ["relu(A B)", "relu(X) ∘ Y"];
    abs: ["abs(A B)", "abs(X) + Y"];
    declared: ["f(A B)", "f(X) ∘ g(Y)", "f'(A B)", "f(f(X))", "g''(S T)", "f(P Q)"];
    kronecker_with_diag: ["tr(u^T ⊗ diag(S))", "sum(diag(u) ⊗ A)"];
}

// ---- planted wrong answers --------------------------------------------------------------

/// The first answer of a script.
fn first_answer(src: &str, conv: Conventions) -> (Session, Answer) {
    let (s, mut answers) = run(src, conv);
    (s, answers.remove(0))
}

/// Whether the checker rejects the answer (error above tolerance or an error).
fn rejected(s: &Session, a: &Answer) -> bool {
    match s.check(a) {
        Ok(Some(err)) => err > TOLERANCE,
        Ok(None) => false,
        Err(_) => true,
    }
}

fn sq(n: &str) -> Shape {
    Shape::new(Dim::sym(n), Dim::sym(n))
}

#[test]
fn planted_transposed_gradient_is_rejected() {
    for conv in ALL {
        let (s, mut a) = first_answer("A, X: n x n; grad(tr(A X), X)", conv);
        assert!(!rejected(&s, &a), "the right answer must pass");
        a.expr = ir::transpose(a.expr.clone());
        assert!(rejected(&s, &a), "transposed gradient accepted");
    }
}

#[test]
fn planted_doubled_answers_are_rejected() {
    let scripts = [
        "x: n; A: n x n; grad(x^T A x, x)",
        "X: n x n; grad(det(X), X)",
        "A: m x n; X: n x p; ∂(A X)/∂vec(X)^T",
        "X: n x n; d(X^-1)",
        "A: 2 x 3; B: 3 x 5; d(A B)",
        SEED,
    ];
    for src in scripts {
        for conv in ALL {
            let (s, answers) = run(src, conv);
            for mut a in answers {
                assert!(!rejected(&s, &a), "right answer rejected: {}", s.render(&a));
                a.expr = ir::scale(rat(2), a.expr.clone());
                assert!(rejected(&s, &a), "doubled answer accepted: {}", s.render(&a));
            }
        }
    }
}

#[test]
fn planted_wrong_rules_are_rejected() {
    let n = || sq("n");
    let x = || ir::var("X", n(), false);
    let dx = || ir::diff("X", n());
    for conv in ALL {
        // d(X⁻¹) with a transposed inverse: -X⁻ᵀ dX X⁻¹.
        let (s, mut a) = first_answer("X: n x n; d(X^-1)", conv);
        assert!(!rejected(&s, &a));
        a.expr = ir::neg(ir::product([ir::transpose(ir::inverse(x())), dx(), ir::inverse(x())]));
        assert!(rejected(&s, &a), "wrong inverse rule accepted");

        // d(X²) = 2 X dX, as if matrices commuted.
        let (s, mut a) = first_answer("X: n x n; d(X^2)", conv);
        assert!(!rejected(&s, &a));
        a.expr = ir::scale(rat(2), ir::matmul(x(), dx()));
        assert!(rejected(&s, &a), "commuting power rule accepted");

        // d det X = det X tr(X⁻ᵀ dX) instead of tr(X⁻¹ dX).
        let (s, mut a) = first_answer("X: n x n; d(det(X))", conv);
        assert!(!rejected(&s, &a));
        a.expr = ir::scalar_mul(ir::det(x()), ir::trace(ir::matmul(ir::transpose(ir::inverse(x())), dx())));
        assert!(rejected(&s, &a), "transposed det rule accepted");

        // d(A B) with a sign error: dA B - A dB.
        let (s, mut a) = first_answer("A: 2 x 3; B: 3 x 5; d(A B)", conv);
        assert!(!rejected(&s, &a));
        let shape = |r, c| Shape::new(Dim::num(r), Dim::num(c));
        a.expr = ir::sub(
            ir::matmul(ir::diff("A", shape(2, 3)), ir::var("B", shape(3, 5), false)),
            ir::matmul(ir::var("A", shape(2, 3), false), ir::diff("B", shape(3, 5))),
        );
        assert!(rejected(&s, &a), "wrong product rule accepted");

        // σ' written as σ (like exp).
        let (s, mut a) = first_answer("z: n; d(σ(z))", conv);
        assert!(!rejected(&s, &a));
        let z = ir::var("z", Shape::new(Dim::sym("n"), Dim::one()), false);
        a.expr = ir::hadamard(
            ir::apply(matdiff::functions::lookup("sigmoid").unwrap(), z),
            ir::diff("z", Shape::new(Dim::sym("n"), Dim::one())),
        );
        assert!(rejected(&s, &a), "wrong sigmoid rule accepted");
    }
}

#[test]
fn planted_jacobian_in_the_wrong_layout_is_rejected() {
    // Square shapes, so that the wrong layout still has the right shape.
    let src = "A, X: n x n; ∂(A X)/∂vec(X)^T";
    for conv in ALL {
        let (s, mut a) = first_answer(src, conv);
        assert!(!rejected(&s, &a));
        a.expr = ir::transpose(a.expr.clone());
        assert!(rejected(&s, &a), "transposed Jacobian accepted");
    }
    // The other vec order: a Kronecker product with its factors swapped.
    let row = first_answer(src, ALL[0]).1;
    let (s, mut col) = first_answer(src, ALL[1]);
    col.expr = row.expr;
    assert!(rejected(&s, &col), "row-order Jacobian accepted under --vec col");
}

/// The check along a direction sees a dropped term, and the planted errors.
#[test]
fn planted_errors_are_rejected_along_a_direction() {
    let none = BTreeSet::new();
    for conv in ALL {
        let (s, mut a) = first_answer("A: 2 x 3; B: 3 x 5; d(A B)", conv);
        assert!(along_error(&s, &a, &none, 1).unwrap() <= TOLERANCE);
        let shape = |r, c| Shape::new(Dim::num(r), Dim::num(c));
        a.expr = ir::matmul(ir::diff("A", shape(2, 3)), ir::var("B", shape(3, 5), false));
        assert!(along_error(&s, &a, &none, 1).unwrap() > TOLERANCE, "dropped term accepted");

        let (s, mut a) = first_answer("A, X: n x n; grad(tr(A X), X)", conv);
        let x = BTreeSet::from(["X".to_string()]);
        assert!(along_error(&s, &a, &x, 1).unwrap() <= TOLERANCE);
        a.expr = ir::transpose(a.expr.clone());
        assert!(along_error(&s, &a, &x, 1).unwrap() > TOLERANCE, "transposed gradient accepted");

        let (s, mut a) = first_answer("A, X: n x n; ∂(A X)/∂vec(X)^T", conv);
        assert!(along_error(&s, &a, &x, 1).unwrap() <= TOLERANCE);
        a.expr = ir::transpose(a.expr.clone());
        assert!(along_error(&s, &a, &x, 1).unwrap() > TOLERANCE, "transposed Jacobian accepted");
    }
}

/// The checker compares `d(F)` only in the differentials the answer
/// mentions, so an answer that drops a whole term passes.
#[test]
fn planted_dropped_term_is_rejected() {
    let (s, mut a) = first_answer("A: 2 x 3; B: 3 x 5; d(A B)", Conventions::default());
    let shape = |r, c| Shape::new(Dim::num(r), Dim::num(c));
    a.expr = ir::matmul(ir::diff("A", shape(2, 3)), ir::var("B", shape(3, 5), false));
    assert!(rejected(&s, &a), "d(A B) = dA B accepted");
}

// ---- the reference evaluator: the script as written, on arrays ---------------------------
//
// `--check` takes its finite differences from `matdiff::eval::reference`, which
// evaluates the parsed script with NumPy broadcasting and shapes from the arrays,
// not from the typed, simplified form under test. Scripts whose typing is still
// being settled are evaluated here straight from their syntax tree.

mod reference_evaluator {
    use super::*;
    use matdiff::ast::{Expr, ExprKind};
    use matdiff::error::Span;
    use matdiff::eval::{reference, user_function, EvalError, Mat, Values};
    use matdiff::typeck::Written;

    /// A session holding the declarations (and definitions) of `decls`.
    fn declared(decls: &str) -> Session {
        let mut s = Session::default();
        s.run(decls).unwrap_or_else(|e| panic!("{}", e.render("<decls>", decls)));
        s
    }

    /// Spans of the bare identities of an expression, in source order.
    fn identity_spans(e: &Expr, out: &mut Vec<Span>) {
        match &e.kind {
            ExprKind::Identity(None) => out.push(e.span),
            ExprKind::Num(_) | ExprKind::Name(_) | ExprKind::Identity(Some(_)) | ExprKind::Derivative(_) => {}
            ExprKind::Neg(x) | ExprKind::Postfix(x, _) | ExprKind::Norm(x) | ExprKind::Paren(x) => {
                identity_spans(x, out)
            }
            ExprKind::Binary(_, a, b) => {
                identity_spans(a, out);
                identity_spans(b, out);
            }
            ExprKind::Call { name, args, .. } => {
                if name.name == "I" {
                    out.push(name.span);
                }
                args.iter().for_each(|a| identity_spans(a, out));
            }
        }
        out.sort_by_key(|s| s.start);
    }

    /// An expression as written, with the sizes of its bare `I`s given by hand.
    fn written(text: &str, identities: &[u64], order: VecOrder) -> Written {
        let expr = matdiff::syntax::parse_expr(text).unwrap_or_else(|e| panic!("{}", e.render("<expr>", text)));
        let mut spans = Vec::new();
        identity_spans(&expr, &mut spans);
        assert_eq!(spans.len(), identities.len(), "sizes for every bare I of {text}");
        let identities = spans.into_iter().zip(identities.iter().map(|n| Dim::num(*n))).collect();
        Written { expr, identities, order }
    }

    fn values(mats: &[(&str, Mat)], sizes: &[(&str, usize)]) -> Values {
        Values {
            mats: mats.iter().map(|(n, m)| (n.to_string(), m.clone())).collect(),
            sizes: sizes.iter().map(|(n, k)| (n.to_string(), *k)).collect(),
            ..Values::default()
        }
    }

    fn eval(s: &Session, text: &str, v: &Values) -> Result<Mat, EvalError> {
        reference::evaluate(&s.env, &written(text, &[], s.options.conventions.order), v)
    }

    fn m(r: usize, c: usize, entries: &[f64]) -> Mat {
        Mat::from_row_slice(r, c, entries)
    }

    fn close(a: &Mat, b: &Mat) -> bool {
        a.shape() == b.shape() && (a - b).norm() <= 1e-12 * (1.0 + b.norm())
    }

    #[track_caller]
    fn same(got: Result<Mat, EvalError>, want: Mat) {
        let got = got.unwrap_or_else(|e| panic!("evaluation failed: {}", e.0));
        assert!(close(&got, &want), "got {got} want {want}");
    }

    #[test]
    fn a_scalar_broadcasts_in_elementwise_operations() {
        let s = declared("s: scalar; A: 2 x 2; x: 3");
        let a = m(2, 2, &[1.0, 2.0, 4.0, -5.0]);
        let x = m(3, 1, &[1.0, 2.0, 4.0]);
        let v = values(&[("s", m(1, 1, &[2.5])), ("A", a.clone()), ("x", x.clone())], &[]);
        same(eval(&s, "ones(3, 2) ∘ s", &v), Mat::from_element(3, 2, 2.5));
        same(eval(&s, "sum(ones(3, 2) ∘ s)", &v), m(1, 1, &[15.0]));
        same(eval(&s, "s ./ A", &v), a.map(|e| 2.5 / e));
        same(eval(&s, "sum(x) ./ x", &v), x.map(|e| 7.0 / e));
        same(eval(&s, "A + 1", &v), a.add_scalar(1.0));
        same(eval(&s, "2 - A", &v), a.map(|e| 2.0 - e));
        same(eval(&s, "A / s", &v), &a / 2.5);
        same(eval(&s, "s A", &v), &a * 2.5);
        same(eval(&s, "A s", &v), &a * 2.5);
    }

    #[test]
    fn rows_and_columns_broadcast_in_elementwise_operations() {
        let s = declared("X: 4 x 3; W: 3 x 2; b: 1 x 2; c: 4 x 1");
        let x = Mat::from_fn(4, 3, |i, j| (i * 3 + j) as f64 - 5.0);
        let w = Mat::from_fn(3, 2, |i, j| 0.5 * i as f64 - j as f64);
        let b = m(1, 2, &[10.0, -20.0]);
        let c = m(4, 1, &[1.0, 2.0, 3.0, 4.0]);
        let v = values(&[("X", x.clone()), ("W", w.clone()), ("b", b.clone()), ("c", c.clone())], &[]);
        let xw = &x * &w;
        same(eval(&s, "X W + b", &v), Mat::from_fn(4, 2, |i, j| xw[(i, j)] + b[(0, j)]));
        same(eval(&s, "X W - c", &v), Mat::from_fn(4, 2, |i, j| xw[(i, j)] - c[(i, 0)]));
        same(eval(&s, "c ∘ X", &v), Mat::from_fn(4, 3, |i, j| c[(i, 0)] * x[(i, j)]));
        same(eval(&s, "X W ./ b", &v), Mat::from_fn(4, 2, |i, j| xw[(i, j)] / b[(0, j)]));
        // An outer "sum" of a column and a row.
        same(eval(&s, "c + b", &v), Mat::from_fn(4, 2, |i, j| c[(i, 0)] + b[(0, j)]));
        // Shapes that do not broadcast are an error, not a guess.
        assert!(eval(&s, "X + W", &v).is_err());
        assert!(eval(&s, "X W", &values(&[("X", x), ("W", b)], &[])).is_err());
    }

    #[test]
    fn a_size_used_as_a_value_is_that_size() {
        let s = declared("X: N x d; x: n");
        let x = Mat::from_fn(4, 3, |i, j| (i + 2 * j) as f64);
        let v = values(&[("X", x.clone()), ("x", m(2, 1, &[1.0, 3.0]))], &[("N", 4), ("d", 3), ("n", 2)]);
        same(eval(&s, "sum(X) / N", &v), m(1, 1, &[x.sum() / 4.0]));
        same(eval(&s, "X / sqrt(d)", &v), &x / 3f64.sqrt());
        same(eval(&s, "sum(x) / n", &v), m(1, 1, &[2.0]));
        same(eval(&s, "ones(N, d) ∘ d", &v), Mat::from_element(4, 3, 3.0));
        assert!(eval(&s, "X / q", &v).is_err(), "an unknown name is an error");
    }

    #[test]
    fn bare_identities_take_their_recorded_size_also_through_kronecker_products() {
        let s = declared("A: 2 x 3; B: 3 x 2; C: 2 x 2; x: 6; y: 4");
        let a = Mat::from_fn(2, 3, |i, j| 1.0 + i as f64 - 2.0 * j as f64);
        let b = Mat::from_fn(3, 2, |i, j| 0.5 + i as f64 * j as f64);
        let c = m(2, 2, &[2.0, 1.0, -1.0, 3.0]);
        let x = Mat::from_fn(6, 1, |i, _| i as f64 - 2.0);
        let y = Mat::from_fn(4, 1, |i, _| 1.0 / (1.0 + i as f64));
        let v =
            values(&[("A", a.clone()), ("B", b.clone()), ("C", c.clone()), ("x", x.clone()), ("y", y.clone())], &[]);
        let at = |text: &str, sizes: &[u64]| reference::evaluate(&s.env, &written(text, sizes, VecOrder::Row), &v);
        let i = |n| Mat::identity(n, n);
        same(at("(I ⊗ C) x", &[3]), i(3).kronecker(&c) * &x);
        same(at("(C ⊗ I) x", &[3]), c.kronecker(&i(3)) * &x);
        same(at("(I ⊗ A)(I ⊗ B) y", &[2, 2]), i(2).kronecker(&(&a * &b)) * &y);
        same(at("C + I", &[2]), &c + i(2));
        same(at("I (C)", &[2]), c.clone());
        same(at("I_2 (C)", &[]), c.clone());
        same(at("C I_2", &[]), c.clone());
        // A recorded size that does not fit is an error, never a silent guess.
        assert!(at("(I ⊗ C) x", &[2]).is_err());
        // A bare I with no recorded size is an error.
        assert!(reference::evaluate(&s.env, &written("(I ⊗ C) x", &[3], VecOrder::Row), &v).is_ok());
        let unrecorded = Written { identities: Default::default(), ..written("(I ⊗ C) x", &[3], VecOrder::Row) };
        assert!(reference::evaluate(&s.env, &unrecorded, &v).is_err());
    }

    #[test]
    fn products_powers_inverses_and_the_matrix_functions() {
        let s = declared("A, B: 3 x 3; S: 3 x 3 symmetric; x: 3; W: 2 x 3");
        let a = Mat::from_fn(3, 3, |i, j| if i == j { 3.0 } else { 0.3 * (i as f64 - j as f64) + 0.1 });
        let b = Mat::from_fn(3, 3, |i, j| (i * j) as f64 * 0.2 + if i == j { 2.0 } else { 0.0 });
        let x = m(3, 1, &[1.0, -2.0, 0.5]);
        let w = Mat::from_fn(2, 3, |i, j| (i + j) as f64);
        let v =
            values(&[("A", a.clone()), ("B", b.clone()), ("S", b.clone()), ("x", x.clone()), ("W", w.clone())], &[]);
        let inv = |m: &Mat| m.clone().try_inverse().unwrap();
        same(eval(&s, "A B", &v), &a * &b);
        same(eval(&s, "A * B", &v), &a * &b);
        same(eval(&s, "A (B)ᵀ", &v), &a * b.transpose());
        same(eval(&s, "A'(x)", &v), a.transpose() * &x);
        same(eval(&s, "S^-1 (x)", &v), inv(&b) * &x);
        same(eval(&s, "(x)' S⁻¹ (x)", &v), x.transpose() * inv(&b) * &x);
        same(eval(&s, "A^3", &v), &a * &a * &a);
        same(eval(&s, "A^-2", &v), inv(&(&a * &a)));
        same(eval(&s, "A²", &v), &a * &a);
        same(eval(&s, "inv(A)", &v), inv(&a));
        same(eval(&s, "A^T", &v), a.transpose());
        same(eval(&s, "-A", &v), -&a);
        same(eval(&s, "A ⊗ W", &v), a.kronecker(&w));
        same(eval(&s, "kron(W, A)", &v), w.kronecker(&a));
        same(eval(&s, "tr(A)", &v), m(1, 1, &[a.trace()]));
        same(eval(&s, "det(A)", &v), m(1, 1, &[a.determinant()]));
        same(eval(&s, "logdet(A)", &v), m(1, 1, &[a.determinant().ln()]));
        same(eval(&s, "diag(x)", &v), Mat::from_diagonal(&x.column(0).into_owned()));
        same(eval(&s, "diag(A)", &v), Mat::from_fn(3, 1, |i, _| a[(i, i)]));
        same(eval(&s, "sum(W)", &v), m(1, 1, &[w.sum()]));
        same(eval(&s, "norm(W)", &v), m(1, 1, &[w.norm()]));
        same(eval(&s, "‖W‖²", &v), m(1, 1, &[w.norm_squared()]));
        same(eval(&s, "||x||^2", &v), m(1, 1, &[x.norm_squared()]));
        same(eval(&s, "W .^ 2", &v), w.map(|e| e * e));
        same(eval(&s, "A .^ (1/2)", &values(&[("A", a.abs())], &[])), a.abs().map(f64::sqrt));
        same(eval(&s, "0.5 x", &v), &x * 0.5);
        same(eval(&s, "3/4", &v), m(1, 1, &[0.75]));
        same(eval(&s, "x^T A x", &v), x.transpose() * &a * &x);
        assert!(eval(&s, "W^2", &v).is_err(), "a power of a non-square matrix");
        assert!(eval(&s, "tr(W)", &v).is_err());
        assert!(eval(&s, "A / x", &v).is_err(), "/ divides by a scalar only");
    }

    #[test]
    fn vec_and_unvec_in_both_orders() {
        let s = declared("A: 2 x 3; v: 6");
        let a = Mat::from_fn(2, 3, |i, j| (10 * i + j) as f64);
        let v6 = Mat::from_fn(6, 1, |i, _| i as f64);
        let v = values(&[("A", a.clone()), ("v", v6)], &[]);
        let at = |text: &str, order| reference::evaluate(&s.env, &written(text, &[], order), &v);
        same(at("vec(A)", VecOrder::Row), m(6, 1, &[0.0, 1.0, 2.0, 10.0, 11.0, 12.0]));
        same(at("vec(A)", VecOrder::Col), m(6, 1, &[0.0, 10.0, 1.0, 11.0, 2.0, 12.0]));
        same(at("unvec(v, 2, 3)", VecOrder::Row), m(2, 3, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
        same(at("vec^-1(v, 2, 3)", VecOrder::Col), m(2, 3, &[0.0, 2.0, 4.0, 1.0, 3.0, 5.0]));
        for order in [VecOrder::Row, VecOrder::Col] {
            same(at("unvec(vec(A), 2, 3)", order), a.clone());
            same(at("vec(unvec(v, 3, 2))", order), v.mats["v"].clone());
        }
        assert!(at("unvec(v, 4, 2)", VecOrder::Row).is_err());
    }

    type Scalar = fn(f64) -> f64;

    #[test]
    fn every_built_in_function_and_its_derivatives() {
        let s = declared("x: 5; f, g: R -> R");
        let x = m(5, 1, &[-1.3, -0.4, 0.2, 0.7, 1.9]);
        let pos = x.map(f64::abs);
        let v = values(&[("x", x.clone())], &[]);
        let vp = values(&[("x", pos.clone())], &[]);
        let sig = |t: f64| 1.0 / (1.0 + (-t).exp());
        let sign = |t: f64| {
            if t > 0.0 {
                1.0
            } else if t < 0.0 {
                -1.0
            } else {
                0.0
            }
        };
        let cases: [(&str, Scalar); 8] = [
            ("exp", f64::exp),
            ("sin", f64::sin),
            ("cos", f64::cos),
            ("tanh", f64::tanh),
            ("softplus", |t| (1.0 + t.exp()).ln()),
            ("relu", |t| t.max(0.0)),
            ("abs", f64::abs),
            ("step", |t| if t > 0.0 { 1.0 } else { 0.0 }),
        ];
        for (name, f) in &cases {
            same(eval(&s, &format!("{name}(x)"), &v), x.map(f));
        }
        same(eval(&s, "sigmoid(x)", &v), x.map(sig));
        same(eval(&s, "σ(x)", &v), x.map(sig));
        same(eval(&s, "sign(x)", &v), x.map(sign));
        same(eval(&s, "log(x)", &vp), pos.map(f64::ln));
        same(eval(&s, "sqrt(x)", &vp), pos.map(f64::sqrt));
        // Closed forms of the first derivatives.
        same(eval(&s, "exp'(x)", &v), x.map(f64::exp));
        same(eval(&s, "sin'(x)", &v), x.map(f64::cos));
        same(eval(&s, "cos'(x)", &v), x.map(|t| -t.sin()));
        same(eval(&s, "tanh'(x)", &v), x.map(|t| 1.0 - t.tanh().powi(2)));
        same(eval(&s, "σ'(x)", &v), x.map(|t| sig(t) * (1.0 - sig(t))));
        same(eval(&s, "softplus'(x)", &v), x.map(sig));
        same(eval(&s, "relu'(x)", &v), x.map(|t| if t > 0.0 { 1.0 } else { 0.0 }));
        same(eval(&s, "abs'(x)", &v), x.map(sign));
        same(eval(&s, "log'(x)", &vp), pos.map(|t| 1.0 / t));
        same(eval(&s, "sqrt'(x)", &vp), pos.map(|t| 0.5 / t.sqrt()));
        same(eval(&s, "step'(x)", &v), Mat::zeros(5, 1));
        // Higher derivatives agree with differences of the one below.
        for name in ["exp", "sin", "cos", "tanh", "σ", "sigmoid", "softplus", "log", "sqrt"] {
            let vals = if matches!(name, "log" | "sqrt") { &vp } else { &v };
            let x0 = &vals.mats["x"];
            for k in 1..=4 {
                let below = format!("{name}{}(x)", "'".repeat(k - 1));
                let h = 1e-4;
                let at = |t: f64| eval(&s, &below, &values(&[("x", x0.add_scalar(t))], &[])).unwrap();
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                let exact = eval(&s, &format!("{name}{}(x)", "'".repeat(k)), vals).unwrap();
                assert!((&exact - &numeric).norm() < 1e-5 * (1.0 + exact.norm()), "{name} derivative {k}");
            }
        }
        // Declared functions mean what the test harness says.
        for k in 0..3 {
            let text = format!("f{}(x)", "'".repeat(k));
            same(eval(&s, &text, &v), x.map(|t| user_function("f", k as u32, t)));
        }
        same(eval(&s, "g(f(x))", &v), x.map(|t| user_function("g", 0, user_function("f", 0, t))));
        assert!(eval(&s, "h(x)", &v).is_err(), "an undeclared function");
        assert!(eval(&s, "log(x)", &v).is_err(), "log of a negative entry is not finite");
    }

    #[test]
    fn definitions_are_evaluated_from_their_text_unless_overridden() {
        let s = declared("x: 2; A: 2 x 2; f: R -> R; z = A x; n = f(z); L = n^T n");
        let a = m(2, 2, &[1.0, 2.0, 3.0, 4.0]);
        let x = m(2, 1, &[0.5, -1.0]);
        let z = &a * &x;
        let n = z.map(|t| user_function("f", 0, t));
        let mut v = values(&[("A", a), ("x", x)], &[]);
        same(eval(&s, "z", &v), z.clone());
        same(eval(&s, "L", &v), n.transpose() * &n);
        // A value for a defined name replaces its definition.
        v.mats.insert("n".into(), m(2, 1, &[3.0, 4.0]));
        same(eval(&s, "L", &v), m(1, 1, &[25.0]));
        same(eval(&s, "z", &v), z);
    }

    #[test]
    fn size_limits_refuse_before_allocating() {
        let s = declared("A: 300 x 300; B: 3 x 3; X: 3 x 3");
        let v = values(
            &[("A", Mat::identity(300, 300)), ("B", Mat::identity(3, 3) * 2.0), ("X", Mat::identity(3, 3) * 1.5)],
            &[],
        );
        let e = eval(&s, "tr(A ⊗ A)", &v).unwrap_err();
        assert!(e.0.contains("too large"), "{}", e.0);
        let tower = ["B"; 10].join(" ⊗ ");
        assert!(eval(&s, &format!("tr({tower})"), &v).unwrap_err().0.contains("too large"));
        assert!(eval(&s, "ones(100000, 100000)", &v).unwrap_err().0.contains("too large"));
        assert!(eval(&s, "tr(I_100000)", &v).unwrap_err().0.contains("too large"));
        // Repeated squaring: a million-fold power is a few products, and here overflows.
        assert!(eval(&s, "(X^1000)^1000", &v).is_err());
        same(eval(&s, "((X/2)^1000)^1000", &v), Mat::zeros(3, 3));
    }
}

// ---- --check is a second opinion: planted answers, resource limits ------------------------

/// `--check` takes its differences from the script as written, so an answer
/// that the typed form agrees with but the script does not is rejected.
#[test]
fn planted_answer_wrong_in_shape_logic_is_rejected() {
    let src = "s: scalar; L = sum(ones(3, 2) ∘ s); ∂L/∂s";
    for conv in ALL {
        let (s, mut a) = first_answer(src, conv);
        a.expr = ir::num(rat(1));
        assert!(rejected(&s, &a), "∂L/∂s = 1 accepted for sum(ones(3, 2) ∘ s)");
        a.expr = ir::num(rat(6));
        assert!(!rejected(&s, &a), "∂L/∂s = 6 rejected for sum(ones(3, 2) ∘ s)");
    }
}

#[test]
fn planted_transposed_jacobian_of_a_definition_is_rejected() {
    for conv in ALL {
        let (s, mut a) = first_answer("A: n x n; x: n; z = A x + x; ∂z/∂x^T", conv);
        assert!(!rejected(&s, &a), "right Jacobian rejected: {}", s.render(&a));
        a.expr = ir::transpose(a.expr.clone());
        assert!(rejected(&s, &a), "transposed Jacobian accepted");
    }
}

/// A large variable is compared along random directions instead of entry by entry.
#[test]
fn gradients_over_large_variables_are_checked_along_directions() {
    for conv in ALL {
        let (s, mut a) = first_answer("A, X: 9 x 9; grad(tr(A X X), X)", conv);
        assert!(!rejected(&s, &a), "right gradient rejected: {}", s.render(&a));
        a.expr = ir::transpose(a.expr.clone());
        assert!(rejected(&s, &a), "transposed gradient accepted");
        let (s, mut a) = first_answer("A, X: 9 x 9; ∂(A X)/∂vec(X)^T", conv);
        assert!(!rejected(&s, &a), "right Jacobian rejected: {}", s.render(&a));
        a.expr = ir::transpose(a.expr.clone());
        assert!(rejected(&s, &a), "transposed Jacobian accepted");
    }
}

/// The terms of a sum, or the expression itself.
fn terms(e: &ir::Expr) -> Vec<ir::Expr> {
    match &e.op {
        ir::Op::Add(ts) => ts.clone(),
        _ => vec![e.clone()],
    }
}

#[test]
fn planted_hessians_with_a_dropped_term_are_rejected() {
    let scripts = [
        "x: n; A: n x n; hessian(x^T A x, x)",
        "x: n; A: n x n; hessian(x^T A x + sum(exp(x)), x)",
        "X: n x m; b: m; hessian(sum(exp(X b)), b, X)",
        "X: n x m; C: n x n; hessian(tr(X^T C X) + sum(exp(X)), X)",
    ];
    for src in scripts {
        for conv in ALL {
            let (s, mut a) = first_answer(src, conv);
            assert!(!rejected(&s, &a), "right Hessian rejected: {}", s.render(&a));
            let ts = terms(&a.expr);
            assert!(ts.len() > 1, "{src}: expected a sum, got {}", s.render(&a));
            for dropped in 0..ts.len() {
                let mut rest = ts.clone();
                rest.remove(dropped);
                a.expr = ir::sum_of(rest);
                assert!(rejected(&s, &a), "Hessian without a term accepted: {}", s.render(&a));
            }
        }
    }
}

#[test]
fn planted_transposed_mixed_hessian_is_rejected() {
    for conv in ALL {
        let (s, mut a) = first_answer("x: n; A: n x n; y: n; hessian(x^T A y, x, A)", conv);
        assert!(!rejected(&s, &a), "right Hessian rejected: {}", s.render(&a));
        let (s2, mut sq) = first_answer("x: n; A: n x n; hessian(x^T A x, x, x)", conv);
        assert!(!rejected(&s2, &sq), "right Hessian rejected: {}", s2.render(&sq));
        sq.expr = ir::sum_of(vec![sq.expr.clone(), ir::var("A", Shape::new(Dim::sym("n"), Dim::sym("n")), false)]);
        assert!(rejected(&s2, &sq), "Hessian with an extra term accepted");
        a.expr = ir::transpose(a.expr.clone());
        assert!(rejected(&s, &a), "transposed mixed Hessian accepted");
    }
}

/// Evaluation refuses what it cannot hold: an error, never an abort or a panic.
#[test]
fn checks_refuse_values_too_large_to_evaluate() {
    let (s, a) = first_answer("A: 300 x 300; grad(tr(A ⊗ A), A)", Conventions::default());
    let e = s.check(&a).expect_err("a 90000×90000 Kronecker product is refused");
    assert!(e.0.contains("too large"), "{}", e.0);

    let tower = ["A"; 10].join(" ⊗ ");
    let (s, a) = first_answer(&format!("A: 3 x 3; grad(tr({tower}), A)"), Conventions::default());
    let e = s.check(&a).expect_err("a deep Kronecker tower is refused");
    assert!(e.0.contains("too large"), "{}", e.0);

    // The typed form refuses as well, and a million-fold power is a few products.
    let mut s = session(Conventions::default());
    s.run("X: 3 x 3; A: 300 x 300; P = (X^1000)^1000; T = A ⊗ A").unwrap();
    let mut values = matdiff::eval::Values::default();
    values.mats.insert("X".into(), matdiff::eval::Mat::identity(3, 3) * 1.5);
    values.mats.insert("A".into(), matdiff::eval::Mat::identity(300, 300));
    let p = s.env.definition("P").unwrap().clone();
    assert!(matdiff::eval::Evaluator::new(&s.env, &values).eval(&p).is_err());
    let t = s.env.definition("T").unwrap().clone();
    let e = matdiff::eval::Evaluator::new(&s.env, &values).eval(&t).unwrap_err();
    assert!(e.0.contains("too large"), "{}", e.0);
    values.mats.insert("X".into(), matdiff::eval::Mat::identity(3, 3) * 0.5);
    let zero = matdiff::eval::Evaluator::new(&s.env, &values).eval(&p).unwrap();
    assert_eq!(zero, matdiff::eval::Mat::zeros(3, 3));
}
