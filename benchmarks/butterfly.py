"""Butterfly factorization: gpufact.butterfly vs pyfaust.fact.butterfly (same matrix, same
permutation) and gpufact.hierarchical; exact DFT/Hadamard and a noisy DFT.

Run: python benchmarks/butterfly.py   (writes results/butterfly_cpu_<family>.md, one file per CPU family)
"""
from __future__ import annotations

import time

import numpy as np

from _common import interleaved_best, write
from gpufact import transforms
from gpufact._cpuinfo import cpu_family
from gpufact.factorize import _lowrank, butterfly, hierarchical


def _err(F, A):
    D = F.toarray() if hasattr(F, "factors") else F.toarray()
    return np.linalg.norm(D - A) / np.linalg.norm(A)


def _matrix(name, N, rng):
    """(A, butterfly keyword arguments) for "DFT", "Hadamard" or "noisy DFT" (DFT + 1e-2
    complex Gaussian noise) of size N."""
    if name == "Hadamard":
        return transforms.hadamard_dense(N), {}
    A = transforms.dft_dense(N)
    if name == "noisy DFT":
        A = A + 1e-2 * (rng.standard_normal((N, N)) + 1j * rng.standard_normal((N, N))) / np.sqrt(2)
    return A, {"perm": "bit-reversal"}


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
             "Hadamard matrix up to N = 1024. lazylinop's `ksd` was not installed: not compared. gpufact: the "
             "first call on each matrix, then the best of three (pyfaust: one call; the speed-up is from the "
             "best).", "",
             "| matrix | N | gpufact butterfly, first / best of 3 (s) | error | pyfaust butterfly (s) | error | speed-up | "
             "gpufact hierarchical (s) | error |", "|---|---|---|---|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    for N in sizes:
        for name in ("DFT", "Hadamard", "noisy DFT"):
            A, kw = _matrix(name, N, rng)
            F, t = _timed(lambda: butterfly(A, **kw))
            e = _err(F, A)
            t_first = t
            t = min([t] + [_timed(lambda: butterfly(A, **kw))[1] for _ in range(2)])
            tp = ep = float("nan")
            if pyfaust is not None:
                pkw = {} if name == "Hadamard" else {"perm": "bitrev"}
                Fp, tp = _timed(lambda: pf_butterfly(A, type="bbtree", **pkw))
                ep = np.linalg.norm(Fp.toarray() - A) / np.linalg.norm(A)
            th = eh = float("nan")
            if name == "Hadamard" and N <= 1024:
                H, th = _timed(lambda: hierarchical(A, preset="hadamard"))
                eh = _err(H, A)
            lines.append(f"| {name} | {N} | {t_first:.3f} / {t:.3f} | {e:.1e} | {tp:.3f} | {ep:.1e} | {tp / t:.1f}x | "
                         f"{th:.2f} | {eh:.1e} |")
            print(lines[-1], flush=True)
    lines += ["", "Noisy DFT: DFT + 1e-2 complex Gaussian noise (noise/signal ≈ 1e-2 in Frobenius norm); "
              "the error should match the noise level."]
    lines += before_after()
    write(f"butterfly_cpu_{cpu_family()}.md", "Butterfly factorization with guarantees (CPU)", lines)


def _gram_only(A, xp):
    """The rank-one step before the certified fast path: the Gram squarings for every block."""
    if A.shape[1] < A.shape[2]:
        Xt, Yt = _gram_only(_lowrank._herm(A, xp), xp)
        return _lowrank._herm(Yt, xp), _lowrank._herm(Xt, xp)
    return _lowrank._rank_one_gram(A, xp)


def before_after(N=4096):
    """Rank-one splits through the Gram squarings for every block (before) against the
    certified fast path for rank-one blocks (now), side by side in one process."""
    out = ["", f"## Before / after: certified rank-one blocks (N = {N})", "",
           "`before`: every rank-one split through the Gram repeated squaring (a batched n x n GEMM per "
           "block and squaring); `now`: blocks first certified rank one in O(m n) (v from the largest row, "
           "‖A‖² − ‖Av‖² ≤ 4 n eps ‖A‖²), the others through the squarings. Same process, 3 rounds visiting "
           "both in turn, best of 1 each.", "",
           "| matrix | before (s) | now (s) | ratio | error before | error now |", "|---|---|---|---|---|---|"]
    rng = np.random.default_rng(1)
    for name in ("DFT", "Hadamard", "noisy DFT"):
        A, kw = _matrix(name, N, rng)
        now = _lowrank._rank_one

        def before():
            _lowrank._rank_one = _gram_only
            try:
                return butterfly(A, **kw)
            finally:
                _lowrank._rank_one = now

        fns = {"before": before, "now": lambda: butterfly(A, **kw)}
        e0, e1 = _err(fns["before"](), A), _err(fns["now"](), A)
        t = interleaved_best(fns, rounds=3, repeat=1)
        out.append(f"| {name} | {t['before']:.3f} | {t['now']:.3f} | {t['before'] / t['now']:.2f}x | {e0:.1e} | "
                   f"{e1:.1e} |")
        print(out[-1], flush=True)
    return out


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--before-after"]:
        print("\n".join(before_after()))
    else:
        main()
