"""PALM4MSA and hierarchical factorization: gpufact vs pyfaust on the same inputs, one run.

Run: python benchmarks/factorize.py [--full]   (writes results/factorize_cpu.md; --full adds
pyfaust's hierarchical at N = 256, about 3 minutes)
"""
from __future__ import annotations

import sys
import time
import warnings

import numpy as np

from _common import write
from gpufact import proj, transforms
from gpufact.factorize import hierarchical, palm4msa

warnings.filterwarnings("ignore")


def _rel(D, A):
    return np.linalg.norm(D - A) / np.linalg.norm(A)


def _timed(fn, repeat=1):
    """(result, best wall time of ``repeat`` runs): both libraries get the same repeats."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main(full=False):
    try:
        import pyfaust
        from pyfaust.fact import hierarchical as pf_hier
        from pyfaust.fact import palm4msa as pf_palm
        from pyfaust.factparams import ConstraintList, ParamsPalm4MSA, StoppingCriterion
    except ImportError:
        pyfaust = None
    lines = ["## Hierarchical factorization of the Hadamard matrix (2 nonzeros per row and column per factor)", "",
             "gpufact: `hierarchical(H, preset='hadamard')` (defaults, after one call on an 8 x 8 matrix that "
             "loads the Numba kernels); pyfaust: `hierarchical(H, 'hadamard')`. Times: best of 3 runs up to "
             "N = 128 for both, one run above. pyfaust above N = 128 only with `--full` (its N = 256 run "
             "takes minutes).", "",
             "| N | gpufact (s) | rel. error | pyfaust (s) | rel. error | speed-up |", "|---|---|---|---|---|---|"]
    pf_max = 256 if full else 128
    hierarchical(transforms.hadamard_dense(8), preset="hadamard")  # JIT warm-up (Numba cache load)
    for N in (32, 64, 128, 256, 512, 1024):
        H = transforms.hadamard_dense(N)
        rep = 3 if N <= 128 else 1  # best of 3 where one run is short (this machine is noisy)
        F, t = _timed(lambda: hierarchical(H, preset="hadamard"), rep)
        e = _rel(F.toarray(), H)
        tp = ep = float("nan")
        if pyfaust is not None and N <= pf_max:
            Fp, tp = _timed(lambda: pf_hier(H, "hadamard"), rep)
            ep = _rel(Fp.toarray(), H)
        pf = f"{tp:.3f} | {ep:.1e} | {tp / t:.1f}x" if np.isfinite(tp) else "not run | | "
        lines.append(f"| {N} | {t:.3f} | {e:.1e} | {pf} |")
        print(lines[-1], flush=True)

    lines += ["", "## PALM4MSA, equal iteration counts (normalised splincol constraints, λ updated)", "",
              "gpufact with its defaults (safeguarded adaptive steps); the plain-PALM column is gpufact "
              "with `adaptive_step=False` (1/L steps, as pyfaust). Times: best of 2 runs for both.", "",
              "| problem | iterations | gpufact (s / iter) | rel. error | plain PALM rel. error | pyfaust (s / iter) "
              "| rel. error | speed-up |",
              "|---|---|---|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    cases = [("random 256x256, 2 factors", (256, 256), [(256, 256), (256, 256)], 16),
             ("random 256x256, 4 factors", (256, 256), [(256, 256)] * 4, 8),
             ("random 256x784, 2 factors", (256, 784), [(256, 256), (256, 784)], 16)]
    iters = 50
    for label, shape, shapes, k in cases:
        A = rng.standard_normal(shape)
        cons = [proj.splincol(s, k) for s in shapes]
        palm4msa(A, cons, max_iter=1)  # JIT warm-up
        F, t = _timed(lambda: palm4msa(A, cons, max_iter=iters), 2)
        e = _rel(F.toarray(), A)
        e_plain = palm4msa(A, cons, max_iter=iters, adaptive_step=False).rel_error
        tp = ep = float("nan")
        if pyfaust is not None:
            spec = []
            for s in shapes:
                spec += ["splincol", k, s[0], s[1]]
            p = ParamsPalm4MSA(ConstraintList(*spec), StoppingCriterion(num_its=iters), is_update_way_R2L=True)
            Fp, tp = _timed(lambda: pf_palm(A, p), 2)
            ep = _rel(Fp.toarray(), A)
        lines.append(f"| {label} | {iters} | {t / iters * 1e3:.2f} ms | {e:.4f} | {e_plain:.4f} | "
                     f"{tp / iters * 1e3:.2f} ms | {ep:.4f} | {tp / t:.1f}x |")
        print(lines[-1], flush=True)
    lines += ["", "GPU (H100): PALM on 4096 x 4096, 2 factors, float32 — see `gpu_h100.md`."]
    write("factorize_cpu.md", "Learning factorizations: gpufact vs pyfaust (CPU)", lines)


if __name__ == "__main__":
    main(full="--full" in sys.argv)
