"""Kernels: NumPy reference <-> Numba <-> CUDA on the same inputs."""
import numpy as np
import pytest

from gpufact._kernels import reference
from gpufact._kernels.cpu import ks_chain_apply, ks_chain_apply_planar, ks_chain_apply_serial, serial_weights
from gpufact._kernels.plan import make_plan
from gpufact.factors._chain import KSChain
from gpufact import KSFactor

from conftest import host, rand, tol

CHAINS = [
    [(1, 2, 2, 8), (2, 2, 2, 4), (4, 2, 2, 2), (8, 2, 2, 1)],   # butterfly, N = 16
    [(8, 2, 2, 1), (4, 2, 2, 2), (2, 2, 2, 4), (1, 2, 2, 8)],   # reversed order (F.T)
    [(1, 4, 4, 4), (4, 4, 4, 1)],                               # Monarch, N = 16
    [(2, 3, 2, 2), (1, 5, 12, 1), (1, 3, 5, 1)],                # rectangular chain 8 -> 3
    [(1, 20, 20, 1), (2, 6, 10, 1)],                            # 20 -> 12: 8x8 blocks + leftovers
    [(1, 5, 6, 2), (2, 6, 5, 1)],                               # 12 -> 10 -> 12: 4-row groups + rest, odd c
]


def _blocks(chain, dtype, rng):
    return [rand((a, d, b, c), dtype, rng) for (a, b, c, d) in chain]


def _in_dim(chain):
    a, b, c, d = chain[0]
    return a * c * d


@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("B", [1, 7, 13, 130])
@pytest.mark.parametrize("bt", [1, 4, 64])
def test_numba_chain_matches_reference(chain, B, bt, dtype):
    rng = np.random.default_rng(0)
    blocks = _blocks(chain, dtype, rng)
    plan, offs, maxdim = make_plan(chain)
    w = np.concatenate([b.ravel() for b in blocks])
    X = rand((_in_dim(chain), B), dtype, rng)
    ref = reference.ks_chain_apply([b.astype(np.complex128) for b in blocks], X.astype(np.complex128))
    M = ref.shape[0]
    for x_rows in (False, True):
        for y_rows in (False, True):
            Xin = np.ascontiguousarray(X.T) if x_rows else X
            Y = np.full((B, M) if y_rows else (M, B), np.nan, dtype=dtype)
            for nthreads in (1, 3):  # tiles dealt round-robin to each thread's buffers
                Y[...] = np.nan
                ks_chain_apply(w, plan, maxdim, Xin, x_rows, Y, y_rows, bt, nthreads)
                got = Y.T if y_rows else Y
                np.testing.assert_allclose(got, ref, rtol=tol(dtype), atol=tol(dtype) * np.abs(ref).max())
            if bt == 1:  # the one-sample-at-a-time path for tiny batches
                Y[...] = np.nan
                ks_chain_apply_serial(serial_weights(w, plan), plan, maxdim, Xin, x_rows, Y, y_rows,
                                      True if dtype.kind == "c" else None)
                got = Y.T if y_rows else Y
                np.testing.assert_allclose(got, ref, rtol=tol(dtype), atol=tol(dtype) * np.abs(ref).max())
            if dtype.kind == "c":  # complex tiles held planar (the path _apply_cpu takes)
                Y[...] = np.nan
                X_before = Xin.copy()
                ks_chain_apply_planar(np.ascontiguousarray(w.real), np.ascontiguousarray(w.imag), plan, maxdim,
                                      Xin, x_rows, Y, y_rows, bt, 3)
                got = Y.T if y_rows else Y
                np.testing.assert_allclose(got, ref, rtol=tol(dtype), atol=tol(dtype) * np.abs(ref).max())
                np.testing.assert_array_equal(Xin, X_before)
                # a real batch loaded as is (real parts; imaginary parts zero)
                Xre = np.ascontiguousarray(Xin.real)
                ref_re = reference.ks_chain_apply([b.astype(np.complex128) for b in blocks],
                                                  X.real.astype(np.complex128))
                Y[...] = np.nan
                ks_chain_apply_planar(np.ascontiguousarray(w.real), np.ascontiguousarray(w.imag), plan, maxdim,
                                      Xre, x_rows, Y, y_rows, bt, 3)
                got = Y.T if y_rows else Y
                np.testing.assert_allclose(got, ref_re, rtol=tol(dtype), atol=tol(dtype) * np.abs(ref_re).max())


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["radix2", "radix", "passes"])
@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("B", [1, 7, 13, 130])
def test_cuda_chain_matches_numba(chain, B, dtype, kernel, cp, monkeypatch):
    monkeypatch.setenv("GPUFACT_GPU_BUTTERFLY", kernel)
    rng = np.random.default_rng(1)
    blocks = _blocks(chain, dtype, rng)
    X = rand((_in_dim(chain), B), dtype, rng)
    factors_cpu = [KSFactor(b) for b in reversed(blocks)]  # product order
    chain_cpu = KSChain(factors_cpu)
    ref = chain_cpu.apply_cols(X, np.empty((chain_cpu.shape[0], B), dtype=dtype))
    chain_gpu = KSChain([f.to_device("gpu") for f in factors_cpu])
    Xg = cp.asarray(X)
    for rows in (False, True):
        out = cp.empty((B, ref.shape[0]), dtype=dtype).T if rows else cp.empty(ref.shape, dtype=dtype)
        chain_gpu.apply_cols(Xg if not rows else cp.ascontiguousarray(Xg.T).T, out)
        np.testing.assert_allclose(host(out), ref, rtol=tol(dtype) * 10, atol=tol(dtype) * 10 * np.abs(ref).max())


