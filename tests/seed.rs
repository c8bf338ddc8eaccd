//! The worked example: the seed network's derivation, pinned
//! by snapshots under both conventions, step by step, and in every format.

use matdiff::diff::chain::{Conventions, Layout};
use matdiff::ir::VecOrder;
use matdiff::render::Shown;
use matdiff::session::{Format, Options, Outcome, Session};

const SEED: &str = include_str!("../examples/backprop.mdiff");

fn run(options: Options) -> String {
    let mut s = Session::new(options);
    let outcomes = s.run(SEED).expect("the seed script runs");
    let mut shown = Shown::new();
    outcomes.iter().filter_map(|o| s.render_outcome_after(o, &mut shown)).collect::<Vec<_>>().join("\n")
}

/// Options with the script to run (the seed network unless given).
trait WithScript {
    fn with_script(self, script: &str) -> (Options, &str);
}

impl WithScript for Options {
    fn with_script(self, script: &str) -> (Options, &str) {
        (self, script)
    }
}

/// What [`answers`] runs: options alone run the seed network.
trait Run<'a> {
    fn parts(self) -> (Options, &'a str);
}

impl Run<'static> for Options {
    fn parts(self) -> (Options, &'static str) {
        (self, SEED)
    }
}

impl<'a> Run<'a> for (Options, &'a str) {
    fn parts(self) -> (Options, &'a str) {
        self
    }
}

