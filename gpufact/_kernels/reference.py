"""Plain NumPy references for the kernels (readable, slow; the tests' ground truth).

Notation: a Kronecker-sparse (KS) factor of pattern (a, b, c, d) is the (a*b*d) x (a*c*d)
matrix with support I_a ⊗ 1_{b×c} ⊗ I_d, stored as ``blocks`` of shape (a, d, b, c):
``blocks[α, δ, r, s]`` sits at row α*b*d + r*d + δ and column α*c*d + s*d + δ.
"""
from __future__ import annotations

import numpy as np


def ks_rows_cols(a: int, b: int, c: int, d: int):
    """Index arrays (a, d, b, c) of the row and column of every stored entry."""
    al = np.arange(a)[:, None, None, None]
    de = np.arange(d)[None, :, None, None]
    r = np.arange(b)[None, None, :, None]
    s = np.arange(c)[None, None, None, :]
    rows = al * b * d + r * d + de + 0 * s
    cols = al * c * d + s * d + de + 0 * r
    return rows, cols


def ks_toarray(blocks: np.ndarray) -> np.ndarray:
    """Dense matrix of a KS factor given its blocks (a, d, b, c)."""
    a, d, b, c = blocks.shape
    rows, cols = ks_rows_cols(a, b, c, d)
    out = np.zeros((a * b * d, a * c * d), dtype=blocks.dtype)
    out[rows, cols] = blocks
    return out


def ks_apply(blocks: np.ndarray, X: np.ndarray) -> np.ndarray:
    """KS factor times X (columns: X has shape (a*c*d, B)), via reshapes and einsum."""
    a, d, b, c = blocks.shape
    B = X.shape[1]
    Xr = X.reshape(a, c, d, B)
    Y = np.einsum("adrs,asdB->ardB", blocks, Xr)
    return Y.reshape(a * b * d, B)


def ks_chain_apply(blocks_list, X: np.ndarray) -> np.ndarray:
    """Apply KS factors in *application order* (first element applied first) to X (N, B)."""
    for blocks in blocks_list:
        X = ks_apply(blocks, X)
    return X


