"""QuickMeans: predict (assignment through the factorized centroids) and one Lloyd iteration.

Offline: ``cd asv_bench && asv run --python=same --quick -b QuickMeans``.
"""
import numpy as np

from gpufact.cluster import QuickMeans
from gpufact.cluster import _lloyd

from ._backends import _xp


def _sync(xp):
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def _data(n, D, K, seed=0):
    rng = np.random.default_rng(seed)
    C = rng.uniform(-10, 10, (K, D))
    return (C[rng.integers(0, K, n)] + rng.standard_normal((n, D))).astype(np.float32)


class QuickMeansPredict:
    params = (["numpy", "cupy"], [64, 256], [1, 10_000])
    param_names = ["backend", "K", "B"]
    timeout = 300

    def setup_cache(self):
        out = {}
        for K in self.params[1]:
            X = _data(4 * K, 784, K)
            out[K] = QuickMeans(K, sparsity=3, max_iter=1, palm_max_iter=5, random_state=0).fit(X)
        return out

    def setup(self, models, backend, K, B):
        xp = self.xp = _xp(backend)
        if xp is np:
            self.qm = models[K]
        else:  # fitted on the device (the fit is not timed)
            self.qm = QuickMeans(K, sparsity=3, max_iter=1, palm_max_iter=5, random_state=0).fit(
                xp.asarray(_data(4 * K, 784, K)))
        self.X = xp.asarray(_data(B, 784, K, seed=1))
        self.qm.predict(self.X)  # warm-up (compilation)

    def time_predict(self, models, backend, K, B):
        self.qm.predict(self.X)
        _sync(self.xp)


class LloydIteration:
    """One Lloyd iteration of QuickMeans: the assignment pass (labels, sums, counts, inertia
    through the factorized centroids), then the warm-started PALM centroid update."""

    params = (["numpy", "cupy"], [64])
    param_names = ["backend", "K"]
    timeout = 300

    def setup(self, backend, K):
        from gpufact.cluster._centroids import SplincolCentroids

        xp = self.xp = _xp(backend)
        self.X = xp.asarray(_data(20_000, 784, K))
        C0 = self.X[:K]
        self.state = SplincolCentroids(C0, 3, 9, 20)  # 20 PALM sweeps per update
        self.chunks = [(0, self.X.shape[0])]
        self._iteration()  # warm-up

    def _iteration(self):
        xp = self.xp
        op = self.state.operator(self.X.dtype)
        cnorm2 = _lloyd.centroid_sqnorms(op.toarray(), xp)
        _, _, sums, counts, _ = _lloyd.lloyd_pass(self.X, op, cnorm2, self.chunks, keep=False)
        counts = xp.maximum(counts, 1)
        self.state.update(sums / counts[:, None], counts)

    def time_assignment_pass(self, backend, K):
        op = self.state.operator(self.X.dtype)
        cnorm2 = _lloyd.centroid_sqnorms(op.toarray(), self.xp)
        _lloyd.lloyd_pass(self.X, op, cnorm2, self.chunks, keep=False)
        _sync(self.xp)

    def time_lloyd_iteration(self, backend, K):
        self._iteration()
        _sync(self.xp)