fn answers<'a>(run: impl Run<'a>) -> Vec<String> {
    let (options, script) = run.parts();
    let mut s = Session::new(options);
    let outcomes = s.run(script).unwrap_or_else(|e| panic!("{script}: {e}"));
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

/// The answer line without `--steps`, and the last line with it: the same
/// left-hand side and the same final form (`lhs = … = rhs` ends as `lhs = rhs`).
#[test]
fn steps_end_with_the_answer_printed_without_them() {
    let scripts = [
        SEED,
        "S: n x n symmetric; A: n x n; ∂tr(A S)/∂S",
        "S: 3 x 3 symmetric; x: 3; q = xᵀ S x; grad(q, S); grad(q, x); hessian(q, x); d(q)",
        "x: n; A: n x n; b: n; f = ‖A x - b‖²; ∂f/∂x; hessian(f, x); ∂f/∂A; ∂(A x)/∂xᵀ",
        "X: m x n; A: n x n; grad(tr(X A Xᵀ), X); ∂(X A)/∂vec(X)^T; d²(tr(X A Xᵀ))",
    ];
    for script in scripts {
        for options in [Options::default(), numerator_col()] {
            let plain = answers(options.with_script(script));
            let stepped = answers(Options { steps: true, ..options }.with_script(script));
            for (answer, steps) in plain.iter().zip(&stepped) {
                // The last line, without the comment naming its rules.
                let last = steps.lines().last().unwrap();
                let last = last.split_once("  # ").map_or(last, |(line, _)| line);
                let (lhs, rhs) = answer.split_once(" = ").unwrap();
                assert!(
                    last == answer || (last.starts_with(&format!("{lhs} = ")) && last.ends_with(&format!(" = {rhs}"))),
                    "{script}\nwithout steps: {answer}\nwith steps:\n{steps}"
                );
            }
        }
    }
    // The symmetric gradient's last line is the answer line itself.
    let script = "S: n x n symmetric; A: n x n; ∂tr(A S)/∂S";
    let plain = answers(Options::default().with_script(script));
    let stepped = answers(Options { steps: true, ..Options::default() }.with_script(script));
    assert_eq!(
        stepped[0].lines().last(),
        Some(format!("{}  # symmetric X: (G + Gᵀ)/2", plain[0]).as_str()),
        "{}",
        stepped[0]
    );
    assert_eq!(plain[0], "∂(tr(A S))/∂S = (Aᵀ + A) / 2");
}

/// Every stdout line of `--format json` parses; answers carry their steps
/// and check result; errors go to stderr with status 1.
#[test]
fn json_output_carries_steps_and_check_on_every_line() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_matdiff")).args(args).output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<serde_json::Value> =
            stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        (out.status.code(), lines, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/backprop.mdiff");
    let (code, lines, _) = run(&["--format", "json", "--check", "--steps", seed]);
    assert_eq!(code, Some(0));
    let answers: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("query").is_some()).collect();
    assert_eq!(answers.len(), 7);
    for a in &answers {
        assert_eq!(a["check"]["passed"], true, "{a}");
        assert!(a["check"]["relative_error"].as_f64().unwrap() < 1e-5, "{a}");
        let steps = a["steps"].as_array().unwrap();
        assert!(!steps.is_empty(), "{a}");
        for s in steps {
            for key in ["lhs", "text", "ascii", "latex", "line"] {
                assert!(s[key].is_string(), "{key} in {s}");
            }
        }
        assert_eq!(steps.last().unwrap()["text"], a["text"], "{a}");
    }
    // Each step names the rules it used, in every notation.
    let rules = |answer: &serde_json::Value| -> Vec<Vec<String>> {
        let steps = answer["steps"].as_array().unwrap();
        steps
            .iter()
            .map(|s| {
                let rules = s["rules"].as_array().unwrap();
                for r in rules {
                    for key in ["name", "text", "ascii", "latex"] {
                        assert!(r[key].is_string(), "{key} in {r}");
                    }
                }
                rules.iter().map(|r| r["text"].as_str().unwrap().to_string()).collect()
            })
            .collect()
    };
    // dL = dn2 (n2 - y)ᵀ + (n2 - y) dn2ᵀ comes from the product rule and
    // the differential of a transpose; the chain multiplies Jacobians;
    // the matrix gradient is the reshaped Kronecker form.
    assert_eq!(rules(answers[1])[0], ["product rule", "d(Xᵀ) = (dX)ᵀ"]);
    assert!(rules(answers[4]).last().unwrap().contains(&"chain rule".to_string()), "{}", answers[4]);
    assert!(rules(answers[3]).iter().flatten().any(|r| r.starts_with("vec(A X B)")), "{}", answers[3]);
    assert_eq!(rules(answers[6]).last().unwrap(), &["vec⁻¹ to the shape of X"]);

    let last = answers[6];
    assert_eq!(last["steps"].as_array().unwrap().last().unwrap()["lhs"], "∂L/∂W1");
    // Without --steps or --check the fields are absent.
    let (_, lines, _) = run(&["--format", "json", seed]);
    assert!(lines.iter().all(|l| l.get("steps").is_none() && l.get("check").is_none()));
    // An error: the lines before it are JSON, the message is on stderr.
    let (code, lines, stderr) = run(&["--format", "json", "--check", "-e", "x: n; grad(xᵀ x, x); y = x z"]);
    assert_eq!(code, Some(1));
    assert_eq!(lines.len(), 1);
    assert!(stderr.contains("unknown name `z`"), "{stderr}");
    // Usage errors are status 2.
    let (code, _, _) = run(&["--format", "yaml", seed]);
    assert_eq!(code, Some(2));
}

/// JSON's `layout` and `vec` are those the answer was derived under, even
/// after the session's settings change.
#[test]
fn json_reports_the_conventions_of_the_answer() {
    let mut s = Session::new(Options { format: Format::Json, ..numerator_col() });
    let answers = s.answers("X: 2 x 3; A: 3 x 3; ∂(X A)/∂vec(X)^T").unwrap();
    s.options.conventions = Conventions::default();
    s.set_vec_order(VecOrder::Row);
    let json: serde_json::Value = serde_json::from_str(&s.render(&answers[0])).unwrap();
    assert_eq!(json["layout"], "numerator");
    assert_eq!(json["vec"], "col");
}
