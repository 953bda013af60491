"""Diagonal factor."""
from __future__ import annotations

from .._backend import get_backend, to_device as _to_device, to_numpy
from .._validation import check_dtype, check_finite, float_dtype_for, is_sparse
from .base import Factor, _readonly


class DiagFactor(Factor):
    """diag(v) of size n × n: ``(D x)_i = v_i x_i``. Apply costs O(n B)."""

    kind = "diag"

    def __init__(self, diag, *, check: bool = True):
        be = get_backend(diag)
        if is_sparse(diag):
            raise TypeError("diag must be a dense array, got a sparse matrix")
        if not hasattr(diag, "ndim") or diag.ndim != 1 or diag.size == 0:
            raise ValueError(f"diag must be a non-empty 1-D array, got {getattr(diag, 'shape', type(diag))}")
        if diag.dtype.kind not in "biufc":
            raise TypeError(f"diag: unsupported dtype {diag.dtype}")
        dt = float_dtype_for(diag.dtype)
        if check:
            check_finite(diag, "diag", be.xp)
        self.diag = _readonly(diag.astype(dt) if diag.dtype != dt else diag)
        self.backend = be
        n = int(diag.shape[0])
        self.shape = (n, n)

    @property
    def dtype(self):
        return self.diag.dtype

    @property
    def nnz(self):
        return int(self.diag.size)

    def toarray(self):
        return self.backend.xp.diag(self.diag)

    @property
    def T(self):
        return self

    def conj(self):
        return self if self.dtype.kind != "c" else DiagFactor(self.diag.conj(), check=False)

    def astype(self, dtype):
        dt = check_dtype(dtype)
        if dt.kind != "c" and self.dtype.kind == "c":
            raise TypeError(f"dtype: cannot cast complex factor to real {dt}")
        return self if dt == self.dtype else DiagFactor(self.diag.astype(dt), check=False)

    def to_device(self, device):
        return self if self.backend.device == device else DiagFactor(_to_device(self.diag, device), check=False)

    def apply_cols(self, Xc, out):
        self.backend.xp.multiply(self.diag.astype(out.dtype, copy=False)[:, None], Xc, out=out)
        return out

    def _state(self):
        return {"diag": to_numpy(self.diag)}

    @classmethod
    def _from_state(cls, st):
        return cls(st["diag"])
