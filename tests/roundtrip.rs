//! Printing is faithful: the printed text of any expression parses back to an
//! equal expression (same value at random points), and printing that again
//! gives the same text, in Unicode and in ASCII.

use matdiff::eval::{check::random_values, Evaluator};
use matdiff::print::{render, Notation};
use matdiff::session::Session;
use proptest::prelude::*;
use rand::{rngs::StdRng, SeedableRng};

const PRELUDE: &str = "A, B: n x n; S: n x n symmetric; x, y: n; r: 1 x n; W: n x m; V: m x n; s: scalar; f: R -> R";

fn square() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("A".to_string()),
        Just("B".to_string()),
        Just("S".to_string()),
        Just("I_n".to_string()),
        Just("x y'".to_string()),
        Just("W V".to_string()),
        Just("0.5 A".to_string()),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} - {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) ({b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} ∘ {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} ./ (exp({b}) + 1))")),
            inner.clone().prop_map(|a| format!("({a})ᵀ")),
            inner.clone().prop_map(|a| format!("inv({a} + 4 I_n)")),
            inner.clone().prop_map(|a| format!("({a})^2")),
            inner.clone().prop_map(|a| format!("({a}) .^ 3")),
            inner.clone().prop_map(|a| format!("f({a})")),
            inner.clone().prop_map(|a| format!("tanh({a})")),
            inner.clone().prop_map(|a| format!("σ({a})")),
            inner.clone().prop_map(|a| format!("diag(diag({a}))")),
            inner.clone().prop_map(|a| format!("-({a})")),
            inner.clone().prop_map(|a| format!("s ({a})")),
            inner.clone().prop_map(|a| format!("tr({a}) ({a})")),
            inner.clone().prop_map(|a| format!("(x' ({a}) y) I_n")),
            inner.prop_map(|a| format!("2({a})/3")),
        ]
    })
}

fn wrap(m: String, pick: u8) -> String {
    match pick % 7 {
        0 => m,
        1 => format!("({m}) x"),
        2 => format!("r ({m})"),
        3 => format!("x' ({m}) x"),
        4 => format!("kron({m}, W)"),
        5 => format!("vec({m})"),
        _ => format!("‖{m}‖² + logdet(({m})ᵀ ({m}) + I)"),
    }
}

fn has_zero_matrix(e: &matdiff::ir::Expr) -> bool {
    matches!(e.op, matdiff::ir::Op::Zero) || e.op.children().iter().any(|c| has_zero_matrix(c))
}

/// The typed expression of `src` after the prelude.
fn typed(src: &str) -> Result<(Session, matdiff::ir::Expr), matdiff::Error> {
    let mut s = Session::default();
    s.run(PRELUDE).unwrap();
    let e = s.env.check(&matdiff::syntax::parse_expr(src)?, s.options.conventions.order)?;
    Ok((s, e))
}

/// The identity prints as `I`, as textbooks write it; where nothing around
/// it fixes its size (`f(I)`), the printed text cannot say it. That is the
/// one accepted failure to parse back.
fn typed_again(printed: &str) -> Option<matdiff::ir::Expr> {
    match typed(printed) {
        Ok((_, e)) => Some(e),
        Err(e) if e.to_string().contains("cannot infer the size") => None,
        Err(e) => panic!("{printed} does not parse back: {e}"),
    }
}

fn round_trip(src: &str, notation: Notation) {
    let (s, e1) = typed(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    let p1 = render(&e1, notation);
    let Some(e2) = typed_again(&p1) else { return };
    if e2.shape != e1.shape {
        // A zero matrix prints as `0`, which on its own reads as the number.
        assert!(has_zero_matrix(&e1), "{src} printed as {p1} changes shape");
        return;
    }
    // Constructors normalize as they build, so the first re-parse may
    // regroup scalar factors; from then on the text must not change.
    let mut printed = vec![p1.clone(), render(&e2, notation)];
    for _ in 0..3 {
        let Some(e) = typed_again(printed.last().unwrap()) else { return };
        let p = render(&e, notation);
        let settled = &p == printed.last().unwrap();
        printed.push(p);
        if settled {
            break;
        }
    }
    let n = printed.len();
    assert_eq!(printed[n - 1], printed[n - 2], "printing does not settle: {src} → {}", printed.join(" → "));
    let values = random_values(&s.env, &mut StdRng::seed_from_u64(1), false);
    let v1 = Evaluator::new(&s.env, &values).eval(&e1);
    let v2 = Evaluator::new(&s.env, &values).eval(&e2);
    if let (Ok(v1), Ok(v2)) = (v1, v2) {
        let err = (&v1 - &v2).norm() / v1.norm().max(1.0);
        assert!(err < 1e-9, "{src} printed as {p1} changes value by {err}");
    }
}

proptest! {
    // Fixed seeds keep CI reproducible; vary them by hand to explore.
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x726f_756e_6474_7269),
        ..ProptestConfig::default()
    })]

    #[test]
    fn unicode_text_parses_back(m in square(), pick in any::<u8>()) {
        round_trip(&wrap(m, pick), Notation::Unicode);
    }

    #[test]
    fn ascii_text_parses_back(m in square(), pick in any::<u8>()) {
        round_trip(&wrap(m, pick), Notation::Ascii);
    }
}

#[test]
fn known_forms_round_trip() {
    for src in [
        "2(x - y)ᵀ",
        "x' (A + Aᵀ) x",
        "(A ⊗ W) vec(V)",
        "-A B + 1/2 A",
        "A ./ (1 + exp(B))",
        "σ(A x) ∘ (1 - σ(A x))",
        "‖A x - y‖²",
        "A⁻¹ᵀ",
        "(A B)⁻¹",
        "s^2 A",
        "f(x)' A",
        "diag(x) A diag(y)",
    ] {
        round_trip(src, Notation::Unicode);
        round_trip(src, Notation::Ascii);
    }
}
