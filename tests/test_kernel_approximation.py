"""gpufact.kernel_approximation: feature maps against dense references, kernel estimates,
Nyström identities, bad input."""
import math

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.kernel_approximation import RBFSampler

import gpufact
from gpufact.datasets import load_digits
from gpufact.kernel_approximation import (Fastfood, FastNystroem, OrthogonalRandomFeatures,
                                          StructuredOrthogonalFeatures, fastfood_operator)
from gpufact.kernel_approximation._structured import padded_size

from conftest import host

STRUCTURED = [Fastfood, StructuredOrthogonalFeatures]
ALL_RFF = STRUCTURED + [OrthogonalRandomFeatures]


def _rbf(X, Y, gamma):
    D = (X ** 2).sum(1)[:, None] - 2 * X @ Y.T + (Y ** 2).sum(1)[None, :]
    return np.exp(-gamma * np.maximum(D, 0))


@pytest.fixture(scope="module")
def digits():
    X = load_digits(return_X_y=True, dtype=np.float64)[0][:200]
    D = ((X[:, None] - X[None]) ** 2).sum(-1)
    return X, 1.0 / D.mean()


def _rel(K, Kt):
    return np.linalg.norm(K - Kt) / np.linalg.norm(K)


# --- feature maps equal their dense reference --------------------------------------------------
@pytest.mark.parametrize("Est", STRUCTURED)
@pytest.mark.parametrize("features", ["cos", "sincos"])
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("d", [13, 16])
def test_transform_equals_dense_reference(xp, Est, features, dt, d):
    rng = np.random.default_rng(1)
    Xh = rng.standard_normal((37, d)).astype(dt)
    X = xp.asarray(Xh)
    est = Est(gamma=0.3, n_components=40, features=features, random_state=3).fit(X)  # 2.5 blocks
    Y = est.transform(X)
    assert type(Y) is type(X) and Y.dtype == dt and Y.shape == (37, est.n_components_)
    W = host(est.operator_.toarray()).astype(np.float64)
    assert W.shape == (40 if features == "cos" else 20, d)
    P = Xh.astype(np.float64) @ W.T
    s = math.sqrt(2 / est.n_components_)
    ref = s * (np.cos(P + host(est.random_offset_)) if features == "cos" else np.hstack([np.cos(P), np.sin(P)]))
    tol = 3e-6 if dt == np.float32 else 1e-12
    np.testing.assert_allclose(host(Y), ref, atol=tol * max(1, np.abs(P).max()) * s)
    np.testing.assert_array_equal(host(X), Xh)  # input untouched


@pytest.mark.parametrize("Est", STRUCTURED)
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("d, magnitude", [(300, 1.0), (600, 1.0), (600, 1e3)])
def test_fused_passes_equal_level_by_level(Est, dt, d, magnitude):
    """The fused CPU kernel merges plain Hadamard levels into radix-4 / radix-8 passes over
    contiguous runs of the tile (N = 512, 1024: all pass kinds, full and partial tiles): the
    result equals the one-level-at-a-time path bit for bit (same additions, same order) and
    the dense reference, with the float32 cosine reduction (arguments provably below 4096
    through the block norm bound) and with the float64 one (large arguments)."""
    import numba

    from gpufact._kernels import cpu_features
    from gpufact.kernel_approximation._structured import tile_samples

    rng = np.random.default_rng(4)
    X = (rng.standard_normal((75, d)) * magnitude).astype(dt)
    est = Est(gamma=0.5 / d, n_components=2500, random_state=1).fit(X)
    Y = est.transform(X)
    W1, plan1, perm, W2, plan2, off, bound = est._program(np.dtype(dt))
    N, th = est.padded_features_, numba.get_num_threads()
    # the bound is a bound on each block's norm (tight for SORF: √N/σ on orthogonal blocks)
    Wd = host(est.operator_.toarray()).astype(np.float64)
    norms = [np.linalg.norm(Wd[j * N:(j + 1) * N], 2) for j in range(len(bound) - 1)]
    assert np.all(bound[:-1] >= np.array(norms) * (1 - 1e-6))
    if Est is StructuredOrthogonalFeatures:
        np.testing.assert_allclose(bound, math.sqrt(N) * math.sqrt(2 * est.gamma), rtol=1e-6)
    small = bound.max() * np.linalg.norm(X.astype(np.float64), axis=1).max() + 2 * np.pi <= 4096
    assert small == (magnitude == 1.0)  # both cosine paths are exercised
    Y2 = np.empty_like(Y)
    cpu_features.structured_features(W1, plan1, perm, W2, plan2, N, X, Y2, off, dt(est._scale()), False,
                                     tile_samples(N, np.dtype(dt).itemsize, len(X), th), th, False, bound)
    np.testing.assert_array_equal(Y, Y2)
    P = X.astype(np.float64) @ Wd.T
    s = est._scale()
    tol = 3e-6 if dt == np.float32 else 1e-12
    np.testing.assert_allclose(Y, s * np.cos(P + host(est.random_offset_)), atol=tol * np.abs(P).max() * s)


