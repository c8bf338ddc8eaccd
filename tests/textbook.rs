//! The golden table: results as the Matrix Cookbook, Bishop, Goodfellow et
//! al. and the seed network's lecture write them.
//!
//! Each row is a small script, the form a textbook prints, and whether
//! matdiff prints that form yet. The printed answers (text and LaTeX) are
//! pinned in one snapshot; a row marked as reached must print the textbook
//! form exactly, a row not yet reached must not (so that the mark is
//! flipped when it is), and every answer must agree with central finite
//! differences of the script as written ([`Session::check`], which
//! evaluates the parsed script on arrays, apart from the simplifier).

use matdiff::eval::check::TOLERANCE;
use matdiff::Session;

/// Where the result comes from, the script (its last line the query), the
/// form a textbook writes, and whether matdiff prints that form.
struct Row {
    source: &'static str,
    script: &'static str,
    textbook: &'static str,
    reached: bool,
}

const COOKBOOK: &str = "X, A, B: n x n; a, b, x: n; S: n x n symmetric\n";

const ROWS: &[Row] = &[
    // ---- The Matrix Cookbook (equation numbers of the 2012 edition) ----
    Row { source: "Cookbook (70)", script: "grad(aᵀ X b, X)", textbook: "a bᵀ", reached: true },
    Row { source: "Cookbook (71)", script: "grad(aᵀ Xᵀ b, X)", textbook: "b aᵀ", reached: true },
    Row { source: "Cookbook (100)", script: "grad(tr(A X), X)", textbook: "Aᵀ", reached: true },
    Row { source: "Cookbook (103)", script: "grad(tr(Xᵀ X), X)", textbook: "2 X", reached: true },
    Row { source: "Cookbook (117)", script: "grad(tr(Xᵀ A X), X)", textbook: "(A + Aᵀ) X", reached: true },
    Row { source: "Cookbook (106)", script: "grad(tr(X²), X)", textbook: "2 Xᵀ", reached: true },
    Row { source: "Cookbook (49)", script: "grad(det(X), X)", textbook: "det(X) Xᵀ⁻¹", reached: true },
    Row { source: "Cookbook (57)", script: "grad(logdet(X), X)", textbook: "Xᵀ⁻¹", reached: true },
    Row {
        source: "Cookbook (61)", script: "grad(aᵀ X⁻¹ b, X)", textbook: "-Xᵀ⁻¹ a bᵀ Xᵀ⁻¹", reached: true
    },
    Row {
        source: "Cookbook (124)", script: "grad(tr(X⁻¹ A), X)", textbook: "-Xᵀ⁻¹ Aᵀ Xᵀ⁻¹", reached: true
    },
    Row { source: "Cookbook (81)", script: "grad(xᵀ A x, x)", textbook: "(A + Aᵀ) x", reached: true },
    Row { source: "Cookbook (85)", script: "grad(xᵀ S x, x)", textbook: "2 S x", reached: true },
    Row { source: "Cookbook (84)", script: "grad(‖x - a‖², x)", textbook: "2(x - a)", reached: true },
    Row { source: "Cookbook (103), Frobenius", script: "grad(‖X‖², X)", textbook: "2 X", reached: true },
    Row {
        source: "Cookbook (88)",
        script: "grad((A x + b)ᵀ S (A x + b), x)",
        textbook: "2 Aᵀ S (A x + b)",
        reached: true,
    },
    Row { source: "Cookbook (116)", script: "grad(tr(X A Xᵀ B), X)", textbook: "Bᵀ X Aᵀ + B X A", reached: true },
    Row { source: "Cookbook, Hessian of (81)", script: "hessian(xᵀ A x, x)", textbook: "A + Aᵀ", reached: true },
    Row {
        source: "Cookbook (51), log det XᵀX",
        script: "Y: 5 x 3\ngrad(logdet(Yᵀ Y), Y)",
        textbook: "2 Y (Yᵀ Y)⁻¹",
        reached: true,
    },
    // ---- Regression and classification (Bishop ch. 3-4, Goodfellow ch. 5-6) ----
    Row {
        source: "least squares, Bishop (3.13)",
        script: "X: m x n; w: n; y: m\nL = ‖X w - y‖²\n∂L/∂w",
        textbook: "2 Xᵀ (X w - y)",
        reached: true,
    },
    Row {
        source: "least squares Hessian",
        script: "X: m x n; w: n; y: m\nL = ‖X w - y‖²\nhessian(L, w)",
        textbook: "2 Xᵀ X",
        reached: true,
    },
    Row {
        source: "ridge regression, Bishop (3.27)",
        script: "X: m x n; w: n; y: m; λ: scalar\nL = ‖X w - y‖² + λ wᵀ w\n∂L/∂w",
        textbook: "2(Xᵀ (X w - y) + λ w)",
        reached: true,
    },
    Row {
        source: "linear layer, MSE",
        script: "X: N x d; W: d x k; Y: N x k\nL = ‖X W - Y‖²\n∂L/∂W",
        textbook: "2 Xᵀ (X W - Y)",
        reached: true,
    },
    Row {
        source: "logistic regression, Bishop (4.91)",
        script: "X: m x n; w: n; y: m\np = σ(X w)\nL = -yᵀ log(p) - (1 - y)ᵀ log(1 - p)\n∂L/∂w",
        textbook: "Xᵀ (p - y)",
        reached: true,
    },
    Row {
        source: "logistic regression Hessian, Bishop (4.97)",
        script: "X: m x n; w: n; y: m\np = σ(X w)\nL = -yᵀ log(p) - (1 - y)ᵀ log(1 - p)\nhessian(L, w)",
        textbook: "Xᵀ diag(p ∘ (1 - p)) X",
        reached: true,
    },
    Row {
        source: "σ' = σ(1 - σ), Bishop (4.88)",
        script: "X: m x n; w: n\np = σ(X w)\n∂p/∂wᵀ",
        textbook: "Xᵀ diag(p ∘ (1 - p))",
        reached: true,
    },
    Row {
        source: "σ' through the name",
        script: "X: m x n; w: n\np = σ(X w)\nL = sum(p)\n∂L/∂w",
        textbook: "Xᵀ (p ∘ (1 - p))",
        reached: true,
    },
    Row {
        source: "tanh' = 1 - tanh², Goodfellow (6.5)",
        script: "X: m x n; w: n\nh = tanh(X w)\nL = sum(h)\n∂L/∂w",
        textbook: "Xᵀ (1 - h .^ 2)",
        reached: true,
    },
    Row {
        source: "softplus' = σ, Goodfellow (3.31)",
        script: "X: m x n; w: n\nL = sum(softplus(X w))\n∂L/∂w",
        textbook: "Xᵀ σ(X w)",
        reached: true,
    },
    Row {
        source: "softmax cross-entropy, Goodfellow (6.30)",
        script: "z, t: k\nL = -tᵀ log_softmax(z)\n∂L/∂z",
        // Exact only for targets summing to 1, which the script cannot say.
        textbook: "softmax(z) - t",
        reached: false,
    },
    Row {
        source: "softmax cross-entropy through p",
        script: "z, t: k\np = softmax(z)\nL = -tᵀ log(p)\n∂L/∂z",
        textbook: "p - t",
        reached: false,
    },
    Row {
        source: "Rayleigh quotient",
        script: "A: n x n symmetric; x: n\nr = xᵀ A x / (xᵀ x)\n∂r/∂x",
        textbook: "(2 / (xᵀ x)) (A x - r x)",
        reached: true,
    },
    Row {
        source: "Gaussian NLL in μ, Bishop (2.121)",
        script: "x, μ: n; Σ: n x n symmetric\nN = (x - μ)ᵀ Σ⁻¹ (x - μ) / 2 + logdet(Σ) / 2\n∂N/∂μ",
        textbook: "-Σ⁻¹ (x - μ)",
        reached: true,
    },
    Row {
        source: "Gaussian NLL in Σ, Bishop (2.122)",
        script: "x, μ: n; Σ: n x n symmetric\nN = (x - μ)ᵀ Σ⁻¹ (x - μ) / 2 + logdet(Σ) / 2\n∂N/∂Σ",
        textbook: "(Σ⁻¹ - Σ⁻¹ (x - μ) (x - μ)ᵀ Σ⁻¹) / 2",
        reached: true,
    },
    // ---- The seed network (the lecture's worked example) ----
    Row {
        source: "seed ∂L/∂n2ᵀ",
        script: include_str!("../examples/backprop.mdiff"),
        textbook: "2(n2 - y)ᵀ",
        reached: true,
    },
    Row {
        source: "seed ∂L/∂W2",
        script: "n0: 1 x 2; W1: 2 x 3; b1: 1 x 3; W2: 3 x 2; b2: 1 x 2; y: 1 x 2; f1, f2: R -> R
                 d1 = n0 W1 + b1; n1 = f1(d1); d2 = n1 W2 + b2; n2 = f2(d2); L = (n2 - y)(n2 - y)ᵀ
                 ∂L/∂W2",
        textbook: "2 n1ᵀ ((n2 - y) ∘ f2'(d2))",
        reached: true,
    },
    Row {
        source: "seed ∂L/∂W1",
        script: "n0: 1 x 2; W1: 2 x 3; b1: 1 x 3; W2: 3 x 2; b2: 1 x 2; y: 1 x 2; f1, f2: R -> R
                 d1 = n0 W1 + b1; n1 = f1(d1); d2 = n1 W2 + b2; n2 = f2(d2); L = (n2 - y)(n2 - y)ᵀ
                 ∂L/∂W1",
        textbook: "2 n0ᵀ (((n2 - y) ∘ f2'(d2)) W2ᵀ ∘ f1'(d1))",
        reached: true,
    },
];

