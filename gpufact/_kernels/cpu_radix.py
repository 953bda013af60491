"""Radix-2^R butterfly groups in vector registers, for the fused CPU apply (:mod:`.cpu`).

R consecutive butterfly-like Kronecker-sparse factors (b = c = 2, same size, strides d that
nest: each larger d a multiple of twice the smaller, e.g. distinct powers of two) act on
closed groups of 2^R rows: the rows i0 + sum of a subset of the d's. One group pass loads
the 2^R rows once, applies the R factors (2 x 2 blocks) in registers, and stores the rows
once, in place: R factors cost one sweep of the tile instead of R (the tile of a large
transform lives in L2 or L3, where each sweep is bound by loads and stores).

The group is written as LLVM vector code (:func:`_bf_group`, :func:`_bf_group_planar`):
Numba's own loops over 2R rows lose vectorisation to runtime alias checks (LLVM gives up
past 8 pointer pairs), so the loads, 2 x 2 updates and stores of a vector of samples are
emitted directly, weights splat once per group before the loop over the tile row. Vectors
are VECTOR_BYTES wide (64 on AVX-512, else 32: the backend splits wider ones).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic

from .._cpuinfo import cache_sizes, vector_isa

VECTOR_BYTES = 64 if vector_isa() == "AVX-512" else 32
# vectors per row and loop trip, by radix: 2 at R = 1, 2 (every weight splat serves two
# vectors), 1 at R = 3 (8 rows fill AVX2's 16 registers)
_UNROLL = {1: 2, 2: 2, 3: 1}
MAX_RADIX_LOG2 = 3  # at most 8 rows per group (16 vector registers of AVX2 hold 8 rows)
_FLAGS = ("contract", "reassoc", "nsz", "arcp")


def lanes(itemsize: int) -> int:
    """Samples per vector of a real tile of ``itemsize``-byte floats."""
    return max(1, VECTOR_BYTES // itemsize)


def tile_width(maxdim: int, dtype, B: int, threads: int, rows: bool) -> int:
    """Samples per tile of :func:`ks_chain_apply_radix` for Y of ``dtype``. A tile row is L1d / 64 bytes (the core's L1 data
    cache, read at run time by :func:`gpufact._cpuinfo.cache_sizes`: 512 B = 128 float32 on
    a 32 KiB L1d, measured best at N = 1024 and 4096, the 2^R rows of a group pass and the
    next group's prefetched rows stay in L1); when either side is row-major, a tile larger
    than half the L2 keeps at most 64 samples (the transposes sweep 8-sample strips across
    all rows), as :func:`gpufact._kernels.cpu.tile_width`; the tile at most TILE_MAX_BYTES;
    no wider than an even share of the batch; and a whole number of vectors (the group
    passes have no scalar tail: a partial tile is padded with zeros)."""
    from .cpu import TILE_MAX_BYTES, TILE_ROWS_SAMPLES

    dtype = np.dtype(dtype)
    itemsize = dtype.itemsize
    caches = cache_sizes()
    bt = max(64, caches["L1d"] // 64) // itemsize
    if rows:
        bt = min(bt, max(TILE_ROWS_SAMPLES, caches["L2"] // 2 // (maxdim * itemsize)))
    bt = min(bt, max(8, TILE_MAX_BYTES // (maxdim * itemsize)))
    bt = min(bt, -(-B // threads))
    v = lanes(itemsize // 2 if dtype.kind == "c" else itemsize) * max(_UNROLL.values())
    return max(v, -(-bt // v) * v)


def _splat(builder, x, n):
    v = builder.insert_element(ir.Constant(ir.VectorType(x.type, n), ir.Undefined), x,
                               ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))


def _levels(R):
    """For level k = 0 .. R-1 (application order), the row pairs (r, r | 2^k) it updates,
    r ascending with bit k clear: the order of the group's weight blocks."""
    return [[(r, r | 1 << k) for r in range(1 << R) if not r >> k & 1] for k in range(R)]


def _group_codegen(planar):
    def codegen(context, builder, sig, args):
        if planar:
            buf, rows, half, wr, wi, wk, nv = args
            bty, _, _, wty, _, wkty, nvty = sig.args
        else:
            buf, rows, wr, wk, nv = args
            bty, _, wty, wkty, nvty = sig.args
        R = {2: 1, 4: 2, 8: 3}[sig.args[1].count]
        n = 1 << R
        data = context.make_array(bty)(context, builder, buf).data
        elt = data.type.pointee
        V = lanes(context.get_abi_sizeof(elt)) * _UNROLL[R]
        vty = ir.VectorType(elt, V)
        nv = builder.udiv(nv, ir.Constant(nv.type, V))
        offs = cgutils.unpack_tuple(builder, rows, n)
        wks = cgutils.unpack_tuple(builder, wk, R * n // 2)

        def weights(arr):
            p = context.make_array(wty)(context, builder, arr).data
            return [[_splat(builder, builder.load(builder.gep(p, [builder.add(k, ir.Constant(k.type, q))])), V)
                     for q in range(4)] for k in wks]

        W = weights(wr)
        Wi = weights(wi) if planar else None
        levels = _levels(R)
        with cgutils.for_range(builder, nv) as loop:
            t = builder.mul(loop.index, ir.Constant(loop.index.type, V))

            def ptr(off, extra=None):
                idx = builder.add(off, t)
                if extra is not None:
                    idx = builder.add(idx, extra)
                return builder.bitcast(builder.gep(data, [idx]), vty.as_pointer())

            re = [builder.load(ptr(o)) for o in offs]
            for ld in re:
                ld.align = context.get_abi_sizeof(elt)
            im = None
            if planar:
                im = [builder.load(ptr(o, half)) for o in offs]
                for ld in im:
                    ld.align = context.get_abi_sizeof(elt)
            fm, fa, fs = builder.fmul, builder.fadd, builder.fsub
            kb = 0
            for level in levels:
                for r, s in level:
                    w00, w01, w10, w11 = W[kb]
                    ur, vr = re[r], re[s]
                    if not planar:
                        re[r] = fa(fm(w00, ur, flags=_FLAGS), fm(w01, vr, flags=_FLAGS), flags=_FLAGS)
                        re[s] = fa(fm(w10, ur, flags=_FLAGS), fm(w11, vr, flags=_FLAGS), flags=_FLAGS)
                    else:
                        b00, b01, b10, b11 = Wi[kb]
                        ui, vi = im[r], im[s]

                        def cre(a, b, c, d):  # real part of (a + ib) u + (c + id) v
                            x = fs(fm(a, ur, flags=_FLAGS), fm(b, ui, flags=_FLAGS), flags=_FLAGS)
                            x = fa(x, fm(c, vr, flags=_FLAGS), flags=_FLAGS)
                            return fs(x, fm(d, vi, flags=_FLAGS), flags=_FLAGS)

                        def cim(a, b, c, d):
                            x = fa(fm(a, ui, flags=_FLAGS), fm(b, ur, flags=_FLAGS), flags=_FLAGS)
                            x = fa(x, fm(c, vi, flags=_FLAGS), flags=_FLAGS)
                            return fa(x, fm(d, vr, flags=_FLAGS), flags=_FLAGS)

                        re[r], im[r] = cre(w00, b00, w01, b01), cim(w00, b00, w01, b01)
                        re[s], im[s] = cre(w10, b10, w11, b11), cim(w10, b10, w11, b11)
                    kb += 1
            for j, o in enumerate(offs):
                st = builder.store(re[j], ptr(o))
                st.align = context.get_abi_sizeof(elt)
                if planar:
                    st = builder.store(im[j], ptr(o, half))
                    st.align = context.get_abi_sizeof(elt)
        return context.get_dummy_value()

    return codegen


def _ok(buf, rows, w, wk):
    return (isinstance(buf, types.Array) and buf.ndim == 1 and isinstance(buf.dtype, types.Float)
            and isinstance(w, types.Array) and w.ndim == 1 and w.dtype == buf.dtype
            and isinstance(rows, types.UniTuple) and rows.count in (2, 4, 8) and isinstance(rows.dtype, types.Integer)
            and isinstance(wk, types.UniTuple) and isinstance(wk.dtype, types.Integer)
            and wk.count == {2: 1, 4: 4, 8: 12}[rows.count])


@intrinsic
def _bf_group_any(typingctx, buf, rows, half, wr, wi, wk, nv):
    """:func:`_bf_group` when ``wi`` is None (``half`` unused), else :func:`_bf_group_planar`."""
    if isinstance(wi, types.NoneType):
        if not _ok(buf, rows, wr, wk):
            return None

        def codegen(context, builder, sig, args):
            b, r, _, w, _, k, n = args
            s = types.void(*(sig.args[i] for i in (0, 1, 3, 5, 6)))
            return _group_codegen(False)(context, builder, s, (b, r, w, k, n))
        return types.void(buf, rows, half, wr, wi, wk, nv), codegen
    if not (_ok(buf, rows, wr, wk) and isinstance(wi, types.Array) and wi.dtype == buf.dtype):
        return None
    return types.void(buf, rows, half, wr, wi, wk, nv), _group_codegen(True)


@intrinsic
def _bf_group(typingctx, buf, rows, w, wk, nv):
    """In place on a real tile ``buf`` (1-D): the 2^R rows starting at offsets ``rows``
    (UniTuple of 2, 4 or 8 element offsets; bit k of the row number = level k's partner),
    R levels in order, level k updating (r, r | 2^k) for r with bit k clear by the 2 x 2 block
    w[wk[m]: wk[m] + 4] (row-major), m running over levels then r ascending; ``nv`` vectors of
    :func:`lanes` samples per row. No bounds checks: the caller's loops guarantee them."""
    if not _ok(buf, rows, w, wk):
        return None
    return types.void(buf, rows, w, wk, nv), _group_codegen(False)


@intrinsic
def _bf_group_planar(typingctx, buf, rows, half, wr, wi, wk, nv):
    """:func:`_bf_group` on a planar complex tile: a row's real parts at its offset, its
    imaginary parts ``half`` elements further; complex weights as real parts ``wr`` and
    imaginary parts ``wi``. Complex multiply-adds are real vector FMAs."""
    if not (_ok(buf, rows, wr, wk) and isinstance(wi, types.Array) and wi.dtype == buf.dtype):
        return None
    return types.void(buf, rows, half, wr, wi, wk, nv), _group_codegen(True)


# ---- the fused chain in radix-2^R passes -------------------------------------------------------
# One kernel for real and planar complex tiles: the parts that differ are small functions
# typed per case (overloads on whether ``wi`` is None), inlined.

from numba import njit  # noqa: E402
from numba.core.extending import overload  # noqa: E402

from .cpu import (_FASTMATH, _cols_to_tile_planar, _flag, _has_generic, _load_rows,  # noqa: E402
                  _load_rows_planar_any, _on_threads, _store_rows, _store_rows_planar, _tile_to_cols_planar)


def _load_tile(X, x_rows, b0, nt, buf, bt, wi):
    """Tile rows <- samples b0 .. b0 + nt of X (real rows, or planar rows when ``wi`` is
    an array)."""
    raise NotImplementedError("compiled through its Numba overload")


@overload(_load_tile, jit_options={"cache": True}, inline="always")
def _load_tile_typed(X, x_rows, b0, nt, buf, bt, wi):
    if isinstance(wi, types.NoneType):
        def load_real(X, x_rows, b0, nt, buf, bt, wi):
            if x_rows is None:
                for i in range(X.shape[0]):
                    xr = X[i, b0:b0 + nt]
                    br = buf[i * bt:i * bt + nt]
                    for t in range(nt):
                        br[t] = xr[t]
            else:
                _load_rows(X, b0, nt, buf, bt)
        return load_real

    def load_planar(X, x_rows, b0, nt, buf, bt, wi):
        if x_rows is None:
            _cols_to_tile_planar(X, b0, buf, X.shape[0], nt, bt)
        else:
            _load_rows_planar_any(X, b0, nt, buf, bt)
    return load_planar


def _store_tile(buf, bt, Y, y_rows, b0, nt, wi):
    """Samples b0 .. b0 + nt of Y <- tile rows: the inverse of :func:`_load_tile`."""
    raise NotImplementedError("compiled through its Numba overload")


@overload(_store_tile, jit_options={"cache": True}, inline="always")
def _store_tile_typed(buf, bt, Y, y_rows, b0, nt, wi):
    if isinstance(wi, types.NoneType):
        def store_real(buf, bt, Y, y_rows, b0, nt, wi):
            if y_rows is None:
                for i in range(Y.shape[0]):
                    yr = Y[i, b0:b0 + nt]
                    br = buf[i * bt:i * bt + nt]
                    for t in range(nt):
                        yr[t] = br[t]
            else:
                _store_rows(buf, bt, Y, b0, nt)
        return store_real

    def store_planar(buf, bt, Y, y_rows, b0, nt, wi):
        if y_rows is None:
            _tile_to_cols_planar(buf, bt, Y, b0, Y.shape[0], nt)
        else:
            _store_rows_planar(buf, bt, Y, b0, nt)
    return store_planar


def _generic_step(wr, wi, off, a, b, c, d, src, dst, bt):
    """A generic KS factor (a, b, c, d), blocks (a, d, b, c) at ``off``, tile to tile."""
    raise NotImplementedError("compiled through its Numba overload")


@overload(_generic_step, jit_options={"cache": True, "fastmath": _FASTMATH})
def _generic_step_typed(wr, wi, off, a, b, c, d, src, dst, bt):
    if isinstance(wi, types.NoneType):
        def step_real(wr, wi, off, a, b, c, d, src, dst, bt):
            for al in range(a):
                for de in range(d):
                    base = off + (al * d + de) * b * c
                    for r in range(b):
                        i = (al * b * d + r * d + de) * bt
                        y = dst[i:i + bt]
                        w0 = wr[base + r * c]
                        i = (al * c * d + de) * bt
                        x = src[i:i + bt]
                        for t in range(bt):
                            y[t] = w0 * x[t]
                        for s in range(1, c):
                            ws = wr[base + r * c + s]
                            i = (al * c * d + s * d + de) * bt
                            x = src[i:i + bt]
                            for t in range(bt):
                                y[t] += ws * x[t]
        return step_real

    def step_planar(wr, wi, off, a, b, c, d, src, dst, bt):
        bt2 = 2 * bt
        for al in range(a):
            for de in range(d):
                base = off + (al * d + de) * b * c
                for r in range(b):
                    i = (al * b * d + r * d + de) * bt2
                    y = dst[i:i + bt2]
                    ar = wr[base + r * c]
                    ai = wi[base + r * c]
                    i = (al * c * d + de) * bt2
                    x = src[i:i + bt2]
                    for t in range(bt):
                        y[t] = ar * x[t] - ai * x[bt + t]
                        y[bt + t] = ar * x[bt + t] + ai * x[t]
                    for s in range(1, c):
                        ar = wr[base + r * c + s]
                        ai = wi[base + r * c + s]
                        i = (al * c * d + s * d + de) * bt2
                        x = src[i:i + bt2]
                        for t in range(bt):
                            y[t] += ar * x[t] - ai * x[bt + t]
                            y[bt + t] += ar * x[bt + t] + ai * x[t]
    return step_planar


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _chain_passes(wr, wi, plan, passes, maxdim, X, x_rows, Y, y_rows, generic, bt, first, step):
    """Tiles first, first + step, ... of :func:`ks_chain_apply_radix` on the calling thread.
    Real tiles when ``wi`` is None (weights ``wr``, dtype of Y), planar complex tiles
    otherwise (row i: bt real parts at 2i·bt, then bt imaginary parts; weights as real parts
    ``wr`` and imaginary parts ``wi``). Flags typed None or True as in
    :func:`gpufact._kernels.cpu._chain_tiles`: ``x_rows``, ``y_rows`` row-major samples;
    ``generic`` None when every pass is a butterfly pass (then one tile buffer: the passes
    run in place, and the generic step is not compiled).

    Passes (``plan.radix_passes``): R = 0, generic KS step tile to tile (ping-pong);
    R = 1, 2, 3, butterfly steps j .. j + R - 1 in place, by groups of 2^R rows
    (:func:`_bf_group_any`): R = 1 walks the blocks (al, de) (any stride d); R >= 2 inserts
    zero bits at the strides' positions into the group number g (power-of-two strides), and
    finds each 2 x 2 block by removing its level's bit from the row number."""
    B = X.shape[1] if x_rows is None else X.shape[0]
    N = X.shape[0] if x_rows is None else X.shape[1]
    nrow = 1 if wi is None else 2  # real rows per tile row
    rs = nrow * bt  # elements per tile row
    ntiles = (B + bt - 1) // bt
    buf0 = np.empty(maxdim * rs, dtype=wr.dtype)
    buf1 = buf0 if generic is None else np.empty(maxdim * rs, dtype=wr.dtype)
    for ti in range(first, ntiles, step):
        b0 = ti * bt
        nt = min(bt, B - b0)
        _load_tile(X, x_rows, b0, nt, buf0, bt, wi)
        if nt < bt:  # a reused buffer holds stale values, possibly slow denormals
            for i in range(nrow * N):
                for t in range(i * bt + nt, (i + 1) * bt):
                    buf0[t] = 0
        src, dst = buf0, buf1
        for p in range(passes.shape[0]):
            R, j = passes[p, 0], passes[p, 1]
            if R == 1:
                a, d, off = plan[j, 1], plan[j, 4], plan[j, 5]
                for al in range(a):
                    for de in range(d):
                        i0 = al * 2 * d + de
                        _bf_group_any(src, (i0 * rs, (i0 + d) * rs), bt, wr, wi, (off + 4 * (al * d + de),), bt)
            elif R == 2:
                n = 2 * plan[j, 1] * plan[j, 4]
                l0, l1 = _log2(plan[j, 4]), _log2(plan[j + 1, 4])
                o0, o1 = plan[j, 5], plan[j + 1, 5]
                d0, d1 = 1 << l0, 1 << l1
                for g in range(n >> 2):
                    i0 = _insert_zero(_insert_zero(g, min(l0, l1)), max(l0, l1))
                    rows = (i0 * rs, (i0 + d0) * rs, (i0 + d1) * rs, (i0 + d0 + d1) * rs)
                    wk = (o0 + 4 * _drop(i0, l0), o0 + 4 * _drop(i0 + d1, l0),
                          o1 + 4 * _drop(i0, l1), o1 + 4 * _drop(i0 + d0, l1))
                    _bf_group_any(src, rows, bt, wr, wi, wk, bt)
            elif R == 3:
                n = 2 * plan[j, 1] * plan[j, 4]
                l0, l1, l2 = _log2(plan[j, 4]), _log2(plan[j + 1, 4]), _log2(plan[j + 2, 4])
                o0, o1, o2 = plan[j, 5], plan[j + 1, 5], plan[j + 2, 5]
                d0, d1, d2 = 1 << l0, 1 << l1, 1 << l2
                lo = min(l0, l1, l2)
                hi = max(l0, l1, l2)
                mid = l0 + l1 + l2 - lo - hi
                for g in range(n >> 3):
                    i0 = _insert_zero(_insert_zero(_insert_zero(g, lo), mid), hi)
                    rows = (i0 * rs, (i0 + d0) * rs, (i0 + d1) * rs, (i0 + d0 + d1) * rs,
                            (i0 + d2) * rs, (i0 + d0 + d2) * rs, (i0 + d1 + d2) * rs, (i0 + d0 + d1 + d2) * rs)
                    wk = (o0 + 4 * _drop(i0, l0), o0 + 4 * _drop(i0 + d1, l0),
                          o0 + 4 * _drop(i0 + d2, l0), o0 + 4 * _drop(i0 + d1 + d2, l0),
                          o1 + 4 * _drop(i0, l1), o1 + 4 * _drop(i0 + d0, l1),
                          o1 + 4 * _drop(i0 + d2, l1), o1 + 4 * _drop(i0 + d0 + d2, l1),
                          o2 + 4 * _drop(i0, l2), o2 + 4 * _drop(i0 + d0, l2),
                          o2 + 4 * _drop(i0 + d1, l2), o2 + 4 * _drop(i0 + d0 + d1, l2))
                    _bf_group_any(src, rows, bt, wr, wi, wk, bt)
            elif generic is not None:
                _generic_step(wr, wi, plan[j, 5], plan[j, 1], plan[j, 2], plan[j, 3], plan[j, 4], src, dst, bt)
                src, dst = dst, src
        _store_tile(src, bt, Y, y_rows, b0, nt, wi)


@njit(inline="always")
def _log2(d):
    k = 0
    while (1 << (k + 1)) <= d:
        k += 1
    return k


@njit(inline="always")
def _insert_zero(g, k):
    """g with a zero bit inserted at position k (bits k and up move one up)."""
    return ((g >> k) << (k + 1)) | (g & ((1 << k) - 1))


@njit(inline="always")
def _drop(i, k):
    """i with bit k removed (the inverse of :func:`_insert_zero` on numbers with bit k clear)."""
    return ((i >> (k + 1)) << k) | (i & ((1 << k) - 1))


def ks_chain_apply_radix(wr, wi, plan, passes, maxdim, X, x_rows, Y, y_rows, bt, nthreads):
    """Y <- (chain of KS factors) X in radix-2^R passes, tiles of ``bt`` samples in parallel.

    wr : 1-D weights (every factor's blocks (a, d, b, c), concatenated), real parts when
    ``wi`` (imaginary parts) is given, else the weights in Y's dtype. plan : int64 (S, 6)
    steps (``plan.make_plan``); passes : int64 (P, 2) (``plan.radix_passes``); maxdim : the
    largest row count. X : C-contiguous, (B, N) if ``x_rows`` else (N, B), real, or complex
    (with ``wi``); Y : (B, M) if ``y_rows`` else (M, B). bt : samples per tile, a whole
    number of vectors (:func:`tile_width`). nthreads : threads (each allocates its tile
    buffers once and takes every nthreads-th tile). Extra memory: one tile buffer per thread
    (maxdim·bt elements of Y), two when the plan has generic steps.
    """
    B = X.shape[0] if x_rows else X.shape[1]
    v = lanes(wr.dtype.itemsize) * max(_UNROLL.values())
    if bt % v:
        raise ValueError(f"bt must be a multiple of {v}, got {bt}")
    args = (wr, wi, plan, passes, maxdim, X, _flag(x_rows), Y, _flag(y_rows), _flag(_has_generic(plan)), bt)
    _on_threads(_chain_passes, args, -(-B // bt), nthreads)
