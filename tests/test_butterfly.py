"""Butterfly / Kronecker-sparse factorization: exact recovery, optimality, bad input."""
import numpy as np
import pytest

from gpufact import KSFactor, FactorProduct, transforms
from gpufact.factorize import butterfly, butterfly_patterns, chain_product_pattern, ksfactor, monarch_patterns
from gpufact.factors import ks_support

from conftest import host


def _rel(F, A):
    A = host(A)
    return np.linalg.norm(host(F.toarray()) - A) / np.linalg.norm(A)


@pytest.mark.parametrize("N", [2 ** k for k in range(4, 12)])
def test_exact_recovery_dft_hadamard_random(N):
    F = butterfly(transforms.dft_dense(N), perm="bit-reversal")
    assert len(F) == int(np.log2(N)) + 1 and isinstance(F.factors[-1], transforms.PermFactor)
    assert sum(f.nnz for f in F.factors[:-1]) == 2 * N * int(np.log2(N))
    assert _rel(F, transforms.dft_dense(N)) < 1e-12
    H = transforms.hadamard_dense(N)
    G = butterfly(H)
    assert all(isinstance(f, KSFactor) and f.pattern == p for f, p in zip(G.factors, butterfly_patterns(N)))
    assert _rel(G, H) < 1e-12
    if N <= 512:
        R = transforms.random_butterfly(N, seed=N).toarray()
        for tree in ("balanced", "left-to-right", "right-to-left"):
            assert _rel(butterfly(R, tree=tree), R) < 1e-10


def test_exact_recovery_on_gpu_arrays(xp):
    N = 256
    A = xp.asarray(transforms.dft_dense(N))
    F = butterfly(A, perm="bit-reversal")
    assert F.device == ("cpu" if xp is np else "gpu")
    assert _rel(F, A) < 1e-12
    F32 = butterfly(xp.asarray(transforms.hadamard_dense(N, dtype=np.float32)))
    assert F32.dtype == np.float32 and _rel(F32, transforms.hadamard_dense(N)) < 1e-5


def test_monarch_and_rank_r_and_rectangular_chains():
    rng = np.random.default_rng(0)
    for pats in (monarch_patterns(64),                      # Monarch, 8 x 8 blocks
                 butterfly_patterns(32, rank=2),            # rank-2 butterfly
                 [(1, 4, 2, 2), (2, 2, 3, 1)],              # 8 x 6
                 [(1, 2, 2, 4), (2, 2, 3, 2), (2, 3, 2, 2)]):  # 8 x 12 x 8
        factors = [KSFactor(rng.standard_normal((a, d, b, c))) for a, b, c, d in pats]
        A = FactorProduct(factors).toarray()
        for tree in ("balanced", "left-to-right", "right-to-left"):
            F = ksfactor(A, pats, tree=tree)
            assert [f.pattern for f in F.factors] == [tuple(p) for p in pats]
            assert _rel(F, A) < 1e-10, (pats, tree)
    F = butterfly(transforms.dft_dense(64), rank=2, perm="bit-reversal")
    assert _rel(F, transforms.dft_dense(64)) < 1e-12


def _brute_force_two_factor_error(A, PL, PR):
    """Best ‖A − XY‖ over supp X ⊆ PL, supp Y ⊆ PR: loop over inner-index classes with
    identical (column support of X, row support of Y); each class owns a disjoint block."""
    SX = host(ks_support(*PL))
    SY = host(ks_support(*PR))
    classes = {}
    for t in range(SX.shape[1]):
        key = (tuple(np.flatnonzero(SX[:, t])), tuple(np.flatnonzero(SY[t])))
        classes.setdefault(key, []).append(t)
    covered = np.zeros(A.shape, dtype=bool)
    err2 = 0.0
    for (rows, cols), ts in classes.items():
        blk = A[np.ix_(rows, cols)]
        s = np.linalg.svd(blk, compute_uv=False)
        err2 += np.sum(s[len(ts):] ** 2)
        assert not covered[np.ix_(rows, cols)].any()  # disjoint blocks
        covered[np.ix_(rows, cols)] = True
    err2 += np.sum(np.abs(A[~covered]) ** 2)
    return np.sqrt(err2) / np.linalg.norm(A)


