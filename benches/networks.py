#!/usr/bin/env python3
"""Benchmark of matdiff's generated NumPy gradients on small networks, against
what a user would pick instead: hand-written NumPy backprop, PyTorch autograd
and jax.jit(jax.value_and_grad(...)).

This is a benchmark, not a test: it is not run by `cargo test`. Before any
timing it checks that every method computes the same loss and gradients
(relative error max|got - ref| / max|ref| at most 1e-6 in float64 and 1e-3 in
float32, the reference being the hand-written backprop in float64), and that
the generated code returns float32 arrays for float32 inputs.

Models (the networks of examples/):

  attention    one head: Q = X Wq, K = X Wk, V = X Wv,
               A = softmax(Q Kᵀ / sqrt(h)), O = A V, L = ‖O - Y‖² / T;
               T = 512, d = h = 256; gradients of Wq, Wk, Wv.
  transformer  one block (examples/transformer_block.mdiff): attention,
               residual, row layer norm with gain and bias, two-layer ReLU
               MLP of width f = 1024 (4d) with bias rows, residual, layer
               norm; L = ‖Z - Y‖² / T; T = 512, d = 256; gradients of all 11
               parameters.
  mlp          an L-layer tanh MLP on a batch, Hi = tanh(H(i-1) Wi + bi),
               H0 = X, L = ‖HL - Y‖² / N; N = 1024, width 256, L = 2, 4, 8;
               gradients of every Wi and bi.

Methods, for each model and each of float64 and float32:

  (a) matdiff      the module `matdiff --format numpy` prints for the model's
                   script. The script ends with one query ∂L/∂(P1, P2, …)
                   listing every parameter; the module's
                   value_and_grad_L(...) runs the forward and the backward
                   pass once and returns (L, (∂L/∂P1, …)). A matdiff without
                   that query is given one query ∂L/∂Pi per parameter
                   instead, and the row times all its grad_L_Pi functions
                   called in turn ("per-gradient functions"; each recomputes
                   the forward pass, and no loss is returned to check).
  (b) hand         hand-written NumPy backprop, forward once, backward once
                   (softmax backward A ∘ (G - rowsum(G ∘ A)), the compact
                   layer-norm backward).
  (c) torch        the same forward in torch, loss.backward(); one thread;
                   on the GPU when torch.cuda.is_available() (synchronised
                   before the clock is read). Layer norm is
                   torch.nn.functional.layer_norm.
  (d) jax          jax.jit(jax.value_and_grad(loss, argnums=…)) of the same
                   forward in jax.numpy, block_until_ready(); x64 enabled;
                   XLA on CPU restricted to one thread.

torch and jax are optional: a column whose framework cannot be imported is
skipped with a note.

Usage (from the repository root, after `cargo build --release`):

    python3 benches/networks.py [--matdiff target/release/matdiff]
        [--models attention,transformer,mlp] [--dtype float64,float32]
        [--layers 2,4,8] [--threads 1] [--repeat 11] [--quick]
        [--skip torch,jax] [--keep]

`--quick` is a smoke run: small sizes (T = 64, d = h = 32, f = 64; N = 128,
width 32, L = 2, 4) and 3 repeats; `python3 benches/networks.py --quick
--models attention` takes a few seconds with NumPy alone.

Times are per call of one whole loss-and-gradients evaluation, in ms, after a
warm-up (which also compiles the jax function): the median and the best over
`--repeat` repeats, each repeat timing enough calls (with time.perf_counter)
to last ~`--budget` seconds; the repeats of the methods are interleaved, so
that a busy spell on a shared machine slows all of them alike. "/hand" is the ratio of the median to the
hand-written backprop's median. BLAS, torch and XLA use one thread by default
(`--threads`), which gives steadier numbers on a shared machine.
"""

import argparse
import importlib.util
import inspect
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

np = None     # numpy, imported in main() once the thread counts are set
torch = None  # optional
jax = None    # optional
jnp = None

