"""The CUDA kernels and their launchers, run on the host through ``tests/cuda_emulator``.

Where g++ exists (no GPU needed), ``kernels/*.cu`` is compiled for the host and the real
launchers in ``gpufact._kernels.cuda`` drive it on NumPy arrays: kernel choice, tile sizes,
shared-memory requests, argument C types and grid limits are those of a GPU run. Every
fused kernel is checked against the dense product, under forward and reverse thread
schedules (bit-identical results: no race between two barriers), with the output written
into a NaN-filled wider buffer (nothing outside it is touched) and the input left as it was.
The first tests show that the emulator's checks can fail.
"""
import types

import numpy as np
import pytest

from cuda_emulator import EmulatedModule, EmulatorError, compiler
from conftest import DTYPES, rand, tol

import gpufact
from gpufact import KSFactor
from gpufact._kernels import cuda, reference
from gpufact.factors._chain import KSChain

pytestmark = pytest.mark.skipif(compiler() is None, reason="g++ not installed")


@pytest.fixture(scope="module")
def modules():
    return {src: EmulatedModule(src) for src in ("ks_apply.cu", "topk.cu", "csr_chain.cu")}


@pytest.fixture
def emulated_gpu(modules, monkeypatch):
    """Route the launchers' kernel lookups to the emulated modules (undone afterwards)."""
    monkeypatch.setattr(cuda, "_get", lambda source, name: modules[source].get_function(name))
    cuda._smem_limit.cache_clear()
    cuda._csr_smem_limit.cache_clear()
    for m in modules.values():
        m.order = 0
        m.launches.clear()
    yield modules
    cuda._smem_limit.cache_clear()
    cuda._csr_smem_limit.cache_clear()


def gpu_chain(factors):
    """A KSChain over NumPy factors that takes its GPU path (the emulated kernels)."""
    chain = KSChain(factors)
    chain.backend = types.SimpleNamespace(xp=np, is_gpu=True, name="emulated")
    return chain


def run_chain(chain, X, layout, modules, order):
    """chain @ X through _apply_gpu with X, out in ``layout``; out inside a NaN-filled buffer."""
    M, B = chain.shape[0], X.shape[1]
    modules["ks_apply.cu"].order = order
    if layout == "cols":  # (N, B) column batches, out = columns 1 .. B of a wider array
        big = np.full((M, B + 3), np.nan, dtype=X.dtype)
        out = big[:, 1:B + 1]
        Xc = X.copy()
    else:  # row-major samples (B, N): logical (N, B) transposed views
        big = np.full((B + 3, M), np.nan, dtype=X.dtype)
        out = big[1:B + 1].T
        Xc = np.ascontiguousarray(X.T).T
    X_before = Xc.copy()
    chain._apply_gpu(Xc, out)
    np.testing.assert_array_equal(Xc, X_before)  # input untouched
    rest = np.ones(big.shape, dtype=bool)
    if layout == "cols":
        rest[:, 1:B + 1] = False
    else:
        rest[1:B + 1] = False
    assert np.isnan(big[rest]).all(), "the kernel wrote outside its output"
    return np.array(out)


def check_fused(F, X, layout, modules, expect_kernel):
    chain = gpu_chain(F.factors)
    ref = F.toarray() @ X
    outs = []
    for order in (0, 1):  # forward and reverse schedules
        modules["ks_apply.cu"].launches.clear()
        outs.append(run_chain(chain, X, layout, modules, order))
        launched = {name.split("<")[0] for name, *_ in modules["ks_apply.cu"].launches}
        assert launched == {expect_kernel}, launched
    np.testing.assert_array_equal(outs[0], outs[1])  # no order dependence: no race
    scale = np.abs(ref).max()
    np.testing.assert_allclose(outs[0], ref, rtol=0, atol=50 * tol(X.dtype) * scale)


# --- the emulator's own checks fail when they should --------------------------------------

