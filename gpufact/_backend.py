"""Backend layer: the array namespace is taken from the inputs, never from global state.

A :class:`Backend` record bundles what the array API standard lacks for one namespace
(NumPy or CuPy): the module itself (``xp``), its sparse module, its LinearOperator, a
``synchronize`` and a host transfer. ``get_backend(*arrays)`` picks it from the arrays and
refuses NumPy/CuPy mixes with a ``TypeError``; nothing here moves data implicitly. Only
:func:`to_device` (and the objects' own ``to_device`` methods) copy between host and GPU.

Importing this module never imports CuPy.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import is_cupy_array, is_numpy_array

__all__ = ["Backend", "get_backend", "gpu_available", "to_device", "to_numpy", "NUMPY"]


@dataclass(frozen=True)
class Backend:
    """What gpufact needs from one array library (NumPy on the host, CuPy on the GPU)."""

    name: str  # "numpy" or "cupy"
    xp: ModuleType  # numpy or cupy

    @property
    def device(self) -> str:
        return "cpu" if self.name == "numpy" else "gpu"

    @property
    def is_gpu(self) -> bool:
        return self.name == "cupy"

    @functools.cached_property
    def sparse(self) -> ModuleType:
        if self.name == "numpy":
            import scipy.sparse as sp
        else:
            import cupyx.scipy.sparse as sp
        return sp

    @functools.cached_property
    def linalg_operator(self):
        if self.name == "numpy":
            from scipy.sparse.linalg import LinearOperator
        else:
            from cupyx.scipy.sparse.linalg import LinearOperator
        return LinearOperator

    def synchronize(self) -> None:
        """Wait for queued GPU work (a no-op on the host)."""
        if self.name == "cupy":
            self.xp.cuda.get_current_stream().synchronize()

    def __reduce__(self):  # picklable: rebuild from the name
        return (_backend_by_name, (self.name,))


NUMPY = Backend("numpy", np)


@functools.lru_cache(maxsize=None)
def _cupy_backend() -> Backend:
    import cupy

    return Backend("cupy", cupy)


def _backend_by_name(name: str) -> Backend:
    if name == "numpy":
        return NUMPY
    if name == "cupy":
        return _cupy_backend()
    raise ValueError(f"unknown backend {name!r}")


def _is_array(x) -> bool:
    return is_numpy_array(x) or is_cupy_array(x)


def _backend_of(x) -> Backend | None:
    if type(x) is np.ndarray:  # fast path (called per PALM step)
        return NUMPY
    be = getattr(x, "backend", None)  # gpufact objects (factors, products)
    if isinstance(be, Backend):
        return be
    if is_numpy_array(x) or isinstance(x, np.generic):
        return NUMPY
    if is_cupy_array(x):
        return _cupy_backend()
    mod = type(x).__module__ or ""
    if mod.startswith("scipy.sparse"):
        return NUMPY
    if mod.startswith("cupyx.scipy.sparse"):
        return _cupy_backend()
    return None


def get_backend(*arrays: Any, default: Backend | None = NUMPY) -> Backend:
    """The backend shared by ``arrays`` (NumPy/CuPy arrays, sparse matrices, gpufact objects).

    Python scalars, lists and ``None`` are neutral. Mixing NumPy and CuPy objects raises
    ``TypeError``: gpufact never copies between host and device behind your back.
    """
    found: Backend | None = None
    for a in arrays:
        if a is None:
            continue
        be = _backend_of(a)
        if be is None:
            continue
        if found is None:
            found = be
        elif be.name != found.name:
            raise TypeError(
                f"inputs mix {found.name} and {be.name} arrays; move them to one device "
                "first with gpufact.to_device(obj, 'cpu'|'gpu')"
            )
    if found is None:
        if default is None:
            raise TypeError("no NumPy or CuPy array among the inputs")
        return default
    return found


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError, driver missing, ...
        return False


def to_numpy(x):
    """A NumPy copy/view of ``x`` (CuPy arrays are copied to the host, NumPy returned as is)."""
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def to_device(obj, device: str):
    """Move an array, sparse matrix or gpufact object to ``device`` ("cpu" or "gpu").

    This is the only function that copies between host and GPU. Objects already on the
    target device are returned unchanged (no copy).
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if hasattr(obj, "to_device") and not _is_array(obj):
        return obj.to_device(device)
    be = _backend_of(obj)
    if be is None:
        raise TypeError(f"obj: cannot move an object of type {type(obj).__name__}")
    if be.device == device:
        return obj
    if device == "gpu":
        if not gpu_available():
            raise RuntimeError("device='gpu' requested but no CUDA GPU/CuPy is available")
        import cupy

        if be.name == "numpy" and not _is_array(obj):  # scipy sparse
            import cupyx.scipy.sparse as csp

            return csp.csr_matrix(obj.tocsr())
        return cupy.asarray(obj)
    # to cpu
    if not _is_array(obj):  # cupyx sparse
        return obj.get()
    return obj.get()

