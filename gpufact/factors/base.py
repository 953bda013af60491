"""The factor interface shared by every format."""
from __future__ import annotations

import numpy as np

from .._backend import Backend


def _readonly(a):
    """A read-only view of a NumPy array (the caller's array keeps its flags); other arrays
    (CuPy has no read-only flag) as they are."""
    if isinstance(a, np.ndarray):
        a = a.view()
        a.flags.writeable = False
    return a


class Factor:
    """A linear map stored in a fast format. Subclasses define the abstract members.

    Every factor has ``shape`` (m, n), ``dtype`` (float32/float64/complex64/complex128),
    ``nnz``, ``backend``, a dense reference ``toarray()``, ``T``/``H``/``conj()``,
    ``astype``, ``to_device`` and ``apply_cols(Xc, out)`` computing ``out = F @ Xc`` for a
    logical (n, B) column batch ``Xc`` with any strides (``out`` is a preallocated (m, B)
    array of the result dtype). Nothing modifies its inputs.

    Factors are immutable. They keep references to the arrays they are given (a copy only
    for a dtype conversion or ``copy=True``), and their NumPy arrays (``blocks``, ``matrix``,
    ``diag``, ``perm``) are read-only views: products cache derived data (a chain's
    concatenated weights, the result dtype), which a write in place would leave stale.
    To change a factor, build a new one from a modified copy.
    """

    # make ``ndarray @ F`` defer to F.__rmatmul__ (NumPy and CuPy)
    __array_ufunc__ = None
    __array_priority__ = 1000

    kind: str = "abstract"
    shape: tuple[int, int]
    backend: Backend

    # --- to define -------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        raise NotImplementedError

    @property
    def nnz(self) -> int:
        raise NotImplementedError

    def toarray(self):
        raise NotImplementedError

    @property
    def T(self) -> "Factor":
        raise NotImplementedError

    def conj(self) -> "Factor":
        raise NotImplementedError

    def astype(self, dtype) -> "Factor":
        raise NotImplementedError

    def to_device(self, device: str) -> "Factor":
        raise NotImplementedError

    def apply_cols(self, Xc, out):
        raise NotImplementedError

    def _state(self) -> dict:
        """Arrays (host) describing the factor, for :mod:`gpufact.io`."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------
    def __setstate__(self, state):
        """Unpickling gives writeable arrays: make the stored NumPy arrays read-only again."""
        for key in ("blocks", "matrix", "diag", "perm"):
            if isinstance(state.get(key), np.ndarray):
                state[key] = _readonly(state[key])
        self.__dict__.update(state)

    @property
    def H(self) -> "Factor":
        return self.T.conj()

    @property
    def density(self) -> float:
        m, n = self.shape
        return self.nnz / (m * n) if m * n else 0.0

    def __matmul__(self, other):
        from ..product import FactorProduct

        return FactorProduct([self]) @ other

    def __rmatmul__(self, other):
        from ..product import FactorProduct

        return other @ FactorProduct([self])

    def __repr__(self) -> str:
        m, n = self.shape
        return (f"{type(self).__name__}(shape=({m}, {n}), dtype={self.dtype}, nnz={self.nnz}, "
                f"device={self.backend.device!r})")
