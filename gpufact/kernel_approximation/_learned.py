"""Structured random features whose diagonals are learned from the data (beyond the papers)."""
from __future__ import annotations

import math

import numpy as np

from .._backend import get_backend, to_numpy
from .._validation import check_int, max_abs
from ..product import FactorProduct
from ._base import StructuredFeaturesBase
from ._structured import hadamard_run, ks_factors


def block_hadamard(N: int, k: int, dtype, xp) -> FactorProduct:
    """``I_k ⊗ H_N`` (±1 entries, symmetric) as one fused chain of log2 N butterfly factors."""
    return FactorProduct(ks_factors(hadamard_run(N, k, np.ones((k, N)), replicate=False), dtype, xp))


def sorf_loss_grad(Xs, K, diags, c: float, H: FactorProduct, features: str = "sincos", offset=None,
                   n_rows=None):
    """Kernel-approximation loss of SORF blocks with free diagonals, and its gradient.

    Features of the m samples ``Xs`` (m, d), d ≤ N: P = c · [H D1 H D2 H D3 x̃]_j over the k
    blocks (x̃: x zero-padded to N, replicated over the blocks), Z = √(1/(kN)) [cos P, sin P]
    ("sincos") or √(2/(kN)) cos(P + offset) ("cos"). Loss ``‖Z Zᵀ − K‖²_F / ‖K‖²_F``.

    diags : (3, k·N) array [D1, D2, D3] of Xs's namespace. H : :func:`block_hadamard` (k·N).
    n_rows : the first n_rows ≤ k·N frequencies are used (default all), as in a cut last block.
    Returns ``(loss (float), grad (3, k·N))``. The backward pass runs the transposed chain
    (``G @ H``, row-major) for the input side and elementwise products for the diagonals:
    O(m · kN log N + m² · kN) time.
    """
    xp = get_backend(Xs, diags).xp
    m, d = Xs.shape
    kN = H.shape[0]
    N = _block(H)
    k = kN // N
    D1, D2, D3 = diags[0], diags[1], diags[2]
    a0 = xp.zeros((m, k, N), dtype=Xs.dtype)
    a0[:, :, :d] = Xs[:, None, :]
    a0 = a0.reshape(m, kN)
    b1 = (a0 * D3) @ H.T
    b2 = (b1 * D2) @ H.T
    P = c * ((b2 * D1) @ H.T)
    full = P
    r = kN if n_rows is None else int(n_rows)
    P = P[:, :r]
    if features == "sincos":
        s = math.sqrt(1.0 / r)
        C, S = xp.cos(P), xp.sin(P)
        Z = s * xp.concatenate([C, S], axis=1)
    else:
        s = math.sqrt(2.0 / r)
        Q = P + offset[:r]
        C, S = xp.cos(Q), xp.sin(Q)
        Z = s * C
    nK = float((K * K).sum())
    E = Z @ Z.T - K
    loss = float((E * E).sum()) / nK
    GZ = (4.0 / nK) * (E @ Z)
    GP = xp.zeros_like(full)
    if features == "sincos":
        GP[:, :r] = s * (GZ[:, r:] * C - GZ[:, :r] * S)
    else:
        GP[:, :r] = -s * GZ * S
    g3 = c * (GP @ H)
    gD1 = (g3 * b2).sum(axis=0)
    g2 = (g3 * D1) @ H
    gD2 = (g2 * b1).sum(axis=0)
    g1 = (g2 * D2) @ H
    gD3 = (g1 * a0).sum(axis=0)
    return loss, xp.stack([gD1, gD2, gD3])


def _block(H):
    """N of a block Hadamard chain: the size of one block (first factor's pattern)."""
    a, b, c, d = H.factors[-1].pattern  # first applied: (k, 2, 2, N/2)
    return 2 * d


