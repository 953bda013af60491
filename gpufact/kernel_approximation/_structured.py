"""Shared construction of structured random-feature operators (Hadamard runs with diagonals
folded into the butterfly factors) and the parameter checks of the random-feature estimators.

The Sylvester–Hadamard matrix H_N (entries ±1) is the product of L = log2(N) butterfly factors
``I_{2^(ℓ-1)} ⊗ [[1, 1], [1, -1]] ⊗ I_{N/2^ℓ}``, which commute. ``k`` independent blocks
``blockdiag_j(diag(r_j) H diag(v_j))`` are L KS factors of patterns (k·2^(ℓ-1), 2, 2, N/2^ℓ):
the column scaling v is folded into the first factor applied, the row scaling r into the last,
so the whole run is one fused pass of the KS chain kernels. When the k blocks all read the same
N inputs (the first run of every feature map), the replication ``[I; …; I]`` and the first
level ``h2 ⊗ I_{N/2}`` are one KS factor of pattern (1, 2k, 2, N/2).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..factors import CSRFactor, KSFactor

_H2 = np.array([[1.0, 1.0], [1.0, -1.0]])


def hadamard_run(N: int, k: int, col_scale, row_scale=None, *, replicate: bool):
    """Host float64 block arrays (a, d, b, c) of ``blockdiag_j(diag(r_j) H_N diag(v_j))``, in
    **application order** (first applied first).

    col_scale : (k, N) array, v_j. row_scale : None or (k·N,) array. With ``replicate`` the run
    maps N inputs to k·N outputs (every block reads the same input), else k·N to k·N.
    """
    L = N.bit_length() - 1
    v = np.asarray(col_scale, dtype=np.float64).reshape(k, N)
    h = N // 2
    # level 1 first: pairs rows i and i + N/2 inside each block
    if replicate:
        # blocks (1, N/2, 2k, 2): entry [0, δ, 2j + r, s] = h2[r, s] · v_j[s·N/2 + δ]
        vv = v.reshape(k, 2, h)  # [j, s, δ]
        blk = _H2[None, :, :, None] * vv[:, None, :, :]  # [j, r, s, δ]
        first = blk.transpose(3, 0, 1, 2).reshape(1, h, 2 * k, 2)
    else:
        # blocks (k, N/2, 2, 2): entry [j, δ, r, s] = h2[r, s] · v_j[s·N/2 + δ]
        vv = v.reshape(k, 2, h)
        first = (_H2[None, None, :, :] * vv.transpose(0, 2, 1)[:, :, None, :]).copy()
    runs = [first]
    for lvl in range(2, L + 1):
        a, d = k * 2 ** (lvl - 1), N // 2 ** lvl
        runs.append(np.broadcast_to(_H2, (a, d, 2, 2)).copy())
    if row_scale is not None:
        last = runs[-1]
        a, d, b, c = last.shape
        r = np.asarray(row_scale, dtype=np.float64).reshape(a, b, d).transpose(0, 2, 1)
        runs[-1] = last * r[:, :, :, None]
    return runs


def ks_factors(blocks_app_order, dtype, xp):
    """KS factors in product order from host block arrays given in application order."""
    return [KSFactor(xp.asarray(b.astype(dtype)), check=False) for b in reversed(blocks_app_order)]


def pad_factor(n_features: int, N: int, dtype, xp):
    """The (N, n_features) zero-padding ``[I; 0]`` as a CSR factor (None if N == n_features)."""
    if N == n_features:
        return None
    import scipy.sparse as sp

    P = sp.csr_matrix((np.ones(n_features, dtype=dtype), np.arange(n_features),
                       np.r_[np.arange(n_features + 1), np.full(N - n_features, n_features)]),
                      shape=(N, n_features))
    if xp is not np:
        import cupyx.scipy.sparse as csp

        P = csp.csr_matrix(P)
    return CSRFactor(P)


def row_selection(m: int, n: int, dtype, xp):
    """The (m, n) selection of the first m rows ``[I_m 0]`` as a CSR factor (None if m == n)."""
    if m == n:
        return None
    import scipy.sparse as sp

    S = sp.csr_matrix((np.ones(m, dtype=dtype), np.arange(m), np.arange(m + 1)), shape=(m, n))
    if xp is not np:
        import cupyx.scipy.sparse as csp

        S = csp.csr_matrix(S)
    return CSRFactor(S)


def padded_size(n_features: int) -> int:
    """The power of two N >= max(2, n_features) the inputs are zero-padded to."""
    return max(2, 1 << (int(n_features) - 1).bit_length())


def check_gamma(gamma, name="gamma", *, allow_none=False):
    if gamma is None and allow_none:
        return None
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {type(gamma).__name__}")
    g = float(gamma)
    if not np.isfinite(g) or g <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {gamma!r}")
    return g


def check_features(features):
    if features not in ("cos", "sincos"):
        raise ValueError(f"features must be 'cos' or 'sincos', got {features!r}")
    return features


def block_program(runs1, replicated: bool, k: int, dtype, runs2=(), *, inplace_hadamard: bool = True):
    """Per-block weights and plans of the fused CPU kernel
    (:func:`gpufact._kernels.cpu_features.structured_features`) from host runs in application
    order: returns ``(W1 (k, n1), plan1, W2 (k, n2), plan2)`` with plans from ``make_plan``."""
    from .._kernels.plan import make_plan

    def split(runs, first_replicated):
        per_block, patterns = [[] for _ in range(k)], []
        for i, arr in enumerate(runs):
            a, d, b, c = arr.shape
            if i == 0 and first_replicated:  # (1, N/2, 2k, 2): block j owns rows 2j, 2j + 1
                parts = [arr[:, :, 2 * j:2 * j + 2, :] for j in range(k)]
                patterns.append((1, 2, 2, d))
            else:  # (k·a', d, 2, 2): block j owns a' consecutive blocks
                ab = a // k
                parts = [arr[j * ab:(j + 1) * ab] for j in range(k)]
                patterns.append((ab, b, c, d))
            for j in range(k):
                per_block[j].append(parts[j].ravel())
        if not patterns:
            return np.zeros((k, 0), dtype=dtype), np.zeros((0, 6), dtype=np.int64)
        W = np.stack([np.concatenate(p) for p in per_block]).astype(dtype)
        plan, _, _ = make_plan(patterns)
        if inplace_hadamard:  # plain ±1 levels (no folded scaling) run as in-place add/sub
            from .._kernels.cpu_features import KIND_HADAMARD

            for i, arr in enumerate(runs):
                if arr.shape[2:] == (2, 2) and np.array_equal(arr, np.broadcast_to(_H2, arr.shape)):
                    plan[i, 0] = KIND_HADAMARD
        return np.ascontiguousarray(W), plan

    W1, plan1 = split(runs1, replicated)
    W2, plan2 = split(list(runs2), False)
    return W1, plan1, W2, plan2


def block_norm_bounds(W1, plan1, W2, plan2):
    """(k,) float64 upper bounds on the spectral norm of each block of a ``block_program``:
    the product over its KS steps of the largest spectral norm of a step's b x c blocks (a
    KS factor is a permuted block diagonal, so its norm is its largest block's; 2 x 2 blocks
    in closed form). Exact for orthogonal runs (√2 per Hadamard level, so √N/σ for SORF).
    The fused kernel uses it to prove that float32 cosine arguments are small
    (``structured_features``' ``norm_bound``)."""
    k = W1.shape[0]
    out = np.ones(k)
    for W, plan in ((W1, plan1), (W2, plan2)):
        for _, a, b, c, d, off in plan:
            blocks = np.asarray(W[:, off:off + a * d * b * c], dtype=np.float64).reshape(k, a * d, b, c)
            if b == c == 2:  # σ_max² = (F² + √(F⁴ − 4 det²)) / 2
                f2 = (blocks ** 2).sum(axis=(2, 3))
                det = blocks[..., 0, 0] * blocks[..., 1, 1] - blocks[..., 0, 1] * blocks[..., 1, 0]
                sig = np.sqrt((f2 + np.sqrt(np.maximum(f2 ** 2 - 4 * det ** 2, 0))) / 2)
            else:
                sig = np.linalg.norm(blocks, 2, axis=(2, 3))
            out *= sig.max(axis=1) * (1 + 1e-12)
    return out


def tile_samples(N: int, itemsize: int, B: int, threads: int) -> int:
    """Samples per tile of the fused kernel: three N x bt tiles per thread within ~384 KiB
    (L2), a multiple of 8 (the transposes' width), at least 8, at most an even share of B."""
    bt = max(8, ((384 << 10) // (3 * N * itemsize)) // 8 * 8)
    bt = min(bt, 64)
    share = -(-B // max(1, threads))
    return max(8, min(bt, -(-share // 8) * 8))