@pytest.mark.parametrize("Est", STRUCTURED)
def test_layouts_and_readonly_input(Est):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((70, 20)).astype(np.float32)
    est = Est(gamma=0.1, n_components=64, random_state=0).fit(X)
    ref = est.transform(X)
    Xr = X.copy()
    Xr.flags.writeable = False
    np.testing.assert_array_equal(est.transform(Xr), ref)
    np.testing.assert_array_equal(est.transform(np.asfortranarray(X)), ref)
    np.testing.assert_array_equal(est.transform(X[::2]), ref[::2])  # strided rows: each row on its own
    np.testing.assert_array_equal(est.transform(X[:1]), ref[:1])  # one sample: a partial tile
    Xi = (X * 10).astype(np.int64)  # integers compute in float64
    Yi = Est(gamma=0.1, n_components=64, random_state=0).fit(Xi).transform(Xi)
    assert Yi.dtype == np.float64 and np.isfinite(Yi).all()


def test_n_components_rounding():
    X = np.zeros((3, 13))
    e = Fastfood(n_components=100).fit(X)
    assert (e.padded_features_, e.n_blocks_, e.n_components_) == (16, 7, 100)
    assert e.operator_.shape == (100, 13) and e.transform(X).shape == (3, 100)
    e = StructuredOrthogonalFeatures(n_components=101, features="sincos").fit(X)
    assert (e.n_blocks_, e.n_components_) == (4, 102)
    assert e.operator_.shape == (51, 13) and e.transform(X).shape == (3, 102)
    assert e.get_feature_names_out().shape == (102,)
    assert padded_size(1) == 2 and padded_size(1024) == 1024 and padded_size(1025) == 2048


def test_sorf_blocks_are_scaled_orthogonal():
    """Yu et al.: each SORF block √N/σ · H D1 H D2 H D3 has orthogonal rows of norm √N/σ."""
    gamma, N = 0.25, 32
    e = StructuredOrthogonalFeatures(gamma=gamma, n_components=3 * N, random_state=0).fit(np.zeros((2, N)))
    W = e.operator_.toarray()
    for j in range(3):
        B = W[j * N:(j + 1) * N]
        np.testing.assert_allclose(B @ B.T, 2 * gamma * N * np.eye(N), atol=1e-10)


def test_fastfood_operator_rows_like_gaussian():
    """Le et al.: rows of V have the norms of N(0, 2γ I_N) rows: E‖v‖² = 2γN, Var = 2(2γ)²N;
    within a block, H G Π H B has orthogonal-ish rows (V Vᵀ diagonal up to the G mixing)."""
    gamma, N, k = 0.5, 64, 64
    V = fastfood_operator(N, k * N, gamma, seed=0).toarray()
    assert V.shape == (k * N, N)
    nrm2 = (V ** 2).sum(1)
    assert abs(nrm2.mean() / (2 * gamma * N) - 1) < 0.02
    assert abs(nrm2.var() / (2 * (2 * gamma) ** 2 * N) - 1) < 0.15
    # frequencies' coordinates have variance 2γ
    assert abs(V.var() / (2 * gamma) - 1) < 0.02
    Vp = fastfood_operator(13, 20, gamma, seed=0)
    assert Vp.shape == (20, 13)
    np.testing.assert_allclose(Vp.toarray(), fastfood_operator(16, 32, gamma, seed=0).toarray()[:20, :13])


@pytest.mark.parametrize("Est", STRUCTURED)
def test_operator_dot_test(Est):
    rng = np.random.default_rng(0)
    e = Est(gamma=0.2, n_components=50, random_state=1).fit(rng.standard_normal((4, 11)))
    F = e.operator_
    x, y = rng.standard_normal(11), rng.standard_normal(F.shape[0])
    assert np.isclose((F @ x) @ y, x @ (F.T @ y), rtol=1e-12)


