//! The generated NumPy code runs in Python and agrees with matdiff's own
//! evaluator at the same random values. Needs `python3` with `numpy`.

use matdiff::eval::check::random_values;
use matdiff::eval::{Evaluator, Mat};
use matdiff::session::{Options, Session};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::io::Write;
use std::process::{Command, Stdio};

const DRIVER: &str = r#"
import inspect, json, math, re, sys
import numpy as np
data = json.load(sys.stdin)
scope = {}
exec(data["module"], scope)
def user(name, k):
    c = 0.3
    for b in name.encode():
        c = (c * 7.0 + b) % 3.0
    def f(x):
        s = np.sin(x + c + k * (math.pi / 2))
        return s + (x * x / 4.0 if k == 0 else x / 2.0 if k == 1 else 0.5 if k == 2 else 0.0)
    return f
out = []
for name in data["functions"]:
    fn = scope[name]
    args = []
    for p in inspect.signature(fn).parameters:
        if p in data["mats"]:
            args.append(np.array(data["mats"][p], dtype=float))
        elif p.startswith("d_") and p[2:] in data["diffs"]:
            args.append(np.array(data["diffs"][p[2:]], dtype=float))
        else:
            m = re.fullmatch(r"(.*)_prime(\d*)", p)
            args.append(user(m.group(1), int(m.group(2) or 1)) if m else user(p, 0))
    r = fn(*args)
    assert isinstance(r, np.ndarray) and r.ndim == 2, (name, type(r))
    out.append(r.tolist())
print(json.dumps(out))
"#;

fn to_json(m: &Mat) -> serde_json::Value {
    serde_json::json!((0..m.nrows()).map(|i| (0..m.ncols()).map(|j| m[(i, j)]).collect::<Vec<_>>()).collect::<Vec<_>>())
}

