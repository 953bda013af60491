"""Numba (CPU) kernels for chains of general sparse (CSR) factors: the fused chain apply and
the fused assignment (argmin over ``bias[k] + alpha · (chain @ x)[k]``).

Like the Kronecker-sparse chain (``cpu.py``), a batch is cut into tiles of ``bt`` samples;
a tile is copied into a thread-local buffer laid out (rows, bt) (row-major samples are
transposed into it while in cache by ``cpu._load_rows``' 8 x 8 vector transposes), every
factor is applied there, and the result is written out once. A CSR row with entries
(c_p, w_p) is then Σ_p w_p · row(c_p): a few scalar × vector FMAs on contiguous bt-long
rows (up to three at a time, so an output row is written once per three entries), whatever
the support. Tiles run in parallel (GIL-free kernels on a thread pool, ``cpu._on_threads``),
each thread with its own two buffers.

The chain is held concatenated (application order, :class:`gpufact.factors._csr_chain.CSRChain`):

* ``plan``: int64 (J, 3), step j = (m_j, n_j, p_j): factor j maps n_j rows to m_j rows,
  its row i has the entries ``indptr[p_j + i] .. indptr[p_j + i + 1] - 1``;
* ``indptr``: int64 offsets into ``indices`` (int32 column indices) and ``data``.

``rows0`` / ``rows1``: rows of the two ping-pong buffers (the largest state held in each:
input, result of step 1, of step 2, ... alternately). The assignment kernels never store the
last factor's output: each of its rows is reduced into a running (value, index) minimum per
sample as soon as it is computed, so nothing of size K x B exists, even per tile.

Batches that give every thread full tiles run :func:`argmin_fixed`, the same assignment kernel
compiled for one tile width (FIXED_TILE_BYTES per tile row): constant trip counts, no remainder
loops, the last tile zero-padded. The assignment kernels also report whether X is finite,
from a Σ 0·x pass over each tile as it is loaded (so ``QuickMeans.predict`` needs no separate
NaN/inf scan).

Tie rule (as ``numpy.argmin`` and the reference): the first minimum in k order; a NaN score
wins (the first NaN).

Layout flags ``x_rows``, ``y_rows`` (row-major samples) reach the jitted kernels as True or
None (:func:`gpufact._kernels.cpu._flag`): a call compiles only its own layout's loads and
stores. The Python entry points take plain booleans.

Time O(B · nnz); extra memory (rows0 + rows1 + 3) · bt per thread (at most twice the L2).
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit

from .cpu import _FASTMATH, _flag, _load_rows, _on_threads, _store_rows
from .cpu_tiles import _copy_cols, _store_cols

# Samples per tile: a longer tile row amortises each CSR row's fixed cost (its indptr, the
# (index, value) pairs, the loop set-up) over more samples; measured (CPU time, one thread,
# K = 256, D = 784, 8 splincol(3) factors, float32, argmin): 16 samples 2.1x, 32 1.2x the
# time of 128; 64 and 256 within the noise of 128.
TILE_BYTES = 512  # bytes per tile row: 128 float32 samples, 64 float64
SMALL_B = 8  # up to this many samples: one sample at a time, one thread, no tiles
# the assignment kernel compiled for these tile-row lengths (bytes) runs with constant trip
# counts (:func:`argmin_fixed`); the runtime width is rounded down to one of them
FIXED_TILE_BYTES = (512, 256)


def tile_max_bytes() -> int:
    """A thread's two tile buffers at most: twice its L2 (from :mod:`gpufact._cpuinfo`; the
    buffers are not all live at once: a step reads one and writes the other). 1 MiB on the
    AMD EPYC this was measured on (L2 512 KiB; 2 MiB and 512 KiB were slower)."""
    from .._cpuinfo import cache_sizes

    return 2 * cache_sizes()["L2"]


def tile_width(rows: int, itemsize: int, B: int, threads: int) -> int:
    """Samples per tile: TILE_BYTES per tile row, the two buffers (``rows`` rows in all)
    within :func:`tile_max_bytes` (but at least 8 samples, the transposes' width), a
    multiple of 8, and no wider than an even share of the batch."""
    bt = TILE_BYTES // itemsize
    bt = min(bt, max(8, tile_max_bytes() // max(1, rows * itemsize)) // 8 * 8)
    return max(1, min(bt, -(-B // threads)))


def fixed_width(bt: int, itemsize: int, B: int, threads: int) -> int:
    """The fixed tile width (samples) to run instead of ``bt``: the largest of
    FIXED_TILE_BYTES / itemsize not above ``bt``, when the batch fills every thread with
    such tiles; 0 when none applies (the runtime-width kernel runs)."""
    for nbytes in FIXED_TILE_BYTES:
        w = nbytes // itemsize
        if w <= bt and B >= threads * w:
            return w
    return 0


# Tile rows are addressed as flat offsets in unsigned arithmetic: no negative-index
# wraparound test in the inner loops (they vectorise), and no per-row array views (a view
# costs reference-count updates that dominated short rows: 2-4x slower at 8-64 samples).

@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _csr_row(indptr, indices, data, r, src, bt, nt, y, yo):
    """y[yo : yo+nt] <- Σ_p data[p] · src[indices[p]·bt : +nt] over the entries of global
    row r: the output row zeroed, then up to three entries per pass over it (splincol rows
    have 2-6). bt, nt, yo: np.uint64.

    Four loops in all: this body is inlined twice into every assignment kernel, and a version
    with separate first-pass (store) and later-pass (accumulate) loops for up to four entries
    (nine loops) compiled 2.3 s longer on a first call for 3-5 % less CPU time (K = 256,
    D = 784, splincol(3), float32, 10 000 samples, one thread; AMD EPYC)."""
    p = indptr[r]
    e = indptr[r + 1]
    n = e - p
    for t in range(nt):
        y[yo + t] = 0
    while p < e:
        k = min(e - p, 3)
        w0 = data[p]
        x0 = np.uint64(indices[p]) * bt
        if k == 3:
            w1, w2 = data[p + 1], data[p + 2]
            x1 = np.uint64(indices[p + 1]) * bt
            x2 = np.uint64(indices[p + 2]) * bt
            for t in range(nt):
                y[yo + t] += w0 * src[x0 + t] + w1 * src[x1 + t] + w2 * src[x2 + t]
        elif k == 2:
            w1 = data[p + 1]
            x1 = np.uint64(indices[p + 1]) * bt
            for t in range(nt):
                y[yo + t] += w0 * src[x0 + t] + w1 * src[x1 + t]
        else:
            for t in range(nt):
                y[yo + t] += w0 * src[x0 + t]
        p += k
    return n


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _run_steps(plan, indptr, indices, data, nsteps, buf0, buf1, bt, nt):
    """Apply steps 0 .. nsteps-1 to the tile in buf0 (rows of stride bt, nt samples);
    returns 0 or 1, the buffer holding the result."""
    ubt = np.uint64(bt)
    unt = np.uint64(nt)
    cur = 0
    for j in range(nsteps):
        src = buf0 if cur == 0 else buf1
        dst = buf1 if cur == 0 else buf0
        p0 = plan[j, 2]
        for i in range(plan[j, 0]):
            _csr_row(indptr, indices, data, p0 + i, src, ubt, unt, dst, np.uint64(i) * ubt)
        cur = 1 - cur
    return cur


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _argmin_rows(indptr, indices, data, p0, K, src, bt, nt, bias, alpha, acc, bv, bi):
    """bv[:nt], bi[:nt] <- min and first argmin over k < K of bias[k] + alpha · row k of
    the last factor applied to src (a NaN score wins, the first one)."""
    ubt = np.uint64(bt)
    unt = np.uint64(nt)
    for t in range(unt):
        bv[t] = np.inf
        bi[t] = 0
    for k in range(K):
        _csr_row(indptr, indices, data, p0 + k, src, ubt, unt, acc, np.uint64(0))
        b = bias[k]
        kk = np.int32(k)
        for t in range(unt):  # branch-free: selects, so the loop vectorises
            s = alpha * acc[t] + b
            old = bv[t]
            take = (s < old) | ((s != s) & (old == old))
            bv[t] = s if take else old
            bi[t] = kk if take else bi[t]


@njit(cache=True)
def _load_tile(X, x_rows, b0, nt, buf, bt):
    """Tile rows buf[i*bt : i*bt + nt] <- samples b0 .. b0+nt-1 of X (reads X only, so a
    read-only X types)."""
    if x_rows is not None:
        _load_rows(X, b0, nt, buf, bt)
    else:
        for i in range(X.shape[0]):
            xr = X[i, b0:b0 + nt]
            br = buf[i * bt:i * bt + nt]
            for t in range(nt):
                br[t] = xr[t]


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _tile_finite(buf, N, bt, nt):
    """Whether the N loaded tile rows (nt samples each) hold no NaN or inf: Σ 0·x is 0, else
    NaN (the kernels' fast-math flags keep NaN and inf semantics). One pass over the tile
    while it is in cache."""
    z = buf.dtype.type(0)
    for i in range(N):
        o = i * bt
        for t in range(nt):
            z += buf[o + t] * 0
    return z == 0


@njit(cache=True, fastmath=_FASTMATH)
def _apply_tile(plan, indptr, indices, data, X, x_rows, Y, y_rows, bt, ti, buf0, buf1):
    B = X.shape[0] if x_rows is not None else X.shape[1]
    b0 = ti * bt
    nt = min(bt, B - b0)
    _load_tile(X, x_rows, b0, nt, buf0, bt)
    res = buf0 if _run_steps(plan, indptr, indices, data, plan.shape[0], buf0, buf1, bt, nt) == 0 else buf1
    if y_rows is not None:
        _store_rows(res, bt, Y, b0, nt)
    else:
        _store_cols(res, bt, Y, b0, Y.shape[0], nt)


@njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _apply_tiles(plan, indptr, indices, data, rows0, rows1, X, x_rows, Y, y_rows, bt, first, step):
    """Tiles first, first + step, ... of :func:`csr_chain_apply`, with this thread's buffers."""
    B = X.shape[0] if x_rows is not None else X.shape[1]
    ntiles = (B + bt - 1) // bt
    buf0 = np.empty(rows0 * bt, dtype=Y.dtype)
    buf1 = np.empty(max(rows1, 1) * bt, dtype=Y.dtype)
    for ti in range(first, ntiles, step):
        _apply_tile(plan, indptr, indices, data, X, x_rows, Y, y_rows, bt, ti, buf0, buf1)


def csr_chain_apply(plan, indptr, indices, data, rows0, rows1, X, x_rows, Y, y_rows, bt, nthreads):
    """Y <- (chain of CSR factors) X, tiles of ``bt`` samples in parallel.

    plan, indptr, indices, data: the chain (module docstring), data of Y's dtype.
    rows0, rows1: ping-pong buffer rows. X: C-contiguous, (B, N) if ``x_rows`` else (N, B),
    of Y's dtype (read-only arrays are fine); Y: (B, M) if ``y_rows`` else (M, B).
    bt: samples per tile (:func:`tile_width`); nthreads: threads (one pair of buffers each,
    tiles dealt round-robin; GIL-free kernels on :func:`cpu._on_threads`' pool: a ``prange``
    region cost ~6 s more compilation on a first call).
    """
    x_rows, y_rows = _flag(x_rows), _flag(y_rows)
    B = X.shape[0] if x_rows is not None else X.shape[1]
    _on_threads(_apply_tiles, (plan, indptr, indices, data, rows0, rows1, X, x_rows, Y, y_rows, bt),
                -(-B // bt), nthreads)


@njit(cache=True, fastmath=_FASTMATH)
def _argmin_tile(plan, indptr, indices, data, X, x_rows, bias, alpha, labels, values, bt, ti,
                 buf0, buf1, acc, bv, bi):
    B = X.shape[0] if x_rows is not None else X.shape[1]
    b0 = ti * bt
    nt = min(bt, B - b0)
    _load_tile(X, x_rows, b0, nt, buf0, bt)
    finite = _tile_finite(buf0, X.shape[1] if x_rows is not None else X.shape[0], bt, nt)
    J = plan.shape[0]
    res = buf0 if _run_steps(plan, indptr, indices, data, J - 1, buf0, buf1, bt, nt) == 0 else buf1
    _argmin_rows(indptr, indices, data, plan[J - 1, 2], plan[J - 1, 0], res, bt, nt, bias, alpha, acc, bv, bi)
    for t in range(nt):
        labels[b0 + t] = bi[t]
        values[b0 + t] = bv[t]
    return finite


@njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _argmin_tiles(plan, indptr, indices, data, rows0, rows1, X, x_rows, bias, alpha, labels, values, bt,
                  bad, first, step):
    """Tiles first, first + step, ... of :func:`csr_chain_argmin`, with this thread's buffers;
    bad[first] <- the number of those tiles holding a NaN or inf."""
    B = X.shape[0] if x_rows is not None else X.shape[1]
    ntiles = (B + bt - 1) // bt
    buf0 = np.empty(rows0 * bt, dtype=data.dtype)
    buf1 = np.empty(max(rows1, 1) * bt, dtype=data.dtype)
    acc = np.empty(bt, dtype=data.dtype)
    bv = np.empty(bt, dtype=data.dtype)
    bi = np.empty(bt, dtype=np.int32)
    nb = 0
    for ti in range(first, ntiles, step):
        if not _argmin_tile(plan, indptr, indices, data, X, x_rows, bias, alpha, labels, values, bt, ti,
                            buf0, buf1, acc, bv, bi):
            nb += 1
    bad[first] = nb


def csr_chain_argmin(plan, indptr, indices, data, rows0, rows1, X, x_rows, bias, alpha, labels, values,
                     bt, nthreads):
    """labels[b], values[b] <- argmin and min over k of ``bias[k] + alpha · (chain @ x_b)[k]``
    (ties: the smaller k; a NaN score wins, the first one). The last step of ``plan`` is
    reduced on the fly (rows0, rows1 cover the other steps only).

    X as in :func:`csr_chain_apply`; bias: (K,) and alpha of data's dtype (real);
    labels: int32 (B,); values: (B,) of data's dtype. Returns whether X is finite (no NaN,
    no inf; checked on each tile as it is loaded), for callers that must refuse such input.
    Threads as in :func:`csr_chain_apply`.
    """
    x_rows = _flag(x_rows)
    B = X.shape[0] if x_rows is not None else X.shape[1]
    ntiles = -(-B // bt)
    bad = np.zeros(max(1, min(nthreads, ntiles)), dtype=np.int64)
    _on_threads(_argmin_tiles, (plan, indptr, indices, data, rows0, rows1, X, x_rows, bias, alpha, labels,
                                values, bt, bad), ntiles, nthreads)
    return not bad.any()


# ---- tiles of a fixed width: every inner loop has a compile-time trip count --------------------

@functools.lru_cache(maxsize=None)
def argmin_fixed(bt: int):
    """:func:`csr_chain_argmin` compiled for tiles of exactly ``bt`` samples (``bt`` a
    compile-time constant: the row loops of the inlined steps are fully known, with no
    remainder loops; a last partial tile is zero-padded). Measured (one thread, K = 256,
    D = 784, splincol(3), float32, bt = 128): 0.85x the CPU time of the runtime-width kernel.
    Same arguments and result as :func:`csr_chain_argmin` without ``bt``."""
    BT = bt
    UBT = np.uint64(bt)

    @njit(nogil=True, cache=True, fastmath=_FASTMATH)
    def tiles(plan, indptr, indices, data, rows0, rows1, X, x_rows, bias, alpha, labels, values, bad,
              first, step):
        B = X.shape[0] if x_rows is not None else X.shape[1]
        N = X.shape[1] if x_rows is not None else X.shape[0]
        J = plan.shape[0]
        ntiles = (B + BT - 1) // BT
        buf0 = np.empty(rows0 * BT, dtype=data.dtype)
        buf1 = np.empty(max(rows1, 1) * BT, dtype=data.dtype)
        acc = np.empty(BT, dtype=data.dtype)
        bv = np.empty(BT, dtype=data.dtype)
        bi = np.empty(BT, dtype=np.int32)
        nb = 0
        for ti in range(first, ntiles, step):
            b0 = ti * BT
            nt = min(BT, B - b0)
            _load_tile(X, x_rows, b0, nt, buf0, BT)
            if not _tile_finite(buf0, N, BT, nt):
                nb += 1
            if nt < BT:  # the padding samples: zeros (finite, no denormals)
                for i in range(N):
                    for t in range(nt, BT):
                        buf0[i * BT + t] = 0
            res = buf0 if _run_steps(plan, indptr, indices, data, J - 1, buf0, buf1, UBT, UBT) == 0 else buf1
            _argmin_rows(indptr, indices, data, plan[J - 1, 2], plan[J - 1, 0], res, UBT, UBT, bias, alpha,
                         acc, bv, bi)
            for t in range(nt):
                labels[b0 + t] = bi[t]
                values[b0 + t] = bv[t]
        bad[first] = nb

    def kernel(plan, indptr, indices, data, rows0, rows1, X, x_rows, bias, alpha, labels, values, nthreads):
        x_rows = _flag(x_rows)
        B = X.shape[0] if x_rows is not None else X.shape[1]
        ntiles = -(-B // BT)
        bad = np.zeros(max(1, min(nthreads, ntiles)), dtype=np.int64)
        _on_threads(tiles, (plan, indptr, indices, data, rows0, rows1, X, x_rows, bias, alpha, labels, values,
                            bad), ntiles, nthreads)
        return not bad.any()

    return kernel


# ---- one sample at a time (tiny batches: no parallel region, no tiles, no row views) ---------

# One sample: short scalar reductions, without reassociation (a vectorised reduction with
# its set-up and remainder loop costs more than it saves on rows of 2-6 entries: 1.3x).
_SCALAR = {"contract"}


@njit(cache=True, fastmath=_SCALAR, inline="always")
def _vec_row(indptr, indices, data, r, src):
    acc = data.dtype.type(0)
    for p in range(indptr[r], indptr[r + 1]):
        acc += data[p] * src[indices[p]]
    return acc


@njit(cache=True, fastmath=_SCALAR)
def _vec_steps(plan, indptr, indices, data, nsteps, src, dst):
    for j in range(nsteps):
        p0 = plan[j, 2]
        for i in range(plan[j, 0]):
            dst[i] = _vec_row(indptr, indices, data, p0 + i, src)
        src, dst = dst, src
    return src


# reassociation only (no "nnan"/"ninf": the finiteness test below must see NaN and inf), so
# the Σ 0·x reduction vectorises
@njit(cache=True, fastmath={"reassoc"})
def _vec_load(X, x_rows, t, buf):
    """buf <- sample t of X; returns whether it is finite (Σ 0·x_i is 0, else NaN)."""
    z = X.dtype.type(0)
    if x_rows is not None:
        for i in range(X.shape[1]):
            v = X[t, i]
            buf[i] = v
            z += v * 0
    else:
        for i in range(X.shape[0]):
            v = X[i, t]
            buf[i] = v
            z += v * 0
    return z == 0


def csr_chain_apply_serial(plan, indptr, indices, data, rows0, rows1, X, x_rows, Y, y_rows):
    """:func:`csr_chain_apply`, one sample at a time on one thread (tiny batches)."""
    _apply_serial(plan, indptr, indices, data, rows0, rows1, X, _flag(x_rows), Y, _flag(y_rows))


@njit(cache=True, fastmath=_SCALAR)
def _apply_serial(plan, indptr, indices, data, rows0, rows1, X, x_rows, Y, y_rows):
    B = X.shape[0] if x_rows is not None else X.shape[1]
    M = Y.shape[1] if y_rows is not None else Y.shape[0]
    b0 = np.empty(max(rows0, rows1, 1), dtype=Y.dtype)
    b1 = np.empty(max(rows0, rows1, 1), dtype=Y.dtype)
    for t in range(B):
        _vec_load(X, x_rows, t, b0)
        res = _vec_steps(plan, indptr, indices, data, plan.shape[0], b0, b1)
        for i in range(M):
            if y_rows is not None:
                Y[t, i] = res[i]
            else:
                Y[i, t] = res[i]


def csr_chain_argmin_serial(plan, indptr, indices, data, rows0, rows1, X, x_rows, bias, alpha, labels,
                            values):
    """:func:`csr_chain_argmin`, one sample at a time on one thread (tiny batches). Returns
    whether X is finite (no NaN, no inf): a free by-product of the load, for callers that
    must refuse such input."""
    return _argmin_serial(plan, indptr, indices, data, rows0, rows1, X, _flag(x_rows), bias, alpha, labels,
                          values)


@njit(cache=True, fastmath=_SCALAR)
def _argmin_serial(plan, indptr, indices, data, rows0, rows1, X, x_rows, bias, alpha, labels, values):
    B = X.shape[0] if x_rows is not None else X.shape[1]
    J = plan.shape[0]
    K = plan[J - 1, 0]
    p0 = plan[J - 1, 2]
    b0 = np.empty(max(rows0, rows1, 1), dtype=data.dtype)
    b1 = np.empty(max(rows0, rows1, 1), dtype=data.dtype)
    finite = True
    for t in range(B):
        finite &= _vec_load(X, x_rows, t, b0)
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
    return finite
