"""FactorProduct @ X against dense NumPy matmul, scipy.fft and pyfaust on the same matrix.

Run: OPENBLAS_CORETYPE= OPENBLAS_L2_SIZE= python benchmarks/apply.py
Writes results/apply_cpu_<family>.md, one file per CPU family (``gpufact._cpuinfo.cpu_family``:
amd-epyc, intel-xeon, ...), naming the CPU model, vector ISA and cache sizes.
"""
from __future__ import annotations

import os
import tracemalloc

import numpy as np
import scipy.fft

from _common import interleaved_best, write
from gpufact import transforms
from gpufact._cpuinfo import cpu_family
from gpufact.factors import _chain


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
    load = os.getloadavg()
    lines = [f"Load average (1, 5, 15 min) at the start: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} on "
             f"{os.cpu_count()} cores (other processes on the machine slow every contender, dense NumPy's "
             "2-thread OpenBLAS most).", "",
             "Hadamard matrix as log2(N) butterfly factors, float32 (pyfaust gets the same factors as "
             "scipy CSR float32). Each time: the best of 3 rounds that visit every library in turn (best of 3 runs each, after a warm-up; B = 1: 7 rounds of runs of 200 calls, per call), one process. Ratios > 1: gpufact faster.",
             "", "| N | B | gpufact F@X (ms) | gpufact X@F.T rows (ms) | dense numpy (ms) | pyfaust (ms) | "
             "scipy.fft.rfft (ms) | copy of X (ms) | vs dense | vs pyfaust | F@X / copy | extra memory / (N·B) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
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
                   "fft": lambda: scipy.fft.rfft(X, axis=0), "copy": lambda: X.copy()}
            if Fp is not None:
                assert np.allclose(Fp @ X, Y, atol=1e-3 * np.abs(Y).max())
                fns["p"] = lambda: Fp @ X
            t = _per_call(fns, LOOP if B == 1 else 1)
            t_f, t_r, t_d, t_fft, t_p = t["f"], t["r"], t["d"], t["fft"], t.get("p", float("nan"))
            extra = _peak_extra(lambda: F @ X, N * B * 4) / (N * B * 4)
            lines.append(f"| {N} | {B} | {t_f * 1e3:.3f} | {t_r * 1e3:.3f} | {t_d * 1e3:.3f} | {t_p * 1e3:.3f} | "
                         f"{t_fft * 1e3:.3f} | {t['copy'] * 1e3:.3f} | {t_d / t_f:.1f}x | {t_p / t_f:.1f}x | "
                         f"{t_f / t['copy']:.1f} | {extra:.2f} |")
            print(lines[-1], flush=True)
    lines += one_vector(rng, pyfaust)
    lines += ["", "Extra memory: peak of traced allocations (tracemalloc: NumPy arrays, the Numba tile "
              "buffers included) during F @ X beyond the output, in units of N·B elements. B = 1 takes the "
              "one-vector path: two N-vectors (2·N·B) plus a few hundred bytes of array headers."]
    lines += ["", "## DFT, complex", "",
              "The DFT as log2(N) butterfly factors and the bit-reversal permutation, complex128 for every "
              "library (pyfaust has no complex64: the same factors as scipy CSR complex128), plus gpufact in "
              "complex64, against dense NumPy in the same precision (complex64 / complex64 in the last column). "
              "Same timing rounds (2 rounds of best-of-2 here: the dense products take seconds). "
              "Yardstick: scipy.fft.fft over the batch.", "",
              "| N | B | gpufact F@X (ms) | gpufact X@F.T rows (ms) | gpufact complex64 (ms) | dense numpy (ms) | "
              "dense complex64 (ms) | pyfaust (ms) | scipy.fft.fft (ms) | vs dense | vs pyfaust | complex64 vs dense |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for N in (1024, 4096):
        F = transforms.dft(N, dtype=np.complex128)
        F64 = F.astype(np.complex64)
        D = transforms.dft_dense(N)
        Fp = None
        if pyfaust is not None:
            import scipy.sparse as sp

            Fp = pyfaust.Faust([sp.csr_matrix(f.toarray()) for f in F.factors])
        for B in (1, 64, 1024):
            X = rng.standard_normal((N, B)) + 1j * rng.standard_normal((N, B))
            Xr = np.ascontiguousarray(X.T)
            X64 = X.astype(np.complex64)
            Y = F @ X
            assert np.allclose(Y, scipy.fft.fft(X, axis=0), atol=1e-9 * np.abs(Y).max())
            D64 = D.astype(np.complex64)
            fns = {"f": lambda: F @ X, "r": lambda: Xr @ F.T, "c64": lambda: F64 @ X64, "d": lambda: D @ X,
                   "d64": lambda: D64 @ X64, "fft": lambda: scipy.fft.fft(X, axis=0)}
            if Fp is not None:
                assert np.allclose(Fp @ X, Y, atol=1e-9 * np.abs(Y).max())
                fns["p"] = lambda: Fp @ X
            t = interleaved_best(fns, rounds=2, repeat=2)
            lines.append(f"| {N} | {B} | {t['f'] * 1e3:.3f} | {t['r'] * 1e3:.3f} | {t['c64'] * 1e3:.3f} | "
                         f"{t['d'] * 1e3:.3f} | {t['d64'] * 1e3:.3f} | {t.get('p', np.nan) * 1e3:.3f} | "
                         f"{t['fft'] * 1e3:.3f} | {t['d'] / t['f']:.1f}x | {t.get('p', np.nan) / t['f']:.1f}x | "
                         f"{t['d64'] / t['c64']:.1f}x |")
            print(lines[-1], flush=True)
    lines += perm_fusion()
    lines += direct_radix()
    lines += before_after()
    write(f"apply_cpu_{cpu_family()}.md", "Apply: FactorProduct @ X vs dense, pyfaust, FFT (CPU)", lines)


LOOP = 200  # calls per timed run where one call takes microseconds (B = 1)


def _per_call(fns, loop, rounds=None):
    """Seconds per call: :func:`interleaved_best` over runs of ``loop`` calls each (one call
    of a few microseconds is within the timer's and the machine's noise; more rounds then)."""
    if loop == 1:
        return interleaved_best(fns)
    runs = {k: (lambda f=f: [f() for _ in range(loop)]) for k, f in fns.items()}
    return {k: v / loop for k, v in interleaved_best(runs, rounds=rounds or 7).items()}


def one_vector(rng, pyfaust):
    """A 1-D vector x (N,): F @ x (after a first call, the lean one-vector path) vs pyfaust and
    dense, same rounds."""
    out = ["", "One vector as a 1-D array x (N,), float32, `F @ x` (the lean path straight to the "
           "one-vector kernel, taken from the second call on) vs `Fp @ x` (pyfaust, same factors) and "
           "`D @ x`: per call, the best of 7 rounds visiting the three in turn, each the best of 3 runs "
           "of 200 calls.", "",
           "| N | gpufact F@x (us) | pyfaust (us) | dense numpy (us) | vs pyfaust | vs dense |",
           "|---|---|---|---|---|---|"]
    for N in (1024, 4096):
        F = transforms.hadamard(N, dtype=np.float32)
        D = transforms.hadamard_dense(N, dtype=np.float32)
        x = rng.standard_normal(N).astype(np.float32)
        y = F @ x
        assert np.allclose(y, D @ x, atol=1e-3 * np.abs(y).max())
        fns = {"f": lambda: F @ x, "d": lambda: D @ x}
        if pyfaust is not None:
            import scipy.sparse as sp

            Fp = pyfaust.Faust([sp.csr_matrix(f.toarray()) for f in F.factors])
            assert np.allclose(Fp @ x, y, atol=1e-3 * np.abs(y).max())
            fns["p"] = lambda: Fp @ x
        t = _per_call(fns, LOOP)
        t_p = t.get("p", float("nan"))
        out.append(f"| {N} | {t['f'] * 1e6:.1f} | {t_p * 1e6:.1f} | {t['d'] * 1e6:.1f} | {t_p / t['f']:.1f}x | "
                   f"{t['d'] / t['f']:.1f}x |")
        print(out[-1], flush=True)
    return out


def _with(obj, name, value, fn):
    """fn run with the module setting ``obj.name`` = value (restored after)."""
    def run():
        old = getattr(obj, name)
        setattr(obj, name, value)
        try:
            return fn()
        finally:
            setattr(obj, name, old)
    return run


def _radix2(fn):
    """fn run on the radix-2 tile kernels of gpufact._kernels.cpu (the path before radix passes)."""
    return _with(_chain, "_RADIX_PASSES", False, fn)


def _with_direct_radix(fn, radix_log2):
    """fn run with the direct mode's passes of radix 2^radix_log2."""
    from gpufact._kernels import cpu_radix

    return _with(cpu_radix, "DIRECT_RADIX_LOG2", radix_log2, fn)


def perm_fusion():
    """The DFT's bit reversal as its own pass (before) or read through by the chain's tile
    loads (now), side by side."""
    from gpufact import product

    def unfused(fn):
        return _with(product, "_FUSE_PERM", False, fn)

    out = ["", "## DFT: the bit-reversal permutation read through by the tile loads", "",
           "`before`: the permutation factor applied as its own pass (a gathered copy of X), then the "
           "chain; `now`: the chain's planar complex tiles read the input rows through the permutation "
           "(`gpufact.product._FUSE_PERM`). Same rounds (3, best of 3 each); ratio = before / now.", "",
           "| dtype | N | B | F@X before (ms) | F@X now (ms) | ratio | X@F.T before (ms) | X@F.T now (ms) | ratio |",
           "|---|---|---|---|---|---|---|---|---|"]
    rng = np.random.default_rng(3)
    for dt in (np.complex64, np.complex128):
        for N, B in ((1024, 1024), (4096, 64), (4096, 1024)):
            F = transforms.dft(N, dtype=dt)
            X = (rng.standard_normal((N, B)) + 1j * rng.standard_normal((N, B))).astype(dt)
            Xr = np.ascontiguousarray(X.T)
            fns = {"f0": unfused(lambda: F @ X), "f1": lambda: F @ X,
                   "r0": unfused(lambda: Xr @ F.T), "r1": lambda: Xr @ F.T}
            ref = fns["f0"]()
            tol = 1e-4 * np.abs(ref).max()
            for k in ("f1", "r0", "r1"):
                got = fns[k]()
                np.testing.assert_allclose(got.T if k[0] == "r" else got, ref, rtol=1e-4, atol=tol)
            t = interleaved_best(fns)
            out.append(f"| {np.dtype(dt).name} | {N} | {B} | {t['f0'] * 1e3:.3f} | {t['f1'] * 1e3:.3f} | "
                       f"{t['f0'] / t['f1']:.2f}x | {t['r0'] * 1e3:.3f} | {t['r1'] * 1e3:.3f} | "
                       f"{t['r0'] / t['r1']:.2f}x |")
            print(out[-1], flush=True)
    return out


def direct_radix():
    """Real column batches (the direct mode): radix-4 against radix-8 passes, side by side."""
    from gpufact._kernels import cpu_radix

    out = ["", "## Direct mode: radix-4 against radix-8 passes", "",
           "Real column batches `F @ X` (Hadamard) run their passes on blocks of Y's columns sized from the L3 "
           f"(no tiles). This machine's default pass radix there: 2^{cpu_radix.DIRECT_RADIX_LOG2} "
           f"(`gpufact._kernels.cpu_radix.DIRECT_RADIX_LOG2`, from the vector ISA: 8 with AVX-512's 32 vector "
           "registers, else 4). Same rounds (3, best of 3 each); ratio = radix 4 / radix 8 (> 1: radix 8 faster).",
           "", "| dtype | N | B | radix 4 (ms) | radix 8 (ms) | ratio |", "|---|---|---|---|---|---|"]
    rng = np.random.default_rng(2)
    for dt in (np.float32, np.float64):
        for N in (1024, 4096):
            F = transforms.hadamard(N, dtype=dt)
            for B in (64, 1024):
                X = rng.standard_normal((N, B)).astype(dt)
                fns = {"r4": _with_direct_radix(lambda: F @ X, 2), "r8": _with_direct_radix(lambda: F @ X, 3)}
                ref = fns["r4"]()
                np.testing.assert_allclose(fns["r8"](), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
                t = interleaved_best(fns)
                out.append(f"| {np.dtype(dt).name} | {N} | {B} | {t['r4'] * 1e3:.3f} | {t['r8'] * 1e3:.3f} | "
                           f"{t['r4'] / t['r8']:.2f}x |")
                print(out[-1], flush=True)
    return out


def before_after():
    """Radix-2 tile kernels (before) vs radix-2^R passes (now), side by side in one process."""
    load = os.getloadavg()
    out = ["", "## Before / after: radix-2 tiles vs radix-2^R passes", "",
           "Same process, same rounds (3 rounds visiting every contender, best of 3 each): `before` is the "
           "radix-2 tile kernel of `gpufact._kernels.cpu` (one sweep of the tile per factor, two tile buffers; "
           "`gpufact.factors._chain._RADIX_PASSES = False`), `now` the radix-2^R passes of "
           "`gpufact._kernels.cpu_radix` (two butterfly factors per load and store of a row group, in place; "
           "real column batches without tiles, on Y's columns). Hadamard (float32) and DFT with its "
           "bit-reversal permutation (complex64). Ratio = before / now (> 1: now faster). B = 1 takes the "
           "one-vector path in both (unchanged). Load average at the start (1, 5, 15 min): "
           f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} on {os.cpu_count()} cores.", "",
           "| dtype | N | B | F@X before (ms) | F@X now (ms) | F@X ratio | X@F.T before (ms) | X@F.T now (ms) | "
           "X@F.T ratio |", "|---|---|---|---|---|---|---|---|---|"]
    rng = np.random.default_rng(1)
    for dt in (np.float32, np.complex64):
        for N in (1024, 4096):
            F = transforms.hadamard(N, dtype=dt) if dt == np.float32 else transforms.dft(N, dtype=dt)
            for B in (1, 64, 1024):
                X = rng.standard_normal((N, B)).astype(dt)
                if dt == np.complex64:
                    X = X + 1j * rng.standard_normal((N, B)).astype(np.float32)
                Xr = np.ascontiguousarray(X.T)
                fns = {"f0": _radix2(lambda: F @ X), "f1": lambda: F @ X,
                       "r0": _radix2(lambda: Xr @ F.T), "r1": lambda: Xr @ F.T}
                ref = fns["f0"]()
                tol = 1e-4 * np.abs(ref).max()
                np.testing.assert_allclose(fns["f1"](), ref, rtol=1e-4, atol=tol)
                np.testing.assert_allclose(fns["r0"]().T, ref, rtol=1e-4, atol=tol)
                np.testing.assert_allclose(fns["r1"]().T, ref, rtol=1e-4, atol=tol)
                t = interleaved_best(fns)
                out.append(f"| {np.dtype(dt).name} | {N} | {B} | {t['f0'] * 1e3:.3f} | {t['f1'] * 1e3:.3f} | "
                           f"{t['f0'] / t['f1']:.2f}x | {t['r0'] * 1e3:.3f} | {t['r1'] * 1e3:.3f} | "
                           f"{t['r0'] / t['r1']:.2f}x |")
                print(out[-1], flush=True)
    load = os.getloadavg()
    out += ["", f"Load average at the end: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}."]
    return out


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--before-after"]:  # that section alone, printed
        print("\n".join(before_after()))
    elif sys.argv[1:] == ["--direct-radix"]:
        print("\n".join(direct_radix()))
    elif sys.argv[1:] == ["--perm-fusion"]:
        print("\n".join(perm_fusion()))
    else:
        main()
