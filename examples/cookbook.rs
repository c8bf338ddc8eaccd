//! A dozen gradients from the Matrix Cookbook, each checked against finite
//! differences.
//!
//! ```sh
//! cargo run --example cookbook
//! ```

use matdiff::Session;

const DECLARATIONS: &str = "X: n x n; A: n x n; B: n x n; a: n; b: n; x: n; S: n x n symmetric";

const CASES: &[(&str, &str)] = &[
    ("(100) ∂ aᵀXb/∂X = abᵀ", "grad(a^T X b, X)"),
    ("(101) ∂ aᵀXᵀb/∂X = baᵀ", "grad(a^T X^T b, X)"),
    ("(103) ∂ tr(AX)/∂X = Aᵀ", "grad(tr(A X), X)"),
    ("(111) ∂ tr(XᵀX)/∂X = 2X", "grad(tr(X^T X), X)"),
    ("(117) ∂ tr(XᵀAX)/∂X = (A + Aᵀ)X", "grad(tr(X^T A X), X)"),
    ("(49)  ∂ det(X)/∂X = det(X) X⁻ᵀ", "grad(det(X), X)"),
    ("(57)  ∂ log det(X)/∂X = X⁻ᵀ", "grad(logdet(X), X)"),
    ("(61)  ∂ aᵀX⁻¹b/∂X = -X⁻ᵀabᵀX⁻ᵀ", "grad(a^T X^-1 b, X)"),
    ("(81)  ∂ xᵀAx/∂x = (A + Aᵀ)x", "grad(x^T A x, x)"),
    ("(85)  ∂ xᵀSx/∂x = 2Sx", "grad(x^T S x, x)"),
    ("(84)  ∂ ‖x - a‖²/∂x = 2(x - a)", "grad(‖x - a‖², x)"),
    ("(130) ∂ ‖X‖²/∂X = 2X", "grad(‖X‖², X)"),
    ("(88)  ∂ (Ax + b)ᵀS(Ax + b)/∂x", "grad((A x + b)^T S (A x + b), x)"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for (name, query) in CASES {
        let mut session = Session::default();
        let answer = session.answers(&format!("{DECLARATIONS}\n{query}"))?.remove(0);
        let err = session.check(&answer).map_err(|e| e.0)?.unwrap_or(0.0);
        println!("{name:<38} {}   [error {err:.0e}]", matdiff::print::text(&answer.expr));
    }
    Ok(())
}
