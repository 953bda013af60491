"""Fused CPU apply of Kronecker-sparse chains in radix-2^R passes (R = 1, 2, 3).

R consecutive butterfly-like Kronecker-sparse factors (b = c = 2, one size, distinct
power-of-two strides d) act on closed groups of 2^R rows: the rows i0 + a sum of a subset
of the d's. One group pass loads the 2^R rows once, applies the R factors (2 x 2 blocks)
in registers, and stores the rows once: R factors cost one sweep of the rows instead of R.
``plan.radix_passes`` groups a plan's steps; a step that cannot pair (generic KS factor,
odd stride, repeated stride, another size) is a pass of its own (radix 2, or the generic
tile-to-tile step).

The group is written as LLVM vector code (:func:`_bf_group`): Numba's own loops over 2R
rows lose vectorisation to runtime alias checks, so the loads, 2 x 2 updates and stores of
a vector of samples are emitted directly, the weights splat once per group. Vectors are
VECTOR_BYTES wide (64 on AVX-512, else 32; wider ones are split by the backend), real rows
two vectors per loop trip at R = 1, 2 (a weight splat serves both), planar complex rows one.

Two modes (:func:`ks_chain_apply_radix`): **tiles**, as the radix-2 kernel of :mod:`.cpu`
(bt samples copied into a (rows, bt) buffer, row-major samples through 8 x 8 vector
transposes, complex rows planar), but one buffer, passes in place; **direct**, for real
column batches through a square butterfly chain: no tile at all, each thread runs the
passes on a block of Y's columns sized from the last-level cache, the first pass reading X
(on this 2-core AMD EPYC the tile copies of column batches cost more than the factors:
gathering bt-wide strips from 4096 rows of X while scattering strips of Y runs at a fifth
of a plain copy's speed).

Measured on AMD EPYC (Zen 3, AVX2, 16 vector registers), see
benchmarks/results/apply_cpu_amd-epyc.md: 1.4-2.2x (float32) and 1.0-2x (complex64) over
the radix-2 kernel at B >= 64, mostly from the in-place passes and the direct mode; radix 4
and radix 8 cost the same per row and level as radix 2 here (the 16 or 48 weights of a
group do not fit the registers beside the rows: every update reloads its weight, so the
load ports, not the tile sweeps, bound a pass), hence MAX_RADIX_LOG2 = 2. On an Intel Xeon
with AVX-512 (32 vector registers, 2 MiB L2, a slower L3) radix 8 makes the direct mode
1.2-1.5x faster (its passes sweep the L3) and nothing else: DIRECT_RADIX_LOG2 = 3 there.
"""
from __future__ import annotations

import functools

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
_UNROLL_PLANAR = {1: 1, 2: 1, 3: 1}  # planar complex rows: a row is two vectors already (1.2-1.5x faster than 2)
MAX_RADIX_LOG2 = 2  # default pass radix 4: radix 8 (supported) measured no faster on AVX2 (weights spill)
#: pass radix of the direct mode (real column batches, blocks of Y larger than the L2, so a
#: pass is a sweep through the last-level cache): radix 8 on AVX-512 (32 vector registers; a
#: quarter fewer sweeps of the L3), measured 1.49x / 1.19x faster than radix 4 at N = 4096 /
#: 1024, B = 1024, float32 (1.24x / 1.18x float64) on an Intel Xeon (Emerald Rapids, 2 cores),
#: where tiles (rows, complex) gained nothing (0.91-1.03x); radix 4 on AVX2 as above
DIRECT_RADIX_LOG2 = 3 if VECTOR_BYTES == 64 else MAX_RADIX_LOG2
_FLAGS = ("contract", "reassoc", "nsz", "arcp")


