"""Numba (CPU) kernels for chains of general sparse (CSR) factors: the fused chain apply and
the fused assignment (argmin over ``bias[k] + alpha · (chain @ x)[k]``).

Like the Kronecker-sparse chain (``cpu.py``), a batch is cut into tiles of ``bt`` samples;
a tile is copied into a thread-local buffer laid out (rows, bt) (row-major samples are
transposed into it while in cache by ``cpu._load_rows``' 8 x 8 vector transposes), every
factor is applied there, and the result is written out once. A CSR row with entries
(c_p, w_p) is then Σ_p w_p · row(c_p): a few scalar × vector FMAs on contiguous bt-long
rows (three at a time, so an output row is written once per three entries), whatever the
support. Tiles run in parallel (``prange``), each thread with its own two buffers.

The chain is held concatenated (application order, :class:`gpufact.factors._csr_chain.CSRChain`):

* ``plan``: int64 (J, 3), step j = (m_j, n_j, p_j): factor j maps n_j rows to m_j rows,
  its row i has the entries ``indptr[p_j + i] .. indptr[p_j + i + 1] - 1``;
* ``indptr``: int64 offsets into ``indices`` (int32 column indices) and ``data``.

``rows0`` / ``rows1``: rows of the two ping-pong buffers (the largest state held in each:
input, result of step 1, of step 2, ... alternately). The assignment kernels never store the
last factor's output: each of its rows is reduced into a running (value, index) minimum per
sample as soon as it is computed, so nothing of size K x B exists, even per tile.

Tie rule (as ``numpy.argmin`` and the reference): the first minimum in k order; a NaN score
wins (the first NaN).

Time O(B · nnz); extra memory (rows0 + rows1 + 3) · bt per thread.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cpu import _FASTMATH, _copy_cols, _load_rows, _store_rows

TILE_BYTES = 256  # bytes per tile row: 64 float32 samples (128 in the AVX2 row loops)
TILE_MAX_BYTES = 384 << 10  # both tile buffers of a thread at most (L2-resident), but >= 8 samples
SMALL_B = 8  # up to this many samples: one sample at a time, one thread, no tiles


def tile_width(rows: int, itemsize: int, B: int, threads: int) -> int:
    """Samples per tile: TILE_BYTES per tile row, the two buffers (``rows`` rows in all)
    within TILE_MAX_BYTES (but at least 8 samples, the transposes' width), a multiple of 8,
    and no wider than an even share of the batch."""
    bt = TILE_BYTES // itemsize
    bt = min(bt, max(8, TILE_MAX_BYTES // max(1, rows * itemsize)) // 8 * 8)
    return max(1, min(bt, -(-B // threads)))


@njit(cache=True, fastmath=_FASTMATH)
def _csr_row(indptr, indices, data, r, src, bt, nt, y):
    """y[:nt] <- Σ_p data[p] · src row indices[p] (rows of stride bt) over the entries of
    global row r; three entries per pass over y."""
    p = indptr[r]
    e = indptr[r + 1]
    n = e - p
    if n >= 3:
        w0, w1, w2 = data[p], data[p + 1], data[p + 2]
        x0 = src[indices[p] * bt:indices[p] * bt + nt]
        x1 = src[indices[p + 1] * bt:indices[p + 1] * bt + nt]
        x2 = src[indices[p + 2] * bt:indices[p + 2] * bt + nt]
        for t in range(nt):
            y[t] = w0 * x0[t] + w1 * x1[t] + w2 * x2[t]
        p += 3
    elif n == 2:
        w0, w1 = data[p], data[p + 1]
        x0 = src[indices[p] * bt:indices[p] * bt + nt]
        x1 = src[indices[p + 1] * bt:indices[p + 1] * bt + nt]
        for t in range(nt):
            y[t] = w0 * x0[t] + w1 * x1[t]
        return
    elif n == 1:
        w0 = data[p]
        x0 = src[indices[p] * bt:indices[p] * bt + nt]
        for t in range(nt):
            y[t] = w0 * x0[t]
        return
    else:
        for t in range(nt):
            y[t] = 0
        return
    while e - p >= 3:
        w0, w1, w2 = data[p], data[p + 1], data[p + 2]
        x0 = src[indices[p] * bt:indices[p] * bt + nt]
        x1 = src[indices[p + 1] * bt:indices[p + 1] * bt + nt]
        x2 = src[indices[p + 2] * bt:indices[p + 2] * bt + nt]
        for t in range(nt):
            y[t] += w0 * x0[t] + w1 * x1[t] + w2 * x2[t]
        p += 3
    while p < e:
        w0 = data[p]
        x0 = src[indices[p] * bt:indices[p] * bt + nt]
        for t in range(nt):
            y[t] += w0 * x0[t]
        p += 1


@njit(cache=True, fastmath=_FASTMATH)
def _run_steps(plan, indptr, indices, data, nsteps, buf0, buf1, bt, nt):
    """Apply steps 0 .. nsteps-1 to the tile in buf0; returns 0 or 1, the buffer holding
    the result."""
    cur = 0
    for j in range(nsteps):
        src = buf0 if cur == 0 else buf1
        dst = buf1 if cur == 0 else buf0
        m = plan[j, 0]
        p0 = plan[j, 2]
        for i in range(m):
            _csr_row(indptr, indices, data, p0 + i, src, bt, nt, dst[i * bt:i * bt + nt])
        cur = 1 - cur
    return cur


@njit(cache=True, fastmath=_FASTMATH)
def _argmin_rows(indptr, indices, data, p0, K, src, bt, nt, bias, alpha, acc, bv, bi):
    """bv[:nt], bi[:nt] <- min and first argmin over k < K of bias[k] + alpha · row k of
    the last factor applied to src (a NaN score wins, the first one)."""
    for t in range(nt):
        bv[t] = np.inf
        bi[t] = 0
    for k in range(K):
        _csr_row(indptr, indices, data, p0 + k, src, bt, nt, acc)
        b = bias[k]
        for t in range(nt):
            s = alpha * acc[t] + b
            old = bv[t]
            if s < old or (s != s and old == old):
                bv[t] = s
                bi[t] = k


@njit(cache=True)
def _load_tile(X, x_rows, b0, nt, buf, bt):
    if x_rows:
        _load_rows(X, b0, nt, buf, bt)
    else:
        _copy_cols(X, b0, buf, X.shape[0], nt, bt, True)


@njit(cache=True, fastmath=_FASTMATH)
def _apply_tile(plan, indptr, indices, data, X, x_rows, Y, y_rows, bt, ti, buf0, buf1):
    B = X.shape[0] if x_rows else X.shape[1]
    b0 = ti * bt
    nt = min(bt, B - b0)
    _load_tile(X, x_rows, b0, nt, buf0, bt)
    res = buf0 if _run_steps(plan, indptr, indices, data, plan.shape[0], buf0, buf1, bt, nt) == 0 else buf1
    if y_rows:
        _store_rows(res, bt, Y, b0, nt)
    else:
        _copy_cols(Y, b0, res, Y.shape[0], nt, bt, False)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def csr_chain_apply(plan, indptr, indices, data, rows0, rows1, X, x_rows, Y, y_rows, bt, nthreads):
    """Y <- (chain of CSR factors) X, tiles of ``bt`` samples in parallel.

    plan, indptr, indices, data: the chain (module docstring), data of Y's dtype.
    rows0, rows1: ping-pong buffer rows. X: C-contiguous, (B, N) if ``x_rows`` else (N, B),
    of Y's dtype (read-only arrays are fine); Y: (B, M) if ``y_rows`` else (M, B).
    bt: samples per tile (:func:`tile_width`); nthreads: Numba's thread count.
    """
    B = X.shape[0] if x_rows else X.shape[1]
    ntiles = (B + bt - 1) // bt
    nth = max(1, min(nthreads, ntiles))
    for th in prange(nth):  # one pair of buffers per thread, tiles dealt round-robin
        buf0 = np.empty(rows0 * bt, dtype=Y.dtype)
        buf1 = np.empty(max(rows1, 1) * bt, dtype=Y.dtype)
        for ti in range(th, ntiles, nth):
            _apply_tile(plan, indptr, indices, data, X, x_rows, Y, y_rows, bt, ti, buf0, buf1)


@njit(cache=True, fastmath=_FASTMATH)
def _argmin_tile(plan, indptr, indices, data, X, x_rows, bias, alpha, labels, values, bt, ti,
                 buf0, buf1, acc, bv, bi):
    B = X.shape[0] if x_rows else X.shape[1]
    b0 = ti * bt
    nt = min(bt, B - b0)
    _load_tile(X, x_rows, b0, nt, buf0, bt)
    J = plan.shape[0]
    res = buf0 if _run_steps(plan, indptr, indices, data, J - 1, buf0, buf1, bt, nt) == 0 else buf1
    _argmin_rows(indptr, indices, data, plan[J - 1, 2], plan[J - 1, 0], res, bt, nt, bias, alpha, acc, bv, bi)
    for t in range(nt):
        labels[b0 + t] = bi[t]
        values[b0 + t] = bv[t]


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def csr_chain_argmin(plan, indptr, indices, data, rows0, rows1, X, x_rows, bias, alpha, labels, values,
                     bt, nthreads):
    """labels[b], values[b] <- argmin and min over k of ``bias[k] + alpha · (chain @ x_b)[k]``
    (ties: the smaller k; a NaN score wins, the first one). The last step of ``plan`` is
    reduced on the fly (rows0, rows1 cover the other steps only).

    X as in :func:`csr_chain_apply`; bias: (K,) and alpha of data's dtype (real);
    labels: int32 (B,); values: (B,) of data's dtype.
    """
    B = X.shape[0] if x_rows else X.shape[1]
    ntiles = (B + bt - 1) // bt
    nth = max(1, min(nthreads, ntiles))
    for th in prange(nth):
        buf0 = np.empty(rows0 * bt, dtype=data.dtype)
        buf1 = np.empty(max(rows1, 1) * bt, dtype=data.dtype)
        acc = np.empty(bt, dtype=data.dtype)
        bv = np.empty(bt, dtype=data.dtype)
        bi = np.empty(bt, dtype=np.int32)
        for ti in range(th, ntiles, nth):
            _argmin_tile(plan, indptr, indices, data, X, x_rows, bias, alpha, labels, values, bt, ti,
                         buf0, buf1, acc, bv, bi)


# ---- one sample at a time (tiny batches: no parallel region, no tiles, no row views) ---------

@njit(cache=True, fastmath=_FASTMATH)
def _vec_row(indptr, indices, data, r, src):
    acc = data.dtype.type(0)
    for p in range(indptr[r], indptr[r + 1]):
        acc += data[p] * src[indices[p]]
    return acc


@njit(cache=True, fastmath=_FASTMATH)
def _vec_steps(plan, indptr, indices, data, nsteps, src, dst):
    for j in range(nsteps):
        p0 = plan[j, 2]
        for i in range(plan[j, 0]):
            dst[i] = _vec_row(indptr, indices, data, p0 + i, src)
        src, dst = dst, src
    return src


@njit(cache=True)
def _vec_load(X, x_rows, t, buf):
    if x_rows:
        for i in range(X.shape[1]):
            buf[i] = X[t, i]
    else:
        for i in range(X.shape[0]):
            buf[i] = X[i, t]


@njit(cache=True, fastmath=_FASTMATH)
def csr_chain_apply_serial(plan, indptr, indices, data, rows0, rows1, X, x_rows, Y, y_rows):
    """:func:`csr_chain_apply`, one sample at a time on one thread (tiny batches)."""
    B = X.shape[0] if x_rows else X.shape[1]
    M = Y.shape[1] if y_rows else Y.shape[0]
    b0 = np.empty(max(rows0, rows1, 1), dtype=Y.dtype)
    b1 = np.empty(max(rows0, rows1, 1), dtype=Y.dtype)
    for t in range(B):
        _vec_load(X, x_rows, t, b0)
        res = _vec_steps(plan, indptr, indices, data, plan.shape[0], b0, b1)
        for i in range(M):
            if y_rows:
                Y[t, i] = res[i]
            else:
                Y[i, t] = res[i]


@njit(cache=True, fastmath=_FASTMATH)
def csr_chain_argmin_serial(plan, indptr, indices, data, rows0, rows1, X, x_rows, bias, alpha, labels,
                            values):
    """:func:`csr_chain_argmin`, one sample at a time on one thread (tiny batches)."""
    B = X.shape[0] if x_rows else X.shape[1]
    J = plan.shape[0]
    K = plan[J - 1, 0]
    p0 = plan[J - 1, 2]
    b0 = np.empty(max(rows0, rows1, 1), dtype=data.dtype)
    b1 = np.empty(max(rows0, rows1, 1), dtype=data.dtype)
    for t in range(B):
        _vec_load(X, x_rows, t, b0)
        res = _vec_steps(plan, indptr, indices, data, J - 1, b0, b1)
        best = data.dtype.type(np.inf)
        arg = 0
        for k in range(K):
            s = alpha * _vec_row(indptr, indices, data, p0 + k, res) + bias[k]
            if s < best or (s != s and best == best):
                best = s
                arg = k
        labels[t] = arg
        values[t] = best
