"""Landmark selection for :class:`FastNystroem`: each method returns the landmarks C (K, d)
and, where C has fast structure, an operator V with ``X @ V.T == X @ C.T`` (plus a rank-one
part for the structured landmarks of Si, Hsieh & Dhillon)."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .._backend import to_numpy
from ..product import FactorProduct
from ._structured import hadamard_run, ks_factors, pad_factor, padded_size


def uniform(X, K, rng, be):
    """K distinct samples, indices drawn on the host; returns (C, None, None, indices)."""
    idx = np.sort(rng.permutation(X.shape[0])[:K])
    C = X[be.xp.asarray(idx)]
    return C, None, None, idx


def kmeans(X, K, rng, be):
    """scikit-learn KMeans centroids (one k-means++ start; on the host: CuPy data are copied
    there for the fit, the centroids moved back)."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=K, n_init=1, random_state=int(rng.integers(2 ** 31 - 1))).fit(to_numpy(X))
    return be.xp.asarray(km.cluster_centers_.astype(X.dtype)), None, None, None


#: how FastNystroem runs QuickMeans for its landmarks (see :func:`quickmeans`)
QM_N_FACTORS, QM_SPARSITY, QM_MAX_ITER, QM_PALM_MAX_ITER = 2, 3, 5, 20


def quickmeans(X, K, rng, be):
    """QuickMeans centroids: the factorized centroid operator V (K x d) computes X Vᵀ at
    fast-transform cost (``gpufact.cluster.QuickMeans``, imported when used).

    The landmarks are the rows of V itself, so the Nyström error is set by how closely V's
    rows follow the cluster means. In QuickMeans' factor preset the last factor (A x d,
    A = min(K, d)) keeps max(s, A / 2^(Q-1)) entries per column, so the number of factors Q
    is the fidelity knob: Q = 2 (a K x A factor with s = 3 per row and column, then a factor
    with A/2 entries per column) costs nnz ≈ A·d/2 + 2·3·K, half of the dense K·d, and on the
    2 000-image Fashion-MNIST block gives kernel errors within 7 % of K-means landmarks
    (benchmarks/results/kernels_cpu.md: K = 64: 0.0215 vs 0.0202; K = 256: 0.0107 vs
    0.0100); Q = 3 (a quarter of K·d) was 16 % above K-means, the paper's Q = ⌊log2 max(K, d)⌋ (≈ 3 d nonzeros) twice K-means and no
    better than uniform sampling. Landmarks need no converged clustering: 5 Lloyd iterations
    of 20 PALM sweeps gave the same error as 10 of 50 (0.0217 vs 0.0213 at K = 64) in an
    eighth of the fit time. With more landmarks than features (K > d, A = d) the roles swap:
    the K x d factor holds each landmark's own coefficients, and s = 3 per row left them
    sparse combinations of d/2-sparse rows (digits, d = 64, K = 256: error 0.0167, worse than
    uniform 0.0123); that factor then keeps ⌈d/2⌉ per row, as the other keeps A/2 per column
    (0.0085 vs K-means' 0.0071, nnz 10 578 vs K·d = 16 384). The sparsity is capped at
    min(K, d) (QuickMeans' limit).
    """
    from ..cluster import QuickMeans

    d = X.shape[1]
    s = QM_SPARSITY if K <= d else max(QM_SPARSITY, -(-d // 2))
    sparsity = max(1, min(s, K, d))
    qm = QuickMeans(n_clusters=K, sparsity=sparsity, n_factors=QM_N_FACTORS, max_iter=QM_MAX_ITER,
                    palm_max_iter=QM_PALM_MAX_ITER, random_state=int(rng.integers(2 ** 31 - 1)))
    with warnings.catch_warnings():  # landmarks are all K centroids, used by a cluster or not
        warnings.simplefilter("ignore", ConvergenceWarning)
        qm.fit(X)
    V = qm.centroid_operator_
    if V.dtype != X.dtype:
        V = V.astype(X.dtype)
    return qm.cluster_centers_.astype(X.dtype, copy=False), V, None, None


def fast_nys(X, K, rng, be, *, n_iter: int = 5, sample: int = 4096):
    """Structured landmarks in the spirit of Si, Hsieh & Dhillon (ICML 2016, "Fast-Nys"):
    ``u = μ + h_i ∘ v_t`` with h_i a row of the ±1 Hadamard matrix H_N (inputs zero-padded
    to N = 2^L ≥ d), v_t one learned vector per block of ≤ N landmarks and μ the data mean,
    so ``X Uᵀ = X μ 1ᵀ + Sel · H · diag(v_t) · X`` costs O(N log N) per sample and block.

    The structure is fitted to K-means centres Z of a subsample (≤ ``sample`` points):
    alternately, each centre is matched to a distinct Hadamard row (linear assignment
    maximising Σ (z − μ)·(h_i ∘ v)) and v is the least-squares fit given the matching
    (v_c = mean_j h_{π(j), c} (z_j − μ)_c, since h² = 1). Returns (C, V, μ, None).
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    from ..transforms import hadamard_dense

    Xh = to_numpy(X).astype(np.float64)
    n, d = Xh.shape
    if n > sample:
        Xh = Xh[rng.choice(n, sample, replace=False)]
    Z = KMeans(n_clusters=K, n_init=1, max_iter=50,
               random_state=int(rng.integers(2 ** 31 - 1))).fit(Xh).cluster_centers_
    mu = Xh.mean(axis=0)
    N = padded_size(d)
    H = hadamard_dense(N)[:, :d]
    k = -(-K // N)
    groups = np.array_split(rng.permutation(K), k)
    V = np.zeros((k, N))
    rows, Cs = [], []
    for t, g in enumerate(groups):
        R = Z[g] - mu
        v = np.sqrt((R ** 2).mean(axis=0)) + 1e-12
        for _ in range(n_iter):
            score = (R * v) @ H.T  # (|g|, N): (z - μ)·(h_i ∘ v)
            _, cols = linear_sum_assignment(-score)
            v = (H[cols] * R).mean(axis=0)
        V[t, :d] = v
        rows.append(t * N + cols)
        Cs.append(mu + H[cols] * v)  # landmarks in the operator's row order
    rows = np.concatenate(rows)
    C = np.concatenate(Cs)
    dt = X.dtype
    xp = be.xp
    import scipy.sparse as sp

    sel = sp.csr_matrix((np.ones(K, dtype=dt), rows, np.arange(K + 1)), shape=(K, k * N))
    if xp is not np:
        import cupyx.scipy.sparse as csp

        sel = csp.csr_matrix(sel)
    from ..factors import CSRFactor

    factors = [CSRFactor(sel)] + ks_factors(hadamard_run(N, k, V, replicate=True), dt, xp)
    pad = pad_factor(d, N, dt, xp)
    op = FactorProduct(factors + ([pad] if pad is not None else []))
    return xp.asarray(C.astype(dt)), op, xp.asarray(mu.astype(dt)), None


METHODS = {"uniform": uniform, "kmeans": kmeans, "quickmeans": quickmeans, "fast-nys": fast_nys}
