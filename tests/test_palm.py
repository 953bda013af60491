"""PALM4MSA: monotone objective, known factorizations, warm starts, dtypes, bad input."""
import numpy as np
import pytest

from gpufact import FactorProduct, KSFactor, proj, transforms
from gpufact.factorize import DivergenceError, palm4msa

from conftest import host, rand


def _rel(F, A):
    A = host(A)
    return np.linalg.norm(host(F.toarray()) - A) / np.linalg.norm(A)


@pytest.mark.parametrize("adaptive_step", [True, False])
@pytest.mark.parametrize("order", ["right-to-left", "left-to-right"])
@pytest.mark.parametrize("shape,J", [((64, 64), 2), ((64, 64), 4), ((32, 96), 3)])
def test_objective_never_increases(shape, J, order, adaptive_step):
    rng = np.random.default_rng(J)
    A = rng.standard_normal(shape)
    m, n = shape
    dims = [m] + [min(m, n)] * (J - 1) + [n]
    # exact projections (sp, splin, spcol): the PALM descent guarantee applies
    kinds = [proj.splin, proj.spcol, lambda sh, k: proj.sp(sh, k * sh[0])]
    cons = [kinds[j % 3]((dims[j], dims[j + 1]), 4) for j in range(J)]
    F, hist = palm4msa(A, cons, max_iter=60, order=order, adaptive_step=adaptive_step, return_history=True)
    assert len(hist) == 60
    assert np.all(np.diff(hist) <= 1e-12 * hist[0]), np.diff(hist).max()
    assert hist[-1] < hist[0]
    assert F.rel_error == pytest.approx(_rel(F, A), rel=1e-9)
    for j, f in enumerate(F.factors):
        D = host(f.toarray())
        if j % 3 == 0:
            assert np.all(np.count_nonzero(D, axis=1) <= 4)
        elif j % 3 == 1:
            assert np.all(np.count_nonzero(D, axis=0) <= 4)
        else:
            assert np.count_nonzero(D) <= 4 * D.shape[0]


@pytest.mark.parametrize("J", [2, 4])
def test_adaptive_steps_reach_a_lower_error(J):
    """The safeguarded longer steps descend faster than the 1/L steps of plain PALM4MSA."""
    rng = np.random.default_rng(J)
    A = rng.standard_normal((96, 96))
    cons = [proj.splincol((96, 96), 6)] * J
    _, h_plain = palm4msa(A, cons, max_iter=40, adaptive_step=False, return_history=True)
    _, h_adapt = palm4msa(A, cons, max_iter=40, return_history=True)
    assert h_adapt[-1] < h_plain[-1] - 0.01, (h_adapt[-1], h_plain[-1])
    assert h_adapt[0] <= h_plain[0] + 1e-12


