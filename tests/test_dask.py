"""QuickMeans on dask arrays (local scheduler): = the in-memory fit, unknown chunks, errors."""
import numpy as np
import pytest
from sklearn.datasets import make_blobs

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

from gpufact.cluster import QuickMeans  # noqa: E402
from gpufact.dask import apply_blocks  # noqa: E402

FAST = dict(sparsity=2, palm_max_iter=20, max_iter=6, tol=0.0)


@pytest.fixture(scope="module")
def data():
    X, _ = make_blobs(500, 12, centers=5, cluster_std=3.0, random_state=1)
    return X


@pytest.fixture(autouse=True)
def _local_scheduler():
    with dask.config.set(scheduler="threads"):
        yield


def _unknown_chunks(Xd):
    """Row chunks of unknown size (boolean-mask indexing)."""
    mask = da.from_array(np.ones(Xd.shape[0], dtype=bool), chunks=Xd.chunks[0])
    out = Xd[mask]
    assert np.isnan(out.shape[0])
    return out


@pytest.mark.parametrize("unknown", [False, True])
@pytest.mark.parametrize("structure", ["splincol", "butterfly"])
def test_dask_fit_equals_in_memory(data, unknown, structure):
    C0 = data[[0, 100, 200, 300, 400]]
    ref = QuickMeans(5, init=C0, structure=structure, **FAST).fit(data)
    Xd = da.from_array(data, chunks=(77, -1))
    if unknown:
        Xd = _unknown_chunks(Xd)
    qm = QuickMeans(5, init=C0, structure=structure, **FAST).fit(Xd)
    np.testing.assert_allclose(qm.objective_history_, ref.objective_history_, rtol=1e-10)
    np.testing.assert_allclose(qm.cluster_centers_, ref.cluster_centers_, rtol=1e-8, atol=1e-8)
    assert isinstance(qm.labels_, da.Array)
    np.testing.assert_array_equal(qm.labels_.compute(), ref.labels_)
    lab = qm.predict(Xd)
    assert isinstance(lab, da.Array) and lab.dtype == np.int32
    np.testing.assert_array_equal(lab.compute(), ref.predict(data))
    np.testing.assert_allclose(qm.transform(Xd).compute(), ref.transform(data), rtol=1e-9)


def test_dask_sampled_init_and_float32(data):
    X = data.astype(np.float32)
    Xd = _unknown_chunks(da.from_array(X, chunks=(100, -1)))
    qm = QuickMeans(5, random_state=0, **FAST).fit(Xd)
    assert qm.cluster_centers_.dtype == np.float32
    h = np.array(qm.objective_history_)
    assert np.all(np.diff(h) <= 1e-6 * h[0])
    # the labels are those of the dense centroids
    C = qm.cluster_centers_
    d2 = ((X[:, None, :] - C[None]) ** 2).sum(-1)
    lab = qm.predict(Xd).compute()
    assert np.mean(lab == d2.argmin(1)) > 0.999  # float32 ties aside


def test_dask_reseeds_like_in_memory(data):
    C0 = np.concatenate([data[[0, 100, 200, 300]], np.full((1, 12), 1e3)])  # cluster 4 starts empty
    ref = QuickMeans(5, init=C0, **FAST).fit(data)
    qm = QuickMeans(5, init=C0, **FAST).fit(da.from_array(data, chunks=(64, -1)))
    np.testing.assert_allclose(qm.objective_history_, ref.objective_history_, rtol=1e-10)
    assert np.bincount(qm.labels_.compute(), minlength=5).min() >= 1


def test_apply_blocks(data):
    from gpufact import transforms

    F = transforms.hadamard(16)
    X = np.random.default_rng(0).standard_normal((50, 16))
    Y = apply_blocks(F, da.from_array(X, chunks=(13, 16)))
    np.testing.assert_allclose(Y.compute(), X @ F.toarray().T, rtol=1e-12, atol=1e-12)


def test_dask_bad_input(data):
    with pytest.raises(ValueError, match="single chunk along the features"):
        QuickMeans(5, **FAST).fit(da.from_array(data, chunks=(100, 6)))
    Xn = data.copy()
    Xn[7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        QuickMeans(5, init=data[:5], **FAST).fit(da.from_array(Xn, chunks=(100, -1)))
    with pytest.raises(ValueError, match="n_samples=4 should be >= n_clusters=5"):
        QuickMeans(5, **FAST).fit(_unknown_chunks(da.from_array(data[:4], chunks=(2, -1))))
    qm = QuickMeans(5, init=data[:5], **FAST).fit(da.from_array(data, chunks=(100, -1)))
    with pytest.raises(ValueError, match="features"):
        qm.predict(da.from_array(data[:, :5], chunks=(100, -1)))


def test_predict_transform_refuse_nan_blocks():
    # as the in-memory predict: NaN/inf is a ValueError, not labels computed from NaN scores
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(0)
    m = QuickMeans(4, max_iter=2, random_state=0).fit(rng.standard_normal((100, 16)))
    Xn = np.full((3, 16), np.nan)
    with pytest.raises(ValueError, match="NaN"):
        m.predict(da.from_array(Xn)).compute()
    with pytest.raises(ValueError, match="NaN"):
        m.transform(da.from_array(Xn)).compute()


def test_fit_refuses_overflowing_magnitudes():
    """As the in-memory fit: magnitudes whose squared distances, summed over the rows,
    overflow are a ValueError naming X, without NumPy warnings first."""
    import warnings

    X = np.random.default_rng(0).standard_normal((2000, 10))
    X[7] *= 1e160
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for init in ("k-means++", "random"):
            with pytest.raises(ValueError, match=r"X: its magnitudes .* rescale X"):
                QuickMeans(4, sparsity=2, max_iter=2, palm_max_iter=3, init=init, random_state=0).fit(
                    da.from_array(X, chunks=(500, -1)))
