"""Numba (CPU) kernels: the fused Kronecker-sparse chain apply, the top-k masks and
projections of the sparsity constraints (``topk_rows_cols_mask``, ``topk_project``) and a
small-matrix power iteration (``power_norm2_small``) for PALM4MSA.

``ks_chain_apply`` applies J Kronecker-sparse (KS) factors to a batch in **one pass over
memory**: the batch is cut into tiles of ``bt`` samples; a tile is copied into a
thread-local buffer laid out (rows, bt) so that every factor is a run of scalar×vector
FMAs on contiguous bt-long rows, all J factors are applied while the tile sits in L1/L2,
and the result is written out once. Tiles run in parallel (``prange``).

Plans (see :func:`gpufact._kernels.plan.make_plan`) are int64 arrays of steps
``(kind, a, b, c, d, off)``:

* kind 0: generic KS factor (a, b, c, d), blocks (a, d, b, c) at ``w[off:]`` (ping-pong);
* kind 1: butterfly factor (b = c = 2), a specialised loop.

(A fused radix-4 step, two butterfly factors per pass, was measured slower here: Numba's
loops over 8 rows lose vectorisation to alias checks.)

Time O(B * sum_j nnz_j); extra memory 2 * max_dim * bt per thread (``tile_width``), at most
~2 * max_dim * B. Works on column batches (X of shape (N, B)) and on row-major samples (X of
shape (B, N): the ``X @ F.T`` case) without a transposed copy of the data: row-major tiles
are transposed into the tile buffer and back while in cache, 8 x 8 blocks at a time as LLVM
vector shuffles (``_transpose8``), so both layouts run at the same speed. Complex tiles are
held planar (``ks_chain_apply_planar``: real parts, then imaginary parts, per tile row), so
complex multiply-adds are real vector FMAs.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core.extending import intrinsic

TILE_BYTES = 512  # bytes per tile row, column batches: 128 float32 samples (best at N = 4096)
TILE_ROWS_SAMPLES = 64  # row-major samples: tiles beyond TILE_ROWS_BYTES (L2-sized) keep 64
TILE_ROWS_BYTES = 256 << 10  # samples at most (N = 1024-16384 float32: 1.1-1.4x faster)
TILE_MAX_BYTES = 4 << 20  # one tile buffer at most: N = 16384 float32 -> 64 samples (1.3-1.4x)


def tile_width(maxdim: int, itemsize: int, B: int, threads: int, rows: bool) -> int:
    """Samples per tile of :func:`ks_chain_apply`: TILE_BYTES per tile row; when either side
    is row-major, a tile larger than TILE_ROWS_BYTES keeps at most TILE_ROWS_SAMPLES (the
    transposes move 8-sample strips across all rows of the tile); each of the two tile
    buffers at most TILE_MAX_BYTES (but >= 8 samples, the transposes' vector width); and no
    wider than an even share of the batch, so that the per-thread tiles (2·maxdim·bt each)
    add up to ~2·maxdim·B at most."""
    bt = TILE_BYTES // itemsize
    if rows:
        bt = min(bt, max(TILE_ROWS_SAMPLES, TILE_ROWS_BYTES // (maxdim * itemsize)))
    bt = min(bt, max(8, TILE_MAX_BYTES // (maxdim * itemsize)))
    return max(1, min(bt, -(-B // threads)))


_FASTMATH = {"contract", "reassoc", "nsz", "arcp"}

# Rows of a tile are 1-D slices ``buf[i*bt:(i+1)*bt]``: loops over a slice with a runtime
# length vectorise (LLVM adds the alias checks); computed signed indices into one flat
# buffer do not (Numba's negative-index wraparound blocks the vectoriser).


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _row(buf, i, bt):
    return buf[i * bt:(i + 1) * bt]


@njit(cache=True, fastmath=_FASTMATH)
def _generic_step(w, off, a, b, c, d, src, dst, bt):
    for al in range(a):
        for de in range(d):
            base = off + (al * d + de) * b * c
            for r in range(b):
                y = _row(dst, al * b * d + r * d + de, bt)
                w0 = w[base + r * c]
                x = _row(src, al * c * d + de, bt)
                for t in range(bt):
                    y[t] = w0 * x[t]
                for s in range(1, c):
                    ws = w[base + r * c + s]
                    x = _row(src, al * c * d + s * d + de, bt)
                    for t in range(bt):
                        y[t] += ws * x[t]


# 8 x 8 block transpose as LLVM vector shuffles (Numba leaves a scalar transpose scalar:
# 64 single-element loads and stores). Rows move as raw 8·itemsize-bit lanes, so one network
# serves every dtype; the backend lowers it to the target's unpack/permute instructions.
_LO, _HI = (0, 8, 1, 9, 4, 12, 5, 13), (2, 10, 3, 11, 6, 14, 7, 15)  # interleave pairs of rows
_SLO, _SHI = (0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15)  # then pairs of pairs
_PLO, _PHI = (0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)  # then halves


@intrinsic
def _transpose8(typingctx, src, so, ss, dst, do, ds):
    """dst[do + i*ds + k] = src[so + k*ss + i] for i, k < 8: 1-D contiguous arrays of one
    dtype, offsets and strides in elements (no bounds checks: the callers' loops guarantee)."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array) and src.dtype == dst.dtype
            and src.ndim == 1 and dst.ndim == 1):
        return None
    sig = types.void(src, so, ss, dst, do, ds)

    def codegen(context, builder, signature, args):
        nbytes = context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))
        vty = ir.VectorType(ir.IntType(8 * nbytes), 8)
        mask_ty = ir.VectorType(ir.IntType(32), 8)
        vals = {i: context.cast(builder, args[i], signature.args[i], types.intp) for i in (1, 2, 4, 5)}

        def row_ptr(k, arr, off, stride):
            data = context.make_array(signature.args[arr])(context, builder, args[arr]).data
            idx = builder.add(vals[off], builder.mul(vals[stride], ir.Constant(vals[stride].type, k)))
            return builder.bitcast(builder.gep(data, [idx]), vty.as_pointer())

        def shuf(a, b, m):
            return builder.shuffle_vector(a, b, ir.Constant(mask_ty, list(m)))

        r = [builder.load(row_ptr(k, 0, 1, 2), align=nbytes) for k in range(8)]
        t = [shuf(r[p - p % 2], r[p - p % 2 + 1], _HI if p % 2 else _LO) for p in range(8)]
        u = [shuf(t[a], t[b], m) for a, b in ((0, 2), (1, 3), (4, 6), (5, 7)) for m in (_SLO, _SHI)]
        out = [shuf(u[j], u[j + 4], _PLO) for j in range(4)] + [shuf(u[j], u[j + 4], _PHI) for j in range(4)]
        for i in range(8):
            builder.store(out[i], row_ptr(i, 3, 4, 5), align=nbytes)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def _load_rows(X, b0, nt, buf, bt):
    """buf[i*bt + t] = X[b0 + t, i]: 8 x 8 vector transposes, walking along 8 rows of X."""
    N = X.shape[1]
    n8 = N - N % 8
    t8 = nt - nt % 8
    x = X.reshape(-1)
    for t0 in range(0, t8, 8):
        for i0 in range(0, n8, 8):
            _transpose8(x, (b0 + t0) * N + i0, N, buf, i0 * bt + t0, bt)
    for t in range(t8, nt):
        for i in range(n8):
            buf[i * bt + t] = X[b0 + t, i]
    for i in range(n8, N):
        for t in range(nt):
            buf[i * bt + t] = X[b0 + t, i]


