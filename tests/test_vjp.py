"""gpufact.vjp: gradients through a FactorProduct w.r.t. its input and every factor's values,
against dense references (Lᴴ G (R X)ᴴ on each factor's support), finite differences, the
einsum reference, the Numba twin and the CUDA kernel on the host emulator."""
import numpy as np
import pytest
import scipy.sparse as sp

from conftest import DTYPES, rand, tol

import gpufact
import gpufact.factorize
from gpufact import CSRFactor, DenseFactor, DiagFactor, FactorProduct, KSFactor, PermFactor
from gpufact._kernels import cuda, reference
from gpufact.factors._chain import KSChain


def mixed_product(dtype, seed=0):
    """Every factor kind: KS chain (butterfly + generic rectangular), diag, dense, CSR, perm."""
    rng = np.random.default_rng(seed)
    csr = sp.random(24, 24, density=0.2, random_state=seed, format="csr")
    csr.data = rng.standard_normal(csr.nnz)
    factors = [KSFactor.random((1, 2, 3, 8), dtype=dtype, seed=seed),   # 16 x 24
               KSFactor.random((2, 3, 2, 4), dtype=dtype, seed=seed + 1),  # 24 x 16
               DiagFactor(rand(16, dtype, rng)),
               PermFactor(rng.permutation(16), dtype=dtype),
               DenseFactor(rand((16, 12), dtype, rng)),
               CSRFactor(csr.astype(dtype)[:12, :20]),
               KSFactor.random((1, 2, 2, 10), dtype=dtype, seed=seed + 2),  # 20 x 20
               KSFactor.random((2, 2, 2, 5), dtype=dtype, seed=seed + 3)]
    return FactorProduct(factors)


def dense_grads(F, X, G):
    """Reference gradients: Fᴴ G and, per factor, (Lᴴ G)(R X)ᴴ read on its support."""
    fs = F.factors
    dense = [f.toarray() for f in fs]
    out = []
    for j, f in enumerate(fs):
        L = np.eye(F.shape[0], dtype=F.dtype)
        for D in dense[:j]:
            L = L @ D
        RX = X
        for D in reversed(dense[j + 1:]):
            RX = D @ RX
        full = L.conj().T @ G @ RX.conj().T
        if isinstance(f, KSFactor):
            out.append(KSFactor.from_dense(full, f.pattern).blocks)
        elif isinstance(f, DiagFactor):
            out.append(np.diag(full).copy())
        elif isinstance(f, DenseFactor):
            out.append(full)
        elif isinstance(f, CSRFactor):
            m = f.matrix
            rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
            out.append(full[rows, m.indices])
        else:
            out.append(None)
    return F.toarray().conj().T @ G, out


def assert_close(a, b, dtype, scale=None):
    scale = np.abs(b).max() if scale is None else scale
    np.testing.assert_allclose(a, b, rtol=0, atol=200 * tol(dtype) * max(scale, 1e-30))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", ["cols", "rows"])
def test_vjp_matches_dense_reference(dtype, layout):
    F = mixed_product(dtype)
    rng = np.random.default_rng(1)
    for B in (1, 13, 70):  # one sample, a partial tile, several tiles
        X = rand((F.shape[1], B), dtype, rng)
        G = rand((F.shape[0], B), dtype, rng)
        gx_ref, refs = dense_grads(F, X, G)
        Xin, Gin = (X, G) if layout == "cols" else (np.ascontiguousarray(X.T), np.ascontiguousarray(G.T))
        before = (Xin.copy(), Gin.copy())
        gx, grads = gpufact.vjp(F, Xin, Gin, layout=layout)
        np.testing.assert_array_equal(Xin, before[0])
        np.testing.assert_array_equal(Gin, before[1])
        assert gx.shape == Xin.shape and gx.dtype == np.dtype(dtype)
        assert_close(gx if layout == "cols" else gx.T, gx_ref, dtype)
        assert len(grads) == len(F)
        for g, r, f in zip(grads, refs, F.factors):
            if r is None:
                assert g is None
                continue
            assert g.dtype == f.dtype
            assert g.shape == {"ks": lambda: f.blocks.shape, "diag": lambda: f.diag.shape,
                               "dense": lambda: f.matrix.shape, "csr": lambda: (f.nnz,)}[f.kind]()
            assert_close(g, r, dtype)


