"""QuickMeans: Lloyd's properties, batched/memmap = in memory, dense references, bad input."""
import warnings

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score

import gpufact
from gpufact.cluster import QuickMeans
from gpufact.cluster._centroids import butterfly_rect_patterns
from gpufact.factorize.butterfly import chain_product_pattern

from conftest import host

FAST = dict(palm_max_iter=20, max_iter=8, random_state=0)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(600, 16, centers=6, cluster_std=1.0, random_state=0)
    return X, y


def _dense_dist2(X, C):
    return ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("structure", ["splincol", "butterfly"])
def test_objective_non_increasing_and_labels_consistent(blobs, structure):
    X, _ = blobs
    X = X + 3.0 * np.random.default_rng(1).standard_normal(X.shape)  # overlapping: many iterations
    qm = QuickMeans(6, sparsity=2, structure=structure, tol=0.0, **FAST).fit(X)
    h = np.array(qm.objective_history_)
    assert len(h) == qm.n_iter_ + 1 >= 2
    assert np.all(np.diff(h) <= 1e-12 * h[0]), h
    # labels_, inertia_ are those of the final centroids: a dense brute-force reference
    C = host(qm.cluster_centers_)
    d2 = _dense_dist2(X, C)
    np.testing.assert_array_equal(qm.labels_, d2.argmin(1))
    assert qm.inertia_ == pytest.approx(d2.min(1).sum(), rel=1e-10)
    np.testing.assert_allclose(C, qm.centroid_operator_.toarray(), rtol=1e-12, atol=0)


def test_float32_data_factorized_in_float32_objective_non_increasing(blobs, monkeypatch):
    """float32 data: the initial hierarchical factorization and every PALM update run in
    float32 (the centroid step's own precision), the objective still never increases (to
    float32 rounding of the assignment), and the results match a float64 fit's closely."""
    import importlib

    palm_mod = importlib.import_module("gpufact.factorize.palm")
    hier_mod = importlib.import_module("gpufact.factorize.hierarchical")  # the module, not the function

    X, _ = blobs
    X = X + 3.0 * np.random.default_rng(1).standard_normal(X.shape)
    seen = []
    run = palm_mod._run

    def spy(state, *a, **k):
        seen.append(state.A.dtype)
        return run(state, *a, **k)

    monkeypatch.setattr(palm_mod, "_run", spy)  # palm4msa (the updates)
    monkeypatch.setattr(hier_mod, "_run", spy)  # hierarchical (the initialisation)
    qm = QuickMeans(6, sparsity=2, tol=0.0, **FAST).fit(X.astype(np.float32))
    assert seen and set(seen) == {np.dtype(np.float32)}
    h = np.array(qm.objective_history_)
    assert np.all(np.diff(h) <= 1e-6 * h[0]), h
    assert qm.cluster_centers_.dtype == np.float32
    ref = QuickMeans(6, sparsity=2, tol=0.0, **FAST).fit(X)
    assert qm.inertia_ == pytest.approx(ref.inertia_, rel=0.05)


@pytest.mark.parametrize("where", ["init", "update"])
def test_float32_out_of_range_falls_back_to_float64(blobs, monkeypatch, where):
    """When single precision cannot hold a chain's scale (PALM raises DivergenceError: a
    Blobs fit at K = 256, λ ~ 1e16, did before the float64 norm sums), the centroid step
    carries on in float64, at the initialisation or at a Lloyd update, and the fit completes
    with the float64 result's objective."""
    import importlib

    cen = importlib.import_module("gpufact.cluster._centroids")
    from gpufact.factorize import DivergenceError

    X, _ = blobs
    X = (X + 3.0 * np.random.default_rng(1).standard_normal(X.shape)).astype(np.float32)
    name = "hierarchical" if where == "init" else "palm4msa"
    real, calls = getattr(cen, name), []

    def fail_single(A, *a, **k):
        calls.append(A.dtype)
        if A.dtype == np.float32:
            raise DivergenceError("PALM diverged (test)")
        return real(A, *a, **k)

    monkeypatch.setattr(cen, name, fail_single)
    seen = []
    make = QuickMeans._make_centroids

    def keep(self, *a):
        seen.append(make(self, *a))
        return seen[-1]

    monkeypatch.setattr(QuickMeans, "_make_centroids", keep)
    qm = QuickMeans(6, sparsity=2, tol=0.0, **FAST).fit(X)
    assert calls[0] == np.float32 and np.float64 in calls and seen[0].dtype == np.float64
    assert all(M.dtype == np.float64 for M in seen[0].S)
    assert qm.cluster_centers_.dtype == np.float32 and np.all(np.isfinite(qm.cluster_centers_))
    h = np.array(qm.objective_history_)
    assert np.all(np.diff(h) <= 1e-6 * h[0]), h
    monkeypatch.undo()
    ref = QuickMeans(6, sparsity=2, tol=0.0, **FAST).fit(X.astype(np.float64))
    assert qm.inertia_ == pytest.approx(ref.inertia_, rel=0.05)