# --- kernel estimates ----------------------------------------------------------------------------
@pytest.mark.parametrize("Est", ALL_RFF + [RBFSampler])
def test_kernel_estimate_error_shrinks_like_inverse_sqrt_D(Est, digits):
    X, gamma = digits
    K = _rbf(X, X, gamma)
    err = {}
    for D in (128, 2048):
        err[D] = np.mean([_rel(K, (lambda Z: Z @ Z.T)(Est(gamma=gamma, n_components=D, random_state=s)
                                                     .fit_transform(X))) for s in range(4)])
    ratio = err[128] / err[2048]  # 1/√D: 4; structured maps reach the rate too
    assert 2.8 < ratio < 5.5, (err, ratio)
    assert err[2048] < 0.06


@pytest.mark.parametrize("Est", STRUCTURED)
def test_kernel_estimate_unbiased(Est):
    """Averaged over independent draws, φ(x)ᵀφ(y) → k(x, y) (no bias beyond the noise)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((20, 8))
    gamma = 0.05
    K = _rbf(X, X, gamma)
    acc = np.zeros_like(K)
    n = 60
    for s in range(n):
        Z = Est(gamma=gamma, n_components=16, random_state=s).fit_transform(X)
        acc += Z @ Z.T
    single = np.mean([np.abs((lambda Z: Z @ Z.T)(Est(gamma=gamma, n_components=16, random_state=100 + s)
                                                 .fit_transform(X)) - K).mean() for s in range(5)])
    assert np.abs(acc / n - K).mean() < 2.5 * single / math.sqrt(n)


@pytest.mark.parametrize("features", ["cos", "sincos"])
def test_sorf_beats_rff_at_equal_D(digits, features):
    """Yu et al.: SORF's kernel error is below RFF's (RBFSampler) at equal D ≥ 2d (here d = 64,
    D = 4d and 16d), averaged over seeds."""
    X, gamma = digits
    K = _rbf(X, X, gamma)
    for D in (256, 1024):
        e_s = np.mean([_rel(K, (lambda Z: Z @ Z.T)(StructuredOrthogonalFeatures(
            gamma=gamma, n_components=D, features=features, random_state=s).fit_transform(X))) for s in range(6)])
        e_r = np.mean([_rel(K, (lambda Z: Z @ Z.T)(RBFSampler(gamma=gamma, n_components=D, random_state=s)
                                                   .fit_transform(X))) for s in range(6)])
        # sin/cos pairs carry the orthogonality gain (Yu et al. use them); random offsets add a
        # variance term orthogonality cannot remove, so "cos" only has to be no worse
        assert e_s < (0.9 if features == "sincos" else 1.0) * e_r, (D, e_s, e_r)


def test_orf_rows_orthogonal_within_blocks():
    e = OrthogonalRandomFeatures(gamma=0.5, n_components=20, random_state=0).fit(np.zeros((2, 8)))
    W = e.random_weights_.T
    assert W.shape == (20, 8)
    G = W[:8] @ W[:8].T
    np.testing.assert_allclose(G - np.diag(np.diag(G)), 0, atol=1e-10)


# --- the cosine kernels --------------------------------------------------------------------------
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_cos_kernels_match_numpy(dt):
    from gpufact._kernels import cpu_features as k

    rng = np.random.default_rng(0)
    P = np.concatenate([rng.standard_normal((3, 500)) * 10, rng.standard_normal((1, 500)) * 1e5,
                        np.array([np.arange(500) * np.pi / 4]), rng.standard_normal((1, 500)) * 1e8,
                        rng.standard_normal((1, 500)) * 1e17]).astype(dt)  # huge: libm's reduction
    off = rng.uniform(0, 2 * np.pi, 500).astype(dt)
    t = P.astype(np.float64) + off.astype(np.float64)
    Q = P.copy()
    (k.cos_features_f32 if dt == np.float32 else k.cos_features_f64)(Q, off, dt(0.5))
    tol = 1.2e-7 if dt == np.float32 else 1e-15
    np.testing.assert_allclose(Q, 0.5 * np.cos(t), rtol=0, atol=tol)
    Y = np.empty((7, 1000), dt)
    (k.sincos_features_f32 if dt == np.float32 else k.sincos_features_f64)(P, Y, dt(1))
    np.testing.assert_allclose(Y[:, :500], np.cos(P.astype(np.float64)), rtol=0, atol=2 * tol)
    np.testing.assert_allclose(Y[:, 500:], np.sin(P.astype(np.float64)), rtol=0, atol=2 * tol)


@pytest.mark.parametrize("est", ["fastfood", "sorf", "sorf-sincos", "orf"])
def test_features_stay_bounded_for_huge_inputs(est):
    """cos features never exceed their scale, whatever the argument (|w·x| ~ 1e17 once broke the
    two-constant reduction: 2e5 instead of <= 0.5); they match scale · cos of the projections."""
    X0 = np.zeros((4, 3))
    e = {"fastfood": lambda: Fastfood(gamma=0.5, n_components=8, random_state=0),
         "sorf": lambda: StructuredOrthogonalFeatures(gamma=0.5, n_components=8, random_state=0),
         "sorf-sincos": lambda: StructuredOrthogonalFeatures(gamma=0.5, n_components=8, features="sincos",
                                                             random_state=0),
         "orf": lambda: OrthogonalRandomFeatures(gamma=0.5, n_components=8, random_state=0)}[est]().fit(X0)
    for dt in (np.float64, np.float32):
        for scale in (1e3, 1e8, 1e17, 1e18):
            X = (np.array([[1.0, -0.5, 0.25], [0.3, 0.2, -1.0]]) * scale).astype(dt)
            Z = e.transform(X)
            assert np.isfinite(Z).all()
            assert np.abs(Z).max() <= np.sqrt(2.0 / Z.shape[1]) * (1 + 1e-6) + 1e-7, (dt, scale)


# --- Nyström ---------------------------------------------------------------------------------------
def test_nystroem_exact_with_all_points(xp, digits):
    X, gamma = digits
    Z = FastNystroem(gamma=gamma, n_components=X.shape[0], landmarks="uniform",
                     random_state=0).fit_transform(xp.asarray(X))
    K = _rbf(X, X, gamma)
    np.testing.assert_allclose(host(Z @ Z.T), K, atol=1e-8)


@pytest.mark.parametrize("kernel", ["rbf", "linear", "poly", "sigmoid"])
def test_nystroem_matches_explicit_formula(kernel, digits):
    from scipy.linalg import sqrtm
    from sklearn.metrics.pairwise import pairwise_kernels

    X, gamma = digits
    X = X / 16
    e = FastNystroem(kernel=kernel, gamma=gamma * 256, n_components=30, landmarks="uniform", random_state=1).fit(X)
    C = X[e.component_indices_]
    np.testing.assert_array_equal(e.components_, C)
    kw = {"gamma": gamma * 256} if kernel != "linear" else {}
    if kernel in ("poly", "sigmoid"):
        kw["coef0"] = 1.0
    W = pairwise_kernels(C, C, metric=kernel, **kw)
    lam, U = np.linalg.eigh(W)
    if lam.min() > 1e-6 * lam.max():  # well conditioned: the plain inverse square root
        ref = pairwise_kernels(X, C, metric=kernel, **kw) @ np.real(np.linalg.inv(sqrtm(W)))
        np.testing.assert_allclose(e.transform(X), ref, rtol=1e-6, atol=1e-8)
    assert np.isfinite(e.transform(X)).all()


@pytest.mark.parametrize("landmarks", ["kmeans", "fast-nys"])
def test_nystroem_landmark_methods(landmarks, digits):
    X, gamma = digits
    K = _rbf(X, X, gamma)
    e = FastNystroem(gamma=gamma, n_components=64, landmarks=landmarks, random_state=0).fit(X)
    assert e.components_.shape == (64, X.shape[1])
    # the fast inner products equal the dense ones
    np.testing.assert_allclose(e._inner(X), X @ e.components_.T, rtol=1e-10, atol=1e-8)
    Z = e.transform(X)
    err = _rel(K, Z @ Z.T)
    err_u = np.mean([_rel(K, (lambda Z: Z @ Z.T)(FastNystroem(gamma=gamma, n_components=64, landmarks="uniform",
                                                              random_state=s).fit_transform(X))) for s in range(3)])
    if landmarks == "kmeans":  # Zhang, Tsang & Kwok (2008): K-means landmarks beat uniform sampling
        assert err < err_u
    assert err < 0.5


def test_nystroem_quickmeans_landmarks(digits):
    """QuickMeans landmarks: the kernel through the factorized centroid operator. Runs once
    gpufact.cluster is present (merged from its own branch)."""
    pytest.importorskip("gpufact.cluster")
    X, gamma = digits
    K = _rbf(X, X, gamma)
    e = FastNystroem(gamma=gamma, n_components=32, landmarks="quickmeans", random_state=0).fit(X)
    assert isinstance(e.landmark_operator_, gpufact.FactorProduct)
    np.testing.assert_allclose(e._inner(X), X @ e.components_.T, rtol=1e-6, atol=1e-6)
    Z = e.transform(X)
    assert _rel(K, Z @ Z.T) < 0.3


@pytest.mark.parametrize("d", [40, 8])
def test_nystroem_quickmeans_landmarks_beat_uniform_on_clusters(d):
    """On well-separated clusters, QuickMeans landmarks (near the cluster means) give a
    smaller kernel error than K samples drawn uniformly (Zhang, Tsang & Kwok 2008 for
    K-means landmarks), averaged over the uniform draws, with fewer landmarks than features
    and with more (K > d: the K x d factor keeps d/2 per row); and the factorized operator
    with its two factors stays below the dense product's K·d nonzeros."""
    pytest.importorskip("gpufact.cluster")
    rng = np.random.default_rng(0)
    n_blobs, K = 12, 24
    centres = rng.standard_normal((n_blobs, d)) * 3
    X = centres[rng.integers(n_blobs, size=600)] + 0.6 * rng.standard_normal((600, d))
    gamma = 1.0 / ((X[:, None] - X[None]) ** 2).sum(-1).mean()
    Kx = _rbf(X, X, gamma)

    def err(lm, seed):
        Z = FastNystroem(gamma=gamma, n_components=K, landmarks=lm, random_state=seed).fit_transform(X)
        return _rel(Kx, Z @ Z.T)

    e = FastNystroem(gamma=gamma, n_components=K, landmarks="quickmeans", random_state=0).fit(X)
    assert len(e.landmark_operator_.factors) == 2 and e.landmark_operator_.nnz < K * d
    err_qm = _rel(Kx, (lambda Z: Z @ Z.T)(e.transform(X)))
    assert err_qm < np.mean([err("uniform", s) for s in range(5)])
    assert err_qm < 2 * err("kmeans", 0)  # near K-means landmarks (benchmarks: 1.06-1.2x)


