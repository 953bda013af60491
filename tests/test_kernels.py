"""Kernels: NumPy reference <-> Numba <-> CUDA on the same inputs."""
import numpy as np
import pytest

from gpufact._kernels import reference
from gpufact._kernels.cpu import ks_chain_apply, ks_chain_apply_serial
from gpufact._kernels.plan import make_plan
from gpufact.factors._chain import KSChain
from gpufact import KSFactor

from conftest import host, rand, tol

CHAINS = [
    [(1, 2, 2, 8), (2, 2, 2, 4), (4, 2, 2, 2), (8, 2, 2, 1)],   # butterfly, N = 16
    [(8, 2, 2, 1), (4, 2, 2, 2), (2, 2, 2, 4), (1, 2, 2, 8)],   # reversed order (F.T)
    [(1, 4, 4, 4), (4, 4, 4, 1)],                               # Monarch, N = 16
    [(2, 3, 2, 2), (1, 5, 12, 1), (1, 3, 5, 1)],                # rectangular chain 8 -> 3
]


def _blocks(chain, dtype, rng):
    return [rand((a, d, b, c), dtype, rng) for (a, b, c, d) in chain]


def _in_dim(chain):
    a, b, c, d = chain[0]
    return a * c * d


@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("B", [1, 7, 130])
@pytest.mark.parametrize("bt", [1, 4, 64])
def test_numba_chain_matches_reference(chain, B, bt, dtype):
    rng = np.random.default_rng(0)
    blocks = _blocks(chain, dtype, rng)
    plan, offs, maxdim = make_plan(chain)
    w = np.concatenate([b.ravel() for b in blocks])
    X = rand((_in_dim(chain), B), dtype, rng)
    ref = reference.ks_chain_apply([b.astype(np.complex128) for b in blocks], X.astype(np.complex128))
    M = ref.shape[0]
    for x_rows in (False, True):
        for y_rows in (False, True):
            Xin = np.ascontiguousarray(X.T) if x_rows else X
            Y = np.full((B, M) if y_rows else (M, B), np.nan, dtype=dtype)
            ks_chain_apply(w, plan, maxdim, Xin, x_rows, Y, y_rows, bt)
            got = Y.T if y_rows else Y
            np.testing.assert_allclose(got, ref, rtol=tol(dtype), atol=tol(dtype) * np.abs(ref).max())
            if bt == 1:  # the one-sample-at-a-time path for tiny batches
                Y[...] = np.nan
                ks_chain_apply_serial(w, plan, maxdim, Xin, x_rows, Y, y_rows)
                got = Y.T if y_rows else Y
                np.testing.assert_allclose(got, ref, rtol=tol(dtype), atol=tol(dtype) * np.abs(ref).max())


@pytest.mark.gpu
@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("B", [1, 7, 130])
def test_cuda_chain_matches_numba(chain, B, dtype, cp):
    rng = np.random.default_rng(1)
    blocks = _blocks(chain, dtype, rng)
    X = rand((_in_dim(chain), B), dtype, rng)
    factors_cpu = [KSFactor(b) for b in reversed(blocks)]  # product order
    chain_cpu = KSChain(factors_cpu)
    ref = chain_cpu.apply_cols(X, np.empty((chain_cpu.shape[0], B), dtype=dtype))
    chain_gpu = KSChain([f.to_device("gpu") for f in factors_cpu])
    Xg = cp.asarray(X)
    for rows in (False, True):
        out = cp.empty((B, ref.shape[0]), dtype=dtype).T if rows else cp.empty(ref.shape, dtype=dtype)
        chain_gpu.apply_cols(Xg if not rows else cp.ascontiguousarray(Xg.T).T, out)
        np.testing.assert_allclose(host(out), ref, rtol=tol(dtype) * 10, atol=tol(dtype) * 10 * np.abs(ref).max())


def test_plan_marks_butterflies():
    plan, offs, maxdim = make_plan(CHAINS[3])
    assert plan[:, 0].tolist() == [0, 0, 0]
    plan, offs, maxdim = make_plan(CHAINS[0])
    assert plan[:, 0].tolist() == [1, 1, 1, 1] and offs == [0, 32, 64, 96] and maxdim == 16
