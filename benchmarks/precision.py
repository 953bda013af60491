"""Single precision in the solvers: float32/complex64 against float64/complex128, error and
time, for this source tree and (``--against DIR``) another one, side by side in one run.

Problems: ``butterfly`` of a noisy 1024 x 1024 butterfly matrix (the matrix of issue 9),
``ksfactor`` with Monarch patterns of a random 1024 x 1024 matrix (real and complex; its
per-block optimum is the float64 SVD of the 32 x 32 blocks), ``palm4msa`` (2 splincol
factors, 256 x 256, 50 sweeps). Errors are measured in float64 against the float64 matrix.

Run: python benchmarks/precision.py [--against /path/to/old/tree]   (writes
results/precision_cpu.md; each tree runs in its own subprocess, interleaved, best of 2).
Times are CPU seconds of one thread (Numba, OpenBLAS and OpenMP held to one thread,
``time.process_time``): on a shared machine wall-clock ratios swing by 2x between runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _measure(case: str, dtype: str) -> dict:
    import numpy as np

    from gpufact import proj, transforms
    from gpufact.factorize import butterfly, ksfactor, monarch_patterns, palm4msa

    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    if case == "butterfly":
        N = 1024
        B = transforms.random_butterfly(N, seed=1).toarray()
        A = B / np.linalg.norm(B) + 0.5 * rng.standard_normal((N, N)) / N
        run = lambda M: butterfly(M)  # noqa: E731
        butterfly(A[:64, :64].astype(dt))  # load kernels
    elif case == "monarch":
        N = 1024
        A = rng.standard_normal((N, N))
        if dt.kind == "c":
            A = A + 1j * rng.standard_normal((N, N))
        run = lambda M: ksfactor(M, monarch_patterns(N))  # noqa: E731
    else:
        N = 256
        A = rng.standard_normal((N, N))
        cons = [proj.splincol((N, N), 8), proj.splincol((N, N), 8)]
        run = lambda M: palm4msa(M, cons, max_iter=50)  # noqa: E731
        palm4msa(A[:16, :16].astype(dt), [proj.splincol((16, 16), 2)] * 2, max_iter=2)
    Ad = A.astype(dt)
    best = float("inf")
    for _ in range(2):
        t0 = time.process_time()
        F = run(Ad)
        best = min(best, time.process_time() - t0)
    ref = A.astype(np.complex128 if dt.kind == "c" else np.float64)
    err = float(np.linalg.norm(F.toarray().astype(ref.dtype) - ref) / np.linalg.norm(ref))
    return {"time": best, "error": err}


CASES = [("butterfly", "float64"), ("butterfly", "float32"), ("monarch", "float64"), ("monarch", "float32"),
         ("monarch", "complex128"), ("monarch", "complex64"), ("palm", "float64"), ("palm", "float32")]


def _run_tree(tree: str, case: str, dtype: str) -> dict:
    env = dict(os.environ, PYTHONPATH=tree, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--child", case, dtype], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", help="another gpufact source tree (the 'before')")
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_measure(*args.child)))
        return
    trees = {"after": str(HERE.parent)}
    if args.against:
        trees = {"before": str(Path(args.against).resolve()), **trees}
    res = {}
    for case, dtype in CASES:
        for name, tree in trees.items():  # interleaved: load bursts hit both trees
            res[name, case, dtype] = _run_tree(tree, case, dtype)
            print(name, case, dtype, res[name, case, dtype], flush=True)
    sys.path.insert(0, str(HERE))
    from _common import write

    names = list(trees)
    head = "| problem | dtype | " + " | ".join(f"{n}: error | {n}: time (s)" for n in names)
    if len(names) == 2:
        head += " | time before / after"
    head += " |"
    lines = ["Errors in float64 against the float64 (complex128) matrix; CPU time of one thread (s), best of 2 "
             "runs. "
             "`butterfly`: noisy 1024 x 1024 butterfly matrix (signal/noise as in issue 9); `monarch`: "
             "`ksfactor(A, monarch_patterns(1024))` of a random matrix (the float64 run reaches the "
             "per-block optimum, the batched SVD of the 32 x 32 blocks); `palm`: `palm4msa`, 2 factors "
             "splincol(8), 256 x 256, 50 sweeps.", "", head,
             "|" + "---|" * (2 + 2 * len(names) + (len(names) == 2))]
    for case, dtype in CASES:
        row = f"| {case} | {dtype} | " + " | ".join(
            f"{res[n, case, dtype]['error']:.4f} | {res[n, case, dtype]['time']:.2f}" for n in names)
        if len(names) == 2:
            row += f" | {res['before', case, dtype]['time'] / res['after', case, dtype]['time']:.2f}x"
        lines.append(row + " |")
    write("precision_cpu.md", "Single precision in the solvers (CPU)", lines)


if __name__ == "__main__":
    main()
