"""Local data sets for examples, tests and benchmarks. Nothing is ever downloaded.

=====================  =============================  ==========================================
loader                 samples × features             source
=====================  =============================  ==========================================
load_fashion_mnist     60 000 (train) / 10 000 (test)  IDX files (Debian ``dataset-fashion-mnist``)
                       × 784, 10 classes
load_digits            1 797 × 64, 10 classes          shipped with scikit-learn
load_breast_cancer     569 × 30, 2 classes             shipped with scikit-learn
make_blobs             30 000 × 2 000, 1 000 centres   generated (the QuicK-means paper's Blobs)
=====================  =============================  ==========================================

Every loader returns NumPy arrays on the host (move them with :func:`gpufact.to_device`),
data as ``dtype`` (float32 by default, float64 allowed), labels as int64; a
:class:`sklearn.utils.Bunch` (``data``, ``target``, ``DESCR``...) or ``(X, y)`` with
``return_X_y=True``.

Fashion-MNIST is looked for in ``data_home`` alone when it is given (a mistyped folder is an
error, never a silent fall-back); otherwise in the folder named by the environment variable
``GPUFACT_DATA``, then in ``/usr/share/datasets/fashion-mnist`` (where
``apt-get install dataset-fashion-mnist`` puts it); plain or gzipped IDX files. When absent,
:class:`FileNotFoundError` says how to get it.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ._validation import check_bool, check_int, check_memory, check_seed

__all__ = ["load_fashion_mnist", "load_digits", "load_breast_cancer", "make_blobs",
           "fashion_mnist_available", "FASHION_MNIST_SYSTEM_DIR"]

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
_INSTALL_HINT = ("Fashion-MNIST was not found. Install it with `apt-get install dataset-fashion-mnist` "
                 "(IDX files under /usr/share/datasets/fashion-mnist/), or put the four IDX files "
                 "(train-images-idx3-ubyte[.gz], ...) in a folder and pass data_home=... or set "
                 "GPUFACT_DATA. gpufact never downloads data.")


def _check_dtype(dtype):
    try:  # None is refused (np.dtype(None) is float64, and None == np.dtype('float64'))
        dt = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        dt = None
    if dt is None or dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def _candidate_dirs(data_home):
    dirs = []
    if data_home is not None:  # a folder named by the caller is the only one looked in
        if not isinstance(data_home, (str, os.PathLike)):
            raise TypeError(f"data_home must be a path, got {type(data_home).__name__}")
        return [Path(data_home), Path(data_home) / "fashion-mnist"]
    env = os.environ.get("GPUFACT_DATA")
    if env:
        dirs += [Path(env), Path(env) / "fashion-mnist"]
    dirs.append(FASHION_MNIST_SYSTEM_DIR)
    return dirs


def _find(dirs, stem):
    for d in dirs:
        for name in (stem, stem + ".gz"):
            p = d / name
            if p.is_file():
                return p
    return None


def _fashion_dir(data_home):
    dirs = _candidate_dirs(data_home)
    for d in dirs:
        if all(_find([d], s) for pair in _FMNIST_FILES.values() for s in pair):
            return d
    return None


def fashion_mnist_available(data_home=None) -> bool:
    """True when the four Fashion-MNIST IDX files are found (see the module docstring)."""
    return _fashion_dir(data_home) is not None


def _read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    if ndim != expected_ndim:
        raise ValueError(f"{path}: expected {expected_ndim} dimensions, found {ndim}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    size = int(np.prod(dims))
    if len(raw) - start != size:
        raise ValueError(f"{path}: truncated or corrupt IDX file ({len(raw) - start} bytes of data, "
                         f"{size} expected)")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def load_fashion_mnist(*, subset: str = "train", data_home=None, dtype=np.float32,
                       return_X_y: bool = False):
    """Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 28×28 grey images of 10 clothing classes.

    Parameters
    ----------
    subset : "train" (60 000 images), "test" (10 000) or "all" (70 000, train first).
    data_home : folder holding the IDX files (the only one searched when given).
    dtype : float32 (default) or float64; pixels scaled to [0, 1].
    return_X_y : return ``(X, y)`` instead of a Bunch.

    Returns X (n, 784) and y (n,) int64 in 0..9.

    Raises
    ------
    FileNotFoundError when the files are absent (the message says how to install them);
    ValueError for a bad ``subset`` or corrupt files; TypeError for a bad ``dtype``.
    """
    from sklearn.utils import Bunch

    if subset not in ("train", "test", "all"):
        raise ValueError(f"subset must be 'train', 'test' or 'all', got {subset!r}")
    dt = _check_dtype(dtype)
    check_bool(return_X_y, "return_X_y")
    d = _fashion_dir(data_home)
    if d is None:
        raise FileNotFoundError(_INSTALL_HINT)
    parts = ["train", "test"] if subset == "all" else [subset]
    Xs, ys = [], []
    for part in parts:
        img, lab = _FMNIST_FILES[part]
        images = _read_idx(_find([d], img), 3)
        labels = _read_idx(_find([d], lab), 1)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{d}: {images.shape[0]} images but {labels.shape[0]} labels ({part})")
        Xs.append(images.reshape(images.shape[0], -1))
        ys.append(labels)
    X = np.concatenate(Xs).astype(dt)
    X *= dt.type(1.0 / 255.0)
    y = np.concatenate(ys).astype(np.int64)
    if return_X_y:
        return X, y
    return Bunch(data=X, target=y, target_names=list(_FMNIST_CLASSES), images_shape=(28, 28),
                 DESCR=f"Fashion-MNIST ({subset}), read from {d}; pixels scaled to [0, 1].")


def _sklearn_loader(name, dtype, return_X_y):
    import sklearn.datasets

    dt = _check_dtype(dtype)
    check_bool(return_X_y, "return_X_y")
    bunch = getattr(sklearn.datasets, name)()
    X = np.ascontiguousarray(bunch.data, dtype=dt)
    y = np.asarray(bunch.target, dtype=np.int64)
    if return_X_y:
        return X, y
    bunch.data, bunch.target = X, y
    return bunch


def load_digits(*, dtype=np.float32, return_X_y: bool = False):
    """scikit-learn's 8×8 digits (1 797 × 64, values 0..16, 10 classes); always available."""
    return _sklearn_loader("load_digits", dtype, return_X_y)


