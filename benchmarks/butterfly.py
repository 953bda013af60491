"""Butterfly factorization: gpufact.butterfly vs pyfaust.fact.butterfly (same matrix, same
permutation) and gpufact.hierarchical; exact DFT/Hadamard and a noisy DFT.

Run: python benchmarks/butterfly.py   (writes results/butterfly_cpu.md)
"""
from __future__ import annotations

import time

import numpy as np

from _common import write
from gpufact import transforms
from gpufact.factorize import butterfly, hierarchical


def _err(F, A):
    D = F.toarray() if hasattr(F, "factors") else F.toarray()
    return np.linalg.norm(D - A) / np.linalg.norm(A)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(sizes=(256, 512, 1024, 2048, 4096)):
    try:
        import pyfaust
        from pyfaust.fact import butterfly as pf_butterfly
    except ImportError:
        pyfaust = None
    lines = ["One process, same matrices. DFT factored with the bit-reversal permutation (gpufact "
             "`perm='bit-reversal'`, pyfaust `perm='bitrev'`), balanced tree for both. Relative "
             "Frobenius errors of the returned product. `gpufact.hierarchical` (PALM-based) on the "
             "Hadamard matrix up to N = 1024. lazylinop's `ksd` was not installed: not compared.", "",
             "| matrix | N | gpufact butterfly (s) | error | pyfaust butterfly (s) | error | speed-up | "
             "gpufact hierarchical (s) | error |", "|---|---|---|---|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    for N in sizes:
        for name in ("DFT", "Hadamard", "noisy DFT"):
            if name == "Hadamard":
                A = transforms.hadamard_dense(N)
            else:
                A = transforms.dft_dense(N)
                if name == "noisy DFT":
                    A = A + 1e-2 * (rng.standard_normal((N, N)) + 1j * rng.standard_normal((N, N))) / np.sqrt(2)
            kw = {} if name == "Hadamard" else {"perm": "bit-reversal"}
            F, t = _timed(lambda: butterfly(A, **kw))
            e = _err(F, A)
            tp = ep = float("nan")
            if pyfaust is not None:
                pkw = {} if name == "Hadamard" else {"perm": "bitrev"}
                Fp, tp = _timed(lambda: pf_butterfly(A, type="bbtree", **pkw))
                ep = np.linalg.norm(Fp.toarray() - A) / np.linalg.norm(A)
            th = eh = float("nan")
            if name == "Hadamard" and N <= 1024:
                H, th = _timed(lambda: hierarchical(A, preset="hadamard"))
                eh = _err(H, A)
            lines.append(f"| {name} | {N} | {t:.3f} | {e:.1e} | {tp:.3f} | {ep:.1e} | {tp / t:.1f}x | "
                         f"{th:.2f} | {eh:.1e} |")
            print(lines[-1], flush=True)
    lines += ["", "Noisy DFT: DFT + 1e-2 complex Gaussian noise (noise/signal ≈ 1e-2 in Frobenius norm); "
              "the error should match the noise level."]
    write("butterfly_cpu.md", "Butterfly factorization with guarantees (CPU)", lines)


if __name__ == "__main__":
    main()
