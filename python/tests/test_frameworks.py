"""The generated NumPy, JAX and PyTorch functions against jax.grad and
torch.autograd of independent forward passes written here, in float32 and
float64, and jax.jit of the generated functions."""

import functools
import inspect
import math

import pytest

import matdiff
from conftest import example

TOL = {"float64": 1e-9, "float32": 2e-4}
DTYPES = ["float64", "float32"]


def rel(got, want):
    import numpy as np
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.max(np.abs(want))), 1e-30)
    return float(np.max(np.abs(got - want))) / scale


def call(fn, values, extra=None):
    """Calls a generated function with arguments by parameter name."""
    kw = dict(extra or {})
    for name in inspect.signature(fn).parameters:
        if name not in kw:
            kw[name] = values[name]
    return fn(**kw)


# --------------------------------------------------------------------------
# Models: a script, inputs, and a forward pass in the test's own words, with
# `ops` the framework's namespace (torch or jax.numpy)
# --------------------------------------------------------------------------

def seed_inputs(rng):
    return {"n0": rng.standard_normal((1, 2)), "W1": rng.standard_normal((2, 3)), "b1": rng.standard_normal((1, 3)),
            "W2": rng.standard_normal((3, 2)), "b2": rng.standard_normal((1, 2)), "y": rng.standard_normal((1, 2))}


def seed_loss(v, ops, sigmoid):
    n1 = ops.tanh(v["n0"] @ v["W1"] + v["b1"])
    n2 = sigmoid(n1 @ v["W2"] + v["b2"])
    r = n2 - v["y"]
    return (r * r).sum()


def mlp_inputs(rng):
    N, d, h, k = 7, 4, 5, 3
    return {"X": rng.standard_normal((N, d)), "Y": rng.standard_normal((N, k)),
            "W1": rng.standard_normal((d, h)), "b1": rng.standard_normal((1, h)),
            "W2": rng.standard_normal((h, k)), "b2": rng.standard_normal((1, k))}


def mlp_loss(v, ops, F):
    H = F.relu(v["X"] @ v["W1"] + v["b1"])
    O = H @ v["W2"] + v["b2"]
    return ((O - v["Y"]) ** 2).sum() / v["X"].shape[0]


def transformer_inputs(rng):
    T, d, f = 6, 4, 8
    v = {"X": rng.standard_normal((T, d)), "Y": rng.standard_normal((T, d)), "epsilon": [[1e-3]]}
    for w in ("Wq", "Wk", "Wv"):
        v[w] = rng.standard_normal((d, d)) / math.sqrt(d)
    v.update(W1=rng.standard_normal((d, f)) / 2, b1=0.1 * rng.standard_normal((1, f)),
             W2=rng.standard_normal((f, d)) / 2, b2=0.1 * rng.standard_normal((1, d)))
    for g in ("gamma1", "gamma2"):
        v[g] = 1 + 0.1 * rng.standard_normal((1, d))
    for b in ("beta1", "beta2"):
        v[b] = 0.1 * rng.standard_normal((1, d))
    return v


def transformer_loss(v, ops, F):
    X = v["X"]
    T, d = X.shape

    def norm(H, g, b):
        C = H - H.mean(axis=1, keepdims=True) if ops.__name__ != "torch" else H - H.mean(dim=1, keepdim=True)
        m = (C * C).mean(axis=1, keepdims=True) if ops.__name__ != "torch" else (C * C).mean(dim=1, keepdim=True)
        return C / ops.sqrt(m + v["epsilon"]) * g + b

    S = (X @ v["Wq"]) @ (X @ v["Wk"]).T / math.sqrt(d)
    A = F.softmax(S, 1)
    N1 = norm(X + A @ (X @ v["Wv"]), v["gamma1"], v["beta1"])
    H2 = N1 + F.relu(N1 @ v["W1"] + v["b1"]) @ v["W2"] + v["b2"]
    Z = norm(H2, v["gamma2"], v["beta2"])
    return ((Z - v["Y"]) ** 2).sum() / T