/// Runs the script's queries in NumPy and in Rust; returns how many agreed.
fn agree(script: &str, options: Options) -> usize {
    let mut s = Session::new(options);
    let answers = s.answers(script).unwrap_or_else(|e| panic!("{script}: {e}"));
    let module = s.numpy(&answers);
    let names: Vec<String> = module
        .lines()
        .filter_map(|l| l.strip_prefix("def ").filter(|r| !r.starts_with('_')))
        .map(|l| l.split('(').next().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), answers.len(), "one function per query:\n{module}");
    let mut rng = StdRng::seed_from_u64(7);
    let values = random_values(&s.env, &mut rng, true);
    let mut values = values;
    let mut diff_json = serde_json::Map::new();
    for a in &answers {
        let mut ds = Vec::new();
        a.expr.diff_names(&mut ds);
        for d in ds {
            let shape = a.expr.diff_shape(&d).unwrap();
            let (r, c) = (shape.rows.eval(&values.sizes).unwrap(), shape.cols.eval(&values.sizes).unwrap());
            let m = Mat::from_fn(r, c, |_, _| rng.random_range(-1.0..1.0));
            diff_json.insert(matdiff::print::numpy::py_name(&d), to_json(&m));
            values.diffs.insert(d.to_string(), m);
        }
    }
    let mats: serde_json::Map<String, serde_json::Value> =
        values.mats.iter().map(|(k, v)| (matdiff::print::numpy::py_name(k), to_json(v))).collect();
    let input = serde_json::json!({ "module": module, "functions": names, "mats": mats, "diffs": diff_json });
    let mut child = Command::new("python3")
        .args(["-c", DRIVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (CI installs it with numpy)");
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python failed:\n{}\n{module}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Vec<Vec<f64>>> = serde_json::from_slice(&out.stdout).unwrap();
    for (a, got) in answers.iter().zip(&results) {
        let expr = match a.kind {
            matdiff::ast::QueryKind::Shape => a.function.clone().unwrap(),
            _ => a.expr.clone(),
        };
        let want = Evaluator::new(&s.env, &values).eval(&expr).unwrap();
        assert_eq!((want.nrows(), want.ncols()), (got.len(), got[0].len()), "shape of {}", s.render(a));
        for i in 0..want.nrows() {
            for j in 0..want.ncols() {
                let (w, g) = (want[(i, j)], got[i][j]);
                assert!(
                    (w - g).abs() <= 1e-9 * w.abs().max(1.0),
                    "{}: entry ({i},{j}) numpy {g} vs {w}\n{module}",
                    s.render(a)
                );
            }
        }
    }
    answers.len()
}

const CASES: &[&str] = &[
    include_str!("../examples/backprop.mdiff"),
    include_str!("../examples/least_squares.mdiff"),
    include_str!("../examples/logistic.mdiff"),
    include_str!("../examples/three_layer.mdiff"),
    "x: n; A: n x n; grad(x^T A x, x); ∂(x^T A x)/∂xᵀ; d(x^T A x)",
    "E: n x n; grad(tr(E) + 1, E)",
    "A: n x n; grad(tr(A) + tr(A^2), A)",
    "A: n x n; grad(det(A^3), A); grad(logdet(A), A); grad(tr(A^-1), A)",
    "M: m x n; x: n; grad(sum(exp(M x)), x); jacobian(exp(M x), x)",
    "X: m x n; A: n x n; grad(tr(X A X^T), X); ∂(X A)/∂vec(X)^T",
    "X: m x n; B: m x n; grad(‖X - B‖², X); grad(‖X‖, X)",
    "A: n x n; X: n x n; grad(tr(A ⊗ X), X); grad(sum(kron(A, X)), X)",
    "x: n; grad(sum(relu(x) + abs(x) + softplus(x)), x); grad(sum(sqrt(x ∘ x + 1)), x)",
    "x: n; grad(sum(sin(x) ∘ cos(x)), x); grad(sum(log(x ∘ x + 1)), x)",
    "x: n; y: n; grad(sum(x ./ (y ∘ y + 1)), x); grad(sum(x .^ 3), x)",
    "A: n x n; v: n; grad(sum(diag(A)), A); grad(tr(diag(v) A), v); d(vec(A))",
    "A: n x n; B: n x n; ∂(A B)/∂vec(A)^T; ∂(A^T)/∂vec(A)^T",
    "s: scalar; A: n x n; grad(s^2 tr(A), s); grad(s tr(A), A); A / 2 + s A",
    "W: n x m; x: m; b: n; f: R -> R; h = f(W x + b); L = sum(h); grad(L, W); grad(L, b); ∂h/∂xᵀ",
    "A: 3 x 3 symmetric; x: 3; grad(x^T A x, x); grad(x^T A x, A); simplify(A^T - A + x x^T)",
    "X: m x n; w: n; y: m; p = σ(X w); L = sum(log(1 + exp(-(y ∘ (X w))))); grad(L, w); shape(X w)",
];

#[test]
fn generated_numpy_agrees_with_the_evaluator() {
    let mut n = 0;
    for case in CASES {
        n += agree(case, Options::default());
    }
    assert!(n >= 30, "only {n} queries");
}

#[test]
fn generated_numpy_under_numerator_layout_and_column_vec() {
    use matdiff::diff::chain::{Conventions, Layout};
    let options = Options {
        conventions: Conventions { layout: Layout::Numerator, order: matdiff::ir::VecOrder::Col },
        ..Options::default()
    };
    for case in CASES {
        agree(case, options);
    }
}

#[test]
fn gradients_build_no_kronecker_product_or_diagonal_matrix() {
    let mut s = Session::default();
    let answers = s.answers(include_str!("../examples/three_layer.mdiff")).unwrap();
    // Jacobians in Kronecker form are applied to vectors without building the product too.
    let module = s.numpy(&answers);
    assert!(!module.contains("np.kron"), "{module}");
    assert!(!module.contains("np.diag"), "{module}");
}