def test_recovers_well_separated_clusters(blobs):
    X, y = blobs
    qm = QuickMeans(6, sparsity=2, **FAST).fit(X)
    assert adjusted_rand_score(y, qm.labels_) == 1.0
    assert qm.labels_.dtype == np.int32 and qm.labels_.shape == (600,)
    assert qm.n_features_in_ == 16
    np.testing.assert_array_equal(qm.fit_predict(X), qm.labels_)


def test_centroid_step_against_dense_kmeans_step(blobs):
    """With enough sparsity the factorization is exact (s = A): one QuickMeans iteration is
    one Lloyd iteration of scikit-learn's KMeans from the same initial centroids."""
    from sklearn.cluster import KMeans

    X, _ = blobs
    X = X[:, :6]
    C0 = X[:6].copy()
    qm = QuickMeans(6, sparsity=6, n_factors=2, init=C0, max_iter=1, palm_max_iter=300,
                    tol=0.0).fit(X)
    km = KMeans(6, init=C0, n_init=1, max_iter=1, algorithm="lloyd").fit(X)
    np.testing.assert_allclose(host(qm.cluster_centers_), km.cluster_centers_, rtol=0, atol=1e-4)


@pytest.mark.parametrize("structure", ["splincol", "butterfly"])
def test_batched_equals_in_memory(blobs, structure):
    X, _ = blobs
    X = X + 2.0 * np.random.default_rng(2).standard_normal(X.shape)
    a = QuickMeans(6, sparsity=2, structure=structure, **FAST).fit(X)
    b = QuickMeans(6, sparsity=2, structure=structure, batch_size=37, **FAST).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_allclose(a.objective_history_, b.objective_history_, rtol=1e-12)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(b.predict(X), a.predict(X))
    np.testing.assert_allclose(b.transform(X), a.transform(X), rtol=1e-9)


def test_memmap_input(blobs, tmp_path):
    X, _ = blobs
    X32 = X.astype(np.float32)
    path = tmp_path / "x.dat"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=X32.shape)
    mm[:] = X32
    mm.flush()
    del mm
    Xm = np.memmap(path, dtype=np.float32, mode="r", shape=X32.shape)
    a = QuickMeans(6, sparsity=2, **FAST).fit(X32)
    b = QuickMeans(6, sparsity=2, batch_size=100, **FAST).fit(Xm)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_allclose(a.objective_history_, b.objective_history_, rtol=1e-6)
    assert b.cluster_centers_.dtype == np.float32
    np.testing.assert_array_equal(b.predict(Xm), a.labels_)
    np.testing.assert_array_equal(np.asarray(Xm), X32)
    # a memmap is validated chunk by chunk: NaN still found, named
    bad = np.memmap(tmp_path / "bad.dat", dtype=np.float32, mode="w+", shape=X32.shape)
    bad[:] = X32
    bad[555, 3] = np.nan
    bad.flush()
    with pytest.raises(ValueError, match="NaN"):
        QuickMeans(6, sparsity=2, batch_size=100, **FAST).fit(
            np.memmap(tmp_path / "bad.dat", dtype=np.float32, mode="r", shape=X32.shape))


