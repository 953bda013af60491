"""QuicK-means reproduction benchmark: QuickMeans vs scikit-learn KMeans, one run, one machine.

For each data set (centred), K and sparsity s: both estimators start from the same k-means++
centroids and run the same number of Lloyd iterations (tol = 0). Reported: objective ratio,
compression K·D/nnz, fit times, assignment time per vector (predict of one vector) and per
batch of 10 000 vectors vs ``KMeans.predict`` (interleaved best-of timings), the paper's routed
1-NN accuracy (a test point goes to its cluster, then to its nearest training point in that
cluster) for both, and the paper's numbers where it gives them.

    python benchmarks/quickmeans.py                 # the table in results/quickmeans_cpu.md
    python benchmarks/quickmeans.py --only breast   # one data set (name prefix)
    python benchmarks/quickmeans.py --only blobs --K 512 --sparsity 3 --structure splincol

Results are appended to results/quickmeans_cpu.json as they come (a long run can be
interrupted), and the Markdown table is written from it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (sets OMP_WAIT_POLICY before NumPy loads)

import numpy as np  # noqa: E402
from sklearn.cluster import KMeans, kmeans_plusplus  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from gpufact import datasets  # noqa: E402
from gpufact._kernels import cpu_sparse  # noqa: E402
from gpufact.cluster import QuickMeans, _lloyd  # noqa: E402

JSON = _common.RESULTS / "quickmeans_cpu.json"

# (data set, K, s, structure, Lloyd iterations, PALM sweeps per update)
CONFIGS = [
    ("breast-cancer", 64, 2, "splincol", 20, 100),
    ("breast-cancer", 64, 3, "splincol", 20, 100),
    ("breast-cancer", 64, 5, "splincol", 20, 100),
    ("fashion-mnist", 64, 2, "splincol", 10, 50),
    ("fashion-mnist", 64, 3, "splincol", 10, 50),
    ("fashion-mnist", 64, 5, "splincol", 10, 50),
    ("fashion-mnist", 64, 0, "butterfly", 10, 0),
    ("fashion-mnist", 256, 3, "splincol", 10, 30),
    ("fashion-mnist", 256, 0, "butterfly", 10, 0),
    ("blobs", 128, 3, "splincol", 5, 20),
    ("blobs", 256, 3, "splincol", 5, 20),
    ("blobs", 512, 3, "splincol", 5, 20),
    ("blobs", 512, 0, "butterfly", 5, 0),
]

PAPER = {  # QuicK-means (Machine Learning 2021), where the paper reports it
    ("fashion-mnist", 256): "1-NN ~0.84; objective within 3-8 % of K-means",
    ("blobs", 256): "one-vector assignment 2.2x",
    ("blobs", 512): "one-vector assignment 4.2x",
}


def load(name, seed=0):
    """(X train, y train, X test, y test), centred by the training mean, float32."""
    rng = np.random.default_rng(seed)
    if name == "fashion-mnist":
        X, y = datasets.load_fashion_mnist(subset="train", return_X_y=True)
        Xt, yt = datasets.load_fashion_mnist(subset="test", return_X_y=True)
    else:
        if name == "blobs":
            X, y = datasets.make_blobs(random_state=seed)
        else:
            X, y = datasets.load_breast_cancer(return_X_y=True)
        perm = rng.permutation(X.shape[0])
        cut = int(0.8 * X.shape[0])
        X, y, Xt, yt = X[perm[:cut]], y[perm[:cut]], X[perm[cut:]], y[perm[cut:]]
    mean = X.mean(axis=0)
    return np.ascontiguousarray(X - mean), y, np.ascontiguousarray(Xt - mean), yt


def routed_1nn(X, y, lab, Xt, yt, labt):
    """Accuracy of 1-NN restricted to the training points of each test point's cluster."""
    pred = np.empty(Xt.shape[0], dtype=y.dtype)
    xn = (X * X).sum(1)
    for k in np.unique(labt):
        tr = np.nonzero(lab == k)[0]
        te = np.nonzero(labt == k)[0]
        if tr.size == 0:
            pred[te] = -1
            continue
        d = xn[tr][None, :] - 2 * Xt[te] @ X[tr].T
        pred[te] = y[tr[np.argmin(d, axis=1)]]
    return float(np.mean(pred == yt))


