//! Derivatives defined as values (`g = ∂f/∂x`): differentiated again, they
//! must agree with closed forms derived by hand here, evaluated with
//! nalgebra, and with `--check`, whose reference differentiates the
//! derivative's own finite differences.

use matdiff::eval::check::{random_values, TOLERANCE};
use matdiff::eval::{Mat, Values};
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

/// The answers of `src` with their values at random values (the same for all).
fn values_of(src: &str, order: matdiff::ir::VecOrder, seed: u64) -> (Session, Vec<matdiff::session::Answer>, Values) {
    let mut s = Session::default();
    s.set_vec_order(order);
    let answers = s.answers(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let values = random_values(&s.env, &mut StdRng::seed_from_u64(seed), false);
    (s, answers, values)
}

#[test]
fn derivatives_inside_expressions_are_the_closed_forms() {
    // f = ½ xᵀ A x with A symmetric: ∂f/∂x = A x, P = ‖A x‖², ∂P/∂x = 2 A² x.
    let src = "A: n x n symmetric; x: n; f = xᵀ A x / 2; P = ‖∂f/∂x‖²; ∂P/∂x";
    let (s, answers, mut values) = values_of(src, matdiff::ir::VecOrder::Row, 3);
    let am = values.mats["A"].clone();
    let am = (&am + am.transpose()) * 0.5;
    values.mats.insert("A".into(), am.clone());
    let got = answers[0].value(&s.env, &values).unwrap();
    assert!(close(&got, &(&am * &am * &values.mats["x"] * 2.0)) < 1e-12, "{}", answers[0].text());
    // One MAML step written inline: the adapted weights θ - α ∂L1/∂θ.
    let src = "X1, X2: N x d; y1, y2: N; θ: d; α: scalar
               L1 = ‖X1 θ - y1‖² / N
               L2 = ‖X2 (θ - α ∂L1/∂θ) - y2‖² / N
               ∂L2/∂θ";
    let (s, answers, values) = values_of(src, matdiff::ir::VecOrder::Row, 5);
    let m = |n: &str| values.mats[n].clone();
    let (x1, x2, y1, y2, theta, alpha) = (m("X1"), m("X2"), m("y1"), m("y2"), m("θ"), m("α")[(0, 0)]);
    let n = x1.nrows() as f64;
    let phi = &theta - x1.transpose() * (&x1 * &theta - &y1) * (2.0 * alpha / n);
    let outer = x2.transpose() * (&x2 * &phi - &y2) * (2.0 / n);
    let want = (Mat::identity(theta.nrows(), theta.nrows()) - x1.transpose() * &x1 * (alpha * 2.0 / n)) * &outer;
    let got = answers[0].value(&s.env, &values).unwrap();
    assert!(close(&got, &want) < 1e-10, "{}: {got} vs {want}", answers[0].text());
    // Shapes, bare values and checks of derivatives inside expressions.
    let mut s = Session::default();
    let a = s.answers("X: m x n; shape(∂tr(Xᵀ X)/∂X)").unwrap();
    assert_eq!(a[0].function.shape.to_string(), "m×n");
    for src in [
        "x: n; A: n x n; P = ‖∂(xᵀ A x)/∂x‖²; ∂P/∂A",
        "W: 2 x 3; u: 3; Q = tr(grad(sum(σ(W u)), W) grad(sum(σ(W u)), W)ᵀ); ∂Q/∂u",
        "x: 3; A: 3 x 3; S = sum(∂tanh(A x)/∂xᵀ ∘ ∂tanh(A x)/∂xᵀ); ∂S/∂A",
        "X: 3 x 2; w: 2; T = tr(hessian(sum(exp(X w)), w)²); ∂T/∂w",
    ] {
        let mut s = Session::default();
        for a in s.answers(src).unwrap_or_else(|e| panic!("{e}\n{src}")) {
            let err = s.check(&a).unwrap().unwrap();
            assert!(err < TOLERANCE, "{}: relative error {err}\n{src}", a.text());
        }
    }
}

#[test]
fn hessian_vector_products_are_the_closed_forms_without_the_hessian() {
    use matdiff::eval::flops::count;
    use matdiff::ir::VecOrder;
    // f = sum(exp(A x)) + ‖x‖²: H = Aᵀ diag(exp(A x)) A + 2 I, for x a column.
    let src = "A: m x n; x, v: n; u: 1 x n; f = sum(exp(A x)) + ‖x‖²
               hessian(f, x) v
               u hessian(f, x)
               (hessian(f, x)) (2 v)
               grad(f, x)";
    let (s, answers, values) = values_of(src, VecOrder::Row, 7);
    let m = |n: &str| values.mats[n].clone();
    let (a, x, v, u) = (m("A"), m("x"), m("v"), m("u"));
    let e = (&a * &x).map(f64::exp);
    let h = a.transpose() * Mat::from_diagonal(&e.column(0)) * &a + Mat::identity(x.nrows(), x.nrows()) * 2.0;
    for (answer, want) in answers.iter().zip([&h * &v, &u * &h, &h * &v * 2.0]) {
        let got = answer.value(&s.env, &values).unwrap();
        assert!(close(&got, &want) < 1e-12, "{}: {got} vs {want}", answer.text());
        assert!(!answer.text().contains("diag") && !answer.text().contains('⊗'), "{}", answer.text());
        // `--check` compares the value with the script evaluated as written
        // (each derivative by finite differences).
        let err = s.check(answer).unwrap().expect("a value is checked");
        assert!(err < TOLERANCE, "{}: relative error {err}", answer.text());
        let mut wrong = answer.clone();
        wrong.expr = matdiff::ir::scale(matdiff::ir::rat(11) / matdiff::ir::rat(10), answer.expr.clone());
        let err = s.check(&wrong).unwrap().expect("a value is checked");
        assert!(err > TOLERANCE, "{}: a tenth more passed ({err})", answer.text());
    }
    // At n = m = 2000 the product costs what a gradient costs, not the n³ of the Hessian.
    let sizes = [("m".to_string(), 2000), ("n".to_string(), 2000)].into();
    let gradient = count(&answers[3].expr, &sizes);
    for answer in &answers[..3] {
        let product = count(&answer.expr, &sizes);
        assert!(product <= 3 * gradient, "{}: {product} operations, the gradient {gradient}", answer.text());
    }

    // A row variable: f = sum(exp(x A)), H = A diag(exp(x A)) Aᵀ.
    let src = "A: n x m; x: 1 x n; v: n; f = sum(exp(x A)); hessian(f, x) v; vᵀ hessian(f, x)";
    let (s, answers, values) = values_of(src, VecOrder::Row, 8);
    let (a, x, v) = (values.mats["A"].clone(), values.mats["x"].clone(), values.mats["v"].clone());
    let e = (&x * &a).map(f64::exp);
    let h = &a * Mat::from_diagonal(&e.row(0).transpose()) * a.transpose();
    for (answer, want) in answers.iter().zip([&h * &v, v.transpose() * &h]) {
        let got = answer.value(&s.env, &values).unwrap();
        assert!(close(&got, &want) < 1e-12, "{}: {got} vs {want}", answer.text());
    }

    // A matrix variable: L = ‖W x - y‖² has H vec(V) = vec(2 V x xᵀ), in either vec order.
    for order in [VecOrder::Row, VecOrder::Col] {
        let src = "W: m x n; V: m x n; x: n; y: m; L = ‖W x - y‖²; hessian(L, W) vec(V); vec(V)ᵀ hessian(L, W)";
        let (s, answers, values) = values_of(src, order, 9);
        let (vm, x) = (values.mats["V"].clone(), values.mats["x"].clone());
        let d = &vm * &x * x.transpose() * 2.0;
        let vec = |m: &Mat| match order {
            VecOrder::Col => Mat::from_column_slice(m.len(), 1, m.as_slice()),
            VecOrder::Row => Mat::from_column_slice(m.len(), 1, m.transpose().as_slice()),
        };
        for (answer, want) in answers.iter().zip([vec(&d), vec(&d).transpose()]) {
            let got = answer.value(&s.env, &values).unwrap();
            assert!(close(&got, &want) < 1e-12, "{order:?} {}: {got} vs {want}", answer.text());
        }
    }

    // A vector that depends on x, or a matrix of vectors: the Hessian's own product.
    let src = "A: m x n; x: n; V: n x 3; f = sum(exp(A x)); hessian(f, x) grad(f, x); hessian(f, x) V";
    let (s, answers, values) = values_of(src, VecOrder::Row, 10);
    let (a, x, vm) = (values.mats["A"].clone(), values.mats["x"].clone(), values.mats["V"].clone());
    let e = (&a * &x).map(f64::exp);
    let h = a.transpose() * Mat::from_diagonal(&e.column(0)) * &a;
    let g = a.transpose() * &e;
    for (answer, want) in answers.iter().zip([&h * &g, &h * &vm]) {
        let got = answer.value(&s.env, &values).unwrap();
        assert!(close(&got, &want) < 1e-12, "{}: {got} vs {want}", answer.text());
    }
}

#[test]
fn the_seed_networks_hessian_vector_product_is_the_gradients_derivative() {
    // The seed network with tanh activations; the reference is the central
    // difference of its gradient, backpropagated by hand, along V.
    let src = include_str!("../examples/hessian_vector.mdiff")
        .replace("f1, f2: R -> R", "")
        .replace("f1(d1)", "tanh(d1)")
        .replace("f2(d2)", "tanh(d2)");
    for order in [matdiff::ir::VecOrder::Row, matdiff::ir::VecOrder::Col] {
        let (s, answers, values) = values_of(&src, order, 12);
        let m = |n: &str| values.mats[n].clone();
        let (n0, w1, b1, w2, b2, y, v) = (m("n0"), m("W1"), m("b1"), m("W2"), m("b2"), m("y"), m("V"));
        let gradient = |w1: &Mat| {
            let n1 = (&n0 * w1 + &b1).map(f64::tanh);
            let n2 = (&n1 * &w2 + &b2).map(f64::tanh);
            let delta2 = (&n2 - &y).component_mul(&n2.map(|t| 1.0 - t * t)) * 2.0;
            let delta1 = (&delta2 * w2.transpose()).component_mul(&n1.map(|t| 1.0 - t * t));
            n0.transpose() * delta1
        };
        let h = 1e-5;
        let hv = (gradient(&(&w1 + &v * h)) - gradient(&(&w1 - &v * h))) / (2.0 * h);
        let vec = |m: &Mat| match order {
            matdiff::ir::VecOrder::Col => Mat::from_column_slice(m.len(), 1, m.as_slice()),
            matdiff::ir::VecOrder::Row => Mat::from_column_slice(m.len(), 1, m.transpose().as_slice()),
        };
        let curvature = vec(&v).transpose() * vec(&hv);
        for (answer, want) in answers.iter().zip([vec(&hv), curvature]) {
            let got = answer.value(&s.env, &values).unwrap();
            assert!(close(&got, &want) < 1e-8, "{order:?} {}: {got} vs {want}", answer.text());
        }
    }
}