def test_vjp_finite_differences():
    """ℓ = ½‖F X − T‖² in float64: every gradient against central differences along a random
    direction (the dense reference above could share a conjugation mistake; this cannot)."""
    F = mixed_product(np.float64, seed=3)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((F.shape[1], 9))
    T = rng.standard_normal((F.shape[0], 9))

    def loss(factors, X):
        return 0.5 * np.sum((FactorProduct(factors).toarray() @ X - T) ** 2)

    G = F @ X - T
    gx, grads = F.vjp(X, G)
    V = rng.standard_normal(X.shape)
    h = 1e-6
    fd = (loss(F.factors, X + h * V) - loss(F.factors, X - h * V)) / (2 * h)
    assert abs(fd - np.sum(gx * V)) < 1e-6 * max(1, abs(fd))
    for j, (f, g) in enumerate(zip(F.factors, grads)):
        if g is None:
            continue
        D = rng.standard_normal(g.shape)

        def moved(sign):
            fs = F.factors
            if f.kind == "ks":
                fs[j] = KSFactor(f.blocks + sign * h * D)
            elif f.kind == "diag":
                fs[j] = DiagFactor(f.diag + sign * h * D)
            elif f.kind == "dense":
                fs[j] = DenseFactor(f.matrix + sign * h * D)
            else:
                m = f.matrix.copy()
                m.data = m.data + sign * h * D
                fs[j] = CSRFactor(m)
            return fs

        fd = (loss(moved(1), X) - loss(moved(-1), X)) / (2 * h)
        assert abs(fd - np.sum(g * D)) < 1e-6 * max(1, abs(fd)), (j, f.kind, fd, np.sum(g * D))


@pytest.mark.parametrize("dtype", [np.float32, np.complex128], ids=lambda d: np.dtype(d).name)
def test_fused_chain_matches_einsum_reference(dtype):
    """A butterfly chain (the radix-2 steps) and a Monarch chain (generic steps), row-major
    samples with a partial last tile: the fused kernel against reference.ks_chain_vjp."""
    rng = np.random.default_rng(4)
    for F in (gpufact.transforms.random_butterfly(64, dtype=dtype, seed=4),
              FactorProduct([KSFactor.random(p, dtype=dtype, seed=i)
                             for i, p in enumerate(gpufact.factorize.monarch_patterns(64))])):
        X = rand((F.shape[1], 37), dtype, rng)
        G = rand((F.shape[0], 37), dtype, rng)
        gx_ref, refs = reference.ks_chain_vjp([f.blocks for f in reversed(F.factors)], X, G)
        gx, grads = gpufact.vjp(F, np.ascontiguousarray(X.T), np.ascontiguousarray(G.T), layout="rows")
        assert_close(gx.T, gx_ref, dtype)
        for g, r in zip(grads, refs[::-1]):
            assert_close(g, r, dtype)


def _chain_cases():
    """KS chains of the layers: butterfly 256 (radix-2 steps, split into groups of 16),
    Monarch 64 (generic steps), 784 -> 1024 mixed radix (rectangular, generic and radix-2
    steps), a chain whose steps do not nest (each its own part), one factor (one part), blocks
    of 6 and 5 rows by 5 and 3 columns (the register-blocked loops' remainders)."""
    from gpufact.torch.modules import ks_patterns

    cases = {}
    for name, (n_in, n_out, structure) in {"butterfly": (256, 256, "butterfly"), "monarch": (64, 64, "monarch"),
                                           "mixed": (784, 1024, "butterfly")}.items():
        cases[name] = ks_patterns(n_in, n_out, structure)
    cases["unnested"] = [(1, 2, 3, 2), (2, 3, 2, 1)]  # 4 x 6 then 6 x 4: d1 = 2 does not divide b2 d2 = 3
    cases["single"] = [(2, 3, 4, 5)]  # one step: one part
    cases["odd"] = [(1, 6, 5, 2), (2, 5, 3, 1)]  # 6 and 5 rows per block (4 blocked + the rest), odd c
    return cases


