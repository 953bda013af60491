"""Structured orthogonal random features (SORF) and their dense reference (ORF).

Yu, Suresh, Choromanski, Holtmann-Rice & Kumar, "Orthogonal Random Features", NeurIPS 2016.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._validation import check_int, check_memory, check_samples, check_seed
from ._base import StructuredFeaturesBase
from ._structured import check_features, check_gamma, hadamard_run, ks_factors


def sorf_runs(N: int, k: int, sigma: float, rng):
    """Host runs (application order) of k SORF blocks ``(1/(σN)) H D1 H D2 H D3`` (H: ±1
    Sylvester–Hadamard, D_i random ±1 diagonals), the first run replicated over the blocks."""
    D3, D2, D1 = (rng.choice(np.array([-1.0, 1.0]), size=(k, N)) for _ in range(3))
    return (hadamard_run(N, k, D3, replicate=True) + hadamard_run(N, k, D2, replicate=False)
            + hadamard_run(N, k, D1, np.full(k * N, 1.0 / (sigma * N)), replicate=False))


class StructuredOrthogonalFeatures(StructuredFeaturesBase):
    """Structured orthogonal random features (SORF) for the RBF kernel exp(-gamma ‖x − y‖²).

    Yu et al., "Orthogonal Random Features", NeurIPS 2016: each block of N = 2^L rows is
    ``W_j = (√N/σ) H D1 H D2 H D3`` with H the normalised Walsh–Hadamard matrix, D_i i.i.d.
    Rademacher diagonals and σ = 1/√(2 gamma); inputs are zero-padded to N and
    ``ceil(n_components / N)`` independent blocks are stacked (the last one cut to the rows
    kept). The diagonals are folded into the butterfly factors: the operator is one fused
    chain of 3 log2 N KS factors (``operator_``, a :class:`~gpufact.FactorProduct` with the
    padding and the cut as CSR factors where needed).

    Parameters
    ----------
    gamma : float > 0, default 1.0.
    n_components : int ≥ 1, default 100: the output width ("sincos": an odd value is
        rounded up by one, ``n_components_``); the last block of N rows is cut to fit.
    features : "cos" (default; √(2/D) cos(Wx + b), b ~ U[0, 2π), as scikit-learn's
        ``RBFSampler``) or "sincos" (√(2/D) [cos Wx, sin Wx] with D/2 rows of W: lower
        variance).
    random_state : None, int ≥ 0, RandomState, SeedSequence or numpy Generator (drawn on the host).

    Attributes
    ----------
    operator_ : FactorProduct (n_components_ or n_components_/2, n_features), X's namespace
        and dtype (zero-padding included as a CSR factor when n_features < N).
    random_offset_ : (n_components_,) offsets b ("cos"), None for "sincos".
    n_components_, n_blocks_, padded_features_ (N), n_features_in_.

    Cost: transform O(n_samples · D · log N) time (3 Hadamard runs per block) instead of
    O(n_samples · D · n_features) for ``RBFSampler``; O(D) stored numbers.
    """

    def _draw(self, rng, N, k, sigma, X):
        runs = sorf_runs(N, k, sigma, rng)
        return runs, None, [], lambda dt, xp: ks_factors(runs, dt, xp)


def _orthogonal_gaussian(d: int, n_rows: int, sigma: float, rng):
    """(n_rows, d) stacked blocks S Q / σ: Q Haar-orthogonal (QR of a Gaussian matrix with
    the sign fix), S rows' norms drawn from the chi distribution with d degrees of freedom."""
    blocks = []
    for _ in range(-(-n_rows // d)):
        G = rng.standard_normal((d, d))
        Q, R = np.linalg.qr(G)
        Q = Q * np.sign(np.diag(R))[None, :]
        S = np.sqrt(rng.chisquare(d, size=d))
        blocks.append(S[:, None] * Q.T)
    return np.vstack(blocks)[:n_rows] / sigma


class OrthogonalRandomFeatures(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Orthogonal random features (ORF, Yu et al. NeurIPS 2016) for exp(-gamma ‖x − y‖²): the
    dense reference that SORF approximates.

    W stacks ``ceil(n_components / n_features)`` blocks ``(1/σ) S Q`` (Q uniformly random
    orthogonal, S chi-distributed row norms, σ = 1/√(2 gamma)), cut to ``n_components`` rows;
    features as :class:`StructuredOrthogonalFeatures` ("cos" or "sincos"). Dense: fit
    O(n_components · n_features²) time (QR per block), transform O(n_samples · n_components
    · n_features) (one GEMM) and the cosine in one fused pass.

    Attributes: ``random_weights_`` (n_features, n_rows) (n_rows = n_components, or
    ceil(n_components/2) for "sincos"), ``random_offset_`` ("cos"), ``n_components_``.
    """

    def __init__(self, gamma=1.0, n_components=100, *, features="cos", random_state=None):
        self.gamma = gamma
        self.n_components = n_components
        self.features = features
        self.random_state = random_state

    def fit(self, X, y=None):
        gamma = check_gamma(self.gamma)
        n = check_int(self.n_components, "n_components", min_value=1)
        features = check_features(self.features)
        rng = check_seed(self.random_state, "random_state")
        X, be = check_samples(self, X, reset=True)
        dt = np.dtype(X.dtype)
        d = X.shape[1]
        m = n if features == "cos" else -(-n // 2)
        check_memory(3.0 * (-(-m // d)) * d * d * 8, f"n_components={n}")  # the blocks, stacked, transposed
        W = _orthogonal_gaussian(d, m, 1.0 / math.sqrt(2.0 * gamma), rng)
        self.random_weights_ = be.xp.asarray(np.ascontiguousarray(W.T).astype(dt))
        self._norm_bound = float(np.sqrt((W ** 2).sum(axis=1).max()))  # max row norm of W (host float64)
        self.random_offset_ = (be.xp.asarray(rng.uniform(0, 2 * np.pi, m).astype(dt))
                               if features == "cos" else None)
        self.n_components_ = m if features == "cos" else 2 * m
        self._n_features_out = self.n_components_
        return self

    def transform(self, X):
        check_is_fitted(self, "random_weights_")
        X, be = check_samples(self, X, reset=False)
        from ._features import cos_features

        W = self.random_weights_
        if be.name != ("cupy" if type(W).__module__.startswith("cupy") else "numpy"):
            raise TypeError("X: NumPy/CuPy mismatch with the fitted weights (use gpufact.to_device)")
        from ._base import check_projection_range

        check_projection_range(X, self._norm_bound)
        P = X @ W.astype(X.dtype, copy=False)
        off = None if self.random_offset_ is None else self.random_offset_.astype(X.dtype, copy=False)
        return cos_features(P, off, math.sqrt(2.0 / self.n_components_), be)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