def test_nystroem_quickmeans_exact_when_landmarks_hold_every_point():
    """K distinct points (each repeated; sparse, so the two-factor operator represents them
    exactly): QuickMeans finds them all, the landmarks are the points and the Nyström map
    reproduces the kernel matrix."""
    pytest.importorskip("gpufact.cluster")
    rng = np.random.default_rng(1)
    K, d = 8, 16
    P = np.zeros((K, d))
    P[np.arange(K), rng.permutation(d)[:K]] = rng.uniform(1, 3, K)
    X = P[rng.permutation(np.repeat(np.arange(K), 5))]
    gamma = 0.3
    e = FastNystroem(gamma=gamma, n_components=K, landmarks="quickmeans", random_state=0).fit(X)
    order = np.lexsort(e.components_.T)
    np.testing.assert_allclose(e.components_[order], P[np.lexsort(P.T)], atol=1e-8)
    Z = e.transform(X)
    np.testing.assert_allclose(Z @ Z.T, _rbf(X, X, gamma), atol=1e-7)


def test_nystroem_more_components_than_samples_warns():
    X = np.random.default_rng(0).standard_normal((10, 3))
    with pytest.warns(UserWarning, match="n_components > n_samples"):
        e = FastNystroem(n_components=20, landmarks="uniform").fit(X)
    assert e.n_components_ == 10


