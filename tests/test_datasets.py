"""Local data loaders: shapes, dtypes, IDX parsing against a hand-written file, clear errors."""
import gzip

import numpy as np
import pytest

from gpufact import datasets


def _write_idx(path, arr, gz):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    data = head + arr.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture
def tiny_fmnist(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {"train": rng.integers(0, 256, (5, 28, 28)), "test": rng.integers(0, 256, (3, 28, 28))}
    labs = {"train": rng.integers(0, 10, 5), "test": rng.integers(0, 10, 3)}
    for part, (fi, fl) in datasets._FMNIST_FILES.items():
        _write_idx(tmp_path / fi, imgs[part], gz=part == "train")
        _write_idx(tmp_path / fl, labs[part], gz=False)
    return tmp_path, imgs, labs


def test_fashion_mnist_reads_idx(tiny_fmnist):
    d, imgs, labs = tiny_fmnist
    X, y = datasets.load_fashion_mnist(data_home=d, return_X_y=True)
    assert X.shape == (5, 784) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X, imgs["train"].reshape(5, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labs["train"])
    b = datasets.load_fashion_mnist(subset="all", data_home=d, dtype=np.float64)
    assert b.data.shape == (8, 784) and b.data.dtype == np.float64
    np.testing.assert_array_equal(b.target, np.concatenate([labs["train"], labs["test"]]))


def test_fashion_mnist_env_var(tiny_fmnist, monkeypatch):
    d, _, _ = tiny_fmnist
    monkeypatch.setenv("GPUFACT_DATA", str(d))
    assert datasets.fashion_mnist_available()
    X, _ = datasets.load_fashion_mnist(subset="test", return_X_y=True)
    assert X.shape == (3, 784)


def test_fashion_mnist_missing_says_how(tmp_path, monkeypatch):
    monkeypatch.delenv("GPUFACT_DATA", raising=False)
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "nowhere")
    assert not datasets.fashion_mnist_available(tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.load_fashion_mnist(data_home=tmp_path)


def test_fashion_mnist_corrupt(tiny_fmnist):
    d, _, _ = tiny_fmnist
    p = d / "t10k-labels-idx1-ubyte"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        datasets.load_fashion_mnist(subset="test", data_home=d)


@pytest.mark.parametrize("kw, exc", [({"subset": "val"}, ValueError), ({"dtype": np.int32}, TypeError),
                                     ({"data_home": 3}, TypeError), ({"return_X_y": "yes"}, TypeError)])
def test_fashion_mnist_bad_args(kw, exc):
    with pytest.raises(exc):
        datasets.load_fashion_mnist(**kw)


@pytest.mark.parametrize("loader", [datasets.load_fashion_mnist, datasets.load_digits, datasets.load_breast_cancer,
                                    datasets.make_blobs])
@pytest.mark.parametrize("dtype", [None, "float16", "no-such-type", np.complex128])
def test_bad_dtype_is_a_type_error_naming_dtype(loader, dtype):
    """dtype=None used to pass the check (None == np.dtype('float64')): AttributeError from
    the Fashion-MNIST loader, float64 from the others."""
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        loader(dtype=dtype)


def test_sklearn_sets():
    X, y = datasets.load_digits(return_X_y=True)
    assert X.shape == (1797, 64) and X.dtype == np.float32 and y.dtype == np.int64
    b = datasets.load_breast_cancer(dtype=np.float64)
    assert b.data.shape == (569, 30) and b.data.dtype == np.float64


def test_blobs_matches_generator():
    X, y = datasets.make_blobs(400, 30, 7, cluster_std=0.5, random_state=1)
    b = datasets.make_blobs(400, 30, 7, cluster_std=0.5, random_state=1, return_X_y=False)
    np.testing.assert_array_equal(X, b.data)
    assert X.shape == (400, 30) and X.dtype == np.float32 and set(np.bincount(y)) <= {57, 58}
    # each sample is its centre plus noise of the stated deviation
    resid = X - b.centers[y]
    assert abs(resid.std() - 0.5) < 0.02


@pytest.mark.parametrize("kw", [{"n_samples": 0}, {"centers": -1}, {"cluster_std": -1.0},
                                {"center_box": (1, 0)}, {"dtype": np.complex64}, {"random_state": -1}])
def test_blobs_bad_args(kw):
    with pytest.raises((ValueError, TypeError)):
        datasets.make_blobs(10, 3, 2, **kw)


def test_fashion_mnist_data_home_is_exclusive(tmp_path):
    # a folder named by the caller is not silently replaced by the system copy
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        datasets.load_fashion_mnist(data_home=tmp_path / "typo")


def test_blobs_beyond_memory_refused_at_once():
    with pytest.raises(MemoryError, match="n_samples=10000000000, n_features=1000000"):
        datasets.make_blobs(n_samples=10 ** 10, n_features=10 ** 6)