@pytest.mark.parametrize("x_tile", [True, False])
@pytest.mark.parametrize("case", ["butterfly", "monarch", "mixed", "unnested", "single", "odd"])
def test_fused_chain_groups_and_tiles_match_dense_reference(case, x_tile, monkeypatch):
    """The two-level kernel (tiles of samples, groups of features) on small and odd batches
    (B = 1, 3, 37: partial tiles, fewer tiles than threads), both layouts, with and without
    the input gradient, X's tile held or read per group, against the dense reference;
    float64."""
    from gpufact._kernels import cpu_grad

    monkeypatch.setattr(cpu_grad, "vjp_x_tile", lambda info, *args: x_tile and info[0][0, 1] > info[0][0, 0])

    pats = _chain_cases()[case]
    F = FactorProduct([KSFactor.random(p, dtype=np.float64, seed=i) for i, p in enumerate(pats)])
    parts = cpu_grad.vjp_plan(tuple(F._get_segments()[0].patterns))[0]
    assert (parts[0, 1] > parts[0, 0]) == (len(pats) > 1)  # two parts, unless one step
    rng = np.random.default_rng(len(pats))
    for B in (1, 3, 37):
        X = rand((F.shape[1], B), np.float64, rng)
        G = rand((F.shape[0], B), np.float64, rng)
        gx_ref, refs = dense_grads(F, X, G)
        for layout in ("cols", "rows"):
            Xl, Gl = (X, G) if layout == "cols" else (np.ascontiguousarray(X.T), np.ascontiguousarray(G.T))
            gx, grads = gpufact.vjp(F, Xl, Gl, layout=layout)
            assert_close(gx if layout == "cols" else gx.T, gx_ref, np.float64)
            for g, r in zip(grads, refs):
                assert_close(g, r, np.float64)
        nx, grads = gpufact.vjp(F, X, G, input_grad=False)
        assert nx is None
        for g, r in zip(grads, refs):
            assert_close(g, r, np.float64)


def test_fused_chain_vjp_memory_bound():
    """Extra memory of the fused backward <= 2 · B · N elements from B = 16 on (butterfly)
    and B = 64 (Monarch, N <= 1024; from B = 256 for N = 8192, where one copy of its
    2 N^1.5 stored weights is 2.8 · B · N at B = 64): the tile widths chosen for 2 threads keep the computed buffers
    within it, and the traced peak of a call (NumPy and Numba allocations, beyond the
    outputs) stays within it too."""
    import tracemalloc

    from gpufact._kernels import cpu_grad
    from gpufact.torch.modules import ks_patterns

    for N in (256, 1024, 8192):
        for structure, b_min in (("butterfly", 16), ("monarch", 64 if N <= 1024 else 256)):
            pats = ks_patterns(N, N, structure)[::-1]
            nnz = sum(a * b * c * d for a, b, c, d in pats)
            info = cpu_grad.vjp_plan(tuple(pats))
            for B in (b_min, 100, 256, 1024, 4096):
                bt, th = cpu_grad.vjp_tile_width(info, N, N, nnz, B, 2)
                x_tile = cpu_grad.vjp_x_tile(info, N, N, nnz, B, bt, th)
                assert cpu_grad.vjp_memory(info, N, N, nnz, bt, th, x_tile) <= 2 * B * N, (N, structure, B, bt, th)
                assert x_tile or B < 1024  # X read once from memory at the larger batches
                if B >= 256:  # the full tile width on both threads where the bound allows it
                    assert (bt, th) == (cpu_grad.TILE_WIDTH, 2), (N, structure, B, bt, th)
    N, B = 1024, 256
    F = gpufact.transforms.random_butterfly(N, dtype=np.float32, seed=1)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((B, N)).astype(np.float32)
    G = rng.standard_normal((B, N)).astype(np.float32)
    gpufact.vjp(F, X, G, layout="rows")  # compile outside the trace
    tracemalloc.start()
    gpufact.vjp(F, X, G, layout="rows")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak / 4 - B * N - F.nnz <= 2 * B * N