def test_recovers_a_two_factor_butterfly_product():
    """A = S1 S2 with butterfly supports: PALM on those fixed supports reaches the exact answer."""
    rng = np.random.default_rng(0)
    N = 64
    f1 = KSFactor(rng.standard_normal((1, N // 2, 2, 2)))
    f2 = KSFactor(rng.standard_normal((2, N // 4, 2, 2)) * 0 + np.array([[1, 1], [1, -1]]))
    A = FactorProduct([f1, f2]).toarray()
    cons = [proj.butterfly_support(*f1.pattern), proj.butterfly_support(*f2.pattern)]
    F = palm4msa(A, cons, max_iter=3000, tol=1e-10)
    assert F.rel_error < 1e-9
    assert all(isinstance(f, KSFactor) for f in F.factors)
    assert [f.pattern for f in F.factors] == [f1.pattern, f2.pattern]


def test_one_factor_is_the_projection_of_A():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((20, 30))
    F = palm4msa(A, [proj.sp((20, 30), 50)], max_iter=5)
    ref = proj.sp((20, 30), 50, normalized=False)(A)
    np.testing.assert_allclose(F.toarray(), ref, atol=1e-12)


def test_warm_start_continues_and_does_not_modify_init():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((48, 48))
    # exact projections: continuing cannot raise the error (splincol is a heuristic)
    cons = [proj.splin((48, 48), 6), proj.spcol((48, 48), 6)]
    F1, h1 = palm4msa(A, cons, max_iter=30, return_history=True)
    init = [host(f.toarray()) for f in F1.factors]
    init0 = [x.copy() for x in init]
    F2, h2 = palm4msa(A, cons, max_iter=30, init=init, lambda_init=1.0, return_history=True)
    assert h2[0] <= h1[-1] + 1e-12 and h2[-1] < h1[-1]
    for x, x0 in zip(init, init0):
        np.testing.assert_array_equal(x, x0)
    F3 = palm4msa(A, cons, max_iter=5, init=F1)
    assert F3.rel_error <= h1[-1] + 1e-12


def test_stopping_rules_and_callback():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((32, 32))
    cons = [proj.splincol((32, 32), 8), proj.splincol((32, 32), 8)]
    seen = []
    F, h = palm4msa(A, cons, max_iter=500, stagnation=1e-3, callback=lambda it, e: seen.append((it, e)),
                    return_history=True)
    assert len(h) < 500 and [e for _, e in seen] == h and seen[0][0] == 1
    F, h = palm4msa(A, cons, max_iter=500, tol=0.9, return_history=True)
    assert h[-1] <= 0.9 and len(h) < 500
    F, h = palm4msa(A, cons, max_iter=20, check_every=7, return_history=True)
    assert len(h) == 3  # iterations 7, 14 and the last


def test_dtypes_and_complex(dtype, xp):
    rng = np.random.default_rng(4)
    A = rand((32, 48), dtype, rng, xp)
    cons = [proj.splincol((32, 32), 6), proj.splincol((32, 48), 6)]
    F, h = palm4msa(A, cons, max_iter=40, return_history=True)
    assert F.dtype == dtype and F.device == ("cpu" if xp is np else "gpu")
    assert F.rel_error == pytest.approx(_rel(F, A), rel=1e-3)
    assert h[-1] < h[0]
    assert F.rel_error < 0.95


def test_same_result_on_numpy_and_cupy(cp):
    rng = np.random.default_rng(5)
    A = rng.standard_normal((64, 64))
    cons = [proj.splincol((64, 64), 8), proj.splincol((64, 64), 8)]
    F_cpu, h_cpu = palm4msa(A, cons, max_iter=30, return_history=True)
    F_gpu, h_gpu = palm4msa(cp.asarray(A), cons, max_iter=30, return_history=True)
    np.testing.assert_allclose(h_gpu, h_cpu, rtol=1e-6)
    np.testing.assert_allclose(host(F_gpu.toarray()), F_cpu.toarray(), atol=1e-8)


def test_bad_input():
    A = np.ones((8, 8))
    c = [proj.splincol((8, 8), 2), proj.splincol((8, 8), 2)]
    with pytest.raises(ValueError, match="lambda_init must be nonzero"):
        palm4msa(np.eye(4), [proj.splincol((4, 4), 2)] * 2, lambda_init=0.0)
    with pytest.raises(ValueError, match="A contains NaN"):
        palm4msa(np.full((8, 8), np.nan), c)
    with pytest.raises(ValueError, match="A is empty"):
        palm4msa(np.ones((0, 8)), c)
    with pytest.raises(ValueError, match="A must be 2-D"):
        palm4msa(np.ones(8), c)
    with pytest.raises(ValueError, match="constraints chain"):
        palm4msa(np.ones((8, 6)), c)
    with pytest.raises(ValueError, match="do not chain"):
        palm4msa(A, [proj.splincol((8, 4), 2), proj.splincol((8, 8), 2)])
    with pytest.raises(TypeError, match="constraints\\[1\\]"):
        palm4msa(A, [c[0], "sp"])
    with pytest.raises(ValueError, match="constraints must be a non-empty list"):
        palm4msa(A, [])
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        palm4msa(A, c, max_iter=0)
    with pytest.raises(ValueError, match="order"):
        palm4msa(A, c, order="random")
    with pytest.raises(ValueError, match="init\\[0\\] has shape"):
        palm4msa(A, c, init=[np.eye(4), np.eye(8)])
    with pytest.raises(ValueError, match="init\\[1\\] contains NaN"):
        palm4msa(A, c, init=[np.eye(8), np.full((8, 8), np.inf)])
    with pytest.raises(ValueError, match="tol"):
        palm4msa(A, c, tol=-1)
    with pytest.raises(TypeError, match="callback"):
        palm4msa(A, c, callback=3)
    with pytest.raises(TypeError, match="adaptive_step must be True or False"):
        palm4msa(A, c, adaptive_step="no")
    with pytest.raises(TypeError, match="check_every must be an integer"):
        palm4msa(A, c, check_every=2.5)


def test_divergence_is_reported_not_returned():
    rng = np.random.default_rng(6)
    A = rng.standard_normal((16, 16))
    cons = [proj.splin((16, 16), 4, normalized=False), proj.splin((16, 16), 4, normalized=False)]
    with pytest.raises(DivergenceError, match="diverged"):
        # steps 20 times longer than 1 / Lipschitz
        palm4msa(A, cons, max_iter=200, step_eps=-0.95)
    with pytest.raises(ValueError, match="step_eps"):
        palm4msa(A, cons, step_eps=-1)


@pytest.mark.parametrize("dt", [np.float32, np.complex128])
def test_gram_residual_in_either_memory_order(dt):
    """λ LS (R Rᴴ) − A Rᴴ, formed in A Rᴴ's memory order on the CPU, equals the plain
    expression for C- and F-ordered A Rᴴ, dense and CSR LS; the inputs are not modified."""
    from gpufact._backend import get_backend
    from gpufact.factorize.palm import _CSR, _Gram, _gram_residual

    rng = np.random.default_rng(3)
    LS, RG = rand((12, 9), dt, rng), rand((9, 9), dt, rng)
    lam = np.asarray(1.5 - 0.5j if np.dtype(dt).kind == "c" else 1.5, dtype=dt)
    be = get_backend(LS)
    for AR in (rand((12, 9), dt, rng), np.asfortranarray(rand((12, 9), dt, rng))):
        ref = lam * (LS @ RG) - AR
        before = (LS.copy(), RG.copy(), AR.copy())
        got = _gram_residual(LS, _Gram(RG, AR), lam, be)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        for a, b in zip((LS, RG, AR), before):
            np.testing.assert_array_equal(a, b)
        S = np.where(np.abs(LS) > 1.0, LS, 0).astype(dt)
        indptr = np.concatenate([[0], np.cumsum((S != 0).sum(1))]).astype(np.int32)
        rows, cols = np.nonzero(S)
        csr = _CSR(S[rows, cols], cols.astype(np.int32), indptr, S.shape)
        np.testing.assert_allclose(_gram_residual(csr, _Gram(RG, AR), lam, be), lam * (S @ RG) - AR,
                                   rtol=1e-5, atol=1e-5)
