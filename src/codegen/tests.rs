//! The generator does not depend on NumPy: a second backend, defined here,
//! spells every operation as a prefix call, and gets the same functions.

use super::*;
use crate::session::Session;

/// A backend that writes every operation as a call (`matmul(a, b)`), with
/// none of NumPy's spellings.
struct Prefix;

impl Backend for Prefix {
    fn name(&self) -> &str {
        "Prefix"
    }
    fn reserved(&self) -> &[&str] {
        &[]
    }
    fn header(&self) -> &str {
        "# prefix\n"
    }
    fn helpers(&self) -> Vec<(&str, &str)> {
        vec![("_unused", "def _unused():\n    pass\n"), ("_K", "def _K(r, c, order):\n    pass\n")]
    }
    fn builtin(&self, f: &Builtin) -> Option<&str> {
        (f.ascii == "exp").then_some("exp({x})")
    }
    fn call(&self, f: &str, x: &str) -> String {
        format!("call({f}, {x})")
    }
    fn number(&self, r: &BigRational) -> String {
        format!("num({r})")
    }
    fn signature(&self, name: &str, positional: &[String], keyword: &[String]) -> String {
        format!("def {name}({}; {}):", positional.join(", "), keyword.join(", "))
    }
    fn docstring(&self, doc: &str) -> String {
        format!("doc({doc:?})")
    }
    fn dtype_line(&self, arrays: &[String]) -> String {
        format!("_dtype = dtype_of({})", arrays.join(", "))
    }
    fn assign(&self, name: &str, value: &str) -> String {
        format!("let({name}, {value})")
    }
    fn shape(&self, x: &str, axis: usize) -> String {
        format!("size({x}, {axis})")
    }
    fn array(&self, x: &str) -> String {
        format!("cast({x})")
    }
    fn filled(&self, x: &str, rows: &str, cols: &str) -> String {
        format!("fill({rows}, {cols}, {x})")
    }
    fn eye(&self, n: &str) -> String {
        format!("eye({n})")
    }
    fn zeros(&self, rows: &str, cols: &str) -> String {
        format!("zeros({rows}, {cols})")
    }
    fn ones(&self, rows: &str, cols: &str) -> String {
        format!("ones({rows}, {cols})")
    }
    fn full(&self, rows: &str, cols: &str, value: &str) -> String {
        format!("full({rows}, {cols}, {value})")
    }
    fn commutation(&self, r: &str, c: &str, order: VecOrder) -> String {
        format!("_K({r}, {c}, {order:?})")
    }
    fn matmul(&self, a: &str, b: &str) -> String {
        format!("matmul({a}, {b})")
    }
    fn transpose(&self, x: &str) -> String {
        format!("t({x})")
    }
    fn add(&self, terms: &[(Sign, String)]) -> String {
        let terms: Vec<String> =
            terms.iter().map(|(s, t)| if *s == Sign::Minus { format!("neg({t})") } else { t.clone() }).collect();
        format!("add({})", terms.join(", "))
    }
    fn mul(&self, a: &str, b: &str) -> String {
        format!("mul({a}, {b})")
    }
    fn div(&self, a: &str, b: &str) -> String {
        format!("div({a}, {b})")
    }
    fn pow(&self, x: &str, k: &BigRational) -> String {
        format!("pow({x}, {k})")
    }
    fn matrix_power(&self, x: &str, k: i64) -> String {
        format!("mpow({x}, {k})")
    }
    fn inv(&self, x: &str) -> String {
        format!("inv({x})")
    }
    fn kron(&self, a: &str, b: &str) -> String {
        format!("kron({a}, {b})")
    }
    fn vec(&self, x: &str, order: VecOrder) -> String {
        format!("vec({x}, {order:?})")
    }
    fn unvec(&self, x: &str, rows: &str, cols: &str, order: VecOrder) -> String {
        format!("unvec({x}, {rows}, {cols}, {order:?})")
    }
    fn reshape(&self, x: &str, dims: &[String]) -> String {
        format!("reshape({x}, [{}])", dims.join(", "))
    }
    fn swap_axes(&self, x: &str) -> String {
        format!("swap({x})")
    }
    fn column(&self, x: &str) -> String {
        format!("col({x})")
    }
    fn row(&self, x: &str) -> String {
        format!("row({x})")
    }
    fn diag_matrix(&self, v: &str) -> String {
        format!("diagm({v})")
    }
    fn diagonal(&self, x: &str) -> String {
        format!("diagv({x})")
    }
    fn trace(&self, x: &str) -> String {
        format!("tr({x})")
    }
    fn det(&self, x: &str) -> String {
        format!("det({x})")
    }
    fn logdet(&self, x: &str) -> String {
        format!("logdet({x})")
    }
    fn sum(&self, x: &str) -> String {
        format!("sum({x})")
    }
    fn sum_axis(&self, x: &str, axis: usize) -> String {
        format!("sum_axis({x}, {axis})")
    }
    fn broadcast(&self, x: &str, rows: &str, cols: &str) -> String {
        format!("spread({x}, {rows}, {cols})")
    }
    fn norm(&self, x: &str) -> String {
        format!("norm({x})")
    }
}

