"""Permutation factor."""
from __future__ import annotations

import numpy as np

from .._backend import get_backend, to_device as _to_device, to_numpy
from .._validation import check_dtype, is_sparse
from .._kernels import cpu_kernels
from .base import Factor, _readonly


_PARALLEL_MIN = 1 << 15  # elements: below, NumPy's serial take beats a Numba parallel launch


class PermFactor(Factor):
    """Permutation matrix P with ``P[i, perm[i]] = 1``, i.e. ``(P x)_i = x[perm[i]]``.

    ``perm`` : 1-D integer array, a permutation of 0..n-1 (checked). ``dtype`` is the dtype
    the factor reports (it holds no values; default float64). Apply costs O(n B) (a gather).
    """

    kind = "perm"

    def __init__(self, perm, dtype=np.float64, *, check: bool = True):
        be = get_backend(perm)
        if is_sparse(perm):
            raise TypeError("perm must be a dense array, got a sparse matrix")
        if not hasattr(perm, "ndim"):
            perm = np.asarray(perm)
        if perm.ndim != 1 or perm.size == 0:
            raise ValueError(f"perm must be a non-empty 1-D array, got shape {tuple(perm.shape)}")
        if perm.dtype.kind not in "iu":
            raise TypeError(f"perm must hold integers, got dtype {perm.dtype}")
        n = int(perm.shape[0])
        if check:
            h = np.sort(to_numpy(perm))
            if not np.array_equal(h, np.arange(n)):
                raise ValueError("perm is not a permutation of 0..n-1")
        self.perm = _readonly(perm.astype(np.int64) if perm.dtype != np.int64 else perm)
        self._dtype = check_dtype(dtype)
        self.backend = be
        self.shape = (n, n)

    @classmethod
    def bit_reversal(cls, N: int, dtype=np.float64, xp=np) -> "PermFactor":
        """The bit-reversal permutation of size N (a power of two)."""
        from .._validation import check_power_of_two

        N = check_power_of_two(N, "N", min_value=1)
        L = N.bit_length() - 1
        idx = np.arange(N)
        rev = np.zeros(N, dtype=np.int64)
        for k in range(L):
            rev |= ((idx >> k) & 1) << (L - 1 - k)
        return cls(xp.asarray(rev), dtype=dtype, check=False)

    @property
    def dtype(self):
        return self._dtype

    @property
    def nnz(self):
        return int(self.perm.size)

    def toarray(self):
        xp = self.backend.xp
        n = self.shape[0]
        out = xp.zeros((n, n), dtype=self.dtype)
        out[xp.arange(n), self.perm] = 1
        return out

    @property
    def T(self):
        xp = self.backend.xp
        inv = xp.empty_like(self.perm)
        inv[self.perm] = xp.arange(self.perm.size, dtype=self.perm.dtype)
        return PermFactor(inv, dtype=self.dtype, check=False)

    def conj(self):
        return self

    def astype(self, dtype):
        return PermFactor(self.perm, dtype=dtype, check=False)

    def to_device(self, device):
        if self.backend.device == device:
            return self
        return PermFactor(_to_device(self.perm, device), dtype=self.dtype, check=False)

    def apply_cols(self, Xc, out):
        """out = P @ Xc as a gather along the contiguous side of the data: rows of a column
        batch, or within each sample of row-major data (no temporary, no strided gather)."""
        xp = self.backend.xp
        cols = Xc.flags.c_contiguous and out.flags.c_contiguous
        rows = Xc.T.flags.c_contiguous and out.T.flags.c_contiguous
        gather = (cols or rows) and np.can_cast(Xc.dtype, out.dtype, "same_kind")
        if gather and xp is np and Xc.size >= _PARALLEL_MIN:  # Numba, in parallel (valid
            # permutation: no bounds to check), casting on the fly (real batch, complex product)
            k = cpu_kernels()
            if cols:
                k.permute_rows(Xc, self.perm, out)
            else:
                k.permute_within_rows(Xc.T, self.perm, out.T)
        elif gather and Xc.dtype == out.dtype:  # CuPy, or a small batch (a parallel launch
            # would cost more than the gather)
            kw = {"mode": "wrap"} if xp is np else {}  # valid indices: skip NumPy's buffered out
            if cols:
                xp.take(Xc, self.perm, axis=0, out=out, **kw)
            else:
                xp.take(Xc.T, self.perm, axis=1, out=out.T, **kw)
        else:  # other layouts, or a cast the gathers do not do
            out[...] = Xc[self.perm]
        return out

    def _state(self):
        return {"perm": to_numpy(self.perm), "dtype": np.array(str(self.dtype))}

    @classmethod
    def _from_state(cls, st):
        return cls(st["perm"], dtype=str(st["dtype"]))
