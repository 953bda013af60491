"""Dask helpers: fast transforms and QuickMeans on arrays larger than memory.

* :func:`apply_blocks` — ``X @ F.T`` for a dask array of row-major samples, block by block.
* :func:`fit` / :func:`predict` / :func:`transform` — what :class:`gpufact.cluster.QuickMeans`
  runs when given a ``dask.array`` (NumPy or CuPy chunks).

Fitting is one map-reduce per Lloyd iteration: every block returns fixed-shape partials
(sums (K, D), counts (K,), inertia ()) from the same functions as the in-memory fit
(:mod:`gpufact.cluster._lloyd`), packed in one float64 row, summed by Dask's tree reduction,
read with one ``compute``. Fixed shapes make unknown row chunk sizes a non-case for the
iterations; only an initialisation by sampling (``init="k-means++"`` or ``"random"``) needs
the number of rows, and computes the chunk sizes once if they are unknown. Predictions go
through ``map_blocks`` with an explicit ``meta``. The features must be in one chunk
(``X.rechunk({1: -1})``). Dask is imported lazily: install the extra ``gpufact[dask]``.
"""
from __future__ import annotations

import math

import numpy as np

from ._backend import get_backend

__all__ = ["apply_blocks", "fit", "predict", "transform"]

#: rows sampled from a Dask array to run k-means++ / random initialisation on
INIT_SAMPLE = 10_000


def _da():
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - dask is a test dependency
        raise ImportError("gpufact's Dask support needs dask[array]: pip install 'gpufact[dask]'") from exc
    return da


