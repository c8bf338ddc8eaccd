//! The JAX and PyTorch code (`--format jax`, `--format torch`), run in
//! Python:
//!
//! - every example's gradients, single and as the backward program
//!   `value_and_grad_L`, against `jax.grad` and `torch.autograd.grad` of a
//!   forward pass written by hand here, in float64 and float32, and under
//!   `jax.jit`; the generated code must itself be differentiable, keep its
//!   inputs untouched, and (PyTorch) build nothing off its inputs' device;
//! - a fixed list of scripts and a sample of the engine's random scripts
//!   (`common/weak.rs`), against the NumPy code of the same queries on the
//!   same inputs.
//!
//! These tests need `python3` with `jax` and `torch`. A framework that
//! cannot be imported is skipped, saying so, unless the environment variable
//! `MATDIFF_REQUIRE_FRAMEWORKS` is set (CI sets it): then it is a failure.

use matdiff::codegen::{Backend, Identifiers, Item};
use matdiff::diff::chain::{Conventions, Layout};
use matdiff::eval::check::random_values;
use matdiff::eval::Mat;
use matdiff::ir::VecOrder;
use matdiff::session::{Format, Options, Outcome, Session};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::OnceLock;

/// The frameworks under test: the name the drivers know them by, and the
/// format that writes their code.
const FRAMEWORKS: &[(&str, Format)] = &[("jax", Format::Jax), ("torch", Format::Torch)];

/// Whether `python3` can import each framework: the names of those it can.
/// A missing one is skipped with a message, or fails the test when
/// `MATDIFF_REQUIRE_FRAMEWORKS` is set.
fn available(test: &str) -> Vec<&'static str> {
    static FOUND: OnceLock<Vec<(&'static str, Result<(), String>)>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        FRAMEWORKS
            .iter()
            .map(|(name, _)| {
                let out = std::process::Command::new("python3").args(["-c", &format!("import {name}")]).output();
                let ok = match out {
                    Ok(o) if o.status.success() => Ok(()),
                    Ok(o) => Err(String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").to_string()),
                    Err(e) => Err(format!("python3 does not run: {e}")),
                };
                (*name, ok)
            })
            .collect()
    });
    let required = std::env::var_os("MATDIFF_REQUIRE_FRAMEWORKS").is_some_and(|v| !v.is_empty());
    let mut names = Vec::new();
    for (name, ok) in found {
        match ok {
            Ok(()) => names.push(*name),
            Err(e) if required => {
                panic!("{test}: `import {name}` fails in python3 ({e}), and MATDIFF_REQUIRE_FRAMEWORKS is set")
            }
            Err(e) => eprintln!(
                "skipping the {name} part of {test}: `import {name}` fails in python3 ({e}); \
                 .ci/setup installs it, and MATDIFF_REQUIRE_FRAMEWORKS=1 makes this a failure"
            ),
        }
    }
    names
}

fn backend(framework: &str) -> &'static dyn Backend {
    let (_, format) = FRAMEWORKS.iter().find(|(n, _)| *n == framework).expect("a framework");
    format.backend().expect("a code format")
}

/// The names of a module's functions, in order (helpers, whose names start
/// with `_`, left out), and their `def` lines.
fn defs(module: &str) -> Vec<&str> {
    module.lines().filter(|l| l.starts_with("def ") && !l.starts_with("def _")).collect()
}

fn function_names(module: &str) -> Vec<String> {
    defs(module).iter().map(|l| l[4..].split('(').next().unwrap().to_string()).collect()
}

