//! The worked example: the seed network's derivation, pinned
//! by snapshots under both conventions, step by step, and in every format.

use matdiff::diff::chain::{Conventions, Layout};
use matdiff::ir::VecOrder;
use matdiff::session::{Format, Options, Outcome, Session};

const SEED: &str = include_str!("../examples/backprop.mdiff");

fn run(options: Options) -> String {
    let mut s = Session::new(options);
    let outcomes = s.run(SEED).expect("the seed script runs");
    outcomes.iter().filter_map(|o| s.render_outcome(o)).collect::<Vec<_>>().join("\n")
}

fn answers(options: Options) -> Vec<String> {
    let mut s = Session::new(options);
    let outcomes = s.run(SEED).expect("the seed script runs");
    outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Answer(a) => Some(s.render(a)),
            _ => None,
        })
        .collect()
}

fn snap(name: &str, text: String) {
    insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, text);
    });
}

fn numerator_col() -> Options {
    Options { conventions: Conventions { layout: Layout::Numerator, order: VecOrder::Col }, ..Options::default() }
}

#[test]
fn seed_answers_match_the_worked_example() {
    let got = answers(Options::default());
    let want = [
        "dL = dn2 2(n2 - y)ᵀ",
        "∂L/∂n2ᵀ = 2(n2 - y)ᵀ",
        "∂n2/∂d2ᵀ = diag(f2'(d2))",
        "∂d2/∂vec(W2)ᵀ = n1ᵀ ⊗ I",
        "∂L/∂vec(W2)ᵀ = (n1ᵀ ⊗ I) diag(f2'(d2)) 2(n2 - y)ᵀ",
        "∂L/∂vec(W1)ᵀ = (n0ᵀ ⊗ I) diag(f1'(d1)) W2 diag(f2'(d2)) 2(n2 - y)ᵀ",
        "∂L/∂W1 = 2 n0ᵀ (((n2 - y) ∘ f2'(d2)) W2ᵀ ∘ f1'(d1))",
    ];
    assert_eq!(got, want);
}

#[test]
fn seed_answers_in_ascii() {
    let got = answers(Options { format: Format::Ascii, ..Options::default() });
    assert_eq!(got[4], "dL/dvec(W2)^T = kron(n1^T, I) diag(f2'(d2)) 2(n2 - y)^T");
    assert_eq!(got[6], "dL/dW1 = 2 n0^T (((n2 - y) .* f2'(d2)) W2^T .* f1'(d1))");
}

#[test]
fn seed_numerator_layout_column_vec() {
    let got = answers(numerator_col());
    assert_eq!(got[3], "∂d2/∂vec(W2)ᵀ = I ⊗ n1");
    // ∂L/∂W1 keeps the shape of W1 whatever the conventions.
    assert_eq!(got[6], "∂L/∂W1 = 2 n0ᵀ (((n2 - y) ∘ f2'(d2)) W2ᵀ ∘ f1'(d1))");
}

#[test]
fn seed_every_answer_checks_numerically() {
    for options in [Options::default(), numerator_col()] {
        let mut s = Session::new(options);
        for o in s.run(SEED).expect("runs") {
            if let Outcome::Answer(a) = o {
                let err = s.check(&a).expect("evaluates").expect("a derivative");
                assert!(err < matdiff::eval::check::TOLERANCE, "{}: {err}", s.render(&a));
            }
        }
    }
}

#[test]
fn seed_snapshots() {
    snap("seed_text", run(Options::default()));
    snap("seed_numerator_col", run(numerator_col()));
    snap("seed_steps", run(Options { steps: true, ..Options::default() }));
    snap("seed_steps_numerator_col", run(Options { steps: true, ..numerator_col() }));
    snap("seed_latex", run(Options { format: Format::Latex, ..Options::default() }));
    snap("seed_steps_latex", run(Options { format: Format::Latex, steps: true, ..Options::default() }));
    snap("seed_json", run(Options { format: Format::Json, ..Options::default() }));
}

#[test]
fn seed_with_symbolic_sizes() {
    let src =
        SEED.replace("1 x 2", "1 x m").replace("2 x 3", "m x h").replace("1 x 3", "1 x h").replace("3 x 2", "h x k");
    let src = src.replace("b2: 1 x m", "b2: 1 x k").replace("y:  1 x m", "y:  1 x k");
    let mut s = Session::default();
    let shapes: Vec<String> = s
        .run(&src)
        .expect("runs")
        .iter()
        .filter_map(|o| match o {
            Outcome::Defined { name, shape } => Some(format!("{name}: {shape}")),
            _ => None,
        })
        .collect();
    assert_eq!(shapes, ["d1: 1×h", "n1: 1×h", "d2: 1×k", "n2: 1×k", "L: 1×1"]);
}
