"""Apply kernels: NumPy references, Numba (CPU) twins and CUDA launchers.

Each kernel exists three times with one semantics:
``reference.py`` (plain NumPy, the ground truth used by the tests), ``cpu.py`` (Numba) and
``cuda.py`` (CuPy ``RawModule`` launchers over ``kernels/*.cu``).
"""