def lanes(itemsize: int) -> int:
    """Samples per vector of a real tile of ``itemsize``-byte floats."""
    return max(1, VECTOR_BYTES // itemsize)


def tile_width(maxdim: int, dtype, B: int, threads: int, rows: bool) -> int:
    """Samples per tile of :func:`ks_chain_apply_radix` for Y of ``dtype``. A tile row is
    L1d / 64 bytes (the core's L1 data cache, read at run time by
    :func:`gpufact._cpuinfo.cache_sizes`: 512 B = 128 float32 on a 32 KiB L1d, measured
    best at N = 1024 and 4096 against 64 and 256; the 2^R rows of a group pass and the next
    group's rows stay in L1); when either side is row-major, a tile larger
    than half the L2 keeps at most 64 samples (the transposes sweep 8-sample strips across
    all rows), as :func:`gpufact._kernels.cpu.tile_width` — with AVX-512 instead a tile of
    at most a quarter of the L2, down to one vector unit (measured on an Intel Xeon with a
    2 MiB L2, B = 1024: N = 4096 float32 2.91 -> 2.59 ms, float64 8.7 -> 6.1 ms, complex64
    DFT 13.7 -> 11.2 ms; N = 1024 float32 0.78 -> 0.71 ms); the tile at most TILE_MAX_BYTES;
    no wider than an even share of the batch; and a whole number of vectors (the group
    passes have no scalar tail: a partial tile is padded with zeros)."""
    from .cpu import TILE_MAX_BYTES, TILE_ROWS_SAMPLES

    dtype = np.dtype(dtype)
    itemsize = dtype.itemsize
    caches = cache_sizes()
    bt = max(64, caches["L1d"] // 64) // itemsize
    if rows and VECTOR_BYTES == 64:
        bt = min(bt, caches["L2"] // 4 // (maxdim * itemsize))  # rounded up to a vector unit below
    elif rows:
        bt = min(bt, max(TILE_ROWS_SAMPLES, caches["L2"] // 2 // (maxdim * itemsize)))
    bt = min(bt, max(8, TILE_MAX_BYTES // (maxdim * itemsize)))
    bt = min(bt, -(-B // threads))
    v = lanes(itemsize // 2 if dtype.kind == "c" else itemsize) * max(_UNROLL.values())
    return max(v, -(-bt // v) * v)


DIRECT_MIN_SAMPLES = 64  # narrower column blocks take the tiles (short rows: loop overhead)


def direct_width(N: int, itemsize: int, B: int, threads: int) -> int:
    """Columns per block of the direct mode of :func:`ks_chain_apply_radix` (0: use tiles).
    Each pass sweeps the block (N rows of Y), so a thread's block is sized to its share of
    half the last-level cache (read at run time, :func:`gpufact._cpuinfo.cache_sizes`), at
    most an even share of the batch, rounded up to whole vectors; 0 when that leaves fewer
    than DIRECT_MIN_SAMPLES columns (a large N, or a small batch)."""
    w = cache_sizes()["L3"] // (2 * threads) // (N * itemsize)
    w = min(w, -(-B // threads))
    if w < DIRECT_MIN_SAMPLES:
        return 0
    v = lanes(itemsize) * max(_UNROLL.values())
    return -(-w // v) * v


def _splat(builder, x, n):
    v = builder.insert_element(ir.Constant(ir.VectorType(x.type, n), ir.Undefined), x,
                               ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))


def _levels(R):
    """For level k = 0 .. R-1 (application order), the row pairs (r, r | 2^k) it updates,
    r ascending with bit k clear: the order of the group's weight blocks."""
    return [[(r, r | 1 << k) for r in range(1 << R) if not r >> k & 1] for k in range(R)]


def _group_codegen(planar):
    """LLVM IR of :func:`_bf_group`: weights splat once, then a loop over vectors of V
    samples (lanes x _UNROLL[R]) and a scalar loop over the n % V samples left."""
    def codegen(context, builder, sig, args):
        src, dst, rows, half, wr, wi, wk, n, _ = args
        sty, dty, rty, _, wty, _, wkty, nty, tail = sig.args
        R = {2: 1, 4: 2, 8: 3}[rty.count]
        m = 1 << R
        sdata = context.make_array(sty)(context, builder, src).data
        ddata = context.make_array(dty)(context, builder, dst).data
        elt = sdata.type.pointee
        size = context.get_abi_sizeof(elt)
        V = lanes(size) * (_UNROLL_PLANAR if planar else _UNROLL)[R]
        n = context.cast(builder, n, nty, types.intp)
        half = context.cast(builder, half, sig.args[3], types.intp) if planar else None
        offs = [context.cast(builder, o, rty.dtype, types.intp) for o in cgutils.unpack_tuple(builder, rows, m)]
        wks = [context.cast(builder, k, wkty.dtype, types.intp) for k in cgutils.unpack_tuple(builder, wk, R * m // 2)]

        def scalars(arr):
            p = context.make_array(wty)(context, builder, arr).data
            return [[builder.load(builder.gep(p, [builder.add(k, ir.Constant(k.type, q))])) for q in range(4)]
                    for k in wks]

        Wr = scalars(wr)
        Wi = scalars(wi) if planar else None
        nv = builder.udiv(n, ir.Constant(n.type, V))
        body(builder, sdata, ddata, offs, half, Wr, Wi, R, V, size, nv, None)
        if not isinstance(tail, types.NoneType):
            body(builder, sdata, ddata, offs, half, Wr, Wi, R, 1, size, builder.urem(n, ir.Constant(n.type, V)),
                 builder.mul(nv, ir.Constant(n.type, V)))
        return context.get_dummy_value()

    def body(builder, sdata, ddata, offs, half, Wr, Wi, R, V, size, count, start):
        vty = ir.VectorType(sdata.type.pointee, V)
        W = [[_splat(builder, x, V) for x in blk] for blk in Wr]
        Wim = [[_splat(builder, x, V) for x in blk] for blk in Wi] if planar else None
        with cgutils.for_range(builder, count) as loop:
            t = builder.mul(loop.index, ir.Constant(loop.index.type, V))
            if start is not None:
                t = builder.add(t, start)

            def ptr(data, off, extra=None):
                idx = builder.add(off, t)
                if extra is not None:
                    idx = builder.add(idx, extra)
                return builder.bitcast(builder.gep(data, [idx]), vty.as_pointer())

            def load(off, extra=None):
                ld = builder.load(ptr(sdata, off, extra))
                ld.align = size
                return ld

            def store(v, off, extra=None):
                st = builder.store(v, ptr(ddata, off, extra))
                st.align = size

            re = [load(o) for o in offs]
            im = [load(o, half) for o in offs] if planar else None
            fm, fa, fs = (functools.partial(f, flags=_FLAGS) for f in (builder.fmul, builder.fadd, builder.fsub))
            kb = 0
            for level in _levels(R):
                for r, s in level:
                    w00, w01, w10, w11 = W[kb]
                    ur, vr = re[r], re[s]
                    if not planar:
                        re[r] = fa(fm(w00, ur), fm(w01, vr))
                        re[s] = fa(fm(w10, ur), fm(w11, vr))
                    else:
                        b00, b01, b10, b11 = Wim[kb]
                        ui, vi = im[r], im[s]

                        def cre(a, b, c, d):  # real part of (a + ib) u + (c + id) v
                            return fs(fa(fs(fm(a, ur), fm(b, ui)), fm(c, vr)), fm(d, vi))

                        def cim(a, b, c, d):
                            return fa(fa(fa(fm(a, ui), fm(b, ur)), fm(c, vi)), fm(d, vr))

                        re[r], im[r] = cre(w00, b00, w01, b01), cim(w00, b00, w01, b01)
                        re[s], im[s] = cre(w10, b10, w11, b11), cim(w10, b10, w11, b11)
                    kb += 1
            for j, o in enumerate(offs):
                store(re[j], o)
                if planar:
                    store(im[j], o, half)

    return codegen


def _ok(src, dst, rows, w, wk):
    return (isinstance(src, types.Array) and src.ndim == 1 and isinstance(src.dtype, types.Float)
            and isinstance(dst, types.Array) and dst.ndim == 1 and dst.dtype == src.dtype and dst.mutable
            and isinstance(w, types.Array) and w.ndim == 1 and w.dtype == src.dtype
            and isinstance(rows, types.UniTuple) and rows.count in (2, 4, 8) and isinstance(rows.dtype, types.Integer)
            and isinstance(wk, types.UniTuple) and isinstance(wk.dtype, types.Integer)
            and wk.count == {2: 1, 4: 4, 8: 12}[rows.count])


@intrinsic
def _bf_group(typingctx, src, dst, rows, half, wr, wi, wk, n, tail):
    """One radix-2^R group, R = 1, 2, 3: the 2^R rows of ``src`` starting at element offsets
    ``rows`` (UniTuple of 2, 4 or 8; bit k of the row number = level k's partner), R levels
    in order, level k updating (r, r | 2^k), r with bit k clear, by the 2 x 2 block (row
    major) at wr[wk[q]:wk[q] + 4], q running over levels then r ascending; ``n`` samples per
    row (``tail`` None: n is a multiple of the vector length, no scalar loop for the rest
    is compiled); results to the same offsets of ``dst`` (1-D arrays of one float dtype; dst may be
    src: every vector is loaded before it is stored). ``wi`` None: real rows (``half``
    unused). ``wi`` an array: planar complex rows, imaginary parts ``half`` elements after
    the real parts, weights as real parts ``wr`` and imaginary parts ``wi``; complex
    multiply-adds are real vector FMAs. No bounds checks: the callers' loops guarantee them."""
    if not _ok(src, dst, rows, wr, wk):
        return None
    if isinstance(wi, types.NoneType):
        return types.void(src, dst, rows, half, wr, wi, wk, n, tail), _group_codegen(False)
    if isinstance(wi, types.Array) and wi.ndim == 1 and wi.dtype == src.dtype:
        return types.void(src, dst, rows, half, wr, wi, wk, n, tail), _group_codegen(True)
    return None


# ---- the fused chain in radix-2^R passes -------------------------------------------------------
# One kernel for real and planar complex tiles: the code that differs sits under
# ``real is not None`` or ``wi is not None`` (pruned where None), the generic step in an
# overload typed per case (compiled only for plans that have generic steps).

from numba import njit  # noqa: E402
from numba.core.extending import overload  # noqa: E402

from .cpu import (_FASTMATH, _cols_to_tile_planar, _flag, _has_generic, _load_rows,  # noqa: E402
                  _load_rows_planar_any, _on_threads, _store_rows, _store_rows_planar, _tile_to_cols_planar)
from .cpu_tiles import _generic_step_strided  # noqa: E402


def _generic_step(wr, wi, off, a, b, c, d, src, dst, bt):
    """A generic KS factor (a, b, c, d), blocks (a, d, b, c) at ``off``, tile to tile."""
    raise NotImplementedError("compiled through its Numba overload")


@overload(_generic_step, jit_options={"cache": True, "fastmath": _FASTMATH})
def _generic_step_typed(wr, wi, off, a, b, c, d, src, dst, bt):
    if isinstance(wi, types.NoneType):
        def step_real(wr, wi, off, a, b, c, d, src, dst, bt):  # register-blocked rows
            _generic_step_strided(wr, off, a, b, c, d, d, 1, src, dst, bt)
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
def _chain_passes(wr, wi, real, plan, passes, maxdim, X, x_rows, Y, y_rows, generic, radix8, tiles, direct, in_perm,
                  bt, first, step):
    """Blocks first, first + step, ... of ``bt`` samples of :func:`ks_chain_apply_radix`, on
    the calling thread. Real rows when ``wi`` is None and ``real`` True (weights ``wr``,
    dtype of Y), planar complex rows when ``real`` is None (row i: bt real parts at 2i·bt,
    then bt imaginary parts; weights as real parts ``wr`` and imaginary parts ``wi``).
    Flags typed None or True (a branch under ``flag is not None`` is pruned where the flag
    is None, :func:`gpufact._kernels.cpu._flag`):
    ``x_rows``, ``y_rows`` row-major samples; ``generic``: the plan has generic steps (else
    one tile buffer, passes in place); ``radix8``: it has radix-8 passes; ``tiles`` or
    ``direct``, one of the two: tiles copied in and out, or no tile: the passes run on Y's
    columns b0 .. b0 + bt themselves (real column batches, square butterfly chains), the
    first pass reading X, the others in place on Y. ``in_perm`` (tiles only; None or int64
    (N,)): the input rows permuted first, tile row i read from input row in_perm[i] (column
    batches: in the load itself; row-major samples: a tile-to-tile row copy after it), so a
    permutation factor before the chain (the DFT's bit reversal) costs no pass over memory.

    Passes (``plan.radix_passes``: R, j, log2 of the R strides): R = 0, generic KS step tile
    to tile (ping-pong); R = 1, 2, 3, butterfly steps j .. j + R - 1 by groups of 2^R rows
    (:func:`_bf_group`): R = 1 walks the blocks (al, de) (any stride d); R >= 2 inserts zero
    bits at the strides' positions into the group number g (power-of-two strides), and finds
    a group's 2 x 2 blocks by removing each level's bit from its first row number (the other
    rows' blocks follow at fixed distances). Bit tricks written out inline: Numba inlines
    small jitted helpers slowly, and first-call compilation time counts."""
    B = X.shape[1] if x_rows is None else X.shape[0]
    N = X.shape[0] if x_rows is None else X.shape[1]
    nrow = 1 if wi is None else 2  # real rows per tile row
    rs = nrow * bt  # elements per tile row
    buf0 = np.empty(0 if tiles is None else maxdim * rs, dtype=wr.dtype)
    buf1 = buf0
    if generic is not None or (in_perm is not None and x_rows is not None):
        buf1 = np.empty(maxdim * rs, dtype=wr.dtype)
    if direct is not None:
        rs = B
        buf0 = Y.reshape(-1)
        buf1 = buf0
    ntiles = (B + bt - 1) // bt
    for ti in range(first, ntiles, step):
        b0 = ti * bt
        nt = min(bt, B - b0)
        src, dst = buf0, buf1
        c0, n = 0, bt
        if tiles is not None:
            lb = buf0  # row-major samples with in_perm: loaded into buf1, then rows permuted
            if in_perm is not None and x_rows is not None:
                lb = buf1
            if real is not None:
                if x_rows is None:
                    for i in range(N):
                        r = i
                        if in_perm is not None:
                            r = in_perm[i]
                        xr = X[r, b0:b0 + nt]
                        br = buf0[i * bt:i * bt + nt]
                        for t in range(nt):
                            br[t] = xr[t]
                else:
                    _load_rows(X, b0, nt, lb, bt)
            if wi is not None:
                if x_rows is None:
                    _cols_to_tile_planar(X, b0, buf0, N, nt, bt, in_perm)
                else:
                    _load_rows_planar_any(X, b0, nt, lb, bt)
            if in_perm is not None and x_rows is not None:
                for i in range(N):
                    s0 = in_perm[i] * rs
                    buf0[i * rs:(i + 1) * rs] = buf1[s0:s0 + rs]
            if nt < bt:  # a reused buffer holds stale values, possibly slow denormals
                for i in range(nrow * N):
                    for t in range(i * bt + nt, (i + 1) * bt):
                        buf0[t] = 0
        if direct is not None:
            src = X.reshape(-1)
            c0, n = b0, nt
        for p in range(passes.shape[0]):
            R, j = passes[p, 0], passes[p, 1]
            tgt = src if direct is None else buf0  # butterfly passes: in place, or X -> Y
            if R == 1:
                a, d, off = plan[j, 1], plan[j, 4], plan[j, 5]
                for al in range(a):
                    for de in range(d):
                        i0 = al * 2 * d + de
                        _bf_group(src, tgt, (i0 * rs + c0, (i0 + d) * rs + c0), bt, wr, wi,
                                  (off + 4 * (al * d + de),), n, direct)
            elif R == 2:
                l0, l1 = passes[p, 2], passes[p, 3]
                o0, o1 = plan[j, 5], plan[j + 1, 5]
                d0, d1 = 1 << l0, 1 << l1
                lo, hi = min(l0, l1), max(l0, l1)
                e0 = d1 >> 1 if l1 > l0 else d1  # block distance of the partner rows, level 0
                e1 = d0 >> 1 if l0 > l1 else d0
                for g in range((2 * plan[j, 1] * plan[j, 4]) >> 2):
                    i0 = ((g >> lo) << (lo + 1)) | (g & ((1 << lo) - 1))
                    i0 = ((i0 >> hi) << (hi + 1)) | (i0 & ((1 << hi) - 1))
                    p0 = o0 + 4 * (((i0 >> (l0 + 1)) << l0) | (i0 & (d0 - 1)))
                    p1 = o1 + 4 * (((i0 >> (l1 + 1)) << l1) | (i0 & (d1 - 1)))
                    r0 = i0 * rs + c0
                    _bf_group(src, tgt, (r0, r0 + d0 * rs, r0 + d1 * rs, r0 + (d0 + d1) * rs), bt, wr, wi,
                              (p0, p0 + 4 * e0, p1, p1 + 4 * e1), n, direct)
            elif R == 3:
                if radix8 is not None:
                    l0, l1, l2 = passes[p, 2], passes[p, 3], passes[p, 4]
                    o0, o1, o2 = plan[j, 5], plan[j + 1, 5], plan[j + 2, 5]
                    d0, d1, d2 = 1 << l0, 1 << l1, 1 << l2
                    lo = min(l0, l1, l2)
                    hi = max(l0, l1, l2)
                    mid = l0 + l1 + l2 - lo - hi
                    e01 = d1 >> 1 if l1 > l0 else d1  # e_kj: block distance of stride j's rows at level k
                    e02 = d2 >> 1 if l2 > l0 else d2
                    e10 = d0 >> 1 if l0 > l1 else d0
                    e12 = d2 >> 1 if l2 > l1 else d2
                    e20 = d0 >> 1 if l0 > l2 else d0
                    e21 = d1 >> 1 if l1 > l2 else d1
                    for g in range((2 * plan[j, 1] * plan[j, 4]) >> 3):
                        i0 = ((g >> lo) << (lo + 1)) | (g & ((1 << lo) - 1))
                        i0 = ((i0 >> mid) << (mid + 1)) | (i0 & ((1 << mid) - 1))
                        i0 = ((i0 >> hi) << (hi + 1)) | (i0 & ((1 << hi) - 1))
                        p0 = o0 + 4 * (((i0 >> (l0 + 1)) << l0) | (i0 & (d0 - 1)))
                        p1 = o1 + 4 * (((i0 >> (l1 + 1)) << l1) | (i0 & (d1 - 1)))
                        p2 = o2 + 4 * (((i0 >> (l2 + 1)) << l2) | (i0 & (d2 - 1)))
                        r0 = i0 * rs + c0
                        rows = (r0, r0 + d0 * rs, r0 + d1 * rs, r0 + (d0 + d1) * rs, r0 + d2 * rs,
                                r0 + (d0 + d2) * rs, r0 + (d1 + d2) * rs, r0 + (d0 + d1 + d2) * rs)
                        wk = (p0, p0 + 4 * e01, p0 + 4 * e02, p0 + 4 * (e01 + e02),
                              p1, p1 + 4 * e10, p1 + 4 * e12, p1 + 4 * (e10 + e12),
                              p2, p2 + 4 * e20, p2 + 4 * e21, p2 + 4 * (e20 + e21))
                        _bf_group(src, tgt, rows, bt, wr, wi, wk, n, direct)
            else:
                if generic is not None:
                    _generic_step(wr, wi, plan[j, 5], plan[j, 1], plan[j, 2], plan[j, 3], plan[j, 4], src, dst, bt)
                    tgt = dst
                    dst = src
            src = tgt
        if tiles is not None:
            if real is not None:
                if y_rows is None:
                    for i in range(Y.shape[0]):
                        yr = Y[i, b0:b0 + nt]
                        br = src[i * bt:i * bt + nt]
                        for t in range(nt):
                            yr[t] = br[t]
                else:
                    _store_rows(src, bt, Y, b0, nt)
            if wi is not None:
                if y_rows is None:
                    _tile_to_cols_planar(src, bt, Y, b0, Y.shape[0], nt)
                else:
                    _store_rows_planar(src, bt, Y, b0, nt)


def ks_chain_apply_radix(wr, wi, plan, passes, maxdim, X, x_rows, Y, y_rows, bt, nthreads, direct=False,
                         in_perm=None):
    """Y <- (chain of KS factors) X in radix-2^R passes, tiles of ``bt`` samples in parallel.

    wr : 1-D weights (every factor's blocks (a, d, b, c), concatenated), real parts when
    ``wi`` (imaginary parts) is given, else the weights in Y's dtype. plan : int64 (S, 6)
    steps (``plan.make_plan``); passes : int64 (P, 5) (``plan.radix_passes``); maxdim : the
    largest row count. X : C-contiguous, (B, N) if ``x_rows`` else (N, B), real, or complex
    (with ``wi``); Y : (B, M) if ``y_rows`` else (M, B). bt : samples per tile, a whole
    number of vectors (:func:`tile_width`). nthreads : threads (each allocates its tile
    buffers once and takes every nthreads-th tile). Extra memory: one tile buffer per thread
    (maxdim·bt elements of Y), two when the plan has generic steps. direct : no tiles, the
    passes run on blocks of ``bt`` columns of Y (:func:`direct_width`; real X and Y, both
    column batches, a square chain of butterfly steps only); no extra memory. in_perm : None,
    or an int64 permutation of the N input rows applied before the chain ((P x)_i =
    x[in_perm[i]], :class:`gpufact.factors.PermFactor`), fused into the tile loads (tiles
    only; row-major samples: one more tile buffer).
    """
    B = X.shape[0] if x_rows else X.shape[1]
    v = lanes(wr.dtype.itemsize) * max(_UNROLL.values())
    if bt % v and not direct:
        raise ValueError(f"bt must be a multiple of {v}, got {bt}")
    if direct and (wi is not None or x_rows or y_rows or _has_generic(plan) or X.shape != Y.shape
                   or X.dtype != Y.dtype or not X.flags.writeable or in_perm is not None):
        raise ValueError("direct: real column batches X, Y of one shape and dtype, butterfly steps only, "
                         "no input permutation")
    if in_perm is not None:
        N = X.shape[1] if x_rows else X.shape[0]
        if not (type(in_perm) is np.ndarray and in_perm.dtype == np.int64 and in_perm.shape == (N,)):
            raise ValueError(f"in_perm must be an int64 NumPy array of shape ({N},)")
    args = (wr, wi, _flag(wi is None), plan, passes, maxdim, X, _flag(x_rows), Y, _flag(y_rows),
            _flag(_has_generic(plan)), _flag((passes[:, 0] == 3).any()), _flag(not direct), _flag(direct), in_perm,
            bt)
    _on_threads(_chain_passes, args, -(-B // bt), nthreads)