# --- bad input ---------------------------------------------------------------------------------------
ESTS = [lambda **kw: Fastfood(**kw), lambda **kw: StructuredOrthogonalFeatures(**kw),
        lambda **kw: OrthogonalRandomFeatures(**kw), lambda **kw: FastNystroem(landmarks="uniform", **kw)]


@pytest.mark.parametrize("make", ESTS)
@pytest.mark.parametrize("kw,err,match", [
    ({"n_components": 0}, ValueError, "n_components"),
    ({"n_components": -3}, ValueError, "n_components"),
    ({"n_components": 2.5}, TypeError, "n_components"),
    ({"gamma": 0.0}, ValueError, "gamma"),
    ({"gamma": -1.0}, ValueError, "gamma"),
    ({"gamma": float("nan")}, ValueError, "gamma"),
    ({"gamma": "big"}, TypeError, "gamma"),
    ({"random_state": -1}, ValueError, "random_state"),
])
def test_bad_parameters(make, kw, err, match):
    X = np.random.default_rng(0).standard_normal((10, 4))
    with pytest.raises(err, match=match):
        make(**kw).fit(X)


@pytest.mark.parametrize("make", ESTS)
def test_bad_data(make):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 4))
    est = make(n_components=4)
    with pytest.raises(NotFittedError):
        est.transform(X)
    for bad in (np.nan, np.inf):
        Xb = X.copy()
        Xb[2, 1] = bad
        with pytest.raises(ValueError, match="NaN|infinity|inf"):
            make(n_components=4).fit(Xb)
        with pytest.raises(ValueError, match="NaN|infinity|inf"):
            make(n_components=4).fit(X).transform(Xb)
    est.fit(X)
    with pytest.raises(ValueError, match="features"):
        est.transform(X[:, :3])
    with pytest.raises(TypeError, match="complex"):
        make(n_components=4).fit(X + 1j)


