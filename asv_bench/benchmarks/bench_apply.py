"""Apply time and peak memory of FactorProduct @ X (Hadamard butterflies), NumPy and CuPy.

Offline: ``cd asv_bench && asv run --python=same --quick``.
"""
import numpy as np

from gpufact import transforms

from ._backends import _xp


class Apply:
    params = (["numpy", "cupy"], [2 ** 8, 2 ** 10, 2 ** 12, 2 ** 14], [1, 64, 1024], ["float32", "float64"])
    param_names = ["backend", "N", "B", "dtype"]
    timeout = 120

    def setup(self, backend, N, B, dtype):
        xp = self.xp = _xp(backend)
        self.F = transforms.hadamard(N, dtype=dtype, xp=xp)
        self.X = xp.asarray(np.random.default_rng(0).standard_normal((N, B)).astype(dtype))
        self.F @ self.X  # warm-up (JIT / kernel compilation) outside the timed region

    def time_apply(self, backend, N, B, dtype):
        self.F @ self.X
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()

    def time_apply_rows(self, backend, N, B, dtype):
        self.X.T @ self.F.T
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()

    def peakmem_apply(self, backend, N, B, dtype):
        self.F @ self.X


class ApplyDFT:
    """The DFT (butterflies and the bit-reversal permutation) on complex data: the planar
    complex tiles and the permutation gather, column batches and row-major samples."""

    params = (["numpy", "cupy"], [2 ** 10, 2 ** 12], [1, 1024], ["complex64", "complex128"])
    param_names = ["backend", "N", "B", "dtype"]
    timeout = 120

    def setup(self, backend, N, B, dtype):
        xp = self.xp = _xp(backend)
        self.F = transforms.dft(N, dtype=dtype, xp=xp)
        self.FT = self.F.T
        rng = np.random.default_rng(0)
        X = (rng.standard_normal((N, B)) + 1j * rng.standard_normal((N, B))).astype(dtype)
        self.X = xp.asarray(X)
        self.Xr = xp.asarray(np.ascontiguousarray(X.T))  # samples as rows
        self.F @ self.X
        self.Xr @ self.FT

    def time_apply(self, backend, N, B, dtype):
        self.F @ self.X
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()

    def time_apply_rows(self, backend, N, B, dtype):
        self.Xr @ self.FT
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()


class Baselines:
    """The yardsticks of benchmarks/apply.py on the same Hadamard cases: dense matmul by the
    N x N matrix and a plain copy of X (the floor of any pass over the batch)."""

    params = ([2 ** 10, 2 ** 12], [1, 64, 1024])
    param_names = ["N", "B"]
    timeout = 120

    def setup(self, N, B):
        self.D = transforms.hadamard_dense(N, dtype=np.float32)
        self.X = np.random.default_rng(0).standard_normal((N, B)).astype(np.float32)

    def time_dense(self, N, B):
        self.D @ self.X

    def time_copy(self, N, B):
        self.X.copy()


class ApplyRadix:
    """The CPU apply's two kernels on the same butterfly chains: ``radix2`` (one sweep of the
    tile per factor, gpufact._kernels.cpu) and ``passes`` (radix-2^R passes, two factors per
    load and store, gpufact._kernels.cpu_radix), column batches and row-major samples: the
    before/after of benchmarks/apply.py."""

    params = (["radix2", "passes"], [2 ** 10, 2 ** 12], [64, 1024], ["float32", "complex64"])
    param_names = ["kernel", "N", "B", "dtype"]
    timeout = 120

    def setup(self, kernel, N, B, dtype):
        from gpufact.factors import _chain

        self._chain = _chain
        self.on = kernel == "passes"
        self.F = transforms.hadamard(N, dtype=dtype) if dtype == "float32" else transforms.dft(N, dtype=dtype)
        X = np.random.default_rng(0).standard_normal((N, B)).astype(dtype)
        self.X, self.Xr = X, np.ascontiguousarray(X.T)
        self._run(lambda: (self.F @ self.X, self.Xr @ self.F.T))

    def _run(self, fn):
        self._chain._RADIX_PASSES = self.on
        try:
            return fn()
        finally:
            self._chain._RADIX_PASSES = True

    def time_apply(self, kernel, N, B, dtype):
        self._run(lambda: self.F @ self.X)

    def time_apply_rows(self, kernel, N, B, dtype):
        self._run(lambda: self.Xr @ self.F.T)
