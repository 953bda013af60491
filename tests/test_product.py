"""FactorProduct: chained apply, algebra, norms, interop and bad input."""
import numpy as np
import pytest
import scipy.sparse as sps
from scipy.sparse.linalg import LinearOperator, gmres, svds

import gpufact
from gpufact import FactorProduct, KSFactor, PermFactor, transforms

from conftest import host, rand, tol


def _ks(pattern, dtype, rng, xp):
    a, b, c, d = pattern
    return KSFactor(rand((a, d, b, c), dtype, rng, xp))


def _mixed_product(dtype, rng, xp):
    """Rectangular chain mixing KS (fused runs), CSR, diag and permutation factors: 24 x 16."""
    S = sps.random(12, 12, density=0.4, random_state=1, format="csr").astype(dtype)
    if xp is not np:
        import cupyx.scipy.sparse as csp

        S = csp.csr_matrix(S)
    return FactorProduct([
        _ks((2, 3, 3, 4), dtype, rng, xp),   # 24 x 24
        _ks((1, 3, 2, 8), dtype, rng, xp),   # 24 x 16
        gpufact.DiagFactor(rand((16,), dtype, rng, xp)),
        PermFactor(xp.asarray(rng.permutation(16)), dtype=dtype),
        _ks((4, 2, 2, 2), dtype, rng, xp),   # 16 x 16
        _ks((2, 2, 3, 4), dtype, rng, xp),   # 16 x 24
        _ks((2, 3, 1, 4), dtype, rng, xp),   # 24 x 8
        gpufact.DenseFactor(rand((8, 12), dtype, rng, xp)),
        gpufact.CSRFactor(S),
    ])


def _dense(F):
    D = None
    for f in F.factors:
        A = host(f.toarray()).astype(np.complex128)
        D = A if D is None else D @ A
    return D


@pytest.mark.parametrize("B", [1, 2, 33, 300])
def test_product_apply_all_layouts(B, dtype, xp):
    rng = np.random.default_rng(0)
    F = _mixed_product(dtype, rng, xp)
    D = _dense(F)
    assert F.shape == D.shape == (24, 12)
    X = rand((12, B), dtype, rng, xp)
    ref = D @ host(X)
    rt, at = tol(dtype) * 10, tol(dtype) * 10 * np.abs(ref).max()
    Y = F @ X
    assert Y.dtype == dtype and Y.shape == (24, B)
    np.testing.assert_allclose(host(Y), ref, rtol=rt, atol=at)
    # vector
    np.testing.assert_allclose(host(F @ X[:, 0]), ref[:, 0], rtol=rt, atol=at)
    # row-major samples: X.T @ F.T == (F @ X).T, from a C-contiguous (B, N) array
    Xr = xp.ascontiguousarray(X.T)
    Yr = Xr @ F.T
    assert Yr.shape == (B, 24) and Yr.flags.c_contiguous
    np.testing.assert_allclose(host(Yr), ref.T, rtol=rt, atol=at)
    # Fortran-ordered and strided inputs
    np.testing.assert_allclose(host(F @ xp.asfortranarray(X)), ref, rtol=rt, atol=at)
    X2 = rand((12, 2 * B), dtype, rng, xp)[:, ::2]
    np.testing.assert_allclose(host(F @ X2), D @ host(X2), rtol=rt, atol=tol(dtype) * 10 * np.abs(D @ host(X2)).max())
    # adjoint
    Z = rand((24, B), dtype, rng, xp)
    refh = D.conj().T @ host(Z)
    np.testing.assert_allclose(host(F.H @ Z), refh, rtol=rt, atol=tol(dtype) * 10 * np.abs(refh).max())


def test_dtype_promotion_and_float32_end_to_end():
    H32 = transforms.hadamard(64, dtype=np.float32)
    X32 = np.ones((64, 3), dtype=np.float32)
    assert (H32 @ X32).dtype == np.float32
    assert (X32.T @ H32).dtype == np.float32
    assert (H32 @ X32.astype(np.float64)).dtype == np.float64
    assert (H32 @ np.ones((64, 3), dtype=np.int64)).dtype == np.float64
    assert (transforms.dft(64, dtype=np.complex64) @ X32).dtype == np.complex64
    assert H32.astype(np.float64).dtype == np.float64
    assert H32.norm(2) == pytest.approx(8.0, rel=1e-5)


