"""Nyström features with fast landmarks (K-means, QuickMeans, uniform, structured)."""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._validation import check_int, check_samples, check_seed, max_abs
from . import _landmarks
from ._structured import check_gamma

_KERNELS = ("rbf", "linear", "poly", "polynomial", "sigmoid")


class FastNystroem(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Nyström approximation of a kernel map, with landmarks that make ``k(x, C)`` cheap.

    Same API and output as scikit-learn's ``Nystroem``: ``transform(X) = k(X, C) W^{-1/2}``
    with C the K landmarks and ``W = k(C, C)``, so that ``φ(x)ᵀφ(y) ≈ k(x, y)``. The inverse
    square root comes from an eigendecomposition of W with eigenvalues below
    ``λ_max · K · eps(dtype)`` clamped to that floor (rank-deficient W stay finite).

    The kernel values need only the inner products ``X Cᵀ`` (RBF: ‖x‖² − 2 x·c + ‖c‖²):

    - ``landmarks="quickmeans"``: centroids of ``gpufact.cluster.QuickMeans``; ``X Cᵀ``
      through its factorized centroid operator V, O(nnz(V)) per sample instead of O(K d).
      QuickMeans runs with 2 factors (K x A with 3 nonzeros per row and column, then A x d
      with A/2 per column, A = min(K, d): nnz(V) ≈ A·d/2, half the dense product's flops;
      for K > d the K x d factor keeps ⌈d/2⌉ per row instead of 3),
      5 Lloyd iterations of 20 PALM sweeps: the landmarks are V's rows, and fewer or sparser
      factors moved them too far from the cluster means (kernel error on Fashion-MNIST 16 %
      above K-means landmarks with 3 factors, twice with QuickMeans' default ⌊log2 d⌋; with
      2 factors within 7 %, see :func:`gpufact.kernel_approximation._landmarks.quickmeans`);
    - ``"kmeans"``: scikit-learn ``KMeans`` centroids (fitted on the host);
    - ``"uniform"``: K samples drawn without replacement (scikit-learn's choice);
    - ``"fast-nys"``: structured landmarks (Si, Hsieh & Dhillon, "Computationally Efficient
      Nyström Approximation using Fast Transforms", ICML 2016): ``μ + h_i ∘ v_t`` with
      Hadamard rows h_i, fitted to K-means centres; ``X Cᵀ`` costs O(N log N) per block of
      N = 2^⌈log2 d⌉ landmarks (see :func:`gpufact.kernel_approximation._landmarks.fast_nys`).

    Parameters
    ----------
    kernel : "rbf" (default), "linear", "poly"/"polynomial" or "sigmoid".
    gamma : float > 0 or None (1 / n_features, as scikit-learn).
    n_components : int ≥ 1, the number K of landmarks (at most n_samples: larger values
        warn and use n_samples, as scikit-learn).
    landmarks : "quickmeans" (default), "kmeans", "uniform" or "fast-nys".
    coef0, degree : of the polynomial/sigmoid kernels (None: 1 and 3).
    random_state : None, int ≥ 0, RandomState, SeedSequence or numpy Generator.

    Attributes
    ----------
    components_ : (K, n_features) landmarks, X's namespace and dtype.
    component_indices_ : (K,) sample indices ("uniform"), else None.
    normalization_ : (K, K) W^{-1/2}.
    landmark_operator_ : FactorProduct with ``X @ op.T == X @ C.T`` (minus ``landmark_mean_``
        for "fast-nys"), or None (dense landmarks).
    landmark_mean_ : (n_features,) μ of "fast-nys" landmarks, else None.
    n_components_ : K.

    Cost: fit = landmark method + O(K² d + K³); transform O(n_samples · (cost of X Cᵀ + K²)).
    Raises ValueError/TypeError on bad parameters or data, NotFittedError before fit.
    """

    def __init__(self, kernel="rbf", gamma=None, n_components=100, *, landmarks="quickmeans",
                 coef0=None, degree=None, random_state=None):
        self.kernel = kernel
        self.gamma = gamma
        self.n_components = n_components
        self.landmarks = landmarks
        self.coef0 = coef0
        self.degree = degree
        self.random_state = random_state

    def _params(self, d):
        if self.kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}, got {self.kernel!r}")
        gamma = check_gamma(self.gamma, allow_none=True)
        gamma = 1.0 / d if gamma is None else gamma
        coef0 = 1.0 if self.coef0 is None else self.coef0
        if isinstance(coef0, bool) or not isinstance(coef0, numbers.Real) or not np.isfinite(coef0):
            raise ValueError(f"coef0 must be a finite real number, got {self.coef0!r}")
        degree = 3 if self.degree is None else check_int(self.degree, "degree", min_value=1)
        return gamma, float(coef0), degree

    def fit(self, X, y=None):
        """Choose the landmarks and compute W^{-1/2}. X: (n_samples, n_features) NumPy or CuPy."""
        n = check_int(self.n_components, "n_components", min_value=1)
        if self.landmarks not in _landmarks.METHODS:
            raise ValueError(f"landmarks must be one of {tuple(_landmarks.METHODS)}, got {self.landmarks!r}")
        rng = check_seed(self.random_state, "random_state")
        X, be = check_samples(self, X, reset=True)
        gamma, coef0, degree = self._params(X.shape[1])
        with np.errstate(over="ignore"):
            g = np.asarray(gamma, dtype=X.dtype)
        if not np.isfinite(g):  # the kernel would be computed with an infinite gamma: NaN features
            raise ValueError(f"gamma={gamma!r} does not fit in {X.dtype} (the data's dtype); "
                             "pass float64 data or rescale X")
        self._check_range(X, gamma, coef0, degree)
        xp = be.xp
        K = n
        if n > X.shape[0]:
            warnings.warn("n_components > n_samples. This is not possible.\nn_components was set to n_samples, "
                          "which results in inefficient evaluation of the full kernel.")
            K = X.shape[0]
        C, op, mu, idx = _landmarks.METHODS[self.landmarks](X, K, rng, be)
        self.components_ = C
        self.component_indices_ = idx
        self.landmark_operator_ = op
        self.landmark_mean_ = mu
        self._kparams = (gamma, coef0, degree)
        W = self._kernel(C @ C.T, (C * C).sum(axis=1), (C * C).sum(axis=1)).astype(np.float64)
        W = (W + W.T) / 2
        lam, U = xp.linalg.eigh(W)
        # the floor also keeps 1 / sqrt(λ) within X's dtype (an all-zero W, e.g. a float32 linear
        # kernel whose products underflow, gave inf there and NaN features; now zero features)
        floor = max(float(lam[-1]) * K * float(np.finfo(X.dtype).eps), float(np.finfo(np.float64).tiny),
                    (1e3 / float(np.finfo(X.dtype).max)) ** 2)
        lam = xp.maximum(lam, floor)
        self.normalization_ = ((U / xp.sqrt(lam)) @ U.T).astype(X.dtype)
        self.n_components_ = K
        self._n_features_out = K
        return self

    def _check_range(self, X, gamma, coef0, degree):
        """ValueError naming X when its entries put the kernel's inputs (inner products and
        squared distances, at most 4 D s² for s = max |x|) or, for the polynomial kernel,
        (gamma ⟨x, y⟩ + coef0)^degree beyond X's dtype: the kernel matrix would hold inf and
        the features NaN. In float64 logarithms (no overflow here). O(n D), no temporary."""
        big = max_abs(X)
        if big == 0:  # (empty X included)
            return
        log_max = math.log(float(np.finfo(X.dtype).max))
        log_base = math.log(4.0 * X.shape[1]) + 2 * math.log(big)
        log_val = log_base
        if self.kernel in ("poly", "polynomial"):  # log (gamma e^base + |coef0|)^degree, no exp overflow
            a = math.log(gamma) + log_base
            b = math.log(abs(coef0)) if coef0 else -math.inf
            hi_, lo_ = max(a, b), min(a, b)
            log_val = max(log_base, degree * (hi_ + math.log1p(math.exp(lo_ - hi_))))
        if log_val > log_max - math.log(1e3):  # a margin for the sums of the products
            poly = self.kernel in ("poly", "polynomial")
            raise ValueError(f"X: entries up to {big:.3g} put the {self.kernel} kernel's values"
                             + (f" (gamma <x, y> + coef0)^degree, coef0={coef0:g}, degree={degree}," if poly else "")
                             + f" beyond {np.dtype(X.dtype).name}'s range (the features would be NaN); rescale X"
                             + (" or pass float64 data" if X.dtype != np.float64 else "")
                             + (" (or lower coef0 / degree)" if poly else ""))

    def _kernel(self, G, xx, cc):
        gamma, coef0, degree = self._kparams
        if self.kernel == "rbf":
            D = xx[:, None] - 2 * G + cc[None, :]
            D = D.clip(0, None) if hasattr(D, "clip") else D
            D *= -gamma
            return self._xp(D).exp(D)
        if self.kernel == "linear":
            return G
        if self.kernel in ("poly", "polynomial"):
            return (gamma * G + coef0) ** degree
        return self._xp(G).tanh(gamma * G + coef0)

    @staticmethod
    def _xp(a):
        from .._backend import get_backend

        return get_backend(a).xp

    def _inner(self, X):
        """X Cᵀ: through the landmark operator where there is one."""
        op = self.landmark_operator_
        if op is None:
            return X @ self.components_.T.astype(X.dtype, copy=False)
        G = X @ (op if op.dtype == X.dtype else op.astype(X.dtype)).T
        if self.landmark_mean_ is not None:
            G += (X @ self.landmark_mean_.astype(X.dtype, copy=False))[:, None]
        return G

    def transform(self, X):
        """Features (n_samples, n_components_) in X's namespace and dtype: k(X, C) W^{-1/2}.
        Raises NotFittedError before fit, ValueError on a feature mismatch or NaN/inf,
        TypeError on NumPy/CuPy mixes."""
        check_is_fitted(self, "normalization_")
        X, be = check_samples(self, X, reset=False)
        from .._backend import get_backend

        get_backend(X, self.components_)  # TypeError on NumPy/CuPy mixes
        self._check_range(X, *self._kparams)
        dt = X.dtype
        C = self.components_.astype(dt, copy=False)
        Kx = self._kernel(self._inner(X), (X * X).sum(axis=1), (C * C).sum(axis=1)).astype(dt, copy=False)
        return Kx @ self.normalization_.astype(dt, copy=False).T

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
