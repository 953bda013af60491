"""Apply kernels: NumPy references, Numba (CPU) twins and CUDA launchers.

Each kernel exists three times with one semantics:
``reference.py`` (plain NumPy, the ground truth used by the tests), ``cpu.py`` (Numba) and
``cuda.py`` (CuPy ``RawModule`` launchers over ``kernels/*.cu``).
"""

_CPU = None


def cpu_kernels():
    """The Numba kernel module, imported on first use (importing gpufact does not load
    Numba); a cached module reference, cheap enough for per-sweep calls."""
    global _CPU
    if _CPU is None:
        from . import cpu as mod

        _CPU = mod
    return _CPU
