#!/usr/bin/env python3
"""Generated NumPy Hessians against a finite-difference Hessian of the
generated gradient, at n = 1000.

    python3 benches/hessian_eval.py --matdiff target/release/matdiff
"""
import argparse
import subprocess
import timeit

import numpy as np

SCRIPT = """
x: n
A: n x n
X: m x n
w: n
y: m
p = σ(X w)
L = -yᵀ log(p) - (1 - y)ᵀ log(1 - p)
q = xᵀ A x
grad(q, x)
hessian(q, x)
grad(L, w)
hessian(L, w)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--matdiff", default="target/release/matdiff")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("-m", type=int, default=2000)
    args = ap.parse_args()
    code = subprocess.run([args.matdiff, "--format", "numpy", "-e", SCRIPT], check=True, capture_output=True, text=True).stdout
    assert "np.kron" not in code, "a Hessian builds a Kronecker product"
    mod = {}
    exec(code, mod)
    names = [l.split("(")[0][4:] for l in code.splitlines() if l.startswith("def ") and not l.startswith("def _")]
    grad_q, hess_q, grad_l, hess_l = (mod[n] for n in names)
    rng = np.random.default_rng(0)
    n, m = args.n, args.m
    A = rng.standard_normal((n, n))
    x = rng.standard_normal((n, 1))
    X = rng.standard_normal((m, n)) / np.sqrt(n)
    w = rng.standard_normal((n, 1))
    y = (rng.random((m, 1)) < 0.5).astype(float)

    def fd_hessian(grad, v, h=1e-5):
        cols = []
        for i in range(v.shape[0]):
            e = np.zeros_like(v)
            e[i] = h
            cols.append((grad(v + e) - grad(v - e))[:, 0] / (2 * h))
        return np.array(cols).T

    cases = [
        ("xᵀ A x", lambda: hess_q(A), lambda: fd_hessian(lambda v: grad_q(A, v), x)),
        ("logistic loss", lambda: hess_l(X, w, y), lambda: fd_hessian(lambda v: grad_l(X, v, y), w)),
    ]
    print(f"n = {n}, m = {m}")
    print(f"{'Hessian':<16}{'generated':>12}{'finite differences':>22}{'ratio':>10}   max |difference|")
    for name, gen, fd in cases:
        H, F = gen(), fd()
        diff = np.abs(H - F).max() / max(1.0, np.abs(F).max())
        tg = min(timeit.repeat(gen, number=1, repeat=3))
        tf = min(timeit.repeat(fd, number=1, repeat=1))
        print(f"{name:<16}{tg * 1e3:>10.1f} ms{tf * 1e3:>19.1f} ms{tf / tg:>9.0f}x   {diff:.1e}")


if __name__ == "__main__":
    main()
