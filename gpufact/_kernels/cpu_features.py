"""Numba (CPU) kernels for random-feature maps: the cosine (and sine) of a projected batch,
with the random offset and the output scale fused into the same in-place pass.

Neither NumPy nor Numba (without Intel SVML) vectorises ``cos`` over float32 in parallel, and
at d = 784, D = 16384 the D cosines per sample cost as much as the structured product. Here
the argument is reduced (t = j·π/2 + r, |r| ≤ π/4) in float64 (two-part π/2 with fused
multiply-adds: exact to |t| ~ 1e15), or, for float32 arguments known to lie below 4096, in
float32 (``_reduce32``: twice the lanes), then ±cos r or ±sin r is evaluated by the minimax
polynomials of Cephes (``sinf``/``cosf`` in float32, ``sin``/``cos`` in float64); the
quadrant selects the branch by compare-and-blend, so the loop vectorises (AVX2: 4 lanes in
the reduction, 8 in the float32 polynomials). Rows run in parallel (``prange``).

Accuracy: ≤ 2 ulp of float32 for float32 data, ≤ 4e-16 absolute for float64 (tested against
``np.cos``). Cost: O(B·D), one read and one write of the output.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_FM = {"contract", "nsz", "arcp"}  # no "reassoc": it would undo the two-part reduction

_TWO_OVER_PI = 0.6366197723675814
_PIO2_HI = 1.5707963267948966
_PIO2_LO = 6.123233995736766e-17
# Above this |t| the two-constant reduction loses r (t·2/π and j·π/2 carry errors of the
# order of |t|·2^-53, and |r| may leave [-π/4, π/4], where the polynomials diverge: 2e5 at
# t = 1e17). Rows with larger arguments take libm's cos / sin (full-range reduction).
_REDUCE_MAX = 1048576.0


@njit(cache=True, fastmath=_FM, inline="always")
def _reduce(t):
    """(r, q): t = j·π/2 + r with |r| ≤ π/4 and q = j mod 4 (as a float), for
    |t| <= _REDUCE_MAX."""
    j = np.rint(t * _TWO_OVER_PI)
    r = (t - j * _PIO2_HI) - j * _PIO2_LO
    q = j - 4.0 * np.floor(j * 0.25)
    return r, q


@njit(cache=True, fastmath=_FM, inline="always")
def _poly32(r):
    """(cos r, sin r) in float32 for |r| ≤ π/4 (Cephes cosf/sinf)."""
    x = np.float32(r)
    z = x * x
    c = np.float32(1.0) - np.float32(0.5) * z + z * z * (
        (np.float32(2.443315711809948e-05) * z - np.float32(1.388731625493765e-03)) * z
        + np.float32(4.166664568298827e-02))
    s = x + x * z * ((np.float32(-1.9515295891e-4) * z + np.float32(8.3321608736e-3)) * z
                     - np.float32(1.6666654611e-1))
    return c, s


@njit(cache=True, fastmath=_FM, inline="always")
def _poly64(x):
    """(cos x, sin x) in float64 for |x| ≤ π/4 (Cephes cos/sin)."""
    z = x * x
    c = 1.0 - 0.5 * z + z * z * (((((-1.13585365213876817300e-11 * z + 2.08757008419747316778e-9) * z
                                    - 2.75573141792967388112e-7) * z + 2.48015872888517045348e-5) * z
                                  - 1.38888888888730564116e-3) * z + 4.16666666666665929218e-2)
    s = x + x * z * (((((1.58962301576546568060e-10 * z - 2.50507477628578072866e-8) * z
                        + 2.75573136213857245213e-6) * z - 1.98412698295895385996e-4) * z
                      + 8.33333333332211858878e-3) * z - 1.66666666666666307295e-1)
    return c, s


@njit(cache=True, fastmath=_FM, inline="always")
def _quadrant(c, s, q):
    """(cos t, sin t) from cos r, sin r and the quadrant q of t = j·π/2 + r."""
    odd = (q == 1.0) | (q == 3.0)
    cv = s if odd else c
    sv = c if odd else s
    cn = (q == 1.0) | (q == 2.0)  # cos t < 0 side: -sin r (q=1), -cos r (q=2)
    sn = (q == 2.0) | (q == 3.0)  # sin t: s, c, -s, -c
    return (-cv if cn else cv), (-sv if sn else sv)


@njit(cache=True, fastmath={"nnan", "ninf", "nsz"})
def _absmax(row):
    """max |row| (finite data: the estimators refuse NaN/inf before any kernel runs)."""
    m = np.float64(0.0)
    for j in range(row.shape[0]):
        a = np.float64(abs(row[j]))
        m = a if a > m else m
    return m


@njit(parallel=True, cache=True, fastmath=_FM)
def cos_features_f32(P, offset, scale):
    """P[i, j] <- scale · cos(P[i, j] + offset[j]), in place (float32 P and offset). Rows
    whose arguments are all below 4096 in magnitude reduce in float32 (``_reduce32``), the
    others in float64."""
    n, m = P.shape
    off_max = _absmax(offset)
    for i in prange(n):
        row = P[i]
        if _absmax(row) + off_max <= _F32_REDUCE_MAX:
            for j in range(m):
                r, q = _reduce32(row[j], offset[j])
                c, s = _poly32(r)
                cv, sv = _quadrant(c, s, q)
                row[j] = scale * cv
        elif _absmax(row) + off_max <= _REDUCE_MAX:
            for j in range(m):
                r, q = _reduce(np.float64(row[j]) + np.float64(offset[j]))
                c, s = _poly32(r)
                cv, sv = _quadrant(c, s, q)
                row[j] = scale * cv
        else:
            for j in range(m):
                row[j] = scale * np.float32(np.cos(np.float64(row[j]) + np.float64(offset[j])))


@njit(parallel=True, cache=True, fastmath=_FM)
def cos_features_f64(P, offset, scale):
    """P[i, j] <- scale · cos(P[i, j] + offset[j]), in place (float64 P and offset)."""
    n, m = P.shape
    off_max = _absmax(offset)
    for i in prange(n):
        row = P[i]
        if _absmax(row) + off_max <= _REDUCE_MAX:
            for j in range(m):
                r, q = _reduce(row[j] + offset[j])
                c, s = _poly64(r)
                cv, sv = _quadrant(c, s, q)
                row[j] = scale * cv
        else:
            for j in range(m):
                row[j] = scale * np.cos(row[j] + offset[j])


@njit(parallel=True, cache=True, fastmath=_FM)
def sincos_features_f32(P, out, scale):
    """out[i, :m] <- scale · cos P[i], out[i, m:] <- scale · sin P[i] (float32; P is (n, m));
    rows below 4096 in magnitude reduce in float32, as ``cos_features_f32``."""
    n, m = P.shape
    z = np.float32(0.0)
    for i in prange(n):
        row = P[i]
        oc = out[i, :m]
        os_ = out[i, m:]
        if _absmax(row) <= _F32_REDUCE_MAX:
            for j in range(m):
                r, q = _reduce32(row[j], z)
                c, s = _poly32(r)
                cv, sv = _quadrant(c, s, q)
                oc[j] = scale * cv
                os_[j] = scale * sv
        elif _absmax(row) <= _REDUCE_MAX:
            for j in range(m):
                r, q = _reduce(np.float64(row[j]))
                c, s = _poly32(r)
                cv, sv = _quadrant(c, s, q)
                oc[j] = scale * cv
                os_[j] = scale * sv
        else:
            for j in range(m):
                t = np.float64(row[j])
                oc[j] = scale * np.float32(np.cos(t))
                os_[j] = scale * np.float32(np.sin(t))


@njit(parallel=True, cache=True, fastmath=_FM)
def sincos_features_f64(P, out, scale):
    """out[i, :m] <- scale · cos P[i], out[i, m:] <- scale · sin P[i] (float64; P is (n, m))."""
    n, m = P.shape
    for i in prange(n):
        row = P[i]
        oc = out[i, :m]
        os_ = out[i, m:]
        if _absmax(row) <= _REDUCE_MAX:
            for j in range(m):
                r, q = _reduce(row[j])
                c, s = _poly64(r)
                cv, sv = _quadrant(c, s, q)
                oc[j] = scale * cv
                os_[j] = scale * sv
        else:
            for j in range(m):
                oc[j] = scale * np.cos(row[j])
                os_[j] = scale * np.sin(row[j])


# ---- the whole structured feature map in one pass -------------------------------------------
# Fastfood and SORF features are k independent N x N blocks (Hadamard runs with diagonals
# folded into the butterflies, Fastfood with a permutation in between) that all read the same
# zero-padded input. One KS chain over all k·N rows would carry k·N-row tiles (4 MB at
# N = 1024, k = 16, float32) through every level, far outside L2. Here a tile of bt samples is
# loaded (transposed) once into an N-row buffer, and each block runs its own levels on an
# N x bt tile that stays in L2, then its cosine (offset, scale) is taken in the same buffer and
# the block is stored (transposed) into its columns of the output: the structured product, the
# nonlinearity and the output write are one pass over memory.
from numba import types  # noqa: E402
from numba.core.extending import overload  # noqa: E402

from .cpu import _load_rows, _transpose8  # noqa: E402
from .cpu_tiles import _generic_step, _radix2_step, _zero_tail  # noqa: E402


def _poly(r, like):
    """(cos r, sin r) in the precision of ``like`` (float32: Cephes cosf/sinf)."""


@overload(_poly, jit_options={"fastmath": _FM}, inline="always")
def _poly_typed(r, like):
    if like == types.float32:
        return lambda r, like: _poly32(r)
    return lambda r, like: _poly64(r)


KIND_HADAMARD = 2  # a plain [[1, 1], [1, -1]] butterfly level: add/sub in place, no weights read


@njit(cache=True, fastmath=_FM)
def _hadamard_step_inplace(a, d, buf, bt):
    """One ±1 butterfly level (pattern (a, 2, 2, d)) in place on the tile rows. Rows i and
    i + d for i in a run of d consecutive rows are two contiguous runs of d·bt entries, so
    each group is one long elementwise loop (the loop's alias checks paid once per group,
    not once per row of bt entries)."""
    L = d * bt
    for al in range(a):
        b = al * 2 * L
        x0 = buf[b:b + L]
        x1 = buf[b + L:b + 2 * L]
        for t in range(L):
            u = x0[t]
            v = x1[t]
            x0[t] = u + v
            x1[t] = u - v


@njit(cache=True, fastmath=_FM)
def _hadamard_step4_inplace(a, d, buf, bt):
    """Two ±1 butterfly levels, (a, 2, 2, d) then (2a, 2, 2, d/2), in one pass over the tile:
    four contiguous runs of d/2·bt entries per group loaded once, both levels in registers,
    stored once."""
    L = (d // 2) * bt
    for al in range(a):
        b = al * 4 * L
        x0 = buf[b:b + L]
        x1 = buf[b + L:b + 2 * L]
        x2 = buf[b + 2 * L:b + 3 * L]
        x3 = buf[b + 3 * L:b + 4 * L]
        for t in range(L):
            u0 = x0[t] + x2[t]
            u2 = x0[t] - x2[t]
            u1 = x1[t] + x3[t]
            u3 = x1[t] - x3[t]
            x0[t] = u0 + u1
            x1[t] = u0 - u1
            x2[t] = u2 + u3
            x3[t] = u2 - u3


@njit(cache=True, fastmath=_FM, inline="always")
def _bf8(x0, x1, x2, x3, x4, x5, x6, x7):
    """Three ±1 butterfly levels on 8 values: pairs (m, m+4), then (m, m+2), then (m, m+1)."""
    a0, a4 = x0 + x4, x0 - x4
    a1, a5 = x1 + x5, x1 - x5
    a2, a6 = x2 + x6, x2 - x6
    a3, a7 = x3 + x7, x3 - x7
    b0, b2 = a0 + a2, a0 - a2
    b1, b3 = a1 + a3, a1 - a3
    b4, b6 = a4 + a6, a4 - a6
    b5, b7 = a5 + a7, a5 - a7
    return b0 + b1, b0 - b1, b2 + b3, b2 - b3, b4 + b5, b4 - b5, b6 + b7, b6 - b7


@njit(cache=True, fastmath=_FM)
def _hadamard_step8_inplace(a, d, buf, bt):
    """Three ±1 butterfly levels, (a, 2, 2, d), (2a, 2, 2, d/2), (4a, 2, 2, d/4) (d a multiple
    of 4), in one pass over the tile: eight contiguous runs of d/4·bt entries per group
    loaded once, stored once."""
    L = (d // 4) * bt
    for al in range(a):
        b = al * 8 * L
        r0 = buf[b:b + L]
        r1 = buf[b + L:b + 2 * L]
        r2 = buf[b + 2 * L:b + 3 * L]
        r3 = buf[b + 3 * L:b + 4 * L]
        r4 = buf[b + 4 * L:b + 5 * L]
        r5 = buf[b + 5 * L:b + 6 * L]
        r6 = buf[b + 6 * L:b + 7 * L]
        r7 = buf[b + 7 * L:b + 8 * L]
        for t in range(L):
            y0, y1, y2, y3, y4, y5, y6, y7 = _bf8(r0[t], r1[t], r2[t], r3[t], r4[t], r5[t], r6[t], r7[t])
            r0[t] = y0
            r1[t] = y1
            r2[t] = y2
            r3[t] = y3
            r4[t] = y4
            r5[t] = y5
            r6[t] = y6
            r7[t] = y7


#: shortest contiguous run (entries) for a radix-8 pass: below it the loop's setup (alias checks
#: of eight streams) costs more than the pass it saves (the last levels, d = 4, on 32-sample tiles)
_MIN_RUN = 64


@njit(cache=True, inline="always")
def _plain_run(plan, j, n):
    """Number (≤ n) of consecutive plain ±1 levels from step j that one pass can merge: each
    halves d and doubles a (one more bit of the same rows)."""
    m = 0
    while m < n and j + m < plan.shape[0] and plan[j + m, 0] == KIND_HADAMARD:
        if m > 0 and not (plan[j + m, 1] == 2 * plan[j + m - 1, 1] and 2 * plan[j + m, 4] == plan[j + m - 1, 4]):
            break
        m += 1
    return m


@njit(cache=True, fastmath=_FM)
def _run_steps(w, plan, src, buf0, buf1, bt, radix4):
    """Apply the plan's steps to ``src`` (left unchanged) through buf0/buf1; returns 0 or 1,
    the buffer that holds the result (0 if the plan is empty and src is buf0). Steps of
    kind KIND_HADAMARD run in place (the weights they carry are the plain butterfly). With
    ``radix4`` (the default path) consecutive plain levels are merged into passes over the
    tile: three per pass (``_hadamard_step8_inplace``) while each of its eight runs holds at
    least ``_MIN_RUN`` entries, else two, else one."""
    cur = -1
    j = 0
    while j < plan.shape[0]:
        if plan[j, 0] == KIND_HADAMARD and cur != -1:
            buf = buf0 if cur == 0 else buf1
            m = _plain_run(plan, j, 3) if radix4 else 1
            if m == 3 and plan[j, 4] % 4 == 0 and (plan[j, 4] // 4) * bt >= _MIN_RUN:
                _hadamard_step8_inplace(plan[j, 1], plan[j, 4], buf, bt)
                j += 3
            elif m >= 2:
                _hadamard_step4_inplace(plan[j, 1], plan[j, 4], buf, bt)
                j += 2
            else:
                _hadamard_step_inplace(plan[j, 1], plan[j, 4], buf, bt)
                j += 1
            continue
        s = src if cur == -1 else (buf0 if cur == 0 else buf1)
        nxt = 1 if cur == 0 else 0
        dst = buf0 if nxt == 0 else buf1
        if plan[j, 0] == 1 or plan[j, 0] == KIND_HADAMARD:
            _radix2_step(w, plan[j, 5], plan[j, 1], plan[j, 4], s, dst, bt)
        else:
            _generic_step(w, plan[j, 5], plan[j, 1], plan[j, 2], plan[j, 3], plan[j, 4], s, dst, bt)
        cur = nxt
        j += 1
    return cur


# The row loops below index the flat tile directly (no per-row array views: each view costs
# an atomic reference-count increment and decrement, which on rows of bt = 32 samples cost as
# much as the arithmetic).
@njit(cache=True, fastmath=_FM)
def _cos_rows(buf, n, bt, offset, o0, scale):
    """buf[i, :] <- scale · cos(buf[i, :] + offset[o0 + i]) for the n rows of a tile."""
    for i in range(n):
        b = np.float64(offset[o0 + i])
        base = i * bt
        if _absmax(buf[base:base + bt]) + abs(b) <= _REDUCE_MAX:
            for t in range(bt):
                x = buf[base + t]
                r, q = _reduce(np.float64(x) + b)
                c, s = _poly(r, x)
                cv, sv = _quadrant(c, s, q)
                buf[base + t] = scale * cv
        else:  # huge arguments: libm
            for t in range(bt):
                buf[base + t] = scale * np.cos(np.float64(buf[base + t]) + b)


@njit(cache=True, fastmath=_FM)
def _sincos_rows(buf, out_s, n, bt, scale):
    """buf[i, :] <- scale · cos buf[i, :], out_s[i, :] <- scale · sin buf[i, :]."""
    for i in range(n):
        base = i * bt
        if _absmax(buf[base:base + bt]) <= _REDUCE_MAX:
            for t in range(bt):
                x = buf[base + t]
                r, q = _reduce(np.float64(x))
                c, s = _poly(r, x)
                cv, sv = _quadrant(c, s, q)
                buf[base + t] = scale * cv
                out_s[base + t] = scale * sv
        else:  # huge arguments: libm
            for t in range(bt):
                x = np.float64(buf[base + t])
                buf[base + t] = scale * np.cos(x)
                out_s[base + t] = scale * np.sin(x)


# float32 tiles whose arguments are provably small (|t| <= _F32_REDUCE_MAX, from a bound on the
# operator's norm, see ``structured_features``) reduce in float32: t = x + b kept exact as
# s + e (TwoSum), j = rint(s·2/π), r = s − j·π/2 with π/2 in three parts (Cody–Waite, Cephes'
# split; j·P1 is exact for j < 2^15) plus e. Error ≤ 1e-7 absolute (tested against NumPy in
# float64), the same bound as the float64 reduction, at twice the float32 lanes per vector.
_PIO2_1F = np.float32(1.5703125)
_PIO2_2F = np.float32(4.837512969970703125e-4)
_PIO2_3F = np.float32(7.54978995489188216e-8)
_TWO_OVER_PI_F = np.float32(_TWO_OVER_PI)
_F32_REDUCE_MAX = 4096.0


@njit(cache=True, fastmath=_FM, inline="always")
def _reduce32(x, b):
    """(r, q) in float32 for t = x + b (float32 x, b; |t| <= _F32_REDUCE_MAX)."""
    s = x + b
    bb = s - x
    e = (x - (s - bb)) + (b - bb)
    j = np.rint(s * _TWO_OVER_PI_F)
    r = (((s - j * _PIO2_1F) - j * _PIO2_2F) - j * _PIO2_3F) + e
    q = j - np.float32(4.0) * np.floor(j * np.float32(0.25))
    return r, q


@njit(cache=True, fastmath=_FM)
def _cos_rows32(buf, n, bt, offset, o0, scale):
    """:func:`_cos_rows` for float32 tiles with every |buf + offset| <= _F32_REDUCE_MAX."""
    for i in range(n):
        b = offset[o0 + i]
        base = i * bt
        for t in range(bt):
            r, q = _reduce32(buf[base + t], b)
            c, s = _poly32(r)
            cv, sv = _quadrant(c, s, q)
            buf[base + t] = scale * cv


@njit(cache=True, fastmath=_FM)
def _sincos_rows32(buf, out_s, n, bt, scale):
    """:func:`_sincos_rows` for float32 tiles with every |buf| <= _F32_REDUCE_MAX."""
    z = np.float32(0.0)
    for i in range(n):
        base = i * bt
        for t in range(bt):
            r, q = _reduce32(buf[base + t], z)
            c, s = _poly32(r)
            cv, sv = _quadrant(c, s, q)
            buf[base + t] = scale * cv
            out_s[base + t] = scale * sv


def _small_args_path(like):
    """True when the float32 reduction applies to tiles of this dtype (float32 only)."""


@overload(_small_args_path, jit_options={"cache": True}, inline="always")
def _small_args_path_typed(like):
    if like == types.float32:
        return lambda like: True
    return lambda like: False


@njit(cache=True, fastmath=_FM)
def _tile_max_norm(bin_, d, nt, bt, sq):
    """max over the tile's nt samples of ‖x_t‖ (rows 0..d-1 of the tile), in float64."""
    for t in range(bt):
        sq[t] = 0.0
    for i in range(d):
        base = i * bt
        for t in range(nt):
            v = np.float64(bin_[base + t])
            sq[t] += v * v
    m = 0.0
    for t in range(nt):
        if sq[t] > m:
            m = sq[t]
    return np.sqrt(m)


