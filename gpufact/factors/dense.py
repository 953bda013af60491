"""Dense factor (used for residual factors in factorizations and as a fallback)."""
from __future__ import annotations

import numpy as np

from .._backend import get_backend, to_device as _to_device, to_numpy
from .._validation import check_dtype, check_finite, float_dtype_for, is_sparse
from .base import Factor, _readonly


class DenseFactor(Factor):
    """A dense (m, n) matrix. Apply costs O(m n B) (BLAS)."""

    kind = "dense"

    def __init__(self, matrix, *, check: bool = True):
        be = get_backend(matrix)
        if is_sparse(matrix):
            raise TypeError("matrix: a sparse matrix; use CSRFactor(matrix), or DenseFactor(matrix.toarray())")
        if not hasattr(matrix, "ndim") or matrix.ndim != 2:
            raise ValueError(f"matrix must be 2-D, got {getattr(matrix, 'shape', type(matrix))}")
        if matrix.dtype.kind not in "biufc":
            raise TypeError(f"matrix: unsupported dtype {matrix.dtype}")
        dt = float_dtype_for(matrix.dtype)
        if check:
            check_finite(matrix, "matrix", be.xp)
        self.matrix = _readonly(matrix.astype(dt) if matrix.dtype != dt else matrix)
        self.backend = be
        self.shape = tuple(int(s) for s in matrix.shape)

    @property
    def dtype(self):
        return self.matrix.dtype

    @property
    def nnz(self) -> int:
        return int(self.matrix.size)

    def toarray(self):
        return self.matrix.copy()

    @property
    def T(self):
        return DenseFactor(self.matrix.T, check=False)

    def conj(self):
        return self if self.dtype.kind != "c" else DenseFactor(self.matrix.conj(), check=False)

    def astype(self, dtype):
        dt = check_dtype(dtype)
        if dt.kind != "c" and self.dtype.kind == "c":
            raise TypeError(f"dtype: cannot cast complex factor to real {dt}")
        return self if dt == self.dtype else DenseFactor(self.matrix.astype(dt), check=False)

    def to_device(self, device):
        return self if self.backend.device == device else DenseFactor(_to_device(self.matrix, device), check=False)

    def apply_cols(self, Xc, out):
        M = self.matrix.astype(out.dtype, copy=False)
        self.backend.xp.matmul(M, Xc.astype(out.dtype, copy=False), out=out)
        return out

    def _state(self):
        return {"matrix": np.ascontiguousarray(to_numpy(self.matrix))}

    @classmethod
    def _from_state(cls, st):
        return cls(st["matrix"])
