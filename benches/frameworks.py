#!/usr/bin/env python3
"""Benchmark of matdiff's generated JAX and PyTorch gradients against the
frameworks' own automatic differentiation of the same model.

This is a benchmark, not a test: it is not run by `cargo test`. It uses the
Python package (`pip install ./python`) and the models of
benches/networks.py:

  transformer  one block (examples/transformer_block.mdiff): attention,
               residual, layer norm, two-layer ReLU MLP of width 4d,
               residual, layer norm; T = 512, d = 256; all 11 parameters.
  mlp          an L-layer tanh MLP on a batch, N = 1024, width 256,
               L = 2, 4, 8; every Wi and bi.

For each model, matdiff derives one query ∂L/∂(P1, P2, …) listing every
parameter; its answer's `.torch()` and `.jax()` are the functions
value_and_grad_L(...), which run the forward pass once and the backward pass
once and return (L, (∂L/∂P1, …)). Methods, for each of float64 and float32:

  matdiff torch   the generated PyTorch function (with `--torch-compile`,
                  also torch.compile of it, compared with autograd too)
  torch autograd  the same forward in torch, loss.backward()
  matdiff jax     jax.jit of the generated JAX function
  jax autodiff    jax.jit(jax.value_and_grad(loss, argnums=…)) of the same
                  forward in jax.numpy

Both frameworks run on a GPU when one is present (torch.cuda.is_available(),
jax.default_backend() != "cpu"; synchronised before the clock is read),
otherwise on the CPU with one thread (torch.set_num_threads(1), XLA without
its multi-threaded Eigen; `--threads default` leaves them alone). Before any
timing, every method's loss and gradients are compared with the float64
hand-written NumPy backprop of networks.py (relative error at most 1e-6 in
float64, 1e-3 in float32), and the generated code's results must keep the
inputs' dtype.

Times are per call, in ms, after a warm-up (which also compiles the jitted
functions): the median and the best over `--repeat` repeats of ~`--budget`
seconds each, the repeats of all methods interleaved so that a busy spell on
a shared machine slows them alike. "gen/fw" is the median over the repeats
of the generated code's time over its framework's in the same repeat: the
two run one after the other, so a busy spell slows both and cancels out. For JAX the table also gives XLA's cost analysis
(flops and bytes accessed) of both compiled programs: the work each does,
free of the timing noise of a shared machine.

Usage (from the repository root, after `pip install ./python`):

    python3 benches/frameworks.py [--models transformer,mlp] [--layers 2,4,8]
        [--dtype float64,float32] [--threads 1] [--repeat 11] [--budget 0.1]
        [--skip torch,jax] [--torch-compile] [--quick]

`--quick` is a smoke run: small sizes (T = 64, d = 32; N = 128, width 32,
L = 2) and 3 repeats.
"""

