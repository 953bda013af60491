"""``FactorProduct``: the operator F = S_1 S_2 … S_J, applied right to left."""
from __future__ import annotations

import functools
import math
import numbers
import operator

import numpy as np
from array_api_compat import is_cupy_array, is_numpy_array

from ._backend import Backend, get_backend
from ._numeric import SumSquares, safe_norm
from ._validation import check_dtype, check_int, check_seed, float_dtype_for
from .factors import CSRFactor, DenseFactor, DiagFactor, Factor, KSFactor, PermFactor
from .factors._chain import KSChain
from .factors._csr_chain import CSRChain


def _as_factor(f) -> Factor:
    if isinstance(f, Factor):
        return f
    if isinstance(f, FactorProduct):
        raise TypeError("factors: nest FactorProducts with F @ G, not inside the factor list")
    mod = type(f).__module__ or ""
    if mod.startswith(("scipy.sparse", "cupyx.scipy.sparse")):
        return CSRFactor(f)
    if hasattr(f, "ndim") and f.ndim == 2:
        return DenseFactor(f)
    raise TypeError(f"factors: cannot make a factor from {type(f).__name__}")


#: argmin_affine: batches of at most this many rows may take the lean path (the fused
#: kernel's one-sample loop, which the general path also runs for them)
ARGMIN_SMALL_ROWS = 8


def _check_operand(X, name: str = "X") -> None:
    """Data applied through F must be a dense NumPy/CuPy array: sparse matrices and other
    array types get a TypeError naming ``name`` (not a failure deep in a kernel)."""
    if type(X) is np.ndarray:
        return
    mod = type(X).__module__ or ""
    if mod.startswith(("scipy.sparse", "cupyx.scipy.sparse")):
        raise TypeError(f"{name}: a sparse matrix; F applies to dense arrays: pass {name}.toarray(), or "
                        f"compose the operators with CSRFactor({name})")
    if not (is_numpy_array(X) or is_cupy_array(X)):
        raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(X).__module__}.{type(X).__name__}")


#: a permutation factor applied right before a KS chain is handed to the chain, which reads
#: it through in its tile loads, where the chain does (:meth:`KSChain.reads_input_perm`: CPU,
#: complex products); False: the permutation is always its own pass (benchmarks' "before")
_FUSE_PERM = True