/// The functions for a script's queries, named `q1`, `q2`, …
fn functions(script: &str) -> (Session, Vec<Function>) {
    let mut s = Session::default();
    let answers = s.answers(script).expect("script runs");
    let functions = answers
        .iter()
        .enumerate()
        .map(|(i, a)| Function {
            name: format!("q{}", i + 1),
            expr: a.expr.clone(),
            doc: "d".into(),
            span: a.span,
            adjoints: a.adjoints.clone(),
            gradients: vec![],
            adjoint_of: Default::default(),
            wrt: vec![],
        })
        .collect();
    (s, functions)
}

#[test]
fn a_second_backend_writes_the_same_functions_in_its_own_spelling() {
    let (s, fs) = functions("x: n; A: n x n; grad(x^T A x, x); grad(tr(A) + 1, A)");
    let code = module(&Prefix, &s.env, &fs).unwrap();
    assert_eq!(
        code,
        "# prefix\n\
         def q1(A, x; ):\n    doc(\"d\")\n    _dtype = dtype_of(A, x)\n    let(n, size(A, 0))\n    \
         return cast(matmul(add(A, t(A)), x))\n\n\n\
         def q2(; n):\n    doc(\"d\")\n    _dtype = dtype_of()\n    return cast(eye(n))\n"
    );
    // The parameters are the backend's neither in number nor in order.
    let numpy = numpy::module(&s.env, &fs).unwrap();
    assert!(numpy.contains("def q1(A, x):") && numpy.contains("def q2(*, n):"), "{numpy}");
    assert_eq!(parameters(&s.env, &fs[1].expr), ["*", "n"]);
}

#[test]
fn structured_factors_are_applied_through_the_backend() {
    // diag(p) and vec(A)ᵀ ⊗ I are applied by broadcasting and reshapes,
    // never built; a definition is computed once; a commutation matrix that is the
    // answer is built by the backend's helper, which the module then defines.
    let script = "X: m x n; w: n; p = exp(X w); ∂p/∂wᵀ; A: n x n; Y: n x n; grad(sum(kron(A, Y) ∘ kron(Y, A)), Y); \
                  ∂(Aᵀ)/∂vec(A)ᵀ";
    let (s, fs) = functions(script);
    let code = module(&Prefix, &s.env, &fs).unwrap();
    let q1 = "def q1(X, w; ):\n    doc(\"d\")\n    _dtype = dtype_of(X, w)\n    let(m, size(X, 0))\n    \
              let(n, size(X, 1))\n    let(p, exp(matmul(X, w)))\n    return cast(mul(t(X), row(p)))\n";
    assert!(code.contains(q1), "{code}");
    assert!(code.contains("swap(reshape(") && code.contains("vec(A, Row)"), "{code}");
    // The forward value `kron(A, Y)` is computed; no Kronecker product
    // with an identity, and no diagonal matrix, is ever built.
    assert!(!code.contains("diagm(") && !code.contains("kron(eye(") && !code.contains(", eye("), "{code}");
    assert!(code.contains("return cast(t(_K(n, n, Row)))") && code.starts_with("# prefix\ndef _K("), "{code}");
    assert!(!code.contains("_unused") && !code.contains("np.") && !code.contains(" @ "), "{code}");
    // Every backend's function has the generator's parameters, in order.
    for f in &fs {
        let params = parameters(&s.env, &f.expr);
        let (positional, keyword) = match params.iter().position(|p| p == "*") {
            Some(i) => (&params[..i], &params[i + 1..]),
            None => (&params[..], &[][..]),
        };
        let def = format!("def {}({}; {}):", f.name, positional.join(", "), keyword.join(", "));
        assert!(code.contains(&def), "{def}\n{code}");
    }
}

