//! Backward programs: `∂L/∂(W1, b1, …)` answers every gradient at once with
//! each shared adjoint named once. Each gradient must equal the one asked
//! alone and pass the numeric check; printed programs and single answers
//! must grow linearly with depth, residual connections included.

use matdiff::derive::Backward;
use matdiff::eval::check::{random_values, TOLERANCE};
use matdiff::session::{Outcome, Session};
use rand::{rngs::StdRng, SeedableRng};

use crate::network;

fn program(s: &mut Session, src: &str) -> Backward {
    let mut out = s.run(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    match out.pop() {
        Some(Outcome::Backward(b)) => b,
        other => panic!("not a backward program: {other:?}"),
    }
}

fn text(s: &Session, b: &Backward) -> String {
    s.renderer().backward(b, &[], &mut Default::default())
}

#[test]
fn the_seed_network_as_the_lecture_writes_it() {
    let mut s = Session::default();
    s.run(include_str!("../examples/backprop.mdiff")).unwrap();
    let b = program(&mut s, "∂L/∂(W1, b1, W2, b2)");
    let printed = text(&s, &b);
    insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("backward_seed", printed);
    });
    // The same program in ASCII reads back as a script computing the same values.
    let ascii = {
        let mut r = s.renderer();
        r.format = matdiff::session::Format::Ascii;
        r.backward(&b, &[], &mut Default::default())
    };
    assert!(ascii.contains("delta_d2 = "), "{ascii}");
    // With steps, each adjoint says what it is.
    let steps = {
        let mut r = s.renderer();
        r.steps = true;
        r.backward(&b, &[], &mut Default::default())
    };
    assert!(steps.contains("δd1 = ∂L/∂d1 = δd2 W2ᵀ ∘ f1'(d1)"), "{steps}");
    for g in &b.gradients {
        let err = s.check(g).unwrap().unwrap();
        assert!(err < TOLERANCE, "{}: {err}", g.text());
    }
}

/// Scripts whose intermediates are used more than once (residual
/// connections, layer norms, gates), with every parameter asked for.
const NETWORKS: &[(&str, &str)] = &[
    ("mlp", include_str!("../examples/mlp.mdiff")),
    ("layer_norm", include_str!("../examples/layer_norm.mdiff")),
    ("attention", include_str!("../examples/attention.mdiff")),
    ("transformer_block", include_str!("../examples/transformer_block.mdiff")),
    ("lstm", include_str!("../examples/lstm.mdiff")),
    ("softmax_regression", include_str!("../examples/softmax_regression.mdiff")),
    ("three_layer", include_str!("../examples/three_layer.mdiff")),
];

#[test]
fn every_gradient_of_a_program_equals_the_one_asked_alone_and_checks() {
    for (name, src) in NETWORKS {
        let mut s = Session::default();
        let mut singles = s.answers(src).unwrap_or_else(|e| panic!("{name}: {e}"));
        singles.retain(|a| a.kind() == matdiff::ast::QueryKind::Gradient && a.function.shape.is_scalar());
        let mut seen = std::collections::BTreeSet::new();
        singles.retain(|a| seen.insert(a.wrt().map(str::to_string)));
        let vars: Vec<&str> = singles.iter().filter_map(|a| a.wrt()).collect();
        assert!(vars.len() >= 2, "{name}");
        let b = program(&mut s, &format!("∂L/∂({})", vars.join(", ")));
        assert_eq!(b.gradients.len(), vars.len());
        let mut rng = StdRng::seed_from_u64(7);
        let values = random_values(&s.env, &mut rng, false);
        for (single, g) in singles.iter().zip(&b.gradients) {
            assert_eq!(g.wrt(), single.wrt());
            let want = single.value(&s.env, &values).unwrap();
            let got = g.value(&s.env, &values).unwrap();
            let scale = want.amax().max(1e-12);
            assert!((&got - &want).amax() <= 1e-9 * scale, "{name}: {} vs {}", g.text(), single.text());
            let err = s.check(g).unwrap().unwrap();
            assert!(err < TOLERANCE, "{name}: ∂L/∂{:?} = {}: relative error {err}", g.wrt(), g.text());
        }
        // Every adjoint a gradient names is one of the program's, with the same value.
        for g in &b.gradients {
            for a in &g.adjoints {
                assert!(b.adjoints.contains(a), "{name}: {} not in the program", a.0);
            }
        }
    }
}

