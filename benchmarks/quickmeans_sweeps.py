"""QuickMeans fit time against objective: the PALM sweeps per centroid update.

Fashion-MNIST (60 000 x 784, centred, float32), K = 256, splincol(3), 10 Lloyd iterations
(tol = 0), the same k-means++ start for QuickMeans and scikit-learn's KMeans(n_init=1), several
seeds. For each ``palm_max_iter`` in the list: fit time (initial hierarchical factorization
included, k-means++ excluded for both), its ratio to KMeans' fit timed in the same round, and
the objective ratio QuickMeans / KMeans. The fit runs under one BLAS thread (as in
``quickmeans.py``); KMeans holds BLAS to one thread inside fit and runs its loops on the
machine's OpenMP threads.

    python benchmarks/quickmeans_sweeps.py                      # results/quickmeans_sweeps_cpu_<family>.md
    python benchmarks/quickmeans_sweeps.py --sweeps 10,30 --seeds 0
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (sets OMP_WAIT_POLICY before NumPy loads)

import numpy as np  # noqa: E402
from sklearn.cluster import KMeans, kmeans_plusplus  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from gpufact import datasets  # noqa: E402
from gpufact._cpuinfo import cpu_family  # noqa: E402
from gpufact.cluster import QuickMeans  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweeps", default="10,15,20,30", help="palm_max_iter values, comma-separated")
    ap.add_argument("--seeds", default="0,1,2", help="k-means++ seeds, comma-separated")
    ap.add_argument("--K", type=int, default=256)
    ap.add_argument("--iters", type=int, default=10, help="Lloyd iterations (both estimators)")
    a = ap.parse_args(argv)
    sweeps = [int(s) for s in a.sweeps.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    X = datasets.load_fashion_mnist(subset="train").data
    X = np.ascontiguousarray(X - X.mean(axis=0), dtype=np.float32)

    def km_fit(C0):
        km = KMeans(a.K, init=C0, n_init=1, max_iter=a.iters, tol=0.0, algorithm="lloyd")
        t0 = time.perf_counter()
        km.fit(X)
        return time.perf_counter() - t0, km

    def qm_fit(C0, palm):
        qm = QuickMeans(a.K, sparsity=3, init=C0, max_iter=a.iters, tol=0.0, palm_max_iter=palm)
        with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)  # a few coinciding centroids
            t0 = time.perf_counter()
            qm.fit(X)
            return time.perf_counter() - t0, qm

    rows = {p: [] for p in sweeps}
    for seed in seeds:
        C0, _ = kmeans_plusplus(X, a.K, random_state=seed)
        if seed == seeds[0]:  # compilation and caches out of the timings
            qm_fit(C0, 2)
        for p in sweeps:
            t_km, km = km_fit(C0)  # KMeans timed right before each QuickMeans fit (the load moves)
            t_qm, qm = qm_fit(C0, p)
            r = dict(seed=seed, palm=p, t_qm=t_qm, t_init=qm._fit_timings["init"], t_km=t_km,
                     obj=qm.inertia_ / km.inertia_, load=os.getloadavg()[0])
            rows[p].append(r)
            print(f"seed {seed} palm {p}: fit {t_qm:.2f} s (init {r['t_init']:.2f}) KMeans {t_km:.2f} s "
                  f"ratio {t_qm / t_km:.2f} objective {r['obj']:.4f} load {r['load']:.1f}", flush=True)

    lines = ["Fashion-MNIST train (60000 x 784, centred, float32), K = %d, splincol(3), %d Lloyd iterations (tol = 0), "
             "the same k-means++ start for both (seeds %s); QuickMeans' fit under one BLAS thread, KMeans(n_init=1, "
             "lloyd) timed just before each QuickMeans fit. Fit times include QuickMeans' initial hierarchical "
             "factorization (30 / 15 sweeps per split and global pass, at most `palm_max_iter`); k-means++ is "
             "excluded for both. `load`: the 1-minute load average on the machine's cores after the fit."
             % (a.K, a.iters, ", ".join(map(str, seeds))), "",
             "| palm_max_iter | seed | fit QM s (init) | fit KM s | fit ratio | objective QM/KM | load |",
             "|---|---|---|---|---|---|---|"]
    for p in sweeps:
        for r in rows[p]:
            lines.append(f"| {p} | {r['seed']} | {r['t_qm']:.2f} ({r['t_init']:.2f}) | {r['t_km']:.2f} | "
                         f"{r['t_qm'] / r['t_km']:.2f}x | {r['obj']:.4f} | {r['load']:.1f} |")
    lines += ["", "| palm_max_iter | mean fit ratio | mean objective QM/KM | min-max objective |", "|---|---|---|---|"]
    for p in sweeps:
        fr = [r["t_qm"] / r["t_km"] for r in rows[p]]
        ob = [r["obj"] for r in rows[p]]
        lines.append(f"| {p} | {np.mean(fr):.2f}x | {np.mean(ob):.4f} | {min(ob):.4f}-{max(ob):.4f} |")
    _common.write(f"quickmeans_sweeps_cpu_{cpu_family()}.md",
                  "QuickMeans fit time against objective: PALM sweeps per centroid update (CPU)", lines)


if __name__ == "__main__":
    main()