#[test]
fn a_built_in_function_the_backend_cannot_spell_is_an_error() {
    let (s, fs) = functions("x: n; grad(sum(tanh(x)), x)");
    let err = module(&Prefix, &s.env, &fs).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("Prefix") && err.to_string().contains("tanh"), "{err}");
}

#[test]
fn every_backend_spells_every_built_in_function_and_reserves_its_aliases() {
    let backends: [&dyn Backend; 3] = [&numpy::NumPy, &jax::Jax, &torch::Torch];
    for b in backends {
        assert!(b.reserved().iter().all(|r| RESERVED.contains(r)), "{}", b.name());
        let helpers: Vec<&str> = b.helpers().iter().map(|(name, _)| *name).collect();
        for f in crate::functions::BUILTINS {
            let code = b.builtin(f).unwrap_or_else(|| panic!("{} cannot spell {}", b.name(), f.ascii));
            assert!(code.contains("{x}"), "{}: {code}", b.name());
            // A helper the spelling calls is one the backend defines.
            if let Some(call) = code.strip_prefix('_') {
                let name = format!("_{}", call.split('(').next().unwrap());
                assert!(helpers.contains(&name.as_str()), "{}: {name}", b.name());
            }
        }
    }
    // Each backend's code names its own module only.
    let (s, fs) =
        functions("X: m x n; w: n; grad(sum(softplus(X w)) + sum(softmax(X)), w); grad(tr(kron(X, X)ᵀ kron(X, X)), X)");
    for (b, alias, others) in [
        (&numpy::NumPy as &dyn Backend, "np.", ["jnp.", "torch."]),
        (&jax::Jax, "jnp.", [" np.", "torch."]),
        (&torch::Torch, "torch.", ["np.", "jnp."]),
    ] {
        let code = module(b, &s.env, &fs).unwrap();
        assert!(code.contains(alias), "{code}");
        assert!(others.iter().all(|o| !code.contains(o)), "{code}");
    }
}

#[test]
fn a_product_chain_is_multiplied_in_the_order_of_fewest_operations() {
    // (2×50)(50×3)(3×40): from the left, 540 multiplications; from the
    // right, 10000.
    let (s, fs) = functions("A: 2 x 50; B: 50 x 3; C: 3 x 40; A B C");
    let code = module(&Prefix, &s.env, &fs).unwrap();
    assert!(code.contains("matmul(matmul(A, B), C)"), "{code}");
    let (s, fs) = functions("A: 40 x 3; B: 3 x 50; C: 50 x 2; A B C");
    let code = module(&Prefix, &s.env, &fs).unwrap();
    assert!(code.contains("matmul(A, matmul(B, C))"), "{code}");
    // Orders that cost alike multiply from the right, as backpropagation
    // does: the transposed input multiplies a product of untransposed ones.
    let (s, fs) = functions("X: T x d; S: T x T; K: T x d; Xᵀ S K");
    let code = module(&Prefix, &s.env, &fs).unwrap();
    assert!(code.contains("matmul(t(X), matmul(S, K))"), "{code}");
}

/// The Python identifiers of a line of code.
fn identifiers(line: &str) -> Vec<&str> {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|t| !t.is_empty()).collect()
}

#[test]
fn a_backward_program_releases_each_array_after_its_last_use() {
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/transformer_block.mdiff"))
        .expect("example");
    let script = script.lines().filter(|l| !l.starts_with('∂')).collect::<Vec<_>>().join("\n")
        + "\n∂L/∂(Wq, Wk, Wv, γ1, β1, W1, b1, W2, b2, γ2, β2)\n";
    let (s, fs) = programs(&script);
    assert_eq!(fs.len(), 1);
    for b in [&numpy::NumPy as &dyn Backend, &torch::Torch] {
        let code = module(b, &s.env, &fs).unwrap();
        let body: Vec<&str> = code.lines().skip_while(|l| !l.starts_with("def value_and_grad_L")).collect();
        // Whether a line assigns to `name` (alone, or as one of a tuple).
        let binds = |l: &str, name: &str| {
            l.starts_with("    ") && l.split_once(" = ").is_some_and(|(to, _)| to.trim().split(", ").any(|t| t == name))
        };
        let mut released = 0;
        for (i, line) in body.iter().enumerate() {
            let Some(names) = line.trim().strip_prefix("del ") else { continue };
            for name in names.split(", ") {
                released += 1;
                // Bound before, used before, and never named again.
                assert!(body[..i].iter().any(|l| binds(l, name)), "{name} is not bound before\n{code}");
                assert!(body[i + 1..].iter().all(|l| !identifiers(l).contains(&name)), "{name} used after del\n{code}");
            }
        }
        // The forward values and adjoints, not the parameters or sizes.
        assert!(released >= 20, "{released} released\n{code}");
        // Each gradient is computed when its adjoint is: ∂L/∂β2 right
        // after δZ, long before the attention's.
        let at = |name: &str| body.iter().position(|l| binds(l, name)).unwrap_or_else(|| panic!("{name}\n{code}"));
        assert!(at("_g11") <= at("delta_H2") && at("delta_H1") < at("_g3"), "{code}");
    }
    let jax = module(&jax::Jax, &s.env, &fs).unwrap();
    assert!(!jax.contains("del "), "{jax}");
}