@njit(cache=True)
def _copy_cols(A, b0, buf, n, nt, bt, into_buf):
    """Column batches: the first n rows of A[:, b0:b0+nt] <-> buf rows (i*bt, nt long)."""
    for i in range(n):
        ar = A[i, b0:b0 + nt]
        br = buf[i * bt:i * bt + nt]
        if into_buf:
            for t in range(nt):
                br[t] = ar[t]
        else:
            for t in range(nt):
                ar[t] = br[t]


@njit(cache=True)
def _store_rows(buf, bt, Y, b0, nt):
    """Y[b0 + t, i] = buf[i*bt + t]: the inverse of :func:`_load_rows`."""
    M = Y.shape[1]
    m8 = M - M % 8
    t8 = nt - nt % 8
    y = Y.reshape(-1)
    for i0 in range(0, m8, 8):
        for t0 in range(0, t8, 8):
            _transpose8(buf, i0 * bt + t0, bt, y, (b0 + t0) * M + i0, M)
    for t in range(t8, nt):
        for i in range(m8):
            Y[b0 + t, i] = buf[i * bt + t]
    for i in range(m8, M):
        for t in range(nt):
            Y[b0 + t, i] = buf[i * bt + t]


@njit(cache=True, fastmath=_FASTMATH, inline="always")
def _pair(w00, w01, w10, w11, x0, x1, y0, y1, bt):
    """(y0, y1) <- [[w00, w01], [w10, w11]] (x0, x1) on rows of length bt."""
    for t in range(bt):
        u = x0[t]
        v = x1[t]
        y0[t] = w00 * u + w01 * v
        y1[t] = w10 * u + w11 * v