import argparse
import inspect
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="transformer,mlp", help="comma-separated: transformer, mlp")
    ap.add_argument("--layers", default=None, help="MLP layer counts (default 2,4,8; 2 with --quick)")
    ap.add_argument("--dtype", default="float64,float32", help="float64, float32 or both (comma-separated)")
    ap.add_argument("--threads", default="1", help="torch and XLA CPU threads (1 unless 'default')")
    ap.add_argument("--repeat", type=int, default=None, help="timing repeats (default 11; 3 with --quick)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per repeat and method (default 0.1; 0.005 with --quick)")
    ap.add_argument("--skip", default="", help="comma-separated frameworks not to run: torch, jax")
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats: a smoke run")
    ap.add_argument("--torch-compile", action="store_true",
                    help="also time torch.compile of the generated PyTorch function (slow to compile)")
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    for m in models:
        if m not in ("transformer", "mlp"):
            ap.error(f"unknown model {m!r}")
    for d in dtypes:
        if d not in ("float64", "float32"):
            ap.error(f"unknown dtype {d!r}")
    layer_counts = [int(s) for s in (args.layers or ("2" if args.quick else "2,4,8")).split(",")]
    repeat = args.repeat or (3 if args.quick else 11)
    budget = args.budget if args.budget is not None else (0.005 if args.quick else 0.1)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    # Thread counts before the frameworks are imported.
    if args.threads != "default":
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, args.threads)
        if args.threads == "1":
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1").strip()
    sys.path.insert(0, HERE)
    import networks
    import numpy as np
    networks.np = np
    try:
        import matdiff
    except ImportError as e:
        sys.exit(f"the matdiff Python package is not installed ({e}): pip install ./python")

    torch = jax = jnp = None
    notes = []
    if "torch" not in skip:
        try:
            import torch
            if args.threads != "default" and not torch.cuda.is_available():
                torch.set_num_threads(int(args.threads))
            networks.torch = torch
        except ImportError as e:
            notes.append(f"torch: not importable ({e}); skipped")
    if "jax" not in skip:
        try:
            import jax
            if "float64" in dtypes:
                jax.config.update("jax_enable_x64", True)
            import jax.numpy as jnp
            networks.jax, networks.jnp = jax, jnp
        except ImportError as e:
            notes.append(f"jax: not importable ({e}); skipped")
    if torch is None and jax is None:
        sys.exit("neither torch nor jax can be imported: nothing to compare")

    versions = [f"matdiff {matdiff.__version__}", f"numpy {np.__version__}"]
    if torch is not None:
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        versions.append(f"torch {torch.__version__} ({dev}, {torch.get_num_threads()} thread(s))")
    if jax is not None:
        versions.append(f"jax {jax.__version__} ({jax.default_backend()})")
    print(f"{', '.join(versions)}, python {sys.version.split()[0]}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; XLA_FLAGS "
          f"{os.environ.get('XLA_FLAGS', '(none)')!r}; median and best of {repeat} repeats of ~{budget:g} s")
    for n in notes:
        print("note: " + n)
    print()

    instances = []
    for m in models:
        if m == "transformer":
            instances.append(networks.Transformer(args.quick))
        else:
            instances += [networks.MLP(args.quick, n) for n in layer_counts]

    started = time.perf_counter()
    failures, summary, slower = [], [], []
    for model in instances:
        names = [m for m, _ in model.params]
        pnames = [p for _, p in model.params]
        t0 = time.perf_counter()
        program = matdiff.derive(model.mdiff() + f"\n∂L/∂({', '.join(names)})\n")[-1]
        derive_ms = (time.perf_counter() - t0) * 1e3
        rng = np.random.default_rng(0)
        v64 = model.inputs(rng)
        ref_loss, ref_grads = model.hand(v64)
        for dtype in dtypes:
            methods = []  # (framework, label, run, to_numpy, generated)
            if torch is not None:
                methods.append(("torch",) + torch_generated(torch, program, model, v64, dtype) + (True,))
                if args.torch_compile:
                    methods.append(("torch.compile",)
                                   + torch_generated(torch, program, model, v64, dtype, compiled=True) + (True,))
                label, run, to_np = networks.torch_method(model, v64, dtype)
                methods.append(("torch", "torch autograd " + label[len("torch "):], run, to_np, False))
            if jax is not None:
                methods.append(("jax",) + jax_generated(jax, jnp, program, model, v64, dtype) + (True,))
                label, run, to_np = networks.jax_method(model, v64, dtype)
                methods.append(("jax", "jax.jit(value_and_grad) " + label[len("jax.jit "):], run, to_np, False))

            tol = networks.TOLERANCE[dtype]
            errs = {}
            for fw, label, run, to_np, generated in methods:
                loss, grads = to_np(run())
                e = [networks.rel_err(loss, ref_loss)] + [networks.rel_err(g, r) for g, r in zip(grads, ref_grads)]
                errs[label] = max(e)
                if len(grads) != len(ref_grads):
                    failures.append(f"{model.label} {dtype} {label}: {len(grads)} gradients, want {len(ref_grads)}")
                if max(e) > tol:
                    bad = (["L"] if e[0] > tol else []) + [pnames[i] for i, x in enumerate(e[1:]) if x > tol]
                    failures.append(f"{model.label} {dtype} {label}: relative error {max(e):.2e} > {tol:g} "
                                    f"in {', '.join(bad)}")
                if generated:
                    got = sorted({str(np.asarray(x).dtype) for x in [loss] + list(grads)})
                    if got != [dtype]:
                        failures.append(f"{model.label} {dtype} {label}: results are {'/'.join(got)}")

            cost = jax_costs(jax, jnp, program, model, v64, dtype) if jax is not None else None
            repeats = networks.time_repeats([m[2] for m in methods], repeat, budget)
            times = [(statistics.median(ts), min(ts)) for ts in repeats]
            print(f"{model.label}, {dtype}  (matdiff derived ∂L/∂(…) in {derive_ms:.0f} ms)")
            hdr = f"  {'method':<40} {'median ms':>10} {'best ms':>10} {'gen/fw':>8}   {'rel. err':>8}"
            print(hdr)
            print("  " + "-" * (len(hdr) - 2))
            ratios = {}
            for i, ((fw, label, _, _, generated), (med, best)) in enumerate(zip(methods, times)):
                ratio = ""
                if generated:
                    j = next(j for j in range(i + 1, len(methods)) if not methods[j][4])
                    _, fw_best = times[j]
                    # Each repeat's ratio, of two runs next to each other in
                    # time: a busy spell slows both, and cancels out.
                    paired = statistics.median(g / f for g, f in zip(repeats[i], repeats[j]))
                    ratio = f"{paired:.2f}x"
                    ratios[fw] = (paired, best / fw_best)
                    if paired > 1:
                        slower.append(f"{model.label} {dtype} {fw}: {paired:.2f}x (best {best / fw_best:.2f}x)")
                print(f"  {label:<40} {med * 1e3:>10.3f} {best * 1e3:>10.3f} {ratio:>8}   {errs[label]:>8.1e}")
            if cost:
                (gf, gb), (ff, fb) = cost
                print(f"  XLA's cost analysis of the compiled programs: generated {gf:.3g} flops, {gb:.3g} bytes; "
                      f"autodiff {ff:.3g} flops, {fb:.3g} bytes")
            print()
            summary.append((model, dtype, ratios))

    if failures:
        print("DISAGREEMENTS (timings above are of wrong results):")
        for f in failures:
            print("  " + f)
    else:
        print("Every method agrees with the float64 hand-written backprop on the loss and every gradient "
              "(rel. err ≤ 1e-6 in float64, ≤ 1e-3 in float32), and the generated code keeps the dtype.")
    short = []
    for model, dtype, ratios in summary:
        name = model.name + (f"{model.layers}" if isinstance(model, networks.MLP) else "")
        short.append(f"{name} {dtype[-2:]} " + " ".join(f"{k} {m:.2f}x (best {b:.2f}x)"
                                                        for k, (m, b) in ratios.items()))
    print("Summary, generated / framework autodiff, median of paired ratios (best over best): " + "; ".join(short))
    if slower:
        print("Generated code slower than the framework's autodiff (median): " + "; ".join(slower))
    print(f"Total wall time {time.perf_counter() - started:.1f} s")
    return 1 if failures else 0


