"""Lloyd's steps through a factorized centroid operator, written once on ``xp``.

The centroid matrix V (K × D) is a :class:`~gpufact.FactorProduct`; a sample x goes to
argmin_k ‖v_k‖² − 2⟨v_k, x⟩, computed by :meth:`FactorProduct.argmin_affine` (X V^T through
the sparse chain, the (B, K) score matrix never held whole). These functions are shared by
the in-memory fit, the batched (``batch_size``) fit and the Dask map-reduce
(:mod:`gpufact.dask`): each works on one block of rows and returns fixed-shape partials.

Accumulation: the per-block sums are computed in the data's dtype and accumulated across
blocks in float64 (K × D and K entries only), so a fit in 64 blocks or in one agrees to
rounding.
"""
from __future__ import annotations

import numpy as np

from .._backend import get_backend

__all__ = ["row_sqnorms", "centroid_sqnorms", "assign", "assign_chunks", "labels_chunks", "block_partials",
           "lloyd_pass", "reseed_empty", "distances"]


def read_chunk(X, i, j):
    """Rows i:j of X; for a ``numpy.memmap`` a plain ndarray view of the mapped pages."""
    Xc = X[i:j]
    return np.asarray(Xc) if isinstance(Xc, np.memmap) else Xc


def _mapping(X):
    """The ``mmap`` under X (a ``numpy.memmap`` or a view of one), else None."""
    import mmap

    b = X
    for _ in range(32):
        if b is None:
            return None
        if isinstance(b, mmap.mmap):
            return b
        if isinstance(b, np.memmap) and getattr(b, "_mmap", None) is not None:
            return b._mmap
        b = getattr(b, "base", None)
    return None


