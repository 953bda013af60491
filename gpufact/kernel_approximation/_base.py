"""The shared fit/transform of the structured random-feature estimators (Fastfood, SORF)."""
from __future__ import annotations

import math

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._validation import check_int, check_memory, check_samples, check_seed, max_abs
from ..product import FactorProduct
from ._structured import block_norm_bounds, block_program, check_features, check_gamma, padded_size, tile_samples


def check_projection_range(X, norm_bound):
    """ValueError naming X when W x may overflow X's dtype for an operator W of spectral norm
    at most ``norm_bound``: |(W x)_i| <= norm_bound · sqrt(D) · max |x| (cos(inf) would make
    the features NaN). O(n D), no temporary."""
    big = max_abs(X)
    if big * math.sqrt(X.shape[1]) * norm_bound > float(np.finfo(X.dtype).max) / 16:
        raise ValueError(f"X: entries up to {big:.3g} put its random projections beyond "
                         f"{np.dtype(X.dtype).name}'s range (the features would be NaN); rescale X"
                         + (" or pass float64 data" if X.dtype != np.float64 else ""))


class StructuredFeaturesBase(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Random Fourier features of the RBF kernel ``k(x, y) = exp(-gamma ‖x − y‖²)`` through k
    structured N x N blocks (inputs zero-padded to N = 2^L ≥ n_features).

    Subclasses define ``_draw(rng, N, k, sigma, X)`` returning ``(runs1, perm, runs2, factors)``:
    host float64 runs (application order) of the fused kernel, the per-block permutations
    ((k, N) int64, or None) and a function ``dtype, xp -> list of factors`` (product order,
    without the padding) of the same operator.
    """

    def __init__(self, gamma=1.0, n_components=100, *, features="cos", random_state=None):
        self.gamma = gamma
        self.n_components = n_components
        self.features = features
        self.random_state = random_state

    # --- fit ---------------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Draw the structured operator for X's number of features.

        X : (n_samples, n_features) NumPy or CuPy array (float32 stays float32; ints become
        float64). Only ``X.shape[1]`` is used. ``n_blocks_ = ceil(m / N)`` blocks of N =
        ``padded_features_`` rows are drawn for the m = n_components ("cos") or
        ceil(n_components / 2) ("sincos") frequencies, the last one cut to the rows kept:
        ``n_components_`` = n_components ("cos"), 2·ceil(n_components / 2) ("sincos": an odd
        count is rounded up by one).
        Raises ValueError (gamma ≤ 0, n_components ≤ 0, bad ``features``, NaN/inf in X) and
        TypeError (non-numeric arguments).
        """
        gamma = check_gamma(self.gamma)
        n = check_int(self.n_components, "n_components", min_value=1)
        features = check_features(self.features)
        rng = check_seed(self.random_state, "random_state")
        X, be = check_samples(self, X, reset=True)
        xp = be.xp
        dt = np.dtype(X.dtype)
        d = X.shape[1]
        N = padded_size(d)
        m = n if features == "cos" else -(-n // 2)
        k = -(-m // N)
        # the drawn runs, their factors and the KS chain: ~2 log2(N) + 8 numbers per row (k N rows)
        check_memory(float(k) * N * (2 * math.log2(N) + 8) * 8, f"n_components={n}")
        sigma = 1.0 / math.sqrt(2.0 * gamma)
        runs1, perm, runs2, make_factors = self._draw(rng, N, k, sigma, X)
        self.padded_features_ = N
        self.n_blocks_ = k
        self.n_components_ = m * (1 if features == "cos" else 2)
        self._n_features_out = self.n_components_
        offset = self.__dict__.pop("_learned_offset", None)  # offsets a subclass trained with
        if offset is None and features == "cos":
            offset = rng.uniform(0.0, 2.0 * np.pi, size=k * N)
        if offset is not None:
            offset = offset[:m]
        self.random_offset_ = None if offset is None else xp.asarray(offset.astype(dt))
        factors = make_factors(dt, xp)
        from ._structured import pad_factor, row_selection

        pad = pad_factor(d, N, dt, xp)
        sel = row_selection(m, k * N, dt, xp)
        self.operator_ = FactorProduct(([sel] if sel is not None else []) + factors
                                       + ([pad] if pad is not None else []))
        self._host = (runs1, perm, runs2, offset)
        self._programs = {}
        self._operators = {dt: self.operator_}
        return self

    # --- transform ---------------------------------------------------------------------------
    def _scale(self):
        return math.sqrt(2.0 / self.n_components_)  # sincos: D/2 frequencies, 1/√(D/2) each

    def _program(self, dt):
        prog = self._programs.get(dt)
        if prog is None:
            runs1, perm, runs2, offset = self._host
            W1, plan1, W2, plan2 = block_program(runs1, True, self.n_blocks_, dt, runs2)
            perm_arr = np.zeros((self.n_blocks_, 0), dtype=np.int64) if perm is None else perm
            off = np.zeros(0, dtype=dt) if offset is None else offset.astype(dt)
            prog = self._programs[dt] = (W1, plan1, perm_arr, W2, plan2, off,
                                         block_norm_bounds(W1, plan1, W2, plan2))
        return prog

    def transform(self, X):
        """Features (n_samples, n_components_) in X's namespace and dtype.

        ``"cos"``: √(2/D) cos(X Wᵀ + b); ``"sincos"``: √(2/D) [cos X Wᵀ, sin X Wᵀ] (D =
        n_components_, W the structured operator ``operator_``, b ``random_offset_``), so
        that φ(x)ᵀφ(y) estimates exp(-gamma ‖x − y‖²). CPU: one fused Numba pass per tile of
        samples (padding, every block's structured product, cosine, store); GPU: ``X @ F.T``
        through the CUDA chain kernels, then the cosine in place. Time O(n_samples ·
        n_components_ · log N), extra memory O(threads · N · 64) on the CPU. Raises
        NotFittedError before fit, ValueError on a feature-count mismatch or NaN/inf,
        TypeError on NumPy/CuPy mixes with the fitted operator.
        """
        check_is_fitted(self, "operator_")
        X, be = check_samples(self, X, reset=False)
        if be is not self.operator_.backend and be.name != self.operator_.backend.name:
            raise TypeError(f"X: a {be.name} array, but the estimator was fitted on "
                            f"{self.operator_.backend.name} data (move one with gpufact.to_device)")
        xp = be.xp
        dt = np.dtype(X.dtype)
        scale = dt.type(self._scale())
        B = X.shape[0]
        check_projection_range(X, float(np.max(self._program(dt)[-1])))
        if not be.is_gpu:
            import numba

            from .._kernels import cpu_features

            W1, plan1, perm, W2, plan2, off, bound = self._program(dt)
            Y = np.empty((B, self.n_components_), dtype=dt)
            if B == 0:
                return Y
            Xc = np.ascontiguousarray(X)
            threads = numba.get_num_threads()
            bt = tile_samples(self.padded_features_, dt.itemsize, B, threads)
            cpu_features.structured_features(W1, plan1, perm, W2, plan2, self.padded_features_, Xc, Y,
                                             off, scale, self.features == "sincos", bt, threads, True, bound)
            return Y
        op = self._operators.get(dt)
        if op is None:
            op = self._operators[dt] = self.operator_.astype(dt)
        from ._features import cos_features

        P = X @ op.T
        off = None if self.random_offset_ is None else self.random_offset_.astype(dt, copy=False)
        return cos_features(P, off, float(scale), be)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
