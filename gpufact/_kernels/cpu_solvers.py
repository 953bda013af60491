"""Numba (CPU) kernels of the factorization solvers: the top-k masks and projections of the
sparsity constraints (``topk_rows_cols_mask``, ``topk_project``), dense -> CSR arrays
(``dense_to_csr_arrays``), a small-matrix power iteration (``power_norm2_small``), the
quadratic form of PALM4MSA's safeguarded step (``gram_quad``) and sparse x dense products
in either memory order (``csr_dense``, ``dense_csr``). Each has a NumPy reference the tests
compare against.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .._numeric import unit_scale
from .._validation import NonFiniteInput, check_finite

# ---- top-k supports of the sparsity projections ------------------------------------------
# Thresholds (the k-th largest magnitude of each row / column) then marks: entries above the
# threshold, then ties in index order until k are kept. Thresholds for k <= _SMALL_K come from
# an insertion buffer (one predictable comparison per entry), above from np.partition (NumPy's
# SIMD introselect: ~1 ns per entry whatever k; a heap or quickselect in Numba measured 2-3x
# slower, branch mispredictions). k <= _SMALL_K (the published presets): one Numba kernel,
# any size (:func:`_small_k_keep`); larger k: one fused Numba call up to _FUSED_MAX entries,
# NumPy passes above (few calls: the residual constraints of a hierarchical factorization).
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
def _restrict(M, mask):
    """(M where mask, else 0: a new C-contiguous array of M's dtype; ‖out‖² in float64; max
    |out|)."""
    m, n = M.shape
    out = np.zeros((m, n), dtype=M.dtype)
    s2 = 0.0  # float64: squares of float32 values never leave its range
    mx = 0.0
    for i in range(m):
        for j in range(n):
            if mask[i, j]:
                v = M[i, j]
                out[i, j] = v
                a = np.float64(abs(v))
                s2 += a * a
                mx = max(mx, a)
    return out, s2, mx


@njit(cache=True)
def _topk_keep_fused(M, kr, kc):
    """:func:`_restrict` to the top-k marks of a small matrix (at most _FUSED_MAX entries),
    any k, one call."""
    mask = np.zeros(M.shape, dtype=np.uint8)
    _topk_mask_fused(M, kr, kc, mask)
    out, s2, mx = _restrict(M, mask)
    bad = 0
    for v in M.ravel():
        if not abs(v) < np.inf:
            bad += 1
    return out, s2, mx, bad


@njit(cache=True, inline="always")
def _insert_top(best, v):
    """Insert v into the ascending top-k buffer ``best`` (length kk) if v > best[0]."""
    kk = best.shape[0]
    if v > best[0]:
        q = 0
        while q + 1 < kk and best[q + 1] < v:
            best[q] = best[q + 1]
            q += 1
        best[q] = v


@njit(cache=True, inline="always")
def _ties_taken(best):
    """How many entries equal to the threshold best[0] a full ascending top-k buffer takes:
    k minus the entries strictly above it."""
    above = 0
    for q in range(1, best.shape[0]):
        if best[q] > best[0]:
            above += 1
    return best.shape[0] - above


@njit(cache=True)
def _small_k_keep(M, kr, kc, out, mask, marks):
    """out = M on the union of the top-kr per row and top-kc per column of |M| (kr, kc <=
    _SMALL_K; 0: none), else 0 (ties to the smaller index), in two row-major passes:
    thresholds (an ascending insertion buffer per row and per column, filled with -1 so that
    the first k entries go in like the rest; each buffer's smallest entry also kept in a
    scalar / a contiguous array, so that the usual entry costs two compares and no buffer
    access) and the number of ties each row / column takes, then marks and output together
    (entries below both thresholds take one branch; the rest, NaN included, the exact
    rule); with ``marks``, mask |= the marks too. Magnitudes are compared in float64 (exact
    for every dtype). Returns (‖out‖² in float64, max |out|, the number of NaN / inf entries
    of M). The one kernel behind both small-k entry points (a first call compiles it once:
    fewer, flatter kernels compile faster)."""
    m, n = M.shape
    thr_r = np.full(m, np.inf)  # k = 0: nothing is above an infinite threshold
    need_r = np.zeros(m, dtype=np.int64)
    bc = np.full((n, max(kc, 1)), -1.0)  # column j's buffer: bc[j] (contiguous)
    thr_c = np.full(n, -1.0 if kc > 0 else np.inf)  # bc[j, 0], contiguous
    br = np.empty(max(kr, 1))
    for i in range(m):
        br[:] = -1.0
        t = -1.0 if kr > 0 else np.inf  # br[0]
        for j in range(n):
            a = np.float64(abs(M[i, j]))
            if a > t:
                _insert_top(br, a)
                t = br[0]
            if a > thr_c[j]:
                b = bc[j]
                _insert_top(b, a)
                thr_c[j] = b[0]
        if kr > 0:
            thr_r[i] = t
            need_r[i] = _ties_taken(br)
    need_c = np.zeros(n, dtype=np.int64)
    if kc > 0:
        for j in range(n):
            need_c[j] = _ties_taken(bc[j])
    s2 = 0.0  # float64: squares of float32 values never leave its range
    mx = 0.0
    bad = 0
    for i in range(m):
        tr = thr_r[i]
        nr = need_r[i]
        for j in range(n):
            v = M[i, j]
            a = np.float64(abs(v))
            tc = thr_c[j]
            if a < tr and a < tc:  # below both thresholds (NaN is not): dropped
                out[i, j] = 0
                continue
            keep = a > tr or a > tc
            if a == tr and nr > 0:
                keep = True
                nr -= 1
            if a == tc and need_c[j] > 0:
                keep = True
                need_c[j] -= 1
            if keep:
                if marks:
                    mask[i, j] = 1
                out[i, j] = v
                s2 += a * a
                mx = max(mx, a)
            else:
                out[i, j] = 0
                if a != a:  # NaN: never kept (an inf always is: s2 = inf)
                    bad += 1
    if mx == np.inf:  # an inf is always kept (the largest of its row or column)
        bad += 1
    return s2, mx, bad


def _scale_unit(out, s2, mx):
    """out /= ‖out‖_F in place, given s2 = ‖out‖² (float64) and mx = max |out| (right at any
    magnitude of the dtype; zero stays zero). NumPy, in float64 arithmetic (a float32 ``out``
    is not scaled by a float32 1/‖out‖, which overflows for norms below ~3e-39); complex
    arrays through their real view (NumPy's complex quotient by a real scalar forms its
    reciprocal in the array's precision: inf + NaN·i for subnormal data). Not jitted: it
    compiled for about a second on a first run."""
    if not mx > 0:
        return
    if 1e-280 < s2 < 1e280:  # one multiply by 1/‖out‖ (finite: ‖out‖ >= 1e-140)
        r = out.view(out.real.dtype) if out.dtype.kind == "c" else out
        inv = 1.0 / np.sqrt(s2)
        if r.dtype == np.float32 and 1e-36 < inv < 1e36:  # a normal float32 scale: a float32
            np.multiply(r, np.float32(inv), out=r)  # loop (8x faster than a float64 one at 256 x 256)
        else:
            np.multiply(r, np.float64(inv), out=r, casting="unsafe")
        return
    # float64 entries beyond ~1e140 or below ~1e-140: ‖out‖ itself may not be representable
    # (or keep few bits, subnormal): (out / max) / ‖out / max‖
    out[...] = unit_scale(out, np)


@njit(cache=True)
def _topk_keep_small_k(M, kr, kc):
    """(out, ‖out‖², max |out|, number of NaN / inf entries) of :func:`_small_k_keep` for
    kr, kc <= _SMALL_K, any size, one call."""
    out = np.empty(M.shape, dtype=M.dtype)
    s2, mx, bad = _small_k_keep(M, kr, kc, out, np.zeros((0, 0), dtype=np.uint8), False)
    return out, s2, mx, bad


@njit(cache=True)
def _topk_mask_small_k(M, kr, kc, mask):
    """mask |= the small-k marks of :func:`_small_k_keep`."""
    _small_k_keep(M, kr, kc, np.empty(M.shape, dtype=M.dtype), mask, True)


# ---- small k on real matrices: compare-exchange networks on the magnitudes' bit patterns ---
# A nonnegative IEEE float orders as the signed integer of its bits (NaN above inf above
# every finite value), and integer max / min vectorise where Numba's float ones do not
# (measured on AVX2: a float min / max network ran scalar, 0.65 ns per entry and level;
# the int32 one 0.17 ns). A top-k buffer c[k-1] >= ... >= c[0] then takes an entry x by
# c[q], x = max(c[q], x), min(c[q], x) for q = k-1 .. 0: branch-free, a whole row of
# column buffers at a time.

@njit(cache=True, inline="never")
def _net_step(c, t):
    """c, t <- max(c, t), min(c, t) entrywise (integer vectors of one length and type)."""
    for j in range(c.shape[0]):
        a = c[j]
        b = t[j]
        c[j] = max(a, b)
        t[j] = min(a, b)


@njit(cache=True, inline="never")
def _keep_row(row, brow, orow, tr, thr_c, lowest, inf_bits):
    """orow = row where its magnitude bits brow reach the row threshold tr or the column's
    thr_c[j], else 0. Returns (max kept bits, number of NaN / inf entries)."""
    mx = lowest
    bad = 0
    for j in range(row.shape[0]):
        a = brow[j]
        keep = (a >= tr) | (a >= thr_c[j])
        orow[j] = row[j] if keep else 0
        mx = max(mx, a if keep else lowest)
        bad += a >= inf_bits
    return mx, bad


@njit(cache=True, inline="never")
def _count_eq(brow, tr, thr_c, eq_c):
    """Entries of brow equal to tr; eq_c[j] += (brow[j] == thr_c[j]). (Apart from
    :func:`_keep_row`: one loop doing both measured 1.1-1.3x slower.)"""
    eq = 0
    for j in range(brow.shape[0]):
        a = brow[j]
        eq += a == tr
        eq_c[j] += a == thr_c[j]
    return eq


@njit(cache=True)
def _small_k_real(M, Af, Ab, kr, kc, out, lowest, highest, inf_bits):
    """The keep of :func:`_small_k_keep` for a real C-contiguous matrix M (float32 or
    float64), the same output. ``Ab``: scratch of M's shape, an integer view (int32 /
    int64) of a float buffer of M's dtype, which receives the magnitudes' bits; ``lowest``
    = -1 and ``highest`` the largest value of that integer type, ``inf_bits`` the bits of
    +inf (all three of Ab's type); ``Af``: that float buffer. Returns (max kept magnitude's
    bits, number of NaN / inf entries, cut, thresholds and places of rows and columns):
    ties at a threshold are taken whole, and ``cut`` says that a row or a column has more
    of them than places (at a nonzero threshold: ties at zero do not change the output),
    which the caller then cuts to its places in index order (:func:`_cut_ties`, NumPy: rare,
    and a jitted cut cost a second of compilation on every first run). Column thresholds:
    the network above, one row of column buffers per matrix row; row thresholds: an insertion
    buffer behind one predictable compare per entry (a network over strips of the row
    measured 1.6x slower: its short loops). O(m n (kr + kc))."""
    m, n = M.shape
    cb = np.full((max(kc, 1), n), lowest, dtype=Ab.dtype)  # cb[q, j] ascending in q
    t = np.empty(n, dtype=Ab.dtype)
    best = np.empty(max(kr, 1), dtype=Ab.dtype)
    thr_r = np.full(m, highest, dtype=Ab.dtype)  # k = 0: nothing above (NaN patterns aside)
    need_r = np.zeros(m, dtype=np.int64)
    for i in range(m):
        row = M[i]
        arow = Af[i]
        for j in range(n):
            arow[j] = abs(row[j])
        brow = Ab[i]
        if kc > 0:
            for j in range(n):
                t[j] = brow[j]
            for q in range(kc - 1, -1, -1):
                _net_step(cb[q], t)
        if kr > 0:  # one predictable compare per entry (a vector network over strips of the row measured slower)
            best[:] = lowest
            tb = lowest
            for j in range(n):
                a = brow[j]
                if a > tb:
                    _insert_top(best, a)
                    tb = best[0]
            thr_r[i] = tb
            need_r[i] = _ties_taken(best)
    thr_c = np.full(n, highest, dtype=Ab.dtype)
    need_c = np.zeros(n, dtype=np.int64)
    if kc > 0:
        colq = np.empty(kc, dtype=Ab.dtype)
        for j in range(n):
            for q in range(kc):
                colq[q] = cb[q, j]
            thr_c[j] = cb[0, j]
            need_c[j] = _ties_taken(colq)
    eq_c = np.zeros(n, dtype=np.int64)
    cut = False
    mx = lowest
    bad = 0
    for i in range(m):
        row = M[i]
        brow = Ab[i]
        orow = out[i]
        tr = thr_r[i]
        mxi, badi = _keep_row(row, brow, orow, tr, thr_c, lowest, inf_bits)
        mx = max(mx, mxi)
        bad += badi
        eq = _count_eq(brow, tr, thr_c, eq_c)
        if eq > need_r[i] and tr != 0:
            cut = True
    for j in range(n):
        if eq_c[j] > need_c[j] and thr_c[j] != 0:
            cut = True
    return mx, bad, cut, thr_r, need_r, thr_c, need_c


@njit(cache=True, fastmath={"reassoc", "contract"})
def _sum_sq64(out):
    """Σ out² in float64 of a C-contiguous real matrix (finite; any order of summation)."""
    m, n = out.shape
    s = 0.0
    for i in range(m):
        for j in range(n):
            a = np.float64(out[i, j])
            s += a * a
    return s


_INT_OF = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}
_INF_BITS = {t: np.array(np.inf, dtype=t).view(i)[()] for t, i in _INT_OF.items()}


def _cut_ties(M, Ab, thr_r, need_r, thr_c, need_c):
    """out of the exact tie rule given the magnitudes' bits Ab and the thresholds / places
    of :func:`_small_k_real`: above the threshold, or among the first ``need`` ties in
    index order, of the row or of the column (k = 0: a threshold above every entry).
    Returns (out, max kept magnitude's bits). NumPy, O(m n)."""
    keep = Ab > thr_r[:, None]
    tie = Ab == thr_r[:, None]
    keep |= tie & (np.cumsum(tie, axis=1) <= need_r[:, None])
    keep |= Ab > thr_c[None, :]
    tie = Ab == thr_c[None, :]
    keep |= tie & (np.cumsum(tie, axis=0) <= need_c[None, :])
    out = np.where(keep, M, 0).astype(M.dtype, copy=False)
    return out, (Ab[keep].max() if keep.any() else -1)


def _keep_small_k_real(M, kr, kc):
    """(out, ‖out‖², max |out|, number of NaN / inf entries) as :func:`_topk_keep_small_k`
    for a float32 / float64 M, through the networks of :func:`_small_k_real` (2.7x faster
    at 256 x 256, k = 3; AMD EPYC, AVX2), the same output."""
    it = _INT_OF[M.dtype]
    M = np.ascontiguousarray(M)
    A = np.empty(M.shape, dtype=M.dtype)
    Ab = A.view(it)
    out = np.empty(M.shape, dtype=M.dtype)
    mxb, bad, cut, thr_r, need_r, thr_c, need_c = _small_k_real(M, A, Ab, kr, kc, out, it(-1), it(np.iinfo(it).max),
                                                                _INF_BITS[M.dtype])
    if bad:
        return out, 0.0, 0.0, bad
    if cut:
        out, mxb = _cut_ties(M, Ab, thr_r, need_r, thr_c, need_c)
    mx = float(np.array(mxb, dtype=it).view(M.dtype)) if mxb >= 0 else 0.0
    return out, _sum_sq64(out), mx, bad


_TINY = {np.dtype(t).char: float(np.finfo(t).tiny) for t in (np.float32, np.float64, np.complex64, np.complex128)}


def _clip_k(shape, k_row, k_col):
    m, n = shape
    return min(int(k_row), n), min(int(k_col), m)


def _marks(mag, thr, kk, axis):
    """Marks (uint8) of the kk largest entries along ``axis`` of mag, given the kk-th largest
    value ``thr`` (broadcast along ``axis``): the entries above it, then its ties in index
    order until kk."""
    above = mag > thr
    ties = mag == thr
    need = kk - np.count_nonzero(above, axis=axis, keepdims=True)
    # a row (column) with no more ties than places takes them all: the index-order cut (a
    # cumulative sum) only where there are more, usually nowhere
    over = np.nonzero((np.count_nonzero(ties, axis=axis, keepdims=True) > need).ravel())[0]
    if over.size:
        if axis == 1:
            t = ties[over]
            ties[over] = t & (np.cumsum(t, axis=1) <= need[over])
        else:
            t = ties[:, over]
            ties[:, over] = t & (np.cumsum(t, axis=0) <= need[:, over])
    above |= ties
    return above.view(np.uint8)


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
    # k > _SMALL_K on a large matrix (the residual constraints of a hierarchical
    # factorization: a few calls per split): NumPy passes only, nothing compiled
    mag = np.abs(M)
    if kr > 0:
        thr = np.partition(mag, n - kr, axis=1)[:, n - kr]
        mask |= _marks(mag, thr[:, None], kr, 1)
    if kc > 0:
        magT = mag.T.copy(order="C")  # scratch (partitioned in place); axis 0 measured 4x slower
        magT.partition(m - kc, axis=1)  # in place: magT is scratch
        # a contiguous copy: broadcast against mag as a strided row, every comparison of
        # _marks ran as a slow strided loop (512 x 2000 float32: 17.5 ms, contiguous 1.2 ms)
        thr = np.ascontiguousarray(magT[:, m - kc])
        mask |= _marks(mag, thr[None, :], kc, 0)
    return mask.view(bool)


def topk_project(M, k_row, k_col, normalized):
    """M restricted to :func:`topk_rows_cols_mask` (a new C-contiguous array of M's dtype),
    scaled to unit Frobenius norm if ``normalized`` (zero stays zero)."""
    m, n = M.shape
    kr, kc = _clip_k(M.shape, k_row, k_col)
    full = (kr >= n and kr > 0) or (kc >= m and kc > 0)
    if not full and (kr <= _SMALL_K and kc <= _SMALL_K or m * n <= _FUSED_MAX):
        keep = _topk_keep_small_k if kr <= _SMALL_K and kc <= _SMALL_K else _topk_keep_fused
        if keep is _topk_keep_small_k and M.dtype in _INT_OF:
            keep = _keep_small_k_real
        out, s2, mx, bad = keep(M, kr, kc)
        if bad:
            raise NonFiniteInput("M contains NaN or inf")
        if normalized:
            _scale_unit(out, s2, mx)
        return out
    check_finite(M, "M")
    out = np.where(topk_rows_cols_mask(M, kr, kc), M, 0).astype(M.dtype, copy=False)
    if normalized:
        out = unit_scale(out, np)  # right even where ‖out‖ itself is out of range
    return out


@njit(cache=True)
def _dense_to_csr_arrays(M, index_dtype_sample, max_nnz):
    m, n = M.shape
    indptr = np.zeros(m + 1, dtype=index_dtype_sample.dtype)
    for i in range(m):
        c = 0
        for j in range(n):
            c += M[i, j] != 0  # branch-free: the count vectorises
        indptr[i + 1] = indptr[i] + c
    nnz = indptr[m]
    if nnz > max_nnz:  # too dense: no CSR arrays filled
        return np.empty(0, dtype=M.dtype), np.empty(0, dtype=index_dtype_sample.dtype), indptr
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


def dense_to_csr_arrays(M, max_nnz=None):
    """(data, indices, indptr) of the dense NumPy matrix M in CSR form: row-major order,
    sorted indices, no explicit zeros; int32 indices below 2^31 entries. Two passes, no
    index arrays of all nonzero positions (np.nonzero measured 4x slower at 512 x 512).
    With ``max_nnz``: None when M has more nonzeros than that (found by the first pass,
    which is also a faster count than np.count_nonzero on floats: PALM's sparse-or-dense
    choice costs no extra pass)."""
    sample = np.zeros(1, dtype=np.int32 if M.size < 2**31 else np.int64)
    limit = M.size if max_nnz is None else int(max_nnz)
    data, indices, indptr = _dense_to_csr_arrays(M, sample, limit)
    if indptr[-1] > limit:
        return None
    return data, indices, indptr


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
            a = np.float64(abs(w[j]))  # float64 squares: single-precision ones under/overflow
            s2 += a * a
        s = np.sqrt(s2)
        inv = 1.0 / (s + tiny)
        for j in range(n):
            vo[j] = w[j] * inv
    return s, vo


def power_norm2_small(M, v, iters):
    """(‖MᴴM v‖ after ``iters`` power steps, last unit iterate) for a small dense NumPy M
    (m, n) and v (n,) of M's dtype: one Numba call instead of ~7 NumPy calls per step (PALM
    on small factors is bound by per-call costs). O(iters · m n); BLAS wins above ~2^12 entries."""
    # C order (a copy of at most ~2^12 entries): one compiled specialisation per dtype, where
    # PALM's F-ordered products (transposes) would compile a second one on a first run
    return _power_norm2_loops(np.ascontiguousarray(M), np.ascontiguousarray(v, dtype=M.dtype), int(iters),
                              _TINY[M.dtype.char])


@njit(cache=True, nogil=True)
def _gram_quad_loops(D, H):
    m, n = D.shape
    idx = np.empty(n, dtype=np.int64)
    tot = 0.0
    for i in range(m):
        c = 0
        for p in range(n):
            if D[i, p] != 0:
                idx[c] = p
                c += 1
        for a in range(c):
            p = idx[a]
            acc = D[i, p] * 0
            for b in range(c):
                k = idx[b]
                acc += H[p, k] * np.conj(D[i, k])
            tot += (D[i, p] * acc).real
    return tot


def gram_quad(D, H):
    """Re tr(D H Dᴴ) = ‖D R‖²_F for H = R Rᴴ (Hermitian, dense n × n) and D (m, n) dense with
    few nonzeros per row: Σ_i Σ_{p,q ∈ supp(D_i)} conj(D_ip) H_pq D_iq, in O(m n + Σ_i nnz_i²)
    (the support read once; no sparse matrix built). NumPy arrays of one dtype; returns a
    float. Used by PALM4MSA's safeguarded step (the exact ‖Δ R‖² of a step Δ)."""
    return float(_gram_quad_loops(D, np.asarray(H, dtype=D.dtype)))


# ---- products of a dense matrix and a CSR matrix for PALM4MSA --------------------------------
# scipy.sparse's SpMM wants a C-ordered dense operand and copies any other (PALM's products
# of transposes are F-ordered); these take both orders and write the layout that makes the
# inner loop a contiguous axpy (256 x 256 with 1.5 % nonzeros: ~4x faster than scipy's call).


@njit(cache=True, nogil=True)
def _csr_dense_c(indptr, indices, data, X, out):
    """out (m, n) C-order = S @ X, S CSR (m, k), X (k, n) C-order: axpys of rows of X."""
    m = out.shape[0]
    n = out.shape[1]
    for i in range(m):
        for j in range(n):
            out[i, j] = 0
        for q in range(indptr[i], indptr[i + 1]):
            v = data[q]
            p = indices[q]
            for j in range(n):
                out[i, j] += v * X[p, j]


@njit(cache=True, nogil=True)
def _dense_f_csr(XT, indptr, indices, data, outT):
    """outT (n, m) C-order = (X @ S)ᵀ for Xᵀ = XT (k, m) C-order (X F-ordered), S CSR (k, n):
    outT[c] += v · XT[p] for each entry (p, c, v) of S."""
    n, m = outT.shape
    k = XT.shape[0]
    for c in range(n):
        for i in range(m):
            outT[c, i] = 0
    for p in range(k):
        for q in range(indptr[p], indptr[p + 1]):
            v = data[q]
            c = indices[q]
            for i in range(m):
                outT[c, i] += XT[p, i] * v


def csr_dense(indptr, indices, data, m, Y):
    """S @ Y for S CSR (m, k) given by its arrays and Y (k, n) a NumPy array of data's dtype
    (copied to C order if it is not): a new C-ordered (m, n) array. O(nnz(S) · n)."""
    Y = np.ascontiguousarray(Y)
    out = np.empty((m, Y.shape[1]), dtype=data.dtype)
    _csr_dense_c(indptr, indices, data, Y, out)
    return out


def dense_csr(X, indptr, indices, data, n):
    """X @ S for X (m, k) a NumPy array of data's dtype and S CSR (k, n) given by its arrays:
    a new F-ordered (m, n) array (no copy of an F-ordered X). O(nnz(S) · m)."""
    XT = np.ascontiguousarray(X.T)
    outT = np.empty((n, X.shape[0]), dtype=data.dtype)
    _dense_f_csr(XT, indptr, indices, data, outT)
    return outT.T
