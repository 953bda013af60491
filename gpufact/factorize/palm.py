"""PALM4MSA (Le Magoarou & Gribonval, IEEE JSTSP 2016): A ≈ λ S_1 ⋯ S_J, S_j ∈ E_j.

One sweep updates every factor once (right-to-left by default): with L = S_1⋯S_{j−1} and
R = S_{j+1}⋯S_J,

    G = λ Lᴴ (λ L S_j R − A) Rᴴ,   c = (1 + ε) λ² ‖L‖₂² ‖R‖₂²,   S_j ← P_{E_j}(S_j − G / c),

then λ ← Re⟨A, P⟩ / ‖P‖²_F with P = S_1⋯S_J. The objective ½‖A − λP‖² never increases.
By default each update first tries a longer step, c / s with s ∈ {2, 4, 8} adapted per
factor, and keeps it only if an exact expansion of the objective shows the sufficient
decrease ½ ε L ‖ΔS‖² that the 1/c step guarantees; otherwise it takes the 1/c step
(``adaptive_step=False``: always the 1/c step, FAµST's PALM4MSA).
Spectral norms come from power iterations warm-started across sweeps (never an SVD).
Factors are dense arrays of A's namespace while iterating (NumPy or CuPy, same code), used
in products as CSR matrices whenever they are sparse (SpMM / SpGEMM; on the CPU Numba
kernels that read either memory order), so a sweep costs O(nnz · n) rather than O(n³) on
sparse constraints; partial products are kept (prefix products per sweep, the suffix
accumulated), about 5 J products per sweep. When A is wide (M × N with every inner
dimension n_j ≤ 2N/3, e.g. QuickMeans' K × D centroids with K < D) the right-to-left sweep
carries the suffix R as its Gram pair (R Rᴴ, A Rᴴ), updated by two sparse products per
factor: the gradient λ Lᴴ (λ L S_j (R Rᴴ) − A Rᴴ) costs products of n_j columns
instead of N, the safeguarded step's ‖Δ R‖² = Re⟨Δ, Δ R Rᴴ⟩ is exact, and λ and the error
come from ⟨S_1, A Rᴴ⟩ and ⟨S_1, S_1 R Rᴴ⟩ (the product is formed instead in single
precision, on the GPU, and below a relative squared error of 1e-8, where the expansion
would cancel digits). Constant factors (``proj.const``) are not updated. Convergence tests
read one scalar per check.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _kernels
from .._backend import get_backend
from .._numeric import div_real, pow2_scale
from .._validation import NonFiniteInput, check_bool, check_int, check_matrix
from ..factors import CSRFactor, DenseFactor, KSFactor
from ..factors.csr import dense_to_csr
from ..product import FactorProduct, scale_in_range
from ..proj import Constraint, const

__all__ = ["palm4msa", "DivergenceError", "check_constraints"]


def precision_floor(tol, dtype):
    """A relative tolerance the working precision can meet: at least 4 eps of ``dtype``
    (a ``tol=1e-13`` would never stop a float32 run); None stays None."""
    if tol is None:
        return None
    return max(float(tol), 4 * float(np.finfo(np.dtype(dtype)).eps))


def check_every_for(check_every, be) -> int:
    """Sweeps between error reads: ``check_every`` validated, or by default 1 on the CPU
    (free) and 5 on the GPU (each read syncs)."""
    if check_every is None:
        return 5 if be.is_gpu else 1
    return check_int(check_every, "check_every", min_value=1)


class DivergenceError(FloatingPointError):
    """PALM produced non-finite values or an exploding error (a step-size problem)."""


def check_constraints(constraints, shape, name="constraints"):
    """Validate a list of constraints chaining from shape[0] to shape[1]."""
    if not isinstance(constraints, (list, tuple)) or len(constraints) == 0:
        raise ValueError(f"{name} must be a non-empty list of projections")
    for j, P in enumerate(constraints):
        if not isinstance(P, Constraint):
            raise TypeError(f"{name}[{j}] must be a gpufact.proj constraint, got {type(P).__name__}")
    if constraints[0].shape[0] != shape[0] or constraints[-1].shape[1] != shape[1]:
        raise ValueError(f"{name} chain from {constraints[0].shape[0]} to {constraints[-1].shape[1]} "
                         f"but A has shape {tuple(shape)}")
    for j in range(len(constraints) - 1):
        if constraints[j].shape[1] != constraints[j + 1].shape[0]:
            raise ValueError(f"{name}[{j}] has shape {constraints[j].shape} and {name}[{j + 1}] has shape "
                             f"{constraints[j + 1].shape}: they do not chain")


_STEP_GROW, _STEP_MAX = 2.0, 8.0  # adaptive steps: 1/c · scale, scale in {1, 2, 4, 8}
_SMALL_NORM_SIZE = 1 << 12  # power iterations on matrices up to this size: one Numba call
_SPARSE_DENSITY = 0.2  # iterates and partial products sparser than this use SpMM/SpGEMM
_SPARSE_MIN_SIZE = 1 << 18  # ... if they have at least this many entries (else BLAS wins; measured)
# smaller matrices use SpMM when much sparser: 256 x 256 splincol(3) (density 1.5 %) times a
# dense 256 x 784, one thread: SpMM 0.26 ms, BLAS 2.3 ms; L @ S (256^3): 0.26 ms vs 0.75 ms.
# On the CPU the Numba SpMM (no copies) moves the break-even up: dense 256 x 256 times a
# 256 x 784 CSR, one thread: 0.55 / 1.2 / 1.5 / 2.9 ms at density 4 / 8 / 12 / 20 %, BLAS 2.3 ms
_SPARSE_DENSITY_SMALL = 0.04
_SPARSE_DENSITY_SMALL_CPU = 0.1
_SPARSE_MIN_SIZE_SMALL = 1 << 12


def _sparse_enough(nnz, size, gpu=True) -> bool:
    """Whether a matrix of ``size`` entries, ``nnz`` of them nonzero, is cheaper as CSR
    (``gpu=False``: the CPU's break-even of the Numba products)."""
    if size >= _SPARSE_MIN_SIZE:
        return nnz < _SPARSE_DENSITY * size
    small = _SPARSE_DENSITY_SMALL if gpu else _SPARSE_DENSITY_SMALL_CPU
    return size >= _SPARSE_MIN_SIZE_SMALL and nnz < small * size


def _max_sparse_nnz(size, gpu=True) -> int:
    """The most nonzeros a matrix of ``size`` entries may have for :func:`_sparse_enough`
    (-1: none)."""
    if size >= _SPARSE_MIN_SIZE:
        return math.ceil(_SPARSE_DENSITY * size) - 1
    if size < _SPARSE_MIN_SIZE_SMALL:
        return -1
    return math.ceil((_SPARSE_DENSITY_SMALL if gpu else _SPARSE_DENSITY_SMALL_CPU) * size) - 1


class _CSR:
    """A host CSR matrix (``format`` "csr") or the transpose of one ("csc": the arrays are
    the CSR arrays of its transpose, as scipy's CSC), for PALM's products on the CPU: plain
    arrays, no validation. scipy.sparse checks and re-derives its index arrays on every
    construction, transpose and conjugate (20-30 us each), which cost a fifth of a sweep on
    small factors (64 x 64); these views cost a Python object. Indices int32 or int64,
    canonical (sorted, no explicit zeros: :func:`gpufact._kernels.cpu_solvers.dense_to_csr_arrays`)."""

    __slots__ = ("data", "indices", "indptr", "shape", "format")

    def __init__(self, data, indices, indptr, shape, format="csr"):
        self.data, self.indices, self.indptr = data, indices, indptr
        self.shape, self.format = shape, format

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def nnz(self) -> int:
        return self.data.shape[0]

    @property
    def T(self):
        return _CSR(self.data, self.indices, self.indptr, self.shape[::-1], "csc" if self.format == "csr" else "csr")

    def conj(self):
        if self.data.dtype.kind != "c":
            return self
        return _CSR(self.data.conj(), self.indices, self.indptr, self.shape, self.format)

    def toarray(self):
        out = np.zeros(self.shape, dtype=self.data.dtype)
        major = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        if self.format == "csr":
            out[major, self.indices] = self.data
        else:
            out[self.indices, major] = self.data
        return out

    def __matmul__(self, Y):
        if not (type(Y) is np.ndarray and Y.ndim in (1, 2) and Y.dtype == self.dtype):
            return self.toarray() @ Y
        if Y.ndim == 1:
            return (self @ Y[:, None])[:, 0]
        return _mm(self, Y, None)


def _is_sparse(M) -> bool:
    if type(M) is np.ndarray:
        return False
    if type(M) is _CSR:
        return True
    return not hasattr(M, "ndim") or type(M).__module__.startswith(("scipy.sparse", "cupyx"))


def _op(M, be):
    """The dense iterate M as the cheaper operand for products: CSR when sparse enough
    (a :class:`_CSR` on the host, cupyx CSR on the GPU)."""
    xp = be.xp
    if M.size < _SPARSE_MIN_SIZE_SMALL:
        return M
    if not be.is_gpu and M.dtype.kind in "fc" and type(M) is np.ndarray:
        # the CSR kernel's count decides (no np.count_nonzero pass: 80 us at 256 x 256 float32)
        arrays = _kernels.cpu_solver_kernels().dense_to_csr_arrays(M, _max_sparse_nnz(M.size, False))
        return M if arrays is None else _CSR(*arrays, M.shape)
    if _sparse_enough(int(xp.count_nonzero(M)), M.size, be.is_gpu):
        return dense_to_csr(M, be)
    return M


def _mm(X, Y, be):
    """X @ Y for dense arrays / CSR matrices (and their transposes, CSC); the result is CSR
    only if both are sparse and it stays sparse, else a dense array. On the CPU the sparse
    times dense products run in Numba kernels that read either memory order (no copies)."""
    sx, sy = _is_sparse(X), _is_sparse(Y)
    if type(X) is _CSR and sy or type(Y) is _CSR and sx:
        # host SpGEMM as SpMM on Y made dense (PALM's operands are at most a few hundred wide:
        # cheaper than scipy's SpGEMM and its CSR objects), kept sparse when it stays sparse
        return _op(_mm(X, Y.toarray(), be), be)  # (sparse times dense: a dense array)
    if type(X) is _CSR and not _numba_spmm(X, Y) or type(Y) is _CSR and not _numba_spmm(Y, X):
        return _mm(_dense(X), _dense(Y), be)
    if sx and sy:
        Z = (X @ Y).tocsr()
        m, n = Z.shape
        return Z if _sparse_enough(Z.nnz, m * n, be.is_gpu) else Z.toarray()
    if sy:
        if _numba_spmm(Y, X):
            k = _kernels.cpu_solver_kernels()
            if Y.format == "csr":
                return k.dense_csr(X, Y.indptr, Y.indices, Y.data, Y.shape[1])
            return k.csr_dense(Y.indptr, Y.indices, Y.data, Y.shape[1], X.T).T  # (Yᵀ Xᵀ)ᵀ, Yᵀ CSR
        return (Y.T @ X.T).T
    if sx and _numba_spmm(X, Y):
        k = _kernels.cpu_solver_kernels()
        if X.format == "csr":
            return k.csr_dense(X.indptr, X.indices, X.data, X.shape[0], Y)
        return k.dense_csr(Y.T, X.indptr, X.indices, X.data, X.shape[0]).T  # (Yᵀ Xᵀ)ᵀ, Xᵀ CSR
    return X @ Y


def _numba_spmm(S, M) -> bool:
    """Whether S (scipy CSR/CSC) times the dense M goes to the Numba kernels: a NumPy M of
    S's dtype, 2-D, canonical int32 indices."""
    return (type(M) is np.ndarray and M.ndim == 2 and M.dtype == S.dtype and S.format in ("csr", "csc")
            and S.indices.dtype == np.int32 and S.indptr.dtype == np.int32 and M.dtype.kind in "fc")


def _dense(M):
    return M.toarray() if _is_sparse(M) else M


def _herm(M):
    """Mᴴ (a view; real M: no conjugate, which copies a scipy matrix)."""
    return M.conj().T if M.dtype.kind == "c" else M.T


def _sqnorm(M, xp):
    """‖M‖²_F as a 0-d real array of M's namespace (one BLAS call, no host sync; memory
    order: no copy of Fortran-ordered products)."""
    M = M.ravel(order="K")
    return xp.vdot(M, M).real


class _Gram:
    """The right-hand product R (n × N, N > n) of a factor's update seen through its Gram
    pair: ``RG`` = R Rᴴ (n × n) and ``AR`` = A Rᴴ (M × n), dense."""

    __slots__ = ("RG", "AR")

    def __init__(self, RG, AR):
        self.RG, self.AR = RG, AR

    @property
    def shape(self):
        return (self.RG.shape[0], None)

    @property
    def dtype(self):
        return self.RG.dtype


def _vdot(X, Y, xp):
    """⟨X, Y⟩ = Σ conj(X) Y (complex, 0-d) for dense arrays of any memory orders (no copy
    when both are C- or both F-ordered)."""
    if X.flags.f_contiguous and Y.flags.f_contiguous and not (X.flags.c_contiguous and Y.flags.c_contiguous):
        return xp.vdot(X.T, Y.T)
    return xp.vdot(X, Y)


def _norm(w, xp):
    """‖w‖₂ of a vector as a 0-d real array of w's precision. In single precision the squares
    of entries below ~1e-19 underflow (above ~1e19 overflow), and the products of a long
    chain of unit-norm sparse factors reach such scales (their Gram matrices ~1e-25 in a
    10-factor QuickMeans chain), which made the spectral-norm estimates 0 and PALM's step
    infinite: there the squares are summed in float64, which holds every float32 square
    (6 us for 256 entries, where :func:`~gpufact._numeric.safe_norm`'s scaled passes take
    25 us, some 60 times per sweep). Double precision (inputs scaled into range by
    :func:`palm4msa`) keeps the one-call sum of squares. O(n)."""
    if w.dtype == np.float32 or w.dtype == np.complex64:
        w64 = w.astype(np.complex128 if w.dtype.kind == "c" else np.float64)
        return xp.sqrt(_sqnorm(w64, xp)).astype(w.real.dtype)
    return xp.sqrt(_sqnorm(w, xp))


def _gram_residual(LS, R, lam, be):
    """λ LS (R Rᴴ) − A Rᴴ for R given by its Gram pair. On the CPU the product is formed in
    the memory order of A Rᴴ (F-ordered after the sweep's sparse products: against a
    C-ordered product the subtraction was a strided pass, ~100 us of a 256 x 256 update's
    ~1.3 ms), and scaled and subtracted in place."""
    AR = R.AR
    if be.is_gpu or type(LS) is not np.ndarray:
        return lam * _dense(_mm(LS, R.RG, be)) - AR
    if AR.flags.f_contiguous and not AR.flags.c_contiguous:
        P = (R.RG.T @ LS.T).T  # (LS RG)ᵀ = RGᵀ LSᵀ: an F-ordered product
    else:
        P = _dense(_mm(LS, R.RG, be))
    P *= lam
    P -= AR
    return P


def _gram_times_herm(H, S, SH, be):
    """H Sᴴ for a Hermitian H (a Gram matrix R Rᴴ) and S, given SH = Sᴴ. For a real,
    C-ordered H on the CPU and S a host CSR: (S H)ᵀ, one SpMM that reads H as it lies (H Sᵀ
    itself reads H transposed, which the kernel copied: 70 us of a 256 x 256 float32 sweep
    step). The same values up to rounding (H is symmetric up to rounding)."""
    if (type(S) is _CSR and S.format == "csr" and type(H) is np.ndarray and H.dtype.kind == "f"
            and H.flags.c_contiguous and _numba_spmm(S, H)):
        return _kernels.cpu_solver_kernels().csr_dense(S.indptr, S.indices, S.data, S.shape[0], H).T
    return _mm(H, SH, be)


def _power_gram(H, v, xp, iters):
    """Largest eigenvalue of the Hermitian positive semi-definite H (dense or CSR) by
    ``iters`` power steps from v; returns (s, v). With H = M Mᴴ, the same iterates as
    :func:`_power_norm2` on Mᴴ."""
    s = None
    tiny = np.finfo(v.real.dtype).tiny
    for _ in range(iters):
        w = H @ v
        s = _norm(w, xp)
        v = w / (s + tiny)
    return s, v


def _power_norm2(M, v, xp, iters):
    """Squared spectral norm of M by ``iters`` power steps on MᴴM from v; returns (s², v)."""
    if type(M) is np.ndarray and M.size <= _SMALL_NORM_SIZE and M.dtype == v.dtype:
        return _kernels.cpu_solver_kernels().power_norm2_small(M, v, iters)
    s2 = None
    MH = _herm(M)
    tiny = np.finfo(v.real.dtype).tiny  # v stays 0 if MᴴM v = 0
    for _ in range(iters):
        w = MH @ (M @ v)
        s2 = _norm(w, xp)
        v = w / (s2 + tiny)
    return s2, v


class _Palm:
    """State of one PALM4MSA run (factors, λ, warm-start vectors).

    ``S`` holds the dense iterates (projections act on them); ``ops`` the same factors as
    the cheaper operand for products (CSR when sparse), so products cost O(nnz · n).
    """

    def __init__(self, A, constraints, factors, lam, xp, order, eps, update_lambda, norm_iters,
                 adaptive_step=True):
        self.A = A
        self.P = constraints
        self.S = factors
        self.lam = lam
        self.xp = xp
        self.be = get_backend(A)
        self.ops = [_op(M, self.be) for M in factors]
        self.fixed = [isinstance(P, const) for P in constraints]  # no update needed
        self.order = order
        self.eps = eps
        self.update_lambda = update_lambda
        self.norm_iters = norm_iters
        self.vL = [None] * len(factors)
        self.vR = [None] * len(factors)
        self.A_norm2 = _sqnorm(A, xp)
        self.adaptive = adaptive_step  # longer safeguarded steps (see _update)
        if self.be.is_gpu:  # step scales and success counts live where the data live
            self.scale = [xp.asarray(_STEP_GROW, dtype=A.real.dtype)] * len(factors)
            self.successes = [xp.asarray(0)] * len(factors)
        else:
            self.scale = [_STEP_GROW] * len(factors)
            self.successes = [0] * len(factors)
        self.momentum = False  # inertial steps (Nesterov weights, restarted when the error rises)
        # momentum counter: a device scalar on the GPU (restarts never sync), a host int here
        self._k = xp.asarray(1.0, dtype=A.real.dtype) if self.be.is_gpu else 1
        self._prev = None
        self._last_err = None

    def _lip(self, j, L, R):
        """(c = (1 + ε) |λ|² ‖L‖² ‖R‖², ‖L‖²): the step constant and the left factor's part.
        ‖R‖² by power steps on R Rᴴ (on the Gram matrix itself when R is a :class:`_Gram`)."""
        xp = self.xp
        nL = nR = 1.0
        if L is not None:
            iters = self.norm_iters if self.vL[j] is not None else 3 * self.norm_iters
            if self.vL[j] is None:
                self.vL[j] = xp.full(L.shape[1], 1 / math.sqrt(L.shape[1]), dtype=L.dtype)  # not ones / np.sqrt: float64
            nL, self.vL[j] = _power_norm2(L, self.vL[j], xp, iters)
        if R is not None:
            iters = self.norm_iters if self.vR[j] is not None else 3 * self.norm_iters
            if self.vR[j] is None:
                self.vR[j] = xp.full(R.shape[0], 1 / math.sqrt(R.shape[0]), dtype=R.dtype)
            if isinstance(R, _Gram):
                nR, self.vR[j] = _power_gram(R.RG, self.vR[j], xp, iters)
            else:
                nR, self.vR[j] = _power_norm2(_herm(R), self.vR[j], xp, iters)
        return (1 + self.eps) * self._lam2() * nL * nR, nL

    def _lam2(self):
        """|λ|² in float64: in single precision it overflows for λ > 1.8e19, which a long
        chain of unit-norm sparse factors reaches (λ ~ 1e22 at 16 factors of 256 x 256)."""
        return self.xp.abs(self.lam).astype(np.float64) ** 2

    def _update(self, j, L, R):
        """One proximal gradient step on S_j; L, R are the neighbouring products (None = I).

        R may be a :class:`_Gram` (R Rᴴ, A Rᴴ) instead of a wide R (n_j × N, N > n_j): the
        gradient λ Lᴴ (λ L S_j R − A) Rᴴ = λ Lᴴ (λ L S_j (R Rᴴ) − A Rᴴ) then costs products
        of n_j columns instead of N."""
        if self.fixed[j]:  # a constant factor: the projection returns it whatever the step
            return
        xp, be, lam = self.xp, self.be, self.lam
        Sj, op = self.S[j], self.ops[j]
        if self.momentum and self._prev is not None:
            beta = (self._k - 1) / (self._k + 2)  # 0 right after a restart
            beta = beta.astype(Sj.real.dtype) if be.is_gpu else beta
            Sj = Sj + beta * (Sj - self._prev[j])
            op = _op(Sj, be)
        if self.momentum:
            self._prev[j] = self.S[j]
        LS = op if L is None else _mm(L, op, be)
        if isinstance(R, _Gram):
            G = _gram_residual(LS, R, lam, be)
        else:
            LSR = LS if R is None else _mm(LS, R, be)
            D = lam * _dense(LSR) - self.A
            G = D if R is None else _mm(D, _herm(R), be)
        G = G if L is None else _mm(_herm(L), G, be)
        c, nL = self._lip(j, L, R)  # float64; c = 0 only when G = 0 (L, R or λ zero)
        # step 0 then: λ / tiny times the step scale overflowed to inf, and 0 · inf = NaN
        # (PALM on a zero matrix raised DivergenceError); a NaN c still gives a NaN step,
        # which the divergence check reports
        if be.is_gpu:
            step = xp.where(c == 0, 0, xp.conj(lam) / xp.where(c == 0, 1.0, c)).astype(Sj.dtype)
        else:
            step = (0 * xp.conj(lam) if c == 0 else xp.conj(lam) / c).astype(Sj.dtype)
        G = _dense(G)
        if not self.adaptive or self.momentum:
            self.S[j] = self.P[j](Sj - G * step)
        else:
            self._safeguarded_step(j, Sj, G, step, c, nL, L, R)
        self.ops[j] = _op(self.S[j], be)

    def _safeguarded_step(self, j, Sj, G, step, c, nL, L, R):
        """Sets S_j by a longer step 1/c' (c' = c / scale) if it has the sufficient decrease
        the standard step is guaranteed (½ ε L ‖Δ‖², L = c / (1+ε)), checked on an exact
        expansion f(S + Δ) − f(S) = Re λ⟨G, Δ⟩ + ½|λ|² ‖L Δ R‖² (‖L Δ R‖² ≤ ‖L‖² ‖Δ R‖² for a
        middle factor), else by the standard step 1/c. The scale doubles (up to 8) after two
        successes in a row and halves on a failure (down to 1). The objective still never
        increases."""
        xp, be, lam = self.xp, self.be, self.lam
        sc = self.scale[j]
        S_try = self.P[j](Sj - G * (step * (sc.astype(step.dtype) if be.is_gpu else sc)))
        Dl = S_try - Sj
        lin = (lam * _vdot(G, Dl, xp)).real
        if R is None:
            # Δ as CSR when sparse (SpMM instead of a dense product with the last factor's width)
            q = _sqnorm(_dense(_mm(L, _op(Dl, be), be)), xp) if L is not None else _sqnorm(Dl, xp)
        else:  # ‖Δ R‖² = Re⟨Δ, Δ (R Rᴴ)⟩ with the Gram matrix
            if isinstance(R, _Gram) and not be.is_gpu:  # Δ is sparse: one pass, no CSR built
                q = _kernels.cpu_solver_kernels().gram_quad(Dl, R.RG)
            elif isinstance(R, _Gram):
                q = _vdot(Dl, _dense(_mm(_op(Dl, be), R.RG, be)), xp).real
            else:
                q = _sqnorm(_dense(_mm(_op(Dl, be), R, be)), xp)
            if L is not None:
                q = q * (1 + self.eps) * nL
        lip = c / (1 + self.eps)
        ok = lin + 0.5 * self._lam2() * q <= -0.5 * self.eps * lip * _sqnorm(Dl, xp)
        # doubling on every success would fail every other try
        if be.is_gpu:  # no host sync: both candidates and the policy on the device
            self.S[j] = xp.where(ok, S_try, self.P[j](Sj - G * step))
            succ = xp.where(ok, self.successes[j] + 1, 0)
            grow = ok & (succ >= 2)
            self.scale[j] = xp.where(grow, xp.minimum(sc * _STEP_GROW, _STEP_MAX),
                                     xp.where(ok, sc, xp.maximum(sc / _STEP_GROW, 1.0))).astype(sc.dtype)
            self.successes[j] = xp.where(grow, 0, succ)
        else:  # host scalars: the branch is free here
            ok = bool(ok)
            self.S[j] = S_try if ok else self.P[j](Sj - G * step)
            succ = self.successes[j] + 1 if ok else 0
            grow = ok and succ >= 2
            self.scale[j] = min(sc * _STEP_GROW, _STEP_MAX) if grow else (sc if ok else max(sc / _STEP_GROW, 1.0))
            self.successes[j] = 0 if grow else succ

    def _gram_worth_it(self) -> bool:
        """Whether the right-to-left sweep should carry R Rᴴ and A Rᴴ instead of reading the
        wide R (n_j × N) in the gradients: when every inner dimension n_j is at most 2/3 of N
        (the products then shrink by n_j / N) and, with two factors, only if the last one is
        sparse (its Gram matrix must come cheap: it is rebuilt every sweep)."""
        S, N = self.S, self.A.shape[1]
        if len(S) < 2 or any(3 * M.shape[1] > 2 * N for M in S[:-1]):
            return False
        return len(S) >= 3 or _is_sparse(self.ops[-1])

    def sweep(self):
        """One pass over all factors then the λ update; returns the squared error."""
        xp, be, ops, J = self.xp, self.be, self.ops, len(self.S)
        if self.momentum and self._prev is None:
            self._prev = list(self.S)
        if self.order == "right-to-left":
            prefix = [None] * J  # prefix[j] = S_0 ⋯ S_{j-1}
            for j in range(1, J):
                prefix[j] = ops[0] if j == 1 else _mm(prefix[j - 1], ops[j - 1], be)
            R = None
            gram = self._gram_worth_it()
            for j in range(J - 1, -1, -1):
                if gram and R is not None and not isinstance(R, _Gram):
                    RH = _herm(R)
                    R = _Gram(_dense(_mm(R, RH, be)), _dense(_mm(self.A, RH, be)))
                self._update(j, prefix[j], R)
                if j == 0:
                    break
                if isinstance(R, _Gram):  # S_j R: S_j (R Rᴴ) S_jᴴ and (A Rᴴ) S_jᴴ
                    OH = _herm(ops[j])
                    R = _Gram(_dense(_mm(ops[j], _gram_times_herm(R.RG, ops[j], OH, be), be)),
                              _dense(_mm(R.AR, OH, be)))
                else:
                    R = ops[j] if R is None else _mm(ops[j], R, be)
            if isinstance(R, _Gram):
                return self._finish_gram(R)
            P = ops[0] if R is None else _mm(ops[0], R, be)
        else:
            suffix = [None] * J  # suffix[j] = S_{j+1} ⋯ S_{J-1}
            for j in range(J - 2, -1, -1):
                suffix[j] = ops[J - 1] if j == J - 2 else _mm(ops[j + 1], suffix[j + 1], be)
            L = None
            for j in range(J):
                self._update(j, L, suffix[j])
                L = ops[j] if L is None else _mm(L, ops[j], be)
            P = L
        return self._finish(P)

    def _finish_gram(self, R):
        """:meth:`_finish` for P = S_0 R given R's Gram pair: ⟨P, A⟩ = ⟨S_0, A Rᴴ⟩,
        ‖P‖² = ⟨S_0, S_0 R Rᴴ⟩, ‖A − λP‖² expanded. The expansion loses the digits of ‖A‖²
        it cancels, so P is formed (one product per factor) in single precision, on the
        GPU (no host read), and when the relative squared error is below 1e-8."""
        xp, be = self.xp, self.be
        if be.is_gpu or self.A.dtype in (np.float32, np.complex64):
            return self._finish(self._product())
        S0 = self.S[0]
        c = _vdot(S0, R.AR, xp)  # ⟨P, A⟩
        p2 = _vdot(S0, _dense(_mm(self.ops[0], R.RG, be)), xp).real
        lam = self._new_lambda(c.real, p2)
        err = self.A_norm2 - 2 * (xp.conj(lam) * c).real + xp.abs(lam) ** 2 * p2
        if not (float(err) >= 1e-8 * float(self.A_norm2)):  # NaN included: the exact path decides
            return self._finish(self._product())
        self.product_norm2 = p2
        self.lam = lam
        return self._after_error(err)

    def _product(self):
        P = self.ops[-1]
        for M in self.ops[-2::-1]:
            P = _mm(M, P, self.be)
        return P

    def _new_lambda(self, num, p2):
        """λ = Re⟨P, A⟩ / ‖P‖² (kept when P = 0, or when λ is not updated)."""
        xp = self.xp
        if not self.update_lambda:
            return self.lam
        return xp.where(p2 > 0, num / xp.where(p2 > 0, p2, 1), self.lam).astype(self.lam.dtype)

    def _finish(self, P):
        """λ update and squared error ‖A − λP‖² for the product P of the updated factors."""
        xp = self.xp
        P = _dense(P)
        p2 = _sqnorm(P, xp)
        self.product_norm2 = p2  # non-finite: the factors blew up (checked by _run)
        self.lam = self._new_lambda(_vdot(P, self.A, xp).real, p2)  # Re⟨P, A⟩ / ‖P‖²
        return self._after_error(_sqnorm(self.A - self.lam * P, xp))

    def _after_error(self, err):
        xp, be = self.xp, self.be
        if self.momentum:  # adaptive restart keeps the accelerated run stable
            nxt = self._k + 1
            if self._last_err is None:
                self._k = nxt
            elif be.is_gpu:
                self._k = xp.where(err > self._last_err, 1.0, nxt).astype(nxt.dtype)
            else:
                self._k = 1 if err > self._last_err else nxt
            self._last_err = err
        return err


def _init_factors(constraints, init, A, xp, order):
    dt = A.dtype
    J = len(constraints)
    if init is None or (isinstance(init, str) and init == "default"):
        # identity-like factors, the first one to be updated zero (FAµST's default)
        first = J - 1 if order == "right-to-left" else 0
        out = []
        for j, P in enumerate(constraints):
            m, n = P.shape
            out.append(xp.zeros((m, n), dtype=dt) if j == first else xp.eye(m, n, dtype=dt))
        return out
    if isinstance(init, FactorProduct):
        init = [f.toarray() for f in init.factors]
    if not isinstance(init, (list, tuple)) or len(init) != J:
        raise ValueError(f"init must be 'default', a FactorProduct or a list of {J} arrays")
    out = []
    for j, (F0, P) in enumerate(zip(init, constraints)):
        if hasattr(F0, "toarray") and (not hasattr(F0, "ndim") or _is_sparse(F0)):
            F0 = F0.toarray()  # factors and sparse matrices (canonical: duplicates summed)
        get_backend(A, F0)
        if not hasattr(F0, "shape"):
            raise TypeError(f"init[{j}] must be an array, a sparse matrix or a factor, got {type(F0).__name__}")
        if tuple(F0.shape) != P.shape:
            raise ValueError(f"init[{j}] has shape {tuple(F0.shape)}, constraint {j} expects {P.shape}")
        if not bool(xp.isfinite(F0).all()):
            raise ValueError(f"init[{j}] contains NaN or inf")
        out.append(xp.array(F0, dtype=dt, copy=True))
    return out


def _to_factor(M, P, xp):
    """Dense iterate -> factor object in the constraint's natural format."""
    if P.factor_format == "ks":
        return KSFactor.from_dense(M, P.pattern)
    if P.factor_format == "dense":
        return DenseFactor(M, check=False)
    nnz = int(xp.count_nonzero(M))
    if nnz > 0.25 * M.size:
        return DenseFactor(M, check=False)
    return CSRFactor(M, check=False)


def build_product(S, lam, constraints, xp):
    """FactorProduct λ S_1 ⋯ S_J (λ folded into the first factor)."""
    S = list(S)
    S[0] = S[0] * lam.astype(S[0].dtype) if hasattr(lam, "astype") else S[0] * lam
    return FactorProduct([_to_factor(M, P, xp) for M, P in zip(S, constraints)])


def palm4msa(A, constraints, max_iter: int = 200, *, init="default", lambda_init: float | None = None,
             order: str = "right-to-left", tol: float | None = None, stagnation: float | None = None,
             update_lambda: bool = True, step_eps: float = 1e-3, adaptive_step: bool = True,
             norm_iters: int = 3, check_every: int | None = None, callback=None, progress: bool = False,
             return_history: bool = False, _return_state: bool = False):
    """Approximate A (M × N) by λ S_1 ⋯ S_J with S_j in the set of ``constraints[j]``.

    Parameters
    ----------
    A : NumPy or CuPy array, float32/float64/complex64/complex128, finite, non-empty.
    constraints : list of :mod:`gpufact.proj` constraints whose shapes chain from M to N.
    max_iter : maximum number of sweeps.
    init : "default" (identity-like factors, the first updated one zero), a FactorProduct or a
        list of J arrays (warm start; copied, never modified).
    lambda_init : initial scale λ, in A's units (λ S_1⋯S_J ≈ A). None (default): 1 for a
        warm start (``init`` carries the scale), else 2^⌊log2 max|A|⌋, so that the default
        run is the same at every scale of A (palm4msa(c A) = c palm4msa(A) for c a power
        of two, and as accurate for A of 1e-30 or 1e30 in float32 as near 1).
    order : "right-to-left" (update S_J first) or "left-to-right".
    step_eps : the step is 1 / ((1 + step_eps) · Lipschitz constant); values in (-1, 0) take
        longer steps than the theory allows (experiments only: the run may diverge).
    adaptive_step : also try a step up to 8 times longer than 1 / c, kept only when it gives
        the sufficient decrease the standard step guarantees (an exact expansion of the
        objective, one extra product and projection per update): the objective still never
        increases, and the error at a given iteration count is markedly lower (random 256 x 256,
        4 factors splincol(8), 50 iterations: 0.708 instead of 0.777; pyfaust 0.770).
        ``False``: plain PALM4MSA.
    norm_iters : power-iteration steps per spectral-norm estimate (warm-started).
    tol : stop when ‖A − F‖_F / ‖A‖_F <= tol.
    stagnation : stop when the relative error changes by less than this between checks.
        Both are raised to at least 4 eps of A's precision (float32: 4.8e-7), which the
        error can reach; A of any magnitude within its dtype's range is handled (solved as
        A / 2^k when its squares would leave the range, λ scaled back).
    check_every : read the error on the host every this many sweeps (one sync each; default
        every sweep on the CPU, every 5 on the GPU; the last sweep is always checked).
    callback : called as ``callback(iteration, rel_error)`` at each check.
    progress : show a tqdm progress bar.
    return_history : also return the list of relative errors at each check.

    Returns
    -------
    FactorProduct with λ folded into the first factor; ``F.rel_error`` holds the final relative
    error. Raises :class:`DivergenceError` if the iterates become non-finite or explode.

    The objective never increases when every constraint is an exact projection (``sp``,
    ``splin``, ``spcol``, fixed supports, ``normcol``...). ``splincol`` is FAµST's heuristic
    (union of row and column top-k), not the projection onto a set, so with it the error may
    rise slightly between sweeps.
    """
    be = get_backend(A)
    xp = be.xp
    A = check_matrix(A, "A", be)
    check_constraints(constraints, A.shape)
    max_iter = check_int(max_iter, "max_iter", min_value=1)
    check_every = check_every_for(check_every, be)
    norm_iters = check_int(norm_iters, "norm_iters", min_value=1)
    update_lambda = check_bool(update_lambda, "update_lambda")
    adaptive_step = check_bool(adaptive_step, "adaptive_step")
    progress = check_bool(progress, "progress")
    return_history = check_bool(return_history, "return_history")
    if order not in ("right-to-left", "left-to-right"):
        raise ValueError(f"order must be 'right-to-left' or 'left-to-right', got {order!r}")
    for name, v in (("tol", tol), ("stagnation", stagnation)):
        if v is not None and not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
    if not (np.isfinite(step_eps) and step_eps > -1):
        raise ValueError(f"step_eps must be a finite number > -1, got {step_eps!r}")
    if lambda_init is not None:
        if isinstance(lambda_init, (bool, np.bool_)) or not isinstance(lambda_init, numbers.Number):
            raise TypeError(f"lambda_init must be a number or None, got {type(lambda_init).__name__}")
        if not np.isfinite(lambda_init):
            raise ValueError(f"lambda_init must be finite, got {lambda_init!r}")
        if lambda_init == 0:  # every gradient carries λ: the factors would never move
            raise ValueError("lambda_init must be nonzero (λ = 0 gives zero gradients), got 0")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable")
    warm = not (init is None or (isinstance(init, str) and init == "default"))
    factors = _init_factors(constraints, init, A, xp, order)
    # solve for A / s, s = 2^⌊log2 max|A|⌋ (exact): λ², the step constants and the squared
    # errors stay in range at any magnitude, and the run is the same at every scale of A;
    # λ carries s back at the end
    s = pow2_scale(A, xp)
    if s != 1.0:
        A = div_real(A, A.real.dtype.type(s), xp)  # complex: part by part (exact)
    if lambda_init is None:
        lambda_init = 1.0 if warm else s
    lam = xp.asarray(lambda_init / s, dtype=A.dtype)
    state = _Palm(A, constraints, factors, lam, xp, order, step_eps, update_lambda, norm_iters,
                  adaptive_step=adaptive_step)
    tol, stagnation = precision_floor(tol, A.dtype), precision_floor(stagnation, A.dtype)
    history = _run(state, max_iter, tol, stagnation, check_every, callback, progress, be)
    if s != 1.0:
        # λ s on the host (it may leave A's dtype's range although every factor and the
        # product stay inside: scale_in_range spreads it over the factors then)
        lam = complex(state.lam) if A.dtype.kind == "c" else float(state.lam)
        with np.errstate(over="ignore"):
            state.lam = state.lam * A.real.dtype.type(s)  # (the state's copy, for callers)
        F = scale_in_range(build_product(state.S, 1.0, constraints, xp), lam, int(np.frexp(s)[1]) - 1)
    else:
        F = build_product(state.S, state.lam, constraints, xp)
    F.rel_error = history[-1] if history else float("nan")
    if _return_state:
        return F, history, state
    if return_history:
        return F, history
    return F


def _run(state, max_iter, tol, stagnation, check_every, callback, progress, be, desc="palm4msa"):
    """Iterate sweeps with the stopping rules; returns the relative-error history."""
    xp = be.xp
    a2 = float(state.A_norm2)
    a2 = a2 if a2 > 0 else 1.0
    history = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, desc=desc, leave=False)
    try:
        prev = None
        for it in range(1, max_iter + 1):
            with np.errstate(over="ignore", invalid="ignore"):  # blow-ups are detected below
                try:
                    err2 = state.sweep()
                except NonFiniteInput as exc:  # a projection met a non-finite iterate
                    raise DivergenceError(f"PALM diverged at iteration {it} (non-finite iterate); increase "
                                          "step_eps or norm_iters, or check the constraints") from exc
            if bar is not None:
                bar.update()
            if it % check_every and it != max_iter:
                continue
            e2 = float(err2)
            if not np.isfinite(e2) or e2 > 1e6 * a2 or not bool(xp.isfinite(state.lam)) \
                    or not np.isfinite(float(state.product_norm2)):
                raise DivergenceError(
                    f"PALM diverged at iteration {it} (relative error {np.sqrt(e2 / a2) if np.isfinite(e2) else e2}); "
                    "increase step_eps or norm_iters, or check the constraints")
            rel = float(np.sqrt(max(e2, 0.0) / a2))
            history.append(rel)
            if callback is not None:
                callback(it, rel)
            if bar is not None:
                bar.set_postfix(rel_error=f"{rel:.3e}")
            if tol is not None and rel <= tol:
                break
            if stagnation is not None and prev is not None and abs(prev - rel) <= stagnation * max(prev, 1e-300):
                break
            prev = rel
    finally:
        if bar is not None:
            bar.close()
    for S in state.S:
        if not bool(xp.isfinite(S).all()):
            raise DivergenceError("PALM produced non-finite factors")
    return history
