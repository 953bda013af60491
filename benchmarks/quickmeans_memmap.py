"""Peak resident memory of an exact batched QuickMeans fit on a float32 memmap larger than the
budget: n x 784 (10^6 rows = 2.9 GiB on disk), K = 64, batch_size = 20 000.

    python benchmarks/quickmeans_memmap.py [--n 1000000] [--path /tmp/qm_mm.dat] [--iters 1]

The file is written first (in a separate process, so that writing it does not count), then a
fresh process fits on ``np.memmap(path, mode="r")`` and reports its peak RSS (ru_maxrss).
``init="random"`` (K rows read): k-means++ would read the whole file K times.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import numpy as np  # noqa: E402

D, K = 784, 64


def write(path, n):
    rng = np.random.default_rng(0)
    C = rng.uniform(-1, 1, (K, D)).astype(np.float32)
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(n, D))
    for i in range(0, n, 50_000):
        j = min(n, i + 50_000)
        mm[i:j] = C[rng.integers(0, K, j - i)] + 0.3 * rng.standard_normal((j - i, D), dtype=np.float32)
    mm.flush()


def fit(path, n, iters):
    from gpufact.cluster import QuickMeans

    X = np.memmap(path, dtype=np.float32, mode="r", shape=(n, D))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    qm = QuickMeans(K, sparsity=3, init="random", max_iter=iters, palm_max_iter=10, batch_size=20_000,
                    random_state=0).fit(X)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} {dt:.1f} {qm.n_iter_} {qm.inertia_:.6g} {before:.0f} {peak:.0f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--path", default="/tmp/qm_mm.dat")
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return fit(a.path, a.n, a.iters)
    if not os.path.exists(a.path) or os.path.getsize(a.path) != a.n * D * 4:
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                        f"import quickmeans_memmap as q; q.write({a.path!r}, {a.n})"], check=True)
    out = subprocess.run([sys.executable, __file__, "--child", "--n", str(a.n), "--path", a.path,
                          "--iters", str(a.iters)], check=True, capture_output=True, text=True).stdout
    n, dt, it, obj, before, peak = out.split()[-6:]
    size = int(n) * D * 4 / 2 ** 30
    _common.write("quickmeans_memmap_cpu.md", "QuickMeans: exact batched fit on a memory-mapped file", [
        f"float32 memmap {n} x {D} ({size:.2f} GiB on disk, opened read-only), K = {K}, sparsity 3, "
        f"batch_size = 20 000, init = 'random', {it} Lloyd iteration(s) (10 PALM sweeps per update).", "",
        "| rows | file (GiB) | fit (s) | peak RSS before fit (MB) | peak RSS after fit (MB) |",
        "|---|---|---|---|---|",
        f"| {n} | {size:.2f} | {float(dt):.1f} | {before} | {peak} |", "",
        "Peak RSS includes the interpreter, NumPy/SciPy/Numba and the compiled kernels (the 'before' column). "
        "The memmap is validated chunk by chunk and each chunk's mapped pages are dropped after use "
        "(madvise DONTNEED), so the resident set stays O(batch_size · (D + K)) whatever the file size."])


if __name__ == "__main__":
    main()
