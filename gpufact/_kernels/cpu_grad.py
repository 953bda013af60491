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
  memory**: the batch is cut into tiles of ``bt`` samples; per tile the forward pass is
  recomputed in a thread-local buffer holding the J activations of this tile only
  (Σ_j n_j · bt elements, bt = 64 samples), then the tile's gradient runs back through the chain, adding
  each factor's block gradient into per-thread accumulators and propagating G ← Sᴴ G.
  Time ≈ 3 · O(B · Σ nnz_j) (one forward, two backward products); extra memory
  threads · (Σ_j n_j + 2 · max_j n_j) · bt + threads · Σ nnz_j — never the J · B · N of
  stored activations. Both layouts (samples as columns or as rows) without transposed
  copies, through the tile loaders of :mod:`gpufact._kernels.cpu`.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cpu import _FASTMATH, _load_rows, _store_rows
from .cpu_tiles import _copy_cols, _generic_step, _radix2_step, _row, _store_cols, _zero_tail

TILE_WIDTH = 64  # samples per tile: the loops over a tile row vectorise (8 lanes x 4
# interleaved) only from ~64 samples: N = 1024 butterfly, B = 128: bt 16 -> 4.0 ms, 64 -> 1.2 ms
TILE_MIN = 8  # the loaders' 8 x 8 transposes
TILE_BUDGET_BYTES = 32 << 20  # one thread's tile (activations + 2 gradient buffers) at most,
# unless its share of one (max dims) x B array is larger