#[test]
fn pytorch_adds_a_product_into_a_sum_in_one_operation() {
    let (s, fs) = functions("X: n x k; W: k x m; b: 1 x m; Y, Z, V: n x m; X W + ones(n, 1) b; Y - 2 X W; Y ∘ Z + V");
    let code = torch::module(&s.env, &fs).unwrap();
    assert!(code.contains("torch.addmm(b.expand(n, m), X, W)"), "{code}");
    assert!(code.contains("torch.addmm(Y, X, W, alpha=-2.0)"), "{code}");
    assert!(code.contains("torch.addcmul(V, Y, Z)"), "{code}");
    // NumPy has no such operation.
    let numpy = numpy::module(&s.env, &fs).unwrap();
    assert!(!numpy.contains("addmm") && !numpy.contains("addcmul"), "{numpy}");
}

#[test]
fn factors_of_numbers_and_sizes_are_python_numbers() {
    // No array is built for `1 / sqrt(n)` or `2 / n`, and a Python number
    // keeps the dtype of the array it scales.
    let (s, fs) = functions("X: n x m; Y = X / sqrt(n) + (2 / n) X; Y");
    let code = numpy::module(&s.env, &fs).unwrap();
    assert!(code.contains("Y = ((X / (n ** 0.5)) + ((2.0 / n) * X))"), "{code}");
    assert!(!code.contains("np.full") && !code.contains("np.sqrt"), "{code}");
}

/// A session that ran `script`, and a function for each backward program.
fn programs(script: &str) -> (Session, Vec<Function>) {
    let mut s = Session::default();
    let items: Vec<Item> = s
        .run(script)
        .expect("script runs")
        .into_iter()
        .filter_map(|o| match o {
            crate::session::Outcome::Backward(b) => Some(Item::Backward(b)),
            _ => None,
        })
        .collect();
    let fs = functions_of(&s.env, &items);
    (s, fs)
}

/// The PyTorch module of a script's backward programs.
fn torch_program(script: &str) -> String {
    let (s, fs) = programs(script);
    torch::module(&s.env, &fs).unwrap()
}

