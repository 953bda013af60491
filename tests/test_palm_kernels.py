"""PALM4MSA's fast paths against dense references: the one-pass splincol projection, the
sparse × dense product kernels, the Gram quadratic form, and sweeps through R Rᴴ / A Rᴴ
against sweeps through R itself."""
import numpy as np
import pytest
import scipy.sparse as sp

from gpufact import proj
from gpufact._backend import get_backend
from gpufact._kernels import cpu_solvers
from gpufact._kernels.reference import topk_mask
from gpufact.factorize import palm, palm4msa

DTYPES = [np.float32, np.float64, np.complex128]


def _rand(rng, shape, dtype):
    M = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        M = M + 1j * rng.standard_normal(shape)
    return M.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,k", [(proj.splincol, 3), (proj.splincol, 8), (proj.splin, 2), (proj.spcol, 5),
                                   (proj.splincol, 1)])
def test_small_k_projection_matches_the_reference(cls, k, dtype):
    """Above 4096 entries the projection takes the two-pass kernel: same support as the
    stable-argsort reference (ties to the smaller index, planted), same normalisation."""
    rng = np.random.default_rng(k)
    for shape in [(70, 90), (256, 40)]:
        M = _rand(rng, shape, dtype)
        M[:, ::5] = 1.0  # ties in rows and columns
        M[::7, :] = -1.0
        P = cls(shape, k)
        kr, kc = P._row_col_k()
        mask = np.zeros(shape, dtype=bool)
        if kr:
            mask |= topk_mask(np.abs(M), kr, 1)
        if kc:
            mask |= topk_mask(np.abs(M), kc, 0)
        ref = np.where(mask, M, 0)
        ref = ref / np.linalg.norm(ref.astype(np.complex128 if np.dtype(dtype).kind == "c" else np.float64))
        out = P(M)
        assert out.dtype == M.dtype and out.flags.c_contiguous
        np.testing.assert_array_equal(out != 0, mask)
        np.testing.assert_allclose(out, ref, rtol=1e-5 if dtype == np.float32 else 1e-12)
        np.testing.assert_array_equal(P(np.asfortranarray(M)), out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["C", "F"])
