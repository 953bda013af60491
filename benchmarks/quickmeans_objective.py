"""What the QuickMeans objective needs on Fashion-MNIST, K = 256, s = 3 (one run, one machine).

The K-means objective of QuickMeans exceeds that of K-means by Σ_k n_k ‖u_k − v_k‖² (cluster
means u_k, factorized centroids v_k) at equal assignments, i.e. by e² ‖W‖² where W = diag(√n) U
is the weighted target of the centroid step and e the relative error of its factorization. So:

A. the optimal rank-r approximation of W (truncated SVD, r (K + D) parameters) gives the
   error a dense low-rank model reaches with a given parameter budget, and the objective
   ratio it would imply;
B. the hierarchical factorization + warm-started PALM4MSA on W (K-means' own centroids after
   ``iters`` iterations) for up to ``--sweeps`` sweeps gives the error the published
   splincol(3) structure reaches with more optimisation, and its implied ratio;
C. QuickMeans itself (``--iters`` Lloyd iterations x ``--palm`` sweeps): the objective ratio
   to K-means after each iteration, and where the fit time goes (hierarchical initialisation,
   PALM per centroid update, assignments).

    python benchmarks/quickmeans_objective.py          # results/quickmeans_objective_cpu.md
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.cluster import KMeans, kmeans_plusplus  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import quickmeans as bq  # noqa: E402
from gpufact import proj  # noqa: E402
from gpufact.cluster import QuickMeans, _centroids  # noqa: E402
from gpufact.factorize import hierarchical, palm4msa  # noqa: E402
from gpufact.factorize.hierarchical import rectangular_constraints  # noqa: E402

K, S = 256, 3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=20, help="Lloyd iterations of part C (and of K-means in A, B: 10)")
    ap.add_argument("--palm", type=int, default=30, help="PALM sweeps per centroid update in part C")
    ap.add_argument("--sweeps", type=int, default=300, help="PALM sweeps in part B (the published palm_max_iter)")
    args = ap.parse_args(argv)
    X, _, _, _ = bq.load("fashion-mnist")
    C0, _ = kmeans_plusplus(X, K, random_state=0)
    km = KMeans(K, init=C0, n_init=1, max_iter=10, tol=0.0, algorithm="lloyd").fit(X)
    U = km.cluster_centers_.astype(np.float64)
    n = np.bincount(km.labels_, minlength=K).astype(np.float64)
    w = np.sqrt(n)
    W = w[:, None] * U
    W2 = float((W ** 2).sum())
    obj = float(km.inertia_)

    def implied(e):
        return (obj + e * e * W2) / obj

    lines = [f"Fashion-MNIST train (60000 x 784, centred, float32), K = {K}, k-means++ start (seed 0). "
             f"K-means after 10 Lloyd iterations: objective {obj:.4g}; ‖W‖² = Σ n_k ‖u_k‖² = {W2:.4g}. "
             "An objective ratio of 1.08 needs a weighted relative error e ≤ "
             f"{np.sqrt(0.08 * obj / W2):.3f} (ratio ≈ 1 + e² ‖W‖² / objective at equal assignments). "
             f"Run with OPENBLAS_NUM_THREADS=1; load average at the start {os.getloadavg()[0]:.1f} (2 cores).", ""]
    # A. truncated SVD
    sv = np.linalg.svd(W, compute_uv=False)
    lines += ["## A. Optimal rank-r approximation of W (parameter budget r (K + D))", "",
              "| rank r | parameters | weighted rel. error e | implied objective ratio |", "|---|---|---|---|"]
    for r in (8, 12, 16, 24, 32, 64):
        e = float(np.sqrt((sv[r:] ** 2).sum() / (sv ** 2).sum()))
        lines.append(f"| {r} | {r * (K + 784)} | {e:.3f} | {implied(e):.3f} |")
    r108 = next(r for r in range(1, K) if implied(float(np.sqrt((sv[r:] ** 2).sum() / (sv ** 2).sum()))) <= 1.08)
    # B. hierarchical + PALM on the fixed target
    fact, res = rectangular_constraints((K, 784), S, None, side="left")
    with threadpool_limits(1, user_api="blas"):
        t = time.perf_counter()
        F = hierarchical(U, fact_constraints=fact, res_constraints=res, side="left", n_iter_local=100,
                         n_iter_global=50)
        t_h = time.perf_counter() - t
        V = F.toarray()
        e_h = float(np.linalg.norm(W - w[:, None] * V) / np.sqrt(W2))
        Sf = [f.toarray() for f in F.factors]
        lam = float(np.linalg.norm(Sf[0]))
        Sf[0] = Sf[0] / lam
        Dw = np.diag(w)
        t = time.perf_counter()
        _, hist = palm4msa(W, [proj.const(Dw)] + list(fact) + [res[-1]], args.sweeps, init=[Dw] + Sf,
                           lambda_init=lam, return_history=True)
        t_p = time.perf_counter() - t
    lines += ["", f"## B. splincol({S}) x {len(fact) + 1} factors fitted to W (K-means' centroids), nnz {F.nnz}", "",
              f"Hierarchical factorization (100 sweeps per split, 50 per global pass) of U: {t_h:.0f} s; "
              f"then warm-started PALM4MSA on W: {t_p / len(hist):.2f} s per sweep ({len(hist)} sweeps run).", "",
              "| PALM sweeps | weighted rel. error e | implied objective ratio |", "|---|---|---|",
              f"| 0 (hierarchical) | {e_h:.3f} | {implied(e_h):.3f} |"]
    for i in (1, 10, 30, 100, 300, 1000):
        if i <= len(hist):
            lines.append(f"| {i} | {hist[i - 1]:.3f} | {implied(hist[i - 1]):.3f} |")
    # C. QuickMeans Lloyd curve and fit-time split
    upd = []
    orig = _centroids.SplincolCentroids.update

    def timed_update(self, U_, counts):
        t0 = time.perf_counter()
        n0 = self.n_palm
        ok = orig(self, U_, counts)
        upd.append((time.perf_counter() - t0, self.n_palm - n0))
        return ok

    _centroids.SplincolCentroids.update = timed_update
    try:
        qm = QuickMeans(K, sparsity=S, init=C0, max_iter=args.iters, tol=0.0, palm_max_iter=args.palm)
        t = time.perf_counter()
        with threadpool_limits(1, user_api="blas"):
            qm.fit(X)
        t_qm = time.perf_counter() - t
    finally:
        _centroids.SplincolCentroids.update = orig
    t0 = time.perf_counter()
    KMeans(K, init=C0, n_init=1, max_iter=qm.n_iter_, tol=0.0, algorithm="lloyd").fit(X)
    t_km = time.perf_counter() - t0
    t_palm = sum(u[0] for u in upd)
    t_init = qm._fit_timings["init"]
    lines += ["", f"## C. QuickMeans, {args.iters} Lloyd iterations x {args.palm} PALM sweeps "
              f"(nnz {qm.centroid_operator_.nnz}, K·D/nnz {K * 784 / qm.centroid_operator_.nnz:.1f})", "",
              f"Fit {t_qm:.0f} s ({qm.n_iter_} centroid updates) vs KMeans(n_init=1) {t_km:.1f} s at the same "
              f"iteration count ({t_qm / t_km:.0f}x): hierarchical initialisation {t_init:.0f} s "
              f"({100 * t_init / t_qm:.0f} %), PALM {t_palm:.0f} s ({100 * t_palm / t_qm:.0f} %, "
              f"{t_palm / max(1, len(upd)):.1f} s per update of {np.mean([u[1] for u in upd]):.0f} sweeps), "
              f"assignments and the rest {t_qm - t_init - t_palm:.0f} s.", "",
              "| Lloyd iteration | QuickMeans objective | K-means objective | ratio |", "|---|---|---|---|"]
    for it in (1, 2, 3, 5, 10, 15, 20, 30, 50):
        if it < len(qm.objective_history_):
            o_km = KMeans(K, init=C0, n_init=1, max_iter=it, tol=0.0, algorithm="lloyd").fit(X).inertia_
            o = qm.objective_history_[it]
            lines.append(f"| {it} | {o:.4g} | {o_km:.4g} | {o / o_km:.3f} |")
    nnz = qm.centroid_operator_.nnz
    e_pb = hist[-1]
    lines += ["", "## Reading", "",
              f"The objective gap is the factorization error: at 10 iterations QuickMeans is at "
              f"{qm.objective_history_[min(10, len(qm.objective_history_) - 1)] / obj:.3f}x, about what "
              f"splincol({S}) reaches on K-means' own centroids ({implied(e_pb):.3f}x implied after "
              f"{len(hist)} PALM sweeps, down from {implied(e_h):.3f}x: more sweeps and more Lloyd iterations "
              "each buy a percent or two). The best dense rank-r model with the same parameter budget as the "
              f"factors ({nnz} nonzeros, rank {nnz // (K + 784)}) implies "
              f"{implied(float(np.sqrt((sv[nnz // (K + 784):] ** 2).sum() / (sv ** 2).sum()))):.3f}x; a ratio of 1.08 "
              f"needs rank {r108} ({r108 * (K + 784)} parameters, {r108 * (K + 784) / nnz:.1f}x the nonzeros). "
              "So the 1.08 target at K = 256, s = 3 is a matter of parameter budget, not of optimisation: "
              "larger s (s = 5: 1.098 at K = 64) or fewer, denser factors move towards it, at the cost of "
              "assignment speed."]
    _common.write("quickmeans_objective_cpu.md", "QuickMeans objective on Fashion-MNIST K = 256, s = 3: what it takes",
                  lines)


if __name__ == "__main__":
    main()