def test_predict_transform_match_dense_centroids(blobs):
    X, _ = blobs
    qm = QuickMeans(6, sparsity=2, **FAST).fit(X)
    Xt = np.random.default_rng(3).normal(scale=8.0, size=(50, 16))
    C = qm.cluster_centers_
    d2 = _dense_dist2(Xt, C)
    np.testing.assert_array_equal(qm.predict(Xt), d2.argmin(1))
    np.testing.assert_allclose(qm.transform(Xt), np.sqrt(d2), rtol=1e-10)
    assert qm.score(Xt) == pytest.approx(-d2.min(1).sum(), rel=1e-10)
    assert qm.score(X) == pytest.approx(-qm.inertia_, rel=1e-10)
    # one sample, an empty batch
    assert qm.predict(Xt[:1])[0] == d2[0].argmin()
    assert qm.transform(Xt[:1]).shape == (1, 6)


def test_reseed_moves_farthest_point_of_largest_cluster():
    from gpufact.cluster import _lloyd

    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 3))
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1], dtype=np.int32)
    dist2 = rng.uniform(1, 2, 10)
    dist2[4] = 5.0  # the farthest point of cluster 0 (the largest)
    dist2[7] = 9.0  # farther, but in the smaller cluster 1
    K = 4
    sums = np.zeros((K, 3))
    np.add.at(sums, labels, X)
    counts = np.bincount(labels, minlength=K).astype(float)
    second = np.argmax(np.where((np.arange(10) < 6) & (np.arange(10) != 4), dist2, -1))
    assert _lloyd.reseed_empty(X, labels, dist2, sums, counts) == 2
    assert labels[4] == 2  # cluster 2 gets point 4; cluster 3 the next farthest of cluster 0
    assert labels[second] == 3 and dist2[4] == dist2[second] == 0
    assert np.bincount(labels, minlength=K).tolist() == [4, 4, 1, 1]
    ref = np.zeros((K, 3))
    np.add.at(ref, labels, X)
    np.testing.assert_allclose(sums, ref)
    np.testing.assert_array_equal(counts, np.bincount(labels, minlength=K))


def test_fit_with_an_empty_cluster():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (100, 4)), rng.normal(20, 1, (50, 4))])
    C0 = np.stack([X[0], X[120], np.full(4, 500.0)])  # the third centroid attracts no point
    qm = QuickMeans(3, sparsity=2, init=C0, max_iter=3, palm_max_iter=30, tol=0.0).fit(X)
    assert np.bincount(qm.labels_, minlength=3).min() >= 1
    assert qm.objective_history_[-1] < qm.objective_history_[0]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_namespace_and_dtype(xp, dt, blobs):
    X = xp.asarray(blobs[0].astype(dt))
    X0 = X.copy()
    qm = QuickMeans(6, sparsity=2, **FAST).fit(X)
    assert type(qm.cluster_centers_) is type(X) and qm.cluster_centers_.dtype == dt
    assert type(qm.labels_) is type(X) and qm.labels_.dtype == np.int32
    assert qm.centroid_operator_.dtype == dt and qm.centroid_operator_.device == gpufact.get_backend(X).device
    assert qm.transform(X).dtype == dt
    assert adjusted_rand_score(blobs[1], host(qm.predict(X))) == 1.0
    assert bool((X == X0).all())


def test_gpu_matches_cpu(cp, blobs):
    X = blobs[0]
    a = QuickMeans(6, sparsity=2, init="random", **FAST).fit(X)
    b = QuickMeans(6, sparsity=2, init="random", **FAST).fit(cp.asarray(X))
    assert adjusted_rand_score(a.labels_, host(b.labels_)) == 1.0
    np.testing.assert_allclose(host(b.cluster_centers_), a.cluster_centers_, rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError):
        a.predict(cp.asarray(X))


def test_butterfly_rectangular_patterns_chain():
    from gpufact.cluster._centroids import smooth_size

    for K, D in [(8, 32), (32, 8), (16, 16), (2, 64), (64, 784), (6, 30), (7, 5)]:
        pats = butterfly_rect_patterns(K, D)
        a, b, c, d = chain_product_pattern(pats)
        assert (a * b * d, a * c * d) == (K, D)
        # blocks no wider than the largest prime factor: nnz far below K·D
        big = max(q for q in range(2, max(K, D) + 1) if (K % q == 0 or D % q == 0)
                  and all(q % r for r in range(2, q)))
        assert max(max(p[1], p[2]) for p in pats) == big
    assert smooth_size(784) == 784 and smooth_size(997) == 1000 and smooth_size(26) == 26 and smooth_size(34) == 35


