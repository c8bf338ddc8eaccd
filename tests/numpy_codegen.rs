//! The generated NumPy code runs in Python and agrees with matdiff's own
//! evaluator at the same random values. Needs `python3` with `numpy`.

use matdiff::codegen::numpy::Identifiers;
use matdiff::eval::check::random_values;
use matdiff::eval::{Evaluator, Mat};
use matdiff::session::{Options, Session};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::process::Command;

const DRIVER: &str = r#"
import inspect, json, keyword, math, re, sys, unicodedata
import numpy as np
data = json.load(sys.stdin)
dtype = np.dtype(data["dtype"])
scope = {}
exec(data["module"], scope)
out = []
for name in data["functions"]:
    fn = scope[name]
    params = inspect.signature(fn).parameters
    for p in [name, *params]:
        assert p.isascii() and p.isidentifier() and not keyword.iskeyword(p), p
        assert unicodedata.normalize("NFKC", p) == p, p
    args, kwargs = [], {}
    for p, info in params.items():
        if info.kind == inspect.Parameter.KEYWORD_ONLY:
            kwargs[p] = data["sizes"][p]
        elif p in data["mats"]:
            args.append(np.array(data["mats"][p], dtype=dtype))
        elif p in data["diffs"]:
            args.append(np.array(data["diffs"][p], dtype=dtype))
        else:
            f, k = data["funcs"][p]
            args.append(user(f, k))
    r = fn(*args, **kwargs)
    assert isinstance(r, np.ndarray) and r.ndim == 2, (name, type(r))
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    assert r.dtype == (dtype if arrays else np.float64), (name, r.dtype)
    out.append(r.astype(float).tolist())
print(json.dumps(out))
"#;

fn to_json(m: &Mat) -> serde_json::Value {
    serde_json::json!((0..m.nrows()).map(|i| (0..m.ncols()).map(|j| m[(i, j)]).collect::<Vec<_>>()).collect::<Vec<_>>())
}

/// Runs the script's queries in NumPy and in Rust; returns how many agreed.
fn agree(script: &str, options: Options) -> usize {
    agree_in(script, options, "float64")
}

/// Like [`agree`], with inputs of the given NumPy dtype: the results must
/// have that dtype, and match the float64 evaluation within its precision.
fn agree_in(script: &str, options: Options, dtype: &str) -> usize {
    let mut s = Session::new(options);
    let answers = s.answers(script).unwrap_or_else(|e| panic!("{script}: {e}"));
    let module = s.numpy(&answers).unwrap_or_else(|e| panic!("{script}: {e}"));
    let ids = Identifiers::new(&s.env);
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
            diff_json.insert(ids.diff(&d), to_json(&m));
            values.diffs.insert(d.to_string(), m);
        }
    }
    let mats: serde_json::Map<String, serde_json::Value> =
        values.mats.iter().map(|(k, v)| (ids.name(k), to_json(v))).collect();
    let sizes: serde_json::Map<String, serde_json::Value> =
        values.sizes.iter().map(|(k, v)| (ids.size(k), serde_json::json!(v))).collect();
    let mut funcs = serde_json::Map::new();
    for (name, (b, _)) in &s.env.names {
        if matches!(b, matdiff::typeck::Binding::Func) {
            for k in 0..=4 {
                funcs.insert(ids.func(name, k), serde_json::json!([name, k]));
            }
        }
    }
    let input = serde_json::json!({
        "module": module, "functions": names, "mats": mats, "diffs": diff_json, "sizes": sizes, "dtype": dtype,
        "funcs": funcs,
    });
    let out = crate::python::run(&crate::python::with_user_functions(DRIVER), input.to_string());
    assert!(out.status.success(), "python failed:\n{}\n{module}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Vec<Vec<f64>>> = serde_json::from_slice(&out.stdout).unwrap();
    for (a, got) in answers.iter().zip(&results) {
        let expr = match a.kind() {
            matdiff::ast::QueryKind::Shape => a.function.clone(),
            _ => a.expr.clone(),
        };
        let want = Evaluator::new(&s.env, &values).eval(&expr).unwrap();
        assert_eq!((want.nrows(), want.ncols()), (got.len(), got[0].len()), "shape of {}", s.render(a));
        let largest = want.iter().fold(1.0f64, |m, w| m.max(w.abs()));
        for i in 0..want.nrows() {
            for j in 0..want.ncols() {
                let (w, g) = (want[(i, j)], got[i][j]);
                let ok = match dtype {
                    "float64" => (w - g).abs() <= 1e-9 * w.abs().max(1.0),
                    _ => (w - g).abs() <= 1e-3 * largest,
                };
                assert!(ok, "{}: entry ({i},{j}) numpy {g} vs {w}\n{module}", s.render(a));
            }
        }
    }
    answers.len()
}