/// Runs a driver and returns its standard output, failing with its output
/// when it fails.
fn run_driver(what: &str, program: &str, input: serde_json::Value) -> String {
    let out = crate::python::run(program, input.to_string());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{what}:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Python that sets up both frameworks, one thread each and on the CPU (the
/// tests compare numbers; the device test uses PyTorch's `meta` device), and
/// defines for each the operations the hand-written forward passes use.
/// JAX compiles each operation it runs eagerly for each shape and dtype;
/// the compiled programs are kept in `JAX_CACHE` ([`framework_ops`]) for
/// the next run.
const FRAMEWORK_OPS: &str = r#"
import functools, inspect, json, math, os, sys
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
import numpy as np


class Jax:
    def __init__(self):
        import jax
        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_default_matmul_precision", "highest")
        jax.config.update("jax_compilation_cache_dir", JAX_CACHE)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        import jax.numpy as jnp
        self.jax, self.jnp = jax, jnp
        self.float64, self.float32 = jnp.float64, jnp.float32
        self.sin, self.exp, self.log, self.tanh, self.sqrt = jnp.sin, jnp.exp, jnp.log, jnp.tanh, jnp.sqrt
        self.sigmoid, self.relu = jax.nn.sigmoid, jax.nn.relu
        self.softmax = lambda x: jax.nn.softmax(x, axis=1)
        self.log_softmax = lambda x: jax.nn.log_softmax(x, axis=1)
        self.rowmean = lambda x: jnp.mean(x, axis=1, keepdims=True)
        self.total = jnp.sum

    def array(self, a, dtype):
        return self.jnp.asarray(a, dtype=dtype)

    def is_array(self, a):
        return isinstance(a, self.jax.Array)

    def numpy(self, a):
        return np.asarray(a)

    def dtype_name(self, a):
        return str(a.dtype)

    def default_dtype(self):
        return str(self.jnp.result_type(float))


class Torch:
    def __init__(self):
        import torch
        torch.set_num_threads(1)
        self.torch = torch
        self.float64, self.float32 = torch.float64, torch.float32
        self.sin, self.exp, self.log, self.tanh, self.sqrt = torch.sin, torch.exp, torch.log, torch.tanh, torch.sqrt
        self.sigmoid, self.relu = torch.sigmoid, torch.relu
        self.softmax = lambda x: torch.softmax(x, dim=1)
        self.log_softmax = lambda x: torch.log_softmax(x, dim=1)
        self.rowmean = lambda x: x.mean(dim=1, keepdim=True)
        self.total = torch.sum

    def array(self, a, dtype):
        return self.torch.tensor(np.asarray(a), dtype=dtype)

    def is_array(self, a):
        return isinstance(a, self.torch.Tensor)

    def numpy(self, a):
        return a.detach().cpu().numpy()

    def dtype_name(self, a):
        return str(a.dtype).replace("torch.", "")

    def default_dtype(self):
        return str(self.torch.get_default_dtype()).replace("torch.", "")


def framework(name):
    return {"jax": Jax, "torch": Torch}[name]()


def outputs(r):
    """A function's results as a list: the value, then each gradient of a backward program."""
    if isinstance(r, tuple):
        value, grads = r
        return [value, *grads]
    return [r]


def relative(got, want):
    """The largest entry error, relative to the largest entry of `want` (at least 1e-12)."""
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
"#;

/// Checks every gradient the examples' generated code computes against the
/// framework's own autodiff of the case's `forward(p, F)`, a forward pass
/// written by hand in the operations `F` ([`FRAMEWORK_OPS`]). A case defines
/// `SIZES` (sizes no array carries), `USER` (a declared function's name, or
/// its derivative's, to a function of `F` giving the callable), `inputs(rng)`
/// (a dict of float64 arrays named as in Python) and `forward(p, F)` (the
/// loss).
const EXAMPLES_DRIVER: &str = r#"
TOLERANCE = 1e-8      # float64, against autodiff in float64
TOLERANCE32 = 1e-4    # float32, against autodiff in float64


def layer_norm(x, g, b, eps, F):
    c = x - F.rowmean(x)
    return c / F.sqrt(F.rowmean(c * c) + eps) * g + b


SIZES, USER = {}, {}
CASE


data = json.load(sys.stdin)
params = data["params"]
p = inputs(np.random.default_rng(20250))
report = []


def arguments(fn, arrays, F):
    """The arrays, callables and sizes `fn` takes, by parameter name: (arrays, others)."""
    taken, other = {}, {}
    for name, info in inspect.signature(fn).parameters.items():
        if info.kind == inspect.Parameter.KEYWORD_ONLY:
            other[name] = SIZES[name]
        elif name in arrays:
            taken[name] = arrays[name]
        elif name in USER:
            other[name] = USER[name](F)
        else:
            raise AssertionError(f"{fn.__name__} takes {name}, which the reference does not define")
    return taken, other


def call(fn, arrays, F):
    taken, other = arguments(fn, arrays, F)
    return fn(**taken, **other)


def flat(a, order):
    return a.reshape(-1) if order == "row" else a.T.reshape(-1)


for name in data["frameworks"]:
    F = framework(name)
    a64 = {k: F.array(v, F.float64) for k, v in p.items()}
    a32 = {k: F.array(v, F.float32) for k, v in p.items()}

    # The reference: the framework's autodiff of the hand-written forward pass, in float64.
    if name == "jax":
        def loss_of(ps):
            return F.total(forward({**a64, **ps}, F))
        loss, grads = F.jax.value_and_grad(loss_of)({k: a64[k] for k in params})
        loss, want = float(loss), {k: np.asarray(grads[k]) for k in params}
    else:
        t = {k: v.clone().requires_grad_(k in params) for k, v in a64.items()}
        value = F.total(forward(t, F))
        grads = F.torch.autograd.grad(value, [t[k] for k in params])
        loss, want = float(value.detach()), {k: g.numpy() for k, g in zip(params, grads)}

    worst, worst32 = 0.0, 0.0
    for m in data["modules"]:
        if m["framework"] != name:
            continue
        where = f"{name}, {m['conventions']}"
        scope = {}
        exec(m["module"], scope)
        kept = {k: F.numpy(v).copy() for k, v in a64.items()}

        def agree(got, expected, dtype, what):
            global worst, worst32
            assert F.is_array(got), (where, what, type(got))
            assert F.dtype_name(got) == dtype, (where, what, F.dtype_name(got), dtype)
            got = F.numpy(got).astype(np.float64)
            assert got.shape == expected.shape, (where, what, got.shape, expected.shape)
            err = relative(got, expected)
            if dtype == "float64":
                worst = max(worst, err)
                limit = TOLERANCE
            else:
                worst32 = max(worst32, err)
                limit = TOLERANCE32
            if not err <= limit:
                np.set_printoptions(precision=10, linewidth=150)
                raise AssertionError(
                    f"{where}: {what} in {dtype}: relative error {err:.3e} > {limit:.0e}\n"
                    f"generated:\n{got}\n{name} autodiff:\n{expected}"
                )

        # Each single gradient: ∂L/∂X of X's shape, or ∂L/∂vec(X)ᵀ in the module's vec order.
        for entry in m["functions"]:
            fn = scope[entry["name"]]
            g = want[entry["param"]]
            if entry["kind"] == "vec":
                g = flat(g, m["vec"]).reshape((-1, 1) if m["layout"] == "denominator" else (1, -1))
            agree(call(fn, a64, F), g, "float64", entry["name"])
            agree(call(fn, a32, F), g, "float32", entry["name"])

        # The backward program: the loss and every gradient in the query's order.
        program = scope["value_and_grad_L"]
        for arrays, dtype in [(a64, "float64"), (a32, "float32")]:
            value, grads = call(program, arrays, F)
            agree(value, np.array([[loss]]), dtype, "value_and_grad_L: L")
            assert len(grads) == len(params), (where, len(grads))
            for k, g in zip(params, grads):
                agree(g, want[k], dtype, f"value_and_grad_L: ∂L/∂{k}")

        taken, other = arguments(program, a64, F)
        bound = functools.partial(program, **other)
        if name == "jax":
            # jax.jit of the program, and jax.grad through it.
            value, grads = F.jax.jit(bound)(**taken)
            agree(value, np.array([[loss]]), "float64", "jax.jit(value_and_grad_L): L")
            for k, g in zip(params, grads):
                agree(g, want[k], "float64", f"jax.jit(value_and_grad_L): ∂L/∂{k}")
            value32, _ = F.jax.jit(bound)(**{k: a32[k] for k in taken})
            agree(value32, np.array([[loss]]), "float32", "jax.jit(value_and_grad_L) in float32: L")
            through = F.jax.grad(lambda ps: F.total(bound(**{**taken, **ps})[0]))({k: taken[k] for k in params})
            for k in params:
                agree(through[k], want[k], "float64", f"jax.grad through value_and_grad_L: ∂L/∂{k}")
        else:
            # torch.autograd through the program.
            t = {k: v.clone().requires_grad_(k in params) for k, v in taken.items()}
            value, _ = bound(**t)
            through = F.torch.autograd.grad(value.sum(), [t[k] for k in params])
            for k, g in zip(params, through):
                agree(g, want[k], "float64", f"torch.autograd through value_and_grad_L: ∂L/∂{k}")
            # On another device: every constant must be built on the inputs' device.
            meta = {k: F.torch.empty(v.shape, dtype=F.float64, device="meta") for k, v in taken.items()}
            value, grads = bound(**meta)
            for k, g in zip(["L", *params], [value, *grads]):
                assert g.device.type == "meta" and g.dtype == F.float64, (where, "meta device", k, g.device, g.dtype)
            # No input was updated in place.
            for k, v in a64.items():
                assert np.array_equal(F.numpy(v), kept[k]), (where, f"the input {k} changed")
    report.append(f"{name}: largest relative error {worst:.1e} in float64, {worst32:.1e} in float32")
print(f"{len(params)} gradients, loss {loss:.6g}; " + "; ".join(report))
"#;

/// An example: its script, the variables of its backward program (as the
/// script spells them), those also asked as `∂L/∂vec(X)ᵀ`, and the Python
/// reference ([`EXAMPLES_DRIVER`]).
struct Example {
    name: &'static str,
    script: &'static str,
    params: &'static [&'static str],
    vec: &'static [&'static str],
    reference: &'static str,
}

/// Whether a line of a script is a query (examples end with their queries).
fn is_query(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with('∂') || l.starts_with("d(") || l.starts_with("grad(")
}

