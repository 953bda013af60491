"""Fused application of consecutive general sparse (CSR) factors, and the fused assignment
(argmin over ``bias[k] + alpha · (chain @ x)[k]``): Numba on the CPU, CUDA on the GPU."""
from __future__ import annotations

import numpy as np

from .base import _readonly
from .csr import CSRFactor
from .diag import DiagFactor

# CPU: beyond this many bytes for a tile of 8 samples the chain is not cache-resident any
# more; such chains (dimensions in the hundreds of thousands) run factor by factor (SpMM).
_CPU_MAX_TILE8_BYTES = 16 << 20


def _csr_arrays(f, xp):
    """(indptr, indices, data) of a CSR or diagonal factor, in its namespace."""
    if isinstance(f, DiagFactor):
        n = f.shape[0]
        return xp.arange(n + 1), xp.arange(n), f.diag
    m = f.matrix
    return m.indptr, m.indices, m.data


def _entry_rows(indptr, nnz, xp):
    """Row index of every stored entry (searchsorted: no array-valued repeat in CuPy)."""
    return xp.searchsorted(indptr.astype(np.int64), xp.arange(nnz, dtype=np.int64), side="right") - 1


class CSRChain:
    """Consecutive CSR (and diagonal) factors ``S_1 … S_k`` (product order), applied in one
    fused pass over the batch; a diagonal factor is folded into its neighbour's values.

    The factors are concatenated in application order (S_k first) once per dtype and
    cached (:meth:`arrays`); see ``gpufact/_kernels/cpu_sparse.py`` for the layout.
    """

    def __init__(self, factors):
        self.factors = list(factors)
        if not any(isinstance(f, CSRFactor) for f in self.factors):
            raise ValueError("a CSR chain needs at least one CSRFactor")
        if not all(isinstance(f, (CSRFactor, DiagFactor)) for f in self.factors):
            raise TypeError("a CSR chain holds CSRFactor and DiagFactor only")
        self.backend = self.factors[0].backend
        self.shape = (self.factors[0].shape[0], self.factors[-1].shape[1])
        self.dtype = np.result_type(*[f.dtype for f in self.factors])
        self._mats = None
        self._cache = {}

    # --- the concatenated chain ---------------------------------------------------------
    def mats(self):
        """The chain in application order after folding diagonals: a list of
        (indptr, indices, data, (m, n)) in the backend's namespace, data of the chain's dtype."""
        if self._mats is None:
            xp = self.backend.xp
            items = []  # product order: ("csr", triple, shape) or ("diag", vector)
            for f in self.factors:
                if isinstance(f, DiagFactor):
                    items.append(["diag", f.diag.astype(self.dtype, copy=False)])
                else:
                    ip, ix, d = _csr_arrays(f, xp)
                    items.append(["csr", (ip, ix, d.astype(self.dtype, copy=False)), f.shape])
            j = 0
            while j < len(items):
                if items[j][0] != "diag":
                    j += 1
                    continue
                v = items.pop(j)[1]
                if j < len(items):  # D @ next: scale the next factor's rows (or diagonal)
                    nxt = items[j]
                    if nxt[0] == "diag":
                        nxt[1] = v * nxt[1]
                    else:
                        ip, ix, d = nxt[1]
                        nxt[1] = (ip, ix, d * v[_entry_rows(ip, d.shape[0], xp)])
                else:  # previous @ D: scale the previous (CSR) factor's columns
                    ip, ix, d = items[j - 1][1]
                    items[j - 1][1] = (ip, ix, d * v[ix])
            self._mats = [(ip, ix, d, shape) for _, (ip, ix, d), shape in reversed(items)]
        return self._mats

    def arrays(self, dtype):
        """(plan (host int64 (J, 3)), plan on the device, indptr int64, indices int32, data
        of ``dtype``), concatenated in application order, cached per dtype."""
        dt = np.dtype(dtype)
        got = self._cache.get(dt)
        if got is None:
            xp = self.backend.xp
            mats = self.mats()
            plan = np.zeros((len(mats), 3), dtype=np.int64)
            ptrs, idxs, datas = [], [], []
            p_off = nnz_off = 0
            for j, (ip, ix, d, (m, n)) in enumerate(mats):
                plan[j] = (m, n, p_off)
                ptrs.append(ip[:m].astype(np.int64) + nnz_off)
                idxs.append(ix.astype(np.int32, copy=False))
                datas.append(d.astype(dt, copy=False))
                p_off += m
                nnz_off += int(d.shape[0])
            ptrs.append(xp.asarray([nnz_off], dtype=np.int64))
            got = (plan, xp.asarray(plan), xp.concatenate(ptrs), xp.concatenate(idxs),
                   xp.concatenate(datas))
            self._cache[dt] = got
        return got

    def buffer_rows(self, argmin: bool):
        """Rows of the two ping-pong tile buffers: the largest state each holds (the input,
        then every step's output alternately; with ``argmin`` not the last output)."""
        rows = self._cache.get(("rows", argmin))
        if rows is None:
            dims = [self.mats()[0][3][1]] + [s[0] for *_, s in self.mats()]
            if argmin:
                dims = dims[:-1]
            rows = self._cache[("rows", argmin)] = (max(dims[0::2]), max(dims[1::2], default=0))
        return rows

    # --- apply ----------------------------------------------------------------------------
    def apply_cols(self, Xc, out):
        """out (M, B) <- chain @ Xc (N, B); both logical column views, out preallocated."""
        if out.size == 0:
            return out
        if Xc.dtype != out.dtype:
            Xc = Xc.astype(out.dtype)
        if self.backend.is_gpu:
            return self._apply_gpu(Xc, out)
        return self._apply_cpu(Xc, out)

    def _per_factor(self, Xc, out):
        """One SpMM per factor (chains too large for a cache- or shared-memory tile)."""
        xp = self.backend.xp
        cur = Xc
        facs = list(reversed(self.factors))
        for j, f in enumerate(facs):
            dst = out if j == len(facs) - 1 else xp.empty((f.shape[0], Xc.shape[1]), dtype=out.dtype)
            f.apply_cols(cur, dst)
            cur = dst
        return out

    @staticmethod
    def _cpu_views(Xc, out):
        """The C-contiguous NumPy array behind Xc, read-only (a view: the kernels are then
        compiled once per dtype, whether the caller's array is writable, read-only or
        memory-mapped), whether it holds samples as rows, and the same for ``out``."""
        X = np.asarray(Xc)  # a plain ndarray view (np.memmap and other subclasses)
        if X.flags.c_contiguous:
            X, x_rows = X, False
        elif X.T.flags.c_contiguous:
            X, x_rows = X.T, True
        else:
            X, x_rows = np.ascontiguousarray(X), False
        X = _readonly(X)
        if out is None:
            return X, x_rows, None, False
        if out.flags.c_contiguous:
            return X, x_rows, out, False
        if out.T.flags.c_contiguous:
            return X, x_rows, out.T, True
        raise ValueError("out must be C- or F-contiguous")

    def _cpu_fits(self, dt):
        r0, r1 = self.buffer_rows(False)
        return (r0 + r1) * 8 * dt.itemsize <= _CPU_MAX_TILE8_BYTES

    def _apply_cpu(self, Xc, out):
        from .._kernels import cpu_sparse as k

        dt = out.dtype
        if not self._cpu_fits(dt):
            return self._per_factor(Xc, out)
        plan, _, ip, ix, data = self.arrays(dt)
        r0, r1 = self.buffer_rows(False)
        X, x_rows, Y, y_rows = self._cpu_views(Xc, out)
        B = Xc.shape[1]
        if B <= k.SMALL_B:
            k.csr_chain_apply_serial(plan, ip, ix, data, r0, r1, X, x_rows, Y, y_rows)
            return out
        import numba

        threads = numba.get_num_threads()
        bt = k.tile_width(r0 + r1, dt.itemsize, B, threads)
        k.csr_chain_apply(plan, ip, ix, data, r0, r1, X, x_rows, Y, y_rows, bt, threads)
        return out

    def _gpu_view(self, Xc):
        """Xc, or a C-contiguous copy where its strides are negative or not whole elements
        (the kernels address batches with two non-negative element strides)."""
        if all(s >= 0 and s % Xc.itemsize == 0 for s in Xc.strides):
            return Xc
        return self.backend.xp.ascontiguousarray(Xc)

    def _apply_gpu(self, Xc, out):
        from .._kernels import cuda

        Xc = self._gpu_view(Xc)

        dt = out.dtype
        r0, r1 = self.buffer_rows(False)
        bt = cuda.csr_chain_tile(r0 + r1, dt, Xc.shape[1])
        if bt == 0:
            return self._per_factor(Xc, out)
        _, plan, ip, ix, data = self.arrays(dt)
        return cuda.csr_chain_apply(plan, ip, ix, data, r0, r1, bt, Xc, out)

    # --- assignment -----------------------------------------------------------------------
    def argmin_fits(self, dtype) -> bool:
        """Whether :meth:`argmin_cols` runs fused for ``dtype`` on this backend."""
        dt = np.dtype(dtype)
        fits = self._cache.get(("fits", dt))
        if fits is None:
            r0, r1 = self.buffer_rows(True)
            if self.backend.is_gpu:
                from .._kernels import cuda

                fits = cuda.csr_chain_tile(r0 + r1, dt, 1, argmin=True) > 0
            else:
                fits = (r0 + r1) * 8 * dt.itemsize <= _CPU_MAX_TILE8_BYTES
            self._cache[("fits", dt)] = fits
        return fits

    def argmin_cols(self, Xc, bias, alpha, labels, values):
        """labels (B,) int32, values (B,) <- argmin / min over k of bias[k] + alpha ·
        (chain @ Xc)[k, b] for a logical (N, B) view Xc of the values' (real) dtype;
        ``bias`` contiguous (K,) of that dtype, ``alpha`` a scalar of it. Needs
        :meth:`argmin_fits`. Returns whether Xc is finite (no NaN, no inf; found by the CPU
        kernels while loading it), None where not known (GPU)."""
        B = Xc.shape[1]
        if B == 0:
            return True
        dt = values.dtype
        plan_h, plan_d, ip, ix, data = self.arrays(dt)
        r0, r1 = self.buffer_rows(True)
        if self.backend.is_gpu:
            from .._kernels import cuda

            bt = cuda.csr_chain_tile(r0 + r1, dt, B, argmin=True)
            cuda.csr_chain_argmin(plan_d, ip, ix, data, r0, r1, bt, self._gpu_view(Xc), bias, alpha, labels, values)
            return None
        from .._kernels import cpu_sparse as k

        X, x_rows, _, _ = self._cpu_views(Xc, None)
        bias = _readonly(bias)
        if B <= k.SMALL_B:
            return bool(k.csr_chain_argmin_serial(plan_h, ip, ix, data, r0, r1, X, x_rows, bias, alpha, labels,
                                                  values))
        import numba

        threads = numba.get_num_threads()
        bt = k.tile_width(r0 + r1 + 3, dt.itemsize, B, threads)
        fixed = k.fixed_width(bt, dt.itemsize, B, threads)
        if fixed:
            return bool(k.argmin_fixed(fixed)(plan_h, ip, ix, data, r0, r1, X, x_rows, bias, alpha, labels, values,
                                              threads))
        return bool(k.csr_chain_argmin(plan_h, ip, ix, data, r0, r1, X, x_rows, bias, alpha, labels, values, bt,
                                       threads))
