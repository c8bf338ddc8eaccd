//! The network examples' gradients, as generated NumPy code, against central
//! finite differences of a forward pass written by hand in NumPy here: a
//! reference that shares no code with matdiff. Needs `python3` with `numpy`.

use matdiff::codegen::Item;
use matdiff::diff::chain::{Conventions, Layout};
use matdiff::ir::VecOrder;
use matdiff::session::{Options, Outcome, Session};

/// Reads the generated modules and the gradients asked for from stdin, then
/// checks every gradient function against central differences of the case's
/// hand-written `forward`. A case defines `SIZES` (sizes no array carries),
/// `inputs(rng)` (a dict of float64 arrays, named as in the script) and
/// `forward(p)`, which returns the loss and the arrays whose signs decide a
/// piecewise function (ReLU's arguments): those signs must not change at any
/// point a difference is taken, so the loss is smooth along every step.
const DRIVER: &str = r#"
import inspect, json, sys
import numpy as np

# Five-point central differences: truncation error O(STEP⁴), rounding error
# O(machine ε · |L| / STEP); both far below the tolerance for losses of order 1.
STEP = 1e-4
TOLERANCE = 1e-6     # largest entry error, relative to the gradient's largest entry
MARGIN = 1e-2        # ReLU arguments start this far from 0; differences move them far less


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def relu(x):
    return np.maximum(x, 0.0)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(x):
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def layer_norm(x, g, b, eps):
    c = x - x.mean(axis=1, keepdims=True)
    return c / np.sqrt((c * c).mean(axis=1, keepdims=True) + eps) * g + b


CASE


def signs(kinks):
    return [np.sign(k) for k in kinks]


def call(fn, p):
    args = {}
    for name, info in inspect.signature(fn).parameters.items():
        if info.kind == inspect.Parameter.KEYWORD_ONLY:
            args[name] = SIZES[name]
        else:
            assert name in p, f"{fn.__name__} takes {name}, which the reference does not define"
            args[name] = p[name]
    return fn(**args)


data = json.load(sys.stdin)
rng = np.random.default_rng(20240)
for attempt in range(100):
    p = inputs(rng)
    loss, kinks = forward(p)
    if all(np.abs(k).min() > MARGIN for k in kinks):
        break
else:
    raise AssertionError("no inputs with every ReLU argument away from 0")
base = signs(kinks)


def loss_at(name, index, delta):
    q = dict(p)
    q[name] = p[name].copy()
    q[name][index] += delta
    value, kinks = forward(q)
    for s, t in zip(base, signs(kinks)):
        assert np.array_equal(s, t), f"a difference in {name}{list(index)} crosses a ReLU kink"
    return value


numeric = {}
for name in data["gradients"]:
    numeric[name] = np.zeros_like(p[name])
    for index in np.ndindex(*p[name].shape):
        near = loss_at(name, index, STEP) - loss_at(name, index, -STEP)
        far = loss_at(name, index, 2 * STEP) - loss_at(name, index, -2 * STEP)
        numeric[name][index] = (8 * near - far) / (12 * STEP)

worst = 0.0
for generated in data["modules"]:
    scope = {}
    exec(generated["module"], scope)
    functions = [scope[name] for name in generated["functions"]]
    assert len(functions) == len(data["gradients"]) + 2, generated["functions"]
    where = generated["conventions"]

    # The same function: the script's loss, as generated, is the reference's.
    generated_loss = call(functions[-2], p)
    assert generated_loss.shape == (1, 1), generated_loss.shape
    assert abs(generated_loss[0, 0] - loss) <= 1e-12 * max(1.0, abs(loss)), (
        f"{where}: not the same function: the script's L is {generated_loss[0, 0]:.15g}, "
        f"the reference's {loss:.15g}"
    )

    # The backward program: the loss and every gradient from one call, in
    # the query's order; float32 in, float32 out.
    program = functions[-1]
    assert program.__name__ == "value_and_grad_L", program.__name__
    value, grads = call(program, p)
    assert abs(value[0, 0] - loss) <= 1e-12 * max(1.0, abs(loss)), (where, value, loss)
    assert len(grads) == len(data["gradients"]), (where, len(grads))
    value32, grads32 = call(program, {k: v.astype(np.float32) for k, v in p.items()})
    assert value32.dtype == np.float32 and all(g.dtype == np.float32 for g in grads32), (where, "float32")
    for name, g, g32 in zip(data["gradients"], grads, grads32):
        scale = max(np.abs(g).max(), 1e-12)
        assert np.abs(g32 - g).max() <= 1e-3 * scale, (where, name, "float32 differs from float64")

    for index, (name, fn) in enumerate(zip(data["gradients"], functions)):
        assert fn.__name__.endswith("_" + name), (where, fn.__name__, name)
        want = numeric[name]
        for got, how in [(call(fn, p), fn.__name__), (grads[index], program.__name__)]:
            assert isinstance(got, np.ndarray) and got.shape == want.shape, (where, how, name, getattr(got, "shape", got))
            assert got.dtype == np.float64, (where, how, name, got.dtype)
            err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)
            worst = max(worst, err)
            if not err < TOLERANCE:
                at = tuple(int(i) for i in np.unravel_index(np.abs(got - want).argmax(), got.shape))
                np.set_printoptions(precision=10, linewidth=150)
                raise AssertionError(
                    f"{where}: {how}: ∂L/∂{name}: relative error {err:.3e} (tolerance {TOLERANCE:.0e}), largest at {at}: "
                    f"generated {got[at]:.12g}, finite differences {want[at]:.12g}\n"
                    f"generated:\n{got}\nfinite differences:\n{want}\n{fn.__name__}: {(fn.__doc__ or '')[:400]}"
                )