/// Runs an example's gradients under both conventions in each framework
/// present: the script's declarations and definitions, then `∂L/∂X` for
/// each variable, `∂L/∂vec(X)ᵀ` for those asked so, and `∂L/∂(all)`.
fn gradients_match_autodiff(example: &Example) {
    let frameworks = available(example.name);
    if frameworks.is_empty() {
        return;
    }
    let body: String = example.script.lines().take_while(|l| !is_query(l)).map(|l| format!("{l}\n")).collect();
    let mut script = body;
    for p in example.params {
        script.push_str(&format!("∂L/∂{p}\n"));
    }
    for v in example.vec {
        script.push_str(&format!("∂L/∂vec({v})ᵀ\n"));
    }
    script.push_str(&format!("∂L/∂({})\n", example.params.join(", ")));
    let numerator = Conventions { layout: Layout::Numerator, order: VecOrder::Col };
    let mut modules = Vec::new();
    let mut params = Vec::new();
    for (conventions, options) in [
        ("denominator layout, row vec", Options::default()),
        ("numerator layout, column vec", Options { conventions: numerator, ..Options::default() }),
    ] {
        let mut s = Session::new(options);
        let items: Vec<Item> = s
            .run(&script)
            .unwrap_or_else(|e| panic!("{}: {e}", example.name))
            .into_iter()
            .filter_map(|o| match o {
                Outcome::Answer(a) => Some(Item::Answer(a)),
                Outcome::Backward(b) => Some(Item::Backward(b)),
                _ => None,
            })
            .collect();
        let ids = Identifiers::new(&s.env);
        params = example.params.iter().map(|p| ids.name(p)).collect();
        let mut entries: Vec<(String, &str)> = params.iter().map(|p| (p.clone(), "grad")).collect();
        entries.extend(example.vec.iter().map(|v| (ids.name(v), "vec")));
        let numpy = s.numpy_of(&items).unwrap_or_else(|e| panic!("{}: {e}", example.name));
        for framework in &frameworks {
            let module = s.code_of(backend(framework), &items).unwrap_or_else(|e| panic!("{}: {e}", example.name));
            // The same functions, with the same parameters, as in NumPy.
            assert_eq!(defs(&module), defs(&numpy), "{}: {framework}", example.name);
            let names = function_names(&module);
            assert_eq!(names.len(), entries.len() + 1, "{}: {names:?}", example.name);
            assert_eq!(names.last().map(String::as_str), Some("value_and_grad_L"), "{}", example.name);
            let functions: Vec<serde_json::Value> = names
                .iter()
                .zip(&entries)
                .map(|(n, (param, kind))| serde_json::json!({ "name": n, "param": param, "kind": kind }))
                .collect();
            let vec = if s.options.conventions.order == VecOrder::Row { "row" } else { "col" };
            let layout = if s.options.conventions.layout == Layout::Denominator { "denominator" } else { "numerator" };
            modules.push(serde_json::json!({
                "framework": framework, "conventions": conventions, "vec": vec, "layout": layout, "module": module,
                "functions": functions,
            }));
        }
    }
    let input = serde_json::json!({ "frameworks": frameworks, "modules": modules, "params": params });
    let program = format!("{}\n{}", framework_ops(), EXAMPLES_DRIVER.replace("\nCASE\n", example.reference));
    let stdout = run_driver(example.name, &program, input);
    assert!(stdout.contains("largest relative error"), "{}: {stdout}", example.name);
    print!("{}: {stdout}", example.name);
}

#[test]
fn softmax_regression_gradients_match_autodiff() {
    gradients_match_autodiff(&Example {
        name: "softmax_regression",
        script: include_str!("../examples/softmax_regression.mdiff"),
        params: &["W", "b"],
        vec: &["W"],
        reference: r#"
def inputs(rng):
    N, d, k = 5, 4, 3
    return {
        "X": rng.normal(size=(N, d)),
        "Y": np.eye(k)[rng.integers(0, k, size=N)],
        "W": rng.normal(size=(d, k)),
        "b": rng.normal(size=(1, k)),
    }

def forward(p, F):
    Z = p["X"] @ p["W"] + p["b"]
    return -F.total(p["Y"] * F.log_softmax(Z)) / p["X"].shape[0]
"#,
    });
}

#[test]
fn mlp_gradients_match_autodiff() {
    gradients_match_autodiff(&Example {
        name: "mlp",
        script: include_str!("../examples/mlp.mdiff"),
        params: &["W1", "b1", "W2", "b2"],
        vec: &[],
        reference: r#"
def inputs(rng):
    N, d, h, k = 5, 4, 6, 3
    return {
        "X": rng.normal(size=(N, d)),
        "Y": rng.normal(size=(N, k)),
        "W1": rng.normal(size=(d, h)),
        "b1": rng.normal(size=(1, h)),
        "W2": rng.normal(size=(h, k)),
        "b2": rng.normal(size=(1, k)),
    }

def forward(p, F):
    H = F.relu(p["X"] @ p["W1"] + p["b1"])
    O = H @ p["W2"] + p["b2"]
    return F.total((O - p["Y"]) ** 2) / p["X"].shape[0]
"#,
    });
}

#[test]
fn layer_norm_gradients_match_autodiff() {
    gradients_match_autodiff(&Example {
        name: "layer_norm",
        script: include_str!("../examples/layer_norm.mdiff"),
        params: &["X", "g", "b"],
        vec: &[],
        reference: r#"
def inputs(rng):
    N, d = 5, 4
    return {
        "X": rng.normal(size=(N, d)),
        "g": rng.normal(size=(1, d)),
        "b": rng.normal(size=(1, d)),
        "Y": rng.normal(size=(N, d)),
        "epsilon": np.array([[1e-5]]),
    }

def forward(p, F):
    Z = layer_norm(p["X"], p["g"], p["b"], p["epsilon"], F)
    return F.total((Z - p["Y"]) ** 2) / p["X"].shape[0]
"#,
    });
}

#[test]
fn attention_gradients_match_autodiff() {
    gradients_match_autodiff(&Example {
        name: "attention",
        script: include_str!("../examples/attention.mdiff"),
        params: &["Wq", "Wk", "Wv"],
        vec: &["Wk"],
        reference: r#"
def inputs(rng):
    T, d, h = 5, 4, 3
    return {
        "X": rng.normal(size=(T, d)),
        "Wq": rng.normal(size=(d, h)),
        "Wk": rng.normal(size=(d, h)),
        "Wv": rng.normal(size=(d, h)),
        "Y": rng.normal(size=(T, h)),
    }

def forward(p, F):
    X = p["X"]
    Q, K, V = X @ p["Wq"], X @ p["Wk"], X @ p["Wv"]
    A = F.softmax(Q @ K.T / math.sqrt(Q.shape[1]))
    return F.total((A @ V - p["Y"]) ** 2) / X.shape[0]
"#,
    });
}

