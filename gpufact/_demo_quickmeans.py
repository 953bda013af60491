"""The main demo: QuickMeans against scikit-learn's KMeans (``python -m gpufact demo``).

Fashion-MNIST when installed (Debian ``dataset-fashion-mnist``), else scikit-learn's digits
(always offline). Both estimators start from the same k-means++ centroids and run the same
number of Lloyd iterations; printed side by side: objective, compression K·D / nnz, fit time,
predict time for a batch and for one vector. ``plot=FILE`` saves both objective curves and
the supports of the learned factors (matplotlib).
"""
from __future__ import annotations

import sys
import threading
import time
import warnings

import numpy as np

from ._timing import best_time

__all__ = ["demo_quickmeans"]


def _load(dataset, n_samples, rng):
    from . import datasets

    if dataset == "auto":
        dataset = "fashion-mnist" if datasets.fashion_mnist_available() else "digits"
    if dataset == "fashion-mnist":
        X, y = datasets.load_fashion_mnist(subset="train", return_X_y=True)
        Xt, yt = datasets.load_fashion_mnist(subset="test", return_X_y=True)
    elif dataset == "digits":
        X, y = datasets.load_digits(return_X_y=True)
        X, Xt, y, yt = X[:1400], X[1400:], y[:1400], y[1400:]
    else:
        raise ValueError(f"dataset must be 'auto', 'fashion-mnist' or 'digits', got {dataset!r}")
    if n_samples is not None and n_samples < X.shape[0]:
        idx = np.sort(rng.choice(X.shape[0], n_samples, replace=False))
        X, y = X[idx], y[idx]
    mean = X.mean(axis=0)
    return dataset, np.ascontiguousarray(X - mean), y, np.ascontiguousarray(Xt - mean), yt


