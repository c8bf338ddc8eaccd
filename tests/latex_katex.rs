//! Every LaTeX answer renders in KaTeX without an error: the seed network's
//! derivation step by step, the examples, and Hessians. Needs `node` and the
//! `katex` package in `target/katex` (`.ci/run` installs it).

use matdiff::session::{Format, Options, Outcome, Session};
use std::io::Write;
use std::process::{Command, Stdio};

const RENDER: &str = r#"
const katex = require(process.argv[1] + "/node_modules/katex");
let input = "";
process.stdin.on("data", d => input += d);
process.stdin.on("end", () => {
  const failures = [];
  for (const tex of JSON.parse(input)) {
    try { katex.renderToString(tex, { throwOnError: true, displayMode: true }); }
    catch (e) { failures.push(tex + "\n  " + e.message); }
  }
  if (failures.length) { console.error(failures.join("\n")); process.exit(1); }
  console.log("rendered");
});
"#;

fn latex_of(script: &str, steps: bool) -> Vec<String> {
    let mut s = Session::new(Options { format: Format::Latex, steps, ..Options::default() });
    let outcomes = s.run(script).unwrap_or_else(|e| panic!("{e}"));
    outcomes.iter().filter(|o| !matches!(o, Outcome::Declared)).filter_map(|o| s.render_outcome(o)).collect()
}

#[test]
fn latex_renders_in_katex() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/katex");
    assert!(
        dir.join("node_modules/katex").exists(),
        "KaTeX is missing: run `npm install --prefix target/katex katex@0.16` (as .ci/run does)"
    );
    let mut all = Vec::new();
    for script in [
        include_str!("../examples/backprop.mdiff"),
        include_str!("../examples/least_squares.mdiff"),
        include_str!("../examples/logistic.mdiff"),
        include_str!("../examples/three_layer.mdiff"),
    ] {
        all.extend(latex_of(script, false));
        all.extend(latex_of(script, true));
    }
    all.extend(latex_of(
        "x: n; A: n x n; X: m x n; C: m x m; hessian(x^T A x, x); hessian(tr(X^T C X), X); hessian(logdet(A), A); \
         grad(det(A^3), A); d(tr(A^-1)); simplify(‖A x‖² + sum(sqrt(x ∘ x + 1)) + tr(A ⊗ A))",
        true,
    ));
    assert!(all.len() > 40);
    let mut child = Command::new("node")
        .args(["-e", RENDER, dir.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    child.stdin.take().unwrap().write_all(serde_json::to_string(&all).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "KaTeX could not render:\n{}", String::from_utf8_lossy(&out.stderr));
}