#[test]
fn transformer_block_gradients_match_autodiff() {
    gradients_match_autodiff(&Example {
        name: "transformer_block",
        script: include_str!("../examples/transformer_block.mdiff"),
        params: &["Wq", "Wk", "Wv", "γ1", "β1", "W1", "b1", "W2", "b2", "γ2", "β2"],
        vec: &[],
        reference: r#"
def inputs(rng):
    T, d, f = 5, 4, 6
    return {
        "X": rng.normal(size=(T, d)),
        "Y": rng.normal(size=(T, d)),
        "Wq": rng.normal(size=(d, d)) / 2,
        "Wk": rng.normal(size=(d, d)) / 2,
        "Wv": rng.normal(size=(d, d)) / 2,
        "gamma1": 1 + rng.normal(size=(1, d)) / 4,
        "beta1": rng.normal(size=(1, d)) / 4,
        "W1": rng.normal(size=(d, f)) / 2,
        "b1": rng.normal(size=(1, f)) / 2,
        "W2": rng.normal(size=(f, d)) / 2,
        "b2": rng.normal(size=(1, d)) / 2,
        "gamma2": 1 + rng.normal(size=(1, d)) / 4,
        "beta2": rng.normal(size=(1, d)) / 4,
        "epsilon": np.array([[1e-5]]),
    }

def forward(p, F):
    X, eps = p["X"], p["epsilon"]
    d = X.shape[1]
    Q, K, V = X @ p["Wq"], X @ p["Wk"], X @ p["Wv"]
    A = F.softmax(Q @ K.T / math.sqrt(d))
    N1 = layer_norm(X + A @ V, p["gamma1"], p["beta1"], eps, F)
    H2 = N1 + F.relu(N1 @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    Z = layer_norm(H2, p["gamma2"], p["beta2"], eps, F)
    return F.total((Z - p["Y"]) ** 2) / X.shape[0]
"#,
    });
}

#[test]
fn lstm_gradients_match_autodiff() {
    // Layer by layer, each over the whole sequence, where the script
    // interleaves the layers step by step.
    gradients_match_autodiff(&Example {
        name: "lstm",
        script: include_str!("../examples/lstm.mdiff"),
        params: &[
            "Wi1", "Wf1", "Wo1", "Wg1", "Ui1", "Uf1", "Uo1", "Ug1", "bi1", "bf1", "bo1", "bg1", "Wi2", "Wf2", "Wo2",
            "Wg2", "Ui2", "Uf2", "Uo2", "Ug2", "bi2", "bf2", "bo2", "bg2",
        ],
        vec: &[],
        reference: r#"
STEPS, LAYERS, GATES = 4, 2, "ifog"

def inputs(rng):
    d, n = 3, 4
    p = {f"x{t}": rng.normal(size=(1, d)) for t in range(1, STEPS + 1)}
    p["y"] = rng.normal(size=(1, n))
    for l in range(1, LAYERS + 1):
        p[f"h{l}_0"] = rng.normal(size=(1, n)) / 2
        p[f"c{l}_0"] = rng.normal(size=(1, n)) / 2
        for k in GATES:
            p[f"W{k}{l}"] = rng.normal(size=(d if l == 1 else n, n)) / 2
            p[f"U{k}{l}"] = rng.normal(size=(n, n)) / 2
            p[f"b{k}{l}"] = rng.normal(size=(1, n)) / 2
    return p

def forward(p, F):
    xs = [p[f"x{t}"] for t in range(1, STEPS + 1)]
    for l in range(1, LAYERS + 1):
        h, c, hs = p[f"h{l}_0"], p[f"c{l}_0"], []
        for x in xs:
            a = {k: x @ p[f"W{k}{l}"] + h @ p[f"U{k}{l}"] + p[f"b{k}{l}"] for k in GATES}
            i, f, o, g = F.sigmoid(a["i"]), F.sigmoid(a["f"]), F.sigmoid(a["o"]), F.tanh(a["g"])
            c = f * c + i * g
            h = o * F.tanh(c)
            hs.append(h)
        xs = hs
    return F.total((xs[-1] - p["y"]) ** 2)
"#,
    });
}

#[test]
fn backprop_gradients_match_autodiff() {
    // The declared f1 and f2 are tanh, their derivatives tanh's.
    gradients_match_autodiff(&Example {
        name: "backprop",
        script: include_str!("../examples/backprop.mdiff"),
        params: &["W1", "b1", "W2", "b2"],
        vec: &["W1", "W2"],
        reference: r#"
def tanh_derivative(F, k):
    if k == 0:
        return F.tanh
    if k == 1:
        return lambda x: 1 - F.tanh(x) ** 2
    return lambda x: -2 * F.tanh(x) * (1 - F.tanh(x) ** 2)

USER = {
    f + suffix: functools.partial(lambda F, k: tanh_derivative(F, k), k=k)
    for f in ["f1", "f2"]
    for k, suffix in enumerate(["", "_prime", "_prime2"])
}

def inputs(rng):
    return {
        "n0": rng.normal(size=(1, 2)),
        "W1": rng.normal(size=(2, 3)),
        "b1": rng.normal(size=(1, 3)),
        "W2": rng.normal(size=(3, 2)),
        "b2": rng.normal(size=(1, 2)),
        "y": rng.normal(size=(1, 2)),
    }

def forward(p, F):
    n1 = F.tanh(p["n0"] @ p["W1"] + p["b1"])
    n2 = F.tanh(n1 @ p["W2"] + p["b2"])
    return (n2 - p["y"]) @ (n2 - p["y"]).T
"#,
    });
}

#[test]
fn least_squares_gradients_match_autodiff() {
    gradients_match_autodiff(&Example {
        name: "least_squares",
        script: include_str!("../examples/least_squares.mdiff"),
        params: &["x", "A", "b", "λ"],
        vec: &["A"],
        reference: r#"
def inputs(rng):
    m, n = 5, 3
    return {
        "A": rng.normal(size=(m, n)),
        "b": rng.normal(size=(m, 1)),
        "x": rng.normal(size=(n, 1)),
        "lam": rng.uniform(0.5, 1.5, size=(1, 1)),
    }

def forward(p, F):
    r = p["A"] @ p["x"] - p["b"]
    return F.total(r * r) + p["lam"] * (p["x"].T @ p["x"])
"#,
    });
}

#[test]
fn logistic_gradients_match_autodiff() {
    gradients_match_autodiff(&Example {
        name: "logistic",
        script: include_str!("../examples/logistic.mdiff"),
        params: &["w", "X"],
        vec: &["w"],
        reference: r#"
def inputs(rng):
    m, n = 6, 3
    return {
        "X": rng.normal(size=(m, n)),
        "w": rng.normal(size=(n, 1)) / 2,
        "y": rng.uniform(0.0, 1.0, size=(m, 1)),
    }

def forward(p, F):
    q = F.sigmoid(p["X"] @ p["w"])
    return -p["y"].T @ F.log(q) - (1 - p["y"]).T @ F.log(1 - q)
"#,
    });
}

#[test]
fn three_layer_gradients_match_autodiff() {
    gradients_match_autodiff(&Example {
        name: "three_layer",
        script: include_str!("../examples/three_layer.mdiff"),
        params: &["W1", "W2", "W3"],
        vec: &["W2"],
        reference: r#"
def inputs(rng):
    return {
        "x": rng.normal(size=(1, 4)),
        "W1": rng.normal(size=(4, 5)),
        "W2": rng.normal(size=(5, 3)),
        "W3": rng.normal(size=(3, 2)),
        "t": rng.normal(size=(1, 2)),
    }

def forward(p, F):
    h1 = F.tanh(p["x"] @ p["W1"])
    h2 = F.sigmoid(h1 @ p["W2"])
    o = h2 @ p["W3"]
    return F.total((o - p["t"]) ** 2)
"#,
    });
}

/// Every example with gradient queries has a test above.
#[test]
fn every_example_with_gradients_is_tested() {
    let tested = [
        "softmax_regression",
        "mlp",
        "layer_norm",
        "attention",
        "transformer_block",
        "lstm",
        "backprop",
        "least_squares",
        "logistic",
        "three_layer",
    ];
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).expect("examples/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "mdiff") {
            let text = std::fs::read_to_string(&path).expect("readable");
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            let gradients = text.lines().any(|l| l.trim_start().starts_with("∂L/∂"));
            assert!(!gradients || tested.contains(&stem.as_str()), "{stem} has gradients and no framework test");
        }
    }
}