class LearnedStructuredFeatures(StructuredFeaturesBase):
    """SORF random features for exp(-gamma ‖x − y‖²) whose three diagonals per block are tuned
    on the data to minimise the kernel-approximation error (an extension of Yu et al. 2016).

    Starts from SORF (Rademacher D1, D2, D3) and runs ``n_iter`` Adam steps on
    ``‖Z Zᵀ − K‖²_F / ‖K‖²_F`` over fresh batches of ``batch_size`` samples of X, with the
    gradient of :func:`sorf_loss_grad` (transposed butterfly chain for the input side,
    elementwise products for the diagonals). The learned operator is applied like SORF: one
    fused pass per tile, diagonals folded into the butterflies.

    Parameters: gamma, n_components, features ("sincos" default, or "cos" with fixed random
    offsets), n_iter (int ≥ 0, default 100), learning_rate (float > 0, default 0.01),
    batch_size (int ≥ 2, default 256), random_state.

    Attributes: those of :class:`StructuredOrthogonalFeatures`, plus ``diagonals_`` (3,
    n_blocks_, N) host float64 and ``loss_curve_`` (list of floats, one per step).
    Cost: fit O(n_iter · (B · D log N + B² · D)) with B = batch_size.
    """

    def __init__(self, gamma=1.0, n_components=100, *, features="sincos", n_iter=100, learning_rate=0.01,
                 batch_size=256, random_state=None):
        super().__init__(gamma=gamma, n_components=n_components, features=features, random_state=random_state)
        self.n_iter = n_iter
        self.learning_rate = learning_rate
        self.batch_size = batch_size

    def _draw(self, rng, N, k, sigma, X):
        from ._structured import check_gamma

        n_iter = check_int(self.n_iter, "n_iter", min_value=0)
        bs = check_int(self.batch_size, "batch_size", min_value=2)
        lr = check_gamma(self.learning_rate, "learning_rate")
        be = get_backend(X)
        xp = be.xp
        dt = X.dtype
        c = 1.0 / (sigma * N)
        m = check_int(self.n_components, "n_components", min_value=1)
        m = m if self.features == "cos" else -(-m // 2)
        gamma = 0.5 / sigma ** 2
        big = max_abs(X)  # the batches' squared distances |x|² − 2⟨x, y⟩ + |y|² in X's dtype
        if 4.0 * X.shape[1] * big * big > float(np.finfo(dt).max):  # float64: no overflow here
            raise ValueError(f"X: entries up to {big:.3g} put squared distances beyond {np.dtype(dt).name}'s "
                             "range (the exact kernel the diagonals are fitted to would be NaN); rescale X"
                             + (" or pass float64 data" if dt != np.float64 else ""))
        init = rng.choice(np.array([-1.0, 1.0]), size=(3, k * N))  # D1, D2, D3
        offset = rng.uniform(0, 2 * np.pi, k * N) if self.features == "cos" else None
        H = block_hadamard(N, k, dt, xp)
        theta = xp.asarray(init.astype(dt))
        off = None if offset is None else xp.asarray(offset.astype(dt))
        mom, vel = xp.zeros_like(theta), xp.zeros_like(theta)
        b1, b2, eps = 0.9, 0.999, 1e-8
        self.loss_curve_ = []
        n = X.shape[0]
        for t in range(1, n_iter + 1):
            idx = xp.asarray(np.sort(rng.choice(n, min(bs, n), replace=False)))
            Xs = X[idx]
            sq = (Xs * Xs).sum(axis=1)
            K = xp.exp(-gamma * xp.maximum(sq[:, None] - 2 * Xs @ Xs.T + sq[None, :], 0))
            loss, g = sorf_loss_grad(Xs, K, theta, c, H, self.features, off, n_rows=m)
            self.loss_curve_.append(loss)
            mom = b1 * mom + (1 - b1) * g
            vel = b2 * vel + (1 - b2) * g * g
            step = lr * (mom / (1 - b1 ** t)) / (xp.sqrt(vel / (1 - b2 ** t)) + eps)
            theta = theta - step.astype(dt)
        D = to_numpy(theta).astype(np.float64)
        self.diagonals_ = D.reshape(3, k, N)
        D1, D2, D3 = (D[i].reshape(k, N) for i in range(3))
        runs = (hadamard_run(N, k, D3, replicate=True) + hadamard_run(N, k, D2, replicate=False)
                + hadamard_run(N, k, D1, np.full(k * N, c), replicate=False))
        self._learned_offset = offset
        return runs, None, [], lambda dt, xp: ks_factors(runs, dt, xp)