@pytest.mark.parametrize("tree", ["balanced", "left-to-right", "right-to-left"])
@pytest.mark.parametrize("N", [8, 16, 32])
def test_each_split_is_the_best_two_factor_answer(N, tree):
    rng = np.random.default_rng(N)
    A = rng.standard_normal((N, N)) + 1j * rng.standard_normal((N, N))
    pats = butterfly_patterns(N)
    F, info = butterfly(A, tree=tree, return_errors=True)
    depth, k, err = info["splits"][0]
    assert depth == 0
    best = _brute_force_two_factor_error(A, chain_product_pattern(pats[:k]), chain_product_pattern(pats[k:]))
    assert err == pytest.approx(best, rel=1e-8)
    # the top split is optimal over a superset: no butterfly can beat it; ours is within
    # the guaranteed factor of it on these sizes
    assert info["rel_error"] >= best * (1 - 1e-10)
    assert info["rel_error"] == pytest.approx(_rel(F, A), rel=1e-10)
    assert info["rel_error"] <= (1 + np.sqrt(2)) ** (np.log2(N)) * best
    # second-level splits are the best answers for the matrices they split (left child)
    if tree == "left-to-right":
        assert all(e <= 1 for _, _, e in info["splits"])


@pytest.mark.parametrize("shape", [(40, 32, 32), (30, 64, 2), (30, 3, 48)])
def test_rank_one_path_is_the_best_rank_one_approximation(xp, dtype, shape):
    """The SVD-free rank-one projection (Gram repeated squaring) reaches the Eckart–Young
    error sqrt(‖A‖² − σ₁²) block by block; exact on rank-one blocks; zero blocks give zeros."""
    from gpufact.factorize._lowrank import batched_low_rank

    from conftest import rand, tol

    rng = np.random.default_rng(sum(shape))
    A = rand(shape, dtype, rng, xp)
    A[1] = 0
    A[2] = rand((shape[1], 1), dtype, rng, xp) @ rand((1, shape[2]), dtype, rng, xp)  # rank one
    A[3] = 0
    A[3, 0, 0] = A[3, 1, 1] = 2  # a tie σ₁ = σ₂: any top vector is optimal
    A0 = A.copy()
    X, Y = batched_low_rank(A, 1, xp)
    assert X.shape == shape[:2] + (1,) and Y.shape == (shape[0], 1, shape[2]) and X.dtype == A.dtype
    assert bool(xp.all(A == A0))
    Ah = host(A).astype(np.complex128)
    s = np.linalg.svd(Ah, compute_uv=False)
    nrm2 = np.sum(np.abs(Ah) ** 2, axis=(1, 2))
    best = np.sqrt(np.maximum(nrm2 - s[:, 0] ** 2, 0))
    err = np.sqrt(np.sum(np.abs(Ah - host(X @ Y)) ** 2, axis=(1, 2)))
    assert np.all(err <= best + 20 * tol(dtype) * np.sqrt(nrm2))
    assert np.all(host(X[1]) == 0) and np.all(host(Y[1]) == 0)
    assert err[2] <= 20 * tol(dtype) * np.sqrt(nrm2[2])