/// Scripts whose every query's code is run (the framework tests reuse them).
pub(crate) const CASES: &[&str] = &[
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
    "X: m x n; W: n x k; b: 1 x k; Y: m x k; P = softmax(X W + b); L = -sum(Y ∘ log_softmax(X W + b)) / m; \
     grad(L, W); grad(L, b); jacobian(P, W); z: k; grad(logsumexp(z), z); hessian(logsumexp(z), z); \
     jacobian(logsumexp(X W), W)",
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
    let module = s.numpy(&answers).unwrap();
    assert!(!module.contains("np.kron"), "{module}");
    assert!(!module.contains("np.diag"), "{module}");
}

/// The parameter list of a generated function, as written after `def name(`.
fn signature<'a>(module: &'a str, function: &str) -> &'a str {
    let start = module.find(&format!("def {function}(")).unwrap_or_else(|| panic!("no {function}:\n{module}"));
    let rest = &module[start + function.len() + 5..];
    &rest[..rest.find("):").expect("end of the parameters")]
}

#[test]
fn python_identifiers_for_every_name() {
    // A query label with superscripts, Greek names, a name that is a Python
    // keyword, and names that meet once spelled in ASCII.
    let scripts = [
        "s: scalar; hessian(s^4, s); hessian(s⁴, s); grad(s³, s)",
        "λ: n; Λ: n; lam: n; x: n; g = λᵀ x + lamᵀ Λ; grad(g, λ); grad(g, Λ); grad(g, lam); d(g)",
        "lambda: n; def: n; None: n; grad(sum(lambda ∘ def) + sum(None), lambda); d(lambdaᵀ def)",
        "f: R -> R; f_prime: n; x: n; d_x: n; grad(sum(f(x) ∘ f_prime ∘ d_x), x); d(sum(f(x) + d_x))",
        "τ: scalar; ω: n x n; grad(τ tr(ω), τ); grad(τ tr(ω), ω)",
    ];
    for script in scripts {
        agree(script, Options::default());
    }
    let mut s = Session::default();
    let answers = s.answers(scripts[1]).unwrap();
    let module = s.numpy(&answers).unwrap();
    assert!(module.lines().filter(|l| l.starts_with("def ")).all(str::is_ascii), "{module}");
    // `lam` keeps its name; `Λ` is `Lambda`, and `λ`, whose ASCII name is taken, `lam_2`.
    assert_eq!(signature(&module, "grad_g_lam_2"), "x", "{module}");
    assert_eq!(signature(&module, "grad_g_lam"), "Lambda", "{module}");
    assert_eq!(signature(&module, "grad_g_Lambda"), "lam", "{module}");
}