print(
    f"{len(data['gradients'])} gradients under {len(data['modules'])} conventions, loss {loss:.6g}, "
    f"largest relative error {worst:.1e}"
)
"#;

/// Generates the example's NumPy code under both conventions, with its loss
/// `L` and the backward program `∂L/∂(…)` of every gradient appended as two
/// more queries, and checks the gradients named (in the
/// script's query order) against finite differences of `reference` (Python
/// defining `SIZES`, `inputs` and `forward`, as [`DRIVER`] describes).
fn gradients_match_finite_differences(example: &str, script: &str, gradients: &[&str], reference: &str) {
    // The script's own names for the variables (`γ1`, where Python has `gamma1`).
    let vars: Vec<&str> =
        script.split(['\n', ';']).filter_map(|l| l.trim().strip_prefix("∂L/∂")?.split_whitespace().next()).collect();
    assert_eq!(vars.len(), gradients.len(), "{example}: {vars:?}");
    let script = format!("{script}\nL\n∂L/∂({})\n", vars.join(", "));
    let numerator = Conventions { layout: Layout::Numerator, order: VecOrder::Col };
    let mut modules = Vec::new();
    for (conventions, options) in [
        ("denominator layout, row vec", Options::default()),
        ("numerator layout, column vec", Options { conventions: numerator, ..Options::default() }),
    ] {
        let mut s = Session::new(options);
        let items: Vec<Item> = s
            .run(&script)
            .unwrap_or_else(|e| panic!("{example}: {e}"))
            .into_iter()
            .filter_map(|o| match o {
                Outcome::Answer(a) => Some(Item::Answer(a)),
                Outcome::Backward(b) => Some(Item::Backward(b)),
                _ => None,
            })
            .collect();
        let module = s.numpy_of(&items).unwrap_or_else(|e| panic!("{example}: {e}"));
        let functions: Vec<&str> = module
            .lines()
            .filter_map(|l| l.strip_prefix("def ").filter(|r| !r.starts_with('_')))
            .map(|l| l.split('(').next().unwrap())
            .collect();
        assert_eq!(functions.len(), gradients.len() + 2, "{example}: one function per query: {functions:?}");
        modules.push(serde_json::json!({ "conventions": conventions, "module": module, "functions": functions }));
    }
    let input = serde_json::json!({ "modules": modules, "gradients": gradients });
    let out = crate::python::run(&DRIVER.replace("\nCASE\n", reference), input.to_string());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{example}:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("largest relative error"), "{example}: {stdout}");
    print!("{example}: {stdout}");
}

#[test]
fn softmax_regression_gradients_match_finite_differences() {
    let reference = r#"
SIZES = {}

def inputs(rng):
    N, d, k = 5, 4, 3
    return {
        "X": rng.normal(size=(N, d)),
        "Y": np.eye(k)[rng.integers(0, k, size=N)],
        "W": rng.normal(size=(d, k)),
        "b": rng.normal(size=(1, k)),
    }

def forward(p):
    Z = p["X"] @ p["W"] + p["b"]
    return -np.sum(p["Y"] * log_softmax(Z)) / p["X"].shape[0], []
"#;
    gradients_match_finite_differences(
        "softmax_regression",
        include_str!("../examples/softmax_regression.mdiff"),
        &["W", "b"],
        reference,
    );
}