TOLERANCE = {"float64": 1e-6, "float32": 1e-3}


# --------------------------------------------------------------------------
# The models: .mdiff text, inputs, hand-written backprop, torch and jax forwards
# --------------------------------------------------------------------------
#
# Every model has `params`, a list of (mdiff name, Python name) in query order,
# and `data`, the Python names of its other inputs. Inputs are a dict from the
# Python names (the generated code's parameter names) to 2-D float64 arrays.

class Attention:
    name = "attention"
    params = [("Wq", "Wq"), ("Wk", "Wk"), ("Wv", "Wv")]
    data = ["X", "Y"]

    def __init__(self, quick):
        self.T, self.d, self.h = (64, 32, 32) if quick else (512, 256, 256)
        self.label = f"attention, T = {self.T}, d = h = {self.d}"
        self.sizes = {"T": self.T, "d": self.d, "h": self.h}

    def mdiff(self):
        return (f"# One attention head, generated by benches/networks.py\n"
                "X: T x d\n"
                "Wq, Wk, Wv: d x h\n"
                "Y: T x h\n"
                "Q = X Wq\nK = X Wk\nV = X Wv\n"
                "A = softmax(Q Kᵀ / sqrt(h))\n"
                "O = A V\n"
                "L = ‖O - Y‖² / T\n")

    def inputs(self, rng):
        T, d, h = self.T, self.d, self.h
        v = {"X": rng.standard_normal((T, d)), "Y": 0.5 * rng.standard_normal((T, h))}
        for w in ("Wq", "Wk", "Wv"):
            v[w] = rng.standard_normal((d, h)) / math.sqrt(d)
        return v

    def hand(self, v):
        X, Y, Wq, Wk, Wv = v["X"], v["Y"], v["Wq"], v["Wk"], v["Wv"]
        T = X.shape[0]
        r = 1.0 / math.sqrt(Wq.shape[1])
        Q, K, V = X @ Wq, X @ Wk, X @ Wv
        S = (Q @ K.T) * r
        E = np.exp(S - S.max(axis=1, keepdims=True))
        A = E / E.sum(axis=1, keepdims=True)
        R = A @ V - Y
        loss = np.vdot(R, R) / T
        dO = (2.0 / T) * R
        dV = A.T @ dO
        dA = dO @ V.T
        dS = A * (dA - (dA * A).sum(axis=1, keepdims=True)) * r
        return loss, [X.T @ (dS @ K), X.T @ (dS.T @ Q), X.T @ dV]

    def torch_loss(self, t):
        Q, K, V = t["X"] @ t["Wq"], t["X"] @ t["Wk"], t["X"] @ t["Wv"]
        A = torch.softmax(Q @ K.T / math.sqrt(self.h), dim=1)
        return ((A @ V - t["Y"]) ** 2).sum() / self.T

    def jax_loss(self, Wq, Wk, Wv, X, Y):
        Q, K, V = X @ Wq, X @ Wk, X @ Wv
        A = jax.nn.softmax(Q @ K.T / math.sqrt(self.h), axis=1)
        return jnp.sum((A @ V - Y) ** 2) / self.T


def _layer_norm(H, g, b, eps):
    """Row layer norm, returning (output, normalised rows, standard deviations)."""
    C = H - H.mean(axis=1, keepdims=True)
    s = np.sqrt((C * C).mean(axis=1, keepdims=True) + eps)
    Nh = C / s
    return Nh * g + b, Nh, s


def _layer_norm_backward(dN, g, Nh, s):
    """(∂L/∂H, ∂L/∂g, ∂L/∂b) of N = (H - mean) / s ∘ g + b from ∂L/∂N."""
    dNh = dN * g
    dH = (dNh - dNh.mean(axis=1, keepdims=True) - Nh * (dNh * Nh).mean(axis=1, keepdims=True)) / s
    return dH, (dN * Nh).sum(axis=0, keepdims=True), dN.sum(axis=0, keepdims=True)