@pytest.mark.parametrize("dtype,scale,ok", [(np.float64, 1e160, False), (np.float64, 1e150, True),
                                             (np.float32, 1e18, False), (np.float32, 1e16, True)])
def test_learned_features_refuse_overflowing_distances(dtype, scale, ok):
    """Squared distances beyond the dtype's range made the fitted kernel NaN and the diagonals
    NaN (a silent fit): now a ValueError naming X; in range, the fit is finite."""
    X = (np.random.default_rng(0).standard_normal((60, 50)) * scale).astype(dtype)
    X0 = X.copy()
    from gpufact.kernel_approximation import LearnedStructuredFeatures

    est = LearnedStructuredFeatures(gamma=0.01, n_components=16, n_iter=3, batch_size=16, random_state=0)
    if ok:
        est.fit(X)
        assert np.isfinite(est.loss_curve_).all() and np.isfinite(est.diagonals_).all()
    else:
        with pytest.raises(ValueError, match="X: entries up to .* rescale X"):
            est.fit(X)
    np.testing.assert_array_equal(X, X0)


@pytest.mark.parametrize("make", ESTS)
def test_random_state_types(make):
    """scikit-learn's random_state types: a RandomState is taken (fresh ones with one seed give
    one fit), as are ints, SeedSequences and Generators; other types are a TypeError naming
    random_state."""
    X = np.random.default_rng(0).standard_normal((30, 6))
    a = make(n_components=8, random_state=np.random.RandomState(3)).fit(X).transform(X)
    b = make(n_components=8, random_state=np.random.RandomState(3)).fit(X).transform(X)
    np.testing.assert_array_equal(a, b)
    for rs in (7, np.random.SeedSequence(7), np.random.default_rng(7), None):
        assert np.isfinite(make(n_components=8, random_state=rs).fit(X).transform(X)).all()
    for bad in (1.5, "0", True):
        with pytest.raises(TypeError, match="random_state must be None, an int >= 0, a numpy.random.RandomState"):
            make(n_components=8, random_state=bad).fit(X)
    with pytest.raises(ValueError, match="random_state"):
        make(n_components=8, random_state=-1).fit(X)


@pytest.mark.parametrize("make", ESTS[:3])
def test_sizes_beyond_memory_refused_at_once(make):
    """n_components far beyond any machine's memory: a MemoryError naming n_components before
    anything is drawn (the allocations used to grow until the OS killed the process)."""
    with pytest.raises(MemoryError, match=r"n_components=1000000000000: needs about"):
        make(n_components=10 ** 12).fit(np.zeros((4, 8)))


@pytest.mark.parametrize("landmarks", ["uniform", "kmeans", "quickmeans", "fast-nys"])
def test_nystroem_refuses_overflowing_magnitudes(landmarks):
    """Inner products beyond float64 gave LinAlgError or 'invalid entries' depending on the
    landmarks: now one ValueError naming X for all of them, and X in range still fits."""
    X = np.random.default_rng(0).standard_normal((120, 10))
    with pytest.raises(ValueError, match="X: entries up to .* rescale X"):
        FastNystroem(n_components=12, landmarks=landmarks, random_state=0).fit(X * 1e160)
    Z = FastNystroem(n_components=12, landmarks=landmarks, random_state=0).fit(X * 1e150).transform(X * 1e150)
    assert np.isfinite(Z).all()


