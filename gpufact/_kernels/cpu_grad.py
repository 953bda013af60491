"""Numba (CPU) kernels for gradients through Kronecker-sparse (KS) factors.

Notation of :mod:`gpufact._kernels.reference`: a KS factor of pattern (a, b, c, d) stores its
blocks (a, d, b, c); ``blocks[α, δ, r, s]`` sits at row α·b·d + r·d + δ and column
α·c·d + s·d + δ. For Y = S X with upstream gradient G = ∂ℓ/∂Y (columns are samples), the
gradients are (PyTorch's convention for complex data, the conjugate Wirtinger derivative):

* ∂ℓ/∂X = Sᴴ G;
* ∂ℓ/∂blocks[α, δ, r, s] = Σ_t G[α·b·d + r·d + δ, t] · conj(X[α·c·d + s·d + δ, t]).

Kernels:

* :func:`ks_grad` — the block gradient of one factor (twin of ``reference.ks_grad`` and of
  ``kernels/ks_grad.cu``): (α, δ) blocks in parallel, O(nnz · B) time, no extra memory.
* :func:`ks_chain_vjp` — both gradients through a chain of J KS factors in **one pass over
  memory**, two levels of blocking: the batch is cut into tiles of ``bt`` samples, and the
  chain into two parts whose products are KS patterns, i.e. sets of independent groups of
  features (:func:`vjp_plan`; for a butterfly of size N, about √N groups of √N features
  each). Per tile, the activation between the parts is computed group by group; then per
  group of the left part, then of the right part, the group's activations are recomputed
  in a small local buffer (cache-resident) and the gradient runs back through them,
  adding each factor's block gradient into per-thread sums and propagating G ← Sᴴ G.
  Groups read their rows of X and G and write their rows of ∂ℓ/∂X directly. Time ≈
  3 · O(B · Σ nnz_j) plus the right part's forward once more; extra memory (per thread:
  one activation and the local buffers, (n_mid + local) · bt; block sums for the threads
  after the first; one copy of the weights) at most 2 · B · N elements wherever the stored
  weights leave room (:func:`vjp_tile_width`) — never the J · B · N of stored
  activations, nor J activations per tile. Both layouts (samples as columns or as rows)
  without transposed copies of the batch.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from .cpu import _FASTMATH, _transpose8
from .cpu_tiles import _generic_step_strided, _pair, _row, _zero_tail

TILE_WIDTH = 64  # samples per tile: the loops over a tile row vectorise (8 lanes x 4
# interleaved) only from ~64 samples: N = 1024 butterfly, B = 128: bt 16 -> 4.0 ms, 64 -> 1.2 ms
TILE_MIN = 1  # tiny batches: one tile of B samples (the 8 x 8 transposes fall back to scalar loops)
MEMORY_BOUND = 2.0  # extra memory of a call at most this many B x max(N, M) arrays (when it can be met)


def _pair_product(p, q):
    """KS pattern of the product of two chainable patterns (product order), or None."""
    a1, b1, c1, d1 = p
    a2, b2, c2, d2 = q
    if a1 * c1 * d1 != a2 * b2 * d2 or d1 % d2 or (b2 * d2) % d1 or (c1 * d1) % (b2 * d2):
        return None
    return (a1, b1 * d1 // d2, a2 * c2 // a1, d2)


def _part(patterns, steps):
    """Group decomposition of consecutive steps (application order) of a chain: their product
    has pattern (a, b, c, d), i.e. a·d independent groups — group (α, δ) maps inputs
    α·c·d + s·d + δ (s < c) to outputs α·b·d + r·d + δ (r < b) — and on each group step j
    acts as the reduced pattern (a_j / a, b_j, c_j, d_j / d) (as in the recursion of
    :func:`gpufact.factorize.ksfactor`): its local block (α', δ') is the global block
    (α·a_j/a + α')·d_j + δ'·d + δ. Returns (pattern, reduced patterns) or None when the steps
    are not chainable."""
    prod = patterns[steps[-1]]
    for j in reversed(steps[:-1]):  # product order: last applied first
        prod = _pair_product(prod, patterns[j])
        if prod is None:
            return None
    a, b, c, d = prod
    red = []
    for j in steps:
        aj, bj, cj, dj = patterns[j]
        if aj % a or dj % d:
            return None
        red.append((aj // a, bj, cj, dj // d))
    return prod, red


def _local_rows(red):
    """(Σ rows entering the steps, largest row count) of a reduced chain."""
    dims = [a * c * d for a, b, c, d in red] + [red[-1][0] * red[-1][1] * red[-1][3]]
    return sum(dims[:-1]), max(dims)


@functools.lru_cache(maxsize=64)
def vjp_plan(patterns, split=None):
    """Two-level plan of :func:`ks_chain_vjp` for KS patterns in application order.

    The chain is split after step h into a right part (steps < h, applied first) and a left
    part, each a set of independent groups (:func:`_part`); h balances the groups' working
    sets (the largest group chain, activations plus two gradient rows, is smallest; ties:
    the smaller h, less recomputation). A chain that does not split (one step, or not
    chainable) is one part of one group.

    ``split`` forces h (benchmarks). Returns (parts, lplan, mid, local_acts, local_max):
    parts int64 (2, 6) rows (first step, end step, a, b, c, d) — row 0 the right part (end
    = first when absent), row 1 the left; lplan int64 (S, 9) the reduced steps (kind, a', b,
    c, d', weight offset of the step, d_j, d, a'·d_j): local block (α', δ') of group (α, δ)
    starts at offset + ((α·a'·d_j + δ) + α'·d_j + δ'·d)·b·c; mid, the rows between the parts; local_acts and local_max, the
    largest Σ of a group's activation rows and the largest row count of a group step (a
    thread's local buffers: local_acts + 2 · local_max rows)."""
    pats = [tuple(int(v) for v in p) for p in patterns]
    S = len(pats)
    offsets = np.cumsum([0] + [a * b * c * d for a, b, c, d in pats])[:-1]
    best = None
    for h in (range(1, S) if split is None else [split] if split > 0 else []):
        right, left = _part(pats, list(range(h))), _part(pats, list(range(h, S)))
        if right is None or left is None:
            continue
        work = max(sum(_local_rows(right[1])) + _local_rows(right[1])[1],
                   sum(_local_rows(left[1])) + _local_rows(left[1])[1])
        if best is None or work < best[0]:
            best = (work, h, right, left)
    a, b, c, d = pats[0]
    if best is None:  # one part, one group: the whole chain per tile
        h, right = 0, None
        la, lb, lc, ld = pats[-1]
        left = ((1, la * lb * ld, a * c * d, 1), pats)
    else:
        _, h, right, left = best
    parts = np.zeros((2, 6), dtype=np.int64)
    lplan = np.zeros((S, 9), dtype=np.int64)
    local_acts = local_max = 0
    for row, (part, s0, s1) in enumerate(((right, 0, h), (left, h, S))):
        parts[row, 0:2] = (s0, s1)
        if part is None:
            continue
        (pa, pb, pc, pd), red = part
        parts[row, 2:6] = (pa, pb, pc, pd)
        for j, (ra, rb, rc, rd) in zip(range(s0, s1), red):
            dj = pats[j][3]
            lplan[j] = (1 if rb == 2 and rc == 2 else 0, ra, rb, rc, rd, offsets[j], dj, pd, ra * dj)
        acts, mx = _local_rows(red)
        local_acts, local_max = max(local_acts, acts), max(local_max, mx)
    mid = a * c * d if right is None else right[0][0] * right[0][1] * right[0][3]
    return parts, lplan, int(mid), int(local_acts), int(local_max)


def vjp_memory(plan_info, n_in: int, n_out: int, nnz: int, bt: int, threads: int, x_tile: bool = False) -> int:
    """Extra elements of a :func:`ks_chain_vjp` call beyond its outputs: per thread the
    activation between the parts (mid rows of bt samples), the local group buffers
    (local_acts + 2 · local_max rows) and, when the left groups' rows are strided, the
    upstream gradient's tile (n_out rows), with ``x_tile`` the input's tile (n_in rows);
    block sums for threads 2, 3, … (nnz each; the first
    thread sums into the output); the concatenated weights (nnz)."""
    parts, _, mid, local_acts, local_max = plan_info
    per_sample = mid + local_acts + 2 * local_max + (n_out if parts[1, 5] > 1 else 0) + (n_in if x_tile else 0)
    return threads * per_sample * bt + threads * nnz


def vjp_x_tile(plan_info, n_in: int, n_out: int, nnz: int, B: int, bt: int, threads: int) -> bool:
    """Whether :func:`ks_chain_vjp` holds X's tile (n_in rows per thread): X is then read
    from memory once rather than twice (the right part's groups read their rows twice; with
    X beyond the caches, N = 1024 butterfly, B = 4096: 1.4x, one thread, measured) — when
    the chain has two parts and the extra n_in · bt per thread stays within the bound."""
    parts = plan_info[0]
    if parts[0, 1] <= parts[0, 0]:
        return False
    return vjp_memory(plan_info, n_in, n_out, nnz, bt, threads, True) <= MEMORY_BOUND * B * max(n_in, n_out)


def vjp_tile_width(plan_info, n_in: int, n_out: int, nnz: int, B: int, threads: int):
    """(samples per tile, threads) of :func:`ks_chain_vjp` for a batch of B.

    Tiles are TILE_WIDTH samples, or a smaller power of two (at least TILE_MIN): the row
    loops vectorise 8 lanes x 4 and a width off a multiple of 32 runs a scalar remainder
    (N = 1024 Monarch, B = 256: bt 56 2x slower than 64 or 32, measured); no wider than an
    even share of the batch. Where the extra memory (:func:`vjp_memory`) would exceed
    MEMORY_BOUND · B · max(n_in, n_out), narrower tiles and, if that leaves tiles under 32
    samples, fewer threads — the most samples in flight (threads · bt) within the bound.
    When no choice meets it (a few samples against many stored weights: the block sums
    alone exceed it), one thread and the narrowest tile."""
    budget = MEMORY_BOUND * B * max(n_in, n_out)
    best = None
    for th in range(max(1, threads), 0, -1):
        share = -(-B // th)
        bt = TILE_WIDTH
        while bt > TILE_MIN and (bt > share or vjp_memory(plan_info, n_in, n_out, nnz, bt, th) > budget):
            bt //= 2
        if vjp_memory(plan_info, n_in, n_out, nnz, bt, th) > budget:
            continue
        t_eff = max(1, min(th, -(-B // bt)))
        if bt >= 32 or 2 * bt > share:
            return bt, t_eff
        if best is None or t_eff * bt > best[0] * best[1]:
            best = (t_eff, bt)
    if best is None:
        return TILE_MIN, 1
    return best[1], best[0]


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def ks_grad(Xc, Gc, out, accumulate):
    """out (a, d, b, c) <- (+=, if ``accumulate``) block gradient of one KS factor:
    out[α, δ, r, s] = Σ_t Gc[α·b·d + r·d + δ, t] · conj(Xc[α·c·d + s·d + δ, t]).

    Xc : (a·c·d, B) and Gc : (a·b·d, B), logical column views of any strides, dtype of out.
    """
    a, d, b, c = out.shape
    B = Xc.shape[1]
    zero = np.zeros(1, dtype=out.dtype)[0]
    for q in prange(a * d):
        al = q // d
        de = q - al * d
        for r in range(b):
            gi = al * b * d + r * d + de
            for s in range(c):
                xi = al * c * d + s * d + de
                acc = zero
                for t in range(B):
                    acc += Gc[gi, t] * np.conj(Xc[xi, t])
                if accumulate:
                    out[al, de, r, s] += acc
                else:
                    out[al, de, r, s] = acc


@njit(cache=True, fastmath=_FASTMATH)
def _radix2_back(w, off, sa, sd, a, d, x, gout, gin, acc, bt, want_in, zero):
    """Backward of a butterfly step (2 × 2 blocks) on one tile: block (α, δ) at
    k = off + 4 (α·sa + δ·sd), acc[k + 2r + s] += Σ_t gout_r[t] conj(x_s[t]); if
    ``want_in``, gin <- (block)ᴴ gout."""
    for al in range(a):
        for de in range(d):
            k = off + (al * sa + de * sd) * 4
            i0 = al * 2 * d + de
            x0 = _row(x, i0, bt)
            x1 = _row(x, i0 + d, bt)
            g0 = _row(gout, i0, bt)
            g1 = _row(gout, i0 + d, bt)
            s00 = zero
            s01 = zero
            s10 = zero
            s11 = zero
            for t in range(bt):
                u = np.conj(x0[t])
                v = np.conj(x1[t])
                s00 += g0[t] * u
                s01 += g0[t] * v
                s10 += g1[t] * u
                s11 += g1[t] * v
            acc[k] += s00
            acc[k + 1] += s01
            acc[k + 2] += s10
            acc[k + 3] += s11
            if want_in:
                w00 = np.conj(w[k])
                w01 = np.conj(w[k + 1])
                w10 = np.conj(w[k + 2])
                w11 = np.conj(w[k + 3])
                y0 = _row(gin, i0, bt)
                y1 = _row(gin, i0 + d, bt)
                for t in range(bt):
                    p = g0[t]
                    q = g1[t]
                    y0[t] = w00 * p + w10 * q
                    y1[t] = w01 * p + w11 * q


@njit(cache=True, fastmath=_FASTMATH)
def _generic_back(w, off, sa, sd, a, b, c, d, x, gout, gin, acc, bt, want_in, zero):
    """Backward of a generic KS step (a, b, c, d) on one tile (see :func:`_radix2_back`).

    Four gradient rows r at a time: per input row s one sweep of the samples computes the
    four block-gradient sums and, if ``want_in``, adds their four terms to gin's row s (4
    sums and 4 FMAs per 5 loads and 1 read-modify-write, against 2 passes per (r, s) pair):
    32 x 32 blocks, 64 samples, one thread 1.8x faster (AMD EPYC, AVX2)."""
    b4 = b - b % 4
    for al in range(a):
        for de in range(d):
            base = off + (al * sa + de * sd) * b * c
            xi = al * c * d + de
            gi = al * b * d + de
            if want_in:
                for s in range(c):
                    y = _row(gin, xi + s * d, bt)
                    for t in range(bt):
                        y[t] = zero
            for r in range(0, b4, 4):
                g0 = _row(gout, gi + r * d, bt)
                g1 = _row(gout, gi + (r + 1) * d, bt)
                g2 = _row(gout, gi + (r + 2) * d, bt)
                g3 = _row(gout, gi + (r + 3) * d, bt)
                k = base + r * c
                for s in range(c):
                    xs = _row(x, xi + s * d, bt)
                    s0 = zero
                    s1 = zero
                    s2 = zero
                    s3 = zero
                    if want_in:
                        w0 = np.conj(w[k + s])
                        w1 = np.conj(w[k + c + s])
                        w2 = np.conj(w[k + 2 * c + s])
                        w3 = np.conj(w[k + 3 * c + s])
                        y = _row(gin, xi + s * d, bt)
                        for t in range(bt):
                            u = np.conj(xs[t])
                            p0 = g0[t]
                            p1 = g1[t]
                            p2 = g2[t]
                            p3 = g3[t]
                            s0 += p0 * u
                            s1 += p1 * u
                            s2 += p2 * u
                            s3 += p3 * u
                            y[t] += w0 * p0 + w1 * p1 + w2 * p2 + w3 * p3
                    else:
                        for t in range(bt):
                            u = np.conj(xs[t])
                            s0 += g0[t] * u
                            s1 += g1[t] * u
                            s2 += g2[t] * u
                            s3 += g3[t] * u
                    acc[k + s] += s0
                    acc[k + c + s] += s1
                    acc[k + 2 * c + s] += s2
                    acc[k + 3 * c + s] += s3
            for r in range(b4, b):
                g = _row(gout, gi + r * d, bt)
                for s in range(c):
                    xs = _row(x, xi + s * d, bt)
                    sm = zero
                    for t in range(bt):
                        sm += g[t] * np.conj(xs[t])
                    acc[base + r * c + s] += sm
                    if want_in:
                        wv = np.conj(w[base + r * c + s])
                        y = _row(gin, xi + s * d, bt)
                        for t in range(bt):
                            y[t] += wv * g[t]


@njit(cache=True)
def _gather(src, base, stride, n, dst, bt):
    """dst rows 0 .. n-1 <- src rows base, base + stride, ... (rows of bt samples)."""
    for i in range(n):
        x = _row(src, base + i * stride, bt)
        y = _row(dst, i, bt)
        for t in range(bt):
            y[t] = x[t]


@njit(cache=True)
def _scatter(src, n, dst, base, stride, bt):
    """The inverse of :func:`_gather`: dst rows base + i·stride <- src rows i."""
    for i in range(n):
        x = _row(src, i, bt)
        y = _row(dst, base + i * stride, bt)
        for t in range(bt):
            y[t] = x[t]


@njit(cache=True, fastmath=_FASTMATH)
def _local_step(w, off, lp, j, src, dst, bt):
    """Forward of reduced step j of a group (blocks at off + (α'·sa + δ'·sd)·b·c)."""
    a, b, c, d, sa, sd = lp[j, 1], lp[j, 2], lp[j, 3], lp[j, 4], lp[j, 6], lp[j, 7]
    if lp[j, 0] == 1:
        for al in range(a):
            for de in range(d):
                k = off + (al * sa + de * sd) * 4
                i0 = al * 2 * d + de
                _pair(w[k], w[k + 1], w[k + 2], w[k + 3], _row(src, i0, bt), _row(src, i0 + d, bt),
                      _row(dst, i0, bt), _row(dst, i0 + d, bt), bt)
    else:
        _generic_step_strided(w, off, a, b, c, d, sa, sd, src, dst, bt)


@njit(cache=True, inline="always")
def _group_off(lp, j, al, de):
    """Weight offset of reduced step j's block (0, 0) in group (al, de)."""
    return lp[j, 5] + (al * lp[j, 8] + de) * lp[j, 2] * lp[j, 3]


@njit(cache=True)
def _gather_arr(A, a_rows, b0, nt, base, stride, n, dst, bt):
    """dst rows i < n (bt samples each) <- feature base + i·stride of samples b0 .. b0+nt-1
    of A ((B, n_A) if ``a_rows`` else (n_A, B), C-contiguous); samples nt .. bt-1 zero.
    Contiguous features of row-major samples: 8 x 8 vector transposes."""
    if a_rows:
        F = A.shape[1]
        if stride == 1:
            a = A.reshape(-1)
            n8 = n - n % 8
            t8 = nt - nt % 8
            for t0 in range(0, t8, 8):
                for i0 in range(0, n8, 8):
                    _transpose8(a, (b0 + t0) * F + base + i0, F, dst, i0 * bt + t0, bt)
            for t in range(t8, nt):
                for i in range(n8):
                    dst[i * bt + t] = A[b0 + t, base + i]
            for i in range(n8, n):
                for t in range(nt):
                    dst[i * bt + t] = A[b0 + t, base + i]
        else:
            for t in range(nt):
                for i in range(n):
                    dst[i * bt + t] = A[b0 + t, base + i * stride]
    else:
        for i in range(n):
            ar = A[base + i * stride, b0:b0 + nt]
            y = dst[i * bt:i * bt + nt]
            for t in range(nt):
                y[t] = ar[t]
    if nt < bt:  # padding samples: zero (a reused buffer may hold NaN bit patterns)
        _zero_tail(dst, n, nt, bt, bt)


@njit(cache=True)
def _scatter_arr(src, n, A, a_rows, b0, nt, base, stride, bt):
    """The inverse of :func:`_gather_arr` (samples nt .. bt-1 not written)."""
    if a_rows:
        F = A.shape[1]
        if stride == 1:
            a = A.reshape(-1)
            n8 = n - n % 8
            t8 = nt - nt % 8
            for i0 in range(0, n8, 8):
                for t0 in range(0, t8, 8):
                    _transpose8(src, i0 * bt + t0, bt, a, (b0 + t0) * F + base + i0, F)
            for t in range(t8, nt):
                for i in range(n8):
                    A[b0 + t, base + i] = src[i * bt + t]
            for i in range(n8, n):
                for t in range(nt):
                    A[b0 + t, base + i] = src[i * bt + t]
        else:
            for t in range(nt):
                for i in range(n):
                    A[b0 + t, base + i * stride] = src[i * bt + t]
    else:
        for i in range(n):
            ar = A[base + i * stride, b0:b0 + nt]
            x = src[i * bt:i * bt + nt]
            for t in range(nt):
                ar[t] = x[t]


@njit(cache=True, fastmath=_FASTMATH)
def _group_forward(w, lp, part, al, de, cur, oth, bt):
    """The part's steps on group (al, de), its inputs in rows of ``cur``; returns the buffer
    (cur or oth) that holds its outputs."""
    for j in range(part[0], part[1]):
        _local_step(w, _group_off(lp, j, al, de), lp, j, cur, oth, bt)
        cur, oth = oth, cur
    return cur


@njit(cache=True, fastmath=_FASTMATH)
def _group_backward(w, lp, part, al, de, want_in, acts, gb0, gb1, acc, bt, zero):
    """Group (al, de) of a part, its inputs in the first rows of ``acts`` and the gradient
    of its outputs in gb0: recompute its activations in ``acts``, run the gradient back
    through its steps adding the block gradients into acc. Returns the buffer (gb0 or gb1)
    holding the gradient of its inputs (computed if ``want_in``)."""
    s0, s1 = part[0], part[1]
    o = 0
    for j in range(s0, s1 - 1):
        n_in = lp[j, 1] * lp[j, 3] * lp[j, 4] * bt
        n_out = lp[j, 1] * lp[j, 2] * lp[j, 4] * bt
        _local_step(w, _group_off(lp, j, al, de), lp, j, acts[o:o + n_in], acts[o + n_in:o + n_in + n_out], bt)
        o += n_in
    cur = 0
    for j in range(s1 - 1, s0 - 1, -1):
        n_in = lp[j, 1] * lp[j, 3] * lp[j, 4] * bt
        x = acts[o:o + n_in]
        gout = gb0 if cur == 0 else gb1
        gin = gb1 if cur == 0 else gb0
        win = j > s0 or want_in
        off = _group_off(lp, j, al, de)
        if lp[j, 0] == 1:
            _radix2_back(w, off, lp[j, 6], lp[j, 7], lp[j, 1], lp[j, 4], x, gout, gin, acc, bt, win, zero)
        else:
            _generic_back(w, off, lp[j, 6], lp[j, 7], lp[j, 1], lp[j, 2], lp[j, 3], lp[j, 4], x, gout, gin, acc,
                          bt, win, zero)
        cur = 1 - cur
        if j > s0:
            o -= lp[j - 1, 1] * lp[j - 1, 3] * lp[j - 1, 4] * bt
    return gb0 if cur == 0 else gb1


@njit(cache=True, fastmath=_FASTMATH)
def _vjp_tile(w, lp, parts, X, x_rows, G, g_rows, GX, need_x, bt, ti, zb, gt, xt, x_tile, acts, gb0, gb1, acc,
              zero):
    """Samples ti·bt .. of :func:`ks_chain_vjp`: groups read their rows of X and G and write
    their rows of GX directly; tile-wide buffers: the activation between the parts (zb),
    when the left groups' rows of G are strided G's tile (gt, loaded by 8 x 8 transposes),
    and if ``x_tile`` X's tile (xt: read once from memory, not twice; then GX's tile)."""
    right = parts[0]
    left = parts[1]
    has_right = right[1] > right[0]
    B = X.shape[0] if x_rows else X.shape[1]
    b0 = ti * bt
    nt = min(bt, B - b0)
    ra, rb, rc, rd = right[2], right[3], right[4], right[5]
    la, lb, lc, ld = left[2], left[3], left[4], left[5]
    if ld > 1:
        _gather_arr(G, g_rows, b0, nt, 0, 1, G.shape[1] if g_rows else G.shape[0], gt, bt)
    N = X.shape[1] if x_rows else X.shape[0]
    if x_tile:
        _gather_arr(X, x_rows, b0, nt, 0, 1, N, xt, bt)
    if has_right:  # (1) the activation between the parts, group by group (forward only)
        for g in range(ra * rd):
            al = g // rd
            de = g - al * rd
            if x_tile:
                _gather(xt, al * rc * rd + de, rd, rc, gb0, bt)
            else:
                _gather_arr(X, x_rows, b0, nt, al * rc * rd + de, rd, rc, gb0, bt)
            out = _group_forward(w, lp, right, al, de, gb0, gb1, bt)
            _scatter(out, rb, zb, al * rb * rd + de, rd, bt)
    for g in range(la * ld):  # (2) left groups; their input gradient overwrites zb
        al = g // ld
        de = g - al * ld
        if has_right:
            _gather(zb, al * lc * ld + de, ld, lc, acts, bt)
        else:
            _gather_arr(X, x_rows, b0, nt, al * lc * ld + de, ld, lc, acts, bt)
        if ld > 1:
            _gather(gt, al * lb * ld + de, ld, lb, gb0, bt)
        else:
            _gather_arr(G, g_rows, b0, nt, al * lb * ld + de, 1, lb, gb0, bt)
        res = _group_backward(w, lp, left, al, de, has_right or need_x, acts, gb0, gb1, acc, bt, zero)
        if has_right:
            _scatter(res, lc, zb, al * lc * ld + de, ld, bt)
        elif need_x:
            _scatter_arr(res, lc, GX, x_rows, b0, nt, al * lc * ld + de, ld, bt)
    if has_right:  # (3) right groups, from their input rows, the gradient in zb
        for g in range(ra * rd):
            al = g // rd
            de = g - al * rd
            if x_tile:
                _gather(xt, al * rc * rd + de, rd, rc, acts, bt)
            else:
                _gather_arr(X, x_rows, b0, nt, al * rc * rd + de, rd, rc, acts, bt)
            _gather(zb, al * rb * rd + de, rd, rb, gb0, bt)
            res = _group_backward(w, lp, right, al, de, need_x, acts, gb0, gb1, acc, bt, zero)
            if need_x:
                if x_tile:  # the group's input rows of xt are no longer needed
                    _scatter(res, rc, xt, al * rc * rd + de, rd, bt)
                else:
                    _scatter_arr(res, rc, GX, x_rows, b0, nt, al * rc * rd + de, rd, bt)
        if x_tile and need_x:
            _scatter_arr(xt, N, GX, x_rows, b0, nt, 0, 1, bt)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def ks_chain_vjp(w, lplan, parts, mid, local_acts, local_max, X, x_rows, G, g_rows, GX, need_x, dW, dW_more, bt,
                 nthreads, x_tile):
    """Gradients through a KS chain, fused, activations recomputed per tile and per group.

    Per tile of bt samples (:func:`vjp_plan` for the two parts and their groups): (1) the
    tile's activation between the parts, group by group of the right part (forward only);
    (2) per group of the left part, its activations recomputed in a small local buffer and
    the upstream gradient run back through them, the input gradient overwriting the
    activation; (3) the same for the right part's groups, from the input rows, writing
    their rows of ∂ℓ/∂X. A group's working set (a few hundred rows of bt samples for
    N = 8192) stays in cache; the only tile-wide buffer is the activation between the parts
    (mid rows), and G's tile when the left groups' rows of it are strided; the right
    part's forward runs twice (h − 1 extra steps of S).

    w : 1-D weights (every factor's blocks (a, d, b, c) concatenated in application order,
        as for :func:`gpufact._kernels.cpu.ks_chain_apply`); lplan, parts, mid, local_acts,
        local_max : :func:`vjp_plan`. X : C-contiguous input batch, (B, N) if ``x_rows`` else
        (N, B); G : C-contiguous upstream gradient, (B, M) if ``g_rows`` else (M, B); GX :
        ∂ℓ/∂X, laid out as X (written only if ``need_x``). dW : (nnz,) the block gradients
        (overwritten: the first thread's sums, then the others' rows of dW_more, (nthreads −
        1, nnz), added). All arrays of one dtype. bt : samples per tile. x_tile : hold X's
        tile in a buffer (read X once; :func:`vjp_x_tile`).
    """
    B = X.shape[0] if x_rows else X.shape[1]
    g_tile = G.shape[1] if g_rows else G.shape[0]
    x_len = X.shape[1] if x_rows else X.shape[0]
    ntiles = (B + bt - 1) // bt
    nth = max(1, min(nthreads, ntiles))
    zero = np.zeros(1, dtype=dW.dtype)[0]
    for th in prange(nth):
        acc = dW if th == 0 else dW_more[th - 1]
        acc[:] = zero
        zb = np.empty(mid * bt + 8, dtype=dW.dtype)
        gt = np.empty((g_tile * bt if parts[1, 5] > 1 else 0) + 8, dtype=dW.dtype)
        xt = np.empty((x_len * bt if x_tile else 0) + 8, dtype=dW.dtype)
        acts = np.empty(local_acts * bt + 8, dtype=dW.dtype)
        gb0 = np.empty(local_max * bt + 8, dtype=dW.dtype)
        gb1 = np.empty(local_max * bt + 8, dtype=dW.dtype)
        for ti in range(th, ntiles, nth):
            _vjp_tile(w, lplan, parts, X, x_rows, G, g_rows, GX, need_x, bt, ti, zb, gt, xt, x_tile, acts, gb0, gb1,
                      acc, zero)
    for th in range(1, nth):
        dW += dW_more[th - 1]