// ---- the same queries as NumPy --------------------------------------------------------

/// Runs each case's NumPy module and its JAX and PyTorch modules on the same
/// inputs: every function of each framework returns its framework's 2-D
/// arrays (a backward program, a tuple of them), in float64 the NumPy
/// values within 1e-8 of the largest entry (NaN where NumPy has NaN), and
/// float32 for float32 inputs, within 1e-3. Prints a JSON list of failures
/// and counts.
const COMPARE_DRIVER: &str = r#"
data = json.load(sys.stdin)
F = {name: framework(name) for name in data["frameworks"]}
sins = {"numpy": np.sin, **{k: f.sin for k, f in F.items()}}
failures, compared, numpy_raised = [], 0, 0


def args_for(fn, case, make, sin):
    args, kwargs = [], {}
    for p, info in inspect.signature(fn).parameters.items():
        if info.kind == inspect.Parameter.KEYWORD_ONLY:
            kwargs[p] = case["sizes"][p]
        elif p in case["mats"]:
            args.append(make(case["mats"][p]))
        elif p in case["diffs"]:
            args.append(make(case["diffs"][p]))
        else:
            f, k = case["funcs"][p]
            args.append(user(f, k, sin))
    return args, kwargs


def close(got, want, limit):
    if got.shape != want.shape:
        return f"shape {got.shape}, NumPy's {want.shape}"
    bad = np.isnan(want)
    if not np.array_equal(np.isnan(got), bad):
        return "NaN where NumPy has none, or none where it has"
    if not np.array_equal(np.isinf(got), np.isinf(want)) or not np.array_equal(got[np.isinf(got)], want[np.isinf(want)]):
        return "infinities differ"
    ok = np.isfinite(want)
    if ok.any():
        scale = max(1.0, np.abs(want[ok]).max())
        err = np.abs(got[ok] - want[ok]).max() / scale
        if not err <= limit:
            return f"relative error {err:.3e} > {limit:.0e}"
    return None


for case in data["cases"]:
    scope = {}
    exec(case["modules"]["numpy"], scope)
    wants = {}
    for name in case["functions"]:
        fn = scope[name]
        args, kwargs = args_for(fn, case, lambda v: np.array(v, dtype=np.float64), np.sin)
        try:
            wants[name] = [np.asarray(o, dtype=np.float64) for o in outputs(fn(*args, **kwargs))]
        except Exception:
            numpy_raised += 1
    for fw, f in F.items():
        scope = {}
        exec(case["modules"][fw], scope)
        for name, want in wants.items():
            fn = scope[name]
            where = f"{case['label']}: {fw}: {name}"
            for dtype in ["float64", "float32"]:
                make = lambda v: f.array(np.array(v), getattr(f, dtype))
                args, kwargs = args_for(fn, case, make, f.sin)
                try:
                    got = outputs(fn(*args, **kwargs))
                except Exception as e:
                    failures.append(f"{where} ({dtype}) raises {type(e).__name__}: {e}")
                    continue
                if len(got) != len(want):
                    failures.append(f"{where}: {len(got)} results, NumPy {len(want)}")
                    continue
                # With no array parameter, the result has the framework's default dtype.
                expected = dtype if any(f.is_array(a) for a in args) else f.default_dtype()
                for i, (g, w) in enumerate(zip(got, want)):
                    if not f.is_array(g) or len(g.shape) != 2:
                        failures.append(f"{where} ({dtype}): result {i} is {type(g).__name__} {getattr(g, 'shape', '')}")
                        continue
                    if f.dtype_name(g) != expected:
                        failures.append(f"{where}: {dtype} in, {f.dtype_name(g)} out (result {i})")
                    limit = 1e-8 if f.dtype_name(g) == "float64" else 1e-3
                    problem = close(f.numpy(g).astype(np.float64), w, limit)
                    if problem:
                        failures.append(f"{where} ({dtype}, result {i}): {problem}")
                    compared += 1
print(json.dumps({"failures": failures, "compared": compared, "numpy_raised": numpy_raised}))
"#;

/// [`FRAMEWORK_OPS`], with JAX's compilation cache in the test target's
/// temporary directory.
fn framework_ops() -> String {
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("jax-cache");
    let literal = serde_json::to_string(&cache.to_string_lossy()).expect("a JSON string");
    format!("JAX_CACHE = {literal}\n{FRAMEWORK_OPS}")
}

fn to_json(m: &Mat) -> serde_json::Value {
    serde_json::json!((0..m.nrows()).map(|i| (0..m.ncols()).map(|j| m[(i, j)]).collect::<Vec<_>>()).collect::<Vec<_>>())
}