def test_nystroem_range_per_kernel_and_at_transform():
    """The polynomial kernel's (gamma <x, y> + coef0)^degree is checked too, and transform
    checks its X (after a fit on data in range: NaN or inf features before); a kernel whose
    products all underflow (float32 linear at 1e-25) gives zero features, not NaN."""
    X = np.random.default_rng(0).standard_normal((120, 10))
    with pytest.raises(ValueError, match="X: entries up to .* poly kernel's values"):
        FastNystroem(n_components=12, kernel="poly", landmarks="uniform", random_state=0).fit(X * 1e60)
    Z = FastNystroem(n_components=12, kernel="poly", landmarks="uniform", random_state=0).fit(X * 1e20).transform(X)
    assert np.isfinite(Z).all()
    # degree 1: the inner products themselves bound it (no cap on the logarithm hides them)
    with pytest.raises(ValueError, match="X: entries up to .* poly kernel's values"):
        FastNystroem(n_components=12, kernel="poly", degree=1, landmarks="uniform", random_state=0).fit(X * 1e153)
    for kernel in ("rbf", "poly", "linear"):
        est = FastNystroem(n_components=12, kernel=kernel, landmarks="uniform", random_state=0).fit(X)
        with pytest.raises(ValueError, match="X: entries up to .* rescale X"):
            est.transform(X * 1e160)
    tiny = (X * 1e-25).astype(np.float32)
    Z = FastNystroem(n_components=12, kernel="linear", landmarks="uniform", random_state=0).fit(tiny).transform(tiny)
    assert Z.dtype == np.float32 and np.isfinite(Z).all()


@pytest.mark.parametrize("make", ESTS[:3])
def test_projection_overflow_refused_at_transform(make):
    """float32 X whose random projections overflow: NaN features before, now a ValueError
    naming X; just below, the features are finite."""
    X = np.random.default_rng(0).standard_normal((50, 10)).astype(np.float32)
    est = make(n_components=32, random_state=0).fit(X)
    assert np.isfinite(est.transform(X * np.float32(1e30))).all()
    with pytest.raises(ValueError, match="X: entries up to .* random projections beyond float32's range"):
        est.transform(X * np.float32(1e37))


def test_bad_choices():
    X = np.zeros((5, 3))
    with pytest.raises(ValueError, match="features"):
        Fastfood(features="sin").fit(X)
    with pytest.raises(ValueError, match="landmarks"):
        FastNystroem(landmarks="random").fit(X)
    with pytest.raises(ValueError, match="kernel"):
        FastNystroem(kernel="laplacian", landmarks="uniform").fit(X)
    with pytest.raises(ValueError, match="n_components"):
        fastfood_operator(4, 0)
    with pytest.raises(TypeError, match="dtype"):
        fastfood_operator(4, 8, dtype=np.complex64)


@pytest.mark.gpu
@pytest.mark.parametrize("make", ESTS)
def test_numpy_cupy_agree_and_refuse_mixes(cp, make):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 12)).astype(np.float32)
    e_cpu = make(n_components=32, random_state=0, gamma=0.1).fit(X)
    e_gpu = make(n_components=32, random_state=0, gamma=0.1).fit(cp.asarray(X))
    Y = e_gpu.transform(cp.asarray(X))
    assert isinstance(Y, cp.ndarray) and Y.dtype == np.float32
    np.testing.assert_allclose(host(Y), e_cpu.transform(X), atol=2e-5)
    with pytest.raises(TypeError):
        e_gpu.transform(X)
    with pytest.raises(TypeError):
        e_cpu.transform(cp.asarray(X))


# --- learned structured features ----------------------------------------------------------------
@pytest.mark.parametrize("features", ["sincos", "cos"])
def test_learned_gradient_matches_finite_differences(features):
    from gpufact.kernel_approximation import sorf_loss_grad
    from gpufact.kernel_approximation._learned import block_hadamard

    rng = np.random.default_rng(0)
    Xs = rng.standard_normal((5, 6))
    K = _rbf(Xs, Xs, 0.1)
    N, k, c = 8, 2, 0.05
    H = block_hadamard(N, k, np.float64, np)
    theta = rng.standard_normal((3, k * N))
    off = rng.uniform(0, 2 * np.pi, k * N)
    loss, g = sorf_loss_grad(Xs, K, theta, c, H, features, off, n_rows=13)  # a cut last block
    num = np.zeros_like(theta)
    h = 1e-6
    for i in range(3):
        for j in range(k * N):
            tp, tm = theta.copy(), theta.copy()
            tp[i, j] += h
            tm[i, j] -= h
            num[i, j] = (sorf_loss_grad(Xs, K, tp, c, H, features, off, n_rows=13)[0]
                         - sorf_loss_grad(Xs, K, tm, c, H, features, off, n_rows=13)[0]) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-9 * np.abs(num).max())


