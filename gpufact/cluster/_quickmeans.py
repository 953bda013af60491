"""QuicK-means: K-means whose centroid matrix is a learned fast transform.

Giffon, Emiya, Ralaivola, Kadri, "QuicK-means: accelerating inference for K-means by learning
fast transforms", Machine Learning 110 (2021); arXiv 1908.08713.
"""
from __future__ import annotations

import math
import numbers
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._backend import get_backend
from .._validation import check_int, check_samples, chunk_rows, max_abs
from ..product import ARGMIN_SMALL_ROWS
from . import _lloyd
from ._centroids import ButterflyCentroids, SplincolCentroids, n_factors_auto

__all__ = ["QuickMeans"]

_STRUCTURES = ("splincol", "butterfly")
_INITS = ("k-means++", "random")
_CHUNK_BYTES = 64 << 20  # in-memory mode: rows per chunk so that a chunk's temporaries fit this


def _is_dask(X) -> bool:
    return type(X).__module__.startswith("dask.") and hasattr(X, "chunks")


def _kmeans_plusplus_xp(X, K, rs, xp):
    """Greedy k-means++ (Arthur & Vassilvitskii 2007; 2 + ⌊ln K⌋ local trials, as scikit-learn)
    on X's namespace; the random draws come from the host RandomState ``rs``."""
    n = X.shape[0]
    trials = 2 + int(np.log(K))
    xn = _lloyd.row_sqnorms(X, xp)
    centers = xp.empty((K, X.shape[1]), dtype=X.dtype)
    first = int(rs.randint(n))
    centers[0] = X[first]
    closest = xp.maximum(xn - 2 * (X @ X[first]) + xn[first], 0)
    pot = float(closest.sum())
    for c in range(1, K):
        r = xp.asarray(rs.uniform(size=trials) * pot)
        cand = xp.searchsorted(xp.cumsum(closest), r)
        cand = xp.clip(cand, 0, n - 1)
        d = xp.maximum(xn[None, :] - 2 * (X[cand] @ X.T) + xn[cand][:, None], 0)
        d = xp.minimum(closest[None, :], d)
        pots = d.sum(axis=1)
        best = int(xp.argmin(pots))
        closest, pot = d[best], float(pots[best])
        centers[c] = X[cand[best]]
    return centers


def random_state_of(value):
    """scikit-learn's ``check_random_state`` with an error that names ``random_state`` (a
    ``numpy.random.Generator`` is refused, as by scikit-learn's estimators)."""
    try:
        return check_random_state(value)
    except ValueError as exc:
        raise ValueError(f"random_state must be None, an int or a numpy.random.RandomState: {exc}") from None


def _check_scale(C0):
    """ValueError when the initial centroids' magnitudes (points of X, or ``init``) put squared
    distances out of the dtype's range: below sqrt(tiny / eps) (float32 ~3e-16, float64
    ~1e-146) their squares underflow and every point lands in one cluster with objective 0;
    above sqrt(max / (16 D)) the squared norms overflow. All-zero data pass."""
    d = C0.shape[1]
    fi = np.finfo(C0.dtype)
    s = max_abs(C0)
    lo = math.sqrt(float(fi.tiny) / float(fi.eps))
    hi = math.sqrt(float(fi.max) / (16 * max(d, 1)))
    if s > 0 and not lo <= s <= hi:
        raise ValueError(
            f"X: its magnitudes (about {s:.3g} at the initial centroids) put squared distances out of "
            f"{np.dtype(C0.dtype).name}'s range (usable: {lo:.1g} to {hi:.1g} with {d} features); "
            f"rescale X, e.g. X / abs(X).max(){' or use float64' if C0.dtype == np.float32 else ''}")


def _check_overflow(X, n_samples):
    """The overflow half of :func:`_check_scale` on the data themselves (or a chunk of them,
    ``n_samples`` rows in all), before the initialisation: the objective, a sum of n squared
    distances of up to 4 D s² each (s = max |x|), must fit the dtype (k-means++ sums the same
    distances: on such X it ran into NumPy overflow warnings first, and its centroids need not
    include the largest rows). O(n D), no temporary."""
    d = X.shape[1]
    s = max_abs(X)  # 0 for an empty X: passes
    hi = math.sqrt(float(np.finfo(X.dtype).max) / (16 * max(d, 1) * max(n_samples, 1)))
    if s > hi:
        raise ValueError(
            f"X: its magnitudes (up to {s:.3g}) put the sum of squared distances out of "
            f"{np.dtype(X.dtype).name}'s range (usable: up to {hi:.1g} with {n_samples} samples of {d} features); "
            f"rescale X, e.g. X / abs(X).max(){' or use float64' if X.dtype == np.float32 else ''}")


