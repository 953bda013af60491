"""The centroid step of QuicK-means: the K × D centroid matrix as a product of sparse factors.

Two structures, each a small state object with the same three methods:

* :class:`SplincolCentroids` — V = λ S_1 ⋯ S_Q, shapes K × A, A × A, …, A × D (A = min(K, D)),
  every factor ``splincol(s)`` (QuicK-means, Giffon et al. 2021). Initialised once by the
  hierarchical factorization (``rectangular_constraints``, the published preset); each
  Lloyd update runs PALM4MSA on the weighted target diag(√n) U with diag(√n) a fixed first
  factor (``proj.const``), warm-started from the previous factors and λ.
* :class:`ButterflyCentroids` — V = Diag(1/√n) B_1 ⋯ B_L: a mixed-radix butterfly chain of
  Kronecker-sparse factors from K to D (radices: the prime factors of K and D, see
  :func:`butterfly_rect_patterns`; a size with a prime factor > 16 is zero-padded to a
  7-smooth one, with selection factors around the chain), learned from the weighted target with
  :func:`gpufact.factorize.ksfactor` (quasi-optimal block low-rank, no iterations); applied
  by the fused KS kernels.

``update`` keeps the previous factors whenever the new ones fit the weighted target worse,
so the centroid step never increases the weighted error Σ_k n_k ‖u_k − v_k‖², hence never
the K-means objective (given the assignments). The factorizations run on the data's
namespace (K × D matrices only): ``SplincolCentroids`` in the data's precision (float32
data: float32 hierarchical initialisation and PALM, 1.3x faster per update at
Fashion-MNIST K = 256 with the same error to 6 digits, and one set of compiled kernels on
a first run; the acceptance test of an update in float64; float64 from the point where a
long chain leaves float32's range and PALM diverges), ``ButterflyCentroids`` in
float64; ``operator(dtype)`` gives the FactorProduct in the data's dtype.
"""
from __future__ import annotations

import math

import numpy as np

from .. import proj
from .._backend import get_backend
from ..factors import CSRFactor, DiagFactor
from ..factorize import DivergenceError, hierarchical, ksfactor, palm4msa
from ..factorize.hierarchical import rectangular_constraints
from ..product import FactorProduct

__all__ = ["SplincolCentroids", "ButterflyCentroids", "n_factors_auto", "butterfly_rect_patterns"]

#: warm-started PALM stops when its relative error changes by less than this between sweeps
PALM_STAGNATION = 1e-6
#: sweeps of the initial hierarchical factorization, per split and per global pass (at most
#: ``palm_max_iter``). The Lloyd updates refine the factors with warm-started PALM, so the
#: start need not converge: 30 / 15 gave the same objective after 10 Lloyd iterations as
#: 100 / 30, 15-25 % faster fits (9 runs, 3 seeds each on Fashion-MNIST K = 256, Blobs
#: 10 000 x 2 000 K = 256 and digits K = 64, s = 3, 30 sweeps per update: mean objective
#: ratio to K-means 1.3564 / 1.3329 / 1.1807 against 1.3516 / 1.3348 / 1.1823)
HIER_LOCAL_SWEEPS, HIER_GLOBAL_SWEEPS = 30, 15


def n_factors_auto(K: int, D: int) -> int:
    """Q = ⌊log2 max(K, D)⌋, at least 2 (the paper's choice)."""
    return max(2, int(math.floor(math.log2(max(K, D)))))


def _chain_dense(S, xp):
    P = S[0]
    for M in S[1:]:
        P = P @ M
    return P


def _weighted_err2(W, w, V, xp):
    """Σ_k n_k ‖u_k − v_k‖² = ‖W − diag(w) V‖²_F with W = diag(w) U, w = √n."""
    R = W - w[:, None] * V
    return float(xp.vdot(R.ravel(), R.ravel()).real)