def test_cpu_tile_width():
    from gpufact._kernels.cpu import TILE_BYTES, TILE_MAX_BYTES, tile_width

    assert tile_width(4096, 4, 1024, 2, rows=False) == TILE_BYTES // 4  # 128 float32 samples
    assert tile_width(4096, 4, 1024, 2, rows=True) == 64                # row tiles beyond L2
    assert tile_width(256, 4, 2048, 2, rows=True) == TILE_BYTES // 4    # small row tiles stay wide
    assert tile_width(1 << 16, 4, 4096, 2, rows=False) * (1 << 16) * 4 <= TILE_MAX_BYTES
    assert tile_width(1 << 22, 8, 4096, 2, rows=False) == 8             # transposes' vector width
    assert tile_width(4096, 4, 20, 2, rows=False) == 10                 # an even share of the batch
    assert tile_width(4096, 16, 1, 4, rows=True) == 1


def test_plan_marks_butterflies():
    plan, offs, maxdim = make_plan(CHAINS[3])
    assert plan[:, 0].tolist() == [0, 0, 0]
    plan, offs, maxdim = make_plan(CHAINS[0])
    assert plan[:, 0].tolist() == [1, 1, 1, 1] and offs == [0, 32, 64, 96] and maxdim == 16


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_numba_topk_rows_cols_matches_reference(dtype):
    """Row+column top-k mask / projection vs the NumPy reference: random shapes and k (fused
    call with insertion buffer or heap; row-major small-k passes; partition thresholds),
    integer-valued matrices full of ties, Fortran-ordered input, input never modified."""
    from gpufact._kernels.cpu_solvers import topk_project, topk_rows_cols_mask

    rng = np.random.default_rng(7)
    for trial in range(330):
        if trial < 300:  # one fused call (<= 4096 entries)
            m, n = (int(v) for v in rng.integers(1, 40, 2))
        else:  # larger: row-major small-k passes (k <= 8) or NumPy partition thresholds
            m, n = (int(v) for v in rng.integers(65, 140, 2))
        if trial % 2:
            M = rng.integers(-3, 4, (m, n)).astype(dtype)  # many ties
        else:
            M = rand((m, n), dtype, rng)
        if trial % 3 == 0:
            M = np.asfortranarray(M)
        kr, kc = int(rng.integers(0, n + 1)), int(rng.integers(0, m + 1))
        if trial >= 300 and trial % 3:
            kr, kc = (int(v) for v in rng.integers(0, 9, 2))
        ref = np.zeros((m, n), dtype=bool)
        mag = np.abs(M)
        if kr:
            ref |= reference.topk_mask(mag, kr, 1).astype(bool)
        if kc:
            ref |= reference.topk_mask(mag, kc, 0).astype(bool)
        before = M.copy()
        np.testing.assert_array_equal(topk_rows_cols_mask(M, kr, kc), ref)
        out = topk_project(M, kr, kc, normalized=bool(trial % 4 == 0))
        expect = np.where(ref, M, 0)
        if trial % 4 == 0:
            nrm = np.linalg.norm(expect)
            expect = expect / nrm if nrm > 0 else expect
        assert out.dtype == M.dtype
        np.testing.assert_allclose(out, expect, rtol=tol(dtype), atol=tol(dtype))
        np.testing.assert_array_equal(M, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_k_networks_match_the_exact_kernel(dtype):
    """The compare-exchange networks on magnitude bits (real small-k projection) give the
    exact kernel's output, NaN / inf count and norm on random, tied (integer-valued, rounded),
    sparse, signed-zero, subnormal, huge and non-finite matrices, any k <= 8 (0 included), C
    and F order, rows and columns with more ties than places (cut in index order) included."""
    from gpufact._kernels.cpu_solvers import _keep_small_k_real, _topk_keep_small_k

    rng = np.random.default_rng(11)
    cut_seen = 0
    for trial in range(600):
        m, n = (int(v) for v in rng.integers(1, 70, 2))
        kind = trial % 6
        if kind == 0:
            M = rng.standard_normal((m, n))
        elif kind == 1:
            M = rng.integers(-3, 4, (m, n)).astype(float)
        elif kind == 2:
            M = rng.standard_normal((m, n)) * (rng.random((m, n)) < 0.2)
            M[rng.random((m, n)) < 0.1] = -0.0
        elif kind == 3:
            M = np.round(rng.standard_normal((m, n)), 1)
        elif kind == 4:
            M = rng.standard_normal((m, n)) * np.finfo(dtype).tiny * rng.choice([1e-3, 1.0, 1e30], (m, n))
        else:
            with np.errstate(over="ignore"):  # float64: some entries overflow to inf, as wanted
                M = rng.standard_normal((m, n)) * np.finfo(dtype).max / 4
            M[rng.random((m, n)) < 0.03] = np.inf
            M[rng.random((m, n)) < 0.03] = -np.nan
        M = M.astype(dtype)
        if trial % 4 == 3:
            M = np.asfortranarray(M)
        kr, kc = min(int(rng.integers(0, 9)), n - 1), min(int(rng.integers(0, 9)), m - 1)
        kr, kc = max(kr, 0), max(kc, 0)
        before = M.copy()
        out, s2, mx, bad = _keep_small_k_real(M, kr, kc)
        ref, s2r, mxr, badr = _topk_keep_small_k(M, kr, kc)
        np.testing.assert_array_equal(M, before)
        assert (bad > 0) == (badr > 0), trial
        if not badr:
            np.testing.assert_array_equal(out, ref)
            assert mx == mxr and np.isclose(s2, s2r, rtol=1e-12, atol=0), trial
            assert out.flags.c_contiguous and out.dtype == M.dtype
            # where taking every tie differs from the exact output, the cut was exercised
            mag = np.abs(M)
            allties = np.zeros(M.shape, dtype=bool)
            if kr:
                allties |= mag >= np.sort(mag, axis=1)[:, n - kr][:, None]
            if kc:
                allties |= mag >= np.sort(mag, axis=0)[m - kc][None, :]
            cut_seen += not np.array_equal(np.where(allties, M, 0), ref)
    assert cut_seen > 50  # the tie cut ran (integer-valued and rounded matrices)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_numba_power_iteration_matches_spectral_norm(dtype):
    from gpufact._kernels.cpu_solvers import power_norm2_small

    M = rand((30, 20), dtype, np.random.default_rng(3))
    for A in (M, M.conj().T):  # C and transposed (strided) layouts
        v0 = np.ones(A.shape[1], dtype=dtype) / np.sqrt(A.shape[1])
        s2, v = power_norm2_small(A, v0, 1000)
        assert v.dtype == A.dtype and v.shape == (A.shape[1],)
        np.testing.assert_allclose(s2, np.linalg.norm(M.astype(np.complex128), 2) ** 2, rtol=max(1e-9, 10 * tol(dtype)))
        np.testing.assert_allclose(np.linalg.norm(v), 1, rtol=tol(dtype))
    s2, v = power_norm2_small(np.zeros((4, 3), dtype), np.ones(3, dtype), 3)
    assert s2 == 0 and not np.any(v)


@pytest.mark.parametrize("radix", [1, 2, 3, 4, 5, 6])
def test_butterfly_pass_plan_and_its_index_model_match_the_reference(radix):
    """The radix-2^R pass plan, run through the NumPy model of the CUDA kernel's index
    arithmetic (reference.bf_passes_apply), equals the chain applied factor by factor:
    DFT/Hadamard orders, reversed orders, repeated bits, random orders, N = 2 ... 256."""
    from gpufact._kernels.plan import butterfly_passes

    rng = np.random.default_rng(radix)
    for L in range(1, 9):
        N = 1 << L
        orders = [list(range(L)), list(range(L))[::-1], list(rng.integers(0, L, size=L + 3))]
        for lds in orders:
            chain = [(N >> (ld + 1), 2, 2, 1 << ld) for ld in lds]
            blocks = [rand((a, d, b, c), np.complex128, rng) for (a, b, c, d) in chain]
            plan, offs, _ = make_plan(chain)
            w = np.concatenate([b.ravel() for b in blocks])
            passes = butterfly_passes(lds, offs, radix)
            assert passes[:, 0].sum() == len(lds) and passes[:, 0].max() <= radix
            for row in passes:  # a pass never repeats a bit
                assert len(set(row[1:1 + row[0]].tolist())) == row[0]
            X = rand((N, 5), np.complex128, rng)
            np.testing.assert_allclose(reference.bf_passes_apply(w, passes, X),
                                       reference.ks_chain_apply(blocks, X), rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("N", [2, 8, 64, 1024, 4096])
def test_cuda_radix_passes_match_reference(N, dtype, cp):
    """bf_chain_apply_radix and bf_pass_cols against the NumPy model and the factor-by-factor
    reference: Hadamard order, its reverse and a random order with repeated bits; both data
    layouts (tile kernel), in and out of place (pass kernel)."""
    from gpufact._kernels import cuda
    from gpufact._kernels.plan import butterfly_passes

    rng = np.random.default_rng(N)
    L = N.bit_length() - 1
    B = 37
    for lds in (list(range(L)), list(range(L))[::-1], list(rng.integers(0, L, size=L + 2))):
        chain = [(N >> (ld + 1), 2, 2, 1 << ld) for ld in lds]
        blocks = [rand((a, d, b, c), dtype, rng) for (a, b, c, d) in chain]
        _, offs, _ = make_plan(chain)
        w = np.concatenate([b.ravel() for b in blocks])
        passes = butterfly_passes(lds, offs, cuda.radix_log2(dtype))
        X = rand((N, B), dtype, rng)
        ref = reference.ks_chain_apply([b.astype(np.complex128) for b in blocks], X.astype(np.complex128))
        np.testing.assert_allclose(reference.bf_passes_apply(w.astype(np.complex128), passes, X.astype(np.complex128)),
                                   ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
        for rows in (False, True):
            out = cp.empty((B, N), dtype=dtype).T if rows else cp.empty((N, B), dtype=dtype)
            Xg = cp.ascontiguousarray(cp.asarray(X).T).T if rows else cp.asarray(X)
            cuda.bf_chain_apply_radix(cp.asarray(w), cp.asarray(passes), N, Xg, out)
            np.testing.assert_allclose(host(out), ref, rtol=tol(dtype) * 10 * L,
                                       atol=tol(dtype) * 10 * L * np.abs(ref).max())
        # the per-pass kernel (column batches), out of place and in place
        ptab = butterfly_passes(lds, offs, cuda.pass_radix_log2(dtype))
        for in_place in (False, True):
            Xg = cp.asarray(X)
            out = Xg if in_place else cp.empty((N, B), dtype=dtype)
            cuda.bf_pass_cols_apply(cp.asarray(w), ptab, cp.asarray(ptab), N, Xg, out)
            np.testing.assert_allclose(host(out), ref, rtol=tol(dtype) * 10 * L,
                                       atol=tol(dtype) * 10 * L * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_numba_dense_to_csr_matches_scipy(dtype):
    import scipy.sparse as sp

    from gpufact._kernels.cpu_solvers import dense_to_csr_arrays

    rng = np.random.default_rng(11)
    for shape in [(0, 5), (5, 0), (1, 1), (37, 53), (64, 64)]:
        M = (rand(shape, dtype, rng) * (rng.random(shape) < 0.2)).astype(dtype)
        if M.size:
            M[0, :] = 0  # an empty row
        for A in (M, np.asfortranarray(M), M[:, ::-1]):
            data, indices, indptr = dense_to_csr_arrays(A)
            ref = sp.csr_matrix(np.ascontiguousarray(A))
            ref.sort_indices()
            assert data.dtype == A.dtype and indices.dtype == np.int32
            np.testing.assert_array_equal(indptr, ref.indptr)
            np.testing.assert_array_equal(indices, ref.indices)
            np.testing.assert_array_equal(data, ref.data)
            # a cap on the nonzeros: None above it, the same arrays at it
            assert ref.nnz == 0 or dense_to_csr_arrays(A, max_nnz=ref.nnz - 1) is None
            capped = dense_to_csr_arrays(A, max_nnz=ref.nnz)
            np.testing.assert_array_equal(capped[0], ref.data)
            np.testing.assert_array_equal(capped[2], ref.indptr)


def test_palm_sparse_or_dense_operand_follows_the_density_rule():
    """PALM's operand choice (_op) without np.count_nonzero: CSR exactly when
    _sparse_enough says so, at the break-even count and one above, host and both sizes."""
    from gpufact._backend import get_backend
    from gpufact.factorize.palm import _CSR, _max_sparse_nnz, _op, _sparse_enough

    rng = np.random.default_rng(3)
    for shape in [(64, 64), (40, 50), (256, 784), (600, 600)]:
        size = shape[0] * shape[1]
        k = _max_sparse_nnz(size, False)
        for nnz in sorted({0, max(k, 0), k + 1}):
            M = np.zeros(size, dtype=np.float32)
            M[rng.choice(size, nnz, replace=False)] = rng.standard_normal(nnz) + 3
            M = M.reshape(shape)
            out = _op(M, get_backend(M))
            assert (type(out) is _CSR) == _sparse_enough(nnz, size, False), (shape, nnz)
            if type(out) is _CSR:
                np.testing.assert_array_equal(out.toarray(), M)
            else:
                assert out is M


def test_gpu_butterfly_kernel_choice(monkeypatch):
    from gpufact._kernels import cuda

    monkeypatch.delenv("GPUFACT_GPU_BUTTERFLY", raising=False)
    assert cuda.butterfly_kernel() == "radix2"
    for k in cuda.BUTTERFLY_KERNELS:
        monkeypatch.setenv("GPUFACT_GPU_BUTTERFLY", k)
        assert cuda.butterfly_kernel() == k
    monkeypatch.setenv("GPUFACT_GPU_BUTTERFLY", "fastest")
    with pytest.raises(ValueError, match="GPUFACT_GPU_BUTTERFLY"):
        cuda.butterfly_kernel()
    # tile sizes: padded rows, power-of-two tiles within the budget, 0 when a sample cannot fit
    assert cuda.radix_padded_rows(4096, 4) == 4096 + 128
    assert cuda.bf_radix_tile(4096, 4) == 4 and cuda.bf_radix_tile(1 << 20, 4) == 0
    assert cuda.pass_radix_log2(np.float32) == 6 and cuda.pass_radix_log2(np.complex128) == 4


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (64, 33), (300, 7)])
def test_numba_permutation_gathers_match_numpy(shape, dtype):
    from gpufact._kernels.cpu import permute_rows, permute_within_rows

    rng = np.random.default_rng(5)
    N, B = shape
    perm = rng.permutation(N)
    X = rand((N, B), dtype, rng)
    out = np.full_like(X, np.nan)
    permute_rows(X, perm, out)
    np.testing.assert_array_equal(out, X[perm])
    Xr = np.ascontiguousarray(X.T)
    outr = np.full_like(Xr, np.nan)
    permute_within_rows(Xr, perm, outr)
    np.testing.assert_array_equal(outr, Xr[:, perm])


def test_permutation_factor_in_both_layouts_and_dtypes():
    """P @ X through a product: column batches, row-major samples, and a real input to a
    complex product (cast on the fly by the Numba gather; by indexing for small batches)."""
    from gpufact import FactorProduct, PermFactor

    rng = np.random.default_rng(6)
    for n in (64, 4096):  # 4096 x 9 samples: the parallel Numba gather; 64: NumPy's take
        perm = rng.permutation(n)
        P = FactorProduct([PermFactor(perm, dtype=np.complex64)])
        X = rng.standard_normal((n, 9))
        for Xin, expect in ((X.astype(np.complex64), X[perm]), (X.astype(np.float32), X[perm])):
            np.testing.assert_allclose(P @ Xin, expect, rtol=1e-6)
            np.testing.assert_allclose(np.ascontiguousarray(Xin.T) @ P.T, expect.T, rtol=1e-6)