def _compile_kernels(X, K, sparsity):
    """Compile the kernels QuickMeans will run on X (its dtype, its layout, K x D factors of
    the same shapes) with a small fit and two predicts, on the data's first rows. Meant for a
    background thread while the main thread picks the k-means++ start (one BLAS thread: the
    other core is idle then), so that a first run's compilation overlaps it instead of
    lengthening the QuickMeans fit. Any error is left for the real fit to raise."""
    from .cluster import QuickMeans

    try:
        from numba import get_num_threads

        from ._kernels.cpu_sparse import FIXED_TILE_BYTES

        n = min(X.shape[0], max(2 * K, get_num_threads() * FIXED_TILE_BYTES[0] // X.itemsize))
        Z = np.ascontiguousarray(X[:n])
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():  # a 2-sweep fit on a sample: coinciding centroids are expected
            warnings.simplefilter("ignore", ConvergenceWarning)
            qm = QuickMeans(K, sparsity=sparsity, init="random", max_iter=1, tol=0.0, palm_max_iter=2,
                            random_state=0).fit(Z)
        qm.predict(Z[:1])
        qm.predict(Z)
    except Exception:  # noqa: BLE001 - warm-up only
        pass


def _dense_curve(X, C0, n_iter):
    """KMeans objective after each Lloyd step from C0 (for the plot)."""
    from sklearn.cluster import KMeans

    C, out = C0, []
    for _ in range(n_iter + 1):
        km = KMeans(C.shape[0], init=C, n_init=1, max_iter=1, algorithm="lloyd").fit(X)
        d = ((X - C[km.predict(X)]) ** 2).sum()  # objective of C before its update
        out.append(float(d))
        C = km.cluster_centers_
    return out


class DemoArgumentError(ValueError):
    """A demo option that does not fit the data (the command line reports it as a usage error)."""


def demo_quickmeans(*, dataset="auto", n_samples=None, n_clusters=None, sparsity=3, max_iter=10,
                    palm_max_iter=30, repeat=5, plot=None, seed=0, out=sys.stdout) -> dict:
    """Run the comparison and print it; returns the measured numbers as a dict.

    BLAS is held to one thread throughout: scikit-learn's KMeans does so itself inside its
    Lloyd loop and predict (its parallelism is OpenMP), QuickMeans' factor products are small,
    and idle spinning BLAS threads would otherwise steal the cores from the other contender.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        return _run(dataset, n_samples, n_clusters, sparsity, max_iter, palm_max_iter, repeat, plot, seed, out)


def _run(dataset, n_samples, n_clusters, sparsity, max_iter, palm_max_iter, repeat, plot, seed, out):
    from sklearn.cluster import KMeans, kmeans_plusplus
    from tqdm.auto import tqdm

    from .cluster import QuickMeans

    rng = np.random.default_rng(seed)
    t_start = time.perf_counter()
    with tqdm(total=6, desc="gpufact demo", file=out, leave=False) as bar:
        bar.set_postfix_str("load data")
        name, X, y, Xt, yt = _load(dataset, n_samples, rng)
        K = n_clusters if n_clusters is not None else (64 if name == "fashion-mnist" else 32)
        bar.set_postfix_str("k-means++ start (and a first run's compilation)")
        if X.shape[0] <= K:  # (as many: a zero K-means objective, nothing to compare against)
            raise DemoArgumentError(f"{X.shape[0]} training samples (--n-samples) for {K} clusters (--clusters): "
                                    "pass more samples than clusters")
        if sparsity > min(K, X.shape[1]):
            raise DemoArgumentError(f"--sparsity {sparsity} is larger than min(clusters, features) = "
                                    f"{min(K, X.shape[1])}")
        warm = threading.Thread(target=_compile_kernels, args=(X, K, sparsity), daemon=True)
        warm.start()  # a first run compiles while k-means++ runs (timings below start after)
        C0, _ = kmeans_plusplus(X, K, random_state=seed)
        warm.join()
        bar.update()
        bar.set_postfix_str("fit KMeans")
        km = KMeans(K, init=C0, n_init=1, max_iter=max_iter, tol=0.0, algorithm="lloyd")
        t0 = time.perf_counter()
        km.fit(X)
        t_fit_km = time.perf_counter() - t0
        bar.update()
        bar.set_postfix_str("fit QuickMeans")
        qm = QuickMeans(K, sparsity=sparsity, init=C0, max_iter=max_iter, tol=0.0,
                        palm_max_iter=palm_max_iter, verbose=True)
        t0 = time.perf_counter()
        qm.fit(X)
        t_fit_qm = time.perf_counter() - t0
        bar.update()
        bar.set_postfix_str("time predict")
        qm.predict(Xt[:2])  # compilation outside the timings
        time.sleep(0.2)
        t_qm_b = best_time(lambda: qm.predict(Xt), repeat)
        t_qm_1 = best_time(lambda: qm.predict(Xt[:1]), 20 * repeat)
        time.sleep(0.2)
        t_km_b = best_time(lambda: km.predict(Xt), repeat)
        t_km_1 = best_time(lambda: km.predict(Xt[:1]), 20 * repeat)
        bar.update()
        agree = float(np.mean(qm.predict(Xt) == km.predict(Xt)))
        curve_km = None
        if plot is not None:
            bar.set_postfix_str("objective curve of KMeans")
            curve_km = _dense_curve(X, C0, qm.n_iter_)
        bar.update()
    F = qm.centroid_operator_
    res = dict(dataset=name, n_samples=X.shape[0], n_features=X.shape[1], n_test=Xt.shape[0],
               n_clusters=K, sparsity=sparsity, max_iter=max_iter, palm_max_iter=palm_max_iter,
               obj_qm=qm.inertia_, obj_km=float(km.inertia_),
               obj_ratio=qm.inertia_ / float(km.inertia_) if km.inertia_ > 0 else float("nan"),
               nnz=F.nnz, compression=K * X.shape[1] / F.nnz, n_factors=len(F),
               fit_qm=t_fit_qm, fit_km=t_fit_km, batch_qm=t_qm_b, batch_km=t_km_b,
               single_qm=t_qm_1, single_km=t_km_1, agree=agree, n_iter_qm=qm.n_iter_,
               n_iter_km=int(km.n_iter_), total=time.perf_counter() - t_start)
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"gpufact demo: QuickMeans vs scikit-learn KMeans on {name} "
      f"({X.shape[0]} x {X.shape[1]} train, centred; {Xt.shape[0]} test vectors), CPU")
    p(f"K = {K} clusters, same k-means++ start, {max_iter} Lloyd iterations; QuickMeans: "
      f"{len(F)} splincol({sparsity}) factors, {palm_max_iter} PALM sweeps max per update")
    p(f"{'':<28}{'KMeans':>12}{'QuickMeans':>12}{'QM / KM':>9}")  # every row: QuickMeans' over KMeans'
    rows = [("objective (train)", res["obj_km"], res["obj_qm"], "{:>12.4g}"),
            ("centroid entries / nnz", K * X.shape[1], F.nnz, "{:>12.0f}"),
            ("fit time (s)", t_fit_km, t_fit_qm, "{:>12.3f}"),
            (f"predict {Xt.shape[0]} vectors (ms)", t_km_b * 1e3, t_qm_b * 1e3, "{:>12.3f}"),
            ("predict 1 vector (us)", t_km_1 * 1e6, t_qm_1 * 1e6, "{:>12.1f}")]
    for label, a, b, fmt in rows:
        p(f"{label:<28}{fmt.format(a)}{fmt.format(b)}{b / a:>8.2f}x")
    p(f"objective ratio QuickMeans / KMeans: {res['obj_ratio']:.3f}; compression K.D/nnz: "
      f"{res['compression']:.1f}; batch predict speed-up: {t_km_b / t_qm_b:.2f}x; one vector: "
      f"{t_km_1 / t_qm_1:.2f}x; test points in the same cluster as with KMeans (both started from "
      f"the same centroids, so cluster k is the same seed; 1 = the same partition, and the factorized "
      f"centroids move the boundaries): {agree:.3f}")
    p(f"total demo time {res['total']:.1f} s (a first run includes Numba compilation, overlapped with "
      "the k-means++ start)")
    if plot is not None:
        _plot(plot, qm, curve_km, name, K)
        p(f"figure saved to {plot}")
    return res


def _plot(path, qm, curve_km, name, K):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'gpufact[plot]'") from exc
    F = qm.centroid_operator_
    J = len(F)
    fig = plt.figure(figsize=(3 + 1.6 * J, 6))
    ax = fig.add_subplot(2, 1, 1)
    ax.plot(range(len(curve_km)), curve_km, "o-", label="KMeans (dense centroids)")
    ax.plot(range(len(qm.objective_history_)), qm.objective_history_, "s-", label="QuickMeans")
    ax.set_xlabel("Lloyd iteration")
    ax.set_ylabel("objective")
    ax.set_title(f"{name}, K = {K}: objective; compression K·D/nnz = {F.rcg:.1f}")
    ax.legend()
    for j, f in enumerate(F.factors):
        a = fig.add_subplot(2, J, J + j + 1)
        a.spy(np.asarray(f.toarray()) != 0, markersize=0.3, aspect="auto")
        a.set_title(f"S{j + 1} {f.shape[0]}x{f.shape[1]}", fontsize=7)
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
