"""Constraint sets and their Euclidean projections (NumPy or CuPy matrices).

Each constraint is an object built with the factor's shape first, then its parameters, and
is callable: ``P(M)`` returns the projection of M (a new array of M's dtype and namespace;
M is never modified). ``P.support(M)`` returns the boolean support the projection keeps.
With ``normalized=True`` the result is scaled to unit Frobenius norm (zero stays zero), as
in FAµST, so that PALM's scalar λ carries the scale.

Sparsity supports select by magnitude (complex entries: modulus); ties are broken by the
smaller index (row-major for ``sp``), identically on every backend. Top-k per row/column:
Numba kernel on the CPU, CUDA radix-select kernel (``kernels/topk.cu``) on the GPU; global
top-k: one partition plus a cumulative sum (O(mn)).
"""
from __future__ import annotations

import numpy as np

from . import _kernels
from ._backend import get_backend
from ._numeric import unit_scale
from ._validation import check_dense, check_finite, check_int
from .factors.ks import ks_support

__all__ = ["Constraint", "sp", "splin", "spcol", "splincol", "const", "supp", "blockdiag",
           "butterfly_support", "normcol", "normlin"]


def _check_shape(shape):
    try:
        m, n = shape
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair (m, n), got {shape!r}") from None
    return (check_int(m, "shape[0]", min_value=1), check_int(n, "shape[1]", min_value=1))


def _topk_mask_gpu(mag, k, axis):
    """Boolean mask of the k largest entries per row (axis=1) / column (axis=0) of the CuPy
    magnitude matrix ``mag`` (CUDA radix select, ``kernels/topk.cu``)."""
    import cupy

    if k >= mag.shape[axis]:
        return cupy.ones(mag.shape, dtype=bool)
    from ._kernels.cuda import topk_mask

    return topk_mask(mag, k, axis).astype(bool)


def _topk_global_mask(mag, k, xp):
    a = mag.ravel()
    if k >= a.size:
        return xp.ones(mag.shape, dtype=bool)
    thr = xp.partition(a, a.size - k)[a.size - k]  # k-th largest
    gt = a > thr
    need = k - xp.count_nonzero(gt)
    eq = a == thr
    keep = gt | (eq & (xp.cumsum(eq) <= need))
    return keep.reshape(mag.shape)


class Constraint:
    """Base class: a set E of (m, n) matrices with its projection ``P(M)``."""

    #: factor format PALM should return for this set ("sparse", "dense" or "ks")
    factor_format = "sparse"

    def __init__(self, shape, normalized: bool):
        self.shape = _check_shape(shape)
        if not isinstance(normalized, (bool, np.bool_)):
            raise TypeError(f"normalized must be a bool, got {type(normalized).__name__}")
        self.normalized = bool(normalized)

    def _check_input(self, M):
        be = get_backend(M)
        check_dense(M, "M")
        if M.ndim != 2:
            raise ValueError(f"M must be a 2-D array, got {getattr(M, 'shape', type(M).__name__)}")
        if tuple(M.shape) != self.shape:
            raise ValueError(f"M has shape {tuple(M.shape)} but the constraint is for {self.shape}")
        if M.dtype.char not in "fdFD":
            raise TypeError(f"M must be a float32, float64, complex64 or complex128 array, got dtype {M.dtype}")
        if not be.is_gpu:  # (on the GPU a check would sync)
            check_finite(M, "M")
        return be

    def support(self, M=None):
        """Boolean mask of the entries the projection of M keeps."""
        raise NotImplementedError

    def _project(self, M, be):
        return be.xp.where(self.support(M), M, 0).astype(M.dtype, copy=False)

    def __call__(self, M):
        return self._project_normalized(M, self._check_input(M))

    def _project_normalized(self, M, be):
        out = self._project(M, be)
        if self.normalized:  # right for entries anywhere in the range; zero stays zero
            out = unit_scale(out, be.xp)
        return out

    def _params(self) -> str:
        return ""

    def __repr__(self):
        p = self._params()
        return f"{type(self).__name__}({self.shape}{', ' + p if p else ''}, normalized={self.normalized})"


class _TopK(Constraint):
    _axis = None  # None: global

    def __init__(self, shape, k, *, normalized: bool = True):
        super().__init__(shape, normalized)
        m, n = self.shape
        limit = {None: m * n, 1: n, 0: m, "both": max(m, n)}[self._axis]
        self.k = check_int(k, "k", min_value=1, max_value=limit)

    def _params(self):
        return f"k={self.k}"

    def support(self, M=None):
        if M is None:
            raise ValueError("M is required: this support depends on the matrix")
        return self._support(M, self._check_input(M))

    def _row_col_k(self):
        """(k per row, k per column), 0 where the set does not constrain that direction."""
        return (self.k if self._axis in (1, "both") else 0, self.k if self._axis in (0, "both") else 0)

    def _project(self, M, be):
        return be.xp.where(self._support(M, be), M, 0).astype(M.dtype, copy=False)

    def __call__(self, M):
        # valid NumPy input, the common case inside PALM, skips the generic checks
        host = type(M) is np.ndarray and M.shape == self.shape and M.dtype.char in "fdFD"
        be = None if host else self._check_input(M)
        if self._axis is not None and (host or not be.is_gpu):  # one fused Numba call
            return _kernels.cpu_solver_kernels().topk_project(M, *self._row_col_k(), self.normalized)
        return self._project_normalized(M, be or self._check_input(M))

    def _support(self, M, be):
        if self._axis is None:
            return _topk_global_mask(be.xp.abs(M), self.k, be.xp)
        kr, kc = self._row_col_k()
        if not be.is_gpu:
            return _kernels.cpu_solver_kernels().topk_rows_cols_mask(M, kr, kc)
        mag = be.xp.abs(M)
        mask = _topk_mask_gpu(mag, min(kr, mag.shape[1]), 1) if kr else None
        if kc:
            cols = _topk_mask_gpu(mag, min(kc, mag.shape[0]), 0)
            mask = cols if mask is None else mask | cols
        return mask


