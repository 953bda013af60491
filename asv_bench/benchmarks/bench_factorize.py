"""Factorization timings: butterfly (with guarantees), PALM4MSA, hierarchical."""
import numpy as np

from gpufact import proj, transforms
from gpufact.factorize import butterfly, hierarchical, palm4msa


class Butterfly:
    params = ([256, 1024, 4096], ["dft", "hadamard"])
    param_names = ["N", "matrix"]
    timeout = 300

    def setup(self, N, matrix):
        self.A = transforms.dft_dense(N) if matrix == "dft" else transforms.hadamard_dense(N)
        self.kw = {"perm": "bit-reversal"} if matrix == "dft" else {}

    def time_butterfly(self, N, matrix):
        butterfly(self.A, **self.kw)


class Palm:
    params = [2, 4]
    param_names = ["n_factors"]
    timeout = 300

    def setup(self, J):
        self.A = np.random.default_rng(0).standard_normal((256, 256))
        self.cons = [proj.splincol((256, 256), 8) for _ in range(J)]
        palm4msa(self.A, self.cons, max_iter=1)

    def time_palm_20_iterations(self, J):
        palm4msa(self.A, self.cons, max_iter=20)


class HierarchicalHadamard:
    params = [32, 64, 128]
    param_names = ["N"]
    timeout = 300

    def setup(self, N):
        self.H = transforms.hadamard_dense(N)
        hierarchical(transforms.hadamard_dense(8), preset="hadamard")  # loads the Numba kernels

    def time_hierarchical(self, N):
        hierarchical(self.H, preset="hadamard")
