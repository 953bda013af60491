"""Hierarchical factorization (Le Magoarou & Gribonval 2016): peel one sparse factor at a time.

From the left: T_0 = A; at level ℓ = 1 … J−1 split the residual T_{ℓ−1} ≈ S_ℓ T_ℓ with a
2-factor PALM (S_ℓ under its target constraint, T_ℓ under a looser residual constraint that
tightens level by level), then run a global PALM over (S_1, …, S_ℓ, T_ℓ) against A, warm
started. The last residual is the last factor. From the right the roles are mirrored
(A ≈ T_ℓ S_{J−ℓ+1} ⋯ S_J).
"""
from __future__ import annotations

import math

import numpy as np

from .._backend import get_backend
from .._numeric import div_real, pow2_scale, safe_norm
from .._validation import check_bool, check_int, check_matrix, check_power_of_two
from .. import proj
from ..product import scale_in_range
from .palm import (DivergenceError, _Palm, _init_factors, _run, build_product, check_constraints,
                   check_every_for, precision_floor)

__all__ = ["hierarchical", "hadamard_constraints", "rectangular_constraints"]

_MIRROR = {"right-to-left": "left-to-right", "left-to-right": "right-to-left"}


def hadamard_constraints(N: int, *, normalized: bool = True):
    """FAµST's square preset: J = log2 N factors with 2 nonzeros per row and column
    (``splincol(2)``), residual ℓ with N / 2^ℓ per row and column."""
    N = check_power_of_two(N, "N", min_value=4)
    J = N.bit_length() - 1
    fact = [proj.splincol((N, N), 2, normalized=normalized) for _ in range(J - 1)]
    res = [proj.splincol((N, N), N >> lvl, normalized=normalized) for lvl in range(1, J)]
    return fact, res


def rectangular_constraints(shape, sparsity: int = 2, n_factors: int | None = None, *,
                            normalized: bool = True, side: str = "left"):
    """QuicK-means' preset for a K × D matrix (peeled from ``side``): Q factors of shapes
    K × A, A × A, …, A × D with A = min(K, D), Q = ⌊log2 max(K, D)⌋ by default (at least 2);
    factors ``splincol(sparsity)``; residual ℓ ``splincol(max(sparsity, A / 2^ℓ))`` (loosest first).

    Returns (fact_constraints, res_constraints) in peeling order.
    """
    try:
        K, D = (check_int(v, f"shape[{i}]", min_value=1) for i, v in enumerate(shape))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"shape must be a pair of positive ints: {exc}") from None
    s = check_int(sparsity, "sparsity", min_value=1)
    A = min(K, D)
    Q = max(2, int(math.floor(math.log2(max(K, D))))) if n_factors is None else check_int(n_factors, "n_factors", min_value=2)
    if s > A:
        raise ValueError(f"sparsity must be <= min(K, D) = {A}, got {s}")
    shapes = [(K, A)] + [(A, A)] * (Q - 2) + [(A, D)]
    if side == "left":
        peel = shapes[:-1]
        res_shapes = [(A, D)] * (Q - 1)
    elif side == "right":
        peel = shapes[1:][::-1]
        res_shapes = [(K, A)] * (Q - 1)
    else:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    fact = [proj.splincol(sh, min(s, max(sh)), normalized=normalized) for sh in peel]
    res = []
    for lvl, sh in enumerate(res_shapes, start=1):
        k = max(s, A >> lvl)
        res.append(proj.splincol(sh, min(k, max(sh)), normalized=normalized))
    return fact, res