def softmax_inputs(rng):
    N, d, k = 6, 4, 3
    import numpy as np
    Y = np.eye(k)[rng.integers(0, k, N)]
    return {"X": rng.standard_normal((N, d)), "Y": Y, "W": rng.standard_normal((d, k)), "b": rng.standard_normal((1, k))}


def softmax_loss(v, ops, F):
    return -(v["Y"] * F.log_softmax(v["X"] @ v["W"] + v["b"], 1)).sum() / v["X"].shape[0]


def logistic_inputs(rng):
    m, n = 8, 3
    return {"X": rng.standard_normal((m, n)), "w": rng.standard_normal((n, 1)),
            "y": rng.integers(0, 2, (m, 1)).astype(float)}


def logistic_loss(v, ops, F):
    p = F.sigmoid(v["X"] @ v["w"])
    y = v["y"]
    return -(y * ops.log(p) + (1 - y) * ops.log(1 - p)).sum()


# name, script, inputs, loss, parameters (Python names as the generated code spells them)
MODELS = [
    ("mlp", "mlp", mlp_inputs, mlp_loss, ["W1", "b1", "W2", "b2"]),
    ("transformer_block", "transformer_block", transformer_inputs, transformer_loss,
     ["Wq", "Wk", "Wv", "gamma1", "beta1", "W1", "b1", "W2", "b2", "gamma2", "beta2"]),
    ("softmax_regression", "softmax_regression", softmax_inputs, softmax_loss, ["W", "b"]),
    ("logistic", "logistic", logistic_inputs, logistic_loss, ["w"]),
]
MDIFF_NAMES = {"gamma1": "γ1", "beta1": "β1", "gamma2": "γ2", "beta2": "β2"}


@functools.lru_cache(maxsize=None)
def derived(name, params):
    """The example's answers, plus one ∂L/∂(all parameters) program."""
    names = ", ".join(MDIFF_NAMES.get(p, p) for p in params)
    answers = matdiff.derive(example(name) + f"\n∂L/∂({names})\n")
    grads = {a.query[len("∂L/∂"):]: a for a in answers[:-1] if a.query.startswith("∂L/∂") and "ᵀ" not in a.query}
    return grads, answers[-1]


# --------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------

def torch_tensors(torch, v, dtype, params):
    dt = getattr(torch, dtype)
    t = {k: torch.tensor(a, dtype=dt) for k, a in v.items()}
    for p in params:
        t[p].requires_grad_(True)
    return t


@pytest.mark.parametrize("dtype", DTYPES)
def test_seed_torch(torch, seed, dtype):
    import numpy as np
    g = matdiff.derive(seed)[-1]
    v = seed_inputs(np.random.default_rng(1))
    t = torch_tensors(torch, v, dtype, ["W1"])
    loss = seed_loss(t, torch, torch.sigmoid)
    (want,) = torch.autograd.grad(loss, t["W1"])
    fns = {"f1": torch.tanh, "f1_prime": lambda x: 1 - torch.tanh(x) ** 2,
           "f2": torch.sigmoid, "f2_prime": lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x))}
    args = {k: a.detach() for k, a in t.items()}
    got = call(g.torch(), args, fns)
    assert isinstance(got, torch.Tensor) and got.dtype == getattr(torch, dtype)
    assert rel(got.detach().numpy(), want.numpy()) < TOL[dtype]
    # NumPy of the same answer agrees with autograd too.
    npf = {"f1": np.tanh, "f1_prime": lambda x: 1 - np.tanh(x) ** 2,
           "f2": lambda x: 1 / (1 + np.exp(-x)), "f2_prime": lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2}
    got_np = call(g.numpy(), {k: a.astype(dtype) for k, a in v.items()}, npf)
    assert got_np.dtype == np.dtype(dtype)
    assert rel(got_np, want.numpy()) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model", MODELS, ids=[m[0] for m in MODELS])