def vjp_tile_width(dims, itemsize: int, B: int, threads: int) -> int:
    """Samples per tile of :func:`ks_chain_vjp`: TILE_WIDTH, no wider than an even share of
    the batch; narrower (down to TILE_MIN, a multiple of 8) only when one thread's tile —
    activations (Σ dims[:-1] rows) and two gradient buffers (2 · max dims rows) — would
    exceed both TILE_BUDGET_BYTES and the thread's share of a (max dims) × B array.

    Extra memory is threads · (Σ dims[:-1] + 2 · max dims) · bt elements: independent of B
    (e.g. N = 1024 butterfly, float32, 2 threads: 6 MiB), so below 2 · B · N once
    B ≳ threads · bt · (J + 2) / 2."""
    per_sample = (int(sum(dims[:-1])) + 2 * int(max(dims))) * itemsize
    budget = max(TILE_BUDGET_BYTES, (B * int(max(dims)) * itemsize) // max(1, threads))
    bt = TILE_WIDTH
    while bt > TILE_MIN and bt * per_sample > budget:
        bt -= 8
    share = -(-B // max(1, threads))
    return max(1, min(bt, share))


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
def _radix2_back(w, off, a, d, x, gout, gin, acc, bt, want_in, zero):
    """Backward of a butterfly step (2 × 2 blocks) on one tile: acc[off + 4p + 2r + s] +=
    Σ_t gout_r[t] conj(x_s[t]); if ``want_in``, gin <- (block)ᴴ gout."""
    for al in range(a):
        for de in range(d):
            k = off + (al * d + de) * 4
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
def _generic_back(w, off, a, b, c, d, x, gout, gin, acc, bt, want_in, zero):
    """Backward of a generic KS step (a, b, c, d) on one tile (see :func:`_radix2_back`)."""
    for al in range(a):
        for de in range(d):
            base = off + (al * d + de) * b * c
            if want_in:
                for s in range(c):
                    y = _row(gin, al * c * d + s * d + de, bt)
                    for t in range(bt):
                        y[t] = zero
            for r in range(b):
                g = _row(gout, al * b * d + r * d + de, bt)
                for s in range(c):
                    xs = _row(x, al * c * d + s * d + de, bt)
                    sm = zero
                    for t in range(bt):
                        sm += g[t] * np.conj(xs[t])
                    acc[base + r * c + s] += sm
                    if want_in:
                        wv = np.conj(w[base + r * c + s])
                        y = _row(gin, al * c * d + s * d + de, bt)
                        for t in range(bt):
                            y[t] += wv * g[t]


@njit(cache=True)
def _load_tile(A, a_rows, b0, nt, buf, bt, n):
    if a_rows:
        _load_rows(A, b0, nt, buf, bt)
    else:
        _copy_cols(A, b0, buf, n, nt, bt)
    if nt < bt:  # padding samples: zero, so that they add nothing to the block gradients
        _zero_tail(buf, n, nt, bt, bt)


@njit(cache=True, fastmath=_FASTMATH)
def _vjp_tile(w, plan, act_off, X, x_rows, G, g_rows, GX, need_x, bt, ti, acts, gb0, gb1, acc, zero):
    S = plan.shape[0]
    N = act_off[1] // bt if S > 0 else 0
    B = X.shape[0] if x_rows else X.shape[1]
    b0 = ti * bt
    nt = min(bt, B - b0)
    _load_tile(X, x_rows, b0, nt, acts, bt, N)
    # forward: activations entering steps 1 .. S-1 (the last step's output is not needed)
    for j in range(S - 1):
        src = acts[act_off[j]:act_off[j + 1]]
        dst = acts[act_off[j + 1]:act_off[j + 2]]
        if plan[j, 0] == 1:
            _radix2_step(w, plan[j, 5], plan[j, 1], plan[j, 4], src, dst, bt)
        else:
            _generic_step(w, plan[j, 5], plan[j, 1], plan[j, 2], plan[j, 3], plan[j, 4], src, dst, bt)
    M = plan[S - 1, 1] * plan[S - 1, 2] * plan[S - 1, 4]
    _load_tile(G, g_rows, b0, nt, gb0, bt, M)
    cur = 0
    for j in range(S - 1, -1, -1):
        x = acts[act_off[j]:act_off[j + 1]]
        gout = gb0 if cur == 0 else gb1
        gin = gb1 if cur == 0 else gb0
        want_in = j > 0 or need_x
        if plan[j, 0] == 1:
            _radix2_back(w, plan[j, 5], plan[j, 1], plan[j, 4], x, gout, gin, acc, bt, want_in, zero)
        else:
            _generic_back(w, plan[j, 5], plan[j, 1], plan[j, 2], plan[j, 3], plan[j, 4], x, gout, gin, acc,
                          bt, want_in, zero)
        cur = 1 - cur
    if need_x:
        res = gb0 if cur == 0 else gb1
        if x_rows:
            _store_rows(res, bt, GX, b0, nt)
        else:
            _store_cols(res, bt, GX, b0, N, nt)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def ks_chain_vjp(w, plan, dims, X, x_rows, G, g_rows, GX, need_x, dW, bt, nthreads):
    """Gradients through a KS chain, fused, activations recomputed per tile.

    w : 1-D weights (every factor's blocks (a, d, b, c) concatenated in application order,
        as for :func:`gpufact._kernels.cpu.ks_chain_apply`); plan : int64 (S, 6) steps;
        dims : int64 (S + 1,) — dims[j] rows entering step j, dims[S] the output rows.
    X : C-contiguous input batch, (B, N) if ``x_rows`` else (N, B); G : C-contiguous upstream
        gradient, (B, M) if ``g_rows`` else (M, B); GX : ∂ℓ/∂X, laid out as X (written only
        if ``need_x``). dW : (nthreads, Σ nnz) per-thread block-gradient sums (overwritten;
        the caller adds the rows). All arrays of one dtype. bt : samples per tile
        (:func:`vjp_tile_width`).
    """
    B = X.shape[0] if x_rows else X.shape[1]
    S = plan.shape[0]
    act_off = np.zeros(S + 1, dtype=np.int64)
    for j in range(S):
        act_off[j + 1] = act_off[j] + dims[j] * bt
    maxdim = 0
    for j in range(S + 1):
        maxdim = max(maxdim, dims[j])
    ntiles = (B + bt - 1) // bt
    nth = max(1, min(nthreads, ntiles))
    zero = np.zeros(1, dtype=dW.dtype)[0]
    for th in range(nth, dW.shape[0]):
        dW[th, :] = zero
    for th in prange(nth):
        acc = dW[th]
        acc[:] = zero
        acts = np.empty(act_off[S] + 8, dtype=dW.dtype)
        gb0 = np.empty(maxdim * bt, dtype=dW.dtype)
        gb1 = np.empty(maxdim * bt, dtype=dW.dtype)
        for ti in range(th, ntiles, nth):
            _vjp_tile(w, plan, act_off, X, x_rows, G, g_rows, GX, need_x, bt, ti, acts, gb0, gb1, acc, zero)