/// The answer to a row's query: the one named by its last line.
fn answer(row: &Row) -> (Session, matdiff::session::Answer) {
    let script = if row.script.contains('\n') || row.script.contains(';') {
        row.script.to_string()
    } else {
        format!("{COOKBOOK}{}", row.script)
    };
    let mut session = Session::default();
    let answers = session.answers(&script).unwrap_or_else(|e| panic!("{}: {e}", row.source));
    let a = match row.source {
        // The seed script asks several queries; its second answer is ∂L/∂n2ᵀ.
        "seed ∂L/∂n2ᵀ" => answers.into_iter().nth(1).expect("the seed's second answer"),
        _ => answers.into_iter().last().expect("an answer"),
    };
    (session, a)
}

#[test]
fn the_golden_table() {
    assert!(ROWS.len() >= 30, "the table has {} rows", ROWS.len());
    let mut table = String::new();
    let mut wrong = Vec::new();
    for row in ROWS {
        let (session, a) = answer(row);
        let printed = a.text();
        // A few seeds: `log det X` is real only where `det X > 0`.
        let err = (0..8u64)
            .find_map(|seed| matdiff::eval::check::check(&session.env, &a, a.conventions, 0x5eed + seed).ok())
            .unwrap_or_else(|| panic!("{}: no values where it evaluates", row.source))
            .expect("a derivative");
        assert!(err < TOLERANCE, "{}: {printed} is off by {err}", row.source);
        if (printed == row.textbook) != row.reached {
            wrong.push(format!("{}: prints {printed}, the textbook writes {}", row.source, row.textbook));
        }
        let mark = if row.reached { "textbook".to_string() } else { format!("not yet; textbook: {}", row.textbook) };
        table.push_str(&format!("{}\n  {}\n  {}\n  [{mark}]\n", row.source, printed, a.latex()));
    }
    assert!(wrong.is_empty(), "rows marked wrongly:\n{}", wrong.join("\n"));
    insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("textbook_golden_table", table);
    });
}
