//! Hessians: each agrees with finite differences of its gradient, is
//! symmetric, and has the textbook form where one exists.

use matdiff::diff::chain::Conventions;
use matdiff::eval::check;
use matdiff::ir::VecOrder;
use matdiff::session::{Answer, Options, Session};
use rand::{rngs::StdRng, SeedableRng};

const DECLS: &str = "x: n; A: n x n; S: n x n symmetric; b: m; M: m x n; X: m x n; w: n; y: m; C: m x m; s: scalar\n";

fn hessian(query: &str, order: VecOrder) -> (Session, Answer) {
    let mut session =
        Session::new(Options { conventions: Conventions { order, ..Conventions::default() }, ..Options::default() });
    let answer = session
        .answers(&format!("{DECLS}{query}"))
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .pop()
        .expect("an answer");
    (session, answer)
}

fn assert_right(query: &str) {
    for order in [VecOrder::Row, VecOrder::Col] {
        let (s, a) = hessian(query, order);
        let err = s.check(&a).expect("evaluates").expect("a derivative");
        assert!(err < check::TOLERANCE, "{query}: {} (error {err})", s.render(&a));
        let values = check::random_values(&s.env, &mut StdRng::seed_from_u64(3), true);
        let h = a.value(&s.env, &values).expect("evaluates");
        assert_eq!(h.nrows(), h.ncols(), "{query}");
        let asym = (&h - h.transpose()).norm() / h.norm().max(1e-12);
        assert!(asym < 1e-9, "{query} is not symmetric: {}", s.render(&a));
    }
}

const CASES: &[&str] = &[
    "hessian(x^T A x, x)",
    "hessian(x^T S x, x)",
    "hessian(‖M x - b‖², x)",
    "hessian(‖M x - b‖² + s xᵀ x, x)",
    "p = σ(X w); L = -yᵀ log(p) - (1 - y)ᵀ log(1 - p); hessian(L, w)",
    "hessian(sum(log(1 + exp(-(y ∘ (X w))))), w)",
    "hessian(sum(softplus(X w)), w)",
    "hessian(logdet(A), A)",
    "hessian(tr(A^-1), A)",
    "hessian(tr(X^T C X), X)",
    "hessian(tr(A A), A)",
    "hessian(tr(A^T A), A)",
    "hessian(sum(exp(M x)), x)",
    "hessian(‖x‖⁴, x)",
    "hessian(sum(tanh(x) ∘ x), x)",
    "hessian(det(A), A)",
    "hessian(bᵀ M x + xᵀ A x, x)",
    "n0: 1 x 2; W1: 2 x 3; b1: 1 x 3; W2: 3 x 2; b2: 1 x 2; t: 1 x 2; d1 = n0 W1 + b1; n1 = tanh(d1); d2 = n1 W2 + b2; n2 = σ(d2); L = (n2 - t)(n2 - t)^T; hessian(L, W2)",
];

#[test]
fn hessians_agree_with_finite_differences_and_are_symmetric() {
    for q in CASES {
        assert_right(q);
    }
}

#[test]
fn hessians_in_textbook_form() {
    let text = |q: &str, order| {
        let (s, a) = hessian(q, order);
        s.render(&a)
    };
    assert_eq!(text("hessian(x^T A x, x)", VecOrder::Row), "∂²(x^T A x)/∂x∂xᵀ = A + Aᵀ");
    assert_eq!(text("hessian(x^T S x, x)", VecOrder::Row), "∂²(x^T S x)/∂x∂xᵀ = 2 S");
    assert_eq!(text("hessian(‖M x - b‖², x)", VecOrder::Row), "∂²(‖M x - b‖²)/∂x∂xᵀ = 2 Mᵀ M");
    assert_eq!(text("hessian(tr(X^T C X), X)", VecOrder::Col), "∂²(tr(X^T C X))/∂vec(X)∂vec(X)ᵀ = I ⊗ (C + Cᵀ)");
    assert_eq!(text("hessian(tr(X^T C X), X)", VecOrder::Row), "∂²(tr(X^T C X))/∂vec(X)∂vec(X)ᵀ = (C + Cᵀ) ⊗ I");
    assert_eq!(text("hessian(logdet(A), A)", VecOrder::Row), "∂²(logdet(A))/∂vec(A)∂vec(A)ᵀ = -(Aᵀ⁻¹ ⊗ A⁻¹) K_(n,n)");
}