def topk_mask(mag: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Boolean mask of the k largest entries per row (axis=1) or column (axis=0); ties go to
    the smaller index. Via a stable argsort (the rule every kernel follows)."""
    mag = np.asarray(mag)
    if axis == 0:
        return topk_mask(mag.T, k, 1).T
    m, n = mag.shape
    mask = np.zeros((m, n), dtype=bool)
    if k <= 0 or n == 0:
        return mask
    idx = np.argsort(-mag, axis=1, kind="stable")[:, :k]
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def _insert_zero_bit(x, q):
    return ((x >> q) << (q + 1)) | (x & ((1 << q) - 1))


def bf_passes_apply(w: np.ndarray, passes: np.ndarray, X: np.ndarray) -> np.ndarray:
    """NumPy model of ``bf_chain_apply_radix`` and ``bf_pass_cols`` (kernels/ks_apply.cu):
    the passes of :func:`gpufact._kernels.plan.butterfly_passes` applied to X (N, B).

    Pass (R, ld, off): group g (0 <= g < N / 2^R) has base row = g with zero bits inserted at
    the sorted ld's, rows idx[k] = base | sum_r bit_r(k) << ld_r (k < 2^R); level r combines
    v[k], v[k | 2^r] (bit r of k clear) with the 2x2 block p = idx[k] with bit ld_r removed.
    """
    s = np.array(X, copy=True)
    N = s.shape[0]
    half = (passes.shape[1] - 1) // 2
    for row in passes.tolist():
        R = row[0]
        ld, off = row[1:1 + R], row[1 + half:1 + half + R]
        g = np.arange(N >> R)
        base = g
        for q in sorted(ld):
            base = _insert_zero_bit(base, q)
        idx = [base | sum((((k >> r) & 1) << ld[r]) for r in range(R)) for k in range(1 << R)]
        v = [s[i] for i in idx]  # each (G, B)
        for r in range(R):
            for k in range(1 << R):
                if (k >> r) & 1:
                    continue
                k1 = k | (1 << r)
                i0 = idx[k]
                p = ((i0 >> (ld[r] + 1)) << ld[r]) | (i0 & ((1 << ld[r]) - 1))
                wk = off[r] + 4 * p
                w00, w01, w10, w11 = (w[wk + e][:, None] for e in range(4))
                x0, x1 = v[k], v[k1]
                v[k], v[k1] = w00 * x0 + w01 * x1, w10 * x0 + w11 * x1
        for k, i in enumerate(idx):
            s[i] = v[k]
    return s


# ---- chains of general sparse (CSR) factors --------------------------------------------------
# A chain is given in *application order* (first element applied first) as a list of CSR
# triples (indptr, indices, data) with their shapes; kernels/csr_chain.cu and
# gpufact/_kernels/cpu_sparse.py hold the same matrices concatenated (see
# gpufact.factors._csr_chain.CSRChain.arrays).


def csr_apply(indptr, indices, data, m: int, X: np.ndarray) -> np.ndarray:
    """(m, n) CSR matrix times X (n, B): row i of the result is Σ_p data[p] X[indices[p]]
    over p in indptr[i] .. indptr[i+1] - 1 (duplicates add up)."""
    indptr = np.asarray(indptr)
    rows = np.repeat(np.arange(m), np.diff(indptr))
    Y = np.zeros((m, X.shape[1]), dtype=np.result_type(data, X))
    np.add.at(Y, rows, np.asarray(data)[:, None] * X[np.asarray(indices)])
    return Y


def csr_chain_apply(mats, X: np.ndarray) -> np.ndarray:
    """Apply CSR factors ``mats`` = [(indptr, indices, data, (m, n)), ...] in application
    order to X (N, B)."""
    for indptr, indices, data, (m, _n) in mats:
        X = csr_apply(indptr, indices, data, m, X)
    return X


def csr_chain_argmin(mats, X: np.ndarray, bias: np.ndarray, alpha):
    """The fused assignment: with S = bias[:, None] + alpha · (chain @ X) of shape (K, B),
    ``labels[b] = argmin_k S[k, b]`` (first minimum, i.e. ties to the smaller k; a NaN
    score wins, the first NaN) and ``values[b] = S[labels[b], b]``. Returns int32 labels
    and values of the scores' dtype."""
    Y = csr_chain_apply(mats, X)
    S = alpha * Y + bias[:, None]
    labels = np.argmin(S, axis=0).astype(np.int32) if S.shape[1] else np.zeros(0, np.int32)
    return labels, S[labels, np.arange(S.shape[1])]
def ks_grad(X: np.ndarray, G: np.ndarray, pattern) -> np.ndarray:
    """Block gradient (a, d, b, c) of a KS factor of ``pattern`` (a, b, c, d) for Y = S X with
    upstream gradient G: ``out[α, δ, r, s] = Σ_t G[α·b·d + r·d + δ, t] · conj(X[α·c·d + s·d + δ, t])``
    (X (a·c·d, B), G (a·b·d, B): samples as columns), via reshapes and einsum."""
    a, b, c, d = pattern
    B = X.shape[1]
    Xr = X.reshape(a, c, d, B)
    Gr = G.reshape(a, b, d, B)
    return np.einsum("ardB,asdB->adrs", Gr, Xr.conj())


def ks_chain_vjp(blocks_list, X: np.ndarray, G: np.ndarray):
    """Gradients through KS factors in *application order* (first element applied first):
    returns (∂ℓ/∂X = Wᴴ G, [block gradient of each factor]) for Y = W X, every activation
    stored (the memory the fused kernels avoid)."""
    acts = [X]
    for blocks in blocks_list[:-1]:
        acts.append(ks_apply(blocks, acts[-1]))
    grads = [None] * len(blocks_list)
    for j in range(len(blocks_list) - 1, -1, -1):
        blocks = blocks_list[j]
        a, d, b, c = blocks.shape
        grads[j] = ks_grad(acts[j], G, (a, b, c, d))
        G = ks_apply(blocks.transpose(0, 1, 3, 2).conj(), G)
    return G, grads