#[test]
fn sizes_no_parameter_carries_are_keyword_arguments() {
    let script =
        "x: n; y: m; E: n x n; grad(sum(x), x); grad(tr(E) + 1, E); grad(sum((ones(n, 1) yᵀ) ∘ (ones(n, 1) yᵀ)), y); \
                  grad(sum(x) + sum(y), y); d(x xᵀ)";
    assert_eq!(agree(script, Options::default()), 5);
    let mut s = Session::default();
    let answers = s.answers(script).unwrap();
    let module = s.numpy(&answers).unwrap();
    assert_eq!(signature(&module, "grad_q1_x"), "*, n", "{module}");
    assert_eq!(signature(&module, "grad_q2_E"), "*, n", "{module}");
    assert_eq!(signature(&module, "grad_q3_y"), "y, *, n", "{module}");
    assert!(module.contains("    m = y.shape[0]\n"), "{module}");
}

#[test]
fn sizes_with_digits_and_products_come_from_shapes() {
    let script = "x: n1; A: n1 x n1; B: m2 x k; grad(tr(A), A); grad(sum(x), x); ∂(A ⊗ B)/∂vec(B)^T; \
                  v: 2 x 1; ∂(v ⊗ A)/∂vec(A)^T; ∂(A ⊗ A)/∂vec(A)^T";
    agree(script, Options::default());
    let mut s = Session::default();
    let answers = s.answers(script).unwrap();
    let module = s.numpy(&answers).unwrap();
    assert!(module.contains("np.eye(n1, dtype=_dtype)"), "{module}");
    assert!(!module.contains("(1 * n") && !module.contains(" 1 * n"), "{module}");
}

#[test]
fn float32_inputs_give_float32_outputs() {
    for case in CASES {
        agree_in(case, Options::default(), "float32");
    }
    let mut s = Session::default();
    let answers = s.answers(include_str!("../examples/backprop.mdiff")).unwrap();
    let module = s.numpy(&answers).unwrap();
    assert!(!module.contains("dtype=float)"), "{module}");
    assert!(!module.contains("np.array([["), "{module}");
}

