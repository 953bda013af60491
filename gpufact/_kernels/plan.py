"""Execution plans for chains of Kronecker-sparse factors (shared by CPU and GPU paths)."""
from __future__ import annotations

import numpy as np

KIND_GENERIC, KIND_RADIX2 = 0, 1


def make_plan(patterns):
    """Plan for KS factors given in *application order* (first applied first).

    patterns : sequence of (a, b, c, d).  Returns (plan int64 (S, 6), offsets, maxdim) where
    ``offsets[j]`` is where factor j's blocks start in the concatenated weight array and
    ``maxdim`` the largest dimension met along the chain.
    """
    offsets = []
    steps = []
    off = 0
    maxdim = 0
    for a, b, c, d in patterns:
        offsets.append(off)
        kind = KIND_RADIX2 if (b == 2 and c == 2) else KIND_GENERIC
        steps.append((kind, a, b, c, d, off))
        off += a * b * c * d
        maxdim = max(maxdim, a * b * d, a * c * d)
    return np.asarray(steps, dtype=np.int64).reshape(-1, 6), offsets, maxdim
