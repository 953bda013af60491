"""The array namespace of a benchmark's ``backend`` parameter (shared by the suites)."""
import numpy as np

from gpufact import gpu_available


def _xp(backend):
    """NumPy for "numpy"; CuPy for "cupy", or NotImplementedError (asv skips the case)."""
    if backend == "numpy":
        return np
    if not gpu_available():
        raise NotImplementedError("no GPU")  # asv skips the case
    import cupy

    return cupy