def keyword_arguments(fn, values, model):
    """Arguments of a generated function by parameter name: the inputs, and
    sizes that no array carries."""
    out = {}
    for k in inspect.signature(fn).parameters:
        if k in values:
            out[k] = values[k]
        elif k in model.sizes:
            out[k] = model.sizes[k]
        else:
            sys.exit(f"value_and_grad_L wants an unknown parameter {k!r}")
    return out


def torch_generated(torch, program, model, v64, dtype, compiled=False):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tdt = getattr(torch, dtype)
    fn = program.torch()
    if compiled:
        fn = torch.compile(fn)
    kw = keyword_arguments(fn, {k: torch.tensor(a, dtype=tdt, device=dev) for k, a in v64.items()}, model)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def run():
        loss, grads = fn(**kw)
        sync()
        return loss, list(grads)

    def to_numpy(res):
        loss, grads = res
        return loss.cpu().numpy(), [g.cpu().numpy() for g in grads]
    return f"matdiff torch{', torch.compile' if compiled else ''} ({dev})", run, to_numpy


def jax_costs(jax, jnp, program, model, v64, dtype):
    """(flops, bytes accessed) of the compiled generated function and of the
    compiled jax.value_and_grad, by XLA's cost analysis: the work each does,
    free of timing noise. None when the backend does not report it."""
    try:
        fn = program.jax()
        kw = keyword_arguments(fn, {k: jnp.asarray(a, dtype=dtype) for k, a in v64.items()}, model)
        pnames = [p for _, p in model.params]
        data = [k for k in model.data if k != "epsilon"]
        ref = jax.value_and_grad(model.jax_loss, argnums=tuple(range(len(pnames))))
        out = []
        for f, a, k in ((fn, (), kw), (ref, [jnp.asarray(v64[k], dtype=dtype) for k in pnames + data], {})):
            ca = jax.jit(f).lower(*a, **k).compile().cost_analysis()
            ca = ca[0] if isinstance(ca, (list, tuple)) else ca
            out.append((ca["flops"], ca["bytes accessed"]))
        return out
    except Exception:  # the analysis is optional; timings do not depend on it
        return None


def jax_generated(jax, jnp, program, model, v64, dtype):
    import numpy as np
    fn = program.jax()
    kw = keyword_arguments(fn, {k: jax.device_put(jnp.asarray(a, dtype=dtype)) for k, a in v64.items()}, model)
    # Positional arrays, as the autodiff method is called; sizes no array
    # carries (none in these models) are bound as static Python numbers.
    names = [k for k in kw if k in v64]
    arrays = [kw[k] for k in names]
    sizes = {k: a for k, a in kw.items() if k not in v64}
    jitted = jax.jit(lambda *a: fn(**dict(zip(names, a)), **sizes)) if sizes else jax.jit(fn)

    def run():
        loss, grads = jitted(*arrays)
        loss.block_until_ready()
        for g in grads:
            g.block_until_ready()
        return loss, list(grads)

    def to_numpy(res):
        loss, grads = res
        return np.asarray(loss), [np.asarray(g) for g in grads]
    return f"matdiff jax, jitted ({jax.default_backend()})", run, to_numpy


if __name__ == "__main__":
    sys.exit(main())
