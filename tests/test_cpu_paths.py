"""The fast paths of issue 11: thread launcher (fork safety), run-time CPU description, and
the structured block gather of the butterfly factorization (against the fancy-index gather)."""
import importlib
import multiprocessing as mp
import os
import re

import numpy as np
import pytest

from gpufact import _cpuinfo, transforms

bfm = importlib.import_module("gpufact.factorize.butterfly")


def _child(F, X, Y, q):
    q.put(float(np.abs(F @ X - Y).max()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_apply_after_fork_uses_fresh_threads():
    F = transforms.hadamard(1024, dtype=np.float32)
    X = np.random.default_rng(0).standard_normal((1024, 2048)).astype(np.float32)
    Y = F @ X  # starts the thread pool in this process (work above the one-thread limit)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(F, X, Y, q), daemon=True)
    p.start()
    try:
        assert q.get(timeout=60) == 0.0  # the child's pool threads were restarted, not inherited dead
    finally:
        if p.is_alive():
            p.terminate()
        p.join(timeout=10)


def test_cpu_description():
    c = _cpuinfo.cache_sizes()
    assert set(c) == {"L1d", "L2", "L3"} and all(isinstance(v, int) and v > 0 for v in c.values())
    assert c["L1d"] <= c["L2"]
    assert re.fullmatch(r"[a-z0-9-]+", _cpuinfo.cpu_family())
    assert _cpuinfo.vector_isa() in _cpuinfo.describe()
    assert _cpuinfo._parse_size("512K") == 512 << 10 and _cpuinfo._parse_size("32768K") == 32 << 20


@pytest.mark.parametrize("N, rank, monarch", [(16, 1, False), (64, 2, False), (64, 1, True)])
def test_structured_block_gather_matches_fancy_index(N, rank, monarch):
    rng = np.random.default_rng(1)
    pats = bfm.monarch_patterns(N) if monarch else bfm.butterfly_patterns(N, rank)
    for k in range(1, len(pats)):
        PL, PR = bfm.chain_product_pattern(pats[:k]), bfm.chain_product_pattern(pats[k:])
        R, C, _, _, _ = bfm._two_factor_indices(PL, PR)
        Ab = rng.standard_normal((2, PL[0] * PL[1] * PL[3], PR[0] * PR[2] * PR[3]))
        for cmap in (None, rng.permutation(Ab.shape[2])):
            cols = C if cmap is None else cmap[C]
            ref = Ab[:, R[:, :, None], cols[:, None, :]]
            np.testing.assert_array_equal(bfm._gather_blocks(Ab, PL, PR, R, C, cmap, np), ref)
