"""Norms and scalings that hold over a dtype's whole range (NumPy or CuPy, same code).

A sum of squares overflows once entries pass sqrt(max) (1.8e19 in float32) and underflows
below sqrt(tiny) (1.1e-19 in float32): ``np.linalg.norm`` of a float32 vector of 1e30 is inf,
of 1e-30 is 0. As LAPACK's ``xNRM2`` / ``xLASSQ`` do, these helpers scale by the largest
magnitude before squaring. The solvers instead divide their input once by a power of two
(exact: only the exponent changes) when its magnitude lies outside the range where their
squares are safe, and multiply the result back (:func:`range_scale`), or always, which
also makes them scale-equivariant (:func:`pow2_scale`).
"""
from __future__ import annotations

import numpy as np


def safe_norm(x, xp, axis=None, keepdims: bool = False):
    """2-norm of ``x`` (Frobenius over all entries when ``axis`` is None) without overflow or
    underflow in the squares: max|x| · ‖x / max|x|‖. A real array of x's precision (0-d for
    ``axis=None``); 0 for zero (or empty) input, inf/NaN propagate. Three passes over x."""
    a = xp.abs(x)
    if a.size == 0:
        return xp.zeros(() if axis is None else np.delete(a.shape, axis), dtype=a.dtype)
    m = xp.max(a, axis=axis, keepdims=True)
    d = xp.where((m > 0) & xp.isfinite(m), m, xp.ones((), dtype=a.dtype))
    r = a / d
    out = xp.sqrt(xp.sum(r * r, axis=axis, keepdims=True)) * d
    out = xp.where(xp.isfinite(m) & (m > 0), out, m)  # 0 stays 0; inf/NaN come through
    if not keepdims:
        out = out.reshape(()) if axis is None else xp.squeeze(out, axis=axis)
    return out


def div_real(x, d, xp):
    """x / d for d real and positive (an array broadcasting against x); a complex x is divided
    part by part: NumPy's quotient by a complex number of zero imaginary part forms 1/d in the
    array's precision, which overflows for subnormal d (inf + NaN·i)."""
    if x.dtype.kind != "c":
        return (x / d).astype(x.dtype, copy=False)
    re = (x.real / d).astype(x.dtype)
    im = (x.imag / d).astype(x.dtype)
    return re + im * xp.asarray(1j, dtype=x.dtype)


def unit_scale(x, xp, axis=None):
    """x / ‖x‖ (2-norm over ``axis``, Frobenius when None), zero staying zero, right anywhere
    in the dtype's range, even where ‖x‖ itself is not representable (float32 entries of 3e38
    have a norm above float32's max): (x / m) / ‖x / m‖ with m = max |x|. A new array of x's
    dtype; x finite."""
    if x.size == 0:
        return x.copy()
    m = xp.max(xp.abs(x), axis=axis, keepdims=True)
    y = div_real(x, xp.where(m > 0, m, xp.ones((), dtype=m.dtype)), xp)
    a = xp.abs(y)  # <= 1: its squares stay in range
    n = xp.sqrt(xp.sum(a * a, axis=axis, keepdims=True))
    return div_real(y, xp.where(n > 0, n, xp.ones((), dtype=n.dtype)), xp)


class SumSquares:
    """Running ‖·‖² over chunks as (scale, sum of (|x| / scale)²) on the host in float64
    (LAPACK's xLASSQ update): never overflows or underflows while the norm itself is finite."""

    def __init__(self):
        self.scale = 0.0
        self.ssq = 1.0

    def add(self, x, xp) -> None:
        a = xp.abs(x)
        if a.size == 0:
            return
        m = float(xp.max(a))
        if m == 0.0:
            return
        if not np.isfinite(m):
            self.scale, self.ssq = m, 1.0
            return
        s = float(xp.sum((a / a.dtype.type(m)) ** 2))
        if m > self.scale:
            self.ssq = self.ssq * (self.scale / m) ** 2 + s
            self.scale = m
        else:
            self.ssq += s * (m / self.scale) ** 2

    def norm(self) -> float:
        return float(self.scale * np.sqrt(self.ssq))


def pow2_scale(A, xp) -> float:
    """The power of two s = 2^⌊log2 max|A|⌋ (1.0 for a zero or empty A): A / s has its
    largest magnitude in [1, 2), and dividing by s changes only exponents (exact unless
    entries fall below the smallest normal number relative to max|A|). A solver that runs
    on A / s is equivariant: the same iterates for c·A, c any power of two. One host read."""
    if A.size == 0:
        return 1.0
    mu = float(xp.max(xp.abs(A)))
    if not np.isfinite(mu) or mu == 0.0:
        return 1.0
    return float(np.ldexp(1.0, int(np.frexp(mu)[1]) - 1))


def range_scale(A, xp) -> float:
    """:func:`pow2_scale` where A's squares would leave the range of its precision, else 1.0
    (no copy needed): s = 1 when 2^(emin/4) <= max|A| <= 2^(emax/4) (float32: 4.7e-10 ..
    4.3e9; float64: 1.7e-77 .. 1.2e77). For algorithms already scale-equivariant in exact
    arithmetic (SVD-based ones) whose Gram matrices and squared errors need the range."""
    fi = np.finfo(A.real.dtype)
    s = pow2_scale(A, xp)
    lo, hi = 2.0 ** (fi.minexp // 4), 2.0 ** (fi.maxexp // 4)
    return 1.0 if lo <= s <= hi else s
