"""Random-feature transforms (gpufact.kernel_approximation) against scikit-learn's RBFSampler,
NumPy and CuPy. Offline: ``cd asv_bench && asv run --python=same --quick -b Kernel``."""
import numpy as np
from sklearn.kernel_approximation import RBFSampler

from gpufact.kernel_approximation import Fastfood, StructuredOrthogonalFeatures

from ._backends import _xp


_METHODS = {"sorf": StructuredOrthogonalFeatures, "fastfood": Fastfood, "rbfsampler": RBFSampler}


class KernelFeatures:
    params = (["numpy", "cupy"], ["sorf", "fastfood", "rbfsampler"], [4096, 16384], ["float32"])
    param_names = ["backend", "method", "D", "dtype"]
    timeout = 300

    def setup(self, backend, method, D, dtype):
        xp = self.xp = _xp(backend)
        if method == "rbfsampler" and xp is not np:
            raise NotImplementedError("RBFSampler is NumPy only")
        X = np.random.default_rng(0).random((256, 784)).astype(dtype)
        self.X = xp.asarray(X)
        self.est = _METHODS[method](gamma=1.0 / 100, n_components=D, random_state=0).fit(self.X)
        self.est.transform(self.X)  # warm-up (JIT, kernel compilation)

    def time_transform(self, backend, method, D, dtype):
        self.est.transform(self.X)
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()
