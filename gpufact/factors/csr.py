"""General sparse factor in CSR format (scipy.sparse on the host, cupyx.scipy.sparse on GPU)."""
from __future__ import annotations

import numpy as np

from .._backend import get_backend, to_device as _to_device
from .._validation import check_dtype, check_finite, float_dtype_for
from .base import Factor


def dense_to_csr(M, be):
    """CSR matrix of the dense 2-D array M (NumPy -> scipy, CuPy -> cupyx), built from the
    nonzero positions in row-major order (sorted indices, no explicit zeros)."""
    xp = be.xp
    if not be.is_gpu and M.dtype.kind in "fc":
        from .._kernels import cpu_solver_kernels

        return be.sparse.csr_matrix(cpu_solver_kernels().dense_to_csr_arrays(M), shape=M.shape)
    rows, cols = xp.nonzero(M)
    indptr = xp.zeros(M.shape[0] + 1, dtype=xp.int32 if M.size < 2**31 else xp.int64)
    indptr[1:] = xp.cumsum(xp.bincount(rows, minlength=M.shape[0]))
    return be.sparse.csr_matrix((M[rows, cols], cols.astype(indptr.dtype), indptr), shape=M.shape)


def _is_sparse(x) -> bool:
    mod = type(x).__module__ or ""
    return mod.startswith("scipy.sparse") or mod.startswith("cupyx.scipy.sparse")


class CSRFactor(Factor):
    """A sparse (m, n) matrix in CSR format. Apply costs O(nnz · B) (SpMM).

    ``matrix`` : any scipy.sparse matrix/array (CSR, CSC, COO, ..., ``spmatrix`` or
    ``sparray``, int32 or int64 indices) or cupyx.scipy.sparse matrix, or a dense array (its
    nonzeros are kept). The factor holds the canonical CSR form of that matrix, in a copy of
    its own: duplicate entries summed, indices sorted, explicit zeros (also sums of
    duplicates that cancel) dropped, so ``nnz``, norms and products are those of the matrix
    the input represents. The caller's matrix is never modified (values, index arrays, flags).
    Raises TypeError for non-numeric data, ValueError for NaN/inf (after summing duplicates)
    or a non-2-D input.
    """

    kind = "csr"

    def __init__(self, matrix, *, check: bool = True, _canonical: bool = False):
        be = get_backend(matrix)
        sp = be.sparse
        if _canonical:  # built by gpufact from a canonical factor (T, conj, astype, ...)
            pass
        elif not _is_sparse(matrix):
            if not hasattr(matrix, "ndim") or matrix.ndim != 2:
                raise ValueError("matrix must be a 2-D sparse or dense array")
            if getattr(matrix.dtype, "kind", "O") not in "biufc":
                raise TypeError(f"matrix: unsupported dtype {matrix.dtype}")
            matrix = dense_to_csr(matrix, be)
        elif matrix.ndim != 2:
            raise ValueError(f"matrix must be 2-D, got shape {tuple(matrix.shape)}")
        elif be.is_gpu:
            # cupyx's eliminate_zeros / sort_indices were seen corrupting real matrices
            # (CuPy 14.2, H100): rebuild through the exact dense path instead (toarray sums
            # duplicates)
            matrix = dense_to_csr(matrix.toarray(), be)
        else:
            # a copy (never the caller's arrays), then canonical: sum_duplicates sorts the
            # indices and adds duplicates; zeros dropped after the sums
            matrix = sp.csr_matrix(matrix, copy=True)
            try:  # out-of-range or malformed index arrays would be read out of bounds
                matrix.check_format(full_check=True)
            except ValueError as exc:
                raise ValueError(f"matrix: malformed sparse matrix ({exc})") from None
            matrix.sum_duplicates()
            matrix.eliminate_zeros()
        if matrix.dtype.kind not in "biufc":
            raise TypeError(f"matrix: unsupported dtype {matrix.dtype}")
        dt = float_dtype_for(matrix.dtype)
        if matrix.dtype != dt:
            matrix = matrix.astype(dt)
        if check:
            check_finite(matrix.data, "matrix", be.xp)
        self.matrix = matrix
        self.backend = be
        self.shape = tuple(int(s) for s in matrix.shape)

    @property
    def dtype(self):
        return np.dtype(self.matrix.dtype)

    @property
    def nnz(self):
        return int(self.matrix.nnz)

    def toarray(self):
        return self.matrix.toarray()

    @property
    def T(self):
        return CSRFactor(self.matrix.T.tocsr(), check=False, _canonical=True)

    def conj(self):
        return self if self.dtype.kind != "c" else CSRFactor(self.matrix.conj(), check=False, _canonical=True)

    def astype(self, dtype):
        dt = check_dtype(dtype)
        if dt.kind != "c" and self.dtype.kind == "c":
            raise TypeError(f"dtype: cannot cast complex factor to real {dt}")
        return self if dt == self.dtype else CSRFactor(self.matrix.astype(dt), check=False, _canonical=True)

    def to_device(self, device):
        return self if self.backend.device == device else CSRFactor(_to_device(self.matrix, device), check=False, _canonical=True)

    def apply_cols(self, Xc, out):
        S = self.matrix if self.dtype == out.dtype else self.matrix.astype(out.dtype)
        out[...] = S @ Xc.astype(out.dtype, copy=False)
        return out

    def _state(self):
        m = self.matrix if not self.backend.is_gpu else self.matrix.get()
        return {"data": np.asarray(m.data), "indices": np.asarray(m.indices, dtype=np.int64),
                "indptr": np.asarray(m.indptr, dtype=np.int64), "shape": np.asarray(m.shape, dtype=np.int64)}

    @classmethod
    def _from_state(cls, st):
        import scipy.sparse as sp

        shape = tuple(int(s) for s in st["shape"])
        if len(shape) != 2 or min(shape) < 0:
            raise ValueError("bad CSR shape")
        indptr = st["indptr"]
        indices = st["indices"]
        data = st["data"]
        if indptr.shape != (shape[0] + 1,) or indices.shape != data.shape or \
                (indices.size and (indices.min() < 0 or indices.max() >= shape[1])) or \
                indptr[0] != 0 or indptr[-1] != data.size or np.any(np.diff(indptr) < 0):
            raise ValueError("inconsistent CSR arrays")
        return cls(sp.csr_matrix((data, indices, indptr), shape=shape))