def hierarchical(A, preset: str | None = None, *, fact_constraints=None, res_constraints=None,
                 side: str = "left", sparsity: int = 2, n_iter_local: int = 400, n_iter_global: int = 50,
                 tol: float | None = None, local_tol: float | None = None, stagnation: float | None = 1e-6,
                 order: str = "right-to-left", step_eps: float = 1e-3, norm_iters: int = 3,
                 check_every: int | None = None, accelerate: bool = True, adaptive_step: bool = True,
                 callback=None, progress: bool = False,
                 return_history: bool = False, _single_ok: bool = False):
    """Hierarchical factorization A ≈ S_1 ⋯ S_J (returned as a FactorProduct, λ folded in).

    Parameters
    ----------
    A : (M, N) NumPy or CuPy array, finite, non-empty.
    preset : "hadamard" (square, N a power of two; log2 N factors, 2 nonzeros per row and
        column, exact on the Hadamard matrix) or "rectangular" (see
        :func:`rectangular_constraints`, with ``sparsity``). Or give both
        ``fact_constraints`` (J − 1 constraints, in peeling order) and ``res_constraints``
        (J − 1 residual constraints).
    side : "left" (peel S_1 first) or "right" (peel S_J first).
    n_iter_local, n_iter_global : PALM sweeps of each 2-factor split and each global pass
        (0 skips the global passes).
    tol : stop a global pass when the relative error reaches ``tol``; ``local_tol`` likewise
        for the splits (both default to 1e-12: exact factorizations stop as soon as they
        are reached); ``stagnation`` (default 1e-6)
        stops a pass whose relative error changes by less than that between checks.
    check_every : read the error on the host every this many sweeps (default: every sweep
        on the CPU, where it is free, every 5 on the GPU, where each read is a sync).
    accelerate : inertial (Nesterov-weighted) steps with adaptive restart in the 2-factor
        splits; several times fewer sweeps for the same error (the global passes stay plain,
        monotone PALM).
    adaptive_step : safeguarded longer steps in the global passes (see :func:`palm4msa`).
    callback : ``callback(level, iteration, rel_error)`` for the global passes.
    return_history : also return a list of (level, rel_error after the level).

    ``F.rel_error`` holds ‖A − F‖_F / ‖A‖_F. Single-precision inputs are factored in double
    precision and the factors returned in single precision. A is factored as A / 2^k
    (k = ⌊log2 max|A|⌋, exact; λ scaled back), so the run is the same at every magnitude
    of A within its dtype's range; tolerances are floored at 4 eps.
    """
    be = get_backend(A)
    xp = be.xp
    A = check_matrix(A, "A", be)
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    n_iter_local = check_int(n_iter_local, "n_iter_local", min_value=1)
    n_iter_global = check_int(n_iter_global, "n_iter_global", min_value=0)
    check_every = check_every_for(check_every, be)
    accelerate = check_bool(accelerate, "accelerate")
    adaptive_step = check_bool(adaptive_step, "adaptive_step")
    progress = check_bool(progress, "progress")
    return_history = check_bool(return_history, "return_history")
    if preset is not None:
        if fact_constraints is not None or res_constraints is not None:
            raise ValueError("give either preset or fact_constraints/res_constraints, not both")
        if preset == "hadamard":
            if A.shape[0] != A.shape[1]:
                raise ValueError(f"preset 'hadamard' needs a square A, got shape {tuple(A.shape)}")
            try:
                check_power_of_two(A.shape[0], "N", min_value=4)
            except ValueError:
                raise ValueError(f"preset 'hadamard' needs N a power of two >= 4, got A of shape {tuple(A.shape)}") from None
            fact_constraints, res_constraints = hadamard_constraints(A.shape[0])
        elif preset == "rectangular":
            fact_constraints, res_constraints = rectangular_constraints(A.shape, sparsity, side=side)
        else:
            raise ValueError(f"preset must be 'hadamard', 'rectangular' or None, got {preset!r}")
    if fact_constraints is None or res_constraints is None:
        raise ValueError("give a preset or both fact_constraints and res_constraints")
    if len(fact_constraints) != len(res_constraints) or len(fact_constraints) < 1:
        raise ValueError("fact_constraints and res_constraints must be non-empty lists of equal length")
    # the final chain must fit A: check it before any iteration
    final = list(fact_constraints) + [res_constraints[-1]] if side == "left" else \
        [res_constraints[-1]] + list(fact_constraints)[::-1]
    check_constraints(final, A.shape, "constraints")
    for lvl in range(len(fact_constraints)):
        pair = [fact_constraints[lvl], res_constraints[lvl]] if side == "left" else [res_constraints[lvl], fact_constraints[lvl]]
        if side == "left":
            expect = (A.shape[0] if lvl == 0 else res_constraints[lvl - 1].shape[0], A.shape[1])
        else:
            expect = (A.shape[0], A.shape[1] if lvl == 0 else res_constraints[lvl - 1].shape[1])
        check_constraints(pair, expect, f"constraints of level {lvl + 1}")

    out_dtype = A.dtype
    # _single_ok (private, QuickMeans' centroids: no exact ties to fear): keep single precision
    if A.dtype in (np.float32, np.complex64) and not _single_ok:
        # computed in double precision, returned in single: in float32 the residuals of
        # structured matrices (Hadamard) come out with exactly equal magnitudes, and the
        # index-ordered support choices on those ties trap PALM (error stuck near 0.35)
        A = A.astype(np.float64 if A.dtype == np.float32 else np.complex128)
    # factor A / s, s = 2^⌊log2 max|A|⌋ (exact; λ scaled back at the end): in range at any
    # magnitude, and the same run at every scale of A
    scale = pow2_scale(A, xp)
    if scale != 1.0:
        A = div_real(A, A.real.dtype.type(scale), xp)  # complex: part by part (exact)
    tol, local_tol = precision_floor(tol, A.dtype), precision_floor(local_tol, A.dtype)
    stagnation = precision_floor(stagnation, A.dtype)
    eps_default = 1e-12
    tol = eps_default if tol is None else tol
    local_tol = eps_default if local_tol is None else local_tol
    J = len(fact_constraints) + 1
    history = []
    peeled = []  # dense factors S in peeling order
    lam = xp.asarray(1.0, dtype=A.dtype)
    T = A
    levels = range(1, J)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=J - 1, desc="hierarchical", leave=False)
    try:
        for lvl in levels:
            Pf, Pr = fact_constraints[lvl - 1], res_constraints[lvl - 1]
            # 1. split the residual: T ≈ S T' (left) or T' S (right)
            pair = [Pf, Pr] if side == "left" else [Pr, Pf]
            # the residual is updated first (from zero), the new factor starts at identity:
            # mirrored sweep order when peeling from the right
            local_order = order if side == "left" else _MIRROR[order]
            init = _init_factors(pair, "default", T, xp, local_order)
            st = _Palm(T, pair, init, xp.asarray(1.0, dtype=A.dtype), xp, local_order, step_eps, True, norm_iters)
            st.momentum = accelerate
            _run(st, n_iter_local, local_tol, stagnation, check_every, None, False, be, desc=f"split {lvl}")
            S_new, T_new = (st.S[0], st.S[1]) if side == "left" else (st.S[1], st.S[0])
            lam = lam * st.lam
            # 2. global pass over all factors so far against A, warm started
            peeled.append(S_new)
            chain = peeled + [T_new] if side == "left" else [T_new] + peeled[::-1]
            cons = list(fact_constraints[:lvl]) + [Pr] if side == "left" else [Pr] + list(fact_constraints[:lvl])[::-1]
            if n_iter_global > 0:
                g = _Palm(A, cons, chain, lam, xp, order, step_eps, True, norm_iters, adaptive_step=adaptive_step)
                cb = (lambda it, e, _l=lvl: callback(_l, it, e)) if callback is not None else None
                hist = _run(g, n_iter_global, tol, stagnation, check_every, cb, False, be, desc=f"global {lvl}")
                chain, lam = g.S, g.lam
                rel = hist[-1]
            else:
                rel = None
            if side == "left":
                peeled, T = list(chain[:-1]), chain[-1]
            else:
                peeled, T = list(chain[1:][::-1]), chain[0]
            if rel is None:
                rel = _rel_error(A, lam, chain, xp)
            history.append((lvl, rel))
            if bar is not None:
                bar.update()
                bar.set_postfix(rel_error=f"{rel:.3e}")
    finally:
        if bar is not None:
            bar.close()
    F = build_product(chain, lam, cons, xp)
    F.rel_error = history[-1][1]
    if F.dtype != out_dtype:  # the error after rounding, measured on the scaled problem
        F = F.astype(out_dtype)
        F.rel_error = float(safe_norm(F.toarray() - A, xp) / safe_norm(A, xp))
    if scale != 1.0:
        rel = F.rel_error
        F = scale_in_range(F, 1.0, int(np.frexp(scale)[1]) - 1)  # scale = 2^k; spread if needed
        F.rel_error = rel
    if return_history:
        return F, history
    return F


def _rel_error(A, lam, chain, xp):
    P = chain[0]
    for S in chain[1:]:
        P = P @ S
    e = float(safe_norm(A - lam * P, xp) / safe_norm(A, xp))
    if not np.isfinite(e):
        raise DivergenceError("hierarchical factorization produced non-finite factors")
    return e