def load_breast_cancer(*, dtype=np.float32, return_X_y: bool = False):
    """scikit-learn's Wisconsin breast-cancer data (569 × 30, 2 classes); always available."""
    return _sklearn_loader("load_breast_cancer", dtype, return_X_y)


def make_blobs(n_samples: int = 30_000, n_features: int = 2_000, centers: int = 1_000, *,
               cluster_std: float = 12.0, center_box=(-100.0, 100.0), random_state=None,
               dtype=np.float32, return_X_y: bool = True):
    """Isotropic Gaussian blobs, the synthetic set of the QuicK-means paper (Giffon et al.,
    arXiv 1908.08713: 30 000 × 2 000, 1 000 centres, standard deviation 12).

    Centres are uniform in ``center_box`` per coordinate; each sample is its centre plus
    N(0, cluster_std²) noise; sample counts per centre differ by at most one. Memory:
    n_samples · n_features · itemsize (240 MB for the defaults in float32).

    Returns ``(X, y)`` (y: the centre index, int64), or a Bunch with ``centers`` too when
    ``return_X_y=False``. Raises ValueError/TypeError naming the bad argument.
    """
    from sklearn.utils import Bunch

    n_samples = check_int(n_samples, "n_samples", min_value=1)
    n_features = check_int(n_features, "n_features", min_value=1)
    centers = check_int(centers, "centers", min_value=1)
    dt = _check_dtype(dtype)
    check_bool(return_X_y, "return_X_y")
    try:
        std = float(cluster_std)
    except (TypeError, ValueError):
        raise TypeError(f"cluster_std must be a number, got {type(cluster_std).__name__}") from None
    if not np.isfinite(std) or std < 0:
        raise ValueError(f"cluster_std must be finite and >= 0, got {cluster_std!r}")
    try:
        lo, hi = (float(v) for v in center_box)
    except (TypeError, ValueError):
        raise TypeError(f"center_box must be a pair of numbers, got {center_box!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"center_box must be (low, high) with low < high, got {center_box!r}")
    check_memory(float(n_samples + centers) * n_features * dt.itemsize + 8.0 * n_samples,
                 f"n_samples={n_samples}, n_features={n_features}, centers={centers}")
    rng = check_seed(random_state, "random_state")
    C = rng.uniform(lo, hi, size=(centers, n_features)).astype(dt)
    y = np.arange(n_samples, dtype=np.int64) % centers
    rng.shuffle(y)
    X = np.empty((n_samples, n_features), dtype=dt)
    step = max(1, (1 << 24) // n_features)
    for i in range(0, n_samples, step):  # bounded float64 temporaries
        j = min(n_samples, i + step)
        X[i:j] = C[y[i:j]] + rng.standard_normal((j - i, n_features)) * std
    if return_X_y:
        return X, y
    return Bunch(data=X, target=y, centers=C,
                 DESCR=f"Blobs: {n_samples} x {n_features}, {centers} centres, std {std}")