def test_algebra_and_description(xp):
    rng = np.random.default_rng(1)
    F = transforms.random_butterfly(32, seed=1, xp=xp)
    G = transforms.random_butterfly(32, seed=2, xp=xp)
    FG = F @ G
    assert isinstance(FG, FactorProduct) and len(FG) == len(F) + len(G)
    np.testing.assert_allclose(host(FG.toarray()), host(F.toarray()) @ host(G.toarray()), atol=1e-12)
    f = F.factors[0]
    assert isinstance(F @ f, FactorProduct) and isinstance(f @ F, FactorProduct)
    assert F.nnz == 2 * 32 * 5
    assert F.rcg == pytest.approx(32 * 32 / (2 * 32 * 5))
    assert F.density == pytest.approx(1 / F.rcg)
    np.testing.assert_allclose(host((2.5 * F).toarray()), 2.5 * host(F.toarray()), atol=1e-12)
    np.testing.assert_allclose(host(F.T.toarray()), host(F.toarray()).T, atol=1e-12)
    assert F.T.T is F
    assert F.factors is not F.factors  # a copy: mutating it leaves F intact
    D = transforms.dft(16, xp=xp)
    np.testing.assert_allclose(host((1j * D).toarray()), 1j * host(D.toarray()), atol=1e-12)
    assert "FactorProduct(shape=(32, 32)" in repr(F)


def test_norms_never_densify_and_match_numpy(xp):
    rng = np.random.default_rng(2)
    F = _mixed_product(np.float64, rng, xp)
    D = _dense(F)
    assert F.norm("fro") == pytest.approx(np.linalg.norm(D), rel=1e-10)
    assert F.norm(2, tol=1e-12, max_iter=2000) == pytest.approx(np.linalg.norm(D, 2), rel=1e-5)
    H = transforms.hadamard(256, xp=xp)
    assert H.norm(2) == pytest.approx(16.0, rel=1e-6)
    assert H.norm("fro") == pytest.approx(256.0, rel=1e-12)
    with pytest.raises(ValueError, match="ord"):
        F.norm(1)


def test_linear_operator_interop():
    F = transforms.random_butterfly(64, seed=3)
    D = F.toarray()
    op = F.aslinearoperator()
    assert isinstance(op, LinearOperator) and op.shape == (64, 64)
    s = svds(op, k=3, return_singular_vectors=False)
    np.testing.assert_allclose(np.sort(s), np.sort(np.linalg.svd(D, compute_uv=False))[-3:], rtol=1e-8)
    b = np.arange(64.0)
    np.testing.assert_allclose(op.rmatvec(b), D.T @ b, atol=1e-12)
    # a well-conditioned operator (unitary DFT times a diagonal in [1, 2]): gmres solves it
    G = transforms.dft(64, norm="ortho") @ gpufact.DiagFactor(1 + np.random.default_rng(0).random(64))
    x, info = gmres(G.aslinearoperator(), b.astype(complex), rtol=1e-12, atol=0, restart=64, maxiter=50)
    assert info == 0
    np.testing.assert_allclose(G.toarray() @ x, b, atol=1e-9 * np.linalg.norm(b))


def test_bad_input():
    F = transforms.hadamard(16)
    with pytest.raises(ValueError, match="X: expected shape"):
        F @ np.ones((15, 2))
    with pytest.raises(ValueError, match="X: expected shape"):
        F @ np.ones((16, 2, 2))
    with pytest.raises(ValueError, match="X: expected shape"):
        np.ones((2, 15)) @ F
    with pytest.raises(TypeError, match="X: unsupported dtype"):
        F @ np.array(["a"] * 16)
    with pytest.raises(ValueError, match="do not chain"):
        FactorProduct([KSFactor(np.ones((1, 1, 2, 3))), KSFactor(np.ones((1, 1, 2, 2)))])
    with pytest.raises(ValueError, match="empty"):
        FactorProduct([])
    with pytest.raises(TypeError, match="list of factors"):
        FactorProduct(F.factors[0])
    with pytest.raises(TypeError):
        FactorProduct(["not a factor"])
    with pytest.raises(ValueError, match="device"):
        F.to_device("tpu")
    with pytest.raises(TypeError, match="dtype"):
        F.astype("int8")


def test_mixing_numpy_and_cupy_is_a_type_error(cp):
    F = transforms.hadamard(16)
    with pytest.raises(TypeError, match="mix"):
        F @ cp.ones((16, 2))
    G = F.to_device("gpu")
    with pytest.raises(TypeError, match="mix"):
        G @ np.ones((16, 2))
    with pytest.raises(TypeError, match="mix"):
        F @ G
    np.testing.assert_allclose(host(G @ cp.ones((16, 2))), F @ np.ones((16, 2)))
    assert G.to_device("cpu").device == "cpu"


