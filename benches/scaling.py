#!/usr/bin/env python3
"""Whole-process derivation time and printed size against depth.

A benchmark, not a test. For an MLP on a batch (tanh layers with biases),
an RNN cell unrolled over T steps and a residual chain
z_i = tanh(W_i z_{i-1}) + z_{i-1}, it writes the script asking for every
parameter's gradient as one backward program `∂L/∂(…)` (and, with
`--single`, as one query each), runs `matdiff` on it several times and
prints the median and best wall time of the whole process, the printed size,
and the ratios of the deepest to the shallowest (linear growth is
depth ratio). A 12-block transformer is timed the same way.

Usage (after `cargo build --release`):

    python3 benches/scaling.py [--matdiff target/release/matdiff] [--repeat 7] [--single]
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time


def deep(kind, depth, program=True):
    """The script of a deep network, asking for every parameter's gradient."""
    lines = []
    if kind == "mlp":
        lines += ["X: N x n; Y: N x n", "H0 = X"]
        for i in range(1, depth + 1):
            lines += [f"W{i}: n x n; b{i}: 1 x n", f"H{i} = tanh(H{i - 1} W{i} + b{i})"]
        lines.append(f"L = ‖H{depth} - Y‖² / N")
        params = [p for i in range(1, depth + 1) for p in (f"W{i}", f"b{i}")]
    elif kind == "rnn":
        lines.append("W, U: n x n; b, y, h0: 1 x n")
        for t in range(1, depth + 1):
            lines += [f"x{t}: 1 x n", f"h{t} = tanh(h{t - 1} W + x{t} U + b)"]
        lines.append(f"L = ‖h{depth} - y‖²")
        params = ["W", "U", "b"]
    elif kind == "residual":
        lines += ["x, y: n", "z0 = x"]
        for i in range(1, depth + 1):
            lines += [f"W{i}: n x n", f"z{i} = tanh(W{i} z{i - 1}) + z{i - 1}"]
        lines.append(f"L = ‖z{depth} - y‖²")
        params = [f"W{i}" for i in range(1, depth + 1)]
    else:
        raise ValueError(kind)
    if program:
        lines.append("∂L/∂(" + ", ".join(params) + ")")
    else:
        lines += [f"∂L/∂{p}" for p in params]
    return "\n".join(lines) + "\n"


def transformer(blocks, program=True):
    """`blocks` transformer blocks, asking for every parameter's gradient."""
    lines = ["X0, Y: T x d", "ε: scalar"]
    params = []
    for i in range(1, blocks + 1):
        x = f"X{i - 1}"
        lines += [
            f"Wq{i}, Wk{i}, Wv{i}: d x d", f"g{i}, c{i}, h{i}, e{i}: 1 x d",
            f"U{i}: d x f", f"u{i}: 1 x f", f"P{i}: f x d", f"p{i}: 1 x d",
            f"A{i} = softmax({x} Wq{i} ({x} Wk{i})ᵀ / sqrt(d))",
            f"R{i} = {x} + A{i} {x} Wv{i}",
            f"C{i} = R{i} - R{i} ones(d, 1) / d",
            f"N{i} = C{i} ./ sqrt((C{i} ∘ C{i}) ones(d, 1) / d + ε) ∘ g{i} + c{i}",
            f"G{i} = N{i} + relu(N{i} U{i} + u{i}) P{i} + p{i}",
            f"D{i} = G{i} - G{i} ones(d, 1) / d",
            f"X{i} = D{i} ./ sqrt((D{i} ∘ D{i}) ones(d, 1) / d + ε) ∘ h{i} + e{i}",
        ]
        params += [f"{p}{i}" for p in ["Wq", "Wk", "Wv", "g", "c", "U", "u", "P", "p", "h", "e"]]
    lines.append(f"L = ‖X{blocks} - Y‖² / T")
    if program:
        lines.append("∂L/∂(" + ", ".join(params) + ")")
    else:
        lines += [f"∂L/∂{p}" for p in params]
    return "\n".join(lines) + "\n"


def run(matdiff, script, repeat):
    """Median and best wall time (s) of `matdiff script`, and its output size."""
    with tempfile.NamedTemporaryFile("w", suffix=".mdiff", delete=False, encoding="utf-8") as f:
        f.write(script)
        path = f.name
    try:
        times, size = [], 0
        for _ in range(repeat):
            start = time.perf_counter()
            out = subprocess.run([matdiff, path], capture_output=True, check=True)
            times.append(time.perf_counter() - start)
            size = len(out.stdout)
        return statistics.median(times), min(times), size
    finally:
        os.unlink(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matdiff", default="target/release/matdiff")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--single", action="store_true", help="also time one query per parameter")
    args = ap.parse_args()
    print(f"{'network':<28}{'depth':>6}{'median ms':>11}{'best ms':>9}{'bytes':>10}")
    modes = [True, False] if args.single else [True]
    for program in modes:
        how = "one program" if program else "one query each"
        for kind in ["mlp", "rnn", "residual"]:
            rows = {}
            for depth in [32, 64, 128, 256]:
                med, best, size = run(args.matdiff, deep(kind, depth, program), args.repeat)
                rows[depth] = (med, best, size)
                print(f"{kind + ', ' + how:<28}{depth:>6}{med * 1e3:>11.1f}{best * 1e3:>9.1f}{size:>10}")
            (m32, _, s32), (m256, _, s256) = rows[32], rows[256]
            print(f"{'':<28}{'256/32':>6}{m256 / m32:>11.1f}{'':>9}{s256 / s32:>10.1f}")
        med, best, size = run(args.matdiff, transformer(12, program), args.repeat)
        print(f"{'transformer, ' + how:<28}{'12':>6}{med * 1e3:>11.1f}{best * 1e3:>9.1f}{size:>10}")


if __name__ == "__main__":
    main()