def test_bad_input(blobs):
    X, _ = blobs
    Xc = X.copy()
    with pytest.raises(NotFittedError):
        QuickMeans(3).predict(X)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN|infinity"):
        QuickMeans(3, sparsity=2).fit(Xn)
    Xi = X.copy()
    Xi[5, 0] = np.inf
    with pytest.raises(ValueError, match="NaN|infinity"):
        QuickMeans(3, sparsity=2).fit(Xi)
    with pytest.raises(ValueError, match="n_samples=5 should be >= n_clusters=6"):
        QuickMeans(6, sparsity=2).fit(X[:5])
    for k in (0, -1):
        with pytest.raises(ValueError, match="n_clusters"):
            QuickMeans(k).fit(X)
    with pytest.raises(TypeError, match="n_clusters"):
        QuickMeans(2.5).fit(X)
    with pytest.raises(ValueError, match="sparsity=7 is larger"):
        QuickMeans(6, sparsity=7).fit(X)
    with pytest.raises(ValueError, match=r"sparsity=3 is larger .* = 2: pass sparsity <= 2 \(the default is 3\)"):
        QuickMeans(2).fit(X)  # the default sparsity on two clusters: the message says what to pass
    with pytest.raises(ValueError, match="2D array"):
        QuickMeans(3, sparsity=2).fit(X[:, 0])
    for kw, name in [(dict(structure="dense"), "structure"), (dict(init="kmeans"), "init"),
                     (dict(n_factors=1), "n_factors"), (dict(n_factors="log"), "n_factors"),
                     (dict(max_iter=0), "max_iter"), (dict(tol=-1.0), "tol"),
                     (dict(palm_max_iter=0), "palm_max_iter"), (dict(batch_size=0), "batch_size"),
                     (dict(init=np.zeros((2, 16))), "init")]:
        with pytest.raises(ValueError, match=name):
            QuickMeans(3, sparsity=2, **kw).fit(X)
    with pytest.raises(TypeError, match="verbose"):
        QuickMeans(3, sparsity=2, verbose="yes").fit(X)
    with pytest.raises(ValueError, match="verbose"):
        QuickMeans(3, sparsity=2, verbose=-1).fit(X)
    qm = QuickMeans(3, sparsity=2, max_iter=2, palm_max_iter=10).fit(X)
    with pytest.raises(ValueError, match="features"):
        qm.predict(X[:, :5])
    with pytest.raises(ValueError, match="features"):
        qm.transform(X[:, :5])
    with pytest.raises(ValueError, match="NaN|infinity"):
        qm.predict(Xn)
    with pytest.raises(ValueError, match="NaN|infinity"):
        qm.predict(Xi)  # found by the fused kernel's load (no separate scan)
    with pytest.raises(ValueError, match="NaN|infinity"):
        QuickMeans(3, structure="butterfly", max_iter=2).fit(X).predict(Xi)  # no kernel flag: full check
    with pytest.raises(ValueError, match="NaN|infinity"):
        QuickMeans(3, sparsity=2, max_iter=2, palm_max_iter=10, batch_size=100).fit(X).predict(Xn)
    np.testing.assert_array_equal(X, Xc)


@pytest.mark.parametrize("structure", ["splincol", "butterfly"])
def test_read_only_fortran_input(blobs, structure):
    X, _ = blobs
    Xf = np.asfortranarray(X)
    Xf.flags.writeable = False
    Xr = X.copy()
    Xr.flags.writeable = False
    a = QuickMeans(6, sparsity=2, structure=structure, **FAST).fit(X)
    b = QuickMeans(6, sparsity=2, structure=structure, **FAST).fit(Xf)
    np.testing.assert_array_equal(QuickMeans(6, sparsity=2, structure=structure, **FAST).fit(Xr).labels_,
                                  a.labels_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.predict(Xf[::-1]), a.labels_[::-1])


