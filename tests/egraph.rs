//! Equality saturation: each rule family rewrites `start` to `goal`, and
//! both sides evaluate to the same matrix at random values. The runner's
//! limits hold on large inputs.

use matdiff::eval::{check::random_values, Evaluator};
use matdiff::session::Session;
use rand::{rngs::StdRng, SeedableRng};
use std::time::{Duration, Instant};

const DECLS: &str = "A, B, C, D: n x n; E: n x m; F: m x m; x, y: n; r: 1 x n; s, t: scalar; S: n x n symmetric";

/// `simplify(start)` prints `goal`, and equals `start` numerically.
fn rewrites(start: &str, goal: &str) {
    let mut session = Session::default();
    let a = session.answers(&format!("{DECLS}\nsimplify({start})")).unwrap_or_else(|e| panic!("{start}: {e}"));
    let got = matdiff::print::text(&a[0].expr);
    assert_eq!(got, goal, "simplify({start})");
    let original = a[0].function.clone();
    for seed in 0..3 {
        let values = random_values(&session.env, &mut StdRng::seed_from_u64(seed), false);
        let before = Evaluator::new(&session.env, &values).eval(&original).expect("start evaluates");
        let after = a[0].value(&session.env, &values).expect("goal evaluates");
        let err = (&before - &after).norm() / before.norm().max(1.0);
        assert!(err < 1e-10, "simplify({start}) = {goal} is wrong by {err}");
    }
}

macro_rules! rule_tests {
    ($($name:ident: $start:expr => $goal:expr,)*) => {$(
        #[test]
        fn $name() {
            rewrites($start, $goal);
        }
    )*};
}

rule_tests! {
    transpose_involution: "((A B)ᵀ)ᵀ" => "A B",
    transpose_product: "(A B x)ᵀ y" => "xᵀ Bᵀ Aᵀ y",
    transpose_of_sum_with_transpose: "(A + Bᵀ)ᵀ" => "Aᵀ + B",
    transpose_scalar: "(xᵀ A x)ᵀ" => "xᵀ A x",
    transpose_symmetric: "Sᵀ x" => "S x",
    transpose_kron: "(A ⊗ E)ᵀ" => "Aᵀ ⊗ Eᵀ",
    transpose_inverse: "(A⁻¹)ᵀ" => "Aᵀ⁻¹",
    product_chain_with_identity: "A I B" => "A B",
    scalar_out_of_product: "A (2 B)" => "2 A B",
    scalar_product_order: "(xᵀ y) A x" => "(xᵀ y) A x",
    sum_of_equals: "A x + A x" => "2 A x",
    factor_right: "A x + B x" => "(A + B) x",
    factor_left: "xᵀ A + xᵀ B" => "xᵀ (A + B)",
    zero_sum: "A + 0 - A + B" => "B",
    diag_times_vector: "diag(x) y" => "x ∘ y",
    row_times_diag: "r diag(r)" => "r ∘ r",
    diag_times_diag: "diag(x) diag(y) x" => "y ∘ (x ∘ x)",
    diag_sum: "A (diag(x) + 2 diag(y)) B" => "A diag(x + 2 y) B",
    kron_mixed_product: "(A ⊗ F)(B ⊗ F)" => "A B ⊗ F²",
    kron_scalar: "(2 A) ⊗ F" => "2(A ⊗ F)",
    trace_transpose: "tr(Aᵀ)" => "tr(A)",
    trace_cyclic_sum: "tr(A B) + tr(B A)" => "2 tr(A B)",
    trace_outer_product: "tr(x yᵀ)" => "yᵀ x",
    trace_scale: "tr(3 A)" => "3 tr(A)",
    inverse_involution: "(A⁻¹)⁻¹" => "A",
    hadamard_scalars: "(2 x) ∘ (3 y)" => "6(x ∘ y)",
    constants_fold: "(2 + 3) A - A" => "4 A",
    power_merge: "A A⁻¹ A A" => "A²",
    // Elementwise algebra: expanded, cancelled where a factor is known
    // nonzero, collected, factored.
    hadamard_reciprocal_of_positive: "exp(x) ∘ (1 ./ exp(x))" => "ones(n, 1)",
    hadamard_cancel_after_expanding: "(x + y) ∘ exp(x) ./ exp(x)" => "x + y",
    hadamard_reciprocal_of_unknown_sign_stays: "x ∘ (1 ./ x)" => "x ∘ (1 ./ x)",
    hadamard_cancel_one_minus_sigmoid: "σ(x) ∘ (1 - σ(x)) ./ (1 - σ(x))" => "σ(x)",
    hadamard_factor: "x ∘ y + x ∘ A x" => "x ∘ (y + A x)",
    hadamard_expand_and_collect: "(x + y) ∘ (x - y) + y ∘ y" => "x .^ 2",
    scalar_fractions_combine: "(1 / (xᵀ x)) x + (2 / (xᵀ x)) y" => "(1 / (xᵀ x)) (x + 2 y)",
    scalar_fraction_of_unknown_sign_stays: "2 s x / (t s)" => "2 s x / (t s)",
    kron_times_vec: "(A ⊗ B) vec(C)" => "vec(A C Bᵀ)",
}