class SplincolCentroids:
    """λ S_1 ⋯ S_Q with ``splincol(sparsity)`` factors (see the module docstring)."""

    def __init__(self, C0, sparsity, n_factors, palm_max_iter):
        be = get_backend(C0)
        xp = self.xp = be.xp
        K, D = C0.shape
        # PALM in the data's precision (float32 or float64): C0 has the data's dtype
        self.dtype = xp.float32 if C0.dtype == xp.float32 else xp.float64
        fact, res = rectangular_constraints((K, D), sparsity, n_factors, side="left")
        self.cons = list(fact) + [res[-1]]
        self.palm_max_iter = palm_max_iter
        self.S = []  # no factors yet (the float64 fallback casts what there is)
        F = self._single_or_double(lambda: self._hierarchical(C0, fact, res))
        S = [f.toarray().astype(self.dtype) for f in F.factors]
        lam = float(xp.linalg.norm(S[0].astype(xp.float64)))
        if lam == 0:
            lam = 1.0
        S[0] = S[0] / lam  # (a Python float: the dtype stays)
        self.S, self.lam = S, lam
        self.V = self._dense(S, lam)
        self.n_palm = 0

    def _single_or_double(self, run):
        """run() in ``self.dtype``; if single precision diverges (a long chain of unit-norm
        factors whose product is far below their norms, λ ~ 1e15 and more, can leave its
        range), the factors and every later run switch to float64 and run() is repeated."""
        xp = self.xp
        try:
            return run()
        except DivergenceError:
            if self.dtype != xp.float32:
                raise
            self.dtype = xp.float64
            self.S = [M.astype(xp.float64) for M in self.S]
            return run()

    def _hierarchical(self, C0, fact, res):
        return hierarchical(C0.astype(self.dtype), fact_constraints=fact, res_constraints=res, side="left",
                            n_iter_local=min(self.palm_max_iter, HIER_LOCAL_SWEEPS),
                            n_iter_global=min(self.palm_max_iter, HIER_GLOBAL_SWEEPS), _single_ok=True)

    def _dense(self, S, lam):
        """λ S_1 ⋯ S_Q as a dense float64 array."""
        xp = self.xp
        return lam * _chain_dense([M.astype(xp.float64) for M in S], xp)

    def operator(self, dtype) -> FactorProduct:
        # CSR built from the iterates in PALM's dtype, then cast: the dense -> CSR kernel is
        # compiled for PALM's dtype only, not again for another one on a first run
        S = [self.S[0] * self.lam] + self.S[1:]
        return FactorProduct([CSRFactor(M, check=False) for M in S]).astype(dtype)

    def update(self, U, counts) -> bool:
        """Fit the weighted target diag(√n) U warm-started; returns whether it was accepted."""
        xp = self.xp
        w = xp.sqrt(counts.astype(xp.float64))
        W = w[:, None] * U.astype(xp.float64)
        old = _weighted_err2(W, w, self.V, xp)  # the acceptance test in float64
        hist, st = self._single_or_double(lambda: self._palm(W, w))
        self.n_palm += len(hist)
        S = [xp.array(M, copy=True) for M in st.S[1:]]
        lam = float(st.lam)
        V = self._dense(S, lam)
        if not np.isfinite(lam) or lam == 0 or _weighted_err2(W, w, V, xp) > old:  # λ = 0: no warm start
            return False
        self.S, self.lam, self.V = S, lam, V
        return True

    def _palm(self, W, w):
        """Warm-started PALM4MSA on the weighted target W = diag(w) U in ``self.dtype``."""
        xp = self.xp
        Dw = xp.diag(w).astype(self.dtype)
        cons = [proj.const(Dw)] + self.cons
        _, hist, st = palm4msa(W.astype(self.dtype), cons, self.palm_max_iter, init=[Dw] + self.S,
                               lambda_init=self.lam, stagnation=PALM_STAGNATION, _return_state=True)
        return hist, st


def _prime_factors(n: int) -> list:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


#: sizes whose largest prime factor exceeds this are zero-padded to the next 7-smooth size
MAX_RADIX = 16