def test_torch_tensor_input(blobs):
    """A CPU PyTorch tensor goes in as scikit-learn takes it (through numpy.asarray): the
    same fit as its NumPy array; a complex tensor is a TypeError naming X."""
    torch = pytest.importorskip("torch")
    X, _ = blobs
    a = QuickMeans(6, sparsity=2, **FAST).fit(X)
    T = torch.from_numpy(X.copy())
    b = QuickMeans(6, sparsity=2, **FAST).fit(T)
    np.testing.assert_array_equal(b.labels_, a.labels_)
    np.testing.assert_array_equal(b.predict(T[:5]), a.labels_[:5])
    np.testing.assert_allclose(b.transform(T[:50]), a.transform(X[:50]))
    np.testing.assert_array_equal(T.numpy(), X)
    with pytest.raises(TypeError, match="X: complex data"):
        QuickMeans(6, sparsity=2, **FAST).fit(torch.zeros((20, 4), dtype=torch.complex64))
    # float32 stays float32 (as its array), a tensor that requires grad is read as it is
    X32 = X.astype(np.float32)
    c = QuickMeans(6, sparsity=2, **FAST).fit(X32)
    d = QuickMeans(6, sparsity=2, **FAST).fit(torch.from_numpy(X32.copy()).requires_grad_(True))
    assert d.cluster_centers_.dtype == np.float32
    np.testing.assert_array_equal(d.labels_, c.labels_)
    assert d.score(torch.from_numpy(X32)) == c.score(X32)
    with pytest.raises(TypeError, match="X: a PyTorch tensor of dtype torch.bfloat16"):
        QuickMeans(6, sparsity=2, **FAST).fit(torch.zeros((20, 4), dtype=torch.bfloat16))


def test_verbose_progress_bar(blobs, capsys):
    QuickMeans(6, sparsity=2, verbose=True, **FAST).fit(blobs[0])
    assert "QuickMeans" in capsys.readouterr().err


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_small_batch_predict_transform(blobs, dt, monkeypatch):
    """predict / transform of 1-8 C-contiguous rows skip scikit-learn's validation: the same
    labels and distances as the general path (a list: validated and converted) and as the
    dense centroids."""
    from gpufact.product import ARGMIN_SMALL_ROWS

    X = blobs[0].astype(dt)
    qm = QuickMeans(6, sparsity=2, **FAST).fit(X)
    Xt = np.random.default_rng(3).normal(scale=8.0, size=(ARGMIN_SMALL_ROWS, 16)).astype(dt)
    C = qm.cluster_centers_.astype(np.float64)
    d2 = _dense_dist2(Xt.astype(np.float64), C)
    general = [(qm.predict(Xt[:B].tolist()), qm.transform(Xt[:B].tolist())) for B in range(1, ARGMIN_SMALL_ROWS + 1)]

    def boom(*a, **k):
        raise AssertionError("the small batch went through the general validation")

    monkeypatch.setattr(QuickMeans, "_test_data", boom)
    for B in range(1, ARGMIN_SMALL_ROWS + 1):
        Xb = np.ascontiguousarray(Xt[:B])
        lab, dist = qm.predict(Xb), qm.transform(Xb)
        assert lab.dtype == np.int32 and lab.shape == (B,) and dist.dtype == dt and dist.shape == (B, 6)
        np.testing.assert_array_equal(lab, general[B - 1][0])
        np.testing.assert_array_equal(lab, d2[:B].argmin(1))
        np.testing.assert_allclose(dist, general[B - 1][1], rtol=1e-5 if dt == np.float32 else 1e-12)
        np.testing.assert_allclose(dist, np.sqrt(d2[:B]), rtol=1e-3 if dt == np.float32 else 1e-10)
    monkeypatch.undo()
    # not taken: another dtype, more rows, a strided view, a list
    assert qm._small_batch(Xt[:1]) and not qm._small_batch(Xt[:1].astype(np.float16))
    assert not qm._small_batch(np.concatenate([Xt, Xt])) and not qm._small_batch(Xt[::2])
    assert not qm._small_batch(Xt[:1].tolist())
    a = QuickMeans(6, structure="butterfly", **FAST).fit(X)  # no fused CSR kernel: its own apply
    np.testing.assert_array_equal(a.predict(Xt[:3]), _dense_dist2(Xt[:3].astype(np.float64),
                                                                  a.cluster_centers_.astype(np.float64)).argmin(1))
    # huge finite values are not taken for NaN / inf: in range they are assigned, beyond it
    # (scores that overflow) the range error, not scikit-learn's missing-value one, names X
    big = np.ascontiguousarray(Xt[:2] * dt(2.0 ** 50))  # scores ~1e16: in float32's range
    np.testing.assert_array_equal(qm.predict(big), ((C ** 2).sum(1) - 2 * big.astype(np.float64) @ C.T).argmin(1))
    big = np.zeros((2, 16), dtype=dt)
    big[:, :8] = np.finfo(dt).max / 4
    with pytest.raises(ValueError, match=r"X: its magnitudes .* overflow"):
        qm.predict(big)


