"""Hierarchical factorization: exact Hadamard recovery, rectangular preset, bad input."""
import numpy as np
import pytest

from gpufact import proj, transforms
from gpufact.factorize import hierarchical, rectangular_constraints

from conftest import host


def _rel(F, A):
    A = host(A)
    return np.linalg.norm(host(F.toarray()) - A) / np.linalg.norm(A)


@pytest.mark.parametrize("N", [32, 64, 128, 256])
def test_exact_hadamard_recovery(N):
    H = transforms.hadamard_dense(N)
    F = hierarchical(H, preset="hadamard")
    assert len(F) == int(np.log2(N))
    assert _rel(F, H) < 1e-6 and F.rel_error == pytest.approx(_rel(F, H), rel=1e-3, abs=1e-12)
    for f in F.factors:  # 2 nonzeros per row and column
        D = host(f.toarray())
        assert np.count_nonzero(D) == 2 * N
        assert np.all(np.count_nonzero(D, axis=0) == 2) and np.all(np.count_nonzero(D, axis=1) == 2)


def test_hadamard_float32_and_from_the_right():
    H = transforms.hadamard_dense(64, dtype=np.float32)
    F = hierarchical(H, preset="hadamard")
    assert F.dtype == np.float32 and _rel(F, H) < 1e-6
    G = hierarchical(transforms.hadamard_dense(64), preset="hadamard", side="right")
    assert _rel(G, transforms.hadamard_dense(64)) < 1e-6


def test_hadamard_on_gpu(cp):
    H = cp.asarray(transforms.hadamard_dense(64))
    F = hierarchical(H, preset="hadamard")
    assert F.device == "gpu" and _rel(F, H) < 1e-6


def test_rectangular_preset_shapes_and_error_decrease():
    rng = np.random.default_rng(0)
    K, D = 16, 64
    A = rng.standard_normal((K, D))
    fact, res = rectangular_constraints((K, D), 3)
    assert [c.shape for c in fact] == [(16, 16)] * 5 and res[-1].shape == (16, 64)
    F, hist = hierarchical(A, preset="rectangular", sparsity=3, return_history=True)
    shapes = [f.shape for f in F.factors]
    assert shapes[0] == (K, K) and shapes[-1] == (K, D) and len(F) == int(np.log2(D))
    assert F.rel_error == pytest.approx(_rel(F, A), rel=1e-6)
    assert F.rel_error < 1.0
    G = hierarchical(A, preset="rectangular", sparsity=3, side="right")
    assert [f.shape for f in G.factors][-1] == (K, D) and G.rel_error < 1.0


def test_explicit_constraints_and_callback():
    N = 16
    H = transforms.hadamard_dense(N)
    fact = [proj.splincol((N, N), 2) for _ in range(3)]
    res = [proj.splincol((N, N), k) for k in (8, 4, 2)]
    seen = []
    F, hist = hierarchical(H, fact_constraints=fact, res_constraints=res,
                           callback=lambda lvl, it, e: seen.append(lvl), return_history=True)
    assert [lvl for lvl, _ in hist] == [1, 2, 3] and set(seen) <= {1, 2, 3}
    assert _rel(F, H) < 1e-6


def test_bad_input():
    with pytest.raises(TypeError, match="accelerate must be True or False"):
        hierarchical(np.ones((8, 8)), preset="hadamard", accelerate=1)
    with pytest.raises(ValueError, match="check_every must be >= 1"):
        hierarchical(np.ones((8, 8)), preset="hadamard", check_every=0)
    with pytest.raises(ValueError, match="power of two"):
        hierarchical(np.ones((12, 12)), preset="hadamard")
    with pytest.raises(ValueError, match="square"):
        hierarchical(np.ones((8, 16)), preset="hadamard")
    with pytest.raises(ValueError, match="preset"):
        hierarchical(np.ones((8, 8)), preset="fourier")
    with pytest.raises(ValueError, match="A contains NaN"):
        hierarchical(np.full((8, 8), np.inf), preset="hadamard")
    with pytest.raises(ValueError, match="A is empty"):
        hierarchical(np.ones((0, 0)), preset="hadamard")
    with pytest.raises(ValueError, match="either preset"):
        hierarchical(np.ones((8, 8)), preset="hadamard", fact_constraints=[], res_constraints=[])
    with pytest.raises(ValueError, match="equal length"):
        hierarchical(np.ones((8, 8)), fact_constraints=[proj.sp((8, 8), 2)], res_constraints=[])
    with pytest.raises(ValueError, match="chain"):
        hierarchical(np.ones((8, 8)), fact_constraints=[proj.sp((8, 4), 2)], res_constraints=[proj.sp((8, 8), 2)])
    with pytest.raises(ValueError, match="sparsity"):
        hierarchical(np.ones((4, 8)), preset="rectangular", sparsity=5)
    with pytest.raises(ValueError, match="side"):
        hierarchical(np.ones((8, 8)), preset="hadamard", side="middle")
    A = transforms.hadamard_dense(8)
    A0 = A.copy()
    hierarchical(A, preset="hadamard")
    np.testing.assert_array_equal(A, A0)
