"""Gradients through butterfly chains (gpufact.vjp, NumPy and CuPy) and the KSLinear layer's
forward + backward against torch.nn.Linear (CPU, where torch is installed).

Offline: ``cd asv_bench && asv run --python=same --quick --bench Layers``.
"""
import numpy as np

from gpufact import transforms, vjp

from ._backends import _xp


class Vjp:
    params = (["numpy", "cupy"], [2 ** 10, 2 ** 12], [256, 1024], ["float32", "float64"])
    param_names = ["backend", "N", "B", "dtype"]
    timeout = 120

    def setup(self, backend, N, B, dtype):
        xp = self.xp = _xp(backend)
        self.F = transforms.random_butterfly(N, dtype=dtype, seed=0, xp=xp)
        rng = np.random.default_rng(0)
        self.X = xp.asarray(rng.standard_normal((B, N)).astype(dtype))
        self.G = xp.asarray(rng.standard_normal((B, N)).astype(dtype))
        vjp(self.F, self.X, self.G, layout="rows")  # warm-up (compilation) outside the timed region

    def time_vjp_rows(self, backend, N, B, dtype):
        vjp(self.F, self.X, self.G, layout="rows")
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()

    def peakmem_vjp_rows(self, backend, N, B, dtype):
        vjp(self.F, self.X, self.G, layout="rows")


class Layers:
    params = (["ks-butterfly", "ks-monarch", "dense"], [1024, 4096], [256, 1024])
    param_names = ["layer", "N", "B"]
    timeout = 300

    def setup(self, layer, N, B):
        try:
            import torch
        except ImportError:
            raise NotImplementedError("torch not installed")
        from gpufact.torch import KSLinear

        torch.manual_seed(0)
        if layer == "dense":
            self.layer = torch.nn.Linear(N, N)
        else:
            self.layer = KSLinear(N, N, structure=layer.split("-")[1])
        self.x = torch.randn(B, N, requires_grad=True)
        self.g = torch.randn(B, N)
        self.time_forward_backward(layer, N, B)  # warm-up

    def time_forward(self, layer, N, B):
        import torch

        with torch.no_grad():
            self.layer(self.x)

    def time_forward_backward(self, layer, N, B):
        self.layer.zero_grad(set_to_none=True)
        self.layer(self.x).backward(self.g)
