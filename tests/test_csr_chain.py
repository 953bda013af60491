"""Chains of CSR factors: the fused apply (``F @ X``, ``X @ F.T``) and the fused assignment
``FactorProduct.argmin_affine``, against dense products and the NumPy reference."""
import numpy as np
import pytest
import scipy.sparse as sps

from gpufact import CSRFactor, DenseFactor, DiagFactor, FactorProduct, KSFactor, PermFactor, proj
from gpufact._kernels import reference
from gpufact.factors._csr_chain import CSRChain

from conftest import host, rand, tol

REAL = [np.float32, np.float64]


def _csr(m, n, dtype, rng, xp, density=0.3):
    S = sps.random(m, n, density=density, random_state=rng, format="csr", dtype=np.float64)
    S.data = rand(S.data.shape, dtype, rng)  # complex values for complex dtypes
    S = S.astype(dtype)
    if xp is not np:
        import cupyx.scipy.sparse as csp

        S = csp.csr_matrix(S)
    return CSRFactor(S)


def _chain(dtype, rng, xp, K=7, N=11):
    """λ · D @ S_1 @ S_2 @ D' @ S_3 with odd shapes K x 13, 13 x 13, 13 x N."""
    fs = [DiagFactor(rand((K,), dtype, rng, xp)), _csr(K, 13, dtype, rng, xp), _csr(13, 13, dtype, rng, xp),
          DiagFactor(rand((13,), dtype, rng, xp)), _csr(13, N, dtype, rng, xp, density=0.4)]
    return 0.5 * FactorProduct(fs)


def _dense(F):
    D = None
    for f in F.factors:
        A = host(f.toarray()).astype(np.complex128)
        D = A if D is None else D @ A
    return D


def _close(got, ref, dtype):
    ref = np.asarray(ref)
    np.testing.assert_allclose(host(got), ref, rtol=0, atol=50 * tol(dtype) * max(1.0, np.abs(ref).max(initial=0)))


def test_segments_group_csr_and_diagonal_runs():
    rng = np.random.default_rng(0)
    F = FactorProduct([DiagFactor(np.ones(6)), _csr(6, 6, np.float64, rng, np), KSFactor.random((1, 2, 2, 3), seed=0),
                       KSFactor.random((3, 2, 2, 1), seed=1), DiagFactor(np.ones(6)), PermFactor(rng.permutation(6)),
                       _csr(6, 6, np.float64, rng, np), _csr(6, 6, np.float64, rng, np), DenseFactor(np.ones((6, 4)))])
    kinds = [type(s).__name__ for s in F._get_segments()]
    assert kinds == ["CSRChain", "KSChain", "DiagFactor", "PermFactor", "CSRChain", "DenseFactor"]
    assert [len(s.factors) for s in F._get_segments() if isinstance(s, CSRChain)] == [2, 2]
    with pytest.raises(ValueError, match="at least one CSRFactor"):
        CSRChain([DiagFactor(np.ones(3))])


@pytest.mark.parametrize("B", [0, 1, 5, 9, 300])
def test_chain_apply_matches_dense(xp, dtype, B):
    rng = np.random.default_rng(B)
    F = _chain(dtype, rng, xp)
    assert [type(s).__name__ for s in F._get_segments()] == ["CSRChain"]
    D = _dense(F)
    X = rand((11, B), dtype, rng, xp)
    X_before = host(X).copy()
    Y = F @ X
    assert Y.dtype == dtype and Y.shape == (7, B)
    _close(Y, D @ host(X), dtype)
    # row-major samples, C- and Fortran-ordered, and the transposed operator
    Xr = xp.ascontiguousarray(X.T)
    _close(Xr @ F.T, (D @ host(X)).T, dtype)
    _close(xp.asfortranarray(Xr) @ F.T, (D @ host(X)).T, dtype)
    Z = rand((B, 7), dtype, rng, xp)
    _close(Z @ F, host(Z) @ D, dtype)
    np.testing.assert_array_equal(host(X), X_before)  # input untouched
    if B:
        _close(F @ X[:, 0], D @ host(X)[:, 0], dtype)