def test_reference_ks_grad_is_the_masked_outer_product():
    rng = np.random.default_rng(5)
    pattern = (2, 3, 4, 5)
    a, b, c, d = pattern
    X = rand((a * c * d, 6), np.complex128, rng)
    G = rand((a * b * d, 6), np.complex128, rng)
    full = G @ X.conj().T
    np.testing.assert_allclose(reference.ks_grad(X, G, pattern), KSFactor.from_dense(full, pattern).blocks,
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_numba_ks_grad_twin(dtype):
    from gpufact._kernels import cpu_grad_kernels

    rng = np.random.default_rng(6)
    pattern = (3, 2, 5, 4)
    a, b, c, d = pattern
    X = rand((20, a * c * d), dtype, rng).T  # logical column views over row-major samples
    G = rand((20, a * b * d), dtype, rng).T
    ref = reference.ks_grad(np.array(X), np.array(G), pattern)
    out = np.full((a, d, b, c), np.nan, dtype=dtype)
    cpu_grad_kernels().ks_grad(X, G, out, False)
    assert_close(out, ref, dtype)
    cpu_grad_kernels().ks_grad(X, G, out, True)
    assert_close(out, 2 * ref, dtype)


def test_vjp_options_vectors_empty_and_mixed_dtypes():
    F = gpufact.transforms.random_butterfly(32, dtype=np.float32, seed=7)
    rng = np.random.default_rng(7)
    X = rng.standard_normal((32, 5)).astype(np.float32)
    G = rng.standard_normal((32, 5)).astype(np.float32)
    gx, grads = F.vjp(X, G)
    gx2, none = F.vjp(X, G, factor_grads=False)
    assert none is None
    np.testing.assert_allclose(gx2, gx, rtol=1e-5, atol=1e-5)
    nx, grads2 = F.vjp(X, G, input_grad=False)
    assert nx is None
    for a, b in zip(grads, grads2):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # one sample as 1-D vectors equals the batch's first column
    gv, gl = F.vjp(X[:, 0], G[:, 0])
    g1, gl1 = F.vjp(X[:, :1], G[:, :1])
    np.testing.assert_allclose(gv, g1[:, 0], rtol=1e-6)
    # empty batch: zero gradients, right shapes
    ge, gle = F.vjp(np.zeros((0, 32), np.float32), np.zeros((0, 32), np.float32), layout="rows")
    assert ge.shape == (0, 32) and all(not np.any(g) for g in gle)
    # float64 data through a float32 product: computed in float64, factor grads in float32
    gx64, gl64 = F.vjp(X.astype(np.float64), G.astype(np.float64))
    assert gx64.dtype == np.float64 and gl64[0].dtype == np.float32
    # a non-contiguous view (every other sample)
    Xw = rng.standard_normal((32, 10)).astype(np.float32)
    Gw = rng.standard_normal((32, 10)).astype(np.float32)
    gs, gls = F.vjp(Xw[:, ::2], Gw[:, ::2])
    gc, glc = F.vjp(np.ascontiguousarray(Xw[:, ::2]), np.ascontiguousarray(Gw[:, ::2]))
    np.testing.assert_allclose(gs, gc, rtol=1e-6)


def test_vjp_bad_input():
    F = gpufact.transforms.random_butterfly(16, dtype=np.float64, seed=8)
    X = np.ones((16, 3))
    with pytest.raises(ValueError, match="layout"):
        gpufact.vjp(F, X, X, layout="columns")
    with pytest.raises(ValueError, match="G"):
        gpufact.vjp(F, X, np.ones((16, 4)))
    with pytest.raises(ValueError, match="X"):
        gpufact.vjp(F, np.ones((3, 16)), np.ones((3, 16)))  # rows data with the default layout
    with pytest.raises(TypeError, match="FactorProduct"):
        gpufact.vjp(F.toarray(), X, X)
    with pytest.raises(TypeError, match="dtype"):
        gpufact.vjp(F, X.astype(str), X)
    with pytest.raises(TypeError, match="input_grad"):
        gpufact.vjp(F, X, X, input_grad="yes")


# --- the CUDA kernel on the host emulator ------------------------------------------------------

try:
    from cuda_emulator import EmulatedModule, compiler
except ImportError:  # pragma: no cover
    compiler = lambda: None  # noqa: E731

needs_gxx = pytest.mark.skipif(compiler() is None, reason="g++ not installed")


@pytest.fixture(scope="module")
def grad_modules():
    return {src: EmulatedModule(src) for src in ("ks_apply.cu", "ks_grad.cu")}


@pytest.fixture
def emulated_gpu(grad_modules, monkeypatch):
    monkeypatch.setattr(cuda, "_get", lambda source, name: grad_modules[source].get_function(name))
    for m in grad_modules.values():
        m.order = 0
        m.launches.clear()
    return grad_modules


@needs_gxx
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", ["cols", "rows"])
def test_cuda_ks_grad_kernel(emulated_gpu, dtype, layout):
    """ks_grad<T> against the einsum reference: both layouts, B beyond one block of threads,
    several entries per block (grid-stride), accumulate, schedule-independent results."""
    rng = np.random.default_rng(9)
    pattern = (2, 3, 2, 5)
    a, b, c, d = pattern
    for B in (1, 300):
        X = rand((a * c * d, B), dtype, rng)
        G = rand((a * b * d, B), dtype, rng)
        Xv, Gv = (X, G) if layout == "cols" else (np.ascontiguousarray(X.T).T, np.ascontiguousarray(G.T).T)
        ref = reference.ks_grad(X, G, pattern)
        outs = []
        for order in (0, 1):
            emulated_gpu["ks_grad.cu"].order = order
            out = np.full((a, d, b, c), np.nan, dtype=dtype)
            cuda.ks_grad(Xv, Gv, out)
            outs.append(out)
        np.testing.assert_array_equal(outs[0], outs[1])
        assert_close(outs[0], ref, dtype)
        cuda.ks_grad(Xv, Gv, outs[0], accumulate=True)
        assert_close(outs[0], 2 * ref, dtype)
    with pytest.raises(ValueError, match="shapes"):
        cuda.ks_grad(X[:-1], G, np.empty((a, d, b, c), dtype))
    with pytest.raises(TypeError, match="share"):
        cuda.ks_grad(X.astype(np.complex128 if np.dtype(dtype) != np.complex128 else np.complex64), G,
                     np.empty((a, d, b, c), dtype))


@needs_gxx
@pytest.mark.parametrize("dtype", [np.float32, np.complex128], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", ["cols", "rows"])
def test_cuda_chain_vjp_in_chunks(emulated_gpu, monkeypatch, dtype, layout):
    """The GPU chain path (ks_factor_apply + ks_grad per chunk of samples) through the real
    launchers on the emulator, several chunks, against the einsum reference."""
    from gpufact import _vjp

    monkeypatch.setattr(_vjp, "GPU_CHUNK_MIN", 4)
    monkeypatch.setattr(_vjp, "GPU_CHUNK_MEMORY", 0.0)  # chunks of 4 samples
    rng = np.random.default_rng(10)
    F = FactorProduct([KSFactor.random((1, 3, 2, 4), dtype=dtype, seed=1),
                       KSFactor.random((2, 2, 2, 2), dtype=dtype, seed=2),
                       KSFactor.random((4, 2, 2, 1), dtype=dtype, seed=3)])
    chain = KSChain(F.factors)
    import types
    chain.backend = types.SimpleNamespace(xp=np, is_gpu=True, name="emulated")
    B = 23
    X = rand((F.shape[1], B), dtype, rng)
    G = rand((F.shape[0], B), dtype, rng)
    gx_ref, refs = reference.ks_chain_vjp([f.blocks for f in reversed(F.factors)], X, G)
    Xv, Gv = (X, G) if layout == "cols" else (np.ascontiguousarray(X.T).T, np.ascontiguousarray(G.T).T)
    gx, grads = _vjp.chain_vjp(chain, Xv, Gv, True, layout == "rows")
    launched = {n.split("<")[0] for m in emulated_gpu.values() for n, *_ in m.launches}
    assert launched == {"ks_factor_apply", "ks_grad"}
    assert sum(n.startswith("ks_grad") for n, *_ in emulated_gpu["ks_grad.cu"].launches) > 3  # several chunks
    assert_close(gx, gx_ref, dtype)
    for g, r in zip(grads, refs[::-1]):
        assert_close(g, r, dtype)


@pytest.mark.gpu
def test_vjp_on_gpu_matches_cpu(cp):
    F = gpufact.transforms.random_butterfly(256, dtype=np.float32, seed=11)
    rng = np.random.default_rng(11)
    X = rng.standard_normal((300, 256)).astype(np.float32)
    G = rng.standard_normal((300, 256)).astype(np.float32)
    gx, grads = F.vjp(X, G, layout="rows")
    Fg = F.to_device("gpu")
    gxg, gradsg = Fg.vjp(cp.asarray(X), cp.asarray(G), layout="rows")
    np.testing.assert_allclose(cp.asnumpy(gxg), gx, rtol=0, atol=1e-4 * np.abs(gx).max())
    for a, b in zip(gradsg, grads):
        np.testing.assert_allclose(cp.asnumpy(a), b, rtol=0, atol=1e-4 * np.abs(b).max())
