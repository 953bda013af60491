"""Known fast transforms as exact :class:`~gpufact.FactorProduct` objects.

All sizes are powers of two N = 2^L; factor ℓ (1-based, product order) is the butterfly
factor of pattern (2^(ℓ-1), 2, 2, N/2^ℓ). ``xp`` selects NumPy (default) or CuPy.
"""
from __future__ import annotations

import numpy as np

from ._validation import check_dtype, check_power_of_two, check_seed
from .factors import KSFactor, PermFactor, butterfly_pattern
from .product import FactorProduct

__all__ = ["hadamard", "dft", "random_butterfly", "hadamard_dense", "dft_dense", "bit_reversal"]


def _levels(N):
    return N.bit_length() - 1


def hadamard(N: int, dtype=np.float64, *, normalized: bool = False, xp=np) -> FactorProduct:
    """Sylvester–Hadamard matrix H_N (entries ±1; ±1/√N if ``normalized``) as log2(N)
    butterfly factors ``I_{2^(ℓ-1)} ⊗ [[1, 1], [1, -1]] ⊗ I_{N/2^ℓ}``. Equals
    ``scipy.linalg.hadamard(N)``. nnz = 2 N log2 N; apply O(N log N) per vector."""
    N = check_power_of_two(N, "N")
    dt = check_dtype(dtype)
    L = _levels(N)
    s = 1 / np.sqrt(2) if normalized else 1.0
    h2 = np.array([[1, 1], [1, -1]], dtype=dt) * dt.type(s)
    factors = []
    for lvl in range(1, L + 1):
        a, b, c, d = butterfly_pattern(N, lvl)
        factors.append(KSFactor(xp.asarray(np.broadcast_to(h2, (a, d, 2, 2)).copy())))
    return FactorProduct(factors)


def bit_reversal(N: int):
    """The bit-reversal permutation of 0..N-1 (NumPy int64 array)."""
    N = check_power_of_two(N, "N", min_value=1)
    return PermFactor.bit_reversal(N).perm


def dft(N: int, dtype=np.complex128, *, norm: str = "backward", xp=np) -> FactorProduct:
    """DFT matrix F[j, k] = exp(-2πi jk/N) (``norm="ortho"``: divided by √N) as log2(N)
    butterfly factors followed by the bit-reversal permutation (radix-2 decimation in time):
    ``F_N = B_1 B_2 … B_L P`` with ``B_ℓ = I_{2^(ℓ-1)} ⊗ [[I, Ω], [I, -Ω]]`` (Ω the
    twiddles of size m = N/2^(ℓ-1)). Equals ``scipy.fft.fft(np.eye(N), axis=0)``."""
    N = check_power_of_two(N, "N")
    dt = check_dtype(dtype)
    if dt.kind != "c":
        raise TypeError(f"dtype: the DFT is complex, got {dt}")
    if norm not in ("backward", "ortho"):
        raise ValueError(f"norm must be 'backward' or 'ortho', got {norm!r}")
    L = _levels(N)
    s = 1 / np.sqrt(2) if norm == "ortho" else 1.0
    factors = []
    for lvl in range(1, L + 1):
        a, b, c, d = butterfly_pattern(N, lvl)
        m = 2 * d
        om = np.exp(-2j * np.pi * np.arange(d) / m)
        blk = np.empty((d, 2, 2), dtype=np.complex128)
        blk[:, 0, 0] = 1
        blk[:, 0, 1] = om
        blk[:, 1, 0] = 1
        blk[:, 1, 1] = -om
        blocks = np.broadcast_to(blk * s, (a, d, 2, 2)).astype(dt)
        factors.append(KSFactor(xp.asarray(blocks)))
    factors.append(PermFactor.bit_reversal(N, dtype=dt, xp=xp))
    return FactorProduct(factors)


def random_butterfly(N: int, dtype=np.float64, seed=None, *, xp=np) -> FactorProduct:
    """Product of log2(N) butterfly factors with i.i.d. N(0, 1/2) entries (complex dtypes:
    real and imaginary parts each), scaled so that E‖F x‖² = ‖x‖²."""
    N = check_power_of_two(N, "N")
    dt = check_dtype(dtype)
    rng = check_seed(seed)
    factors = []
    for lvl in range(1, _levels(N) + 1):
        a, b, c, d = butterfly_pattern(N, lvl)
        shape = (a, d, 2, 2)
        blocks = rng.standard_normal(shape)
        if dt.kind == "c":
            blocks = (blocks + 1j * rng.standard_normal(shape)) / np.sqrt(2)
        factors.append(KSFactor(xp.asarray((blocks / np.sqrt(2)).astype(dt))))
    return FactorProduct(factors)


def hadamard_dense(N: int, dtype=np.float64, *, normalized: bool = False):
    """Dense Sylvester–Hadamard reference (NumPy)."""
    N = check_power_of_two(N, "N")
    H = np.array([[1.0]])
    while H.shape[0] < N:
        H = np.block([[H, H], [H, -H]])
    if normalized:
        H = H / np.sqrt(N)
    return H.astype(check_dtype(dtype))


def dft_dense(N: int, dtype=np.complex128, *, norm: str = "backward"):
    """Dense DFT reference (NumPy): exp(-2πi jk/N), divided by √N for ``norm="ortho"``."""
    N = check_power_of_two(N, "N")
    jk = np.outer(np.arange(N), np.arange(N)) % N
    F = np.exp(-2j * np.pi * jk / N)
    if norm == "ortho":
        F = F / np.sqrt(N)
    return F.astype(check_dtype(dtype))