@njit(cache=True, fastmath=_FASTMATH)
def _radix2_step(w, off, a, d, src, dst, bt):
    for al in range(a):
        for de in range(d):
            k = off + (al * d + de) * 4
            w00 = w[k]
            w01 = w[k + 1]
            w10 = w[k + 2]
            w11 = w[k + 3]
            i0 = al * 2 * d + de
            x0 = _row(src, i0, bt)
            x1 = _row(src, i0 + d, bt)
            _pair(w00, w01, w10, w11, x0, x1, _row(dst, i0, bt), _row(dst, i0 + d, bt), bt)


@njit(cache=True, fastmath=_FASTMATH)
def _run_plan(w, plan, buf0, buf1, bt):
    """Run all steps on the tile held in ``buf0``; returns 0 or 1, the buffer with the result."""
    cur = 0
    for j in range(plan.shape[0]):
        kind = plan[j, 0]
        a = plan[j, 1]
        d = plan[j, 4]
        src = buf0 if cur == 0 else buf1
        dst = buf1 if cur == 0 else buf0
        if kind == 1:
            _radix2_step(w, plan[j, 5], a, d, src, dst, bt)
        else:
            _generic_step(w, plan[j, 5], a, plan[j, 2], plan[j, 3], d, src, dst, bt)
        cur = 1 - cur
    return cur


@njit(cache=True, inline="always")
def _batch_dims(X, x_rows, Y, y_rows):
    """(N input rows, B samples, M output rows) of the batch views X and Y."""
    if x_rows:
        return X.shape[1], X.shape[0], (Y.shape[1] if y_rows else Y.shape[0])
    return X.shape[0], X.shape[1], (Y.shape[1] if y_rows else Y.shape[0])


