import numpy as np
import pytest

import gpufact
from gpufact._backend import get_backend


def test_namespace_from_inputs():
    be = get_backend(np.ones(3), None, 2.0)
    assert be.name == "numpy" and be.device == "cpu"
    assert get_backend().name == "numpy"
    with pytest.raises(TypeError):
        get_backend(default=None)


def test_gpu_available_is_a_bool_and_import_needs_no_cupy():
    import subprocess
    import sys

    code = "import sys, gpufact; gpufact.gpu_available; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert isinstance(gpufact.gpu_available(), bool)


def test_to_device_cpu_is_identity_and_bad_device():
    x = np.ones(3)
    assert gpufact.to_device(x, "cpu") is x
    with pytest.raises(ValueError, match="device"):
        gpufact.to_device(x, "cuda:0")
    with pytest.raises(TypeError, match="obj"):
        gpufact.to_device("text", "cpu")


def test_round_trip_to_gpu(cp):
    F = gpufact.transforms.random_butterfly(64, seed=0)
    G = gpufact.to_device(F, "gpu")
    assert G.device == "gpu" and isinstance(G.factors[0].blocks, cp.ndarray)
    x = np.random.default_rng(0).standard_normal((64, 3))
    np.testing.assert_allclose((G @ cp.asarray(x)).get(), F @ x, atol=1e-12)
    back = gpufact.to_device(G, "cpu")
    np.testing.assert_array_equal(back.toarray(), F.toarray())