class Transformer:
    name = "transformer"
    params = [("Wq", "Wq"), ("Wk", "Wk"), ("Wv", "Wv"), ("γ1", "gamma1"), ("β1", "beta1"),
              ("W1", "W1"), ("b1", "b1"), ("W2", "W2"), ("b2", "b2"), ("γ2", "gamma2"), ("β2", "beta2")]
    data = ["X", "Y", "epsilon"]
    EPS = 1e-5

    def __init__(self, quick):
        self.T, self.d, self.f = (64, 32, 64) if quick else (512, 256, 1024)
        self.label = f"transformer block, T = {self.T}, d = {self.d}, MLP width f = {self.f}"
        self.sizes = {"T": self.T, "d": self.d, "f": self.f}

    def mdiff(self):
        return ("# One transformer block (examples/transformer_block.mdiff), "
                "generated by benches/networks.py\n"
                "X: T x d\nY: T x d\n"
                "Wq, Wk, Wv: d x d\n"
                "γ1, β1: 1 x d\n"
                "W1: d x f\nb1: 1 x f\nW2: f x d\nb2: 1 x d\n"
                "γ2, β2: 1 x d\n"
                "ε: scalar\n"
                "Q = X Wq; K = X Wk; V = X Wv\n"
                "A = softmax(Q Kᵀ / sqrt(d))\n"
                "H1 = X + A V\n"
                "C1 = H1 - H1 ones(d, 1) / d\n"
                "s1 = sqrt((C1 ∘ C1) ones(d, 1) / d + ε)\n"
                "N1 = C1 ./ s1 ∘ γ1 + β1\n"
                "P = N1 W1 + b1\n"
                "H2 = N1 + relu(P) W2 + b2\n"
                "C2 = H2 - H2 ones(d, 1) / d\n"
                "s2 = sqrt((C2 ∘ C2) ones(d, 1) / d + ε)\n"
                "Z = C2 ./ s2 ∘ γ2 + β2\n"
                "L = ‖Z - Y‖² / T\n")

    def inputs(self, rng):
        T, d, f = self.T, self.d, self.f
        v = {"X": rng.standard_normal((T, d)), "Y": rng.standard_normal((T, d)),
             "epsilon": np.full((1, 1), self.EPS)}
        for w in ("Wq", "Wk", "Wv"):
            v[w] = rng.standard_normal((d, d)) / math.sqrt(d)
        v["W1"] = rng.standard_normal((d, f)) / math.sqrt(d)
        v["W2"] = rng.standard_normal((f, d)) / math.sqrt(f)
        for b, n in (("b1", f), ("b2", d), ("beta1", d), ("beta2", d)):
            v[b] = 0.1 * rng.standard_normal((1, n))
        for g in ("gamma1", "gamma2"):
            v[g] = 1.0 + 0.1 * rng.standard_normal((1, d))
        return v

    def hand(self, v):
        X, Y = v["X"], v["Y"]
        eps = v["epsilon"]
        T, d = X.shape
        r = 1.0 / math.sqrt(d)
        Q, K, V = X @ v["Wq"], X @ v["Wk"], X @ v["Wv"]
        S = (Q @ K.T) * r
        E = np.exp(S - S.max(axis=1, keepdims=True))
        A = E / E.sum(axis=1, keepdims=True)
        H1 = X + A @ V
        N1, Nh1, s1 = _layer_norm(H1, v["gamma1"], v["beta1"], eps)
        P = N1 @ v["W1"] + v["b1"]
        Rl = np.maximum(P, 0.0)
        H2 = N1 + Rl @ v["W2"] + v["b2"]
        Z, Nh2, s2 = _layer_norm(H2, v["gamma2"], v["beta2"], eps)
        R = Z - Y
        loss = np.vdot(R, R) / T
        dZ = (2.0 / T) * R
        dH2, dg2, db2_ = _layer_norm_backward(dZ, v["gamma2"], Nh2, s2)
        dW2 = Rl.T @ dH2
        db2 = dH2.sum(axis=0, keepdims=True)
        dP = (dH2 @ v["W2"].T) * (P > 0)
        dW1 = N1.T @ dP
        db1 = dP.sum(axis=0, keepdims=True)
        dN1 = dH2 + dP @ v["W1"].T
        dH1, dg1, db1_ = _layer_norm_backward(dN1, v["gamma1"], Nh1, s1)
        dV = A.T @ dH1
        dA = dH1 @ V.T
        dS = A * (dA - (dA * A).sum(axis=1, keepdims=True)) * r
        return loss, [X.T @ (dS @ K), X.T @ (dS.T @ Q), X.T @ dV, dg1, db1_,
                      dW1, db1, dW2, db2, dg2, db2_]

    def torch_loss(self, t):
        F = torch.nn.functional
        d = self.d
        X = t["X"]
        Q, K, V = X @ t["Wq"], X @ t["Wk"], X @ t["Wv"]
        A = torch.softmax(Q @ K.T / math.sqrt(d), dim=1)
        H1 = X + A @ V
        N1 = F.layer_norm(H1, (d,), t["gamma1"].reshape(d), t["beta1"].reshape(d), eps=self.EPS)
        H2 = N1 + torch.relu(N1 @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"]
        Z = F.layer_norm(H2, (d,), t["gamma2"].reshape(d), t["beta2"].reshape(d), eps=self.EPS)
        return ((Z - t["Y"]) ** 2).sum() / self.T

    def jax_loss(self, Wq, Wk, Wv, gamma1, beta1, W1, b1, W2, b2, gamma2, beta2, X, Y):
        def ln(H, g, b):
            C = H - jnp.mean(H, axis=1, keepdims=True)
            return C / jnp.sqrt(jnp.mean(C * C, axis=1, keepdims=True) + self.EPS) * g + b
        Q, K, V = X @ Wq, X @ Wk, X @ Wv
        A = jax.nn.softmax(Q @ K.T / math.sqrt(self.d), axis=1)
        N1 = ln(X + A @ V, gamma1, beta1)
        H2 = N1 + jax.nn.relu(N1 @ W1 + b1) @ W2 + b2
        return jnp.sum((ln(H2, gamma2, beta2) - Y) ** 2) / self.T


class MLP:
    name = "mlp"
    data = ["X", "Y"]

    def __init__(self, quick, layers):
        self.layers = layers
        self.N, self.w = (128, 32) if quick else (1024, 256)
        self.params = [p for i in range(1, layers + 1) for p in ((f"W{i}", f"W{i}"), (f"b{i}", f"b{i}"))]
        self.label = f"tanh MLP, L = {layers}, N = {self.N}, width {self.w}"
        self.sizes = {"N": self.N, "n": self.w}

    def mdiff(self):
        out = [f"# {self.layers}-layer tanh MLP on a batch, generated by benches/networks.py",
               "X: N x n", "Y: N x n"]
        for i in range(1, self.layers + 1):
            out += [f"W{i}: n x n", f"b{i}: 1 x n"]
        for i in range(1, self.layers + 1):
            out.append(f"H{i} = tanh({'X' if i == 1 else f'H{i - 1}'} W{i} + b{i})")
        out.append(f"L = ‖H{self.layers} - Y‖² / N")
        return "\n".join(out) + "\n"

    def inputs(self, rng):
        v = {"X": rng.standard_normal((self.N, self.w)), "Y": rng.uniform(-0.5, 0.5, (self.N, self.w))}
        for i in range(1, self.layers + 1):
            v[f"W{i}"] = rng.standard_normal((self.w, self.w)) / math.sqrt(self.w)
            v[f"b{i}"] = 0.1 * rng.standard_normal((1, self.w))
        return v

    def hand(self, v):
        n = self.layers
        Hs = [v["X"]]
        for i in range(1, n + 1):
            Hs.append(np.tanh(Hs[-1] @ v[f"W{i}"] + v[f"b{i}"]))
        N = v["X"].shape[0]
        R = Hs[-1] - v["Y"]
        loss = np.vdot(R, R) / N
        dH = (2.0 / N) * R
        grads = [None] * (2 * n)
        for i in range(n, 0, -1):
            dD = dH * (1.0 - Hs[i] * Hs[i])
            grads[2 * i - 2] = Hs[i - 1].T @ dD
            grads[2 * i - 1] = dD.sum(axis=0, keepdims=True)
            if i > 1:
                dH = dD @ v[f"W{i}"].T
        return loss, grads

    def torch_loss(self, t):
        H = t["X"]
        for i in range(1, self.layers + 1):
            H = torch.tanh(H @ t[f"W{i}"] + t[f"b{i}"])
        return ((H - t["Y"]) ** 2).sum() / self.N

    def jax_loss(self, *args):
        *ps, X, Y = args
        H = X
        for i in range(self.layers):
            H = jnp.tanh(H @ ps[2 * i] + ps[2 * i + 1])
        return jnp.sum((H - Y) ** 2) / self.N


# --------------------------------------------------------------------------
# matdiff's generated code
# --------------------------------------------------------------------------

def load_module(path, tag):
    spec = importlib.util.spec_from_file_location(f"mdiff_{tag}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def arguments(sig, v, sizes, where):
    """Keyword arguments by name for a generated function's parameters `sig`:
    the inputs, and sizes that no array carries."""
    missing = [k for k in sig if k not in v and k not in sizes]
    if missing:
        sys.exit(f"{where} wants unknown parameters {missing}")
    return {k: (v[k] if k in v else sizes[k]) for k in sig}


def generate(matdiff, model, workdir):
    """matdiff's code for `model`: (path label, bind, module path, derivation
    seconds, notes), where bind(inputs) is a function of no arguments that
    returns (loss, or None from the per-gradient functions, [gradients in
    query order])."""
    tag = model.name + (str(model.layers) if isinstance(model, MLP) else "")
    names = [m for m, _ in model.params]
    tries = [("one", f"∂L/∂({', '.join(names)})\n"),
             ("per", "".join(f"∂L/∂{m}\n" for m in names))]
    known = dict.fromkeys([p for _, p in model.params] + model.data)
    notes = []
    for kind, queries in tries:
        src = os.path.join(workdir, f"{tag}_{kind}.mdiff")
        with open(src, "w", encoding="utf-8") as fh:
            fh.write(model.mdiff() + "\n" + queries)
        t0 = time.perf_counter()
        proc = subprocess.run([matdiff, "--format", "numpy", src], capture_output=True, text=True)
        derive = time.perf_counter() - t0
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["?"])[0]
            first = first.replace(src, os.path.basename(src))
            notes.append(f"the ∂L/∂(…) query failed (exit {proc.returncode}): {first[:110]}"
                         if kind == "one" else f"exit {proc.returncode}: {first}")
            continue
        py = os.path.join(workdir, f"{tag}_{kind}.py")
        with open(py, "w", encoding="utf-8") as fh:
            fh.write(proc.stdout)
        mod = load_module(py, f"{tag}_{kind}")
        if kind == "one":
            fn = getattr(mod, "value_and_grad_L", None)
            if fn is None:
                notes.append("the ∂L/∂(…) query gave no value_and_grad_L in the module")
                continue
            sig = list(inspect.signature(fn).parameters)
            arguments(sig, known, model.sizes, f"{py}: value_and_grad_L")

            def bind(v, fn=fn, sig=sig):
                kw = arguments(sig, v, model.sizes, "value_and_grad_L")

                def call():
                    loss, grads = fn(**kw)
                    return loss, list(grads)
                return call
            return "value_and_grad_L", bind, py, derive, notes
        funcs = []
        for _, py_name in model.params:
            f = getattr(mod, f"grad_L_{py_name}", None)
            if f is None:
                sys.exit(f"{py}: no grad_L_{py_name}; it has "
                         f"{[k for k in vars(mod) if k.startswith('grad')]}")
            sig = list(inspect.signature(f).parameters)
            arguments(sig, known, model.sizes, f"{py}: grad_L_{py_name}")
            funcs.append((f, sig))

        def bind(v, funcs=funcs):
            calls = [(f, arguments(sig, v, model.sizes, f.__name__)) for f, sig in funcs]
            return lambda: (None, [f(**kw) for f, kw in calls])
        return "per-gradient functions", bind, py, derive, notes
    sys.exit(f"matdiff could not derive the {model.name} gradients:\n  " + "\n  ".join(notes))


# --------------------------------------------------------------------------
# torch and jax
# --------------------------------------------------------------------------

def torch_method(model, v, dtype):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tdt = {"float64": torch.float64, "float32": torch.float32}[dtype]
    pnames = [p for _, p in model.params]
    t = {k: torch.tensor(v[k], dtype=tdt, device=dev) for k in pnames + model.data if k != "epsilon"}
    for p in pnames:
        t[p].requires_grad_(True)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def run():
        for p in pnames:
            t[p].grad = None
        loss = model.torch_loss(t)
        loss.backward()
        sync()
        return loss.detach(), [t[p].grad for p in pnames]

    def to_numpy(res):
        loss, grads = res
        return loss.cpu().numpy(), [g.cpu().numpy() for g in grads]
    return f"torch ({dev})", run, to_numpy


def jax_method(model, v, dtype):
    pnames = [p for _, p in model.params]
    data = [k for k in model.data if k != "epsilon"]
    args = [jax.device_put(jnp.asarray(v[k], dtype=dtype)) for k in pnames + data]
    f = jax.jit(jax.value_and_grad(model.jax_loss, argnums=tuple(range(len(pnames)))))

    def run():
        loss, grads = f(*args)
        loss.block_until_ready()
        for g in grads:
            g.block_until_ready()
        return loss, list(grads)

    def to_numpy(res):
        loss, grads = res
        return np.asarray(loss), [np.asarray(g) for g in grads]
    return f"jax.jit ({jax.default_backend()})", run, to_numpy


# --------------------------------------------------------------------------
# Checking and timing
# --------------------------------------------------------------------------

def rel_err(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.size != want.size:
        return float("inf")
    got = got.reshape(want.shape)
    scale = np.max(np.abs(want))
    return float(np.max(np.abs(got - want)) / (scale if scale > 0 else 1.0))


def time_all(fns, repeat, budget):
    """[(median, best) seconds per call] of each fn() over `repeat` repeats of
    ~budget s each. The repeats are interleaved (one of each method in turn),
    so that a busy spell on a shared machine slows every method alike."""
    return [(statistics.median(ts), min(ts)) for ts in time_repeats(fns, repeat, budget)]


def time_repeats(fns, repeat, budget):
    """The seconds per call of each fn() in each of `repeat` interleaved
    repeats of ~budget s: [[repeat 1, repeat 2, …] per fn]."""
    numbers = []
    for fn in fns:
        fn()                                 # warm-up (jit compile, caches)
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
        numbers.append(max(1, int(budget / max(first, 1e-7))))
    per_call = [[] for _ in fns]
    for _ in range(repeat):
        for fn, number, out in zip(fns, numbers, per_call):
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            out.append((time.perf_counter() - t0) / number)
    return per_call


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--matdiff", default="target/release/matdiff", help="path to the matdiff binary")
    ap.add_argument("--models", default="attention,transformer,mlp",
                    help="comma-separated: attention, transformer, mlp")
    ap.add_argument("--dtype", default="float64,float32", help="float64, float32 or both (comma-separated)")
    ap.add_argument("--layers", default=None, help="MLP layer counts (default 2,4,8; 2,4 with --quick)")
    ap.add_argument("--threads", default="1",
                    help="BLAS, torch and XLA threads (1 unless 'default', which leaves them alone)")
    ap.add_argument("--repeat", type=int, default=None, help="timing repeats (default 11; 3 with --quick)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per repeat (default 0.05; 0.005 with --quick)")
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats: a smoke run")
    ap.add_argument("--skip", default="", help="comma-separated frameworks not to run: torch, jax")
    ap.add_argument("--keep", action="store_true", help="keep and print the directory of generated files")
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    for m in models:
        if m not in ("attention", "transformer", "mlp"):
            ap.error(f"unknown model {m!r}")
    for d in dtypes:
        if d not in TOLERANCE:
            ap.error(f"unknown dtype {d!r}")
    layer_counts = [int(s) for s in (args.layers or ("2,4" if args.quick else "2,4,8")).split(",")]
    repeat = args.repeat or (3 if args.quick else 11)
    budget = args.budget if args.budget is not None else (0.005 if args.quick else 0.05)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    if args.threads != "default":
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, args.threads)
        if args.threads == "1":
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1").strip()
    global np, torch, jax, jnp
    import numpy
    np = numpy
    notes = []
    if "torch" in skip:
        notes.append("torch: skipped (--skip)")
    else:
        try:
            import torch as _torch
            torch = _torch
            if args.threads != "default":
                torch.set_num_threads(int(args.threads))
        except ImportError as e:
            notes.append(f"torch: not importable ({e}); its column is skipped")
    if "jax" in skip:
        notes.append("jax: skipped (--skip)")
    else:
        try:
            import jax as _jax
            jax = _jax
            if "float64" in dtypes:
                jax.config.update("jax_enable_x64", True)
            import jax.numpy as _jnp
            jnp = _jnp
        except ImportError as e:
            notes.append(f"jax: not importable ({e}); its column is skipped")

    matdiff = args.matdiff
    if not os.path.isfile(matdiff):
        sys.exit(f"no matdiff binary at {matdiff} (build with cargo build --release or pass --matdiff)")
    workdir = tempfile.mkdtemp(prefix="matdiff-networks-bench-")
    started = time.perf_counter()

    versions = [f"numpy {np.__version__}"]
    if torch is not None:
        versions.append(f"torch {torch.__version__} ({'cuda' if torch.cuda.is_available() else 'cpu'}, "
                        f"{torch.get_num_threads()} thread(s))")
    if jax is not None:
        versions.append(f"jax {jax.__version__} ({jax.default_backend()})")
    print(f"{', '.join(versions)}, python {sys.version.split()[0]}")
    print(f"matdiff {matdiff}; BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"median and best of {repeat} repeats of ~{budget:g} s")
    for n in notes:
        print("note: " + n)
    print()

    instances = []
    for m in models:
        if m == "attention":
            instances.append(Attention(args.quick))
        elif m == "transformer":
            instances.append(Transformer(args.quick))
        else:
            instances += [MLP(args.quick, n) for n in layer_counts]

    failures, summary, dtype_gaps = [], [], []
    for model in instances:
        path_label, gen_bind, py, derive, gen_notes = generate(matdiff, model, workdir)
        rng = np.random.default_rng(0)
        v64 = model.inputs(rng)
        ref_loss, ref_grads = model.hand(v64)
        pnames = [p for _, p in model.params]
        for dtype in dtypes:
            tol = TOLERANCE[dtype]
            v = {k: a.astype(dtype) for k, a in v64.items()}
            methods = [("matdiff", f"matdiff: {path_label}", gen_bind(v), lambda r: r),
                       ("hand", "hand-written backprop", lambda vv=v: model.hand(vv), lambda r: r)]
            skipped = []
            for fw, make in (("torch", torch_method), ("jax", jax_method)):
                if (torch if fw == "torch" else jax) is None:
                    skipped.append(fw)
                    continue
                label, run, to_np = make(model, v64, dtype)
                methods.append((fw, label, run, to_np))

            # Agreement before timing, against the float64 hand-written backprop.
            errs = {}
            for key, label, run, to_np in methods:
                loss, grads = to_np(run())
                e_loss = None if loss is None else rel_err(loss, ref_loss)
                e_grads = [rel_err(g, r) for g, r in zip(grads, ref_grads)]
                if len(grads) != len(ref_grads):
                    failures.append(f"{model.label} {dtype} {label}: {len(grads)} gradients, "
                                    f"want {len(ref_grads)}")
                worst = max([e for e in [e_loss] + e_grads if e is not None])
                errs[label] = (e_loss, worst)
                if worst > tol:
                    bad = [pnames[i] for i, e in enumerate(e_grads) if e > tol]
                    if e_loss is not None and e_loss > tol:
                        bad.insert(0, "L")
                    failures.append(f"{model.label} {dtype} {label}: relative error {worst:.2e} > {tol:g} "
                                    f"in {', '.join(bad)}")
                if key == "matdiff" and dtype == "float32":
                    got = sorted({str(np.asarray(g).dtype) for g in grads}
                                 | ({str(np.asarray(loss).dtype)} if loss is not None else set()))
                    if got != ["float32"]:
                        dtype_gaps.append(f"{model.label}: float32 inputs give {'/'.join(got)} results")

            times = time_all([run for _, _, run, _ in methods], repeat, budget)
            rows = [(key, label, med, best) for (key, label, _, _), (med, best) in zip(methods, times)]
            hand_med = rows[1][2]

            print(f"{model.label}, {dtype}  (matdiff: {path_label}, derived in {derive * 1e3:.0f} ms)")
            hdr = (f"  {'method':<34} {'median ms':>10} {'best ms':>10} {'/hand':>7}   "
                   f"{'rel. err (L; worst)':>20}")
            print(hdr)
            print("  " + "-" * (len(hdr) - 2))
            for _, label, med, best in rows:
                e_loss, worst = errs[label]
                el = "n/a" if e_loss is None else f"{e_loss:.1e}"
                print(f"  {label:<34} {med * 1e3:>10.3f} {best * 1e3:>10.3f} {med / hand_med:>6.2f}x"
                      f"   {el:>9}; {worst:.1e}")
            for fw in skipped:
                print(f"  {fw:<34} {'skipped (not importable or --skip)':>40}")
            for n in gen_notes:
                print(f"  (matdiff: {n})")
            print()
            summary.append((model, dtype, {key: med / hand_med for key, _, med, _ in rows if key != "hand"}))

    if dtype_gaps:
        print("Generated code does not keep float32 (SPEC §7):")
        for g in dtype_gaps:
            print("  " + g)
    if failures:
        print("DISAGREEMENTS (timings above are of wrong results):")
        for f in failures:
            print("  " + f)
    else:
        print("All methods agree with the float64 hand-written backprop on the loss and every gradient "
              "(rel. err ≤ 1e-6 in float64, ≤ 1e-3 in float32) before timing.")
    short = []
    for model, dtype, ratios in summary:
        name = model.name + (f"{model.layers}" if isinstance(model, MLP) else "")
        short.append(f"{name} {dtype[-2:]} " + " ".join(f"{k} {r:.2f}x" for k, r in ratios.items()))
    print("Summary, median / hand-written backprop median: " + "; ".join(short))
    print(f"Total wall time {time.perf_counter() - started:.1f} s")
    if args.keep:
        print(f"Generated files kept in {workdir}")
    else:
        for name in os.listdir(workdir):
            os.remove(os.path.join(workdir, name))
        os.rmdir(workdir)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