@njit(cache=True, fastmath=_FASTMATH)
def _apply_tile(w, plan, maxdim, X, x_rows, Y, y_rows, bt, ti):
    """Apply the plan to tile ``ti`` (samples ti*bt ... ti*bt + bt - 1)."""
    N, B, M = _batch_dims(X, x_rows, Y, y_rows)
    b0 = ti * bt
    nt = min(bt, B - b0)
    buf0 = np.zeros(maxdim * bt, dtype=Y.dtype)
    buf1 = np.empty(maxdim * bt, dtype=Y.dtype)
    if x_rows:
        _load_rows(X, b0, nt, buf0, bt)
    else:
        _copy_cols(X, b0, buf0, N, nt, bt, True)
    res = buf0 if _run_plan(w, plan, buf0, buf1, bt) == 0 else buf1
    if y_rows:
        _store_rows(res, bt, Y, b0, nt)
    else:
        _copy_cols(Y, b0, res, M, nt, bt, False)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def ks_chain_apply(w, plan, maxdim, X, x_rows, Y, y_rows, bt):
    """Y <- (chain of KS factors) X, tiles of ``bt`` samples in parallel.

    w : 1-D weights (every factor's blocks (a, d, b, c), concatenated), dtype of Y.
    plan : int64 (S, 6) steps, see the module docstring.  maxdim : largest row count.
    X : C-contiguous, (B, N) if ``x_rows`` else (N, B); Y : (B, M) if ``y_rows`` else (M, B).
    """
    B = X.shape[0] if x_rows else X.shape[1]
    for ti in prange((B + bt - 1) // bt):
        _apply_tile(w, plan, maxdim, X, x_rows, Y, y_rows, bt, ti)


# ---- complex tiles held planar -------------------------------------------------------------
# Numba's complex arithmetic on interleaved (re, im) rows vectorises poorly (shuffles around
# every product); a tile row of bt complex samples is held as bt real parts then bt imaginary
# parts in a real buffer, and every complex multiply-add becomes four real vector FMAs:
# 4.2x faster per butterfly level (complex64, N = 4096, 64 samples). Weights are split into
# real and imaginary arrays once (KSChain.weights_planar).


@njit(cache=True)
def _split_row(row, tmp, bt):
    """In place: bt interleaved complex values (2·bt reals) -> bt real parts, bt imaginary."""
    for t in range(bt):
        tmp[t] = row[2 * t + 1]
    for t in range(bt):  # row[t] <- row[2t]: index 2t >= t is read before it is written
        row[t] = row[2 * t]
    for t in range(bt):
        row[bt + t] = tmp[t]


@njit(cache=True)
def _merge_row(row, tmp, bt):
    """In place: the inverse of :func:`_split_row`."""
    for t in range(bt):
        tmp[t] = row[bt + t]
    for t in range(bt - 1, -1, -1):  # row[2t] <- row[t], downwards: row[t] is still unwritten
        row[2 * t] = row[t]
    for t in range(bt):
        row[2 * t + 1] = tmp[t]


@njit(cache=True)
def _copy_cols_planar(A, b0, buf, n, nt, bt, into_buf):
    """Column batches: the first n rows of complex A[:, b0:b0+nt] <-> planar buffer rows."""
    for i in range(n):
        ar = A[i, b0:b0 + nt]
        re = buf[2 * i * bt:2 * i * bt + nt]
        im = buf[(2 * i + 1) * bt:(2 * i + 1) * bt + nt]
        if into_buf:
            for t in range(nt):
                re[t] = ar[t].real
                im[t] = ar[t].imag
        else:
            for t in range(nt):
                ar[t] = complex(re[t], im[t])


@njit(cache=True, fastmath=_FASTMATH)
def _radix2_step_planar(wr, wi, off, a, d, src, dst, bt):
    for al in range(a):
        for de in range(d):
            k = off + (al * d + de) * 4
            a00, a01, a10, a11 = wr[k], wr[k + 1], wr[k + 2], wr[k + 3]
            b00, b01, b10, b11 = wi[k], wi[k + 1], wi[k + 2], wi[k + 3]
            i0 = al * 2 * d + de
            x0 = _row(src, i0, 2 * bt)
            x1 = _row(src, i0 + d, 2 * bt)
            y0 = _row(dst, i0, 2 * bt)
            y1 = _row(dst, i0 + d, 2 * bt)
            for t in range(bt):
                ur = x0[t]
                ui = x0[bt + t]
                vr = x1[t]
                vi = x1[bt + t]
                y0[t] = a00 * ur - b00 * ui + a01 * vr - b01 * vi
                y0[bt + t] = a00 * ui + b00 * ur + a01 * vi + b01 * vr
                y1[t] = a10 * ur - b10 * ui + a11 * vr - b11 * vi
                y1[bt + t] = a10 * ui + b10 * ur + a11 * vi + b11 * vr


@njit(cache=True, fastmath=_FASTMATH)
def _generic_step_planar(wr, wi, off, a, b, c, d, src, dst, bt):
    for al in range(a):
        for de in range(d):
            base = off + (al * d + de) * b * c
            for r in range(b):
                y = _row(dst, al * b * d + r * d + de, 2 * bt)
                ar = wr[base + r * c]
                ai = wi[base + r * c]
                x = _row(src, al * c * d + de, 2 * bt)
                for t in range(bt):
                    y[t] = ar * x[t] - ai * x[bt + t]
                    y[bt + t] = ar * x[bt + t] + ai * x[t]
                for s_ in range(1, c):
                    ar = wr[base + r * c + s_]
                    ai = wi[base + r * c + s_]
                    x = _row(src, al * c * d + s_ * d + de, 2 * bt)
                    for t in range(bt):
                        y[t] += ar * x[t] - ai * x[bt + t]
                        y[bt + t] += ar * x[bt + t] + ai * x[t]


@njit(cache=True, fastmath=_FASTMATH)
def _apply_tile_planar(wr, wi, plan, maxdim, X, x_rows, Y, y_rows, bt, ti):
    """:func:`_apply_tile` for complex data: the tile planar in real buffers (2·bt per row)."""
    N, B, M = _batch_dims(X, x_rows, Y, y_rows)
    b0 = ti * bt
    nt = min(bt, B - b0)
    buf0 = np.zeros(maxdim * 2 * bt, dtype=wr.dtype)
    buf1 = np.empty(maxdim * 2 * bt, dtype=wr.dtype)
    tmp = np.empty(bt, dtype=wr.dtype)
    if x_rows:  # transpose as complex (rows of bt complex = 2·bt reals), then split each row
        _load_rows(X, b0, nt, buf0.view(X.dtype), bt)
        for i in range(N):
            _split_row(_row(buf0, i, 2 * bt), tmp, bt)
    else:
        _copy_cols_planar(X, b0, buf0, N, nt, bt, True)
    cur = 0
    for j in range(plan.shape[0]):
        src = buf0 if cur == 0 else buf1
        dst = buf1 if cur == 0 else buf0
        if plan[j, 0] == 1:
            _radix2_step_planar(wr, wi, plan[j, 5], plan[j, 1], plan[j, 4], src, dst, bt)
        else:
            _generic_step_planar(wr, wi, plan[j, 5], plan[j, 1], plan[j, 2], plan[j, 3], plan[j, 4],
                                 src, dst, bt)
        cur = 1 - cur
    res = buf0 if cur == 0 else buf1
    if y_rows:
        for i in range(M):
            _merge_row(_row(res, i, 2 * bt), tmp, bt)
        _store_rows(res.view(Y.dtype), bt, Y, b0, nt)
    else:
        _copy_cols_planar(Y, b0, res, M, nt, bt, False)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def ks_chain_apply_planar(wr, wi, plan, maxdim, X, x_rows, Y, y_rows, bt):
    """:func:`ks_chain_apply` for complex X, Y: weights given as real and imaginary parts
    (``wr``, ``wi``: real arrays of the complex weights' precision); same tiles, same extra
    memory (a tile row of bt complex values is 2·bt reals)."""
    B = X.shape[0] if x_rows else X.shape[1]
    for ti in prange((B + bt - 1) // bt):
        _apply_tile_planar(wr, wi, plan, maxdim, X, x_rows, Y, y_rows, bt, ti)


@njit(cache=True, fastmath=_FASTMATH)
def _radix2_vector(w, off, a, d, src, dst):
    """One butterfly factor on one vector: for each of the a blocks, the rows i and i + d as
    1-D views (vectorised along the block, the weights read at stride 4; 2x faster than
    indexing the flat buffers)."""
    for al in range(a):
        base = al * 2 * d
        x0 = src[base:base + d]
        x1 = src[base + d:base + 2 * d]
        y0 = dst[base:base + d]
        y1 = dst[base + d:base + 2 * d]
        wk = w[off + al * d * 4:off + (al + 1) * d * 4]
        for t in range(d):
            u = x0[t]
            v = x1[t]
            y0[t] = wk[4 * t] * u + wk[4 * t + 1] * v
            y1[t] = wk[4 * t + 2] * u + wk[4 * t + 3] * v


@njit(cache=True, fastmath=_FASTMATH)
def _run_plan_vector(w, plan, src, dst):
    """Apply the plan to one vector held in ``src`` (no tiles: for tiny batches the per-row
    view overhead of the tiled path dominates). Returns the result buffer."""
    for j in range(plan.shape[0]):
        kind, a, b, c, d, off = plan[j, 0], plan[j, 1], plan[j, 2], plan[j, 3], plan[j, 4], plan[j, 5]
        if kind == 1:
            _radix2_vector(w, off, a, d, src, dst)
        else:
            for al in range(a):
                for de in range(d):
                    kb = off + (al * d + de) * b * c
                    for r in range(b):
                        acc = w[kb + r * c] * src[al * c * d + de]
                        for s_ in range(1, c):
                            acc += w[kb + r * c + s_] * src[al * c * d + s_ * d + de]
                        dst[al * b * d + r * d + de] = acc
        src, dst = dst, src
    return src


@njit(cache=True, fastmath=_FASTMATH)
def ks_chain_apply_serial(w, plan, maxdim, X, x_rows, Y, y_rows):
    """Same result as :func:`ks_chain_apply`, one sample at a time on one thread: the path
    for tiny batches (no parallel region, no tiles)."""
    N, B, M = _batch_dims(X, x_rows, Y, y_rows)
    b0 = np.empty(maxdim, dtype=Y.dtype)
    b1 = np.empty(maxdim, dtype=Y.dtype)
    for t in range(B):
        for i in range(N):
            b0[i] = X[t, i] if x_rows else X[i, t]
        res = _run_plan_vector(w, plan, b0, b1)
        for i in range(M):
            if y_rows:
                Y[t, i] = res[i]
            else:
                Y[i, t] = res[i]


# ---- permutation factors ---------------------------------------------------------------------

@njit(parallel=True, cache=True)
def permute_rows(X, perm, out):
    """Column batch: out[i, :] = X[perm[i], :] (C-contiguous (N, B) arrays; rows in parallel)."""
    for i in prange(perm.shape[0]):
        src = X[perm[i]]
        dst = out[i]
        for t in range(src.shape[0]):
            dst[t] = src[t]


@njit(parallel=True, cache=True)
def permute_within_rows(X, perm, out):
    """Row-major samples: out[t, i] = X[t, perm[i]] (C-contiguous (B, N); samples in parallel,
    each gather within one cache-resident row: 2-2.5x NumPy's take)."""
    for t in prange(X.shape[0]):
        src = X[t]
        dst = out[t]
        for i in range(perm.shape[0]):
            dst[i] = src[perm[i]]


# ---- top-k supports of the sparsity projections ------------------------------------------
# Thresholds (the k-th largest magnitude of each row / column) then marks: entries above the
# threshold, then ties in index order until k are kept. Thresholds for k <= _SMALL_K come from
# an insertion buffer (one predictable comparison per entry), above from np.partition (NumPy's
# SIMD introselect: ~1 ns per entry whatever k; a heap or quickselect in Numba measured 2-3x
# slower, branch mispredictions). Matrices up to _FUSED_MAX entries take one fused Numba call.
_SMALL_K = 8
_FUSED_MAX = 1 << 12


@njit(cache=True)
def _sift_down(heap, r, size):
    """Restore the min-heap property below position r of heap[:size]."""
    v = heap[r]
    while True:
        c = 2 * r + 1
        if c >= size:
            break
        if c + 1 < size and heap[c + 1] < heap[c]:
            c += 1
        if not heap[c] < v:
            break
        heap[r] = heap[c]
        r = c
    heap[r] = v


@njit(cache=True)
def _kth_largest(row, kk, buf):
    """The kk-th largest entry of row (1 <= kk <= len(row)); buf: scratch of length >= kk.
    kk <= _SMALL_K: ascending insertion buffer; above: min-heap. O(n log kk) worst case."""
    n = row.shape[0]
    best = buf[:kk]
    if kk <= _SMALL_K:
        for j in range(kk):
            v = row[j]
            p = j
            while p > 0 and best[p - 1] > v:
                best[p] = best[p - 1]
                p -= 1
            best[p] = v
        for j in range(kk, n):
            v = row[j]
            if v > best[0]:
                p = 0
                while p + 1 < kk and best[p + 1] < v:
                    best[p] = best[p + 1]
                    p += 1
                best[p] = v
        return best[0]
    for j in range(kk):
        best[j] = row[j]
    for r in range(kk // 2 - 1, -1, -1):
        _sift_down(best, r, kk)
    for j in range(kk, n):
        v = row[j]
        if v > best[0]:
            best[0] = v
            _sift_down(best, 0, kk)
    return best[0]


@njit(cache=True)
def _mark_row(row, thr, kk, out):
    """out[j] = 1 for the kk largest row[j] given the kk-th largest value thr (ties: smaller j)."""
    n = row.shape[0]
    cnt = 0
    for j in range(n):
        if row[j] > thr:
            out[j] = 1
            cnt += 1
    for j in range(n):
        if cnt >= kk:
            break
        if row[j] == thr:
            out[j] = 1
            cnt += 1


@njit(cache=True)
def _kth_rows_small(mag, kk, thr):
    buf = np.empty(kk, dtype=mag.dtype)
    for i in range(mag.shape[0]):
        thr[i] = _kth_largest(mag[i], kk, buf)


@njit(cache=True)
def _kth_cols_small(mag, kk, thr):
    """Per-column kk-th largest (kk <= _SMALL_K) in one row-major pass: one ascending
    insertion buffer per column."""
    m, n = mag.shape
    best = np.empty((kk, n), dtype=mag.dtype)
    for i in range(kk):
        for j in range(n):
            v = mag[i, j]
            p = i
            while p > 0 and best[p - 1, j] > v:
                best[p, j] = best[p - 1, j]
                p -= 1
            best[p, j] = v
    for i in range(kk, m):
        for j in range(n):
            v = mag[i, j]
            if v > best[0, j]:
                p = 0
                while p + 1 < kk and best[p + 1, j] < v:
                    best[p, j] = best[p + 1, j]
                    p += 1
                best[p, j] = v
    for j in range(n):
        thr[j] = best[0, j]


@njit(cache=True)
def _mark_rows(mag, thr, kk, mask):
    for i in range(mag.shape[0]):
        _mark_row(mag[i], thr[i], kk, mask[i])


@njit(cache=True)
def _mark_cols(mag, thr, kk, mask):
    """Column marks in two row-major passes (per-column counters): ties to smaller rows."""
    m, n = mag.shape
    cnt = np.zeros(n, dtype=np.int64)
    for i in range(m):
        for j in range(n):
            if mag[i, j] > thr[j]:
                mask[i, j] = 1
                cnt[j] += 1
    for i in range(m):
        for j in range(n):
            if cnt[j] < kk and mag[i, j] == thr[j]:
                mask[i, j] = 1
                cnt[j] += 1


@njit(cache=True)
def _abs(M):
    """|M| as a new C-contiguous array (real dtype)."""
    return np.abs(np.ascontiguousarray(M))


@njit(cache=True)
def _abs_transposed(M, out):
    """out = |M|ᵀ (C-contiguous out). Strips of 8 rows: a power-of-two row stride otherwise
    thrashes the cache sets (np.abs(M.T, order="C") measured 2x slower at 256 x 256)."""
    m, n = M.shape
    for i0 in range(0, m, 8):
        i1 = min(i0 + 8, m)
        for j in range(n):
            for i in range(i0, i1):
                out[j, i] = abs(M[i, j])


@njit(cache=True)
def _topk_mask_fused(M, kr, kc, mask):
    """mask |= top-kr per row and top-kc per column of |M| (0: none), all in one call."""
    mag = np.abs(M)
    m, n = mag.shape
    buf = np.empty(max(m, n), dtype=mag.dtype)
    if kr > 0:
        for i in range(m):
            _mark_row(mag[i], _kth_largest(mag[i], kr, buf), kr, mask[i])
    if kc > 0:
        col = np.empty(m, dtype=mag.dtype)
        cmask = np.empty(m, dtype=np.uint8)
        for j in range(n):
            for i in range(m):
                col[i] = mag[i, j]
                cmask[i] = 0
            _mark_row(col, _kth_largest(col, kc, buf), kc, cmask)
            for i in range(m):
                if cmask[i]:
                    mask[i, j] = 1


@njit(cache=True)
def _topk_mask_small_k(M, kr, kc, mask):
    """Same result as _topk_mask_fused for kr, kc <= _SMALL_K, in row-major passes only
    (cache-friendly at any size): row thresholds and marks, then column thresholds (one
    insertion buffer per column) and marks."""
    mag = np.abs(M)
    m, n = mag.shape
    if kr > 0:
        thr_r = np.empty(m, dtype=mag.dtype)
        _kth_rows_small(mag, kr, thr_r)
        _mark_rows(mag, thr_r, kr, mask)
    if kc > 0:
        thr_c = np.empty(n, dtype=mag.dtype)
        _kth_cols_small(mag, kc, thr_c)
        _mark_cols(mag, thr_c, kc, mask)


@njit(cache=True)
def _topk_project_fused(M, kr, kc, normalized, tiny):
    m, n = M.shape
    mask = np.zeros((m, n), dtype=np.uint8)
    if m * n <= _FUSED_MAX:
        _topk_mask_fused(M, kr, kc, mask)
    else:
        _topk_mask_small_k(M, kr, kc, mask)
    out = np.zeros((m, n), dtype=M.dtype)
    s2 = 0.0
    for i in range(m):
        for j in range(n):
            if mask[i, j]:
                v = M[i, j]
                out[i, j] = v
                s2 += abs(v) ** 2
    if normalized:
        inv = 1.0 / (np.sqrt(s2) + tiny)
        for i in range(m):
            for j in range(n):
                out[i, j] = out[i, j] * inv
    return out


_TINY = {np.dtype(t).char: float(np.finfo(t).tiny) for t in (np.float32, np.float64, np.complex64, np.complex128)}


def _clip_k(shape, k_row, k_col):
    m, n = shape
    return min(int(k_row), n), min(int(k_col), m)


def topk_rows_cols_mask(M, k_row, k_col):
    """Boolean mask: the k_row largest |M[i, :]| of each row united with the k_col largest
    |M[:, j]| of each column (0 = none; ties to the smaller index). M: (m, n) NumPy, real
    or complex, any strides. O(m n) time, O(m n) extra memory."""
    m, n = M.shape
    kr, kc = _clip_k(M.shape, k_row, k_col)
    if (kr >= n and kr > 0) or (kc >= m and kc > 0):
        return np.ones((m, n), dtype=bool)
    mask = np.zeros((m, n), dtype=np.uint8)
    if m == 0 or n == 0 or (kr == 0 and kc == 0):
        return mask.view(bool)
    if m * n <= _FUSED_MAX:
        _topk_mask_fused(M, kr, kc, mask)
        return mask.view(bool)
    if kr <= _SMALL_K and kc <= _SMALL_K:
        _topk_mask_small_k(M, kr, kc, mask)
        return mask.view(bool)
    mag = _abs(M)  # Numba's abs, like _abs_transposed: equal magnitudes compare equal
    if kr > 0:
        if kr <= _SMALL_K:
            thr = np.empty(m, dtype=mag.dtype)
            _kth_rows_small(mag, kr, thr)
        else:
            thr = np.ascontiguousarray(np.partition(mag, n - kr, axis=1)[:, n - kr])
        _mark_rows(mag, thr, kr, mask)
    if kc > 0:
        if kc <= _SMALL_K:
            thr = np.empty(n, dtype=mag.dtype)
            _kth_cols_small(mag, kc, thr)
        else:  # along rows of |M|ᵀ: partition along axis 0 measured 4x slower
            magT = np.empty((n, m), dtype=mag.dtype)
            _abs_transposed(M, magT)
            magT.partition(m - kc, axis=1)  # in place: magT is scratch
            thr = np.ascontiguousarray(magT[:, m - kc])
        _mark_cols(mag, thr, kc, mask)
    return mask.view(bool)


def topk_project(M, k_row, k_col, normalized):
    """M restricted to :func:`topk_rows_cols_mask` (a new C-contiguous array of M's dtype),
    scaled to unit Frobenius norm if ``normalized`` (zero stays zero)."""
    m, n = M.shape
    kr, kc = _clip_k(M.shape, k_row, k_col)
    tiny = _TINY[M.dtype.char]
    full = (kr >= n and kr > 0) or (kc >= m and kc > 0)
    if not full and (m * n <= _FUSED_MAX or (kr <= _SMALL_K and kc <= _SMALL_K)):
        return _topk_project_fused(M, kr, kc, bool(normalized), tiny)
    out = np.where(topk_rows_cols_mask(M, kr, kc), M, 0).astype(M.dtype, copy=False)
    if normalized:
        flat = out.ravel()
        out /= np.sqrt(np.vdot(flat, flat).real) + tiny
    return out


@njit(cache=True)
def _dense_to_csr_arrays(M, index_dtype_sample):
    m, n = M.shape
    indptr = np.zeros(m + 1, dtype=index_dtype_sample.dtype)
    for i in range(m):
        c = 0
        for j in range(n):
            if M[i, j] != 0:
                c += 1
        indptr[i + 1] = indptr[i] + c
    nnz = indptr[m]
    data = np.empty(nnz, dtype=M.dtype)
    indices = np.empty(nnz, dtype=index_dtype_sample.dtype)
    for i in range(m):
        p = indptr[i]
        for j in range(n):
            v = M[i, j]
            if v != 0:
                data[p] = v
                indices[p] = j
                p += 1
    return data, indices, indptr


def dense_to_csr_arrays(M):
    """(data, indices, indptr) of the dense NumPy matrix M in CSR form: row-major order,
    sorted indices, no explicit zeros; int32 indices below 2^31 entries. Two passes, no
    index arrays of all nonzero positions (np.nonzero measured 4x slower at 512 x 512)."""
    sample = np.zeros(1, dtype=np.int32 if M.size < 2**31 else np.int64)
    return _dense_to_csr_arrays(M, sample)


@njit(cache=True)
def _power_norm2_loops(M, v, iters, tiny):
    m, n = M.shape
    u = np.zeros(m, dtype=M.dtype)
    w = np.zeros(n, dtype=M.dtype)
    vo = v.copy()
    s = 0.0
    for _ in range(iters):
        for i in range(m):
            u[i] = 0
            for j in range(n):
                u[i] += M[i, j] * vo[j]
        w[:] = 0
        for i in range(m):
            ui = u[i]
            for j in range(n):
                w[j] += np.conj(M[i, j]) * ui
        s2 = 0.0
        for j in range(n):
            s2 += abs(w[j]) ** 2
        s = np.sqrt(s2)
        inv = 1.0 / (s + tiny)
        for j in range(n):
            vo[j] = w[j] * inv
    return s, vo


def power_norm2_small(M, v, iters):
    """(‖MᴴM v‖ after ``iters`` power steps, last unit iterate) for a small dense NumPy M
    (m, n) and v (n,) of M's dtype: one Numba call instead of ~7 NumPy calls per step (PALM
    on small factors is bound by per-call costs). O(iters · m n); BLAS wins above ~2^12 entries."""
    return _power_norm2_loops(M, np.ascontiguousarray(v, dtype=M.dtype), int(iters), _TINY[M.dtype.char])