def test_chain_apply_odd_inputs():
    """Read-only, memory-mapped, negative-stride and integer batches; a real batch into a
    complex chain; a float32 batch into a float64 chain (float64 result)."""
    rng = np.random.default_rng(1)
    F = _chain(np.float64, rng, np)
    D = _dense(F).real
    X = rng.standard_normal((40, 11))
    ro = X.copy()
    ro.flags.writeable = False
    _close(ro @ F.T, X @ D.T, np.float64)
    _close(X[::-1] @ F.T, X[::-1] @ D.T, np.float64)
    Xi = rng.integers(-3, 4, (40, 11))
    _close(Xi @ F.T, Xi @ D.T, np.float64)
    Y = X.astype(np.float32) @ F.T
    assert Y.dtype == np.float64
    Fc = _chain(np.complex64, rng, np)
    Yc = Fc @ X.T.astype(np.float32)
    assert Yc.dtype == np.complex64
    _close(Yc, _dense(Fc) @ X.T, np.complex64)


def test_chain_apply_memmap(tmp_path):
    rng = np.random.default_rng(2)
    F = _chain(np.float32, rng, np)
    X = rng.standard_normal((50, 11)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    Xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    _close(Xm @ F.T, X @ _dense(F).real.T, np.float32)
    lab, _ = F.argmin_affine(Xm, np.zeros(7, np.float32))
    np.testing.assert_array_equal(lab, F.argmin_affine(X, np.zeros(7, np.float32))[0])


def test_reference_kernels_match_dense():
    rng = np.random.default_rng(3)
    F = _chain(np.float64, rng, np)
    chain = F._get_segments()[0]
    X = rng.standard_normal((11, 6))
    D = _dense(F).real
    np.testing.assert_allclose(reference.csr_chain_apply(chain.mats(), X), D @ X, atol=1e-12)
    bias = rng.standard_normal(7)
    lab, val = reference.csr_chain_argmin(chain.mats(), X, bias, -2.0)
    S = bias[:, None] - 2 * (D @ X)
    np.testing.assert_array_equal(lab, S.argmin(0))
    np.testing.assert_allclose(val, S.min(0), atol=1e-12)


def _check_argmin(F, X, bias, alpha=-2.0, **kw):
    dt = np.result_type(F.dtype, X.dtype if X.dtype.kind == "f" else np.float64)
    D = _dense(F).real
    S = float(alpha) * (host(X).astype(np.float64) @ D.T) + host(bias)
    lab, val = F.argmin_affine(X, bias, alpha, **kw)
    assert lab.dtype == np.int32 and val.dtype == dt and lab.shape == val.shape == (X.shape[0],)
    lab, val = host(lab), host(val)
    # exact labels where the best score is clear of the runner-up by more than rounding
    srt = np.sort(S, axis=1)
    clear = (srt[:, 1] - srt[:, 0]) > 1e3 * tol(dt) * np.abs(S).max()
    np.testing.assert_array_equal(lab[clear], S.argmin(1)[clear])
    assert clear.mean() > 0.8
    _close(val, S[np.arange(len(lab)), lab], dt)
    _close(val, S.min(1), dt)
    return lab, val


@pytest.mark.parametrize("dtype", REAL, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("B", [1, 7, 9, 1000])
def test_argmin_affine_fused_matches_dense(xp, dtype, B):
    rng = np.random.default_rng(B)
    F = _chain(dtype, rng, xp, K=7, N=11)
    X = rand((B, 11), dtype, rng, xp)
    bias = rand((7,), dtype, rng, xp)
    X_before, b_before = host(X).copy(), host(bias).copy()
    _check_argmin(F, X, bias)
    _check_argmin(F, X, bias, alpha=0.75)
    np.testing.assert_array_equal(host(X), X_before)
    np.testing.assert_array_equal(host(bias), b_before)


def test_argmin_affine_quickmeans_shape():
    """The centroid operator QuickMeans builds: K x A, A x A, ..., A x D splincol factors."""
    rng = np.random.default_rng(4)
    K, D, Q = 24, 40, 5
    A = min(K, D)
    shapes = [(K, A)] + [(A, A)] * (Q - 2) + [(A, D)]
    fs = [CSRFactor(np.asarray(proj.splincol(sh, 3, normalized=False)(rng.standard_normal(sh)))) for sh in shapes]
    F = 2.0 * FactorProduct(fs).astype(np.float32)
    X = rng.standard_normal((500, D)).astype(np.float32)
    V = _dense(F).real
    _check_argmin(F, X, (V * V).sum(1).astype(np.float32))


def test_argmin_affine_other_dtypes_and_layouts():
    rng = np.random.default_rng(5)
    F = _chain(np.float64, rng, np)
    bias = rng.standard_normal(7)
    _check_argmin(F, rng.standard_normal((60, 11)).astype(np.float32), bias)  # float64 scores
    _check_argmin(F, rng.integers(-4, 5, (60, 11)), bias)
    X = rng.standard_normal((60, 11))
    _check_argmin(F, np.asfortranarray(X), bias)
    _check_argmin(F, X[::-2], bias)
    F32 = F.astype(np.float32)
    _check_argmin(F32, X.astype(np.float32), bias)  # a float64 bias is cast to the scores' dtype
    lab, val = F.argmin_affine(np.zeros((0, 11)), bias)
    assert lab.shape == val.shape == (0,) and lab.dtype == np.int32


def test_argmin_affine_after_other_factors():
    """A CSR chain in front of KS / dense factors: those run first (in chunks), the argmin
    is fused into the chain; a product led by another factor takes the chunked path."""
    rng = np.random.default_rng(6)
    G = FactorProduct([_csr(7, 8, np.float64, rng, np), _csr(8, 8, np.float64, rng, np),
                       KSFactor.random((2, 2, 2, 2), seed=3), DenseFactor(rng.standard_normal((8, 11)))])
    X = rng.standard_normal((300, 11))
    bias = rng.standard_normal(7)
    for kw in ({}, {"chunk_bytes": 100}):
        _check_argmin(G, X, bias, **kw)
    H = FactorProduct([DenseFactor(rng.standard_normal((7, 8))), _csr(8, 11, np.float64, rng, np)])
    _check_argmin(H, X, bias, chunk_bytes=100)
    _check_argmin(_chain(np.float64, rng, np), X.astype(np.float32), bias, chunk_bytes=64)


def test_argmin_affine_ties_and_nan():
    """Equal scores go to the smaller k, a NaN score wins (the first one), as numpy.argmin
    on the scores of the sparse chain (the NumPy reference)."""
    rng = np.random.default_rng(7)
    S1 = rng.standard_normal((6, 9)) * (rng.random((6, 9)) < 0.5)
    S1[[1, 3, 4]] = S1[2]  # rows 1-4 identical: identical scores
    S2 = rng.standard_normal((9, 12)) * (rng.random((9, 12)) < 0.3)
    S2[:, 5] = 0
    S2[4, 5] = 1.0  # feature 5 reaches rows k only through S2[4]
    F = FactorProduct([CSRFactor(S1), CSRFactor(S2)])
    bias = np.zeros(6)
    bias[0] = 1e6  # k = 0 never wins
    X = rng.standard_normal((40, 12))
    X[:8] = 0  # all scores equal (0) except k = 0: label 1 everywhere
    X[10, 5] = np.nan  # NaN only in the rows k with S1[k, 4] != 0
    chain = F._get_segments()[0]
    ref_lab, ref_val = reference.csr_chain_argmin(chain.mats(), X.T, bias, -2.0)
    for B in (40, 3):  # the tiled and the one-sample kernels
        lab, val = F.argmin_affine(X[:B], bias)
        np.testing.assert_array_equal(lab, ref_lab[:B])
        np.testing.assert_allclose(val, ref_val[:B], atol=1e-12)
    assert (lab[:3] == 1).all() and (ref_lab[:8] == 1).all()
    nan_rows = np.flatnonzero(S1[:, 4])
    if nan_rows.size:
        assert ref_lab[10] == nan_rows[0] and np.isnan(ref_val[10])
    assert np.isin(ref_lab, [0, 1, 5]).all()  # never a later copy (2-4) of an identical row


def test_argmin_affine_bad_input():
    rng = np.random.default_rng(8)
    F = _chain(np.float64, rng, np)
    X = rng.standard_normal((5, 11))
    with pytest.raises(ValueError, match="X: expected shape"):
        F.argmin_affine(X[:, :3], np.zeros(7))
    with pytest.raises(ValueError, match="X: expected shape"):
        F.argmin_affine(X[0], np.zeros(7))
    with pytest.raises(ValueError, match="bias: expected shape"):
        F.argmin_affine(X, np.zeros(6))
    with pytest.raises(TypeError, match="bias"):
        F.argmin_affine(X, np.zeros(7, complex))
    with pytest.raises(TypeError, match="real"):
        F.argmin_affine(X.astype(complex), np.zeros(7))
    with pytest.raises(TypeError, match="real"):
        _chain(np.complex128, rng, np).argmin_affine(X, np.zeros(7))
    with pytest.raises(ValueError, match="chunk_bytes"):
        F.argmin_affine(X, np.zeros(7), chunk_bytes=0)
    for alpha in (1j, np.nan, "2", None):
        with pytest.raises(TypeError, match="alpha"):
            F.argmin_affine(X, np.zeros(7), alpha)


@pytest.mark.parametrize("dtype", REAL, ids=lambda d: np.dtype(d).name)
def test_argmin_affine_small_batch_path(dtype):
    """1 to 8 C-contiguous rows of F's dtype take argmin_affine's lean path: the same labels
    and values as the general path (forced here by a non-contiguous copy) and the dense
    scores; every other small input still goes through the checks."""
    from gpufact._kernels import cpu_sparse
    from gpufact.product import ARGMIN_SMALL_ROWS

    assert ARGMIN_SMALL_ROWS == cpu_sparse.SMALL_B  # the general path runs the same kernel for them
    rng = np.random.default_rng(11)
    F = _chain(dtype, rng, np)
    bias = rand((7,), dtype, rng, np)
    X = rand((ARGMIN_SMALL_ROWS + 1, 11), dtype, rng, np)
    V = _dense(F).real
    for B in range(1, ARGMIN_SMALL_ROWS + 1):
        Xb = np.ascontiguousarray(X[:B])
        small = F._argmin_small(Xb, bias, -2.0)
        assert small is not None and small[2]
        lab, val = F.argmin_affine(Xb, bias)
        np.testing.assert_array_equal(lab, small[0])
        np.testing.assert_array_equal(val, small[1])
        Xg = np.asfortranarray(np.concatenate([Xb, Xb]))[:B]  # not C-contiguous (B > 1)
        if B > 1:
            assert F._argmin_small(Xg, bias, -2.0) is None
        glab, gval = F.argmin_affine(Xg, bias)
        np.testing.assert_array_equal(lab, glab)
        np.testing.assert_allclose(val, gval, rtol=tol(dtype))
        S = bias[None, :] - 2.0 * Xb.astype(np.float64) @ V.T
        np.testing.assert_array_equal(lab, S.argmin(1))
        assert lab.dtype == np.int32 and val.dtype == dtype
    x1 = X[:1].copy()
    for v in (np.nan, np.inf, -np.inf):  # the lean path reports non-finite input
        xb = X[:3].copy()
        xb[2, 4] = v
        assert not F._argmin_small(xb, bias, -2.0)[2]
    # not taken: more rows, another dtype, a NumPy scalar alpha, a bias of another dtype
    assert F._argmin_small(X, bias, -2.0) is None
    assert F._argmin_small(x1.astype(np.float16), bias, -2.0) is None
    assert F._argmin_small(x1, bias, np.float64(-2.0)) is None
    assert F._argmin_small(x1, bias.astype(np.float16), -2.0) is None
    # bad input on small batches still raises
    with pytest.raises(ValueError, match="X: expected shape"):
        F.argmin_affine(np.ascontiguousarray(x1[:, :3]), bias)
    with pytest.raises(ValueError, match="bias: expected shape"):
        F.argmin_affine(x1, bias[:6])
    with pytest.raises(ValueError, match="chunk_bytes"):
        F.argmin_affine(x1, bias, chunk_bytes=0)
    for alpha in (np.nan, np.inf, True):
        with pytest.raises(TypeError, match="alpha"):
            F.argmin_affine(x1, bias, alpha)
    with pytest.raises(TypeError, match="alpha"):
        F.argmin_affine(x1, bias, "2")


@pytest.mark.parametrize("dtype", REAL, ids=lambda d: np.dtype(d).name)
def test_argmin_affine_fixed_width_tiles(dtype):
    """Batches that fill every thread with full tiles run the fixed-width kernel (a padded
    last tile): the same labels as the dense scores and as the runtime-width kernel, samples
    as rows or as columns."""
    import numba

    from gpufact._kernels import cpu_sparse as k

    rng = np.random.default_rng(12)
    F = _chain(dtype, rng, np)
    chain = F._get_segments()[0]
    bias = rand((7,), dtype, rng, np)
    dt = np.dtype(dtype)
    w = k.FIXED_TILE_BYTES[0] // dt.itemsize
    B = 2 * numba.get_num_threads() * w + 5
    assert k.fixed_width(k.tile_width(30, dt.itemsize, B, numba.get_num_threads()), dt.itemsize, B,
                         numba.get_num_threads()) == w
    X = rand((B, 11), dtype, rng, np)
    V = _dense(F).real
    S = bias[None, :] - 2.0 * X.astype(np.float64) @ V.T
    for Xl in (X, np.asfortranarray(X)):
        lab, val = F.argmin_affine(Xl, bias)
        np.testing.assert_array_equal(lab, S.argmin(1))
        np.testing.assert_allclose(val, S.min(1), rtol=tol(dtype), atol=tol(dtype) * np.abs(S).max())
    plan, _, ip, ix, data = chain.arrays(dt)
    r0, r1 = chain.buffer_rows(True)
    lab2, val2 = np.empty(B, np.int32), np.empty(B, dt)
    k.csr_chain_argmin(plan, ip, ix, data, r0, r1, X, True, bias, dt.type(-2), lab2, val2, 24, 2)
    np.testing.assert_array_equal(lab, lab2)
    np.testing.assert_allclose(val, val2, rtol=tol(dtype))


@pytest.mark.parametrize("B", [3, 40, 700])
def test_argmin_finite_flag(B):
    """The fused CPU kernels report NaN/inf in X, found while loading it (one-sample, runtime-
    width and fixed-width kernels); labels are unaffected for finite X."""
    rng = np.random.default_rng(13)
    F = _chain(np.float32, rng, np)
    bias = rand((7,), np.float32, rng, np)
    X = rand((B, 11), np.float32, rng, np)
    lab, val, finite = F._argmin(X, bias, -2.0)
    assert finite is True
    np.testing.assert_array_equal(lab, F.argmin_affine(np.asfortranarray(X), bias)[0])
    for v in (np.nan, np.inf, -np.inf):
        Xb = X.copy()
        Xb[B - 1, 10] = v  # the last sample (a padded tile's), the last feature
        assert F._argmin(Xb, bias, -2.0)[2] is False
        assert F._argmin(np.asfortranarray(Xb), bias, -2.0)[2] is False
    assert F._argmin(X.astype(np.float64), bias, -2.0)[2] is True  # converted to the chain's dtype
    G = FactorProduct([_csr(7, 11, np.float64, rng, np), DenseFactor(rng.standard_normal((11, 11)))])
    assert G._argmin(X.astype(np.float64), bias.astype(np.float64), -2.0)[2] is None  # not known