#[test]
fn mlp_gradients_match_finite_differences() {
    let reference = r#"
SIZES = {}

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

def forward(p):
    Z = p["X"] @ p["W1"] + p["b1"]
    O = relu(Z) @ p["W2"] + p["b2"]
    return np.sum((O - p["Y"]) ** 2) / p["X"].shape[0], [Z]
"#;
    gradients_match_finite_differences(
        "mlp",
        include_str!("../examples/mlp.mdiff"),
        &["W1", "b1", "W2", "b2"],
        reference,
    );
}

#[test]
fn layer_norm_gradients_match_finite_differences() {
    let reference = r#"
SIZES = {}

def inputs(rng):
    N, d = 5, 4
    return {
        "X": rng.normal(size=(N, d)),
        "g": rng.normal(size=(1, d)),
        "b": rng.normal(size=(1, d)),
        "Y": rng.normal(size=(N, d)),
        "epsilon": np.array([[1e-5]]),
    }

def forward(p):
    Z = layer_norm(p["X"], p["g"], p["b"], p["epsilon"][0, 0])
    return np.sum((Z - p["Y"]) ** 2) / p["X"].shape[0], []
"#;
    gradients_match_finite_differences(
        "layer_norm",
        include_str!("../examples/layer_norm.mdiff"),
        &["X", "g", "b"],
        reference,
    );
}

#[test]
fn attention_gradients_match_finite_differences() {
    let reference = r#"
SIZES = {}

def inputs(rng):
    T, d, h = 5, 4, 3
    return {
        "X": rng.normal(size=(T, d)),
        "Wq": rng.normal(size=(d, h)),
        "Wk": rng.normal(size=(d, h)),
        "Wv": rng.normal(size=(d, h)),
        "Y": rng.normal(size=(T, h)),
    }

def forward(p):
    X = p["X"]
    Q, K, V = X @ p["Wq"], X @ p["Wk"], X @ p["Wv"]
    A = softmax(Q @ K.T / np.sqrt(Q.shape[1]))
    return np.sum((A @ V - p["Y"]) ** 2) / X.shape[0], []
"#;
    gradients_match_finite_differences(
        "attention",
        include_str!("../examples/attention.mdiff"),
        &["Wq", "Wk", "Wv"],
        reference,
    );
}

#[test]
fn transformer_block_gradients_match_finite_differences() {
    let reference = r#"
SIZES = {}

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

def forward(p):
    X, eps = p["X"], p["epsilon"][0, 0]
    d = X.shape[1]
    Q, K, V = X @ p["Wq"], X @ p["Wk"], X @ p["Wv"]
    A = softmax(Q @ K.T / np.sqrt(d))
    N1 = layer_norm(X + A @ V, p["gamma1"], p["beta1"], eps)
    P = N1 @ p["W1"] + p["b1"]
    Z = layer_norm(N1 + relu(P) @ p["W2"] + p["b2"], p["gamma2"], p["beta2"], eps)
    return np.sum((Z - p["Y"]) ** 2) / X.shape[0], [P]
"#;
    gradients_match_finite_differences(
        "transformer_block",
        include_str!("../examples/transformer_block.mdiff"),
        &["Wq", "Wk", "Wv", "gamma1", "beta1", "W1", "b1", "W2", "b2", "gamma2", "beta2"],
        reference,
    );
}

#[test]
fn lstm_gradients_match_finite_differences() {
    // Layer by layer, each over the whole sequence: the order PyTorch's
    // nn.LSTM computes in, where the script interleaves the layers step by step.
    let reference = r#"
SIZES = {}
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

def forward(p):
    xs = [p[f"x{t}"] for t in range(1, STEPS + 1)]
    for l in range(1, LAYERS + 1):
        h, c, hs = p[f"h{l}_0"], p[f"c{l}_0"], []
        for x in xs:
            a = {k: x @ p[f"W{k}{l}"] + h @ p[f"U{k}{l}"] + p[f"b{k}{l}"] for k in GATES}
            i, f, o, g = sigmoid(a["i"]), sigmoid(a["f"]), sigmoid(a["o"]), np.tanh(a["g"])
            c = f * c + i * g
            h = o * np.tanh(c)
            hs.append(h)
        xs = hs
    return np.sum((xs[-1] - p["y"]) ** 2), []
"#;
    let layer1 = ["Wi1", "Wf1", "Wo1", "Wg1", "Ui1", "Uf1", "Uo1", "Ug1", "bi1", "bf1", "bo1", "bg1"];
    let layer2 = ["Wi2", "Wf2", "Wo2", "Wg2", "Ui2", "Uf2", "Uo2", "Ug2", "bi2", "bf2", "bo2", "bg2"];
    let gradients = [layer1, layer2].concat();
    gradients_match_finite_differences("lstm", include_str!("../examples/lstm.mdiff"), &gradients, reference);
}
