"""Kronecker-sparse (KS) factors: butterfly, Monarch and friends."""
from __future__ import annotations

import numpy as np

from .._backend import get_backend, to_device as _to_device, to_numpy
from .._validation import check_dtype, check_finite, check_int, check_seed, float_dtype_for, is_sparse
from .base import Factor, _readonly


def ks_support(a: int, b: int, c: int, d: int, xp=np):
    """Boolean (a*b*d, a*c*d) mask of the pattern I_a ⊗ 1_{b×c} ⊗ I_d."""
    for name, v in zip("abcd", (a, b, c, d)):
        check_int(v, name, min_value=1)
    mask = np.kron(np.kron(np.eye(a, dtype=bool), np.ones((b, c), dtype=bool)),
                   np.eye(d, dtype=bool))
    return xp.asarray(mask)


def butterfly_pattern(N: int, level: int) -> tuple[int, int, int, int]:
    """Pattern (a, b, c, d) = (2^(ℓ-1), 2, 2, N/2^ℓ) of butterfly factor ``level`` ℓ (1-based)."""
    from .._validation import check_power_of_two

    N = check_power_of_two(N, "N")
    L = N.bit_length() - 1
    level = check_int(level, "level", min_value=1, max_value=L)
    return (2 ** (level - 1), 2, 2, N // 2 ** level)


class KSFactor(Factor):
    """Kronecker-sparse factor with support ``I_a ⊗ 1_{b×c} ⊗ I_d``.

    Parameters
    ----------
    blocks : array (a, d, b, c), NumPy or CuPy, float32/float64/complex64/complex128.
        ``blocks[α, δ]`` is the dense b×c block at rows ``α*b*d + r*d + δ`` and columns
        ``α*c*d + s*d + δ``. Stored as given (no index arrays); shape (a*b*d, a*c*d),
        ``nnz = a*b*c*d``. Integer input is converted to float64. NaN/inf are refused.

    The butterfly factor ℓ of size N = 2^L has pattern (2^(ℓ-1), 2, 2, N/2^ℓ); Monarch
    factors are (1, √N, √N, √N)·(√N, √N, √N, 1)-type patterns. Applying it to a batch of B
    vectors costs O(nnz · B).
    """

    kind = "ks"

    def __init__(self, blocks, *, copy: bool = False, check: bool = True):
        be = get_backend(blocks)
        if is_sparse(blocks):
            raise TypeError("blocks must be a dense array, got a sparse matrix")
        if not hasattr(blocks, "ndim"):
            blocks = np.asarray(blocks)
        if blocks.ndim != 4:
            raise ValueError(f"blocks must have 4 dimensions (a, d, b, c), got shape {tuple(blocks.shape)}")
        if min(blocks.shape) < 1:
            raise ValueError(f"blocks must have a positive size in each dimension, got {tuple(blocks.shape)}")
        dt = float_dtype_for(blocks.dtype) if blocks.dtype.kind in "biufc" else None
        if dt is None:
            raise TypeError(f"blocks: unsupported dtype {blocks.dtype}")
        if check:
            check_finite(blocks, "blocks", be.xp)
        blocks = be.xp.array(blocks, dtype=dt, copy=True) if (copy or blocks.dtype != dt) else blocks
        self.blocks = _readonly(be.xp.ascontiguousarray(blocks))
        self.backend = be
        a, d, b, c = self.blocks.shape
        self.shape = (a * b * d, a * c * d)

    @classmethod
    def from_dense(cls, M, pattern) -> "KSFactor":
        """The KS factor holding the entries of the dense matrix ``M`` on ``pattern``'s support."""
        a, b, c, d = _check_pattern(pattern)
        be = get_backend(M)
        if M.ndim != 2 or M.shape != (a * b * d, a * c * d):
            raise ValueError(f"M must have shape {(a * b * d, a * c * d)} for pattern {pattern}, got {tuple(M.shape)}")
        blocks = M.reshape(a, b, d, a, c, d)
        ar = be.xp.arange(a)
        dr = be.xp.arange(d)
        blocks = blocks[ar[:, None], :, dr[None, :], ar[:, None], :, dr[None, :]]  # (a, d, b, c)
        return cls(blocks)

    @classmethod
    def random(cls, pattern, dtype=np.float64, seed=None, xp=np) -> "KSFactor":
        """Factor with i.i.d. standard normal blocks (complex: real and imaginary parts)."""
        a, b, c, d = _check_pattern(pattern)
        dt = check_dtype(dtype)
        rng = check_seed(seed)
        shape = (a, d, b, c)
        if dt.kind == "c":
            data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
        else:
            data = rng.standard_normal(shape)
        return cls(xp.asarray(data.astype(dt)))

    @property
    def pattern(self) -> tuple[int, int, int, int]:
        a, d, b, c = self.blocks.shape
        return (a, b, c, d)

    @property
    def dtype(self):
        return self.blocks.dtype

    @property
    def nnz(self) -> int:
        return int(self.blocks.size)

    def support(self):
        """Boolean mask of the allowed entries (a*b*d, a*c*d)."""
        return ks_support(*self.pattern, xp=self.backend.xp)

    def toarray(self):
        a, b, c, d = self.pattern
        xp = self.backend.xp
        out = xp.zeros((a, b, d, a, c, d), dtype=self.dtype)
        ar = xp.arange(a)
        dr = xp.arange(d)
        out[ar[:, None], :, dr[None, :], ar[:, None], :, dr[None, :]] = self.blocks
        return out.reshape(a * b * d, a * c * d)

    @property
    def T(self) -> "KSFactor":
        return KSFactor(self.backend.xp.ascontiguousarray(self.blocks.transpose(0, 1, 3, 2)),
                        check=False)

    def conj(self) -> "KSFactor":
        if self.dtype.kind != "c":
            return self
        return KSFactor(self.blocks.conj(), check=False)

    def astype(self, dtype) -> "KSFactor":
        dt = check_dtype(dtype)
        if dt.kind != "c" and self.dtype.kind == "c":
            raise TypeError(f"dtype: cannot cast complex factor to real {dt}")
        return self if dt == self.dtype else KSFactor(self.blocks.astype(dt), check=False)

    def to_device(self, device: str) -> "KSFactor":
        return self if self.backend.device == device else KSFactor(_to_device(self.blocks, device), check=False)

    def apply_cols(self, Xc, out):
        from ._chain import ks_chain_apply_cols

        return ks_chain_apply_cols([self], Xc, out)

    def _state(self) -> dict:
        return {"blocks": to_numpy(self.blocks)}

    @classmethod
    def _from_state(cls, st) -> "KSFactor":
        return cls(st["blocks"])


def _check_pattern(pattern):
    try:
        a, b, c, d = pattern
    except (TypeError, ValueError):
        raise ValueError(f"pattern must be a tuple (a, b, c, d), got {pattern!r}") from None
    return tuple(check_int(v, f"pattern[{i}]", min_value=1) for i, v in enumerate((a, b, c, d)))