def smooth_size(n: int) -> int:
    """n itself if its prime factors are all <= MAX_RADIX, else the smallest m > n whose
    prime factors are all <= 7."""
    if max(_prime_factors(n) or [1]) <= MAX_RADIX:
        return n
    m = n
    while max(_prime_factors(m)) > 7:
        m += 1
    return m


def butterfly_rect_patterns(K: int, D: int):
    """KS patterns (product order) of a mixed-radix butterfly from K rows to D columns: the
    row radices b_ℓ are the prime factors of K, the column radices c_ℓ those of D (1 where one
    side has fewer), L = max(#factors) factors (a, b, c, d) with a = Π_{i<ℓ} c_i and
    d = Π_{i>ℓ} b_i (a chainable sequence; blocks b_ℓ × c_ℓ). Powers of two give the radix-2
    butterfly; 64 × 784 = 2^6 × 2^4 7^2 needs no padding."""
    b, c = _prime_factors(K), _prime_factors(D)
    L = max(len(b), len(c), 1)
    b = b + [1] * (L - len(b))
    c = c + [1] * (L - len(c))
    return [(int(np.prod(c[:l])), b[l], c[l], int(np.prod(b[l + 1:]))) for l in range(L)]


def _select(rows, cols, vals, shape, xp, be):
    """CSR (shape) with one entry vals[i] at (rows[i], cols[i]) (rows increasing)."""
    sp = be.sparse
    n = shape[0]
    indptr = xp.zeros(n + 1, dtype=xp.int32)
    indptr[xp.asarray(rows) + 1] = 1
    indptr = xp.cumsum(indptr).astype(xp.int32)
    return sp.csr_matrix((vals, xp.asarray(cols, dtype=xp.int32), indptr), shape=shape)


class ButterflyCentroids:
    """Diag(1/√n) B_1 ⋯ B_L, mixed-radix butterfly (see the module docstring)."""

    def __init__(self, C0):
        be = self.be = get_backend(C0)
        xp = self.xp = be.xp
        K, D = C0.shape
        self.K, self.D = K, D
        self.Kp, self.Dp = smooth_size(K), smooth_size(D)
        self.patterns = butterfly_rect_patterns(self.Kp, self.Dp)
        self._fit(C0.astype(xp.float64), xp.ones(K, dtype=xp.float64))

    def _fit(self, W, w):
        """Chain for the weighted target W = diag(w) U (K × D); returns (chain, w, V)."""
        xp = self.xp
        K, D = self.K, self.D
        Wp = W
        if (self.Kp, self.Dp) != (K, D):
            Wp = xp.zeros((self.Kp, self.Dp), dtype=xp.float64)
            Wp[:K, :D] = W
        chain = ksfactor(Wp, self.patterns)
        V = chain.toarray()[:K, :D] / w[:, None]
        self.chain, self.w, self.V = chain, w, V

    def operator(self, dtype) -> FactorProduct:
        xp, be = self.xp, self.be
        K, D, Kp, Dp = self.K, self.D, self.Kp, self.Dp
        ar_k, ar_d = xp.arange(K), xp.arange(D)
        inv = (1.0 / self.w).astype(dtype)
        left = DiagFactor(inv) if Kp == K else CSRFactor(_select(ar_k, ar_k, inv, (K, Kp), xp, be), check=False)
        right = [] if Dp == D else [CSRFactor(_select(ar_d, ar_d, xp.ones(D, dtype=dtype), (Dp, D), xp, be),
                                              check=False)]
        return FactorProduct([left] + self.chain.astype(dtype).factors + right)

    def update(self, U, counts) -> bool:
        xp = self.xp
        w = xp.sqrt(counts.astype(xp.float64))
        W = w[:, None] * U
        old = _weighted_err2(W, w, self.V, xp)
        prev = (self.chain, self.w, self.V)
        self._fit(W, w)
        if _weighted_err2(W, w, self.V, xp) > old:
            self.chain, self.w, self.V = prev
            return False
        return True