def run_one(name, K, s, structure, n_iter, palm, data, seed=0):
    X, y, Xt, yt = data
    C0, _ = kmeans_plusplus(X, K, random_state=seed)
    km = KMeans(K, init=C0, n_init=1, max_iter=n_iter, tol=0.0, algorithm="lloyd")
    t0 = time.perf_counter()
    km.fit(X)
    t_km = time.perf_counter() - t0
    kw = dict(structure=structure, init=C0, max_iter=n_iter, tol=0.0)
    if structure == "splincol":
        kw.update(sparsity=s, palm_max_iter=palm)
    qm = QuickMeans(K, **kw)
    t0 = time.perf_counter()
    with threadpool_limits(1, user_api="blas"):
        qm.fit(X)
    t_qm = time.perf_counter() - t0
    t_init = qm._fit_timings["init"]  # k-means++ start given: the initial factorization
    B = Xt if Xt.shape[0] >= 10_000 else np.concatenate([Xt] * (10_000 // Xt.shape[0] + 1))
    B = np.ascontiguousarray(B[:10_000])
    x1 = np.ascontiguousarray(B[:1])
    qm.predict(B[:100])
    fixed = cpu_sparse.FIXED_TILE_BYTES

    def general(X):  # predict before the small-batch path: validation, then labels and distances
        return _lloyd.assign_chunks(qm._test_data(X)[0], qm.centroid_operator_, qm._cnorm2,
                                    qm._predict_chunks(X))[0]

    def runtime_width(X):  # ... and with the runtime-width tile kernel (no fixed-width tiles)
        cpu_sparse.FIXED_TILE_BYTES = ()
        try:
            return general(X)
        finally:
            cpu_sparse.FIXED_TILE_BYTES = fixed

    assert (general(B) == qm.predict(B)).all() and (runtime_width(B) == qm.predict(B)).all()
    times = _common.interleaved_best({
        "qm_b": lambda: qm.predict(B), "km_b": lambda: km.predict(B), "qm_b_before": lambda: runtime_width(B)},
        rounds=3, repeat=2)
    times.update(_common.interleaved_best({
        "qm_1": lambda: qm.predict(x1), "km_1": lambda: km.predict(x1), "qm_1_before": lambda: general(x1)},
        rounds=3, repeat=50))
    F = qm.centroid_operator_
    acc_qm = routed_1nn(X, y, qm.labels_, Xt, yt, qm.predict(Xt))
    acc_km = routed_1nn(X, y, km.labels_, Xt, yt, km.predict(Xt))
    return dict(dataset=name, n=X.shape[0], D=X.shape[1], K=K, s=s, structure=structure, iters=n_iter,
                palm=palm, obj_qm=float(qm.inertia_), obj_km=float(km.inertia_),
                obj_ratio=float(qm.inertia_ / km.inertia_), nnz=int(F.nnz), compression=K * X.shape[1] / F.nnz,
                fit_qm=t_qm, fit_qm_init=t_init, fit_km=t_km, n_iter_km=int(km.n_iter_), n_iter_qm=qm.n_iter_,
                batch_qm=times["qm_b"], batch_km=times["km_b"], one_qm=times["qm_1"], one_km=times["km_1"],
                batch_qm_before=times["qm_b_before"], one_qm_before=times["qm_1_before"],
                load=os.getloadavg(), acc_qm=acc_qm, acc_km=acc_km, seed=seed,
                assign="fused CSR chain" if structure == "splincol" else "fused KS chain")


def table(rows):
    loads = [r["load"][0] for r in rows if "load" in r]
    load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "about 1-2"
    lines = [
        "Each row: one seed (0), data centred, the same k-means++ start for both, tol = 0, "
        "`iters` Lloyd iterations each (PALM sweeps per centroid update in `palm`, the warm-started "
        "PALM also stops on stagnation). Run with OPENBLAS_NUM_THREADS=1 (scikit-learn's KMeans holds "
        "BLAS to one thread inside fit and predict anyway and runs its loops on 2 OpenMP threads; "
        "QuickMeans' fit runs its PALM products on one BLAS thread). Timings: interleaved best-of rounds "
        "in one process. Speed-ups > 1: QuickMeans faster. The box is shared with other jobs: the 1-minute "
        f"load average on its 2 cores when each row was timed was {load} (rows without it: about 1-2); "
        "absolute times move with the load, ratios much less. "
        "Assignments use `FactorProduct.argmin_affine`; the column `assign` "
        "says which path ran (`scipy CSR (reference)`: one scipy SpMM per factor, then argmin, in rows measured "
        "before the fused CSR-chain kernel was merged). "
        "One-vector times are `predict` calls: KMeans' include scikit-learn's input validation (about 0.1-0.2 "
        "ms); QuickMeans' take its small-batch path (1-8 C-contiguous rows: attribute checks, the fused "
        "kernel's one-sample loop, NaN/inf found by the kernel's load). Rows missing from the before/after "
        "table below were measured before that path and the fixed-width tiles existed (their one-vector "
        "times include the full validation).",
        "",
        "| data (n x D) | K | structure | iters/palm | objective QM/KM | K·D/nnz | fit QM (init) s | fit KM s | fit ratio | "
        "assign | batch 10k QM ms | KM ms | speed-up | 1 vector QM us | KM us | speed-up | routed 1-NN QM | KM | paper |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        st = f"splincol({r['s']})" if r["structure"] == "splincol" else "butterfly"
        lines.append(
            f"| {r['dataset']} ({r['n']}x{r['D']}) | {r['K']} | {st} | {r['iters']}/{r['palm']} | {r['obj_ratio']:.3f} | "
            f"{r['compression']:.1f} | {r['fit_qm']:.1f} ({r['fit_qm_init']:.1f}) | {r['fit_km']:.3f} | "
            f"{r['fit_qm'] / r['fit_km']:.1f}x | "
            f"{r.get('assign', 'scipy CSR (reference)' if r['structure'] == 'splincol' else 'fused KS chain')} | "
            f"{r['batch_qm'] * 1e3:.1f} | {r['batch_km'] * 1e3:.1f} | "
            f"{r['batch_km'] / r['batch_qm']:.2f}x | {r['one_qm'] * 1e6:.0f} | {r['one_km'] * 1e6:.0f} | "
            f"{r['one_km'] / r['one_qm']:.2f}x | {r['acc_qm']:.3f} | {r['acc_km']:.3f} | "
            f"{PAPER.get((r['dataset'], r['K']), '') if r['structure'] == 'splincol' and r['s'] == 3 else ''} |")
    before = [r for r in rows if "batch_qm_before" in r]
    if before:
        lines += [
            "", "## Assignment before / after the small-batch path and the fixed-width tiles (same run)", "",
            "`before`: the general path (scikit-learn's validation, labels and distances, the runtime-width "
            "tile kernel); `after`: `predict` now. Each ratio is KMeans.predict's time over QuickMeans', "
            "all timed interleaved in the row's run.", "",
            "| data | K | structure | batch 10k before ms | after ms | KM ms | speed-up before | after | "
            "1 vector before us | after us | KM us | speed-up before | after | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in before:
            st = f"splincol({r['s']})" if r["structure"] == "splincol" else "butterfly"
            lines.append(
                f"| {r['dataset']} | {r['K']} | {st} | {r['batch_qm_before'] * 1e3:.1f} | {r['batch_qm'] * 1e3:.1f} | "
                f"{r['batch_km'] * 1e3:.1f} | {r['batch_km'] / r['batch_qm_before']:.2f}x | "
                f"{r['batch_km'] / r['batch_qm']:.2f}x | {r['one_qm_before'] * 1e6:.0f} | {r['one_qm'] * 1e6:.0f} | "
                f"{r['one_km'] * 1e6:.0f} | {r['one_km'] / r['one_qm_before']:.2f}x | "
                f"{r['one_km'] / r['one_qm']:.2f}x | {r['load'][0]:.1f} |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="run the configurations whose data set starts with this")
    ap.add_argument("--structure", default=None, choices=["splincol", "butterfly"],
                    help="run only the configurations with this structure")
    ap.add_argument("--K", type=int, nargs="*", default=None, help="run only these numbers of clusters")
    ap.add_argument("--sparsity", type=int, nargs="*", default=None, help="run only these splincol sparsities")
    ap.add_argument("--json", default=str(JSON), help="results file (rows replaced per configuration)")
    ap.add_argument("--merge", nargs="*", default=[], help="more JSON result files to merge in (their rows win)")
    ap.add_argument("--table-only", action="store_true", help="rewrite the Markdown table from the JSON")
    args = ap.parse_args(argv)
    path = Path(args.json)
    rows = json.loads(path.read_text()) if path.exists() else []
    key = lambda o: (o["dataset"], o["K"], o["s"], o["structure"])  # noqa: E731
    for extra in args.merge:
        new = json.loads(Path(extra).read_text())
        keys = {key(o) for o in new}
        rows = [o for o in rows if key(o) not in keys] + new
    if not args.table_only:
        cache = {}
        for cfg in CONFIGS:
            if (args.only and not cfg[0].startswith(args.only)) or \
                    (args.structure and cfg[3] != args.structure) or (args.K and cfg[1] not in args.K) or \
                    (args.sparsity and cfg[2] not in args.sparsity):
                continue
            if cfg[0] not in cache:
                cache.clear()
                cache[cfg[0]] = load(cfg[0])
            r = run_one(*cfg, cache[cfg[0]])
            print(json.dumps(r), flush=True)
            rows = [o for o in rows if key(o) != cfg[:4]] + [r]
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps(rows, indent=1))
    if args.merge:
        path.write_text(json.dumps(rows, indent=1))
    order = {c[:4]: i for i, c in enumerate(CONFIGS)}
    rows.sort(key=lambda o: order.get(key(o), 99))
    _common.write("quickmeans_cpu.md", "QuickMeans vs scikit-learn KMeans (CPU)", table(rows))


if __name__ == "__main__":
    main()