def release_chunk(X, i, j):
    """Drop the mapped pages of rows i:j of a C-contiguous memory-mapped X (a ``numpy.memmap``
    or a view of one) from this process (``madvise(MADV_DONTNEED)``; the data stay in the page
    cache and on disk), so the resident memory of passes over a file larger than RAM stays
    O(chunk). No-op for other arrays."""
    import mmap

    if j <= i or not isinstance(X, np.ndarray) or not X.flags.c_contiguous \
            or not hasattr(mmap, "MADV_DONTNEED"):
        return
    mm = _mapping(X)
    if mm is None or not hasattr(mm, "madvise"):
        return
    try:
        base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    except (TypeError, ValueError):
        return
    lo = X[i:j].ctypes.data - base
    hi = lo + (j - i) * X.strides[0]
    page = mmap.PAGESIZE
    lo = max(0, (lo // page) * page)
    hi = min(len(mm), -(-hi // page) * page)
    if hi > lo:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def row_sqnorms(X, xp):
    """‖x_b‖² for each row of X (B,), in X's dtype."""
    return xp.einsum("ij,ij->i", X, X)


def centroid_sqnorms(V, xp):
    """‖v_k‖² for the dense centroids V (K, D)."""
    return xp.einsum("ij,ij->i", V, V)


def assign(X, op, cnorm2):
    """Labels and squared distances of the rows of X (B, D) to the rows of ``op`` (K, D).

    ``cnorm2`` is ‖v_k‖² (K,) in X's namespace. Returns ``(labels int32 (B,), dist2 (B,))``;
    distances are clipped at 0 (rounding of ‖x‖² − 2⟨v, x⟩ + ‖v‖²). Cost O(nnz(op) · B).
    """
    xp = op.backend.xp
    labels, vals = op.argmin_affine(X, cnorm2, alpha=-2.0)
    with np.errstate(over="ignore", invalid="ignore"):  # out of range: the callers raise ValueError
        vals += row_sqnorms(X, xp).astype(vals.dtype, copy=False)
    return labels, xp.maximum(vals, 0, out=vals)


def block_partials(X, labels, dist2, K):
    """Fixed-shape partials of one block: ``sums`` (K, D) and ``counts`` (K,) in float64,
    ``inertia`` a 0-d float64 array — all in X's namespace. O(B · D)."""
    be = get_backend(X, labels, dist2)
    xp = be.xp
    B = X.shape[0]
    if B == 0:
        return (xp.zeros((K, X.shape[1]), dtype=xp.float64), xp.zeros(K, dtype=xp.float64),
                xp.zeros((), dtype=xp.float64))
    ind = be.sparse.csr_matrix((xp.ones(B, dtype=X.dtype), labels.astype(xp.int32, copy=False),
                                xp.arange(B + 1, dtype=xp.int32)), shape=(B, K))
    sums = xp.asarray(ind.T @ X).astype(xp.float64, copy=False)
    counts = xp.bincount(labels, minlength=K).astype(xp.float64)
    inertia = xp.sum(dist2, dtype=xp.float64)
    return sums, counts, inertia


def lloyd_pass(X, op, cnorm2, chunks, *, keep=True):
    """One assignment pass over the row ``chunks`` [(start, stop), ...] of X.

    X may be a NumPy/CuPy array or a ``numpy.memmap`` (each chunk is read on its own, so memory
    stays O(chunk · (D + K))). Returns ``(labels, dist2, sums, counts, inertia)``; labels and
    dist2 are (n,) arrays when ``keep`` (else None); sums (K, D), counts (K,), inertia () are
    float64 arrays of the operator's namespace.
    """
    xp = op.backend.xp
    K = op.shape[0]
    n = X.shape[0]
    labels = xp.empty(n, dtype=xp.int32) if keep else None
    dist2 = xp.empty(n, dtype=op._result_dtype(X, "X")) if keep else None
    sums = xp.zeros((K, X.shape[1]), dtype=xp.float64)
    counts = xp.zeros(K, dtype=xp.float64)
    inertia = xp.zeros((), dtype=xp.float64)
    for i, j in chunks:
        Xc = read_chunk(X, i, j)
        lab, d2 = assign(Xc, op, cnorm2)
        s, c, e = block_partials(Xc, lab, d2, K)
        del Xc
        release_chunk(X, i, j)
        sums += s
        counts += c
        inertia += e
        if keep:
            labels[i:j] = lab
            dist2[i:j] = d2
    return labels, dist2, sums, counts, inertia


def reseed_empty(X, labels, dist2, sums, counts):
    """Re-seed each empty cluster with the point of the largest cluster farthest from its
    centroid (moved: the point's label, the sums and the counts are updated in place).

    Returns the number of clusters re-seeded (one host read when there are none). With
    n_samples >= K the largest cluster always holds at least two points.
    """
    xp = get_backend(labels).xp
    empty = xp.nonzero(counts == 0)[0]
    n_empty = int(empty.shape[0])
    if n_empty == 0:
        return 0
    for k in (int(v) for v in (empty.get() if hasattr(empty, "get") else empty)):
        big = int(xp.argmax(counts))
        cand = xp.where(labels == big, dist2, -1)
        p = int(xp.argmax(cand))
        x = xp.asarray(np.asarray(X[p]) if isinstance(X, np.memmap) else X[p]).astype(xp.float64)
        sums[big] -= x
        counts[big] -= 1
        sums[k] = x
        counts[k] = 1
        labels[p] = k
        dist2[p] = 0
    return n_empty


def assign_chunks(X, op, cnorm2, chunks):
    """Labels (n,) int32 and squared distances (n,) of the rows of X, chunk by chunk (X may
    be a ``numpy.memmap``); no partial sums. O(nnz(op) · n)."""
    if len(chunks) == 1 and not isinstance(X, np.memmap):
        return assign(X, op, cnorm2)
    xp = op.backend.xp
    n = X.shape[0]
    labels = xp.empty(n, dtype=xp.int32)
    dist2 = xp.empty(n, dtype=op._result_dtype(X, "X"))
    for i, j in chunks:
        labels[i:j], dist2[i:j] = assign(read_chunk(X, i, j), op, cnorm2)
        release_chunk(X, i, j)
    return labels, dist2


def labels_chunks(X, op, cnorm2, chunks):
    """Labels (n,) int32 of the rows of X, chunk by chunk (X may be a ``numpy.memmap``):
    :func:`assign_chunks` without the distances (no ‖x‖² pass over X), whether X is finite
    as the fused kernels found while reading it (True / False; None when not known), and
    whether every row's best score ‖v_k‖² − 2⟨v_k, x⟩ is finite (False for finite X: its
    magnitudes overflow the dtype, and the labels are not to be trusted). O(nnz(op) · n)."""
    xp = op.backend.xp
    if len(chunks) == 1 and not isinstance(X, np.memmap):
        labels, values, finite = op._argmin(X, cnorm2, -2.0)
        return labels, finite, bool(xp.isfinite(values).all())
    labels = xp.empty(X.shape[0], dtype=xp.int32)
    finite = in_range = True
    for i, j in chunks:
        labels[i:j], values, f = op._argmin(read_chunk(X, i, j), cnorm2, -2.0)
        finite = None if f is None or finite is None else finite and f
        in_range = in_range and bool(xp.isfinite(values).all())
        release_chunk(X, i, j)
    return labels, finite, in_range


def distances(X, op, cnorm2, chunks):
    """Euclidean distances (n, K) of the rows of X to the rows of ``op`` (‖v_k‖² given as
    ``cnorm2``), X V^T through the sparse chain, chunked over rows. O(nnz(op) · n)."""
    xp = op.backend.xp
    K = op.shape[0]
    dt = op._result_dtype(X, "X")
    out = xp.empty((X.shape[0], K), dtype=dt)
    c2 = cnorm2.astype(dt, copy=False)
    for i, j in chunks:
        Xc = read_chunk(X, i, j)
        S = Xc @ op.T
        with np.errstate(over="ignore", invalid="ignore"):  # out of range: the callers raise ValueError
            S *= dt.type(-2)
            S += c2
            S += row_sqnorms(Xc, xp).astype(dt, copy=False)[:, None]
        xp.maximum(S, 0, out=S)
        out[i:j] = xp.sqrt(S, out=S)
        release_chunk(X, i, j)
    return out