/// `z_i = tanh(W_i z_{i-1}) + z_{i-1}`: each layer's input is used twice,
/// so writing adjoints inline doubles the answer with every layer.
fn residual_chain(layers: usize) -> String {
    let mut src = String::from("x: n\ny: n\n");
    for i in 1..=layers {
        src.push_str(&format!("W{i}: n x n\n"));
    }
    src.push_str("z0 = x\n");
    for i in 1..=layers {
        src.push_str(&format!("z{i} = tanh(W{i} z{}) + z{}\n", i - 1, i - 1));
    }
    src.push_str(&format!("L = ‖z{layers} - y‖²\n"));
    src
}

#[test]
fn residual_chains_print_in_size_linear_in_depth() {
    let size = |layers: usize| {
        let mut s = Session::default();
        s.run(&residual_chain(layers)).unwrap();
        let vars: Vec<String> = (1..=layers).map(|i| format!("W{i}")).collect();
        let b = program(&mut s, &format!("∂L/∂({})", vars.join(", ")));
        let single = s.answers("∂L/∂W1").unwrap().remove(0);
        let lines = s.renderer().answer(&single, None);
        (text(&s, &b).len(), lines.len())
    };
    let (p16, s16) = size(16);
    let (p64, s64) = size(64);
    // Linear growth is 4×; the names' digits add a little.
    assert!(p64 <= 5 * p16, "the program grows {p16} → {p64} bytes from 16 to 64 layers");
    assert!(s64 <= 5 * s16, "∂L/∂W1 grows {s16} → {s64} bytes from 16 to 64 layers");
}

#[test]
fn deep_programs_print_in_size_linear_in_depth() {
    for kind in ["mlp", "rnn", "residual"] {
        let size = |depth: usize| {
            let mut s = Session::default();
            let b = program(&mut s, &network::deep(kind, depth));
            text(&s, &b).len()
        };
        let (small, large) = (size(16), size(64));
        assert!(large <= 5 * small, "{kind}: {small} → {large} bytes from depth 16 to 64");
    }
    // Two transformer blocks: every gradient checks.
    let mut s = Session::default();
    let b = program(&mut s, &network::transformer(2, true));
    assert_eq!(b.gradients.len(), 22);
    for g in &b.gradients {
        let err = s.check(g).unwrap().unwrap();
        assert!(err < TOLERANCE, "∂L/∂{:?}: {err}", g.wrt());
    }
}

#[test]
fn a_program_refuses_what_it_cannot_answer() {
    let mut s = Session::default();
    s.run("A: 2 x 2; x: 2; L = xᵀ A x; F = A x").unwrap();
    for (src, want) in [
        ("∂L/∂(A, A)", "asked for twice"),
        ("∂F/∂(A, x)", "not a scalar"),
        ("∂L/∂(A, q)", "not a declared or defined matrix"),
        ("∂L/∂(L, A)", "is 1"),
        ("grad(L, A, 2 x)", "written by its name"),
        ("∂L/∂(A + A)", "expected `)` or `,`"),
    ] {
        let e = s.run(src).expect_err(src);
        assert!(e.to_string().contains(want), "{src}: {e}");
    }
    // A variable the function does not depend on has a zero gradient.
    s.run("B: 2 x 2").unwrap();
    let b = program(&mut s, "∂L/∂(A, B)");
    assert_eq!(b.gradients[1].text(), "0");
}

#[test]
fn hessians_through_residual_chains_print_in_size_linear_in_depth() {
    let hessian = |layers: usize| {
        let mut s = Session::default();
        let a = s.answers(&format!("{}hessian(L, x)", residual_chain(layers))).unwrap().remove(0);
        let printed = s.renderer().answer(&a, None);
        (s, a, printed.len())
    };
    let (_, _, small) = hessian(16);
    let (_, _, large) = hessian(64);
    assert!(large <= 5 * small, "the Hessian grows {small} → {large} bytes from 16 to 64 layers");
    // It names the gradient's shared adjoints and the Jacobians by them, and checks.
    let (s, a, _) = hessian(5);
    assert!(a.adjoints.iter().any(|(n, _)| n.starts_with('δ')), "{:?}", a.adjoints);
    assert!(a.adjoints.iter().any(|(n, _)| n.starts_with("J_")), "{:?}", a.adjoints);
    let err = s.check(&a).unwrap().unwrap();
    assert!(err < TOLERANCE, "{}: {err}", a.text());
}
