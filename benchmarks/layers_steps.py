"""Generic Kronecker-sparse steps of the layer kernels, before / after register blocking.

The previous row-by-row loops (copied here verbatim from commit 1127298: one output row per
sweep of the samples, one block-gradient dot product and one input-gradient update per
(r, s) pair) against the library's register-blocked ones (``cpu_tiles._generic_step_strided``:
four output rows, two inputs per sweep; ``cpu_grad._generic_back``: four gradient rows per
sweep), on one tile of samples, one thread, CPU time (``time.process_time``), the two
versions interleaved in one process, best of ``--rounds``.

    python benchmarks/layers_steps.py [--rounds 7]

Prints a Markdown table (patterns of the layers: Monarch 1024 and 784 -> 1024, the 784 ->
1024 butterfly's 4 x 7 and 4 x 2 steps).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402,F401  (OMP_WAIT_POLICY first)

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from gpufact._kernels.cpu import _FASTMATH  # noqa: E402
from gpufact._kernels.cpu_grad import _generic_back  # noqa: E402
from gpufact._kernels.cpu_tiles import _generic_step_strided, _row  # noqa: E402


@njit(cache=True, fastmath=_FASTMATH)
def old_step(w, off, a, b, c, d, sa, sd, src, dst, bt):
    for al in range(a):
        for de in range(d):
            base = off + (al * sa + de * sd) * b * c
            for r in range(b):
                y = _row(dst, al * b * d + r * d + de, bt)
                w0 = w[base + r * c]
                x = _row(src, al * c * d + de, bt)
                for t in range(bt):
                    y[t] = w0 * x[t]
                for s in range(1, c):
                    ws = w[base + r * c + s]
                    x = _row(src, al * c * d + s * d + de, bt)
                    for t in range(bt):
                        y[t] += ws * x[t]


@njit(cache=True, fastmath=_FASTMATH)
def old_back(w, off, sa, sd, a, b, c, d, x, gout, gin, acc, bt, want_in, zero):
    for al in range(a):
        for de in range(d):
            base = off + (al * sa + de * sd) * b * c
            if want_in:
                for s in range(c):
                    y = _row(gin, al * c * d + s * d + de, bt)
                    for t in range(bt):
                        y[t] = zero
            for r in range(b):
                g = _row(gout, al * b * d + r * d + de, bt)
                for s in range(c):
                    xs = _row(x, al * c * d + s * d + de, bt)
                    sm = zero
                    for t in range(bt):
                        sm += g[t] * np.conj(xs[t])
                    acc[base + r * c + s] += sm
                    if want_in:
                        wv = np.conj(w[base + r * c + s])
                        y = _row(gin, al * c * d + s * d + de, bt)
                        for t in range(bt):
                            y[t] += wv * g[t]


def _cpu_time(fn, reps):
    t0 = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t0) / reps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--bt", type=int, default=64)
    args = p.parse_args(argv)
    bt = args.bt
    rng = np.random.default_rng(0)
    print(f"One tile of {bt} samples, float32, one thread, CPU time in µs (best of {args.rounds}, interleaved); "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| step (a, b, c, d) | forward old | new | old/new | backward old | new | old/new |")
    print("|---|---|---|---|---|---|---|")
    for (a, b, c, d) in [(1, 32, 32, 32), (32, 32, 32, 1), (1, 32, 28, 32), (16, 4, 7, 4), (4, 4, 2, 64)]:
        w = rng.standard_normal(a * b * c * d).astype(np.float32)
        x = rng.standard_normal(a * c * d * bt + 8).astype(np.float32)
        g = rng.standard_normal(a * b * d * bt + 8).astype(np.float32)
        outs = {}
        fns = {}
        for name, step, back in (("old", old_step, old_back), ("new", _generic_step_strided, _generic_back)):
            y = np.zeros(a * b * d * bt + 8, np.float32)
            gin = np.zeros(a * c * d * bt + 8, np.float32)
            acc = np.zeros(a * b * c * d, np.float32)
            fns[name + " fwd"] = (lambda step=step, y=y: step(w, 0, a, b, c, d, d, 1, x, y, bt))
            fns[name + " bwd"] = (lambda back=back, gin=gin, acc=acc: back(w, 0, d, 1, a, b, c, d, x, g, gin, acc, bt,
                                                                          True, np.float32(0)))
            fns[name + " fwd"]()
            acc[:] = 0
            fns[name + " bwd"]()
            outs[name] = (y.copy(), gin.copy(), acc.copy())
        for u, v in zip(outs["old"], outs["new"]):  # same results (to rounding)
            np.testing.assert_allclose(v, u, rtol=1e-4, atol=1e-4 * np.abs(u).max())
        work = a * b * c * d * bt
        reps = max(3, int(2e7 // work))
        best = {k: np.inf for k in fns}
        for _ in range(args.rounds):
            for k, fn in fns.items():
                best[k] = min(best[k], _cpu_time(fn, reps))
        us = {k: v * 1e6 for k, v in best.items()}
        print(f"| {(a, b, c, d)} | {us['old fwd']:.1f} | {us['new fwd']:.1f} | {us['old fwd'] / us['new fwd']:.2f}x | "
              f"{us['old bwd']:.1f} | {us['new bwd']:.1f} | {us['old bwd'] / us['new bwd']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