def test_examples_torch(torch, model, dtype):
    import numpy as np
    name, script, inputs, loss_fn, params = model
    grads, program = derived(script, tuple(params))
    v = inputs(np.random.default_rng(2))
    t = torch_tensors(torch, v, dtype, params)
    loss = loss_fn(t, torch, torch.nn.functional)
    want = torch.autograd.grad(loss, [t[p] for p in params])
    args = {k: a.detach() for k, a in t.items()}
    for p, w in zip(params, want):
        a = grads.get(MDIFF_NAMES.get(p, p))
        if a is None:
            continue
        got = call(a.torch(), args)
        assert got.dtype == getattr(torch, dtype), (a.query, got.dtype)
        assert rel(got.numpy(), w.numpy()) < TOL[dtype], a.query
    value, got = call(program.torch(), args)
    assert rel(value.numpy(), loss.detach().numpy().reshape(1, 1)) < TOL[dtype]
    assert len(got) == len(params)
    for p, g, w in zip(params, got, want):
        assert g.dtype == getattr(torch, dtype)
        assert rel(g.numpy(), w.numpy()) < TOL[dtype], p


def test_logistic_jacobian_torch(torch):
    import numpy as np
    a = matdiff.derive(example("logistic"))[1]
    assert a.query == "∂p/∂wᵀ"
    v = logistic_inputs(np.random.default_rng(3))
    t = {k: torch.tensor(x, dtype=torch.float64) for k, x in v.items()}
    J = torch.autograd.functional.jacobian(lambda w: torch.sigmoid(t["X"] @ w), t["w"])
    want = J.reshape(8, 3).T    # denominator layout: one row per entry of w
    assert rel(call(a.torch(), t).numpy(), want.numpy()) < 1e-12


# --------------------------------------------------------------------------
# JAX
# --------------------------------------------------------------------------

def jax_arrays(jax, v, dtype):
    import jax.numpy as jnp
    return {k: jnp.asarray(a, dtype=dtype) for k, a in v.items()}


@pytest.mark.parametrize("dtype", DTYPES)
def test_seed_jax(jax, seed, dtype):
    import jax.numpy as jnp
    import numpy as np
    g = matdiff.derive(seed)[-1]
    v = jax_arrays(jax, seed_inputs(np.random.default_rng(1)), dtype)

    def loss(W1):
        return seed_loss({**v, "W1": W1}, jnp, jax.nn.sigmoid)

    want = jax.grad(loss)(v["W1"])
    fns = {"f1": jnp.tanh, "f1_prime": lambda x: 1 - jnp.tanh(x) ** 2,
           "f2": jax.nn.sigmoid, "f2_prime": lambda x: jax.nn.sigmoid(x) * (1 - jax.nn.sigmoid(x))}
    fn = g.jax()
    got = call(fn, v, fns)
    assert got.dtype == jnp.dtype(dtype)
    assert rel(got, want) < TOL[dtype]
    # jax.jit of the generated function, its functions bound.
    jitted = jax.jit(functools.partial(fn, **fns))
    got = jitted(*[v[p] for p in ["W1", "W2", "b1", "b2", "n0", "y"]])
    assert got.dtype == jnp.dtype(dtype)
    assert rel(got, want) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model", MODELS, ids=[m[0] for m in MODELS])
def test_examples_jax(jax, model, dtype):
    import jax.numpy as jnp
    import numpy as np
    name, script, inputs, loss_fn, params = model
    grads, program = derived(script, tuple(params))
    v = jax_arrays(jax, inputs(np.random.default_rng(2)), dtype)

    def loss(*ps):
        return loss_fn({**v, **dict(zip(params, ps))}, jnp, jax.nn)

    value, want = jax.value_and_grad(loss, argnums=tuple(range(len(params))))(*[v[p] for p in params])
    for p, w in zip(params, want):
        a = grads.get(MDIFF_NAMES.get(p, p))
        # JAX runs each eager operation on its own, slowly: the functions of
        # single gradients in float64; the program, jitted, in both.
        if a is None or dtype == "float32":
            continue
        got = call(a.jax(), v)
        assert got.dtype == jnp.dtype(dtype), a.query
        assert rel(got, w) < TOL[dtype], a.query
    fn = program.jax()
    order = list(inspect.signature(fn).parameters)
    got_value, got = jax.jit(fn)(*[v[k] for k in order])
    assert rel(got_value, jnp.reshape(value, (1, 1))) < TOL[dtype]
    for p, g, w in zip(params, got, want):
        assert g.dtype == jnp.dtype(dtype)
        assert rel(g, w) < TOL[dtype], p