_BROKEN = r"""
template <typename T>
__global__ void neighbour_sum(const T* x, T* y, int n, int sync) {
    extern __shared__ unsigned char smem_raw[];
    T* s = reinterpret_cast<T*>(smem_raw);
    const int i = threadIdx.x;
    s[i] = x[i];
    if (sync) __syncthreads();
    y[i] = s[i] + s[(i + 1) % n];
}
__global__ void divergent_barrier(int* y) {
    if (threadIdx.x < 16) __syncthreads();
    y[threadIdx.x] = 1;
}
__global__ void traps(int* y) { if (threadIdx.x == 3) __trap(); y[threadIdx.x] = 1; }
__global__ void __launch_bounds__(64) bounded(int* y) { y[threadIdx.x] = threadIdx.x; }
__global__ void big_locals(const int* x, int* y) {
    volatile int local[40000];  // 160 kB: more than a fiber stack
    for (int i = 0; i < 40000; ++i) local[i] = x[0] + i;
    y[threadIdx.x] = local[39999];
}
__global__ void warp_sum(const unsigned long long* x, unsigned long long* y) {
    unsigned long long v = x[threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) y[threadIdx.x >> 5] = v;
}
template __global__ void neighbour_sum<float>(const float*, float*, int, int);
"""


@pytest.fixture(scope="module")
def broken():
    return EmulatedModule("broken.cu", ["neighbour_sum<float>", "divergent_barrier", "traps", "bounded",
                                        "warp_sum", "big_locals"], code=_BROKEN)


def test_emulator_detects_a_race_by_schedule_order(broken):
    x = np.arange(64, dtype=np.float32)
    fn = broken.get_function("neighbour_sum<float>")
    results = {}
    for sync in (0, 1):
        for order in (0, 1):
            broken.order = order
            y = np.zeros(64, np.float32)
            fn((1,), (64,), (x, y, np.int32(64), np.int32(sync)), shared_mem=64 * 4)
            results[sync, order] = y
    ref = x + np.roll(x, -1)
    np.testing.assert_array_equal(results[1, 0], ref)
    np.testing.assert_array_equal(results[1, 1], ref)
    assert not np.array_equal(results[0, 0], results[0, 1])  # the missing barrier shows


def test_emulator_checks_shared_memory_barriers_traps_and_shuffles(broken):
    x = np.arange(64, dtype=np.float32)
    y = np.zeros(64, np.float32)
    broken.order = 0
    with pytest.raises(EmulatorError, match="outside the 128 dynamic bytes"):
        broken.get_function("neighbour_sum<float>")((1,), (64,), (x, y, np.int32(64), np.int32(1)), shared_mem=128)
    yi = np.zeros(64, np.int32)
    with pytest.raises(EmulatorError, match="deadlock"):
        broken.get_function("divergent_barrier")((1,), (32,), (yi,))
    with pytest.raises(EmulatorError, match="__trap"):
        broken.get_function("traps")((1,), (8,), (yi,))
    big = np.zeros(2, np.int32)  # a 160 kB local array (legal in CUDA: local memory) runs
    broken.get_function("big_locals")((1,), (2,), (np.array([7], np.int32), big))
    np.testing.assert_array_equal(big, [7 + 39999] * 2)
    xs = np.arange(128, dtype=np.uint64)
    ys = np.zeros(4, np.uint64)
    broken.get_function("warp_sum")((1,), (128,), (xs, ys))
    np.testing.assert_array_equal(ys, xs.reshape(4, 32).sum(axis=1))


def test_emulator_checks_launch_configuration_and_argument_types(broken):
    x = np.zeros(64, np.float32)
    fn = broken.get_function("neighbour_sum<float>")
    with pytest.raises(EmulatorError, match=r"arguments \(pf4,pf4,i8,i4\) do not match"):
        fn((1,), (64,), (x, x, np.int64(64), np.int32(1)), shared_mem=256)
    with pytest.raises(EmulatorError, match=r"arguments \(pf8"):
        fn((1,), (64,), (x.astype(np.float64), x, np.int32(64), np.int32(1)), shared_mem=256)
    with pytest.raises(TypeError, match="argument 2 is a int"):
        fn((1,), (64,), (x, x, 64, np.int32(1)), shared_mem=256)
    with pytest.raises(EmulatorError, match="exceed the function's limit"):
        fn((1,), (64,), (x, x, np.int32(64), np.int32(1)), shared_mem=64 * 1024)
    with pytest.raises(EmulatorError, match="exceeds 64 threads"):
        broken.get_function("bounded")((1,), (128,), (np.zeros(128, np.int32),))
    with pytest.raises(EmulatorError, match="CUDA's limits"):
        broken.get_function("bounded")((1, 70000), (1,), (np.zeros(1, np.int32),))
    with pytest.raises(EmulatorError, match="empty launch"):
        broken.get_function("bounded")((0,), (32,), (np.zeros(1, np.int32),))
    with pytest.raises(EmulatorError):
        fn.max_dynamic_shared_size_bytes = 300 * 1024


# --- the butterfly chain kernels -----------------------------------------------------------