def test_learned_features_beat_their_random_start(digits):
    from gpufact.kernel_approximation import LearnedStructuredFeatures

    X, gamma = digits
    Xtr, Xte = X[:120], X[120:]
    K = _rbf(Xte, Xte, gamma)
    kw = dict(gamma=gamma, n_components=128, batch_size=96, learning_rate=0.03, random_state=0)
    e0 = LearnedStructuredFeatures(n_iter=0, **kw).fit(Xtr)  # = SORF with Rademacher diagonals
    e1 = LearnedStructuredFeatures(n_iter=40, **kw).fit(Xtr)
    assert e1.loss_curve_[-1] < e1.loss_curve_[0]
    err0 = _rel(K, (lambda Z: Z @ Z.T)(e0.transform(Xte)))
    err1 = _rel(K, (lambda Z: Z @ Z.T)(e1.transform(Xte)))  # held-out samples
    assert err1 < 0.98 * err0, (err0, err1)
    # the learned operator is applied like SORF: fused transform == dense reference
    W = e1.operator_.toarray()
    P = Xte @ W.T
    np.testing.assert_allclose(e1.transform(Xte), math.sqrt(2 / e1.n_components_) * np.hstack([np.cos(P), np.sin(P)]),
                               atol=1e-12)


def test_nystroem_quickmeans_wiring_with_stand_in(monkeypatch, digits):
    """The "quickmeans" path against the QuickMeans contract (``centroid_operator_`` a
    FactorProduct K x d, ``cluster_centers_`` its dense view), with a stand-in module where
    gpufact.cluster is not built in; the real estimator is checked by the test above."""
    import sys
    import types

    from sklearn.cluster import KMeans

    from gpufact import DenseFactor, FactorProduct

    try:
        import gpufact.cluster  # noqa: F401
        pytest.skip("the real gpufact.cluster is present (tested above)")
    except ImportError:
        pass

    class QuickMeans:  # stand-in: K-means centroids held as a one-factor product
        def __init__(self, n_clusters, *, sparsity=3, n_factors="auto", max_iter=50, palm_max_iter=300,
                     random_state=None):
            self.n_clusters, self.random_state = n_clusters, random_state

        def fit(self, X):
            C = KMeans(self.n_clusters, n_init=1, random_state=self.random_state).fit(X).cluster_centers_
            self.centroid_operator_ = FactorProduct([DenseFactor(C.astype(X.dtype))])
            self.cluster_centers_ = self.centroid_operator_.toarray()
            return self

    mod = types.ModuleType("gpufact.cluster")
    mod.QuickMeans = QuickMeans
    monkeypatch.setitem(sys.modules, "gpufact.cluster", mod)
    X, gamma = digits
    e = FastNystroem(gamma=gamma, n_components=32, landmarks="quickmeans", random_state=0).fit(X)
    assert e.landmark_operator_ is not None
    np.testing.assert_allclose(e._inner(X), X @ e.components_.T, rtol=1e-12, atol=1e-9)
    K = _rbf(X, X, gamma)
    ref = FastNystroem(gamma=gamma, n_components=32, landmarks="uniform", random_state=0).fit(X)
    assert _rel(K, (lambda Z: Z @ Z.T)(e.transform(X))) < _rel(K, (lambda Z: Z @ Z.T)(ref.transform(X)))


@pytest.mark.parametrize("K, d", [(20, 2), (1, 10)])
def test_quickmeans_landmarks_with_few_components_or_features(K, d):
    # QuickMeans' default sparsity is capped at min(K, d) for the landmarks (was a ValueError
    # about a 'sparsity' the user never set)
    pytest.importorskip("gpufact.cluster")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, d))
    ny = FastNystroem(gamma=0.5, n_components=K, landmarks="quickmeans", random_state=0).fit(X)
    Z = ny.transform(X[:5])
    assert Z.shape == (5, K) and np.isfinite(Z).all()


def test_nystroem_gamma_beyond_dtype_range_is_an_error():
    # found by a new-user trial: float32 data with gamma > float32 max gave NaN features
    X = (np.random.default_rng(0).standard_normal((50, 10)) * 3e-21).astype(np.float32)
    with pytest.raises(ValueError, match="gamma"):
        FastNystroem(gamma=0.5e40, n_components=10, landmarks="uniform", random_state=0).fit(X)
    Z = FastNystroem(gamma=0.5e40, n_components=10, landmarks="uniform",
                     random_state=0).fit_transform(X.astype(np.float64))
    assert np.isfinite(Z).all()