def test_small_batch_bad_input(blobs):
    """Bad one-row input raises what the general path raises."""
    X, _ = blobs
    x1 = np.ascontiguousarray(X[:1])
    with pytest.raises(NotFittedError):
        QuickMeans(3).predict(x1)
    with pytest.raises(NotFittedError):
        QuickMeans(3).transform(x1)
    qm = QuickMeans(3, sparsity=2, max_iter=2, palm_max_iter=10).fit(X)
    for v in (np.nan, np.inf, -np.inf):
        xb = x1.copy()
        xb[0, 4] = v
        for method in (qm.predict, qm.transform):
            with pytest.raises(ValueError, match="NaN|infinity"):
                method(xb)
        np.testing.assert_array_equal(xb[0, :4], x1[0, :4])
    for method in (qm.predict, qm.transform):
        with pytest.raises(ValueError, match="features"):
            method(np.ascontiguousarray(X[:1, :5]))
        with pytest.raises(ValueError, match="2D array"):
            method(X[0])
        with pytest.raises(ValueError, match="0 sample"):
            method(X[:0])
    qm.feature_names_in_ = np.array([f"f{i}" for i in range(16)], dtype=object)  # as after a DataFrame fit
    with pytest.warns(UserWarning, match="feature names"):
        qm.predict(x1)