def _check_dask(X, name="X", n_features=None):
    da = _da()
    if not isinstance(X, da.Array):
        raise TypeError(f"{name} must be a dask.array.Array, got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got {X.ndim}-D")
    if len(X.chunks[1]) != 1:
        raise ValueError(f"{name} must have a single chunk along the features (got {len(X.chunks[1])}); "
                         f"use {name}.rechunk({{1: -1}})")
    if math.isnan(X.shape[1]):
        raise ValueError(f"{name} has an unknown number of features")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features, but the estimator is expecting "
                         f"{n_features} features as input")
    kind = np.dtype(X.dtype).kind
    if kind == "c":
        raise TypeError(f"{name}: complex data is not supported, got dtype {X.dtype}")
    if kind not in "biuf":
        raise TypeError(f"{name}: unsupported dtype {X.dtype}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    be = get_backend(X._meta)
    return X, be


def apply_blocks(F, X):
    """``X @ F.T`` for a dask array X (n, N) of row-major samples and a FactorProduct F (M, N):
    a lazy (n, M) dask array, one ``map_blocks`` call (chunk sizes may be unknown)."""
    X, be = _check_dask(X, n_features=F.shape[1])
    get_backend(X._meta, F)
    dt = F._result_dtype(X, "X")
    M = F.shape[0]
    FT = F.T
    return X.map_blocks(lambda b: b @ FT, dtype=dt, chunks=(X.chunks[0], (M,)),
                        meta=be.xp.empty((0, 0), dtype=dt))


def _partials_block(Xb, op, cnorm2, K):
    from .cluster import _lloyd

    xp = get_backend(Xb).xp
    lab, d2 = _lloyd.assign(Xb, op, cnorm2)
    s, c, e = _lloyd.block_partials(Xb, lab, d2, K)
    return xp.concatenate([s.ravel(), c, e[None]])[None, :]


def _farthest_block(Xb, op, cnorm2, cluster, m):
    """The m points of ``cluster`` farthest from their centroid in this block, packed (1, m (D + 1)):
    (dist2, row) pairs, dist2 = −1 for missing points."""
    from .cluster import _lloyd

    xp = get_backend(Xb).xp
    D = Xb.shape[1]
    out = xp.full((m, D + 1), -1.0, dtype=xp.float64)
    if Xb.shape[0]:
        lab, d2 = _lloyd.assign(Xb, op, cnorm2)
        cand = xp.where(lab == cluster, d2.astype(xp.float64), -1.0)
        top = xp.argsort(-cand, kind="stable")[:m]
        out[: top.shape[0], 0] = cand[top]
        out[: top.shape[0], 1:] = Xb[top]
    return out.reshape(1, -1)


def _initial_centroids(est, X, K, be):
    """init array as is; else k-means++ / random on a uniform sample of INIT_SAMPLE rows."""
    from .cluster._quickmeans import _check_overflow, random_state_of

    if not isinstance(est.init, str):
        return est._initial_centroids(X, K, be)  # validates the array, never touches X's data
    if any(math.isnan(c) for c in X.chunks[0]):
        X = X.compute_chunk_sizes()
    n = X.shape[0]
    if n < K:
        raise ValueError(f"n_samples={n} should be >= n_clusters={K}")
    rs = random_state_of(est.random_state)
    m = min(n, max(INIT_SAMPLE, 3 * K))
    idx = np.sort(rs.choice(n, m, replace=False)) if m < n else np.arange(n)
    S = X[idx].compute()
    # the sample's magnitudes against the whole objective (n rows), before k-means++ (which
    # ran into NumPy overflow warnings first); a huge row outside the sample makes the first
    # pass's objective non-finite, an error that says to rescale X too
    _check_overflow(S, n)
    saved = est.random_state
    try:
        est.random_state = rs
        return est._initial_centroids(S, K, be)
    finally:
        est.random_state = saved


def fit(est, X):
    """Fit the QuickMeans ``est`` on the dask array X (n_samples, n_features): one map-reduce
    and one ``compute`` per Lloyd iteration. ``labels_`` is a lazy dask array (``predict``);
    ``cluster_centers_`` and the operator live in the namespace of X's chunks. Empty clusters
    take the farthest points of the largest cluster (one extra pass when that happens).
    Raises ValueError on NaN/inf (a non-finite objective), fewer samples than clusters,
    features split over several chunks."""
    import dask

    X, be = _check_dask(X)
    xp = be.xp
    n_rows = X.shape[0] if not math.isnan(X.shape[0]) else None
    d = X.shape[1]
    est.n_features_in_ = d
    if hasattr(est, "feature_names_in_"):
        del est.feature_names_in_
    K, s, Q = est._check_params(n_rows if n_rows is not None else np.iinfo(np.int64).max, d)
    C0 = _initial_centroids(est, X, K, be)
    if not bool(xp.isfinite(C0).all()):
        raise ValueError("X contains NaN or inf (in the initial centroids)")
    state = est._make_centroids(C0, s, Q)
    P = K * d + K + 1
    nb = X.numblocks[0]
    cur = {}

    def pass_fn(op, cnorm2):
        cur["op"], cur["cnorm2"] = op, cnorm2
        parts = X.map_blocks(_partials_block, op, cnorm2, K, dtype=np.float64,
                             chunks=((1,) * nb, (P,)), meta=xp.empty((0, 0), dtype=np.float64))
        (tot,) = dask.compute(parts.sum(axis=0))
        tot = xp.asarray(tot)
        sums, counts, inertia = tot[:K * d].reshape(K, d), tot[K * d:K * d + K], tot[-1]
        if "checked" not in cur:
            cur["checked"] = True
            n = int(round(float(counts.sum())))
            if n < K:
                raise ValueError(f"n_samples={n} should be >= n_clusters={K}")
        return None, None, sums, counts, inertia

    def reseed(labels, dist2, sums, counts):
        empty = [int(k) for k in np.nonzero(_host(counts) == 0)[0]]
        if not empty:
            return 0
        m = len(empty)
        big = int(xp.argmax(counts))
        parts = X.map_blocks(_farthest_block, cur["op"], cur["cnorm2"], big, m, dtype=np.float64,
                             chunks=((1,) * nb, (m * (d + 1),)), meta=xp.empty((0, 0), dtype=np.float64))
        (top,) = dask.compute(parts)
        top = xp.asarray(top).reshape(-1, d + 1)
        order = xp.argsort(-top[:, 0], kind="stable")[:m]
        for k, r in zip(empty, (int(v) for v in _host(order))):
            x = top[r, 1:]
            sums[big] -= x
            counts[big] -= 1
            sums[k] = x
            counts[k] = 1
        return m

    est._lloyd_loop(state, X.dtype, xp, pass_fn, reseed)
    est.labels_ = predict(est, X)
    return est


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _finite_block(Xb):
    from ._validation import check_finite

    check_finite(Xb, "X", get_backend(Xb).xp)  # as the in-memory predict: NaN/inf is a ValueError
    return Xb


def _predict_block(Xb, op, cnorm2):
    from .cluster._quickmeans import _out_of_range

    _finite_block(Xb)
    labels, scores = op.argmin_affine(Xb, cnorm2, alpha=-2.0)
    if not bool(get_backend(scores).xp.isfinite(scores).all()):  # as the in-memory predict
        raise _out_of_range(Xb.dtype)
    return labels


def predict(est, X):
    """Lazy labels (n_samples,) int32 of the fitted QuickMeans ``est`` for the dask array X
    (``map_blocks``; unknown chunk sizes work)."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est)
    X, be = _check_dask(X, n_features=est.n_features_in_)
    op = est.centroid_operator_
    get_backend(X._meta, op)
    return X.map_blocks(_predict_block, op, est._cnorm2, dtype=np.int32, drop_axis=1,
                        chunks=(X.chunks[0],), meta=be.xp.empty((0,), dtype=np.int32))


def _transform_block(Xb, op, cnorm2):
    from .cluster import _lloyd
    from .cluster._quickmeans import _out_of_range

    _finite_block(Xb)
    D = _lloyd.distances(Xb, op, cnorm2, [(0, Xb.shape[0])])
    if not bool(get_backend(D).xp.isfinite(D).all()):  # as the in-memory transform
        raise _out_of_range(Xb.dtype)
    return D


def transform(est, X):
    """Lazy distances (n_samples, n_clusters) to the centroids for the dask array X."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est)
    X, be = _check_dask(X, n_features=est.n_features_in_)
    op = est.centroid_operator_
    get_backend(X._meta, op)
    dt = op._result_dtype(X, "X")
    return X.map_blocks(_transform_block, op, est._cnorm2, dtype=dt, chunks=(X.chunks[0], (op.shape[0],)),
                        meta=be.xp.empty((0, 0), dtype=dt))