class FactorProduct:
    """The linear operator ``F = S_1 S_2 … S_J`` (``factors`` in product order).

    ``F @ X`` applies S_J first. X is a vector (N,) or a batch (N, B); ``X @ F`` and
    ``X @ F.T`` take row-major samples (B, M) / (B, N) without transposing them in memory.
    Results live in the namespace (NumPy/CuPy) of the inputs and have dtype
    ``result_type(F.dtype, X.dtype)``; integer data compute in float64. ``F.dtype`` is the
    result type of the factors' dtypes, permutations left out (they hold no values). X may have any
    strides and flags (read-only, memory-mapped, Fortran-ordered, negative or zero strides)
    and is never modified; sparse matrices and other array types raise TypeError (compose
    with ``CSRFactor(S)`` instead). Products pickle and deep-copy. Runs of consecutive
    :class:`KSFactor`, and runs of :class:`CSRFactor` (diagonal factors among them folded
    in), are applied in one fused pass each (Numba on the CPU, CUDA on the GPU: tiles of
    samples held in cache or shared memory through the whole run, input read once, output
    written once); other factors use their own apply. The apply allocates at most two (M_j, B) work arrays
    at a time besides input and output.

    Cost of ``F @ X``: O(nnz(F) · B) time.
    """

    # make ``ndarray @ F`` defer to F.__rmatmul__ (NumPy and CuPy)
    __array_ufunc__ = None
    __array_priority__ = 1000

    #: relative error ‖A − F‖_F / ‖A‖_F when F was learned from A (set by gpufact.factorize)
    rel_error = None
    #: argmin_affine's lean path: per dtype, the fused chain's kernel arguments (or False)
    _small = None

    def __init__(self, factors):
        if isinstance(factors, (Factor, FactorProduct)) or hasattr(factors, "ndim"):
            raise TypeError("factors must be a list of factors")
        factors = [_as_factor(f) for f in factors]
        if not factors:
            raise ValueError("factors must not be empty")
        be = get_backend(*factors)
        for j in range(len(factors) - 1):
            if factors[j].shape[1] != factors[j + 1].shape[0]:
                raise ValueError(
                    f"factors do not chain: factor {j} has shape {factors[j].shape}, "
                    f"factor {j + 1} has shape {factors[j + 1].shape}")
        self._factors = tuple(factors)
        self.backend: Backend = be
        self.shape = (factors[0].shape[0], factors[-1].shape[1])
        self._segments = None
        self._T = None
        self._rest = None  # argmin_affine: the factors applied before a leading CSR chain, transposed
        # factors are immutable; a permutation holds no values: it takes the others' dtype (a
        # float32 chain stays float32 with PermFactor's default float64 in it)
        valued = [f.dtype for f in factors if not isinstance(f, PermFactor)]
        self._dtype = np.result_type(*(valued or [f.dtype for f in factors]))
        self._result_dtypes = {}
        self._vector = None  # F @ x: the lean one-vector path (_vector_path), made on first use

    def __getstate__(self):  # pickle / deepcopy: the factors, not the derived caches
        state = self.__dict__.copy()
        state["_segments"] = None
        state["_T"] = None
        state["_rest"] = None
        state.pop("_small", None)
        state["_vector"] = None
        return state

    # --- description ---------------------------------------------------------------------
    @property
    def factors(self) -> list:
        """The factors S_1 … S_J, in product order (a new list)."""
        return list(self._factors)

    def __len__(self) -> int:
        return len(self._factors)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def nnz(self) -> int:
        """Stored nonzeros, summed over the factors."""
        return sum(f.nnz for f in self._factors)

    @property
    def density(self) -> float:
        """nnz / (M N)."""
        m, n = self.shape
        return self.nnz / (m * n)

    @property
    def rcg(self) -> float:
        """Relative complexity gain: dense entries / nnz (> 1 means cheaper than dense)."""
        m, n = self.shape
        return (m * n) / self.nnz

    def __repr__(self) -> str:
        kinds = ", ".join(f"{f.kind}{f.shape}" for f in self._factors)
        return (f"FactorProduct(shape={self.shape}, dtype={self.dtype}, nnz={self.nnz}, "
                f"rcg={self.rcg:.3g}, device={self.device!r}, factors=[{kinds}])")

    # --- algebra -----------------------------------------------------------------------
    @property
    def T(self) -> "FactorProduct":
        if self._T is None:
            self._T = FactorProduct([f.T for f in reversed(self._factors)])
            self._T._T = self
        return self._T

    @property
    def H(self) -> "FactorProduct":
        return self.T.conj()

    def conj(self) -> "FactorProduct":
        if self.dtype.kind != "c":
            return self
        return FactorProduct([f.conj() for f in self._factors])

    def __mul__(self, alpha):
        """Scalar multiple ``alpha * F`` (the first factor is scaled)."""
        if not isinstance(alpha, numbers.Number) and not (hasattr(alpha, "ndim") and alpha.ndim == 0):
            return NotImplemented
        return FactorProduct([_scaled(self._factors[0], alpha)] + list(self._factors[1:]))

    __rmul__ = __mul__

    def astype(self, dtype) -> "FactorProduct":
        dt = check_dtype(dtype)
        return FactorProduct([f.astype(dt) for f in self._factors])

    def to_device(self, device: str) -> "FactorProduct":
        """Copy to ``device`` ("cpu" or "gpu"); returns self if already there."""
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
        if device == self.device:
            return self
        return FactorProduct([f.to_device(device) for f in self._factors])

    # --- apply ---------------------------------------------------------------------------
    def _get_segments(self):
        """Factors in product order, with runs of consecutive KS factors as a KSChain and
        runs of CSR and diagonal factors (at least one CSR) as a CSRChain."""
        if self._segments is None:
            segs, run, kind = [], [], None

            def close():
                if kind == "ks":
                    segs.append(KSChain(run))
                elif any(isinstance(f, CSRFactor) for f in run):
                    segs.append(CSRChain(run))
                else:
                    segs.extend(run)

            for f in self._factors:
                k = "ks" if isinstance(f, KSFactor) else "csr" if isinstance(f, (CSRFactor, DiagFactor)) else None
                if run and k != kind:
                    close()
                    run = []
                if k is None:
                    segs.append(f)
                else:
                    run.append(f)
                kind = k
            if run:
                close()
            self._segments = segs
        return self._segments

    def _result_dtype(self, X, name):
        dt = self._result_dtypes.get(X.dtype)
        if dt is None:
            if X.dtype.kind not in "biufc":
                raise TypeError(f"{name}: unsupported dtype {X.dtype}")
            dt = self._result_dtypes[X.dtype] = np.result_type(self.dtype, float_dtype_for(X.dtype))
        return dt

    def _apply_cols(self, Xc, out_rows: bool, dtype):
        """F @ Xc for a logical (N, B) view; returns a logical (M, B) view.

        The result is C-contiguous as (M, B), or as (B, M) when ``out_rows``.
        """
        xp = self.backend.xp
        B = Xc.shape[1]
        cur = Xc
        segs = self._get_segments()
        i = len(segs) - 1
        while i >= 0:
            seg, perm = segs[i], None
            if _FUSE_PERM and isinstance(seg, PermFactor) and i > 0 and isinstance(segs[i - 1], KSChain) \
                    and segs[i - 1].reads_input_perm(dtype, B):
                perm, seg = seg.perm, segs[i - 1]  # the permutation read through by the chain's loads
                i -= 1
            m = seg.shape[0]
            out = xp.empty((B, m), dtype=dtype).T if out_rows else xp.empty((m, B), dtype=dtype)
            if perm is None:
                seg.apply_cols(cur, out)
            else:
                seg.apply_cols(cur, out, in_perm=perm)
            cur = out
            i -= 1
        return cur

    def _vector_path(self):
        """F @ x for one vector when F is one chain of KS factors on the CPU and x a contiguous
        NumPy vector of F's (real) dtype: the kernel's one-sample loop called directly, with
        nothing checked or looked up that the general path would find unchanged (the same
        kernel and arguments; 9 µs less per call at N = 4096, measured). False otherwise."""
        segs = self._get_segments()
        if self.backend.is_gpu or len(segs) != 1 or not isinstance(segs[0], KSChain) or self.dtype.kind != "f" \
                or min(self.shape) == 0:
            return False
        from ._kernels import cpu_kernels

        seg, dt, (m, n) = segs[0], self.dtype, self.shape
        kernel, weights, plan, maxdim = cpu_kernels().ks_chain_apply_serial, seg.weights_serial, seg.plan, seg.maxdim

        def apply(x):  # weights looked up per call: KSChain.refresh() may have dropped the copy
            y = np.empty(m, dtype=dt)
            kernel(weights(dt), plan, maxdim, x.reshape(n, 1), False, y.reshape(m, 1), False, None)
            return y

        return dt, n, apply

    def __matmul__(self, X):
        vec = self._vector
        if vec and type(X) is np.ndarray and X.ndim == 1 and X.dtype == vec[0] and X.shape[0] == vec[1] \
                and X.flags.c_contiguous:
            return vec[2](X)
        if isinstance(X, FactorProduct):
            get_backend(self, X)
            return FactorProduct(self.factors + X.factors)
        if isinstance(X, Factor):
            get_backend(self, X)
            return FactorProduct(self.factors + [X])
        if not hasattr(X, "ndim"):
            return NotImplemented
        _check_operand(X)
        get_backend(self, X)  # TypeError on NumPy/CuPy mixes
        n = self.shape[1]
        if X.ndim not in (1, 2) or X.shape[0] != n:
            raise ValueError(f"X: expected shape ({n},) or ({n}, B), got {tuple(X.shape)}")
        dt = self._result_dtype(X, "X")
        if X.ndim == 1:
            if self._vector is None:
                self._vector = self._vector_path()
            return self._apply_cols(X[:, None], False, dt)[:, 0]
        return self._apply_cols(X, False, dt)

    def __rmatmul__(self, X):
        """X @ F for row-major samples X (B, M) (or a vector (M,)); returns (B, N)."""
        if isinstance(X, Factor):
            get_backend(self, X)
            return FactorProduct([X] + self.factors)
        if not hasattr(X, "ndim"):
            return NotImplemented
        _check_operand(X)
        get_backend(self, X)
        m = self.shape[0]
        if X.ndim not in (1, 2) or X.shape[-1] != m:
            raise ValueError(f"X: expected shape ({m},) or (B, {m}), got {tuple(X.shape)}")
        dt = self._result_dtype(X, "X")
        if X.ndim == 1:
            return self.T._apply_cols(X[:, None], False, dt)[:, 0]
        return self.T._apply_cols(X.T, True, dt).T

    def argmin_affine(self, X, bias, alpha: float = -2.0, *, chunk_bytes: int = 32 << 20):
        """Nearest-row search through F: for row-major samples ``X`` (B, N) and F of shape
        (K, N), ``labels[b] = argmin_k bias[k] + alpha · (X @ F.T)[b, k]`` and ``values[b]``
        the minimum (ties go to the smaller k; a NaN score wins, the first one, as
        ``numpy.argmin``). With ``bias = ‖v_k‖²`` and ``alpha = -2`` this is the K-means
        assignment to the rows v_k of F (add ‖x_b‖² to ``values`` for the squared distance).

        ``bias``: real (K,) array of X's namespace. Returns ``(labels, values)``: int32 (B,)
        and (B,) of the result dtype, in X's namespace. The (B, K) score matrix is never held
        whole. When F's leading factors (those applied last) are CSR or diagonal factors, the
        assignment is fused into their chain (Numba on the CPU, ``kernels/csr_chain.cu`` on
        the GPU): each of the last factor's rows is reduced into a running minimum per sample
        as soon as it is computed, so no K-sized score row is stored at all; a chain of CSR
        factors only (the QuickMeans centroid operator, a scalar or DiagFactor in front
        included) reads X once and writes labels and values once. Otherwise samples are
        processed in chunks of about ``chunk_bytes`` of scores. Cost O(nnz(F) · B).
        Raises ValueError on shape mismatches, TypeError on complex data and NumPy/CuPy mixes.

        Small batches (at most :data:`ARGMIN_SMALL_ROWS` C-contiguous float rows of F's dtype,
        NumPy, F a CSR chain) take a lean path: a few attribute checks, then the fused
        kernel's one-sample loop on the caller's array (nothing allocated but the outputs).
        """
        return self._argmin(X, bias, alpha, chunk_bytes)[:2]

    def _argmin(self, X, bias, alpha, chunk_bytes=32 << 20):
        """:meth:`argmin_affine`, returning ``(labels, values, finite)``: ``finite`` whether X
        holds no NaN or inf when the fused CPU kernels read X directly (found while loading
        it), None when not known (GPU, other factors applied first, the chunked path)."""
        got = self._argmin_small(X, bias, alpha) if type(chunk_bytes) is int and chunk_bytes >= 1 else None
        if got is not None:
            return got
        _check_operand(X)
        _check_operand(bias, "bias")
        get_backend(self, X, bias)
        K, n = self.shape
        if not hasattr(X, "ndim") or X.ndim != 2 or X.shape[1] != n:
            raise ValueError(f"X: expected shape (B, {n}), got {tuple(getattr(X, 'shape', ()))}")
        if not hasattr(bias, "ndim") or tuple(bias.shape) != (K,):
            raise ValueError(f"bias: expected shape ({K},), got {tuple(getattr(bias, 'shape', ()))}")
        if bias.dtype.kind not in "biuf":
            raise TypeError(f"bias: expected a real array, got dtype {bias.dtype}")
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real) or not np.isfinite(alpha):
            raise TypeError(f"alpha must be a finite real number, got {alpha!r}")
        chunk_bytes = check_int(chunk_bytes, "chunk_bytes", min_value=1)
        xp = self.backend.xp
        dt = self._result_dtype(X, "X")
        if dt.kind == "c":
            raise TypeError("argmin_affine needs a real operator and real X")
        B = X.shape[0]
        labels = xp.empty(B, dtype=xp.int32)
        values = xp.empty(B, dtype=dt)
        if B == 0:
            return labels, values, True
        b = xp.ascontiguousarray(bias.astype(dt, copy=False))
        a = dt.type(alpha)
        head = self._get_segments()[0]
        if isinstance(head, CSRChain) and head.argmin_fits(dt):
            return self._argmin_fused(head, X, b, a, labels, values, chunk_bytes)
        FT = self.T
        step = max(1, int(chunk_bytes // max(1, K * dt.itemsize)))
        for i in range(0, B, step):
            j = min(B, i + step)
            S = X[i:j] @ FT
            S *= a
            S += b
            lab = xp.argmin(S, axis=1)
            labels[i:j] = lab
            values[i:j] = xp.take_along_axis(S, lab[:, None], axis=1)[:, 0]
        return labels, values, None

    def _small_plan(self, dt):
        """The serial fused kernel's chain arguments for dtype ``dt`` (cached), or False when
        the lean path does not apply (GPU, a dtype other than F's, F not one CSR chain)."""
        plans = self._small
        if plans is None:
            plans = self._small = {}
        got = plans.get(dt)
        if got is None:
            got = False
            if not self.backend.is_gpu and dt == self._dtype and dt.kind == "f":
                head = self._get_segments()[0]
                if isinstance(head, CSRChain) and len(head.factors) == len(self._factors) and head.argmin_fits(dt):
                    plan, _, ip, ix, data = head.arrays(dt)
                    got = (plan, ip, ix, data) + head.buffer_rows(True)
            plans[dt] = got
        return got

    def _argmin_small(self, X, bias, alpha):
        """argmin_affine's lean path, or None when it does not apply (the general path then
        validates and raises as documented): X a C-contiguous NumPy (B, N) of F's float dtype,
        1 <= B <= ARGMIN_SMALL_ROWS, bias a contiguous (K,) of that dtype, alpha a finite
        Python number, F a CPU chain of CSR (and diagonal) factors. Same kernel as the general
        path's for such batches, so the same labels and values. Returns ``(labels, values,
        finite)``, ``finite`` whether X holds no NaN or inf (found while loading it)."""
        if (type(X) is not np.ndarray or type(bias) is not np.ndarray or X.ndim != 2
                or not 0 < X.shape[0] <= ARGMIN_SMALL_ROWS or X.shape[1] != self.shape[1]
                or bias.shape != (self.shape[0],) or bias.dtype != X.dtype
                or not (X.flags.c_contiguous and bias.flags.c_contiguous)
                or type(alpha) not in (float, int) or not math.isfinite(alpha)):
            return None
        dt = X.dtype
        plan = self._small_plan(dt)
        if plan is False:
            return None
        from ._kernels import cpu_sparse as k
        from .factors.base import _readonly

        B = X.shape[0]
        labels = np.empty(B, dtype=np.int32)
        values = np.empty(B, dtype=dt)
        p, ip, ix, data, r0, r1 = plan
        finite = k.csr_chain_argmin_serial(p, ip, ix, data, r0, r1, _readonly(X), True, _readonly(bias),
                                           dt.type(alpha), labels, values)
        return labels, values, finite

    def _argmin_fused(self, head, X, b, a, labels, values, chunk_bytes):
        """argmin_affine through the CSR chain ``head`` (F's leading factors): the other
        factors are applied first, in chunks of about ``chunk_bytes`` of their output."""
        dt = values.dtype
        rest = self._factors[len(head.factors):]
        if not rest and X.dtype == dt:  # one fused pass over the whole batch
            return labels, values, head.argmin_cols(X.T, b, a, labels, values)
        if rest:
            if self._rest is None:
                self._rest = FactorProduct(list(rest)).T
            width = self._rest.shape[1]
        else:
            width = X.shape[1]
        B = X.shape[0]
        step = max(1, int(chunk_bytes // max(1, width * dt.itemsize)))
        finite = True
        for i in range(0, B, step):
            j = min(B, i + step)
            Z = X[i:j] @ self._rest if rest else X[i:j].astype(dt)
            f = head.argmin_cols(Z.astype(dt, copy=False).T, b, a, labels[i:j], values[i:j])
            finite = None if f is None or finite is None else finite and f
        # X converted to dt: an overflow to inf also reads as non-finite (callers then check X);
        # other factors first: Z's finiteness says nothing certain about X's
        return labels, values, None if rest else finite

    def vjp(self, X, G, *, layout: str = "cols", input_grad: bool = True, factor_grads: bool = True):
        """Gradients through ``Y = F @ X`` (``layout="cols"``) or ``Y = X @ F.T`` (``"rows"``)
        given ``G = ∂ℓ/∂Y``: ``(grad_X, [grad of each factor's values])``; see
        :func:`gpufact.vjp`."""
        from ._vjp import vjp

        return vjp(self, X, G, layout=layout, input_grad=input_grad, factor_grads=factor_grads)

    def matvec(self, x):
        return self @ x

    def toarray(self):
        """Dense (M, N) matrix, F applied to the identity (O(N · nnz) time). Runs of CSR
        factors are applied one sparse product per factor (scipy / cupyx): a one-off apply
        to N columns gains nothing from the fused tile kernel, and a first call then compiles
        nothing (the QuickMeans centroid matrix is exported this way)."""
        xp = self.backend.xp
        n = self.shape[1]
        cur = xp.eye(n, dtype=self.dtype)
        for seg in reversed(self._get_segments()):
            out = xp.empty((seg.shape[0], n), dtype=self.dtype)
            if isinstance(seg, CSRChain):
                seg._per_factor(cur, out)
            else:
                seg.apply_cols(cur, out)
            cur = out
        return cur

    # --- norms -------------------------------------------------------------------------
    def norm(self, ord="fro", *, tol: float = 1e-6, max_iter: int = 200, seed=0):
        """``'fro'`` (exact, columns in chunks, never the full dense matrix) or ``2``
        (spectral, power iteration on FᴴF to relative accuracy ``tol``, at least 4 eps of
        F's precision). Sums of squares are scaled as LAPACK's norms do: right for F
        anywhere in its dtype's range (float32 1e-30 or 1e30). Returns a float."""
        xp = self.backend.xp
        if ord in ("fro", "f"):  # scaled sums of squares: right at any magnitude of the dtype
            if len(self._factors) == 1 and not isinstance(self._factors[0], PermFactor):
                f = self._factors[0]
                data = {"ks": "blocks", "dense": "matrix", "diag": "diag"}.get(f.kind)
                arr = getattr(f, data) if data else f.matrix.data
                return float(safe_norm(arr, xp))
            n = self.shape[1]
            chunk = max(1, min(n, (1 << 22) // max(1, self.shape[0])))
            total = SumSquares()
            for j0 in range(0, n, chunk):
                j1 = min(n, j0 + chunk)
                E = xp.zeros((n, j1 - j0), dtype=self.dtype)
                E[xp.arange(j0, j1), xp.arange(j1 - j0)] = 1
                total.add(self @ E, xp)
            return total.norm()
        if ord == 2:
            max_iter = check_int(max_iter, "max_iter", min_value=1)
            return float(spectral_norm(self, tol=tol, max_iter=max_iter, seed=seed))
        raise ValueError(f"ord must be 'fro' or 2, got {ord!r}")

    # --- interop -------------------------------------------------------------------------
    def aslinearoperator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (``cupyx`` one for CuPy) applying F."""
        LO = self.backend.linalg_operator
        # partials of operator.matmul, not closures: the operator pickles (joblib, Dask)
        fwd, adj = functools.partial(operator.matmul, self), functools.partial(operator.matmul, self.H)
        return LO(self.shape, matvec=fwd, rmatvec=adj, matmat=fwd, rmatmat=adj, dtype=self.dtype)

    def save(self, path) -> None:
        """Save to ``path`` (a name, ``.npz`` appended when missing, or a binary file object;
        format and round trip in :mod:`gpufact.io`): ``gpufact.load(path)`` reads it back."""
        from .io import save

        save(self, path)


def spectral_norm(F, *, tol=1e-6, max_iter=200, seed=0, x0=None, return_vector=False):
    """‖F‖₂ by power iteration on FᴴF (F: FactorProduct or anything with @ and .H/.T).

    Never densifies. Each step normalises between F and Fᴴ (u = F x / ‖F x‖, then
    x = Fᴴ u / ‖Fᴴ u‖, σ = √(‖F x‖ ‖Fᴴ u‖)) with overflow-safe norms, so no intermediate
    holds σ²: right for operators scaled anywhere in the dtype's range. Convergence is
    checked every 5 iterations (one host sync each). ``x0`` warm-starts the iteration;
    with ``return_vector`` the last iterate is returned. Returns a 0-d real array.
    """
    be = get_backend(F)
    xp = be.xp
    n = F.shape[1]
    if x0 is None:
        rng = check_seed(seed)
        x = xp.asarray(rng.standard_normal(n)).astype(np.result_type(F.dtype, np.float32))
    else:
        x = x0
    FH = F.H if hasattr(F, "H") else F.conj().T
    tol = max(float(tol), 4 * float(np.finfo(x.real.dtype).eps))  # below: rounding noise
    nrm = safe_norm(x, xp)
    if float(nrm) == 0:
        x = xp.ones(n, dtype=x.dtype)
        nrm = safe_norm(x, xp)
    x = x / nrm.astype(x.dtype)
    prev = 0.0
    sigma = xp.zeros((), dtype=x.real.dtype)
    for it in range(max_iter):
        u = F @ x
        nu = safe_norm(u, xp)
        y = FH @ (u / xp.where(nu > 0, nu, 1).astype(u.dtype))
        ny = safe_norm(y, xp)
        sigma = xp.sqrt(nu) * xp.sqrt(ny)
        if (it + 1) % 5 == 0 or it == max_iter - 1:
            s = float(sigma)
            if s == 0.0:
                break
            if abs(s - prev) <= tol * s:
                x = y / ny.astype(y.dtype)
                break
            prev = s
        x = y / xp.where(ny > 0, ny, 1).astype(y.dtype)
    out = sigma
    if return_vector:
        return out, x
    return out


def _max_abs(f: Factor) -> float:
    """max |entry| of a factor (host float; 1 for a permutation)."""
    if isinstance(f, KSFactor):
        a = f.blocks
    elif isinstance(f, DiagFactor):
        a = f.diag
    elif isinstance(f, DenseFactor):
        a = f.matrix
    elif isinstance(f, CSRFactor):
        a = f.matrix.data
    else:
        return 1.0
    return float(abs(a).max()) if a.size else 0.0


def scale_in_range(F: "FactorProduct", alpha, exp2: int = 0) -> "FactorProduct":
    """alpha · 2^exp2 · F for a host scalar alpha (float or complex) and an int exp2, the
    whole of any magnitude (even beyond float64's range): folded into the first factor when
    its entries stay well inside F's dtype's range (F * alpha·2^exp2), else alpha = m · 2^e
    split, m into the first factor and 2^(e + exp2) spread over all factors as powers of two
    (exact), so that a product every factor of which is representable is returned although
    the scale or the first factor times it is not (e.g. PALM's λ of a matrix near its dtype's
    maximum)."""
    alpha = complex(alpha) if isinstance(alpha, complex) or np.iscomplexobj(alpha) else float(alpha)
    if alpha == 0:
        return F * alpha
    m, e = np.frexp(abs(alpha))  # |alpha| = m 2^e, m in [0.5, 1)
    m, e = float(m), int(e) + int(exp2)  # Python scalars: F's precision is kept
    unit = alpha / abs(alpha) * m  # alpha 2^exp2 = unit 2^e exactly
    mx = _max_abs(F.factors[0])
    big_e = int(np.frexp(float(np.finfo(F.dtype).max))[1]) - 4
    if mx == 0 or (e + int(np.frexp(mx)[1]) <= big_e and e > -big_e):
        return F * (unit * 2.0 ** e)  # |e| < 1024 here: no Python overflow
    J = len(F.factors)
    parts = [e // J + (1 if j < e % J else 0) for j in range(J)]
    factors = [_scaled(f, (unit if j == 0 else 1.0) * 2.0 ** p) for j, (f, p) in enumerate(zip(F.factors, parts))]
    return FactorProduct(factors)


def _scaled(f: Factor, alpha) -> Factor:
    if isinstance(f, KSFactor):
        return KSFactor(f.blocks * alpha)
    if isinstance(f, DenseFactor):
        return DenseFactor(f.matrix * alpha)
    if isinstance(f, DiagFactor):
        return DiagFactor(f.diag * alpha)
    if isinstance(f, CSRFactor):
        return CSRFactor(f.matrix * alpha)
    # permutation P: alpha P is a CSR factor with P's support
    xp = f.backend.xp
    n = f.shape[0]
    vals = xp.full(n, alpha, dtype=np.result_type(f.dtype, alpha))  # a Python scalar keeps f's precision
    return CSRFactor(f.backend.sparse.csr_matrix((vals, f.perm, xp.arange(n + 1)), shape=f.shape))
