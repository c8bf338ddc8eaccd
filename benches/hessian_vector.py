#!/usr/bin/env python3
"""Generated NumPy Hessian-vector products against the generated gradient
of the same function, at n = 2000 (and against forming the Hessian, and
jax.jvp of jax.grad when JAX is installed).

`hessian(f, x) v` is derived as the gradient of `(∂f/∂x)ᵀ v`, so its code
should cost a small multiple of one gradient, never the n² of the Hessian.

    python3 benches/hessian_vector.py --matdiff target/release/matdiff
"""
import argparse
import os
import subprocess
import sys
import timeit

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
import numpy as np  # noqa: E402

MODELS = {
    # Logistic regression: m examples, n weights.
    "logistic": (
        """
X: m x n
y: m
w, v: n
p = σ(X w)
L = -(yᵀ log(p) + (1 - y)ᵀ log(1 - p)) / m
grad(L, w)
hessian(L, w) v
hessian(L, w)
""",
        "w",
    ),
    # A tanh layer and a squared error: n inputs, m outputs.
    "tanh layer": (
        """
A: m x n
y: m
x, v: n
L = ‖tanh(A x) - y‖²
grad(L, x)
hessian(L, x) v
hessian(L, x)
""",
        "x",
    ),
}


def functions(matdiff, script):
    code = subprocess.run(
        [matdiff, "--format", "numpy", "-e", script], check=True, capture_output=True, text=True
    ).stdout
    mod = {}
    exec(code, mod)
    names = [l.split("(")[0][4:] for l in code.splitlines() if l.startswith("def ") and not l.startswith("def _")]
    return [mod[n] for n in names]


def timed(f, repeat):
    times = timeit.repeat(f, number=1, repeat=repeat)
    return 1e3 * float(np.median(times)), 1e3 * min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--matdiff", default="target/release/matdiff")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("-m", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats: a smoke run")
    ap.add_argument("--no-jax", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.n, args.m, args.repeat = 200, 300, 3
    n, m = args.n, args.m
    rng = np.random.default_rng(0)
    jax = None
    if not args.no_jax:
        try:
            os.environ.setdefault("JAX_PLATFORMS", "cpu")
            os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
            import jax  # noqa: F401

            jax.config.update("jax_enable_x64", True)
        except ImportError:
            jax = None
    print(f"n = {n}, m = {m}, float64, one thread; median / best of {args.repeat}, ms")
    print(f"{'model':<12} {'gradient':>16} {'H v':>16} {'ratio':>6} {'H, then H v':>16} {'jax jvp∘grad':>16}")
    worst = 0.0
    for model, (script, var) in MODELS.items():
        grad, hvp, hess = functions(args.matdiff, script)
        if model == "logistic":
            data = {"X": rng.standard_normal((m, n)) / np.sqrt(n), "y": (rng.random((m, 1)) < 0.5) * 1.0}
        else:
            data = {"A": rng.standard_normal((m, n)) / np.sqrt(n), "y": rng.standard_normal((m, 1))}
        at = {var: rng.standard_normal((n, 1)), "v": rng.standard_normal((n, 1))}
        kw = lambda f: {k: v for k, v in {**data, **at}.items() if k in f.__code__.co_varnames[: f.__code__.co_argcount]}
        g_args, hv_args, h_args = kw(grad), kw(hvp), kw(hess)
        # The product agrees with the Hessian's.
        H = hess(**h_args)
        want = H @ at["v"]
        got = hvp(**hv_args)
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err < 1e-10, f"{model}: H v differs from the Hessian's product by {err:.1e}"
        t_grad = timed(lambda: grad(**g_args), args.repeat)
        t_hvp = timed(lambda: hvp(**hv_args), args.repeat)
        t_full = timed(lambda: hess(**h_args) @ at["v"], max(3, args.repeat // 3))
        ratio = t_hvp[0] / t_grad[0]
        worst = max(worst, ratio)
        jax_cell = "—"
        if jax is not None:
            jnp = jax.numpy
            if model == "logistic":
                X, y = jnp.asarray(data["X"]), jnp.asarray(data["y"])

                def loss(w):
                    p = jax.nn.sigmoid(X @ w)
                    return -(y.T @ jnp.log(p) + (1 - y).T @ jnp.log(1 - p))[0, 0] / m
            else:
                A, y = jnp.asarray(data["A"]), jnp.asarray(data["y"])

                def loss(x):
                    r = jnp.tanh(A @ x) - y
                    return jnp.sum(r * r)

            jhvp = jax.jit(lambda x, v: jax.jvp(jax.grad(loss), (x,), (v,))[1])
            x0, v0 = jnp.asarray(at[var]), jnp.asarray(at["v"])
            jax_err = float(np.abs(np.asarray(jhvp(x0, v0)) - want).max() / np.abs(want).max())
            assert jax_err < 1e-8, f"{model}: JAX's H v differs by {jax_err:.1e}"
            t = timed(lambda: jhvp(x0, v0).block_until_ready(), args.repeat)
            jax_cell = f"{t[0]:7.2f} / {t[1]:6.2f}"
        print(
            f"{model:<12} {t_grad[0]:7.2f} / {t_grad[1]:6.2f} {t_hvp[0]:7.2f} / {t_hvp[1]:6.2f} {ratio:5.2f}×"
            f" {t_full[0]:7.1f} / {t_full[1]:6.1f} {jax_cell:>16}"
        )
    print(f"largest H v / gradient ratio: {worst:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