/// A script's modules for NumPy and each framework, with the inputs to run
/// them on, as the compare driver reads it; `None` when the engine rejects
/// the script or NumPy code cannot be generated for it (then no framework's
/// may be either).
fn compare_case(
    label: &str,
    script: &str,
    options: Options,
    frameworks: &[&str],
    seed: u64,
) -> Option<serde_json::Value> {
    let mut s = Session::new(options);
    let items: Vec<Item> = s
        .run(script)
        .ok()?
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Answer(a) => Some(Item::Answer(a)),
            Outcome::Backward(b) => Some(Item::Backward(b)),
            _ => None,
        })
        .collect();
    let numpy = s.numpy_of(&items);
    let mut modules = serde_json::Map::new();
    for framework in frameworks {
        let code = s.code_of(backend(framework), &items);
        match (&numpy, code) {
            (Ok(n), Ok(c)) => {
                assert_eq!(defs(&c), defs(n), "{label}: {framework}: the functions differ from NumPy's\n{script}");
                modules.insert(framework.to_string(), serde_json::json!(c));
            }
            (Err(_), Err(_)) => return None,
            (n, c) => panic!("{label}: {framework}: NumPy code {:?} but {:?}\n{script}", n.is_ok(), c.err()),
        }
    }
    let numpy = numpy.ok()?;
    let names = function_names(&numpy);
    assert_eq!(names.len(), items.len(), "{label}: one function per query\n{numpy}");
    modules.insert("numpy".to_string(), serde_json::json!(numpy));
    let ids = Identifiers::new(&s.env);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values = random_values(&s.env, &mut rng, seed.is_multiple_of(2));
    let mut diffs = serde_json::Map::new();
    for item in &items {
        let Item::Answer(a) = item else { continue };
        let mut ds = Vec::new();
        a.expr.diff_names(&mut ds);
        for d in ds {
            let shape = a.expr.diff_shape(&d).unwrap();
            let (r, c) = (shape.rows.eval(&values.sizes).unwrap(), shape.cols.eval(&values.sizes).unwrap());
            let m = Mat::from_fn(r, c, |_, _| rng.random_range(-1.0..1.0));
            diffs.insert(ids.diff(&d), to_json(&m));
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
    Some(serde_json::json!({
        "label": label, "modules": modules, "functions": names, "mats": mats, "diffs": diffs, "sizes": sizes,
        "funcs": funcs,
    }))
}

/// Runs the compare driver on the cases; returns how many results it compared.
fn compare(test: &str, cases: Vec<serde_json::Value>, frameworks: &[&str]) -> usize {
    let input = serde_json::json!({ "cases": cases, "frameworks": frameworks });
    let program = crate::python::with_user_functions(&format!("{}\n{COMPARE_DRIVER}", framework_ops()));
    let stdout = run_driver(test, &program, input);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let failures = report["failures"].as_array().expect("failures");
    let scripts: Vec<String> = cases
        .iter()
        .filter(|c| {
            failures.iter().any(|f| f.as_str().unwrap_or("").starts_with(&format!("{}:", c["label"].as_str().unwrap())))
        })
        .map(|c| format!("{}:\n{}", c["label"], c["modules"]["numpy"].as_str().unwrap_or("")))
        .take(2)
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n\nNumPy modules of the first failing cases:\n{}",
        failures.len(),
        failures.iter().take(20).map(|f| f.as_str().unwrap_or("").to_string()).collect::<Vec<_>>().join("\n"),
        scripts.join("\n")
    );
    let compared = report["compared"].as_u64().unwrap_or(0) as usize;
    println!(
        "{test}: {} scripts, {compared} results compared with NumPy in {frameworks:?} ({} NumPy functions raised and were left out)",
        cases.len(),
        report["numpy_raised"]
    );
    compared
}

/// Scripts beyond the NumPy tests' cases: the network functions, backward
/// programs, Kronecker products and commutation matrices built and applied,
/// `vec` and `vec⁻¹` in both orders, sizes as values.
const MORE_CASES: &[&str] = &[
    "X: m x n; W: n x k; b: 1 x k; Y: m x k; Z = X W + b; \
     L = -sum(Y ∘ log_softmax(Z)) / m + sum(softplus(Z)) / m + mean(σ(Z)) + sum(logsumexp(Z)); ∂L/∂(W, b)",
    "P: 2 x 2; R: 3 x 3; v: 6; L = vᵀ (P ⊗ R) v + sum(exp(kron(P, R)) / 9); grad(L, P); grad(L, R); hessian(L, v); \
     ∂(P ⊗ R)/∂vec(R)ᵀ",
    "A: 2 x 3; ∂(Aᵀ)/∂vec(A)ᵀ; B: 3 x 3; ∂(B ⊗ B)/∂vec(B)ᵀ",
    "x: 6; P: 2 x 3; grad(sum(vec^-1(x, 2, 3) ∘ P), x); grad(sum(vec(P) ∘ x), P); d(vec(P))",
    "X: N x d; grad(‖X‖² / N + sum(X) / sqrt(d) + sum(X ∘ X) / (N d), X)",
    "x: n; A: n x n; B: n x n; L = xᵀ A B x + tr(A ⊗ B) + logdet(A) + tr(inv(B) A); ∂L/∂(A, B, x)",
    "z: k; grad(sum(softmax(z) ∘ softmax(z)), z); grad(sum(log_softmax(z) ∘ z), z); jacobian(softmax(z), z)",
    "X: m x n; w: n; grad(sum(relu(X w) + abs(X w)), w); grad(sum(step(X w) ∘ (X w)), w); grad(mean(sign(X) ∘ X), X)",
    "A: n x n; grad(tr(A^3) + det(A), A); hessian(tr(A^2), A); grad(sum(A^-1), A)",
    "s: scalar; A: n x n; x: n; L = s^2 tr(A) + s xᵀ A x + ‖s A‖²; ∂L/∂(s, A, x); d(s A)",
    "W1: n x h; W2: h x k; x: 1 x n; y: 1 x k; f: R -> R; h1 = f(x W1); o = tanh(h1 W2); L = ‖o - y‖²; \
     ∂L/∂(W1, W2); ∂L/∂vec(W1)ᵀ; hessian(L, x)",
];

#[test]
fn frameworks_agree_with_numpy_on_scripts() {
    let frameworks = available("frameworks_agree_with_numpy_on_scripts");
    if frameworks.is_empty() {
        return;
    }
    let numerator = Conventions { layout: Layout::Numerator, order: VecOrder::Col };
    let mut cases = Vec::new();
    let scripts = crate::numpy_codegen::CASES.iter().chain(MORE_CASES);
    for (i, script) in scripts.enumerate() {
        for (j, conventions) in [Conventions::default(), numerator].into_iter().enumerate() {
            let options = Options { conventions, ..Options::default() };
            let label = format!("script {i} under conventions {j}");
            let case = compare_case(&label, script, options, &frameworks, 7 + i as u64)
                .unwrap_or_else(|| panic!("{label}: the script runs and has NumPy code:\n{script}"));
            cases.push(case);
        }
    }
    assert!(cases.len() >= 60, "{}", cases.len());
    let compared = compare("frameworks_agree_with_numpy_on_scripts", cases, &frameworks);
    assert!(compared >= 400, "only {compared} results compared");
}

#[test]
fn frameworks_agree_with_numpy_on_random_scripts() {
    let frameworks = available("frameworks_agree_with_numpy_on_random_scripts");
    if frameworks.is_empty() {
        return;
    }
    // A fixed sample of the random scripts of the weak-spot properties
    // (`tests/common/weak.rs`), each under one of the four conventions.
    let mut state = 0x6672_616d_6577_6f72u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 32) as u32
    };
    let mut cases = Vec::new();
    let mut tried = 0;
    while cases.len() < 24 && tried < 200 {
        tried += 1;
        let len = 40 + (next() % 120) as usize;
        let tape: Vec<u32> = (0..len).map(|_| next()).collect();
        let script = crate::weak::script(&tape, crate::weak::ALL);
        let layout = if tried % 2 == 0 { Layout::Denominator } else { Layout::Numerator };
        let order = if (tried / 2) % 2 == 0 { VecOrder::Row } else { VecOrder::Col };
        let options = Options { conventions: Conventions { layout, order }, ..Options::default() };
        let label = format!("random script {tried}");
        if let Some(case) = compare_case(&label, &script.text, options, &frameworks, tried as u64) {
            cases.push(case);
        }
    }
    assert!(cases.len() >= 20, "only {} of {tried} random scripts ran", cases.len());
    let compared = compare("frameworks_agree_with_numpy_on_random_scripts", cases, &frameworks);
    assert!(compared >= 100, "only {compared} results compared");
}

