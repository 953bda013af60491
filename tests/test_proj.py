"""Projections against brute-force references (random, ties, complex), on NumPy and CuPy."""
import itertools

import numpy as np
import pytest

from gpufact import proj
from gpufact._kernels.reference import topk_mask

from conftest import host, rand


def _brute_sp(M, k):
    """Keep the k largest |entries|, ties -> smaller row-major index, by explicit sorting."""
    a = np.abs(M).ravel()
    order = sorted(range(a.size), key=lambda i: (-a[i], i))[:k]
    mask = np.zeros(a.size, dtype=bool)
    mask[order] = True
    return mask.reshape(M.shape)


def _brute_rows(M, k):
    mask = np.zeros(M.shape, dtype=bool)
    for i in range(M.shape[0]):
        for j in sorted(range(M.shape[1]), key=lambda j: (-abs(M[i, j]), j))[:k]:
            mask[i, j] = True
    return mask


def _matrices(xp, dtype):
    rng = np.random.default_rng(0)
    yield rand((7, 9), dtype, rng, xp)
    ties = rng.integers(-2, 3, (8, 6)).astype(dtype)  # many exact ties
    yield xp.asarray(ties)
    yield xp.asarray(np.ones((5, 5), dtype=dtype))
    yield xp.asarray(np.zeros((4, 3), dtype=dtype))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_sparsity_projections_match_brute_force(k, dtype, xp):
    for M in _matrices(xp, dtype):
        Mh = host(M)
        m, n = Mh.shape
        M0 = Mh.copy()
        cases = [(proj.sp((m, n), k), _brute_sp(Mh, k)),
                 (proj.splin((m, n), min(k, n)), _brute_rows(Mh, min(k, n))),
                 (proj.spcol((m, n), min(k, m)), _brute_rows(Mh.T, min(k, m)).T),
                 (proj.splincol((m, n), k), _brute_rows(Mh, min(k, n)) | _brute_rows(Mh.T, min(k, m)).T)]
        for P, mask in cases:
            np.testing.assert_array_equal(host(P.support(M)), mask, err_msg=repr(P))
            out = P(M)
            assert out.dtype == M.dtype and type(out) is type(M)
            ref = np.where(mask, Mh, 0)
            nrm = np.linalg.norm(ref)
            np.testing.assert_allclose(host(out), ref / nrm if nrm > 0 else ref, rtol=1e-6, atol=1e-7)
            unnorm = type(P)((m, n), P.k, normalized=False)(M)
            np.testing.assert_allclose(host(unnorm), ref, rtol=1e-6)
        np.testing.assert_array_equal(host(M), M0)  # input untouched


def test_projection_is_the_euclidean_projection():
    """Among all k-sparse matrices, P(M) is the closest to M (checked over all supports)."""
    rng = np.random.default_rng(1)
    M = rng.standard_normal((3, 3))
    P = proj.sp((3, 3), 3, normalized=False)
    best = min(np.linalg.norm(M - np.where(np.isin(np.arange(9), s).reshape(3, 3), M, 0))
               for s in itertools.combinations(range(9), 3))
    assert np.linalg.norm(M - P(M)) == pytest.approx(best)


def test_topk_kernels_agree_with_reference_on_large_matrices(xp):
    rng = np.random.default_rng(2)
    for shape, k in [((300, 1000), 7), ((1024, 1100), 100), ((64, 5), 5)]:
        M = rng.standard_normal(shape)
        M[:, ::7] = 1.0  # planted ties
        Mx = xp.asarray(M)
        for P, axis in [(proj.splin(shape, k), 1), (proj.spcol(shape, min(k, shape[0])), 0)]:
            np.testing.assert_array_equal(host(P.support(Mx)), topk_mask(np.abs(M), P.k, axis))
        Mx32 = Mx.astype(np.float32)
        np.testing.assert_array_equal(host(proj.splin(shape, k).support(Mx32)),
                                      topk_mask(np.abs(M.astype(np.float32)), k, 1))


def test_complex_selection_by_modulus(xp):
    M = xp.asarray(np.array([[3j, -1, 2 + 2j], [0.5, -4, 1j]]))
    np.testing.assert_array_equal(host(proj.splin((2, 3), 1).support(M)), [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(host(proj.sp((2, 3), 2).support(M)), [[1, 0, 0], [0, 1, 0]])  # |3j|, |-4|
    np.testing.assert_array_equal(host(proj.sp((2, 3), 3).support(M)), [[1, 0, 1], [0, 1, 0]])  # + |2+2j|


def test_fixed_supports_and_norms(xp):
    rng = np.random.default_rng(3)
    M = rand((8, 8), np.float64, rng, xp)
    Mh = host(M)
    bd = proj.blockdiag((8, 8), [(2, 3), (6, 5)], normalized=False)
    ref = np.zeros((8, 8))
    ref[:2, :3] = Mh[:2, :3]
    ref[2:, 3:] = Mh[2:, 3:]
    np.testing.assert_array_equal(host(bd(M)), ref)
    bs = proj.butterfly_support(2, 2, 2, 2, normalized=False, xp=xp)
    np.testing.assert_array_equal(host(bs(M)), np.where(np.kron(np.kron(np.eye(2), np.ones((2, 2))), np.eye(2)) > 0, Mh, 0))
    np.testing.assert_allclose(np.linalg.norm(host(proj.supp(bs.mask)(M))), 1.0)
    C = xp.asarray(np.arange(64.0).reshape(8, 8))
    np.testing.assert_array_equal(host(proj.const(C)(M)), host(C))
    nc = proj.normcol((8, 8), 2.0)(M)
    np.testing.assert_allclose(np.linalg.norm(host(nc), axis=0), 2.0)
    nl = proj.normlin((8, 8))(M)
    np.testing.assert_allclose(np.linalg.norm(host(nl), axis=1), 1.0)
    Z = xp.zeros((8, 8))
    assert not np.any(host(proj.normcol((8, 8))(Z)))  # zero columns stay zero, no NaN
    assert not np.any(np.isnan(host(proj.sp((8, 8), 3)(Z))))


def test_bad_input():
    with pytest.raises(ValueError, match="k must be <= 12"):
        proj.sp((3, 4), 13)
    with pytest.raises(ValueError, match="k must be >= 1"):
        proj.splin((3, 4), 0)
    with pytest.raises(ValueError, match="k must be <= 4"):
        proj.splin((3, 4), 5)
    with pytest.raises(ValueError, match="k must be <= 3"):
        proj.spcol((3, 4), 4)
    with pytest.raises(TypeError, match="k must be an integer"):
        proj.splincol((3, 4), 1.5)
    with pytest.raises(ValueError, match="shape"):
        proj.sp((3,), 1)
    with pytest.raises(ValueError, match="shape\\[0\\]"):
        proj.sp((0, 3), 1)
    with pytest.raises(ValueError, match="M has shape"):
        proj.sp((3, 4), 2)(np.ones((4, 3)))
    with pytest.raises(TypeError, match="M must be a float"):
        proj.sp((3, 4), 2)(np.ones((3, 4), dtype=int))
    with pytest.raises(ValueError, match="blocks"):
        proj.blockdiag((4, 4), [(2, 2), (1, 1)])
    with pytest.raises(ValueError, match="s must be"):
        proj.normcol((4, 4), -1)
    with pytest.raises(TypeError, match="normalized"):
        proj.sp((3, 4), 2, normalized="yes")
