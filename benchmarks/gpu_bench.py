"""GPU benchmark (run on a machine with CuPy and a CUDA GPU): fused butterfly apply vs cuBLAS
dense matmul with achieved bandwidth, PALM4MSA per-iteration time (GPU vs this machine's CPU),
butterfly factorization timings. Writes Markdown to the path given as argv[1]."""
from __future__ import annotations

import os
import sys
import time
import traceback

import numpy as np


def _gpu_time(fn, reps=20):
    import cupy

    fn()
    cupy.cuda.get_current_stream().synchronize()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / 1e3 / reps


def main(out_path):
    import cupy

    import gpufact
    from gpufact import proj, transforms
    from gpufact.factorize import butterfly, palm4msa

    dev = cupy.cuda.runtime.getDeviceProperties(0)
    name = dev["name"].decode()
    bw = 2 * dev["memoryClockRate"] * 1e3 * (dev["memoryBusWidth"] / 8) / 1e9  # GB/s, theoretical
    lines = [f"# GPU benchmark — {name}", "",
             f"CuPy {cupy.__version__}, theoretical memory bandwidth {bw:.0f} GB/s "
             "(from the device properties). Times: CUDA events, mean of 20 after a warm-up.", ""]

    # 1. apply
    lines += ["## FactorProduct @ X (Hadamard, log2 N butterfly factors, fused kernel) vs cuBLAS dense",
              "", "| N | B | dtype | layout | fused (ms) | dense cuBLAS (ms) | speed-up | GB/s (X in + Y out) | % of peak |",
              "|---|---|---|---|---|---|---|---|---|"]
    for N in (4096, 16384):
        for B in (1024, 8192):
            for dt in (np.float32, np.float64):
                try:
                    F = transforms.hadamard(N, dtype=dt, xp=cupy)
                    X = cupy.random.standard_normal((N, B), dtype=np.float64).astype(dt)
                    Xr = cupy.ascontiguousarray(X.T)
                    D = cupy.asarray(transforms.hadamard_dense(N, dtype=dt))
                    t_dense = _gpu_time(lambda: D @ X, 5)
                    for kern in ("radix2", "radix", "passes"):  # GPUFACT_GPU_BUTTERFLY
                        os.environ["GPUFACT_GPU_BUTTERFLY"] = kern
                        try:
                            Y = F @ X
                            err = float(cupy.linalg.norm(Y - D @ X) / cupy.linalg.norm(D @ X))
                            Yr = Xr @ F.T
                            err = max(err, float(cupy.linalg.norm(Yr.T - D @ X) / cupy.linalg.norm(D @ X)))
                            assert err < (1e-5 if dt == np.float32 else 1e-12), (kern, err)
                            layouts = [("F @ X, X (N,B)", lambda: F @ X), ("X @ F.T, X (B,N)", lambda: Xr @ F.T)]
                            for layout, fn in layouts[:1] if kern == "passes" else layouts:  # passes: columns
                                t = _gpu_time(fn)
                                gbs = 2 * N * B * np.dtype(dt).itemsize / t / 1e9
                                lines.append(f"| {N} | {B} | {np.dtype(dt).name} | {kern}: {layout} | {t * 1e3:.3f} | "
                                             f"{t_dense * 1e3:.3f} | {t_dense / t:.1f}x | {gbs:.0f} | {100 * gbs / bw:.0f}% |")
                                print(lines[-1], flush=True)
                        except Exception:
                            lines.append(f"| {N} | {B} | {np.dtype(dt).name} | {kern}: FAILED "
                                         f"{traceback.format_exc(limit=2)!r} |")
                            print(lines[-1], flush=True)
                    os.environ.pop("GPUFACT_GPU_BUTTERFLY", None)
                    del D
                except Exception:
                    lines.append(f"| {N} | {B} | {np.dtype(dt).name} | FAILED | {traceback.format_exc(limit=2)!r} |")
                print(lines[-1], flush=True)
    # single vector
    try:
        F = transforms.hadamard(4096, dtype=np.float32, xp=cupy)
        x = cupy.ones(4096, dtype=np.float32)
        D = cupy.asarray(transforms.hadamard_dense(4096, dtype=np.float32))
        lines.append("")
        for kern in ("radix2", "radix"):
            os.environ["GPUFACT_GPU_BUTTERFLY"] = kern
            lines.append(f"B = 1, N = 4096, float32, {kern}: fused {_gpu_time(lambda: F @ x) * 1e6:.1f} µs per "
                         f"call, dense matvec {_gpu_time(lambda: D @ x) * 1e6:.1f} µs  ")
        os.environ.pop("GPUFACT_GPU_BUTTERFLY", None)
    except Exception:
        lines.append("B = 1: FAILED " + repr(traceback.format_exc(limit=2)))

    # 2. PALM 4096 x 4096, 2 factors, float32
    lines += ["", "## PALM4MSA, 4096 x 4096, 2 factors splincol(32), float32", "",
              "| device | s / iteration | final rel. error |", "|---|---|---|"]
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4096, 4096)).astype(np.float32)
    cons = [proj.splincol((4096, 4096), 32), proj.splincol((4096, 4096), 32)]
    for label, arr, iters in (("GPU", cupy.asarray(A), 20), ("CPU (this machine)", A, 3)):
        try:
            palm4msa(arr, cons, max_iter=1)
            cupy.cuda.get_current_stream().synchronize()
            t0 = time.perf_counter()
            F = palm4msa(arr, cons, max_iter=iters)
            cupy.cuda.get_current_stream().synchronize()
            dt = (time.perf_counter() - t0) / iters
            lines.append(f"| {label} | {dt:.4f} | {F.rel_error:.4f} (after {iters}) |")
        except Exception:
            lines.append(f"| {label} | FAILED {traceback.format_exc(limit=3)!r} |")
        print(lines[-1], flush=True)

    # 3. butterfly factorization on the GPU
    lines += ["", "## Butterfly factorization on the GPU (balanced tree)", "",
              "| matrix | N | time (s) | rel. error |", "|---|---|---|---|"]
    for N in (4096, 8192, 16384):
        for label in ("DFT (bit-reversal)", "Hadamard"):
            try:
                if label == "Hadamard":
                    Ad = cupy.asarray(transforms.hadamard_dense(N))
                    kw = {}
                else:
                    jk = (cupy.arange(N)[:, None] * cupy.arange(N)[None, :]) % N
                    Ad = cupy.exp(-2j * np.pi * jk / N)
                    del jk
                    kw = {"perm": "bit-reversal"}
                butterfly(Ad[:64, :64] if N == 4096 else Ad[:16, :16], **kw)  # compile/warm
                cupy.cuda.get_current_stream().synchronize()
                t0 = time.perf_counter()
                F = butterfly(Ad, **kw)
                cupy.cuda.get_current_stream().synchronize()
                t = time.perf_counter() - t0
                err = float(cupy.linalg.norm(F.toarray() - Ad) / cupy.linalg.norm(Ad))
                lines.append(f"| {label} | {N} | {t:.3f} | {err:.1e} |")
                del Ad, F
                cupy.get_default_memory_pool().free_all_blocks()
            except Exception:
                lines.append(f"| {label} | {N} | FAILED {traceback.format_exc(limit=3)!r} |")
            print(lines[-1], flush=True)
    with open(out_path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