// ---- the spellings -------------------------------------------------------------------

#[test]
fn the_command_line_writes_each_framework() {
    let run = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_matdiff"))
            .args(["--format", format, concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mlp.mdiff")])
            .output()
            .expect("matdiff runs");
        assert!(out.status.success(), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let (numpy, jax, torch) = (run("numpy"), run("jax"), run("torch"));
    assert!(jax.starts_with("import jax.numpy as jnp\n\n\n"), "{jax}");
    assert!(torch.starts_with("import torch\n\n\n"), "{torch}");
    assert_eq!(defs(&jax), defs(&numpy));
    assert_eq!(defs(&torch), defs(&numpy));
    // Imports nothing else; no NumPy, no in-place updates, no reading numbers back.
    for (code, alias) in [(&jax, "jnp"), (&torch, "torch")] {
        assert_eq!(code.matches("import ").count(), 1, "{code}");
        assert!(code.contains(&format!("{alias}.")), "{code}");
        assert!(!code.contains(" np.") && !code.contains("(np."), "{code}");
        for bad in ["+=", "-=", "*=", "/=", "[:] =", ".item()", ".numpy()", ".view(", "order="] {
            assert!(!code.contains(bad), "{bad}:\n{code}");
        }
    }
}

#[test]
fn module_aliases_are_never_user_names() {
    let script = "torch: n; jnp: n; jax: n; np: n; grad(sum(torch ∘ jnp) + sum(jax ∘ np), torch)";
    let mut s = Session::default();
    let answers = s.answers(script).unwrap();
    for format in [Format::Numpy, Format::Jax, Format::Torch] {
        let code = s.code(format.backend().unwrap(), &answers).unwrap();
        assert!(code.contains("def grad_q1_torch_(jnp_):"), "{code}");
    }
}

#[test]
fn column_order_vec_is_written_with_transposes() {
    let numerator = Conventions { layout: Layout::Numerator, order: VecOrder::Col };
    let mut s = Session::new(Options { conventions: numerator, ..Options::default() });
    let answers =
        s.answers("X: 2 x 3; v: 6; x: 6; P: 2 x 3; grad(vᵀ vec(X ∘ X), v); grad(sum(vec^-1(x, 2, 3) ∘ P), P)").unwrap();
    for format in [Format::Jax, Format::Torch] {
        let code = s.code(format.backend().unwrap(), &answers).unwrap();
        assert!(code.contains("(X * X).T.reshape(-1, 1)"), "{code}");
        assert!(code.contains("x.reshape(3, 2).T"), "{code}");
    }
}

#[test]
fn softmax_log_softmax_logsumexp_sigmoid_and_softplus_never_overflow() {
    let frameworks = available("softmax_log_softmax_logsumexp_sigmoid_and_softplus_never_overflow");
    if frameworks.is_empty() {
        return;
    }
    let mut s = Session::default();
    let answers = s
        .answers(
            "X: 2 x 3; z: 3; softmax(X); log_softmax(X); logsumexp(X); softmax(z); log_softmax(z); logsumexp(z); \
             σ(X); softplus(X)",
        )
        .unwrap();
    let modules: serde_json::Map<String, serde_json::Value> =
        frameworks.iter().map(|f| (f.to_string(), serde_json::json!(s.code(backend(f), &answers).unwrap()))).collect();
    // Reference values written out by hand for inputs of ±1000, in float64 and float32.
    let check = r#"
data = json.load(sys.stdin)
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
for name, module in data.items():
    f = framework(name)
    scope = {}
    exec(module, scope)
    fns = sorted((v for k, v in scope.items() if k.startswith("expr_")), key=lambda g: int(g.__name__.split("_")[1]))
    assert len(fns) == len(want), len(fns)
    for dtype, tolerance in [("float64", 1e-12), ("float32", 1e-6)]:
        for g, w in zip(fns, want):
            args = {p: f.array({"X": X, "z": z}[p], getattr(f, dtype)) for p in inspect.signature(g).parameters}
            r = g(**args)
            assert f.dtype_name(r) == dtype, (name, g.__name__, r.dtype)
            r = f.numpy(r).astype(np.float64)
            assert np.all(np.isfinite(r)), (name, dtype, g.__name__, r)
            assert np.allclose(r, w, rtol=tolerance, atol=tolerance), (name, dtype, g.__name__, r, w)
print("ok")
"#;
    let stdout = run_driver("overflow", &format!("{}\n{check}", framework_ops()), serde_json::Value::Object(modules));
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn gradients_build_no_kronecker_product_or_diagonal_matrix() {
    // The Kronecker and diagonal factors of these answers are applied, in
    // every framework, by broadcasting and reshapes.
    let decl = "X: 2 x 2; A1, A2, A3, A4, A5, A6, A7, A8: 2 x 2";
    let tower = "A1 ⊗ A2 ⊗ A3 ⊗ A4 ⊗ A5 ⊗ A6 ⊗ A7 ⊗ A8";
    let scripts = [
        include_str!("../examples/three_layer.mdiff").to_string(),
        include_str!("../examples/transformer_block.mdiff").to_string(),
        format!("{decl}; grad(sum({tower} ⊗ X), X); grad(tr({tower} ⊗ X), X)"),
    ];
    for script in &scripts {
        let mut s = Session::default();
        let answers = s.answers(script).unwrap();
        for (framework, format) in FRAMEWORKS {
            let module = s.code(format.backend().unwrap(), &answers).unwrap();
            // The code, without the docstrings, which show the answers.
            let code: Vec<&str> = module.lines().filter(|l| !l.trim_start().starts_with("\"\"\"")).collect();
            for built in ["kron(", "diag(", "_commutation("] {
                assert!(!code.iter().any(|l| l.contains(built)), "{framework}: {built}\n{module}");
            }
        }
    }
    let frameworks = available("gradients_build_no_kronecker_product_or_diagonal_matrix");
    if frameworks.is_empty() {
        return;
    }
    // And they compute what NumPy computes.
    let cases: Vec<serde_json::Value> = scripts
        .iter()
        .enumerate()
        .map(|(i, script)| {
            compare_case(&format!("script {i}"), script, Options::default(), &frameworks, i as u64).expect("runs")
        })
        .collect();
    compare("gradients_build_no_kronecker_product_or_diagonal_matrix", cases, &frameworks);
}

#[test]
fn torch_results_are_tensors_of_their_own() {
    if !available("torch_results_are_tensors_of_their_own").contains(&"torch") {
        return;
    }
    // ∂sum(A ∘ B)/∂A is B itself, and a broadcast row is an expanded view:
    // an optimiser's in-place step on a result must not touch an input.
    for script in ["A, B: 2 x 2; grad(sum(A ∘ B), A)", "X: 2 x 2; r: 1 x 2; grad(sum(X ∘ (ones(2, 1) r)), X)"] {
        let mut s = Session::default();
        let answers = s.answers(script).unwrap();
        let module = s.code(backend("torch"), &answers).unwrap();
        let driver = format!(
            "import inspect, torch\n{module}\n\
             f = [v for k, v in list(globals().items()) if k.startswith('grad_')][0]\n\
             args = {{p: torch.rand(1 if p == 'r' else 2, 2, dtype=torch.float64) for p in inspect.signature(f).parameters}}\n\
             before = {{p: a.clone() for p, a in args.items()}}\n\
             r = f(**args)\n\
             assert all(r.data_ptr() != a.data_ptr() for a in args.values())\n\
             r.mul_(0)\n\
             assert all(torch.equal(args[p], before[p]) for p in args)\n\
             print('ok')"
        );
        assert_eq!(run_driver(script, &driver, serde_json::json!({})).trim(), "ok", "{script}");
    }
}

/// The PyTorch module of a script's backward programs.
fn torch_programs(script: &str) -> String {
    let mut s = Session::default();
    let items: Vec<Item> = s
        .run(script)
        .unwrap_or_else(|e| panic!("{script}: {e}"))
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Backward(b) => Some(Item::Backward(b)),
            _ => None,
        })
        .collect();
    s.code_of(backend("torch"), &items).unwrap()
}

#[test]
fn torch_results_of_a_backward_program_share_no_memory() {
    if !available("torch_results_of_a_backward_program_share_no_memory").contains(&"torch") {
        return;
    }
    // ∂L/∂a and ∂L/∂b are one expression, and ∂L/∂W a product computed in
    // place: every result is its own tensor, none an input's.
    let script = "a, b: 1 x 3; W: 3 x 3; L = ‖(a + b) W‖²; ∂L/∂(a, b, W)";
    let module = torch_programs(script);
    let driver = format!(
        "import inspect, torch\n{module}\n\
         f = value_and_grad_L\n\
         args = {{p: torch.rand(3 if p == 'W' else 1, 3, dtype=torch.float64) for p in inspect.signature(f).parameters}}\n\
         loss, grads = f(**args)\n\
         ptrs = [g.data_ptr() for g in grads] + [loss.data_ptr()]\n\
         assert len(set(ptrs)) == len(ptrs), ptrs\n\
         assert not set(ptrs) & {{a.data_ptr() for a in args.values()}}\n\
         assert torch.equal(grads[0], grads[1])\n\
         print('ok')"
    );
    assert_eq!(run_driver(script, &driver, serde_json::json!({})).trim(), "ok", "{module}");
}

#[test]
fn torch_layer_norm_backward_is_fused_right_and_differentiable() {
    if !available("torch_layer_norm_backward_is_fused_right_and_differentiable").contains(&"torch") {
        return;
    }
    // A layer norm written out, after a linear layer: δH is computed by one
    // fused call, with the gain's and bias's gradients or without a gain.
    // With a residual around it (O = Z ∘ Z + H) it is not, as δH has a second
    // part. All against autograd of torch's own layer norm.
    let decl = "X: T x d; W: d x d; b0, γ, β: 1 x d; Y: T x d; ε: scalar; H = X W + b0\n\
                C = H - H ones(d, 1) / d; s = sqrt((C ∘ C) ones(d, 1) / d + ε)\n";
    let norm = ("Z = C ./ s ∘ γ + β", "F.layer_norm(H, (d,), v['gamma'].reshape(d), v['beta'].reshape(d), eps)");
    let all = ["W", "b0", "γ", "β"];
    let cases = [
        (norm, "L = ‖Z - Y‖²", "((Z - Y) ** 2).sum()", &all[..], true),
        // β reaches the loss twice: its gradient is not the fused call's.
        (norm, "O = Z ∘ Z + ones(T, 1) β; L = ‖O - Y‖²", "((Z * Z + v['beta'] - Y) ** 2).sum()", &all[..], true),
        (norm, "O = Z ∘ Z + H; L = ‖O - Y‖²", "((Z * Z + H - Y) ** 2).sum()", &all[..], false),
        (
            ("Z = C ./ s + β", "F.layer_norm(H, (d,), None, v['beta'].reshape(d), eps)"),
            "L = ‖Z - Y‖²",
            "((Z - Y) ** 2).sum()",
            &["W", "b0", "β"][..],
            true,
        ),
    ];
    for ((z, z_reference), loss, reference, wrt, fused) in cases {
        let script = format!("{decl}{z}\n{loss}\n∂L/∂({})\n", wrt.join(", "));
        let module = torch_programs(&script);
        assert_eq!(module.contains("= _layer_norm_backward(delta_Z"), fused, "{module}");
        let params: Vec<String> =
            wrt.iter().map(|p| format!("{:?}", p.replace('γ', "gamma").replace('β', "beta"))).collect();
        let params = params.join(", ");
        let driver = format!(
            r#"import inspect, torch
{module}
def program(v):
    return value_and_grad_L(**{{k: v[k] for k in inspect.signature(value_and_grad_L).parameters}})
torch.manual_seed(0)
T, d = 5, 4
eps = 1e-3
def inputs(dtype):
    g = torch.Generator().manual_seed(1)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    return dict(X=r(T, d), W=r(d, d), b0=r(1, d), gamma=1 + r(1, d) / 4, beta=r(1, d), Y=r(T, d),
                epsilon=torch.full((1, 1), eps, dtype=dtype))
F = torch.nn.functional
def loss(v):
    Y, H = v["Y"], v["X"] @ v["W"] + v["b0"]
    Z = {z_reference}
    return {reference}
params = [{params}]
for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-4)]:
    v = inputs(dtype)
    value, grads = program(v)
    w = {{k: t.clone().requires_grad_(k in params) for k, t in v.items()}}
    want = torch.autograd.grad(loss(w), [w[k] for k in params])
    assert torch.allclose(value.reshape(()), loss(v), rtol=tol, atol=tol), (value, loss(v))
    for k, got, ref in zip(params, grads, want):
        assert got.dtype == dtype, (k, got.dtype)
        assert torch.allclose(got, ref, rtol=tol, atol=tol), (k, dtype, got, ref)
# Differentiated itself: a Hessian-vector product through ∂L/∂W, against
# autograd's double backward.
v = inputs(torch.float64)
r = torch.randn(d, d, dtype=torch.float64)
w = {{k: t.clone().requires_grad_(k in params) for k, t in v.items()}}
_, grads = program(w)
got = torch.autograd.grad((grads[0] * r).sum(), [w[k] for k in params])
(gw,) = torch.autograd.grad(loss(w), w["W"], create_graph=True)
want = torch.autograd.grad((gw * r).sum(), [w[k] for k in params])
for k, a, b in zip(params, got, want):
    assert torch.allclose(a, b, rtol=1e-9, atol=1e-9), (k, a, b)
# Any device: the meta device computes shapes only.
meta = {{k: torch.empty(t.shape, dtype=torch.float32, device="meta") for k, t in v.items()}}
value, grads = program(meta)
assert all(g.device.type == "meta" and g.dtype == torch.float32 for g in grads)
print("ok")
"#
        );
        assert_eq!(run_driver(loss, &driver, serde_json::json!({})).trim(), "ok", "{module}");
    }
}