#[test]
fn pytorch_computes_a_written_out_layer_norms_backward_in_one_call() {
    let decl = "X: T x d; W: d x d; b0, γ, β: 1 x d; Y: T x d; ε: scalar; H = X W + b0";
    let loss = "L = ‖Z - Y‖²; ∂L/∂(W, b0)";
    let fused = |norm: &str| {
        let code = torch_program(&format!("{decl}; {norm}; {loss}"));
        code.lines().any(|l| l.trim() == "delta_H = _layer_norm_backward(delta_Z, C, s, gamma)")
            || code.lines().any(|l| l.trim() == "delta_H = _layer_norm_backward(delta_Z, C, s, None)")
    };
    // As the examples write it, with the mean and variance named, with no
    // gain or bias, and with the square as a power.
    for norm in [
        "C = H - H ones(d, 1) / d; s = sqrt((C ∘ C) ones(d, 1) / d + ε); Z = C ./ s ∘ γ + β",
        "μ = H ones(d, 1) / d; C = H - μ; v = (C ∘ C) ones(d, 1) / d; s = sqrt(v + ε); Xn = C ./ s; Z = Xn ∘ γ + β",
        "C = H - H ones(d, 1) / d; s = sqrt(ε + (C .^ 2) ones(d, 1) / d); Z = β + γ ∘ (C ./ s)",
        "C = H - H ones(d, 1) / d; s = sqrt((C ∘ C) ones(d, 1) / d + ε); Z = C ./ s",
    ] {
        assert!(fused(norm), "{norm}\n{}", torch_program(&format!("{decl}; {norm}; {loss}")));
    }
    // The gain's and bias's gradients come from the same call, unless they
    // reach the loss another way too.
    let norm = "C = H - H ones(d, 1) / d; s = sqrt((C ∘ C) ones(d, 1) / d + ε); Z = C ./ s ∘ γ + β";
    for (rest, line) in [
        ("L = ‖Z - Y‖²", "delta_H, _g3, _g4 = _layer_norm_backward(delta_Z, C, s, gamma, params=True)"),
        (
            "O = Z ∘ Z + ones(T, 1) β; L = ‖O - Y‖²",
            "delta_H, _g3, _ = _layer_norm_backward(delta_Z, C, s, gamma, params=True)",
        ),
        ("L = ‖Z - Y‖² + sum(γ)", "delta_H, _, _g4 = _layer_norm_backward(delta_Z, C, s, gamma, params=True)"),
        ("L = ‖Z - Y‖² + sum(γ) + sum(β)", "delta_H = _layer_norm_backward(delta_Z, C, s, gamma)"),
    ] {
        let code = torch_program(&format!("{decl}; {norm}; {rest}; ∂L/∂(W, b0, γ, β)"));
        assert!(code.lines().any(|l| l.trim() == line), "{rest}\n{code}");
        let returned = code.lines().rev().find(|l| l.trim_start().starts_with("return ")).unwrap();
        for k in ["_g3", "_g4"] {
            if line.contains(k) {
                assert!(returned.contains(&format!("{k}.reshape(1, d)")), "{returned}");
            }
        }
    }
    let shared = torch_program(&format!("{decl}; C = H - H ones(d, 1) / d; s = sqrt((C ∘ C) ones(d, 1) / d + ε); Z = C ./ s ∘ γ + γ; L = ‖Z - Y‖²; ∂L/∂(W, b0, γ)"));
    assert!(shared.contains("delta_H = _layer_norm_backward(delta_Z, C, s, gamma)\n"), "{shared}");
    // Not a layer norm's backward alone: H, C or s reaches the loss another
    // way too, the gain depends on H; or it is not a layer norm: the variance
    // is not of C, the mean is by columns.
    let norm = "C = H - H ones(d, 1) / d; s = sqrt((C ∘ C) ones(d, 1) / d + ε); Z = C ./ s ∘ γ + β";
    let all = "∂L/∂(W, b0, γ, β)";
    for script in [
        format!("{norm}; O = Z ∘ Z + H; L = ‖O - Y‖²; {all}"),
        format!("{norm}; O = Z ∘ C; L = ‖O - Y‖²; {all}"),
        format!("{norm}; O = Z ./ (s ones(1, d)); L = ‖O - Y‖²; {all}"),
        format!("{norm}; L = ‖Z - Y‖² + sum(H); {all}"),
        format!("{norm}; L = ‖Z - Y‖² + sum(C); {all}"),
        format!("g2 = γ + ones(1, T) H / T; C = H - H ones(d, 1) / d; s = sqrt((C ∘ C) ones(d, 1) / d + ε); Z = C ./ s ∘ g2 + β; L = ‖Z - Y‖²; {all}"),
        format!("C = H - H ones(d, 1) / d; s = sqrt((H ∘ H) ones(d, 1) / d + ε); Z = C ./ s ∘ γ + β; L = ‖Z - Y‖²; {all}"),
        format!("C = H - ones(T, 1) ones(1, T) H / T; s = sqrt((C ∘ C) ones(d, 1) / d + ε); Z = C ./ s ∘ γ + β; L = ‖Z - Y‖²; {all}"),
    ] {
        let code = torch_program(&format!("{decl}; {script}"));
        assert!(code.contains("delta_H = "), "{script}\n{code}");
        assert!(!code.contains("= _layer_norm_backward("), "{script}\n{code}");
    }
    // NumPy and JAX write the chain rule's form.
    let script = format!("{decl}; C = H - H ones(d, 1) / d; s = sqrt((C ∘ C) ones(d, 1) / d + ε); Z = C ./ s; {loss}");
    let (s, fs) = programs(&script);
    assert!(!numpy::module(&s.env, &fs).unwrap().contains("layer_norm"));
    assert!(!jax::module(&s.env, &fs).unwrap().contains("layer_norm"));
}
