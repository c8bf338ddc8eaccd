//! Every example script runs and every derivative in it passes `--check`.

use assert_cmd::Command;

#[test]
fn every_example_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "mdiff") {
            for conventions in [&[][..], &["--layout", "numerator", "--vec", "col"][..]] {
                let out = Command::cargo_bin("matdiff")
                    .expect("binary")
                    .arg("--check")
                    .args(conventions)
                    .arg(&path)
                    .output()
                    .expect("runs");
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "{}: {}\n{}",
                    path.display(),
                    stdout,
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(stdout.contains("checked: largest relative error"), "{}", path.display());
                assert!(!stdout.contains("FAILED"));
            }
            n += 1;
        }
    }
    assert!(n >= 4, "expected the example scripts, found {n}");
}

/// The README's language tour runs as written, and every derivative in it checks.
#[test]
fn readme_tour_runs() {
    let readme = include_str!("../README.md");
    let start = readme.find("```text\n# declarations").expect("the tour") + "```text\n".len();
    let tour = &readme[start..start + readme[start..].find("```").expect("end of the tour")];
    let mut s = matdiff::Session::default();
    let answers = s.answers(tour).unwrap_or_else(|e| panic!("{}", e.render("README.md", tour)));
    assert!(answers.len() >= 10);
    let text: Vec<String> = answers.iter().map(|a| s.render(a)).collect();
    assert!(text.contains(&"dq = 2 xᵀ S dx + tr(x xᵀ dS)".to_string()), "{text:#?}");
    assert!(text.contains(&"∂²q/∂x∂xᵀ = 2 S".to_string()), "{text:#?}");
    for a in &answers {
        if let Some(err) = s.check(a).expect("evaluates") {
            assert!(err < matdiff::eval::check::TOLERANCE, "{}", s.render(a));
        }
    }
}

#[test]
fn readme_backward_program_is_what_matdiff_prints() {
    let readme = include_str!("../README.md");
    let marker = "`∂L/∂(Wq, Wk, Wv, γ1, β1, W1, b1, W2, b2, γ2, β2)`:\n\n```text\n";
    let start = readme.find(marker).expect("the transformer program in the README") + marker.len();
    let shown = &readme[start..start + readme[start..].find("```").expect("end of the block")];
    let script: String = include_str!("../examples/transformer_block.mdiff")
        .lines()
        .filter(|l| !l.starts_with('∂'))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut s = matdiff::Session::default();
    let out = s.run(&format!("{script}∂L/∂(Wq, Wk, Wv, γ1, β1, W1, b1, W2, b2, γ2, β2)")).expect("runs");
    let Some(matdiff::session::Outcome::Backward(b)) = out.last() else { panic!("a backward program") };
    assert_eq!(s.renderer().backward(b, &[], &mut Default::default()), shown.trim_end());
}

#[test]
fn readme_derivative_as_value_runs_and_checks() {
    let readme = include_str!("../README.md");
    let marker = "## Derivatives as values";
    let at = readme.find(marker).expect("the section");
    let start = at + readme[at..].find("```text\n").expect("its example") + "```text\n".len();
    let block = &readme[start..start + readme[start..].find("```").expect("end of the block")];
    let mut s = matdiff::Session::default();
    let answers = s.answers(block).unwrap_or_else(|e| panic!("{}", e.render("README.md", block)));
    assert_eq!(answers.len(), 1);
    let err = s.check(&answers[0]).expect("evaluates").expect("a derivative");
    assert!(err < matdiff::eval::check::TOLERANCE, "{}: {err}", s.render(&answers[0]));
    // The second block: a derivative inside an expression, and a Hessian-vector product.
    let rest = &readme[start + block.len() + 3..];
    let start = rest.find("```text\n").expect("the second example") + "```text\n".len();
    let block = &rest[start..start + rest[start..].find("```").expect("end of the block")];
    let mut s = matdiff::Session::default();
    let out = s.run(block).unwrap_or_else(|e| panic!("{}", e.render("README.md", block)));
    let shown: Vec<String> = out.iter().filter_map(|o| s.render_outcome(o)).collect();
    assert_eq!(shown[1], "g = ∂f/∂x: n×1", "{shown:?}");
    let Some(matdiff::session::Outcome::Answer(a)) = out.last() else { panic!("an answer") };
    assert_eq!(s.render(a), "Aᵀ (A v ∘ exp(A x)): n×1");
    let err = s.check(a).expect("evaluates").expect("a value is checked");
    assert!(err < matdiff::eval::check::TOLERANCE, "{}: {err}", s.render(a));
}

/// The README's REPL session with `:steps on` shows what matdiff prints:
/// each line of the derivation with the rules it used.
#[test]
fn readme_steps_are_what_matdiff_prints() {
    let readme = include_str!("../README.md");
    let marker = "matdiff> ∂f/∂A\n";
    let start = readme.find(marker).expect("the REPL's steps in the README") + marker.len();
    let shown = &readme[start..start + readme[start..].find("```").expect("end of the block")];
    let mut s = matdiff::Session::new(matdiff::session::Options { steps: true, ..Default::default() });
    let answers = s.answers("x: n; A: n x n; b: n\nf = ‖A x - b‖²\n∂f/∂A").expect("runs");
    assert_eq!(s.render(&answers[0]), shown.trim_end());
    assert!(shown.lines().all(|l| l.contains("  # ")), "{shown}");
}

/// The README's layer-norm command prints the line it shows: run through
/// `sh` as written, with `matdiff` the binary under test.
#[test]
fn readme_layer_norm_command_prints_what_it_shows() {
    let readme = include_str!("../README.md");
    let marker = "```sh\nmatdiff --format torch -e 'X: T x d;";
    let start = readme.find(marker).expect("the layer-norm command in the README") + "```sh\n".len();
    let block = &readme[start..start + readme[start..].find("```").expect("end of the block")];
    let (command, shown) = block.split_once("\n# ").expect("the command, then the line it prints");
    let bin = assert_cmd::cargo::cargo_bin("matdiff");
    let dir = bin.parent().expect("the binary's folder");
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = std::process::Command::new("sh").arg("-c").arg(command).env("PATH", path).output().expect("sh runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), shown.trim_end());
}