def test_rank_one_blocks_are_certified_without_the_gram_path(xp, dtype, monkeypatch):
    """Rank-one blocks (exact factorizations) are certified by ‖A‖² − ‖A v‖² and never reach
    the Gram squarings; a block that is not rank one does, alone; a batch whose sampled
    blocks are none rank one goes there whole. Eckart–Young errors throughout."""
    from gpufact.factorize import _lowrank

    from conftest import rand, tol

    rng = np.random.default_rng(7)
    A = rand((80, 20, 1), dtype, rng, xp) @ rand((80, 1, 18), dtype, rng, xp)  # > 4 x 16: sampled first
    A[5] = 0
    seen = []
    gram = _lowrank._rank_one_gram
    monkeypatch.setattr(_lowrank, "_rank_one_gram", lambda B, xp: seen.append(B.shape[0]) or gram(B, xp))
    X, Y = _lowrank.batched_low_rank(A, 1, xp)
    assert seen == []
    err = np.sqrt(np.sum(np.abs(host(A) - host(X @ Y)) ** 2, axis=(1, 2)))
    assert np.all(err <= 20 * tol(dtype) * np.sqrt(np.sum(np.abs(host(A)) ** 2, axis=(1, 2))))
    assert np.all(host(X[5]) == 0)
    A[3] = rand((20, 18), dtype, rng, xp)  # full rank: this block alone takes the Gram path
    X, Y = _lowrank.batched_low_rank(A, 1, xp)
    assert seen == [1]
    Ah = host(A).astype(np.complex128)
    s = np.linalg.svd(Ah[3], compute_uv=False)
    best = np.sqrt(max(np.sum(np.abs(Ah[3]) ** 2) - s[0] ** 2, 0))
    err3 = np.linalg.norm(Ah[3] - host(X @ Y)[3])
    assert err3 <= best + 20 * tol(dtype) * np.linalg.norm(Ah[3])
    B = rand((80, 20, 18), dtype, rng, xp)  # no sampled block is rank one: all to the Gram path
    B[3] = A[0]
    X, Y = _lowrank.batched_low_rank(B, 1, xp)
    assert seen == [1, 80]
    Bh = host(B).astype(np.complex128)
    s = np.linalg.svd(Bh, compute_uv=False)
    best = np.sqrt(np.maximum(np.sum(np.abs(Bh) ** 2, axis=(1, 2)) - s[:, 0] ** 2, 0))
    err = np.sqrt(np.sum(np.abs(Bh - host(X @ Y)) ** 2, axis=(1, 2)))
    assert np.all(err <= best + 20 * tol(dtype) * np.sqrt(np.sum(np.abs(Bh) ** 2, axis=(1, 2))))


def test_noisy_dft_error_matches_noise_level():
    N = 512
    rng = np.random.default_rng(0)
    A = transforms.dft_dense(N)
    E = 1e-2 * (rng.standard_normal((N, N)) + 1j * rng.standard_normal((N, N))) / np.sqrt(2)
    noise = np.linalg.norm(E) / np.linalg.norm(A)
    F = butterfly(A + E, perm="bit-reversal")
    err_noisy = _rel(F, A + E)
    err_clean = _rel(F, A)
    assert 0.8 * noise <= err_noisy <= 1.01 * noise
    assert err_clean < noise  # the factorization denoises


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        butterfly(np.ones((8, 16)))
    with pytest.raises(ValueError, match="power of two"):
        butterfly(np.ones((12, 12)))
    with pytest.raises(ValueError, match="A contains NaN"):
        butterfly(np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="A is empty"):
        ksfactor(np.ones((0, 0)), [(1, 1, 1, 1)])
    with pytest.raises(ValueError, match="rank"):
        butterfly(np.ones((16, 16)), rank=5)
    with pytest.raises(TypeError, match="rank"):
        butterfly(np.ones((16, 16)), rank=1.5)
    with pytest.raises(ValueError, match="tree"):
        butterfly(np.ones((16, 16)), tree="random")
    with pytest.raises(ValueError, match="perm"):
        butterfly(np.ones((16, 16)), perm="reverse")
    with pytest.raises(ValueError, match="perm must have shape"):
        butterfly(np.ones((16, 16)), perm=np.arange(8))
    with pytest.raises(ValueError, match="perm is not a permutation"):
        butterfly(np.ones((16, 16)), perm=np.zeros(16, dtype=int))
    with pytest.raises(ValueError, match="do not chain"):
        ksfactor(np.ones((8, 4)), [(1, 2, 2, 4), (1, 2, 2, 2)])
    with pytest.raises(ValueError, match="not chainable"):
        ksfactor(np.ones((4, 4)), [(2, 2, 3, 1), (1, 3, 2, 2)])
    with pytest.raises(ValueError, match="not chainable"):
        ksfactor(np.ones((8, 8)), [(1, 2, 2, 4), (2, 2, 3, 2), (4, 3, 2, 1)])
    with pytest.raises(ValueError, match="product but A has shape"):
        ksfactor(np.ones((8, 8)), monarch_patterns(16))
    with pytest.raises(ValueError, match="perfect square"):
        monarch_patterns(8)
    with pytest.raises(ValueError, match="patterns"):
        ksfactor(np.ones((4, 4)), [])
    A = np.arange(64.0).reshape(8, 8)
    A0 = A.copy()
    butterfly(A)
    np.testing.assert_array_equal(A, A0)