@pytest.mark.parametrize("kernel", ["radix2", "radix", "passes"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("N", [2, 16, 256])
@pytest.mark.parametrize("layout", ["cols", "rows"])
def test_butterfly_kernels_match_dense(emulated_gpu, monkeypatch, kernel, dtype, N, layout):
    monkeypatch.setenv("GPUFACT_GPU_BUTTERFLY", kernel)
    rng = np.random.default_rng(N)
    F = gpufact.transforms.random_butterfly(N, dtype=dtype, seed=N)
    expect = {"radix2": "bf_chain_apply", "radix": "bf_chain_apply_radix", "passes": "bf_pass_cols"}[kernel]
    if kernel == "passes" and layout == "rows":
        expect = "bf_chain_apply"  # the pass kernel takes column batches only
    for B in (1, 7, 70):  # one sample, a partial tile, several tiles with a partial last one
        check_fused(F, rand((N, B), dtype, rng), layout, emulated_gpu, expect)


@pytest.mark.parametrize("kernel", ["radix2", "radix", "passes"])
def test_butterfly_kernels_any_level_order(emulated_gpu, monkeypatch, kernel):
    """Levels in any order, repeated levels included (passes split before a repeated bit)."""
    monkeypatch.setenv("GPUFACT_GPU_BUTTERFLY", kernel)
    rng = np.random.default_rng(3)
    N, L = 128, 7
    expect = {"radix2": "bf_chain_apply", "radix": "bf_chain_apply_radix", "passes": "bf_pass_cols"}[kernel]
    for levels in ([6, 5, 4, 3, 2, 1, 0], [0, 3, 3, 5, 1, 6, 2, 2, 4], list(rng.integers(0, L, 11))):
        factors = [KSFactor.random((2**lv, 2, 2, N // 2**(lv + 1)), dtype=np.float64, seed=int(s))
                   for s, lv in enumerate(levels)]
        F = gpufact.FactorProduct(factors)
        check_fused(F, rand((N, 33), np.float64, rng), "cols", emulated_gpu, expect)


@pytest.mark.parametrize("kernel,dtype", [("radix", np.float32), ("radix", np.complex128),
                                          ("passes", np.float32), ("passes", np.complex128)])
def test_butterfly_kernels_large_N(emulated_gpu, monkeypatch, kernel, dtype):
    """N = 4096: several groups per thread (radix), 64 groups of a radix-64 pass (passes)."""
    monkeypatch.setenv("GPUFACT_GPU_BUTTERFLY", kernel)
    rng = np.random.default_rng(5)
    N = 4096
    F = gpufact.transforms.hadamard(N).astype(dtype)
    expect = "bf_chain_apply_radix" if kernel == "radix" else "bf_pass_cols"
    X = rand((N, 3), dtype, rng)
    chain = gpu_chain(F.factors)
    out = run_chain(chain, X, "cols", emulated_gpu, 0)
    assert {n.split("<")[0] for n, *_ in emulated_gpu["ks_apply.cu"].launches} == {expect}
    ref = reference.ks_chain_apply([f.blocks for f in reversed(F.factors)], X)  # factor by factor
    np.testing.assert_allclose(out, ref, rtol=0, atol=50 * tol(dtype) * np.abs(ref).max())


def test_too_large_tiles_fall_back_to_one_launch_per_factor(emulated_gpu, monkeypatch):
    """complex128 at N = 16384 does not fit a shared tile: ks_factor_apply, factor by factor."""
    monkeypatch.setenv("GPUFACT_GPU_BUTTERFLY", "radix2")
    N = 16384
    F = gpufact.transforms.hadamard(N).astype(np.complex128)
    X = rand((N, 1), np.complex128, np.random.default_rng(0))
    out = run_chain(gpu_chain(F.factors), X, "rows", emulated_gpu, 0)
    launched = [n for n, *_ in emulated_gpu["ks_apply.cu"].launches]
    assert launched == ["ks_factor_apply<complex<double>>"] * 14
    ref = reference.ks_chain_apply([f.blocks for f in reversed(F.factors)], X)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", ["cols", "rows"])
def test_generic_ks_factor_kernel_rectangular(emulated_gpu, dtype, layout):
    """Rectangular Kronecker-sparse factors (b != c, odd sizes): ks_factor_apply per factor."""
    rng = np.random.default_rng(1)
    F = gpufact.FactorProduct([KSFactor.random((2, 3, 5, 4), dtype=dtype, seed=1),   # 24 x 40
                               KSFactor.random((1, 5, 3, 8), dtype=dtype, seed=2)])  # 40 x 24
    for B in (1, 9):
        X = rand((F.shape[1], B), dtype, rng)
        outs = [run_chain(gpu_chain(F.factors), X, layout, emulated_gpu, order) for order in (0, 1)]
        np.testing.assert_array_equal(outs[0], outs[1])
        ref = F.toarray() @ X
        np.testing.assert_allclose(outs[0], ref, rtol=0, atol=50 * tol(dtype) * np.abs(ref).max())
    assert {n.split("<")[0] for n, *_ in emulated_gpu["ks_apply.cu"].launches} == {"ks_factor_apply"}


# --- top-k masks -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1])
def test_topk_mask_kernel(emulated_gpu, dtype, axis):
    """Radix select with index-ordered ties, against a stable argsort; vectors longer than
    one block (1300 > 256 threads) run the scan in several chunks."""
    rng = np.random.default_rng(2)
    for shape, k in (((5, 1300), 1), ((5, 1300), 37), ((7, 9), 9), ((40, 6), 2)):
        if axis == 0:
            shape = shape[::-1]
        mag = np.abs(rng.standard_normal(shape)).astype(dtype)
        mag[mag < 0.5] = 0.5  # many exact ties
        mag_before = mag.copy()
        masks = []
        for order in (0, 1, 7):
            emulated_gpu["topk.cu"].order = order
            masks.append(cuda.topk_mask(mag, k, axis))
        np.testing.assert_array_equal(mag, mag_before)
        for m in masks[1:]:
            np.testing.assert_array_equal(m, masks[0])
        vecs = mag if axis == 1 else mag.T
        expect = np.zeros(vecs.shape, np.uint8)
        order_idx = np.argsort(-vecs, axis=1, kind="stable")[:, :k]  # ties: smaller index first
        np.put_along_axis(expect, order_idx, 1, axis=1)
        np.testing.assert_array_equal(masks[0], expect if axis == 1 else expect.T)


@pytest.mark.parametrize("kernel", ["radix2", "radix"])
def test_devices_without_the_shared_memory_opt_in(emulated_gpu, monkeypatch, kernel):
    """If raising max_dynamic_shared_size_bytes fails, tiles fit the default 48 KiB (the
    emulator refuses anything larger), and a sample that does not fit takes the per-factor
    kernel."""
    import cuda_emulator

    def refuse(self, value):
        raise cuda_emulator.EmulatorError("opt-in refused")

    monkeypatch.setattr(cuda_emulator.EmulatedFunction, "max_dynamic_shared_size_bytes",
                        property(lambda self: self._max_dyn, refuse))
    monkeypatch.setenv("GPUFACT_GPU_BUTTERFLY", kernel)
    rng = np.random.default_rng(4)
    fused = "bf_chain_apply" if kernel == "radix2" else "bf_chain_apply_radix"
    for N, expect in ((1024, fused), (16384, "ks_factor_apply")):  # 16384 float32: 64 KiB a sample
        F = gpufact.transforms.hadamard(N).astype(np.float32)
        X = rand((N, 40 if N == 1024 else 1), np.float32, rng)
        emulated_gpu["ks_apply.cu"].launches.clear()
        out = run_chain(gpu_chain(F.factors), X, "cols", emulated_gpu, 0)
        launches = emulated_gpu["ks_apply.cu"].launches
        assert {n.split("<")[0] for n, *_ in launches} == {expect}
        assert max(smem for *_, smem in launches) <= 48 * 1024
        ref = reference.ks_chain_apply([f.blocks for f in reversed(F.factors)], X)
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_pass_kernel_grid_limit_falls_back(emulated_gpu, monkeypatch):
    """More groups than gridDim.y allows: the chain takes the tile kernel instead; the pass
    launcher itself refuses such a plan."""
    monkeypatch.setenv("GPUFACT_GPU_BUTTERFLY", "passes")
    monkeypatch.setattr(cuda, "MAX_GRID_Y", 2)
    F = gpufact.transforms.random_butterfly(256, dtype=np.float64, seed=2)
    check_fused(F, rand((256, 5), np.float64, np.random.default_rng(2)), "cols", emulated_gpu, "bf_chain_apply")
    chain = gpu_chain(F.factors)
    chain._butterfly_meta()
    passes = chain._butterfly_passes(cuda.pass_radix_log2(np.float64))
    X = np.ones((256, 3))
    with pytest.raises(ValueError, match="grid limit"):
        cuda.bf_pass_cols_apply(chain.weights(np.float64), passes, passes, 256, X, np.empty_like(X))


# --- chains of CSR factors (kernels/csr_chain.cu) ----------------------------------------------

def gpu_csr_chain(F):
    """The CSRChain of a CSR-only product, taking its GPU path (the emulated kernels)."""
    from gpufact.factors._csr_chain import CSRChain

    (chain,) = F._get_segments()
    assert isinstance(chain, CSRChain)
    chain.backend = types.SimpleNamespace(xp=np, is_gpu=True, name="emulated")
    return chain


def _csr_product(dtype, rng, shapes, density=0.3):
    import scipy.sparse as sps

    fs = []
    for m, n in shapes:
        S = sps.random(m, n, density=density, random_state=rng, format="csr")
        S.data = rand(S.data.shape, dtype, rng)
        fs.append(gpufact.CSRFactor(S.astype(dtype)))
    return gpufact.FactorProduct([gpufact.DiagFactor(rand((shapes[0][0],), dtype, rng))] + fs)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", ["cols", "rows"])
def test_csr_chain_apply_kernel(emulated_gpu, dtype, layout):
    """csr_chain_apply: one fused launch, against the dense product, both schedules, output
    written only inside its view, input untouched; partial tiles and B = 1."""
    rng = np.random.default_rng(11)
    F = _csr_product(dtype, rng, [(9, 20), (20, 20), (20, 13)])
    chain = gpu_csr_chain(F)
    mod = emulated_gpu["csr_chain.cu"]
    for B in (1, 7, 70):
        X = rand((13, B), dtype, rng)
        outs = []
        for order in (0, 1):
            mod.launches.clear()
            mod.order = order
            outs.append(run_chain(chain, X, layout, emulated_gpu, order))
            assert [n.split("<")[0] for n, *_ in mod.launches] == ["csr_chain_apply"]
        np.testing.assert_array_equal(outs[0], outs[1])
        ref = F.toarray() @ X
        np.testing.assert_allclose(outs[0], ref, rtol=0, atol=50 * tol(dtype) * np.abs(ref).max())


def _emulated_argmin(chain, Xr, bias, alpha, mod, order):
    B = Xr.shape[0]
    mod.order = order
    big_l = np.full(B + 2, -7, np.int32)
    big_v = np.full(B + 2, np.nan, Xr.dtype)
    lab, val = big_l[1:B + 1], big_v[1:B + 1]
    X_before = Xr.copy()
    chain.argmin_cols(Xr.T, bias, Xr.dtype.type(alpha), lab, val)
    np.testing.assert_array_equal(Xr, X_before)
    assert big_l[0] == big_l[-1] == -7 and np.isnan(big_v[[0, -1]]).all()
    return lab.copy(), val.copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_csr_chain_argmin_kernel(emulated_gpu, dtype):
    """csr_chain_argmin against the NumPy reference: labels exactly (ties to the smaller k,
    the first NaN wins), both schedules and a shuffled one, K smaller and larger than the
    256 / bt threads that share a sample, B = 1 and partial tiles, row-major and column
    batches."""
    rng = np.random.default_rng(12)
    mod = emulated_gpu["csr_chain.cu"]
    for K in (5, 300):
        F = _csr_product(dtype, rng, [(K, 16), (16, 12)], density=0.4)
        chain = gpu_csr_chain(F)
        X = rand((40, 12), dtype, rng)
        X[:4] = 0  # every score equals its bias: ties between equal biases
        X[6, 3] = np.nan
        bias = rand((K,), dtype, rng)
        bias[[1, 2]] = bias.min() - 1  # tie between k = 1 and k = 2
        ref_lab, ref_val = reference.csr_chain_argmin(chain.mats(), X.T.astype(np.float64), bias.astype(np.float64),
                                                     -2.0)
        assert (ref_lab[:4] == 1).all()
        for B in (1, 9, 40):
            res = [_emulated_argmin(chain, np.ascontiguousarray(X[:B]), bias, -2.0, mod, order) for order in (0, 1, 5)]
            for lab, val in res:
                np.testing.assert_array_equal(lab, ref_lab[:B])
                np.testing.assert_array_equal(lab, res[0][0])
                np.testing.assert_allclose(val, ref_val[:B], rtol=0, atol=50 * tol(dtype) * np.nanmax(np.abs(ref_val)))
            assert [n.split("<")[0] for n, *_ in mod.launches[-3:]] == ["csr_chain_argmin"] * 3
        # column batches (strided view of an (N, B) array)
        Xc = np.ascontiguousarray(X.T)
        lab = np.empty(40, np.int32)
        val = np.empty(40, dtype)
        chain.argmin_cols(Xc, bias, dtype(-2.0), lab, val)
        np.testing.assert_array_equal(lab, ref_lab)


def test_csr_chain_tiles_and_fallback(emulated_gpu, monkeypatch):
    """Tiles shrink to fit the shared memory (no launch asks for more than the limit); a
    chain whose single sample does not fit runs factor by factor and has no fused argmin."""
    import cuda_emulator

    def refuse(self, value):
        raise cuda_emulator.EmulatorError("opt-in refused")

    monkeypatch.setattr(cuda_emulator.EmulatedFunction, "max_dynamic_shared_size_bytes",
                        property(lambda self: self._max_dyn, refuse))
    rng = np.random.default_rng(13)
    mod = emulated_gpu["csr_chain.cu"]
    F = _csr_product(np.float64, rng, [(8, 2000), (2000, 10)], density=0.002)  # 2010 rows: 1-2 samples a tile
    chain = gpu_csr_chain(F)
    X = rand((10, 5), np.float64, rng)
    out = run_chain(chain, X, "rows", emulated_gpu, 0)
    np.testing.assert_allclose(out, F.toarray() @ X, atol=1e-12)
    assert mod.launches and max(smem for *_, smem in mod.launches) <= 48 * 1024
    assert cuda.csr_chain_tile(2010, np.float64, 64) == 2
    assert chain.argmin_fits(np.float64)
    big = _csr_product(np.float64, rng, [(8, 7000), (7000, 10)], density=0.0005)  # 56 kB a sample
    chain = gpu_csr_chain(big)
    mod.launches.clear()
    out = run_chain(chain, X, "cols", emulated_gpu, 0)
    np.testing.assert_allclose(out, big.toarray() @ X, atol=1e-12)
    assert mod.launches == [] and not chain.argmin_fits(np.float64)


def test_csr_chain_launchers_check_their_arguments(emulated_gpu):
    rng = np.random.default_rng(14)
    F = _csr_product(np.float32, rng, [(6, 8)])
    chain = gpu_csr_chain(F)
    plan_h, plan, ip, ix, data = chain.arrays(np.float32)
    X = rand((8, 3), np.float32, rng)
    Y = np.empty((6, 3), np.float32)
    with pytest.raises(TypeError, match="int64 indptr"):
        cuda.csr_chain_apply(plan, ip.astype(np.int32), ix, data, 8, 6, 4, X, Y)
    with pytest.raises(ValueError, match="dtype and the batch"):
        cuda.csr_chain_apply(plan, ip, ix, data, 8, 6, 4, X.astype(np.float64), Y)
    with pytest.raises(ValueError, match="power of two"):
        cuda.csr_chain_apply(plan, ip, ix, data, 8, 6, 3, X, Y)
    with pytest.raises(TypeError, match="unsupported dtype"):
        cuda.csr_chain_tile(10, np.complex64, 4, argmin=True)
    lab = np.empty(3, np.int32)
    with pytest.raises(TypeError, match="contiguous bias"):
        cuda.csr_chain_argmin(plan, ip, ix, data, 8, 0, 4, X, np.zeros(6), np.float32(-2), lab, np.empty(3, np.float32))
    cuda.csr_chain_apply(plan, ip, ix, data, 8, 6, 4, X[:, :0], Y[:, :0])  # empty: no launch
    assert emulated_gpu["csr_chain.cu"].launches == []


def test_csr_chain_negative_strides(emulated_gpu):
    """A batch with a negative stride is copied (the kernels take non-negative strides)."""
    rng = np.random.default_rng(15)
    F = _csr_product(np.float64, rng, [(5, 9), (9, 6)])
    chain = gpu_csr_chain(F)
    X = rand((6, 12), np.float64, rng)
    out = np.empty((5, 12))
    chain.apply_cols(X[:, ::-1], out)
    np.testing.assert_allclose(out, F.toarray() @ X[:, ::-1], atol=1e-12)
    lab = np.empty(12, np.int32)
    val = np.empty(12)
    chain.argmin_cols(X[:, ::-1], np.zeros(5), np.float64(-2), lab, val)
    np.testing.assert_array_equal(lab, (-2 * (F.toarray() @ X[:, ::-1])).argmin(0))
