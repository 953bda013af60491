"""FactorProduct @ X against dense NumPy matmul, scipy.fft and pyfaust on the same matrix.

Run: OPENBLAS_CORETYPE= OPENBLAS_L2_SIZE= python benchmarks/apply.py   (writes results/apply_cpu.md)
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import scipy.fft

from _common import interleaved_best, write
from gpufact import transforms


def _peak_extra(fn, base_bytes):
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return max(0, peak - base_bytes)


def main():
    try:
        import pyfaust
    except ImportError:
        pyfaust = None
    rng = np.random.default_rng(0)
    lines = ["Hadamard matrix as log2(N) butterfly factors, float32 (pyfaust gets the same factors as "
             "scipy CSR float32). Each time: the best of 3 rounds that visit every library in turn (best of 3 runs each, after a warm-up), one process. Ratios > 1: gpufact faster.",
             "", "| N | B | gpufact F@X (ms) | gpufact X@F.T rows (ms) | dense numpy (ms) | pyfaust (ms) | "
             "scipy.fft.rfft (ms) | vs dense | vs pyfaust | extra memory / (N·B) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for N in (1024, 4096):
        F = transforms.hadamard(N, dtype=np.float32)
        D = transforms.hadamard_dense(N, dtype=np.float32)
        Fp = None
        if pyfaust is not None:
            import scipy.sparse as sp

            Fp = pyfaust.Faust([sp.csr_matrix(f.toarray()) for f in F.factors])
        for B in (1, 64, 1024):
            X = rng.standard_normal((N, B)).astype(np.float32)
            Xr = np.ascontiguousarray(X.T)
            Y = F @ X
            assert np.allclose(Y, D @ X, atol=1e-3 * np.abs(Y).max())
            fns = {"f": lambda: F @ X, "r": lambda: Xr @ F.T, "d": lambda: D @ X,
                   "fft": lambda: scipy.fft.rfft(X, axis=0)}
            if Fp is not None:
                assert np.allclose(Fp @ X, Y, atol=1e-3 * np.abs(Y).max())
                fns["p"] = lambda: Fp @ X
            t = interleaved_best(fns)
            t_f, t_r, t_d, t_fft, t_p = t["f"], t["r"], t["d"], t["fft"], t.get("p", float("nan"))
            extra = _peak_extra(lambda: F @ X, N * B * 4) / (N * B * 4)
            lines.append(f"| {N} | {B} | {t_f * 1e3:.3f} | {t_r * 1e3:.3f} | {t_d * 1e3:.3f} | {t_p * 1e3:.3f} | "
                         f"{t_fft * 1e3:.3f} | {t_d / t_f:.1f}x | {t_p / t_f:.1f}x | {extra:.2f} |")
            print(lines[-1], flush=True)
    lines += ["", "Extra memory: peak of NumPy allocations (tracemalloc) during F @ X beyond the output, in "
              "units of N·B elements (the Numba tile buffers, 2·N·512 bytes per thread, are not traced "
              "and are independent of B)."]
    write("apply_cpu.md", "Apply: FactorProduct @ X vs dense, pyfaust, FFT (CPU)", lines)


if __name__ == "__main__":
    main()
