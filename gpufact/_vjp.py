"""Vector-Jacobian products of a :class:`FactorProduct`: gradients with respect to its input
and to every factor's stored values (what training a product of sparse factors needs).

For F = S_1 ⋯ S_J and Y = F X (or Y = X Fᵀ for row-major samples) with upstream gradient
G = ∂ℓ/∂Y, ∂ℓ/∂X = Fᴴ G and, for each factor, the gradient of its values is Gⱼ Xⱼᴴ restricted
to its support, Xⱼ the activation entering S_j and Gⱼ the gradient leaving it (Dao et al.,
ICML 2019, §3; PyTorch's convention for complex data: the conjugate Wirtinger derivative).
"""
from __future__ import annotations

import numpy as np

from ._backend import get_backend
from ._validation import check_bool, float_dtype_for
from .factors import CSRFactor, DenseFactor, DiagFactor, PermFactor
from .factors._chain import KSChain
from .factors._csr_chain import CSRChain

_LAYOUTS = ("cols", "rows")
_CSR_CHUNK_BYTES = 32 << 20


def vjp(F, X, G, *, layout: str = "cols", input_grad: bool = True, factor_grads: bool = True):
    """Gradients of a scalar loss through ``Y = F X`` (``layout="cols"``: X (N, B), G (M, B),
    samples as columns) or ``Y = X Fᵀ`` (``layout="rows"``: X (B, N), G (B, M), row-major
    samples, the ``torch.nn.Linear`` convention), given ``G = ∂ℓ/∂Y``. A 1-D X and G are one
    sample.

    Returns ``(grad_X, grads)``:

    * ``grad_X``: ∂ℓ/∂X = Fᴴ G (``cols``) or G F̄ (``rows``), shaped and laid out like X
      (``None`` unless ``input_grad``);
    * ``grads``: a list, one entry per factor of ``F.factors`` (product order), the gradient
      of its stored values in the factor's own storage shape and dtype — KSFactor: blocks
      (a, d, b, c); DiagFactor: (n,); DenseFactor: (m, n); CSRFactor: (nnz,) in the order of
      ``matrix.data`` (its support fixed); PermFactor: ``None`` (no values) — or ``None``
      unless ``factor_grads``. For a real factor and complex data, the real part.

    Everything is computed in ``result_type(F.dtype, X.dtype, G.dtype)`` (float32, float64,
    complex64 or complex128), in the namespace (NumPy/CuPy) of the inputs.

    Cost: consecutive KS factors form one chain, handled by one fused kernel (CPU, Numba):
    per tile of samples and group of features the chain's forward pass is recomputed in
    cache, then the gradient runs back through it — time ≈ 3 × the cost of ``F @ X``; extra
    memory at most 2 · B · N elements for a chain wherever its stored weights leave room
    (butterfly from B = 16, Monarch of size N from B ≈ 2√N; one activation per thread and
    tile, per-thread block sums; plus one activation per non-KS factor), never one
    activation per factor. On the GPU a chain is processed in chunks of samples whose
    activations are stored per chunk (memory ≈ 2 · B · N). Other factors: one product each
    (dense: two GEMMs; CSR: SpMM plus a sampled dense-dense product on its support).

    Raises TypeError for a non-FactorProduct F, NumPy/CuPy mixes or non-numeric dtypes,
    ValueError for an unknown ``layout`` or mismatched shapes. Inputs are never modified.
    """
    from .product import FactorProduct

    if not isinstance(F, FactorProduct):
        raise TypeError(f"F must be a FactorProduct, got {type(F).__name__}")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    input_grad = check_bool(input_grad, "input_grad")
    factor_grads = check_bool(factor_grads, "factor_grads")
    for name, A in (("X", X), ("G", G)):
        if not hasattr(A, "ndim") or not hasattr(A, "dtype"):
            raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(A).__name__}")
        if A.dtype.kind not in "biufc":
            raise TypeError(f"{name}: unsupported dtype {A.dtype}")
    be = get_backend(F, X, G)
    xp = be.xp
    M, N = F.shape
    vec = X.ndim == 1
    if vec:
        if X.shape != (N,) or G.shape != (M,):
            raise ValueError(f"X and G must have shapes ({N},) and ({M},), got {tuple(X.shape)} and {tuple(G.shape)}")
        X, G = X[:, None], G[:, None]
        layout = "cols"
    else:
        if X.ndim != 2 or G.ndim != 2:
            raise ValueError(f"X and G must be 2-D (or both 1-D), got {X.ndim}-D and {G.ndim}-D")
        Bx = X.shape[1] if layout == "cols" else X.shape[0]
        exp_x = (N, Bx) if layout == "cols" else (Bx, N)
        exp_g = (M, Bx) if layout == "cols" else (Bx, M)
        if tuple(X.shape) != exp_x or tuple(G.shape) != exp_g:
            raise ValueError(f"layout={layout!r}: X must have shape {exp_x} and G {exp_g} for F of shape "
                             f"{F.shape}, got X {tuple(X.shape)} and G {tuple(G.shape)}")
    dt = np.result_type(F.dtype, float_dtype_for(X.dtype), float_dtype_for(G.dtype))
    rows = layout == "rows"
    Xc = X.T if rows else X  # logical (N, B) / (M, B) column views, no copies
    Gc = G.T if rows else G
    if Xc.dtype != dt:
        Xc = Xc.astype(dt)
    if Gc.dtype != dt:
        Gc = Gc.astype(dt)

    def shaped(gx):
        if gx is None:
            return None
        if vec:
            return gx[:, 0]
        return gx.T if rows else gx

    if not factor_grads:
        if not input_grad:
            return None, None
        return shaped(F.H._apply_cols(Gc, rows, dt)), None

    segs = []  # product order; fused CSR runs are differentiated factor by factor
    for seg in F._get_segments():
        segs.extend(seg.factors if isinstance(seg, CSRChain) else [seg])
    # activations entering each segment (the first segment applied is the last in the list)
    acts = [None] * len(segs)
    cur = Xc
    for k in range(len(segs) - 1, -1, -1):
        acts[k] = cur
        if k > 0:
            seg = segs[k]
            out = _empty_cols(xp, seg.shape[0], cur.shape[1], dt, rows)
            seg.apply_cols(cur, out)
            cur = out
    grads = []
    g = Gc
    for k, seg in enumerate(segs):
        need_in = k < len(segs) - 1 or input_grad
        if isinstance(seg, KSChain):
            g_in, gl = chain_vjp(seg, acts[k], g, need_in, rows)
            grads.extend(gl)  # product order
        else:
            grads.append(_factor_grad(seg, acts[k], g, xp))
            g_in = None
            if need_in:
                g_in = _empty_cols(xp, seg.shape[1], g.shape[1], dt, rows)
                seg.H.apply_cols(g, g_in)
        acts[k] = None
        g = g_in
    grads = [_as_factor_dtype(gr, f) for gr, f in zip(grads, F.factors)]
    return (shaped(g) if input_grad else None), grads


