"""Batched best rank-r approximations of many small blocks (one call per level, no Python loop
over blocks). Written once for NumPy and CuPy."""
from __future__ import annotations

import numpy as np

_SVD_MAX = 16  # blocks with min(m, n) <= this use one batched SVD; larger: subspace iteration (measured: 32 x 64 blocks 2x faster)


def _herm(A, xp):
    return xp.conj(xp.swapaxes(A, -1, -2))


def _orthonormalize(Z, xp):
    """Orthonormal basis of the columns of each Z (K, m, q): Cholesky-QR through eigh (robust
    to rank deficiency: directions with tiny eigenvalues are dropped to zero)."""
    S = _herm(Z, xp) @ Z
    S = (S + _herm(S, xp)) / 2
    w, U = xp.linalg.eigh(S)
    eps = xp.finfo(w.dtype).eps
    cutoff = w[:, -1:] * (eps * S.shape[-1] * 10)
    inv = xp.where(w > cutoff, 1 / xp.sqrt(xp.where(w > cutoff, w, 1)), 0)
    return Z @ (U * inv[:, None, :])


def _top_singular(A, r, xp, *, tol, max_iter, seed=0):
    """Top-r singular triplets of every block A (K, m, n) by block subspace iteration on A
    itself (never forms AᴴA): U (K, m, r), s (K, r), V (K, n, r).

    q = r + p vectors, p = max(2, r); each iteration costs 4·m·n·q per block; Rayleigh–Ritz
    (a q × q SVD per block) on the first two iterations, then every other one; stops when
    the top-r singular values change by less than ``tol`` (relative) or after ``max_iter`` iterations. Blocks of rank
    <= r are exact after the first iteration, and stop after the second. Returns None when
    ``max_iter`` iterations did not converge (the caller then takes full SVDs).
    """
    K, m, n = A.shape
    q = min(m, n, r + max(2, r))
    rng = np.random.default_rng(seed)
    Om = xp.asarray(rng.standard_normal((n, q))).astype(A.dtype)
    Qm = _orthonormalize(A @ Om, xp)
    prev = None
    for it in range(max_iter):
        Qn = _herm(_orthonormalize(_herm(_herm(Qm, xp) @ A, xp), xp), xp)  # (K, q, n) rows orthonormal
        AQn = A @ _herm(Qn, xp)                                              # (K, m, q)
        check = it <= 1 or it % 2 == 1 or it == max_iter - 1  # 0 and 1: exact blocks stop after two
        if check:
            Ub, sb, Vbh = xp.linalg.svd(_herm(Qm, xp) @ AQn)                 # (K, q, q)
            top = sb[:, :r]
            if prev is not None:
                scale = xp.maximum(top[:, :1], xp.finfo(top.dtype).tiny)
                if float(xp.max(xp.abs(top - prev) / scale)) <= tol:
                    break
            prev = top
        Qm = _orthonormalize(AQn, xp)
    else:
        return None
    U = Qm @ Ub[:, :, :r]
    V = _herm(Qn, xp) @ _herm(Vbh, xp)[:, :, :r]
    return U, sb[:, :r], V


_SUBSPACE_MAX_ITER = 6  # then full SVDs: slow singular-value decay (blocks of trained layers)


def batched_low_rank(A, r: int, xp, *, tol: float = 1e-13, max_iter: int = _SUBSPACE_MAX_ITER):
    """Best rank-r factors of every block: A (K, m, n) ≈ X (K, m, r) @ Y (K, r, n).

    The singular values are split evenly (X = U √Σ, Y = √Σ Vᴴ). Small blocks (min(m, n) <=
    16): one batched SVD. Larger blocks: subspace iteration on A (:func:`_top_singular`),
    O(m n r) per block and iteration, instead of full SVDs, until the top singular values
    change by less than ``tol`` relatively (at least 8 eps of A's precision) — fast when the
    blocks have (nearly) rank r, as for matrices with an exact factorization; when it has not
    converged after ``max_iter`` iterations (slowly decaying singular values, e.g. the
    32 x 32 blocks of a trained dense layer projected onto Monarch: 300 iterations took 7 s,
    the SVDs 0.02 s), batched full SVDs instead. Entries of A are squared (Gram matrices):
    callers keep A within sqrt of the dtype's range (``ksfactor`` scales it).
    """
    K, m, n = A.shape
    top = None
    if min(m, n) > _SVD_MAX and 2 * r < min(m, n):
        # the singular values stop changing at a few eps of A's precision: a tighter tol
        # would run every block to max_iter (float32: 7x the time, no gain in accuracy)
        tol = max(tol, 8 * float(xp.finfo(A.real.dtype).eps))
        top = _top_singular(A, r, xp, tol=tol, max_iter=max_iter)
    if top is not None:
        U, s, V = top
        Vh = _herm(V, xp)
    else:
        U, s, Vh = xp.linalg.svd(A, full_matrices=False)
        U, s, Vh = U[:, :, :r], s[:, :r], Vh[:, :r, :]
    sq = xp.sqrt(s).astype(A.dtype)
    X = U * sq[:, None, :]
    Y = Vh * sq[:, :, None]
    return X.astype(A.dtype, copy=False), Y.astype(A.dtype, copy=False)