def _out_of_range(dtype):
    """The ValueError of predict / transform / score for finite X whose distances to the
    centroids overflow ``dtype`` (the labels or distances would be wrong or NaN)."""
    name = np.dtype(dtype).name
    return ValueError(
        f"X: its magnitudes put squared distances to the centroids out of {name}'s range (they overflow); "
        f"rescale X, e.g. X / abs(X).max(){' or use float64' if name == 'float32' else ''}")


class QuickMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """K-means clustering whose K × D centroid matrix is a product of sparse factors
    (QuicK-means), so assigning a point costs O(nnz) ≈ O(A log B + B) instead of O(K · D)
    (A = min(K, D), B = max(K, D)).

    Lloyd's algorithm with the assignments computed through the factorized centroids
    (argmin_k ‖v_k‖² − 2⟨v_k, x⟩, :meth:`gpufact.FactorProduct.argmin_affine`); the centroid
    step is the weighted factorization min ‖diag(√n)(U − V)‖_F (n_k cluster sizes, U the
    cluster means), solved by PALM4MSA with diag(√n) as a fixed first factor, warm-started
    from the previous factors. The initial centroids (k-means++ by default) are factored
    once by the hierarchical factorization. The objective Σ ‖x − v_{label(x)}‖² never
    increases from one iteration to the next (a centroid step that would fit worse is
    rejected), except on an iteration that re-seeds an empty cluster (with the point of the
    largest cluster farthest from its centroid).

    Parameters
    ----------
    n_clusters : int >= 1, the number K of clusters.
    sparsity : int >= 1, s of the ``splincol(s)`` factors (s largest entries per row and per
        column); at most min(n_clusters, n_features). The paper uses 2, 3 or 5. Not used by
        ``structure="butterfly"`` (dense b × c blocks, b and c prime radices).
    n_factors : "auto" (Q = ⌊log2 max(K, D)⌋) or an int >= 2: factors of shapes K × A, A × A,
        …, A × D. Not used by ``structure="butterfly"`` (as many factors as the larger count of
        prime factors of K' and D').
    structure : "splincol" (QuicK-means as published) or "butterfly" (a mixed-radix
        butterfly of Kronecker-sparse factors from K' to D', the radices the prime factors of
        K' and D'; K' = K and D' = D unless a size has a prime factor above 16, which is
        zero-padded to the next 7-smooth size), learned by :func:`gpufact.factorize.ksfactor` at each step and applied by
        the fused KS kernels.
    init : "k-means++" (scikit-learn's greedy k-means++ on NumPy; the same algorithm on
        CuPy), "random" (K distinct samples drawn uniformly) or an array (K, D) of initial
        centroids.
    max_iter : maximum number of Lloyd iterations (centroid updates).
    tol : stop when the objective's relative decrease is at most ``tol``.
    palm_max_iter : PALM4MSA sweeps per centroid update (also caps the hierarchical
        factorization: min(palm_max_iter, 30) sweeps per split, min(palm_max_iter, 15) per
        global pass, which the warm-started updates then refine); a warm-started PALM stops earlier when its error stagnates
        (relative change < 1e-6). Fit time grows about linearly with it; fewer sweeps give
        a larger objective (README: measured trade-off).
    batch_size : None (in memory, rows processed in chunks of about 64 MiB) or an int >= 1:
        rows per chunk, so fit memory stays O(batch_size · (D + K) + K · D) besides X itself —
        use it with ``numpy.memmap`` data. The result is the same (exact Lloyd).
    random_state : None, int or RandomState (initialisation).
    verbose : bool or int >= 0; true (nonzero) shows a tqdm progress bar over the Lloyd
        iterations.

    Attributes
    ----------
    cluster_centers_ : (K, D) dense centroids (the product, X's dtype and namespace).
    centroid_operator_ : the :class:`gpufact.FactorProduct` V (K × D) used by predict.
    labels_ : (n_samples,) int32, the final assignment (= ``predict(X)``).
    inertia_ : float, Σ ‖x − v_{label(x)}‖² for ``labels_``.
    n_iter_ : number of centroid updates performed.
    objective_history_ : list of floats, the objective after each assignment step.
    n_features_in_ : D.

    Complexity: per iteration O(n · nnz(V)) for the assignments, O(n · D) for the means,
    plus PALM on K × D matrices (independent of n). predict: O(nnz(V)) per sample.

    Raises ValueError (naming the argument) on bad parameters, NaN/inf in X, fewer samples
    than clusters, a sparsity larger than a factor dimension or a wrong number of
    features; sklearn's NotFittedError before fit; TypeError on NumPy/CuPy mixes.
    """

    def __init__(self, n_clusters=8, *, sparsity=3, n_factors="auto", structure="splincol",
                 init="k-means++", max_iter=50, tol=1e-6, palm_max_iter=300, batch_size=None,
                 random_state=None, verbose=False):
        self.n_clusters = n_clusters
        self.sparsity = sparsity
        self.n_factors = n_factors
        self.structure = structure
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.palm_max_iter = palm_max_iter
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # --- parameters -------------------------------------------------------------------
    def _check_params(self, n_samples, n_features):
        K = check_int(self.n_clusters, "n_clusters", min_value=1)
        s = check_int(self.sparsity, "sparsity", min_value=1)
        if isinstance(self.n_factors, str):
            if self.n_factors != "auto":
                raise ValueError(f"n_factors must be 'auto' or an int >= 2, got {self.n_factors!r}")
            Q = n_factors_auto(K, n_features)
        else:
            Q = check_int(self.n_factors, "n_factors", min_value=2)
        if self.structure not in _STRUCTURES:
            raise ValueError(f"structure must be one of {_STRUCTURES}, got {self.structure!r}")
        check_int(self.max_iter, "max_iter", min_value=1)
        check_int(self.palm_max_iter, "palm_max_iter", min_value=1)
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size", min_value=1)
        if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real) \
                or not np.isfinite(self.tol) or self.tol < 0:
            raise ValueError(f"tol must be a finite number >= 0, got {self.tol!r}")
        if not isinstance(self.verbose, (bool, np.bool_)):  # as KMeans: a bool or an int level >= 0
            check_int(self.verbose, "verbose", min_value=0)
        if isinstance(self.init, str):
            if self.init not in _INITS:
                raise ValueError(f"init must be one of {_INITS} or an array (n_clusters, n_features), "
                                 f"got {self.init!r}")
        elif not hasattr(self.init, "shape") and not isinstance(self.init, (list, tuple)):
            raise TypeError(f"init must be a string or an array, got {type(self.init).__name__}")
        if n_samples < K:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={K}")
        if self.structure == "splincol" and s > min(K, n_features):
            raise ValueError(f"sparsity={s} is larger than the factor dimension min(n_clusters, "
                             f"n_features) = {min(K, n_features)}: pass sparsity <= {min(K, n_features)} "
                             "(the default is 3)")
        return K, s, Q

    def _chunks(self, n, d, K, itemsize):
        if self.batch_size is not None:
            b = int(self.batch_size)
            return [(i, min(n, i + b)) for i in range(0, n, b)]
        return chunk_rows(n, (d + 2 * K) * itemsize, _CHUNK_BYTES)

    def _initial_centroids(self, X, K, be):
        xp = be.xp
        rs = random_state_of(self.random_state)
        if not isinstance(self.init, str):
            C = self.init
            if not hasattr(C, "ndim"):
                C = np.asarray(C)
            get_backend(X, C)
            if C.ndim != 2 or C.shape != (K, X.shape[1]):
                raise ValueError(f"init: expected an array of shape ({K}, {X.shape[1]}), got {tuple(C.shape)}")
            if not bool(xp.isfinite(C).all()):
                raise ValueError("init contains NaN or inf")
            return xp.asarray(C, dtype=X.dtype)
        if self.init == "random":
            idx = rs.choice(X.shape[0], K, replace=False)
            idx.sort()
            C = X[xp.asarray(idx)] if be.is_gpu else X[idx]
            return xp.asarray(C, dtype=X.dtype)
        if be.is_gpu:
            return _kmeans_plusplus_xp(X, K, rs, xp)
        from sklearn.cluster import kmeans_plusplus

        C, _ = kmeans_plusplus(X, K, random_state=rs)
        return np.asarray(C, dtype=X.dtype)

    def _make_centroids(self, C0, s, Q):
        _check_scale(C0)
        if self.structure == "butterfly":
            return ButterflyCentroids(C0)
        return SplincolCentroids(C0, s, Q, int(self.palm_max_iter))

    # --- fit --------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Cluster X (n_samples, n_features): NumPy, CuPy, ``numpy.memmap`` or a ``dask.array``
        (see :func:`gpufact.dask.fit`). ``y`` is ignored. Returns self."""
        if _is_dask(X):
            from ..dask import fit as dask_fit

            return dask_fit(self, X)
        X, be = self._check_fit_data(X)
        n, d = X.shape
        K, s, Q = self._check_params(n, d)
        xp = be.xp
        t0 = time.perf_counter()
        C0 = self._initial_centroids(X, K, be)
        _lloyd.release_chunk(X, 0, n)
        state = self._make_centroids(C0, s, Q)
        self._fit_timings = {"init": time.perf_counter() - t0}
        chunks = self._chunks(n, d, K, X.dtype.itemsize)

        def pass_fn(op, cnorm2):
            return _lloyd.lloyd_pass(X, op, cnorm2, chunks)

        def reseed(labels, dist2, sums, counts):
            return _lloyd.reseed_empty(X, labels, dist2, sums, counts)

        self._lloyd_loop(state, X.dtype, xp, pass_fn, reseed)
        return self

    def _check_fit_data(self, X):
        """check_samples; a float ``numpy.memmap`` is checked chunk by chunk instead (its pages
        dropped after each chunk), so that validation keeps the resident memory bounded too."""
        if isinstance(X, np.memmap) and X.ndim == 2 and X.dtype in (np.float32, np.float64) \
                and X.shape[0] > 0:
            check_samples(self, X[:1], reset=True)  # type, shape, dtype; sets n_features_in_
            n, d = X.shape
            for i, j in self._chunks(n, d, 1, X.dtype.itemsize):
                Xc = _lloyd.read_chunk(X, i, j)
                ok = bool(np.isfinite(Xc).all())
                if ok:
                    _check_overflow(Xc, n)
                _lloyd.release_chunk(X, i, j)
                if not ok:
                    raise ValueError("Input X contains NaN or infinity.")
            return X, get_backend(X)
        X, be = check_samples(self, X, reset=True)
        _check_overflow(X, X.shape[0])
        _lloyd.release_chunk(X, 0, X.shape[0])  # a view of a memmap read through by the checks
        return X, be

    def _lloyd_loop(self, state, dtype, xp, pass_fn, reseed, keep_labels=True):
        """Shared by the in-memory, batched and Dask fits: ``pass_fn(op, cnorm2)`` returns
        (labels, dist2, sums, counts, inertia); ``reseed`` fixes empty clusters in place."""
        K = state.V.shape[0]
        max_iter, tol = int(self.max_iter), float(self.tol)
        history, times = [], []
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=max_iter, desc="QuickMeans", leave=False)
        t0 = time.perf_counter()
        n_iter = 0
        try:
            while True:
                op = state.operator(dtype)
                V = op.toarray()
                cnorm2 = _lloyd.centroid_sqnorms(V, xp)
                labels, dist2, sums, counts, inertia = pass_fn(op, cnorm2)
                obj = float(inertia)
                if not np.isfinite(obj):
                    raise ValueError("X: the objective is not finite (NaN or inf in X, or squared distances that "
                                     "overflow its dtype: rescale X, e.g. X / abs(X).max())")
                history.append(obj)
                times.append(time.perf_counter() - t0)
                if bar is not None:
                    bar.set_postfix(objective=f"{obj:.6g}")
                prev = history[-2] if len(history) > 1 else None
                if n_iter >= max_iter or (prev is not None and abs(prev - obj) <= tol * abs(prev)):
                    break
                reseed(labels, dist2, sums, counts)
                U = sums / xp.maximum(counts, 1)[:, None]
                state.update(U, counts)
                n_iter += 1
                if bar is not None:
                    bar.update()
        finally:
            if bar is not None:
                bar.close()
        n_found = int((counts > 0).sum())
        if n_found < K:  # as KMeans: duplicate points, or centroids the factors cannot tell apart
            warnings.warn(f"Number of distinct clusters ({n_found}) found smaller than n_clusters ({K}): "
                          "the data may hold fewer distinct points, or the factorized centroids "
                          "coincide (larger sparsity)", ConvergenceWarning, stacklevel=3)
        self.centroid_operator_ = op
        self.cluster_centers_ = V
        self._cnorm2 = cnorm2
        self.labels_ = labels
        self.inertia_ = history[-1]
        self.n_iter_ = n_iter
        self.objective_history_ = history
        self._fit_timings = dict(getattr(self, "_fit_timings", {}), iterations=times)
        return self

    # --- predict / transform ----------------------------------------------------------
    def _small_batch(self, X) -> bool:
        """Whether X may skip scikit-learn's validation (the lean path of predict/transform):
        a fitted CPU estimator, X a C-contiguous NumPy (B, n_features_in_) of the centroids'
        dtype with 1 <= B <= ARGMIN_SMALL_ROWS, no feature names seen in fit. Finiteness is
        left to the caller (the fused kernel reports it for free). Anything else goes
        through :meth:`_test_data`, which raises the documented errors. Allocates nothing."""
        if type(X) is not np.ndarray or X.ndim != 2 or not 0 < X.shape[0] <= ARGMIN_SMALL_ROWS \
                or not X.flags.c_contiguous:
            return False
        d = self.__dict__
        c2 = d.get("_cnorm2")
        return (type(c2) is np.ndarray and X.dtype == c2.dtype and X.shape[1] == d.get("n_features_in_")
                and "feature_names_in_" not in d)

    def _test_data(self, X, finite=True):
        check_is_fitted(self)
        X, be = check_samples(self, X, reset=False, finite=finite)
        get_backend(X, self.cluster_centers_)
        return X, be

    def _predict_chunks(self, X):
        return self._chunks(X.shape[0], X.shape[1], self.centroid_operator_.shape[0], X.dtype.itemsize)

    def _labels_dist2(self, X):
        return _lloyd.assign_chunks(X, self.centroid_operator_, self._cnorm2, self._predict_chunks(X))

    def predict(self, X):
        """Index of the closest centroid for each row of X: int32 (n_samples,), X's namespace.
        O(nnz(V)) per sample, in chunks; a ``dask.array`` gives a lazy dask array. One to
        eight C-contiguous NumPy rows of the centroids' dtype skip scikit-learn's validation
        (a few attribute checks; NaN/inf found by the fused kernel's load send X to the full
        checks, which raise): about 50 us for one vector at K = 512, D = 2000. Larger NumPy
        batches are checked by scikit-learn except for NaN/inf, which the fused CSR-chain
        kernel finds while loading its tiles (no separate pass over X; other structures get
        the full check). ValueError naming X when finite X's scores ‖v_k‖² − 2⟨v_k, x⟩
        overflow the dtype (the labels would not be trusted): rescale X."""
        if _is_dask(X):
            from ..dask import predict as dask_predict

            return dask_predict(self, X)
        if self._small_batch(X):  # one or a few vectors: the fused kernel's B = 1 loop, no copies
            op = self.centroid_operator_
            got = op._argmin_small(X, self._cnorm2, -2.0)
            if got is None and bool(np.isfinite(X).all()):  # an operator without the fused kernel
                got = op.argmin_affine(X, self._cnorm2, -2.0) + (True,)
            if got is not None and got[2]:
                if not bool(np.isfinite(got[1]).all()):
                    raise _out_of_range(X.dtype)
                return got[0]
            # NaN or inf: the general path raises scikit-learn's error
        Xv, be = self._test_data(X, finite=False)  # NumPy: NaN/inf are found by the kernel's load
        labels, finite, in_range = _lloyd.labels_chunks(Xv, self.centroid_operator_, self._cnorm2,
                                                        self._predict_chunks(Xv))
        if not finite and not (finite is None and be.is_gpu):  # not known or not finite: the full check
            self._test_data(X)  # raises scikit-learn's error on NaN/inf
        if not in_range:  # finite X, but ‖v_k‖² − 2⟨v_k, x⟩ overflowed: the labels are not to be trusted
            raise _out_of_range(Xv.dtype)
        return labels

    def fit_predict(self, X, y=None):
        """``fit(X).labels_``."""
        return self.fit(X).labels_

    def transform(self, X):
        """Euclidean distances (n_samples, n_clusters) to the centroids (X V^T through the
        factors, in chunks); a ``dask.array`` gives a lazy dask array. Small batches skip
        scikit-learn's validation as in :meth:`predict`. ValueError naming X when the squared
        distances overflow the dtype (never inf or NaN for finite X)."""
        if _is_dask(X):
            from ..dask import transform as dask_transform

            return dask_transform(self, X)
        if not (self._small_batch(X) and bool(np.isfinite(X).all())):
            X, _ = self._test_data(X)
        D = _lloyd.distances(X, self.centroid_operator_, self._cnorm2, self._predict_chunks(X))
        if not bool(get_backend(D).xp.isfinite(D).all()):  # finite X: squared distances overflowed
            raise _out_of_range(X.dtype)
        return D

    def fit_transform(self, X, y=None):
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)

    def score(self, X, y=None):
        """Opposite of the objective on X: −Σ ‖x − v_{predict(x)}‖² (a float); ValueError
        naming X when the squared distances overflow X's dtype."""
        X, _ = self._test_data(X)
        xp = get_backend(X).xp
        d2 = self._labels_dist2(X)[1]
        if not bool(xp.isfinite(d2).all()):  # finite X: squared distances overflowed
            raise _out_of_range(X.dtype)
        return -float(xp.sum(d2, dtype=xp.float64))
