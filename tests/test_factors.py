"""Every factor format against its dense reference: apply, transpose, conj, dtype."""
import numpy as np
import pytest
import scipy.sparse as sps

import gpufact
from gpufact import CSRFactor, DenseFactor, DiagFactor, FactorProduct, KSFactor, PermFactor
from gpufact._kernels import reference
from gpufact.factors import ks_support

from conftest import host, rand, tol

PATTERNS = [(1, 1, 1, 1), (2, 2, 2, 4), (4, 2, 2, 1), (1, 3, 5, 2), (3, 4, 2, 1), (2, 1, 3, 3), (1, 8, 8, 8)]


def _ks(pattern, dtype, rng, xp):
    a, b, c, d = pattern
    return KSFactor(rand((a, d, b, c), dtype, rng, xp))


def _factors(dtype, rng, xp):
    """One factor of every kind, shapes (m, n) as listed."""
    n = 12
    S = sps.random(10, n, density=0.3, random_state=0, format="csr").astype(dtype)
    if xp is not np:
        import cupyx.scipy.sparse as csp

        S = csp.csr_matrix(S)
    return [
        _ks((2, 3, 2, 3), dtype, rng, xp),  # 18 x 12
        CSRFactor(S),
        DenseFactor(rand((7, n), dtype, rng, xp)),
        DiagFactor(rand((n,), dtype, rng, xp)),
        PermFactor(xp.asarray(rng.permutation(n)), dtype=dtype),
    ]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_ks_toarray_matches_numpy_reference(pattern, dtype, xp):
    rng = np.random.default_rng(0)
    f = _ks(pattern, dtype, rng, xp)
    a, b, c, d = pattern
    D = host(f.toarray())
    assert D.shape == (a * b * d, a * c * d) == f.shape
    np.testing.assert_array_equal(D, reference.ks_toarray(host(f.blocks)))
    # support is exactly I_a ⊗ 1_bxc ⊗ I_d
    np.testing.assert_array_equal(host(f.support()), np.kron(np.kron(np.eye(a), np.ones((b, c))), np.eye(d)) > 0)
    assert f.nnz == a * b * c * d
    assert np.count_nonzero(D) == f.nnz  # random entries are nonzero
    np.testing.assert_array_equal(host(KSFactor.from_dense(f.toarray(), pattern).blocks), host(f.blocks))


@pytest.mark.parametrize("B", [1, 3, 64, 200])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_ks_apply_matches_dense(pattern, B, dtype, xp):
    rng = np.random.default_rng(1)
    f = _ks(pattern, dtype, rng, xp)
    D = host(f.toarray()).astype(np.complex128)
    X = rand((f.shape[1], B), dtype, rng, xp)
    Y = f @ X
    assert Y.dtype == dtype and Y.shape == (f.shape[0], B)
    ref = D @ host(X)
    np.testing.assert_allclose(host(Y), ref, rtol=tol(dtype), atol=tol(dtype) * np.abs(ref).max())
    # row-major samples: X.T @ f.T and (f.T @ X) agree with the dense transpose
    Xr = rand((B, f.shape[0]), dtype, rng, xp)
    ref_r = host(Xr) @ D
    np.testing.assert_allclose(host(Xr @ f), ref_r, rtol=tol(dtype), atol=tol(dtype) * np.abs(ref_r).max())


def test_every_format_against_dense(dtype, xp):
    rng = np.random.default_rng(2)
    for f in _factors(dtype, rng, xp):
        D = host(f.toarray())
        assert f.dtype == dtype, f
        assert f.backend.xp is xp
        for B in (1, 5):
            X = rand((f.shape[1], B), dtype, rng, xp)
            ref = D @ host(X)
            np.testing.assert_allclose(host(f @ X), ref, rtol=tol(dtype), atol=tol(dtype) * (1 + np.abs(ref).max()))
        np.testing.assert_array_equal(host(f.T.toarray()), D.T)
        np.testing.assert_array_equal(host(f.H.toarray()), D.conj().T)
        np.testing.assert_array_equal(host(f.conj().toarray()), D.conj())
        assert f.nnz == (np.count_nonzero(D) if f.kind != "dense" else D.size)


def test_astype_keeps_values_and_refuses_complex_to_real():
    rng = np.random.default_rng(3)
    f = _ks((2, 2, 2, 2), np.float64, rng, np)
    g = f.astype(np.float32)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g.toarray(), f.toarray(), rtol=1e-6)
    with pytest.raises(TypeError, match="dtype"):
        _ks((2, 2, 2, 2), np.complex64, rng, np).astype(np.float32)
    with pytest.raises(TypeError, match="dtype"):
        f.astype(np.int32)


def test_bad_factor_input():
    with pytest.raises(ValueError, match="blocks"):
        KSFactor(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="blocks"):
        KSFactor(np.full((1, 1, 2, 2), np.nan))
    with pytest.raises(TypeError, match="blocks"):
        KSFactor(np.ones((1, 1, 2, 2), dtype="U1"))
    with pytest.raises(ValueError, match="perm"):
        PermFactor(np.array([0, 0, 1]))
    with pytest.raises(TypeError, match="perm"):
        PermFactor(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="diag"):
        DiagFactor(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="matrix"):
        DenseFactor(np.ones(3))
    with pytest.raises(ValueError, match="matrix"):
        CSRFactor(sps.csr_matrix(np.array([[np.nan, 1.0]])))
    with pytest.raises(ValueError, match="pattern"):
        KSFactor.from_dense(np.ones((4, 4)), (2, 2, 2))
    with pytest.raises(ValueError, match="M must have shape"):
        KSFactor.from_dense(np.ones((4, 5)), (1, 2, 2, 2))
    with pytest.raises(ValueError, match="a must be"):
        ks_support(0, 1, 1, 1)


def test_inputs_are_never_modified(xp):
    rng = np.random.default_rng(4)
    F = FactorProduct(_factors(np.float64, rng, xp)[3:])  # diag, perm (square 12)
    F = FactorProduct([KSFactor(rand((2, 3, 2, 2), np.float64, rng, xp))]) @ F
    X = rand((12, 7), np.float32, rng, xp)
    X0 = X.copy()
    F @ X
    X.T @ F.T
    np.testing.assert_array_equal(host(X), host(X0))
    blocks0 = host(F.factors[0].blocks).copy()
    (F * 3.0) @ X
    np.testing.assert_array_equal(host(F.factors[0].blocks), blocks0)


def test_factor_arrays_are_read_only_views():
    """Products cache derived data (fused weights, dtype): writes through a factor are
    refused, and the caller's own array keeps its flags (it is referenced, not copied)."""
    blocks = np.ones((2, 4, 2, 2))
    M, d, p = np.ones((3, 5)), np.arange(1.0, 5.0), np.array([2, 0, 1])
    for factor, attr, given in ((KSFactor(blocks), "blocks", blocks), (DenseFactor(M), "matrix", M),
                                (DiagFactor(d), "diag", d), (PermFactor(p), "perm", p)):
        arr = getattr(factor, attr)
        with pytest.raises(ValueError, match="read-only"):
            arr[(0,) * arr.ndim] = 7
        assert given.flags.writeable
        assert np.shares_memory(arr, given)
