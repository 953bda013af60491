"""Shared fixtures: ``xp`` runs a test on NumPy and on CuPy (skipped cleanly without a GPU)."""
import numpy as np
import pytest

import gpufact

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]


def _cupy_or_skip():
    if not gpufact.gpu_available():
        pytest.skip("CuPy with a CUDA device is not available")
    import cupy

    return cupy


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    if request.param == "numpy":
        return np
    return _cupy_or_skip()


@pytest.fixture
def cp():
    return _cupy_or_skip()


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return np.dtype(request.param)


def tol(dtype):
    """Relative tolerance for results computed in ``dtype``."""
    return 2e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12


def host(x):
    return gpufact.to_numpy(x)


def rand(shape, dtype, rng, xp=np):
    dt = np.dtype(dtype)
    x = rng.standard_normal(shape)
    if dt.kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return xp.asarray(x.astype(dt))