#[test]
fn mixed_second_derivatives() {
    for (query, text) in [
        ("hessian(b^T M x, x, b)", "∂²(b^T M x)/∂x∂bᵀ = Mᵀ"),
        ("hessian(‖M x - b‖², x, b)", "∂²(‖M x - b‖²)/∂x∂bᵀ = -2 Mᵀ"),
        ("hessian(tr(X^T C X), X, C)", "∂²(tr(X^T C X))/∂vec(X)∂vec(C)ᵀ = (I ⊗ Xᵀ) (I + K_(m,m))"),
        ("hessian(sum(σ(M x) ∘ b), x, M)", ""),
    ] {
        for order in [VecOrder::Row, VecOrder::Col] {
            let (s, a) = hessian(query, order);
            let err = s.check(&a).expect("evaluates").expect("a derivative");
            assert!(err < check::TOLERANCE, "{query}: {} (error {err})", s.render(&a));
            if order == VecOrder::Row && !text.is_empty() {
                assert_eq!(s.render(&a), text);
            }
        }
    }
}

#[test]
fn second_differentials() {
    let cases = [
        "d²(x^T A x)",
        "d²(‖M x - b‖²)",
        "d²(tr(A^-1))",
        "d²(logdet(A))",
        "d²(det(A))",
        "f = sum(exp(M x)); d²(f)",
        "p = σ(X w); L = -yᵀ log(p) - (1 - y)ᵀ log(1 - p); d²(L)",
        "n0: 1 x 2; W1: 2 x 3; W2: 3 x 2; t: 1 x 2; d1 = n0 W1; n1 = tanh(d1); d2 = n1 W2; L2 = (d2 - t)(d2 - t)^T; d²(L2)",
    ];
    for q in cases {
        let (s, a) = hessian(q, VecOrder::Row);
        let err = s.check(&a).expect("evaluates").expect("a derivative");
        assert!(err < check::TOLERANCE, "{q}: {} (error {err})", s.render(&a));
        // A wrong answer is caught.
        let mut wrong = a.clone();
        wrong.expr = matdiff::ir::scale(matdiff::ir::rat(2), a.expr.clone());
        let err = s.check(&wrong).expect("evaluates").expect("a derivative");
        assert!(err > check::TOLERANCE, "{q}: twice the answer passed");
    }
    // With only x varying, the textbook form.
    let mut s = Session::default();
    let a = s.answers("x: n; A: n x n; d²(x^T A x); grad(x^T A x, x)").unwrap();
    assert_eq!(s.render(&a[0]), "d²(x^T A x) = 2 dxᵀ A dx");
}

