"""The cosine nonlinearity of random-feature maps on a projected batch, on either backend."""
from __future__ import annotations

import numpy as np


def cos_features(P, offset, scale: float, be):
    """Features of projections P (n, m) of dtype float32/float64: ``scale · cos(P + offset)``
    (offset (m,), in place in P) or, with ``offset=None``, ``scale · [cos P, sin P]`` (n, 2m,
    a new array). Returns an array of P's namespace and dtype. CPU: one parallel Numba pass
    (:mod:`gpufact._kernels.cpu_features`); GPU: CuPy elementwise ops."""
    dt = np.dtype(P.dtype)
    s = dt.type(scale)
    n, m = P.shape
    if not be.is_gpu:
        from .._kernels import cpu_features as k

        f32 = dt == np.float32
        P = np.ascontiguousarray(P)
        if offset is not None:
            (k.cos_features_f32 if f32 else k.cos_features_f64)(P, np.ascontiguousarray(offset), s)
            return P
        Y = np.empty((n, 2 * m), dtype=dt)
        (k.sincos_features_f32 if f32 else k.sincos_features_f64)(P, Y, s)
        return Y
    xp = be.xp
    if offset is not None:
        P += offset
        xp.cos(P, out=P)
        P *= s
        return P
    Y = xp.empty((n, 2 * m), dtype=dt)
    xp.cos(P, out=Y[:, :m])
    xp.sin(P, out=Y[:, m:])
    Y *= s
    return Y