#[test]
fn gradients_never_get_costlier() {
    let mut s = Session::default();
    let a = s.answers(&format!("{}\ngrad(tr(A B C D), A)", DECLS)).unwrap();
    assert_eq!(s.render(&a[0]), "∂(tr(A B C D))/∂A = Dᵀ Cᵀ Bᵀ");
}

#[test]
fn a_200_term_sum_simplifies_quickly() {
    let terms: Vec<String> = (1..=200).map(|i| format!("{i} A x")).collect();
    let start = Instant::now();
    let mut s = Session::default();
    let a = s.answers(&format!("{DECLS}\nsimplify({})", terms.join(" + "))).unwrap();
    assert_eq!(matdiff::print::text(&a[0].expr), "20100 A x");
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
}

#[test]
fn a_50_factor_product_stays_within_limits() {
    let factors: Vec<&str> = ["A", "B"].iter().cycle().take(50).copied().collect();
    let start = Instant::now();
    let mut s = Session::default();
    let a = s.answers(&format!("{DECLS}\nsimplify({} x)", factors.join(" "))).unwrap();
    assert_eq!(a[0].expr.shape.to_string(), "n×1");
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
}

#[test]
fn limits_hold_and_report_why_saturation_stopped() {
    use matdiff::egraph::{simplify, Limits};
    let mut s = Session::default();
    let a = s.answers(&format!("{DECLS}\n{}", ["(A + B)"; 12].join(" "))).unwrap();
    let limits = Limits { nodes: 500, iterations: 5, time: Duration::from_millis(50) };
    let start = Instant::now();
    let out = simplify(&a[0].expr, matdiff::ir::VecOrder::Row, limits);
    assert!(start.elapsed() < Duration::from_millis(500));
    assert!(out.cost.0 <= out.cost.1);
    assert!(!out.stop.is_empty());
}

#[test]
fn extraction_is_deterministic() {
    let run = || {
        let mut s = Session::default();
        let a = s
            .answers(&format!("{DECLS}\nsimplify(tr(A B) + tr(B A) + xᵀ diag(x) diag(y) x + tr((A ⊗ F)(B ⊗ F)))"))
            .unwrap();
        matdiff::print::text(&a[0].expr)
    };
    let first = run();
    for _ in 0..5 {
        assert_eq!(run(), first);
    }
}

/// Random elementwise expressions over operands of every sign (`x`, `y`,
/// positive `exp(x)`, `σ(y)`, `1 - σ(x)`, a size, 1×1 `s` and `xᵀ y`):
/// `simplify` (which reads each as a polynomial, expands, cancels what is
/// known nonzero and factors) keeps the value, at random values.
#[test]
fn elementwise_algebra_keeps_the_value() {
    use rand::Rng;
    const ATOMS: &[&str] = &["x", "y", "exp(x)", "σ(y)", "(1 - σ(x))", "n", "s", "(xᵀ y)", "2", "A x"];
    fn gen(rng: &mut StdRng, depth: u32) -> String {
        if depth == 0 || rng.random_range(0..4) == 0 {
            return ATOMS[rng.random_range(0..ATOMS.len())].to_string();
        }
        const POSITIVE: &[&str] = &["exp(x)", "σ(y)", "(1 - σ(x))", "n", "(1 + exp(y))"];
        let (a, b) = (gen(rng, depth - 1), gen(rng, depth - 1));
        let p = POSITIVE[rng.random_range(0..POSITIVE.len())];
        match rng.random_range(0..5) {
            0 => format!("({a} + {b})"),
            1 => format!("({a} - {b})"),
            2 => format!("({a} ∘ {b})"),
            3 => format!("({a} ./ {p})"),
            _ => format!("({a} ∘ {p} ∘ (1 ./ {p}))"),
        }
    }
    let mut rng = StdRng::seed_from_u64(0xe1e);
    for _ in 0..150 {
        // A vector operand first, so that the whole is n×1.
        let e = format!("x ∘ {}", gen(&mut rng, 3));
        let mut session = Session::default();
        let a = session.answers(&format!("{DECLS}\nsimplify({e})")).unwrap_or_else(|err| panic!("{e}: {err}"));
        let original = a[0].function.clone();
        for seed in 0..2 {
            let values = random_values(&session.env, &mut StdRng::seed_from_u64(seed), false);
            let before = Evaluator::new(&session.env, &values).eval(&original).expect("evaluates");
            let after = a[0].value(&session.env, &values).expect("evaluates");
            let err = (&before - &after).norm() / before.norm().max(1.0);
            assert!(err < 1e-9, "simplify({e}) = {} is wrong by {err}", matdiff::print::text(&a[0].expr));
        }
    }
}