@njit(cache=True)
def _store_block(buf, bt, y, ldy, col0, b0, nt, n):
    """y[(b0 + t)·ldy + col0 + i] = buf[i·bt + t] for i < n, t < nt (8 x 8 vector transposes)."""
    n8 = n - n % 8
    t8 = nt - nt % 8
    for i0 in range(0, n8, 8):
        for t0 in range(0, t8, 8):
            _transpose8(buf, i0 * bt + t0, bt, y, (b0 + t0) * ldy + col0 + i0, ldy)
    for t in range(t8, nt):
        for i in range(n8):
            y[(b0 + t) * ldy + col0 + i] = buf[i * bt + t]
    for i in range(n8, n):
        for t in range(nt):
            y[(b0 + t) * ldy + col0 + i] = buf[i * bt + t]


@njit(cache=True, fastmath=_FM)
def _permute_rows(src, perm, dst, bt):
    for i in range(perm.shape[0]):
        s = src[perm[i] * bt:(perm[i] + 1) * bt]
        d = dst[i * bt:(i + 1) * bt]
        for t in range(bt):
            d[t] = s[t]


@njit(parallel=True, cache=True, fastmath=_FM)
def structured_features(W1, plan1, perm, W2, plan2, N, X, Y, offset, scale, sincos, bt, nthreads,
                        radix4, norm_bound):
    """Random features of k structured N x N blocks, fused with their cosine.

    X : (B, d) C-contiguous samples, d <= N (zero-padded to N in the tile).
    W1 : (k, n1) per-block weights of ``plan1`` (KS steps, see ``make_plan``); perm : (k, N)
    int64 per-block row permutations applied after plan1, or shape (k, 0) for none;
    W2 : (k, n2) weights of ``plan2`` (may have no steps). Y : (B, M) (cos) or (B, 2·M)
    (``sincos``: cosines in the first M columns, sines in the last), C-contiguous, dtype of
    X and the weights, with (k−1)·N < M ≤ k·N: the first M rows of the stacked blocks are
    kept (block j's in columns j·N …). cos: Y = scale · cos(Z + offset) (offset (≥ M,));
    sincos: scale · [cos Z, sin Z].
    norm_bound : (k,) float64, an upper bound on each block's spectral norm: float32
    tiles with ``norm_bound[j] · max_t ‖x_t‖ + max |offset| <= 4096`` take their cosines
    with the float32 argument reduction (see ``_reduce32``), other tiles (and float64) the
    float64 one; an empty array: always float64.
    Plain ±1 butterfly levels (plan kind KIND_HADAMARD) run in place as add/sub; with
    ``radix4`` up to three levels per pass, each group of rows as contiguous runs of the tile
    (see ``_run_steps``; ``radix4=False``, one level per pass, gives the same bits). Time
    O(B · k · (N log N)); memory three N x bt tiles per thread.
    """
    B, d = X.shape
    k = W1.shape[0]
    ldy = Y.shape[1]
    M = ldy // 2 if sincos else ldy  # rows of the stacked blocks kept (≤ k·N)
    y = Y.reshape(-1)
    ntiles = (B + bt - 1) // bt
    nth = max(1, min(nthreads, ntiles))
    has_perm = perm.shape[1] > 0
    small = _small_args_path(scale) and norm_bound.shape[0] > 0
    off_max = 0.0
    if small and not sincos:
        for i in range(M):
            off_max = max(off_max, abs(np.float64(offset[i])))
    for th in prange(nth):
        bin_ = np.zeros(N * bt, dtype=Y.dtype)  # rows d..N-1 stay zero: the padding
        buf0 = np.empty(N * bt, dtype=Y.dtype)
        buf1 = np.empty(N * bt, dtype=Y.dtype)
        sq = np.empty(bt, dtype=np.float64)
        for ti in range(th, ntiles, nth):
            b0 = ti * bt
            nt = min(bt, B - b0)
            _load_rows(X, b0, nt, bin_, bt)
            if nt < bt:
                _zero_tail(bin_, d, nt, bt, bt)
            xmax = _tile_max_norm(bin_, d, nt, bt, sq) if small else 0.0
            for j in range(k):
                rows = min(N, M - j * N)  # the last block may be cut to the M rows kept
                cur = _run_steps(W1[j], plan1, bin_, buf0, buf1, bt, radix4)
                if has_perm:
                    _permute_rows(buf0 if cur == 0 else buf1, perm[j], buf1 if cur == 0 else buf0, bt)
                    cur = 1 - cur
                if plan2.shape[0] > 0:  # from buffer cur; first step writes the other one
                    c2 = _run_steps(W2[j], plan2, buf0 if cur == 0 else buf1,
                                    buf1 if cur == 0 else buf0, buf0 if cur == 0 else buf1, bt, radix4)
                    cur = (1 - cur) if c2 == 0 else cur
                res = buf0 if cur == 0 else buf1
                spare = buf1 if cur == 0 else buf0
                fast = small and norm_bound[j] * xmax + off_max <= _F32_REDUCE_MAX
                if sincos:
                    if fast:
                        _sincos_rows32(res, spare, rows, bt, scale)
                    else:
                        _sincos_rows(res, spare, rows, bt, scale)
                    _store_block(res, bt, y, ldy, j * N, b0, nt, rows)
                    _store_block(spare, bt, y, ldy, M + j * N, b0, nt, rows)
                else:
                    if fast:
                        _cos_rows32(res, rows, bt, offset, j * N, scale)
                    else:
                        _cos_rows(res, rows, bt, offset, j * N, scale)
                    _store_block(res, bt, y, ldy, j * N, b0, nt, rows)