class sp(_TopK):
    """The k largest entries overall (k <= m n)."""

    _axis = None


class splin(_TopK):
    """The k largest entries of each row (k <= n)."""

    _axis = 1


class spcol(_TopK):
    """The k largest entries of each column (k <= m)."""

    _axis = 0


class splincol(_TopK):
    """Union of the supports of ``splin(k)`` and ``spcol(k)`` (FAµST's splincol)."""

    _axis = "both"


class supp(Constraint):
    """Matrices supported on a fixed boolean ``mask`` (shape taken from it)."""

    def __init__(self, mask, *, normalized: bool = True):
        check_dense(mask, "mask")
        if mask.ndim != 2:
            raise ValueError("mask must be a 2-D boolean array")
        super().__init__(mask.shape, normalized)
        self.mask = mask.astype(bool)

    def support(self, M=None):
        if M is not None:
            be = self._check_input(M)
            get_backend(M, self.mask)
        return self.mask


class butterfly_support(supp):
    """Fixed Kronecker-sparse support I_a ⊗ 1_{b×c} ⊗ I_d (a butterfly factor for b = c = 2).
    PALM returns :class:`~gpufact.KSFactor` factors for it. ``xp``: namespace of the mask."""

    factor_format = "ks"

    def __init__(self, a, b, c, d, *, normalized: bool = True, xp=np):
        self.pattern = tuple(check_int(v, n, min_value=1) for v, n in zip((a, b, c, d), "abcd"))
        super().__init__(ks_support(*self.pattern, xp=xp), normalized=normalized)

    def _params(self):
        return f"pattern={self.pattern}"


class blockdiag(Constraint):
    """Block-diagonal matrices; ``blocks`` lists the (m_i, n_i) block sizes (sums = shape)."""

    def __init__(self, shape, blocks, *, normalized: bool = True):
        super().__init__(shape, normalized)
        try:
            blocks = [(check_int(bm, "blocks[i][0]", min_value=1), check_int(bn, "blocks[i][1]", min_value=1))
                      for bm, bn in blocks]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"blocks must be a list of (m_i, n_i) pairs of positive ints: {exc}") from None
        if not blocks or sum(b[0] for b in blocks) != self.shape[0] or sum(b[1] for b in blocks) != self.shape[1]:
            raise ValueError(f"blocks sizes must add up to shape {self.shape}, got {blocks}")
        self.blocks = blocks
        mask = np.zeros(self.shape, dtype=bool)
        i = j = 0
        for bm, bn in blocks:
            mask[i:i + bm, j:j + bn] = True
            i, j = i + bm, j + bn
        self._mask = mask

    def support(self, M=None):
        if M is None:
            return self._mask
        be = self._check_input(M)
        return be.xp.asarray(self._mask) if be.is_gpu else self._mask


class const(Constraint):
    """The single matrix C (a fixed factor). ``P(M) = C``."""

    factor_format = "dense"

    def __init__(self, C):
        check_dense(C, "C")
        if C.ndim != 2:
            raise ValueError("C must be a 2-D array")
        super().__init__(C.shape, False)
        self.C = C

    def support(self, M=None):
        return self.C != 0

    def _project(self, M, be):
        get_backend(M, self.C)
        return self.C.astype(M.dtype, copy=True)


class _NormVec(Constraint):
    factor_format = "dense"
    _axis = 0

    def __init__(self, shape, s=1.0):
        super().__init__(shape, False)
        s = float(s)
        if not np.isfinite(s) or s <= 0:
            raise ValueError(f"s must be a positive finite norm, got {s}")
        self.s = s

    def support(self, M=None):
        """Scaling keeps the support of M."""
        if M is None:
            raise ValueError("M is required: this support depends on the matrix")
        self._check_input(M)
        return M != 0

    def _project(self, M, be):
        xp = be.xp
        # M / ‖M‖ first, then · s: (s / ‖M‖) alone can overflow or round to 0
        unit = unit_scale(M, xp, axis=self._axis)
        return (unit * M.real.dtype.type(self.s)).astype(M.dtype, copy=False)

    def _params(self):
        return f"s={self.s}"


class normcol(_NormVec):
    """Every column scaled to norm ``s`` (zero columns stay zero)."""

    _axis = 0


class normlin(_NormVec):
    """Every row scaled to norm ``s`` (zero rows stay zero)."""

    _axis = 1
