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


PASS_FIELDS = 7  # (R, ld_0, ld_1, ld_2, off_0, off_1, off_2)


def butterfly_passes(log2ds, offsets, max_radix_log2: int = 3) -> np.ndarray:
    """Group a chain of square butterfly factors into radix-2^R passes (R <= max_radix_log2).

    Factor j (application order) pairs rows i and i + 2^ld_j (bit ld_j of i clear) with its
    2x2 block number p = i with bit ld_j removed, at ``offsets[j] + 4 p``. Consecutive factors
    acting on distinct bits commute with nothing else: the 2^R rows that differ only in those
    bits form a closed group, so one pass loads each group once, applies its R factors in
    registers and stores it once (R-fold fewer shared-memory round trips and barriers).

    Returns int64 (P, 7): (R, ld_0, ld_1, ld_2, off_0, off_1, off_2) per pass, levels in
    application order, unused slots -1 / 0. Greedy: a pass ends at max_radix_log2 factors or
    before a factor whose bit is already in it.
    """
    if not 1 <= max_radix_log2 <= 3:
        raise ValueError(f"max_radix_log2 must be 1, 2 or 3, got {max_radix_log2}")
    passes = []
    cur = []
    for ld, off in zip(log2ds, offsets):
        if len(cur) == max_radix_log2 or any(ld == c[0] for c in cur):
            passes.append(cur)
            cur = []
        cur.append((int(ld), int(off)))
    if cur:
        passes.append(cur)
    out = np.zeros((len(passes), PASS_FIELDS), dtype=np.int64)
    out[:, 1:4] = -1
    for p, group in enumerate(passes):
        out[p, 0] = len(group)
        for r, (ld, off) in enumerate(group):
            out[p, 1 + r] = ld
            out[p, 4 + r] = off
    return out