/// `d³F` against closed forms worked out by hand: `d³ sum(exp(x)) =
/// Σ exp(xᵢ) dxᵢ³`, `d³ tr(X³) = 6 tr(dX³)`, `d³ logdet(X) = 2 tr((X⁻¹dX)³)`,
/// `d³(xᵀ A x) = 6 dxᵀ dA dx`; each also against third differences, and
/// twice the answer is caught.
#[test]
fn third_differentials() {
    type Closed = fn(&matdiff::eval::Values) -> f64;
    let cases: [(&str, Closed); 5] = [
        ("x: n; d³(sum(exp(x)))", |v| {
            let (x, dx) = (&v.mats["x"], &v.diffs["x"]);
            x.iter().zip(dx.iter()).map(|(x, d)| x.exp() * d.powi(3)).sum()
        }),
        ("X: n x n; d³(tr(X X X))", |v| {
            let dx = &v.diffs["X"];
            6.0 * (dx * dx * dx).trace()
        }),
        ("X: n x n; d3(logdet(X))", |v| {
            let m = v.mats["X"].clone().try_inverse().expect("invertible") * &v.diffs["X"];
            2.0 * (&m * &m * &m).trace()
        }),
        ("x: n; A: n x n; d^3(x^T A x)", |v| {
            let (dx, da) = (&v.diffs["x"], &v.diffs["A"]);
            6.0 * (dx.transpose() * da * dx)[(0, 0)]
        }),
        ("x: n; W: m x n; h = tanh(W x); d³(sum(h))", |v| {
            // z = W x has dz = dW x + W dx, d²z = 2 dW dx and d³z = 0, so
            // d³ tanh(z) = tanh‴(z) dz³ + 3 tanh″(z) dz d²z, with t = tanh z,
            // tanh″ = -2t(1 - t²) and tanh‴ = -2 + 8t² - 6t⁴.
            let (x, w, dx, dw) = (&v.mats["x"], &v.mats["W"], &v.diffs["x"], &v.diffs["W"]);
            let (z, dz, d2z) = (w * x, dw * x + w * dx, dw * dx * 2.0);
            (0..z.len())
                .map(|i| {
                    let t = z[i].tanh();
                    let (t2, t3) = (-2.0 * t * (1.0 - t * t), -2.0 + 8.0 * t * t - 6.0 * t.powi(4));
                    t3 * dz[i].powi(3) + 3.0 * t2 * dz[i] * d2z[i]
                })
                .sum()
        }),
    ];
    for (q, closed) in cases {
        let mut s = Session::default();
        let a = s.answers(q).unwrap_or_else(|e| panic!("{q}: {e}")).pop().expect("an answer");
        let err = s.check(&a).expect("evaluates").expect("a derivative");
        assert!(err < check::TOLERANCE, "{q}: {} (error {err})", s.render(&a));
        let mut rng = StdRng::seed_from_u64(11);
        let mut values = check::random_values(&s.env, &mut rng, true);
        values.diffs = a
            .varying
            .iter()
            .map(|n| {
                let m = &values.mats[n];
                let d =
                    matdiff::eval::Mat::from_fn(m.nrows(), m.ncols(), |i, j| ((i * 7 + j * 3) % 5) as f64 / 4.0 - 0.4);
                (n.clone(), d)
            })
            .collect();
        let got = a.value(&s.env, &values).expect("evaluates")[(0, 0)];
        let want = closed(&values);
        assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{q}: {} gives {got}, by hand {want}", s.render(&a));
        let mut wrong = a.clone();
        wrong.expr = matdiff::ir::scale(matdiff::ir::rat(2), a.expr.clone());
        let err = s.check(&wrong).expect("evaluates").expect("a derivative");
        assert!(err > check::TOLERANCE, "{q}: twice the answer passed");
    }
    // With only x varying, the cubic term of a quadratic form vanishes.
    let mut s = Session::default();
    let a = s.answers("x: n; A: n x n; d³(x^T A x); grad(x^T A x, x)").unwrap();
    assert_eq!(s.render(&a[0]), "d³(x^T A x) = 0");
}

#[test]
fn a_hessian_needs_a_scalar() {
    let mut s = Session::default();
    let err = s.run("x: n; A: n x n; hessian(A x, x)").unwrap_err();
    assert!(err.to_string().contains("not a scalar"), "{err}");
}

/// Re-reading a printed Kronecker-form Hessian, whose bare `I`s are sized
/// only once every size is known, used to stop at a sum of unequal shapes
/// met halfway; it now reads back, or falls back to sized identities.
#[test]
fn a_kronecker_hessian_with_ambiguous_identities_is_derived() {
    let q = "P: 2 x 2; s: scalar; H2 = (ones(3, 3) ∘ sum(P')); \
             L = (sum((tanh(H2) ⊗ (P ./ (2 + σ(s)))) ∘ (tanh(H2) ⊗ (P ./ (2 + σ(s))))) / 36); hessian(L, P)";
    let mut s = Session::default();
    let a = s.answers(q).unwrap_or_else(|e| panic!("{e}")).pop().expect("an answer");
    let err = s.check(&a).expect("evaluates").expect("a derivative");
    assert!(err < check::TOLERANCE, "{} (error {err})", s.render(&a));
}