def test_small_batch_mixed_namespaces(cp, blobs):
    X = blobs[0]
    a = QuickMeans(3, sparsity=2, max_iter=2, palm_max_iter=10).fit(X)
    b = QuickMeans(3, sparsity=2, max_iter=2, palm_max_iter=10).fit(cp.asarray(X))
    for method in (a.predict, a.transform):
        with pytest.raises(TypeError):
            method(cp.asarray(X[:1]))
    for method in (b.predict, b.transform):
        with pytest.raises(TypeError):
            method(np.ascontiguousarray(X[:1]))


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # scikit-learn's k-means++ on 1e19 float32
def test_scale_invariance_and_out_of_range_magnitudes():
    """Power-of-two rescaling of X is exact: the same labels and the objective times 4^e as
    long as squared distances stay in the dtype's range (2^-45 and 2^40 in float32). Beyond
    it (squares that underflow: every point in one cluster with objective 0, before; or
    overflow) a ValueError names X and says how to fix it."""
    R = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    kw = dict(max_iter=5, palm_max_iter=10, random_state=0)
    ref = QuickMeans(4, **kw).fit(R)
    for e in (-45, 40):
        qm = QuickMeans(4, **kw).fit(R * np.float32(2.0 ** e))
        np.testing.assert_array_equal(qm.labels_, ref.labels_)
        assert qm.inertia_ == pytest.approx(ref.inertia_ * 4.0 ** e, rel=1e-6)
    for X in (R * np.float32(1e-25), R * np.float32(1e19), R.astype(np.float64) * 1e-200):
        X0 = X.copy()
        with pytest.raises(ValueError, match=r"X: its magnitudes .* rescale X"):
            QuickMeans(4, **kw).fit(X)
        np.testing.assert_array_equal(X, X0)
    # overflow is found on X itself, before k-means++ (no NumPy overflow warnings first), and
    # on the row that overflows even where the initial centroids are in range
    big = R.astype(np.float64)
    big[7] *= 1e200
    for X, init in ((R * np.float32(1e30), "k-means++"), (big, big[100:104].copy())):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match=r"X: its magnitudes \(up to .*\) put the sum of squared distances"):
                QuickMeans(4, init=init, **kw).fit(X)
    # the bound counts the rows: each distance fits float64 here, their sum over 2000 rows does not
    X = np.random.default_rng(1).standard_normal((2000, 10)) * 1e152
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"with 2000 samples of 10 features\); rescale X"):
            QuickMeans(4, **kw).fit(X)
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="distinct clusters"):  # all-zero data are fine
        zero = QuickMeans(2, sparsity=2, **kw).fit(np.zeros((10, 4)))
    assert zero.inertia_ == 0.0



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_transform_score_refuse_overflowing_magnitudes(dtype):
    """Finite test points whose squared distances to the centroids overflow the dtype (fit
    on data in range) give a ValueError naming X from predict (small-batch path, general
    path, chunked memmap path), transform and score, never a wrong label or NaN / inf; large
    points still in range get the dense reference's labels; inputs are not modified; no NumPy
    RuntimeWarning precedes the error (found by a fresh user on transform / score)."""
    R = np.random.default_rng(1).standard_normal((300, 16)).astype(dtype)
    qm = QuickMeans(4, max_iter=3, palm_max_iter=10, random_state=0, batch_size=64).fit(R)
    big = np.finfo(dtype).max
    C = qm.cluster_centers_.astype(np.float64)
    ok = (R[:40] * dtype(np.sqrt(big) / 1e3)).astype(dtype)  # ‖v‖² − 2⟨v, x⟩ in range
    ref = ((C ** 2).sum(1) - 2 * ok.astype(np.float64) @ C.T).argmin(1)
    np.testing.assert_array_equal(qm.predict(ok), ref)
    np.testing.assert_array_equal(qm.predict(ok[:3]), ref[:3])
    for Z in (np.full((3, 16), big, dtype), np.full((200, 16), -big / 2, dtype)):
        Z0 = Z.copy()
        for method in (qm.predict, qm.transform, qm.score):
            with warnings.catch_warnings():  # the error alone, no RuntimeWarning before it
                warnings.simplefilter("error", RuntimeWarning)
                with pytest.raises(ValueError, match=r"X: its magnitudes .* overflow.*rescale X"):
                    method(Z)
        np.testing.assert_array_equal(Z, Z0)
    Z = R[:50] * dtype(big / 8)  # the scores still fit (labels right), the squared distances do not
    ref = ((C ** 2).sum(1) - 2 * Z.astype(np.float64) @ C.T).argmin(1)
    np.testing.assert_array_equal(qm.predict(Z), ref)
    for method in (qm.transform, qm.score):
        with pytest.raises(ValueError, match=r"X: its magnitudes .* overflow.*rescale X"):
            method(Z)
    with pytest.raises(ValueError, match=r"X: its magnitudes .* rescale X"):  # squared norms overflow
        qm.transform(R[:5] * dtype(np.sqrt(big)))
    da = pytest.importorskip("dask.array")  # the Dask blocks check as the in-memory methods
    np.testing.assert_array_equal(qm.predict(da.from_array(ok, chunks=(16, -1))).compute(), qm.predict(ok))
    Zd = da.from_array(np.full((30, 16), big, dtype), chunks=(10, -1))
    for method in (qm.predict, qm.transform):
        with pytest.raises(ValueError, match=r"X: its magnitudes .* overflow.*rescale X"):
            method(Zd).compute()


def test_random_state_generator_named():
    X = np.random.default_rng(0).standard_normal((50, 8))
    with pytest.raises(ValueError, match="random_state must be None, an int or a numpy.random.RandomState"):
        QuickMeans(4, random_state=np.random.default_rng(5)).fit(X)


def test_fewer_distinct_points_than_clusters_warns():
    """As scikit-learn's KMeans: two distinct points and four clusters give a ConvergenceWarning."""
    from sklearn.exceptions import ConvergenceWarning

    X = np.repeat(np.array([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]]), 20, axis=0)
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(2\) found smaller than n_clusters \(4\)"):
        qm = QuickMeans(4, sparsity=2, max_iter=3, palm_max_iter=5, random_state=0).fit(X)
    assert len(np.unique(qm.labels_)) == 2
