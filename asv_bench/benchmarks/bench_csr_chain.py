"""The fused CSR-chain assignment ``FactorProduct.argmin_affine`` and the fused chain apply
``X @ F.T`` on the QuickMeans centroid operator (K x A, A x A, ..., A x D splincol(3)
factors), NumPy and CuPy.

Offline: ``cd asv_bench && asv run --python=same --quick``.
"""
import numpy as np

from gpufact import CSRFactor, FactorProduct, gpu_available, proj

from ._backends import _xp


def centroid_operator(K, D, Q, xp, dtype, s=3):
    rng = np.random.default_rng(0)
    A = min(K, D)
    shapes = [(K, A)] + [(A, A)] * (Q - 2) + [(A, D)]
    F = FactorProduct([CSRFactor(np.asarray(proj.splincol(sh, s)(rng.standard_normal(sh)))) for sh in shapes])
    return F.astype(dtype).to_device("cpu" if xp is np else "gpu")


class CSRChainAssign:
    params = (["numpy", "cupy"], [(256, 784, 8), (512, 2000, 10)], [1, 10_000], ["float32", "float64"])
    param_names = ["backend", "K_D_Q", "B", "dtype"]
    timeout = 180

    def setup(self, backend, K_D_Q, B, dtype):
        xp = self.xp = _xp(backend)
        K, D, Q = K_D_Q
        self.F = centroid_operator(K, D, Q, xp, dtype)
        V = self.F.toarray()
        self.bias = (V * V).sum(axis=1)
        self.X = xp.asarray(np.random.default_rng(1).standard_normal((B, D)).astype(dtype))
        self.F.argmin_affine(self.X, self.bias)  # warm-up (JIT / kernel compilation)
        self.X @ self.F.T

    def _sync(self):
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()

    def time_argmin_affine(self, backend, K_D_Q, B, dtype):
        self.F.argmin_affine(self.X, self.bias)
        self._sync()

    def time_apply_rows(self, backend, K_D_Q, B, dtype):
        self.X @ self.F.T
        self._sync()

    def peakmem_argmin_affine(self, backend, K_D_Q, B, dtype):
        self.F.argmin_affine(self.X, self.bias)