def test_sparse_dense_products_match_dense(dtype, order):
    rng = np.random.default_rng(3)
    be = get_backend(np.zeros(1))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for m, k, n in [(7, 5, 9), (64, 48, 130), (3, 1, 2)]:
        S = sp.random(k, n, 0.1, format="csr", random_state=rng, dtype=np.float64)
        S = sp.csr_matrix((S.data.astype(dtype) * (1 + (1j if np.dtype(dtype).kind == "c" else 0)),
                           S.indices, S.indptr), shape=S.shape)
        Sd = S.toarray()
        X = np.asarray(_rand(rng, (m, k), dtype), order=order)
        Y = np.asarray(_rand(rng, (n, m), dtype), order=order)
        Z = np.asarray(_rand(rng, (m, n), dtype), order=order)
        U = np.asarray(_rand(rng, (k, 5), dtype), order=order)
        before = [M.copy(order="A") for M in (X, Y, Z, U, Sd)]
        for got, ref in [(palm._mm(X, S, be), X @ Sd), (palm._mm(S, Y, be), Sd @ Y),
                         (palm._mm(Z, palm._herm(S), be), Z @ Sd.conj().T),
                         (palm._mm(palm._herm(S), U, be), Sd.conj().T @ U)]:
            assert type(got) is np.ndarray and got.dtype == dtype
            np.testing.assert_allclose(got, ref, **tol)
        for M, M0 in zip((X, Y, Z, U, S.toarray()), before):  # inputs untouched
            np.testing.assert_array_equal(M, M0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_host_csr_operands_match_dense(dtype):
    """PALM's host CSR (palm._CSR, built by _op from a dense iterate): transpose, conjugate,
    toarray, products with vectors, dense matrices of either order, scipy CSR and each other
    (sparse results kept sparse only when they stay sparse) against NumPy, inputs untouched."""
    rng = np.random.default_rng(5)
    be = get_backend(np.zeros(1))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for m, k, n in [(70, 64, 90), (64, 128, 64)]:
        Sd = _rand(rng, (m, k), dtype) * (rng.random((m, k)) < 0.04)
        Td = _rand(rng, (k, n), dtype) * (rng.random((k, n)) < 0.04)
        S, T = palm._op(Sd, be), palm._op(Td, be)
        assert type(S) is palm._CSR and type(T) is palm._CSR and S.nnz == np.count_nonzero(Sd)
        before = [M.copy() for M in (S.data, S.indices, S.indptr, Sd, Td)]
        np.testing.assert_array_equal(S.toarray(), Sd)
        np.testing.assert_array_equal(S.T.toarray(), Sd.T)
        np.testing.assert_array_equal(palm._herm(S).toarray(), Sd.conj().T)
        assert S.T.T.format == "csr" and S.T.shape == (k, m)
        x = _rand(rng, (k,), dtype)
        np.testing.assert_allclose(S @ x, Sd @ x, **tol)
        y = _rand(rng, (m,), dtype)
        np.testing.assert_allclose(palm._herm(S) @ y, Sd.conj().T @ y, **tol)
        for order in "CF":
            X = np.asarray(_rand(rng, (7, m), dtype), order=order)
            Y = np.asarray(_rand(rng, (k, 9), dtype), order=order)
            for got, ref in [(palm._mm(X, S, be), X @ Sd), (palm._mm(S, Y, be), Sd @ Y),
                             (palm._mm(palm._herm(S), X.T, be), Sd.conj().T @ X.T),
                             (palm._mm(Y.T, palm._herm(S), be), Y.T @ Sd.conj().T)]:
                assert type(got) is np.ndarray and got.dtype == dtype
                np.testing.assert_allclose(got, ref, **tol)
        P = Sd @ Td
        for got in (palm._mm(S, T, be), palm._mm(S, sp.csr_matrix(Td), be), palm._mm(sp.csr_matrix(Sd), T, be)):
            np.testing.assert_allclose(palm._dense(got), P, **tol)
            dense_expected = not palm._sparse_enough(np.count_nonzero(P), P.size, False) or P.size < 4096
            assert (type(got) is np.ndarray) == dense_expected
        for M, M0 in zip((S.data, S.indices, S.indptr, Sd, Td), before):
            np.testing.assert_array_equal(M, M0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gram_quad_is_the_squared_norm_of_the_product(dtype):
    """Re tr(D (R Rᴴ) Dᴴ) = ‖D R‖²_F for a sparse-ish D, empty rows included."""
    rng = np.random.default_rng(4)
    R = _rand(rng, (40, 90), dtype)
    D = _rand(rng, (25, 40), dtype) * (rng.random((25, 40)) < 0.15)
    D[3] = 0
    H = R @ R.conj().T
    ref = np.linalg.norm((D @ R).astype(np.complex128)) ** 2
    assert cpu_solvers.gram_quad(D, H) == pytest.approx(ref, rel=1e-4 if dtype == np.float32 else 1e-11)
    assert cpu_solvers.gram_quad(np.zeros_like(D), H) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["C", "F"])
def test_gram_times_herm_matches_dense(dtype, order):
    """H Sᴴ for a Gram matrix H = R Rᴴ and a sparse S (a host CSR above 4096 entries): the
    real C-ordered case reads H as S H (symmetry), the others take the general product;
    both equal the dense H Sᴴ, and H and S are left as they were."""
    rng = np.random.default_rng(6)
    R = _rand(rng, (80, 200), dtype)
    H = np.asarray(R @ R.conj().T, order=order)
    Sd = _rand(rng, (70, 80), dtype) * (rng.random((70, 80)) < 0.05)
    S = palm._op(Sd, get_backend(Sd))
    assert type(S) is palm._CSR
    H0 = H.copy()
    got = palm._gram_times_herm(H, S, palm._herm(S), get_backend(H))
    ref = H.astype(np.complex128) @ Sd.conj().T.astype(np.complex128)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max())
    np.testing.assert_array_equal(H, H0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_gram_sweeps_match_sweeps_through_R(dtype, monkeypatch):
    """A wide A (N = 4 n): the right-to-left sweep reads R through R Rᴴ and A Rᴴ; the run is
    the one that reads R (same errors to rounding, same supports)."""
    rng = np.random.default_rng(5)
    A = _rand(rng, (24, 96), dtype)
    cons = [proj.splincol((24, 24), 3), proj.splincol((24, 24), 3), proj.splincol((24, 96), 3)]
    st = palm._Palm(A, cons, palm._init_factors(cons, "default", A, np, "right-to-left"),
                    np.asarray(1.0, dtype=A.dtype), np, "right-to-left", 1e-3, True, 3)
    assert st._gram_worth_it()
    F1, h1 = palm4msa(A, cons, max_iter=25, return_history=True)
    monkeypatch.setattr(palm._Palm, "_gram_worth_it", lambda self: False)
    F0, h0 = palm4msa(A, cons, max_iter=25, return_history=True)
    tol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(h1, h0, rtol=tol)
    for f1, f0 in zip(F1.factors, F0.factors):
        np.testing.assert_array_equal(f1.toarray() != 0, f0.toarray() != 0)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
def test_single_precision_stays_single(dtype):
    """A single-precision run keeps every iterate, product and power-iteration vector in
    its dtype (a float64 power vector made every norm estimate cast the factor to double)."""
    import importlib

    P = importlib.import_module("gpufact.factorize.palm")
    A = _rand(np.random.default_rng(6), (64, 200), dtype)
    cons = [proj.splincol((64, 64), 3)] * 3 + [proj.splincol((64, 200), 3)]
    _, hist, st = P.palm4msa(A, cons, 5, _return_state=True)
    vecs = [v for v in st.vL + st.vR if v is not None]
    assert vecs and {v.dtype for v in vecs} == {np.dtype(dtype)}
    assert {S.dtype for S in st.S} == {np.dtype(dtype)} and st.lam.dtype == dtype


@pytest.mark.parametrize("n_factors", [12, 16])
def test_single_precision_long_chain_matches_double(n_factors):
    """12 (16) unit-norm splincol(3) factors of 256 x 256: their product is ~1e-13 (1e-18) of
    their norms (λ ~ 1e17 (1e22)), the Gram matrices of the right products ~1e-25. Squares of
    such entries underflow in float32: the spectral-norm estimates were 0, the step infinite
    and PALM raised DivergenceError at once; |λ|² overflowed in the safeguarded step's test
    (every longer step refused). The single-precision run now follows the double one."""
    rng = np.random.default_rng(0)
    shapes = [(256, 256)] * (n_factors - 1) + [(256, 400)]
    cons = [proj.splincol(sh, 3) for sh in shapes]
    init = [c(rng.standard_normal(c.shape)) for c in cons]
    P = init[0]
    for M in init[1:]:
        P = P @ M
    A = 50 * rng.standard_normal((256, 400))
    lam0 = float(np.linalg.norm(A) / np.linalg.norm(P))
    assert lam0 > 1e15  # the regime of the bug
    runs = {}
    for dt in (np.float64, np.float32):
        F, hist = palm4msa(A.astype(dt), cons, 4, init=[M.astype(dt) for M in init], lambda_init=lam0,
                           return_history=True)
        assert np.all(np.isfinite(hist)) and np.all(np.isfinite(F.toarray()))
        runs[dt] = np.asarray(hist)
    np.testing.assert_allclose(runs[np.float32], runs[np.float64], rtol=1e-5)
    assert runs[np.float32][-1] < runs[np.float32][0]


@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
def test_power_estimates_at_extreme_scales(dtype):
    """The power iterations' norm estimates in single precision at scales where the squares
    they sum leave its range (each estimate itself representable), against float64 on the
    same matrix: ‖M‖² of M ~ 1e-12 and 1e15, the top eigenvalue of a Gram matrix ~ 1e-22
    and 1e22; the iterates keep the dtype."""
    import importlib

    P = importlib.import_module("gpufact.factorize.palm")
    rng = np.random.default_rng(3)
    real = np.complex128 if np.dtype(dtype).kind == "c" else np.float64
    for shape in ((40, 30), (120, 90)):  # the small-matrix Numba kernel and the BLAS path
        M = _rand(rng, shape, real)
        ref = np.linalg.norm(M, 2) ** 2
        for scale in (1e-12, 1e15):
            v = np.full(shape[1], 1 / np.sqrt(shape[1]), dtype=dtype)
            s2, v2 = P._power_norm2((M * scale).astype(dtype), v, np, 40)
            assert float(s2) == pytest.approx(ref * scale ** 2, rel=1e-3) and v2.dtype == dtype
        for scale in (1e-22, 1e22):
            u = np.full(shape[0], 1 / np.sqrt(shape[0]), dtype=dtype)
            s, u2 = P._power_gram((M @ M.conj().T * scale).astype(dtype), u, np, 40)
            assert float(s) == pytest.approx(ref * scale, rel=1e-3) and u2.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("adaptive", [True, False])
def test_zero_matrix(dtype, adaptive):
    """A = 0: the gradient and the step constant are 0; the step is 0 (λ / tiny grew to inf with
    the safeguarded step's scale, 0 · inf = NaN, DivergenceError at iteration 3 before)."""
    cons = [proj.splincol((64, 64), 8)] * 2
    F, hist = palm4msa(np.zeros((64, 64), dtype), cons, 20, adaptive_step=adaptive, return_history=True)
    assert np.all(np.asarray(hist) == 0) and not np.any(F.toarray())
