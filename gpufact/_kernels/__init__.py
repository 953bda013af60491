"""Apply kernels: NumPy references, Numba (CPU) twins and CUDA launchers.

Each kernel exists three times with one semantics:
``reference.py`` (plain NumPy, the ground truth used by the tests), ``cpu.py`` and
``cpu_radix.py`` (Numba: applying factors; radix-2^R passes for butterfly chains) with ``cpu_sparse.py`` (Numba: fused CSR chains and the fused assignment),
``cpu_grad.py`` (Numba: gradients), ``cpu_features.py`` (Numba: fused random-feature maps)
and ``cpu_solvers.py`` (Numba: the solvers' projections and norms), and ``cuda.py``
(CuPy ``RawModule`` launchers over ``kernels/*.cu``).
"""

_CPU = None
_CPU_SOLVERS = None
_CPU_GRAD = None


def cpu_kernels():
    """The Numba kernel module, imported on first use (importing gpufact does not load
    Numba); a cached module reference, cheap enough for per-sweep calls."""
    global _CPU
    if _CPU is None:
        from . import cpu as mod

        _CPU = mod
    return _CPU


def cpu_solver_kernels():
    """The Numba kernels of the solvers (``cpu_solvers``), imported on first use, cached."""
    global _CPU_SOLVERS
    if _CPU_SOLVERS is None:
        from . import cpu_solvers as mod

        _CPU_SOLVERS = mod
    return _CPU_SOLVERS


def cpu_grad_kernels():
    """The Numba gradient kernels (``cpu_grad``), imported on first use, cached."""
    global _CPU_GRAD
    if _CPU_GRAD is None:
        from . import cpu_grad as mod

        _CPU_GRAD = mod
    return _CPU_GRAD
