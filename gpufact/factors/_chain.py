"""Fused application of consecutive Kronecker-sparse factors (CPU: Numba, GPU: CUDA)."""
from __future__ import annotations

import numpy as np

from .._kernels import cpu_kernels
from .._kernels.plan import KIND_RADIX2, make_plan, radix_passes

_SMALL_B = 8  # up to this many samples: one tile on one thread
# multiply-adds (nnz x samples) below which one thread beats several: starting the pool's
# threads costs tens of microseconds (N = 1024, B = 64: 0.13 ms on one thread, 0.17 ms on two
# before, under prange)
_PARALLEL_WORK = 1 << 22
# chains with butterfly steps run in radix-2^R passes (cpu_radix); False: every chain on the
# radix-2 tile kernels of cpu.py (kept for chains of generic steps, and for the benchmark)
_RADIX_PASSES = True
_DIRECT = True  # real column batches of square butterfly chains: passes on Y's columns, no tiles


class KSChain:
    """Consecutive KS factors ``S_1 … S_k`` (product order) applied in one fused pass.

    Weights are concatenated in application order (S_k first) once per dtype and cached.
    """

    def __init__(self, factors):
        self.factors = list(factors)
        self.patterns = [f.pattern for f in reversed(self.factors)]  # application order
        self.plan, self.offsets, self.maxdim = make_plan(self.patterns)
        self.backend = self.factors[0].backend
        self._w = {}
        self._gpu_meta = None
        self._gpu_passes = {}
        self._pass_host = {}
        self.shape = (self.factors[0].shape[0], self.factors[-1].shape[1])
        self._nnz = sum(a * b * c * d for a, b, c, d in self.patterns)
        self._passes = {}  # radix_passes of the plan by pass radix, made on the first CPU call

    def _radix_passes(self, radix_log2):
        """The plan's CPU passes of radix at most 2^radix_log2 (``plan.radix_passes``), cached."""
        passes = self._passes.get(radix_log2)
        if passes is None:
            passes = self._passes[radix_log2] = radix_passes(self.plan, radix_log2)
        return passes

    def weights(self, dtype):
        dt = np.dtype(dtype)
        w = self._w.get(dt)
        if w is None:
            xp = self.backend.xp
            w = xp.concatenate([f.blocks.astype(dt, copy=False).ravel() for f in reversed(self.factors)])
            self._w[dt] = w
        return w

    def refresh(self) -> None:
        """Forget the cached weight copies: the factors' blocks were changed in place (a
        training step on views of a framework's parameters, :mod:`gpufact.torch`)."""
        self._w.clear()

    def weights_serial(self, dtype):
        """The weights in the layout of the one-sample kernel (``cpu.serial_weights``: butterfly
        blocks entry-major), cached per dtype (CPU only)."""
        dt = np.dtype(dtype)
        key = ("serial", dt)
        w = self._w.get(key)
        if w is None:
            from .._kernels.cpu import serial_weights

            w = self._w[key] = serial_weights(self.weights(dt), self.plan)
        return w

    def weights_planar(self, dtype):
        """Complex weights as (real parts, imaginary parts), contiguous, cached per dtype."""
        dt = np.dtype(dtype)
        key = ("planar", dt)
        w = self._w.get(key)
        if w is None:
            c = self.weights(dt)
            w = self._w[key] = (np.ascontiguousarray(c.real), np.ascontiguousarray(c.imag))
        return w

    # --- GPU: fused butterfly chain when every factor is a square power-of-two butterfly
    def _butterfly_meta(self):
        if self._gpu_meta is None:
            N = self.shape[0]
            ok = N == self.shape[1] and N >= 2 and (N & (N - 1)) == 0
            rows = []
            for (a, b, c, d), off in zip(self.patterns, self.offsets):
                ok = ok and b == 2 and c == 2 and a * 2 * d == N and (d & (d - 1)) == 0
                rows.append((d.bit_length() - 1, off))
            if ok:
                self._bf_rows = rows
                self._gpu_meta = self.backend.xp.asarray(np.asarray(rows, dtype=np.int64))
            else:
                self._gpu_meta = False
        return self._gpu_meta

    def _butterfly_passes(self, radix_log2):
        """Radix-2^R pass plan (device array) of a butterfly chain, cached per radix."""
        passes = self._gpu_passes.get(radix_log2)
        if passes is None:
            from .._kernels.plan import butterfly_passes

            lds, offs = zip(*self._bf_rows)
            host = butterfly_passes(lds, offs, radix_log2)
            self._pass_host[radix_log2] = host
            passes = self.backend.xp.asarray(host)
            self._gpu_passes[radix_log2] = passes
        return passes

    def reads_input_perm(self, dtype, B) -> bool:
        """Whether :meth:`apply_cols` of a result ``dtype`` and B samples takes ``in_perm``:
        CPU, complex products through the radix passes' planar tiles, B > _SMALL_B (DFT
        N = 4096, B = 1024 complex64 on an Intel Xeon: 1.41x / 1.31x faster, column / row
        batches). Real column batches keep the permutation's own gather and the direct mode
        (a permuted read of X's rows into tiles was 1.6x slower than both)."""
        return (not self.backend.is_gpu and np.dtype(dtype).kind == "c" and B > _SMALL_B and _RADIX_PASSES
                and bool((self.plan[:, 0] == KIND_RADIX2).any()))

    def apply_cols(self, Xc, out, in_perm=None):
        """out (M, B) <- chain @ Xc (N, B); both logical column views, out preallocated.
        ``in_perm``: a permutation of Xc's rows applied first, (P X)_i = X[in_perm[i]] (a
        :class:`PermFactor` before the chain, as the DFT's bit reversal), read through by the
        tile loads (no pass over memory, no copy of X); only where :meth:`reads_input_perm`."""
        if out.size == 0:
            return out
        if in_perm is not None and not self.reads_input_perm(out.dtype, Xc.shape[1]):
            raise ValueError("in_perm: this chain, dtype and batch size do not read a permutation through")
        if self.backend.is_gpu:
            return self._apply_gpu(Xc, out)
        return self._apply_cpu(Xc, out, in_perm)

    def _apply_cpu(self, Xc, out, in_perm=None):
        k = cpu_kernels()
        dt = out.dtype
        # convert, except a real batch into a complex product: the planar tiles load it as is
        if Xc.dtype != dt and not (dt.kind == "c" and Xc.dtype == np.finfo(dt).dtype):
            Xc = Xc.astype(dt)
        if Xc.flags.c_contiguous:
            X, x_rows = Xc, False
        elif Xc.T.flags.c_contiguous:
            X, x_rows = Xc.T, True
        else:
            X, x_rows = np.ascontiguousarray(Xc), False
        if out.flags.c_contiguous:
            Y, y_rows = out, False
        elif out.T.flags.c_contiguous:
            Y, y_rows = out.T, True
        else:
            raise ValueError("out must be C- or F-contiguous")
        B = Xc.shape[1]
        if B <= _SMALL_B:  # one tile, one thread
            k.ks_chain_apply_serial(self.weights_serial(dt), self.plan, self.maxdim, X, x_rows, Y, y_rows,
                                    True if dt.kind == "c" else None)
            return out
        import numba

        threads = numba.get_num_threads() if self._nnz * B >= _PARALLEL_WORK else 1
        if _RADIX_PASSES and (self.plan[:, 0] == KIND_RADIX2).any():
            from .._kernels import cpu_radix

            w = self.weights_planar(dt) if dt.kind == "c" else (self.weights(dt), None)
            bt = 0
            passes = self._radix_passes(cpu_radix.DIRECT_RADIX_LOG2)
            if (_DIRECT and dt.kind == "f" and not (x_rows or y_rows) and X.dtype == dt and X.shape == Y.shape
                    and X.flags.writeable and not np.may_share_memory(X, Y) and (passes[:, 0] > 0).all()):
                bt = cpu_radix.direct_width(self.maxdim, dt.itemsize, B, threads)
            direct = bt > 0
            if not direct:
                bt = cpu_radix.tile_width(self.maxdim, dt, B, threads, x_rows or y_rows)
                passes = self._radix_passes(cpu_radix.MAX_RADIX_LOG2)
            cpu_radix.ks_chain_apply_radix(*w, self.plan, passes, self.maxdim, X, x_rows, Y, y_rows, bt,
                                           threads, direct, in_perm=in_perm)
            return out
        bt = k.tile_width(self.maxdim, dt.itemsize, B, threads, x_rows or y_rows)
        if dt.kind == "c":  # complex tiles held planar (real vector FMAs, no shuffles)
            wr, wi = self.weights_planar(dt)
            k.ks_chain_apply_planar(wr, wi, self.plan, self.maxdim, X, x_rows, Y, y_rows, bt, threads)
        else:
            k.ks_chain_apply(self.weights(dt), self.plan, self.maxdim, X, x_rows, Y, y_rows, bt, threads)
        return out

    def _apply_gpu(self, Xc, out):
        from .._kernels import cuda

        xp = self.backend.xp
        dt = out.dtype
        if Xc.dtype != dt:
            Xc = Xc.astype(dt)
        N = self.shape[1]
        meta = self._butterfly_meta()
        if meta is not False:
            kernel = cuda.butterfly_kernel()
            if kernel == "passes" and Xc.strides[1] == Xc.itemsize and out.strides[1] == out.itemsize:
                R = cuda.pass_radix_log2(dt)
                passes = self._butterfly_passes(R)
                if (N >> int(self._pass_host[R][:, 0].min())) <= cuda.MAX_GRID_Y:
                    return cuda.bf_pass_cols_apply(self.weights(dt), self._pass_host[R], passes, N, Xc, out)
            if kernel == "radix":
                if cuda.bf_radix_tile(N, dt.itemsize, cuda._smem_limit(dt.name, "bf_chain_apply_radix")):
                    passes = self._butterfly_passes(cuda.radix_log2(dt))
                    return cuda.bf_chain_apply_radix(self.weights(dt), passes, N, Xc, out)
            elif cuda.bf_chain_tile(N, dt.itemsize, cuda._smem_limit(dt.name)):
                return cuda.bf_chain_apply(self.weights(dt), meta, N, Xc, out)
        # one pass per factor, ping-pong through at most two work buffers
        cur = Xc
        rows_layout = not out.flags.c_contiguous
        for j, f in enumerate(reversed(self.factors)):
            last = j == len(self.factors) - 1
            if last:
                dst = out
            else:
                m = f.shape[0]
                dst = xp.empty((out.shape[1], m), dtype=dt).T if rows_layout else xp.empty((m, out.shape[1]), dtype=dt)
            cuda.ks_factor_apply(f.blocks.astype(dt, copy=False), cur, dst)
            cur = dst
        return out


def ks_chain_apply_cols(factors, Xc, out):
    return KSChain(factors).apply_cols(Xc, out)