def _empty_cols(xp, m, B, dt, rows):
    """A logical (m, B) column view, C-contiguous as (B, m) when ``rows``."""
    return xp.empty((B, m), dtype=dt).T if rows else xp.empty((m, B), dtype=dt)


def _as_factor_dtype(gr, f):
    if gr is None:
        return None
    if gr.dtype.kind == "c" and f.dtype.kind != "c":
        gr = gr.real
    return gr.astype(f.dtype, copy=False)


def _factor_grad(f, x, g, xp):
    """Gradient of one non-KS factor's values for the activation x entering it and the
    gradient g leaving it (logical column views)."""
    if isinstance(f, PermFactor):
        return None
    if isinstance(f, DiagFactor):
        return xp.sum(g * xp.conj(x), axis=1)
    if isinstance(f, DenseFactor):
        return g @ xp.conj(x).T
    if isinstance(f, CSRFactor):
        m = f.matrix
        nnz = int(m.nnz)
        counts = xp.diff(m.indptr)
        rows_of = xp.repeat(xp.arange(m.shape[0]), counts.get() if hasattr(counts, "get") else counts)
        out = xp.empty(nnz, dtype=g.dtype)
        B = max(1, g.shape[1])
        step = max(1, _CSR_CHUNK_BYTES // (B * g.itemsize))
        for i in range(0, nnz, step):  # a sampled dense-dense product, in bounded chunks
            j = min(nnz, i + step)
            out[i:j] = xp.sum(g[rows_of[i:j]] * xp.conj(x[m.indices[i:j]]), axis=1)
        return out
    raise TypeError(f"no gradient for factor type {type(f).__name__}")  # pragma: no cover


def chain_vjp(chain: KSChain, Xc, Gc, need_x: bool, rows: bool):
    """Fused gradients through a KS chain: returns (Sᴴ G or None, block gradients in product
    order). Xc (N, B), Gc (M, B): logical column views of one dtype."""
    if chain.backend.is_gpu:
        gx, gl = _chain_vjp_gpu(chain, Xc, Gc, need_x, rows)
    else:
        gx, gl = _chain_vjp_cpu(chain, Xc, Gc, need_x)
    return gx, gl[::-1]


def _c_layout(A):
    """(C-contiguous array, rows flag) for a logical column view: A itself when C-contiguous,
    A.T (row-major samples) when that is, else a C-contiguous copy."""
    if A.flags.c_contiguous:
        return A, False
    if A.T.flags.c_contiguous:
        return A.T, True
    return np.ascontiguousarray(A), False


def _chain_dims(chain):
    dims = [a * c * d for (a, b, c, d) in chain.patterns]
    a, b, c, d = chain.patterns[-1]
    return np.asarray(dims + [a * b * d], dtype=np.int64)


def _split(chain, flat):
    """Block gradients (application order) from the concatenated flat array."""
    out = []
    for (a, b, c, d), off in zip(chain.patterns, chain.offsets):
        out.append(flat[off:off + a * b * c * d].reshape(a, d, b, c))
    return out


def _chain_vjp_cpu(chain, Xc, Gc, need_x):
    import numba

    from ._kernels import cpu_grad_kernels

    k = cpu_grad_kernels()
    dt = Xc.dtype
    N, B = Xc.shape
    dims = _chain_dims(chain)
    nnz = int(sum(a * b * c * d for (a, b, c, d) in chain.patterns))
    if B == 0:
        gx = np.zeros((N, 0), dtype=dt) if need_x else None
        return gx, _split(chain, np.zeros(nnz, dtype=dt))
    X, x_rows = _c_layout(Xc)
    G, g_rows = _c_layout(Gc)
    info = k.vjp_plan(tuple(chain.patterns))
    parts, lplan, mid, local_acts, local_max = info
    bt, threads = k.vjp_tile_width(info, N, int(dims[-1]), nnz, B, numba.get_num_threads())
    if need_x:
        GX = np.empty((B, N) if x_rows else (N, B), dtype=dt)
    else:
        GX = np.empty((1, 1), dtype=dt)
    flat = np.empty(nnz, dtype=dt)
    more = np.empty((threads - 1, nnz), dtype=dt)
    x_tile = k.vjp_x_tile(info, N, int(dims[-1]), nnz, B, bt, threads)
    k.ks_chain_vjp(chain.weights(dt), lplan, parts, mid, local_acts, local_max, X, x_rows, G, g_rows, GX,
                   need_x, flat, more, bt, threads, x_tile)
    gx = (GX.T if x_rows else GX) if need_x else None
    return gx, _split(chain, flat)


GPU_CHUNK_MIN = 256  # samples per chunk at least (enough parallel work per launch)
GPU_CHUNK_MEMORY = 2.0  # a chunk's stored activations: at most this many (max_j n_j) x B arrays


def _chain_vjp_gpu(chain, Xc, Gc, need_x, rows):
    """GPU path: chunks of samples; per chunk the chain's activations are stored (J of them),
    the block gradients accumulated by ``ks_grad`` and the input gradient propagated by
    ``ks_factor_apply`` with the conjugate-transposed blocks. Chunks hold Σ_j n_j · Bc
    elements with Σ_j n_j · Bc <= max(2 · max_j n_j · B, Σ_j n_j · 256)."""
    from ._kernels import cuda

    xp = chain.backend.xp
    dt = Xc.dtype
    N, B = Xc.shape
    facs = list(reversed(chain.factors))  # application order
    blocks = [f.blocks.astype(dt, copy=False) for f in facs]
    blocks_h = [xp.ascontiguousarray(xp.conj(bl.transpose(0, 1, 3, 2))) for bl in blocks]
    dims = _chain_dims(chain)
    grads = [xp.zeros(bl.shape, dtype=dt) for bl in blocks]
    gx = None
    if need_x:
        gx = xp.empty((B, N), dtype=dt).T if rows else xp.empty((N, B), dtype=dt)
    if B == 0:
        return gx, grads
    S = len(facs)
    per = int(dims[:-1].sum())
    Bc = max(min(B, GPU_CHUNK_MIN), int(GPU_CHUNK_MEMORY * int(dims.max()) * B) // max(1, per))
    for i in range(0, B, Bc):
        j = min(B, i + Bc)
        acts = [Xc[:, i:j]]
        for s in range(S - 1):
            out = xp.empty((int(dims[s + 1]), j - i), dtype=dt)
            cuda.ks_factor_apply(blocks[s], acts[-1], out)
            acts.append(out)
        g = Gc[:, i:j]
        for s in range(S - 1, -1, -1):
            cuda.ks_grad(acts[s], g, grads[s], accumulate=i > 0)
            if s > 0 or need_x:
                dst = gx[:, i:j] if s == 0 else xp.empty((int(dims[s]), j - i), dtype=dt)
                cuda.ks_factor_apply(blocks_h[s], g, dst)
                g = dst
            acts[s] = None
    return gx, grads
