//! Derivatives defined as values (`g = ∂f/∂x`): differentiated again, they
//! must agree with closed forms derived by hand here, evaluated with
//! nalgebra, and with `--check`, whose reference differentiates the
//! derivative's own finite differences.

use matdiff::eval::check::{random_values, TOLERANCE};
use matdiff::eval::Mat;
use matdiff::session::Session;
use rand::{rngs::StdRng, SeedableRng};

fn close(got: &Mat, want: &Mat) -> f64 {
    (got - want).amax() / want.amax().max(1e-12)
}

#[test]
fn the_gradient_of_a_gradients_norm_is_the_closed_form() {
    // f = ½ xᵀ A x with A symmetric: g = A x, P = ‖g‖², ∂P/∂x = 2 A² x.
    let mut s = Session::default();
    let a = s.answers("A: n x n symmetric; x: n; f = xᵀ A x / 2; g = ∂f/∂x; P = ‖g‖²; ∂P/∂x").unwrap().remove(0);
    let mut rng = StdRng::seed_from_u64(3);
    let mut values = random_values(&s.env, &mut rng, false);
    let am = values.mats["A"].clone();
    let am = (&am + am.transpose()) * 0.5;
    values.mats.insert("A".into(), am.clone());
    let x = values.mats["x"].clone();
    let got = a.value(&s.env, &values).unwrap();
    assert!(close(&got, &(&am * &am * &x * 2.0)) < 1e-12, "{}", a.text());
    let err = s.check(&a).unwrap().unwrap();
    assert!(err < TOLERANCE, "{}: {err}", a.text());
}

#[test]
fn one_maml_step_is_the_closed_form() {
    // φ = θ - α (2/N) X1ᵀ (X1 θ - y1); L2 = ‖X2 φ - y2‖² / N;
    // ∂L2/∂θ = (I - α (2/N) X1ᵀ X1) (2/N) X2ᵀ (X2 φ - y2),
    // ∂L2/∂α = -((2/N) X1ᵀ (X1 θ - y1))ᵀ (2/N) X2ᵀ (X2 φ - y2).
    let mut s = Session::default();
    let answers = s.answers(include_str!("../examples/maml.mdiff")).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let values = random_values(&s.env, &mut rng, false);
    let m = |n: &str| values.mats[n].clone();
    let (x1, x2, y1, y2, theta, alpha) = (m("X1"), m("X2"), m("y1"), m("y2"), m("θ"), m("α")[(0, 0)]);
    let n = x1.nrows() as f64;
    let g = x1.transpose() * (&x1 * &theta - &y1) * (2.0 / n);
    let phi = &theta - &g * alpha;
    let outer = x2.transpose() * (&x2 * &phi - &y2) * (2.0 / n);
    let d = theta.nrows();
    let want_theta = (Mat::identity(d, d) - x1.transpose() * &x1 * (alpha * 2.0 / n)) * &outer;
    let want_alpha = -(g.transpose() * &outer);
    for (a, want) in answers.iter().zip([want_theta, want_alpha]) {
        let got = a.value(&s.env, &values).unwrap();
        assert!(close(&got, &want) < 1e-10, "{}: {got} vs {want}", a.text());
        let err = s.check(a).unwrap().unwrap();
        assert!(err < TOLERANCE, "{}: {err}", a.text());
    }
}

#[test]
fn hessians_and_jacobians_as_values_check() {
    for src in [
        include_str!("../examples/newton_logistic.mdiff"),
        include_str!("../examples/gradient_penalty.mdiff"),
        "X: 3 x 2; w: 2; L = sum(exp(X w)); H = hessian(L, w); T = tr(H H); ∂T/∂w",
        "x: 3; A: 3 x 3; F = tanh(A x); J = ∂F/∂xᵀ; S = sum(J ∘ J); ∂S/∂A",
        "W: 2 x 3; u: 3; L = sum(σ(W u)); G = ∂L/∂W; Q = tr(G Gᵀ); ∂Q/∂u",
    ] {
        let mut s = Session::default();
        for a in s.answers(src).unwrap_or_else(|e| panic!("{e}\n{src}")) {
            let err = s.check(&a).unwrap().unwrap();
            assert!(err < TOLERANCE, "{}: relative error {err}\n{src}", a.text());
        }
    }
}

#[test]
fn a_derivative_definition_refuses_what_is_not_one_value() {
    let mut s = Session::default();
    s.run("A: 2 x 2; x: 2; L = xᵀ A x").unwrap();
    for (src, want) in [
        ("g = ∂L/∂(A, x)", "a definition holds one value"),
        ("g = shape(A)", "a definition holds one value"),
        ("g = ∂L/∂q", "not a declared or defined matrix"),
        ("L = ∂L/∂x", "already"),
    ] {
        let e = s.run(src).expect_err(src);
        assert!(e.to_string().contains(want), "{src}: {e}");
    }
    // A refused definition leaves nothing behind.
    assert!(!s.env.names.contains_key("g"));
    s.run("g = ∂L/∂x; h = simplify(g + g)").unwrap();
    assert_eq!(s.answers("shape(h)").unwrap()[0].function.shape.to_string(), "2×1");
}