/// Runs a generated module's first function in Python on random 2×2 inputs and
/// returns what `check` (Python, with `r` the result and `args` the inputs)
/// prints, and the peak memory in MiB.
fn run_python(module: &str, check: &str) -> (String, u64) {
    let program = format!(
        "{module}\n\nimport inspect, resource\nrng = np.random.default_rng(1)\n\
         fn = [v for k, v in list(globals().items()) if k.startswith(('grad_', 'jacobian_'))][0]\n\
         args = {{p: rng.uniform(0.5, 1.5, (2, 2)) for p in inspect.signature(fn).parameters}}\n\
         r = fn(**args)\n{check}\n\
         print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    );
    let out = Command::new("python3").args(["-c", &program]).output().expect("python3 runs");
    assert!(out.status.success(), "{}\n{module}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let mib = lines.pop().unwrap().parse().unwrap();
    (lines.join("\n"), mib)
}

#[test]
fn kronecker_tower_gradient_builds_no_kronecker_product() {
    let decl = "X: 2 x 2; A1, A2, A3, A4, A5, A6, A7, A8: 2 x 2";
    let tower = "A1 ⊗ A2 ⊗ A3 ⊗ A4 ⊗ A5 ⊗ A6 ⊗ A7 ⊗ A8";
    // sum(K ⊗ X) = sum(K) sum(X) and tr(K ⊗ X) = tr(K) tr(X), with
    // sum(K) = ∏ sum(Aᵢ) and tr(K) = ∏ tr(Aᵢ).
    for (query, want) in [
        (
            format!("grad(sum({tower} ⊗ X), X)"),
            "np.prod([args[f'A{i}'].sum() for i in range(1, 9)]) * np.ones((2, 2))".to_string(),
        ),
        (
            format!("grad(sum(X ⊗ {tower}), X)"),
            "np.prod([args[f'A{i}'].sum() for i in range(1, 9)]) * np.ones((2, 2))".to_string(),
        ),
        (
            format!("grad(tr({tower} ⊗ X), X)"),
            "np.prod([np.trace(args[f'A{i}']) for i in range(1, 9)]) * np.eye(2)".to_string(),
        ),
    ] {
        let mut s = Session::default();
        let answers = s.answers(&format!("{decl}; {query}")).unwrap();
        let module = s.numpy(&answers).unwrap();
        assert!(!module.contains("_commutation("), "{module}");
        let (printed, mib) = run_python(&module, &format!("print(np.allclose(r, {want}, rtol=1e-9))"));
        assert_eq!(printed, "True", "{query}\n{module}");
        assert!(mib < 400, "{query}: {mib} MiB\n{module}");
    }
}

#[test]
fn oversized_arrays_are_refused_at_generation_time() {
    let mut s = Session::default();
    let answers = s.answers("Y: 64 x 64; ∂(Y ⊗ Y)/∂vec(Y)^T").unwrap();
    let err = s.numpy(&answers).unwrap_err();
    assert!(matches!(err, matdiff::error::Error::Limit { .. }), "{err}");
    assert!(err.to_string().contains("4096×16777216"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_matdiff"))
        .args(["--format", "numpy", "-e", "Y: 64 x 64; ∂(Y ⊗ Y)/∂vec(Y)^T"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn softmax_log_softmax_logsumexp_sigmoid_and_softplus_never_overflow() {
    let mut s = Session::default();
    let answers = s
        .answers(
            "X: 2 x 3; z: 3; softmax(X); log_softmax(X); logsumexp(X); softmax(z); log_softmax(z); logsumexp(z); \
             σ(X); softplus(X)",
        )
        .unwrap();
    let module = s.numpy(&answers).unwrap();
    // Reference values written out by hand for inputs of ±1000.
    let check = r#"
X = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0]])
z = np.array([[1000.0], [999.0], [-1000.0]])
l2 = np.log1p(np.exp(-1.0))
want = [
    np.array([[1.0, 0.0, 0.0], [1/3, 1/3, 1/3]]),
    np.array([[0.0, -2000.0, -1000.0], [-np.log(3)] * 3]),
    np.array([[1000.0], [-1000.0 + np.log(3)]]),
    np.array([[1 / (1 + np.exp(-1.0))], [1 / (1 + np.exp(1.0))], [0.0]]),
    np.array([[-l2], [-1.0 - l2], [-2000.0 - l2]]),
    np.array([[1000.0 + l2]]),
    np.array([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]]),
    np.array([[1000.0, 0.0, np.log(2.0)], [0.0, 0.0, 0.0]]),
]
fns = [v for k, v in sorted(globals().items()) if k.startswith('expr_')]
fns.sort(key=lambda f: int(f.__name__.split('_')[1]))
assert len(fns) == len(want), len(fns)
with np.errstate(over='raise', invalid='raise', divide='raise', under='ignore'):
    for f, w in zip(fns, want):
        args = {p: {'X': X, 'z': z}[p] for p in inspect.signature(f).parameters}
        r = f(**args)
        assert np.all(np.isfinite(r)), (f.__name__, r)
        assert np.allclose(r, w, rtol=1e-12, atol=1e-12), (f.__name__, r, w)
print("ok")
"#;
    let program = format!("{module}\n\nimport inspect\n{check}");
    let out = Command::new("python3").args(["-c", &program]).output().expect("python3 runs");
    assert!(out.status.success(), "{}\n{module}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn results_are_writable_arrays_of_their_own() {
    // ∂sum(A ∘ B)/∂A is B itself, and a broadcast row is a read-only view:
    // the results must still be fresh, writable arrays.
    for script in ["A, B: 2 x 2; grad(sum(A ∘ B), A)", "X: 2 x 2; r: 1 x 2; grad(sum(X ∘ (ones(2, 1) r)), X)"] {
        let mut s = Session::default();
        let answers = s.answers(script).unwrap();
        let module = s.numpy(&answers).unwrap();
        let (out, _) = run_python(
            &module,
            "assert r.flags.writeable and r.flags.owndata or r.base is None, r.flags\n\
             assert not any(np.shares_memory(r, a) for a in args.values())\n\
             r *= 0\nprint('ok')",
        );
        assert_eq!(out, "ok", "{script}");
    }
}