@pytest.mark.parametrize("cdtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("shape", [(64,), (64, 3), (64, 20)])
def test_real_batch_into_complex_product(cdtype, shape):
    """A real batch of the product's precision is loaded as is (no converted copy) by the
    one-vector, small-batch and tiled paths, in both layouts; the DFT's permutation casts it."""
    rng = np.random.default_rng(8)
    rdt = np.finfo(np.dtype(cdtype)).dtype
    X = rng.standard_normal(shape).astype(rdt)
    for F in (gpufact.transforms.random_butterfly(64, dtype=cdtype, seed=1), gpufact.transforms.dft(64, dtype=cdtype)):
        ref = F.toarray() @ X.astype(cdtype)
        Y = F @ X
        assert Y.dtype == cdtype
        np.testing.assert_allclose(Y, ref, rtol=0, atol=50 * tol(cdtype) * np.abs(ref).max())
        Yr = np.ascontiguousarray(X.T) @ F.T
        np.testing.assert_allclose(Yr, ref.T, rtol=0, atol=50 * tol(cdtype) * np.abs(ref).max())


def test_one_vector_lean_path_matches_general_path():
    """F @ x for one contiguous vector of F's dtype takes the lean path after the first call:
    the same result bit for bit; other vectors (another dtype, strided, wrong length) still
    go through the general path and its checks; x is never modified."""
    import pickle

    rng = np.random.default_rng(3)
    for n in (2, 8, 256, 1024):
        H = transforms.hadamard(n, dtype=np.float32)
        x = rng.standard_normal(n).astype(np.float32)
        x_before = x.copy()
        y0 = H @ x  # general path; makes the lean one
        assert H._vector
        y1 = H @ x
        np.testing.assert_array_equal(y0, y1)
        np.testing.assert_allclose(y1, H.toarray() @ x, rtol=1e-4, atol=1e-4 * np.sqrt(n))
        np.testing.assert_array_equal(x, x_before)
        y64 = H @ x.astype(np.float64)
        assert y64.dtype == np.float64
        np.testing.assert_allclose(y64, y1, rtol=1e-4, atol=1e-4 * np.sqrt(n))
        np.testing.assert_array_equal(H @ np.repeat(x, 2)[::2], y1)  # strided
        with pytest.raises(ValueError, match="X"):
            H @ x[:-1]
        H2 = pickle.loads(pickle.dumps(H))
        assert H2._vector is None
        np.testing.assert_array_equal(H2 @ x, y1)


def test_one_vector_lean_path_sees_refreshed_weights():
    """The lean path reads the chain's weight copy on each call: blocks changed in place and
    KSChain.refresh() (what gpufact.torch does after a training step) are seen by F @ x."""
    rng = np.random.default_rng(5)
    blocks = [np.array(f.blocks) for f in transforms.random_butterfly(64, seed=1).factors]  # own, writable
    F = FactorProduct([KSFactor(b, check=False) for b in blocks])
    x = rng.standard_normal(64)
    F @ x
    y_before = F @ x  # lean path
    blocks[0] *= 2.0  # in place, as a training step on the framework's parameters
    F._get_segments()[0].refresh()
    y = F @ x
    np.testing.assert_allclose(y, 2.0 * y_before, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, F.toarray() @ x, rtol=1e-12, atol=1e-12)


def test_a_permutation_takes_the_other_factors_dtype():
    """A permutation holds no values: PermFactor's default float64 does not promote a float32
    or complex64 chain (found by a fresh user: a float32 Hadamard with a permutation in it
    computed and returned float64); products of permutations alone keep their dtype."""
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.complex64):
        H = gpufact.transforms.hadamard(64, dtype=np.float32).astype(dt)
        F = gpufact.FactorProduct([gpufact.PermFactor(rng.permutation(64)), *H.factors,
                                   gpufact.PermFactor(rng.permutation(64))])
        assert F.dtype == dt and F.T.dtype == dt and F.toarray().dtype == dt
        X = rng.standard_normal((64, 20)).astype(np.float32)
        for got in (F @ X, (np.ascontiguousarray(X.T) @ F.T).T):
            assert got.dtype == dt
            np.testing.assert_allclose(got, F.toarray().astype(np.complex128) @ X, rtol=1e-5, atol=1e-4)
    P = gpufact.FactorProduct([gpufact.PermFactor(np.arange(4), dtype=np.float32)] * 2)
    assert P.dtype == np.float32
