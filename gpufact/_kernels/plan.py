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


PASS_MAX_RADIX_LOG2 = 6
PASS_FIELDS = 1 + 2 * PASS_MAX_RADIX_LOG2  # (R, ld_0 .. ld_5, off_0 .. off_5)


def butterfly_passes(log2ds, offsets, max_radix_log2: int = 3) -> np.ndarray:
    """Group a chain of square butterfly factors into radix-2^R passes (R <= max_radix_log2).

    Factor j (application order) pairs rows i and i + 2^ld_j (bit ld_j of i clear) with its
    2x2 block number p = i with bit ld_j removed, at ``offsets[j] + 4 p``. Consecutive factors
    acting on distinct bits form a closed group: the 2^R rows that differ only in those bits.
    One pass loads each group once, applies its R factors in registers and stores it once.

    Returns int64 (P, 13): (R, ld_0 .. ld_5, off_0 .. off_5) per pass, levels in application
    order, unused slots -1 / 0. Greedy: a pass ends at max_radix_log2 factors or before a
    factor whose bit is already in it. Read by ``bf_chain_apply_radix`` and ``bf_pass_cols``
    (kernels/ks_apply.cu) and modelled by ``reference.bf_passes_apply``.
    """
    if not 1 <= max_radix_log2 <= PASS_MAX_RADIX_LOG2:
        raise ValueError(f"max_radix_log2 must be in 1 .. {PASS_MAX_RADIX_LOG2}, got {max_radix_log2}")
    passes = []
    cur = []
    for ld, off in zip(log2ds, offsets):
        if len(cur) == max_radix_log2 or any(ld == c[0] for c in cur):
            passes.append(cur)
            cur = []
        cur.append((int(ld), int(off)))
    if cur:
        passes.append(cur)
    R_max = PASS_MAX_RADIX_LOG2
    out = np.zeros((len(passes), PASS_FIELDS), dtype=np.int64)
    out[:, 1:1 + R_max] = -1
    for p, group in enumerate(passes):
        out[p, 0] = len(group)
        for r, (ld, off) in enumerate(group):
            out[p, 1 + r] = ld
            out[p, 1 + R_max + r] = off
    return out


def radix_passes(plan, max_radix_log2: int = 3) -> np.ndarray:
    """Group the steps of a :func:`make_plan` plan into the passes of the CPU apply.

    Returns int64 (P, 5) rows ``(R, j, l_0, l_1, l_2)``: R = 0, generic step j (one sweep,
    tile to tile); R >= 1, steps j .. j + R - 1 applied as radix-2^R groups in place
    (:mod:`gpufact._kernels.cpu_radix`), l_k = log2 of step j + k's stride d when R >= 2
    (-1 in unused slots). Consecutive butterfly steps (kind 1) combine when
    they have one size (2·a·d) and distinct power-of-two strides d: every group of 2^R rows
    is then closed under all R factors. Greedy, then balanced: a run of L combinable steps
    takes ceil(L / max_radix_log2) passes of near-equal radix. A butterfly step that cannot
    combine (odd stride, another size) is a pass of its own (R = 1).
    """
    if not 1 <= max_radix_log2 <= 3:
        raise ValueError(f"max_radix_log2 must be 1, 2 or 3, got {max_radix_log2}")
    runs = []
    for j, (kind, a, b, c, d, _) in enumerate(np.asarray(plan).tolist()):
        if kind != KIND_RADIX2:
            runs.append([0, j])
            continue
        pow2 = d & (d - 1) == 0
        last = runs[-1] if runs else None
        if pow2 and last is not None and last[0] >= 1 and last[3] is not None and last[2] == 2 * a * d \
                and d not in last[3]:
            last[0] += 1
            last[3].add(d)
        else:  # a new run; one that starts with an odd stride stays a single radix-2 pass
            runs.append([1, j, 2 * a * d, {d} if pow2 else None])
    out = []
    for run in runs:
        L, j = run[0], run[1]
        if L == 0:
            out.append((0, j, -1, -1, -1))
            continue
        P = -(-L // max_radix_log2)
        for p in range(P):
            R = L // P + (p < L % P)
            lds = [int(plan[j + k][4]).bit_length() - 1 if R > 1 else -1 for k in range(R)]
            out.append((R, j, *(lds + [-1] * (3 - R))))
            j += R
    return np.asarray(out, dtype=np.int64).reshape(-1, 5)
