"""Radix-2^R passes of the fused CPU apply (gpufact._kernels.cpu_radix): the pass plan, the
kernel in tile and direct modes against the NumPy reference (every dtype, both layouts,
odd factor counts, factors that cannot pair, partial tiles and vectors), and the dispatch
from FactorProduct against dense products (permutations and diagonals fused)."""
import numpy as np
import pytest

from gpufact import DiagFactor, FactorProduct, KSFactor, PermFactor, transforms
from gpufact._kernels import cpu_radix, reference
from gpufact._kernels.plan import KIND_RADIX2, make_plan, radix_passes
from gpufact.factors import _chain

from conftest import rand, tol

# application order (first applied first), (a, b, c, d)
CHAINS = {
    "bf5": [(16, 2, 2, 1), (8, 2, 2, 2), (4, 2, 2, 4), (2, 2, 2, 8), (1, 2, 2, 16)],  # odd count, N = 32
    "bf_shuffled": [(4, 2, 2, 4), (16, 2, 2, 1), (1, 2, 2, 16), (8, 2, 2, 2), (2, 2, 2, 8), (16, 2, 2, 1)],
    "bf_repeat": [(8, 2, 2, 1), (8, 2, 2, 1), (4, 2, 2, 2), (4, 2, 2, 2)],  # a stride twice: no pair
    "odd_stride": [(2, 2, 2, 3), (6, 2, 2, 1), (3, 2, 2, 2), (1, 2, 2, 6)],  # N = 12, d = 3 and 6 alone
    "mixed": [(2, 3, 4, 2), (6, 2, 2, 1), (3, 2, 2, 2), (1, 5, 12, 1), (1, 4, 5, 1)],  # 16 -> 12 -> 5 -> 4
    "three_sizes": [(4, 2, 2, 1), (1, 16, 8, 1), (8, 2, 2, 1), (4, 2, 2, 2), (2, 2, 2, 4), (1, 8, 16, 1)],
}


def _blocks(chain, dtype, rng):
    return [rand((a, d, b, c), dtype, rng) for (a, b, c, d) in chain]


def _weights(blocks, dtype):
    w = np.concatenate([b.ravel() for b in blocks])
    if np.dtype(dtype).kind == "c":
        return np.ascontiguousarray(w.real), np.ascontiguousarray(w.imag)
    return w, None


@pytest.mark.parametrize("max_radix", [1, 2, 3])
def test_radix_passes_cover_the_plan_in_order(max_radix):
    for chain in CHAINS.values():
        plan, _, _ = make_plan(chain)
        passes = radix_passes(plan, max_radix)
        covered = []
        for R, j, *_ in passes:
            steps = [j] if R == 0 else list(range(j, j + R))
            covered += steps
            assert R <= max_radix
            if R == 0:
                assert plan[j, 0] != KIND_RADIX2
                continue
            kinds, a, d = plan[steps, 0], plan[steps, 1], plan[steps, 4]
            assert (kinds == KIND_RADIX2).all() and len(set(2 * a * d)) == 1  # one size
            if R > 1:  # distinct powers of two: closed groups of 2^R rows
                assert len(set(d)) == R and all(x & (x - 1) == 0 for x in d)
        assert covered == list(range(len(plan)))


def test_radix_passes_pairs_what_it_can():
    def radices(chain, R=3):
        return radix_passes(make_plan(chain)[0], R)[:, 0].tolist()

    assert radices(CHAINS["bf5"]) == [3, 2]
    assert radices(CHAINS["bf5"], 2) == [2, 2, 1]
    assert radices(CHAINS["bf_repeat"]) == [1, 2, 1]  # the repeated strides end a pass
    assert radices(CHAINS["odd_stride"]) == [1, 2, 1]  # d = 3 and d = 6 cannot join
    assert radices(CHAINS["mixed"]) == [0, 2, 0, 0]
    with pytest.raises(ValueError):
        radix_passes(make_plan(CHAINS["bf5"])[0], 0)


def _vec(dtype) -> int:
    """The tile width unit of ``dtype``: samples per loop trip of a group pass (16 float32
    with AVX2, 32 with AVX-512), so the tests' tiles are whole vectors on either ISA."""
    dtype = np.dtype(dtype)
    real_size = dtype.itemsize // (2 if dtype.kind == "c" else 1)
    return cpu_radix.lanes(real_size) * max(cpu_radix._UNROLL.values())


def _run(chain, dtype, B, x_rows, y_rows, max_radix, bt, nthreads, rng, direct=False, perm=False):
    blocks = _blocks(chain, dtype, rng)
    plan, _, maxdim = make_plan(chain)
    a, b, c, d = chain[0]
    X = rand((a * c * d, B), dtype, rng)
    in_perm = rng.permutation(X.shape[0]).astype(np.int64) if perm else None
    Xp = X if in_perm is None else X[in_perm]  # (P X)_i = X[in_perm[i]]
    ref = reference.ks_chain_apply([blk.astype(np.complex128) for blk in blocks], Xp.astype(np.complex128))
    Xin = np.ascontiguousarray(X.T) if x_rows else X
    before = Xin.copy()
    M = ref.shape[0]
    Y = np.full((B, M) if y_rows else (M, B), np.nan, dtype=dtype)
    wr, wi = _weights(blocks, dtype)
    cpu_radix.ks_chain_apply_radix(wr, wi, plan, radix_passes(plan, max_radix), maxdim, Xin, x_rows, Y, y_rows, bt,
                                   nthreads, direct, in_perm)
    got = Y.T if y_rows else Y
    np.testing.assert_allclose(got, ref, rtol=tol(dtype), atol=tol(dtype) * np.abs(ref).max())
    np.testing.assert_array_equal(Xin, before)


@pytest.mark.parametrize("name", list(CHAINS))
@pytest.mark.parametrize("max_radix", [1, 2, 3])
def test_tiles_match_reference(name, max_radix, dtype):
    """Tiles of one vector unit (16 or 32 samples; B = 37: a partial tile), 2 threads,
    column batches and row-major samples on both sides; one side each for two dtypes (every
    flag combination is a Numba specialisation compiled on first use: the mixed layouts run
    the same passes)."""
    rng = np.random.default_rng(max_radix)
    layouts = [(False, False), (True, True)]
    if dtype in (np.float32, np.complex128) and max_radix < 3:
        layouts += [(False, True), (True, False)]
    for x_rows, y_rows in layouts:
        _run(CHAINS[name], dtype, 37, x_rows, y_rows, max_radix, _vec(dtype), 2, rng)


@pytest.mark.parametrize("name", ["bf_shuffled", "odd_stride", "mixed", "three_sizes"])
def test_input_permutation_is_read_through(name, dtype):
    """A permutation of the input rows fused into the tile loads (column batches: in the load;
    row-major samples: a tile-to-tile copy; generic steps sharing the second buffer) equals
    the chain applied to the permuted rows; partial tiles, 2 threads, radix 4 and 8."""
    rng = np.random.default_rng(11)
    for x_rows, y_rows in ((False, False), (True, True), (True, False)):
        for R in (2, 3):
            _run(CHAINS[name], dtype, 37, x_rows, y_rows, R, _vec(dtype), 2, rng, perm=True)


def test_input_permutation_is_checked():
    rng = np.random.default_rng(0)
    blocks = _blocks(CHAINS["bf5"], np.float32, rng)
    plan, _, maxdim = make_plan(CHAINS["bf5"])
    X = rand((32, 40), np.float32, rng)
    Y = np.empty_like(X)
    wr, wi = _weights(blocks, np.float32)
    args = (wr, wi, plan, radix_passes(plan, 2), maxdim, X, False, Y, False, _vec(np.float32), 1)
    with pytest.raises(ValueError, match="in_perm"):
        cpu_radix.ks_chain_apply_radix(*args, False, np.arange(31, dtype=np.int64))
    with pytest.raises(ValueError, match="in_perm"):
        cpu_radix.ks_chain_apply_radix(*args, False, np.arange(32, dtype=np.int32))
    with pytest.raises(ValueError, match="direct"):
        cpu_radix.ks_chain_apply_radix(*args, True, np.arange(32, dtype=np.int64))


@pytest.mark.parametrize("B", [1, 5, 16, 37, 130])
def test_tiles_batch_sizes(B, dtype):
    """One-sample to several-tile batches through tiles of two vector units (32 or 64
    samples; row and column layouts), radix 4 and 8."""
    rng = np.random.default_rng(B)
    for R in (2, 3):
        _run(CHAINS["bf_shuffled"], dtype, B, False, False, R, 2 * _vec(dtype), 3, rng)
        _run(CHAINS["bf5"], dtype, B, True, True, R, 2 * _vec(dtype), 2, rng)


def test_tile_width_must_be_whole_vectors():
    v = cpu_radix.lanes(4) * max(cpu_radix._UNROLL.values())
    with pytest.raises(ValueError, match="bt must be a multiple"):
        _run(CHAINS["bf5"], np.float32, 8, False, False, 2, v + 1, 1, np.random.default_rng(0))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("bt", [5, 16, 64])
def test_direct_mode_matches_reference(dt, bt):
    """Blocks of Y's columns (bt = 5: scalar tails only; 16, 64 with partial last blocks)."""
    rng = np.random.default_rng(bt)
    for name in ("bf5", "bf_shuffled", "bf_repeat", "odd_stride"):
        for R in (1, 2, 3):
            for B in (3, 37, 100):
                _run(CHAINS[name], dt, B, False, False, R, bt, 2, rng, direct=True)


def test_direct_mode_refuses_what_it_cannot_do():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="direct"):
        _run(CHAINS["mixed"], np.float32, 20, False, False, 2, 16, 1, rng, direct=True)
    with pytest.raises(ValueError, match="direct"):
        _run(CHAINS["bf5"], np.complex64, 20, False, False, 2, 16, 1, rng, direct=True)
    with pytest.raises(ValueError, match="direct"):
        _run(CHAINS["bf5"], np.float32, 20, True, False, 2, 16, 1, rng, direct=True)


def test_widths_follow_the_caches(monkeypatch):
    """Tile rows L1d / 64 bytes, direct blocks a share of half the L3: from the cache sizes
    the machine reports (here replaced), whole vectors; row-major tiles beyond half the L2
    keep 64 samples with AVX2, and are at most a quarter of the L2 with AVX-512 (both ISAs
    checked on any machine: the vector width is replaced too)."""
    monkeypatch.setattr(cpu_radix, "VECTOR_BYTES", 32)
    v = cpu_radix.lanes(4) * max(cpu_radix._UNROLL.values())
    monkeypatch.setattr(cpu_radix, "cache_sizes", lambda: {"L1d": 32 << 10, "L2": 512 << 10, "L3": 32 << 20})
    assert cpu_radix.tile_width(4096, np.float32, 1024, 2, False) == 128
    assert cpu_radix.tile_width(4096, np.complex64, 1024, 2, False) == 64
    assert cpu_radix.tile_width(4096, np.float32, 1024, 2, True) == 64  # row tiles beyond half the L2
    assert cpu_radix.tile_width(4096, np.float32, 20, 2, False) == v  # an even share, whole vectors
    assert cpu_radix.direct_width(4096, 4, 1024, 2) == 512
    assert cpu_radix.direct_width(4096, 4, 64, 2) == 0  # too narrow: tiles
    monkeypatch.setattr(cpu_radix, "cache_sizes", lambda: {"L1d": 48 << 10, "L2": 2 << 20, "L3": 8 << 20})
    assert cpu_radix.tile_width(4096, np.float32, 1024, 2, False) == 192
    assert cpu_radix.direct_width(4096, 4, 1024, 2) == 128
    assert cpu_radix.direct_width(1 << 16, 4, 1024, 2) == 0
    assert cpu_radix.tile_width(4096, np.float32, 1024, 2, True) == 64
    monkeypatch.setattr(cpu_radix, "VECTOR_BYTES", 64)  # AVX-512: 32 float32 per vector unit
    assert cpu_radix.tile_width(4096, np.float32, 1024, 2, True) == 32  # 2 MiB / 4 / (4096 * 4 B)
    assert cpu_radix.tile_width(4096, np.float64, 1024, 2, True) == 16
    assert cpu_radix.tile_width(4096, np.complex64, 1024, 2, True) == 32  # 16, up to a vector unit
    assert cpu_radix.tile_width(256, np.float32, 1024, 2, True) == 192  # small N: the L1d rule
    assert cpu_radix.tile_width(4096, np.float32, 1024, 2, False) == 192  # column tiles unchanged


def _product(N, dtype, rng):
    """diag · P · (butterfly chain) · P · diag, every KS factor random, N = 64."""
    L = N.bit_length() - 1
    order = [3, 0, 5, 1, 4, 2][:L] if L == 6 else list(range(L))
    ks = [KSFactor(rand((N // (2 << k), 1 << k, 2, 2), dtype, rng)) for k in order]
    perm = rng.permutation(N)
    return FactorProduct([DiagFactor(rand((N,), dtype, rng)), PermFactor(perm), *ks, PermFactor(perm[::-1].copy()),
                          DiagFactor(rand((N,), dtype, rng))])


@pytest.mark.parametrize("B", [1, 9, 37, 200])
def test_product_paths_match_dense(B, dtype, monkeypatch):
    """FactorProduct @ X and X @ F.T (radix passes, tiles or direct) against the dense
    product, for radix 4 and radix 8 in either mode (the direct mode's radix depends on the
    vector ISA); the old radix-2 kernels agree."""
    rng = np.random.default_rng(B)
    F = _product(64, dtype, rng)
    D = F.toarray()
    X = rand((64, B), dtype, rng)
    ref = D.astype(np.complex128) @ X.astype(np.complex128)
    calls = []
    real = cpu_radix.ks_chain_apply_radix
    monkeypatch.setattr(cpu_radix, "ks_chain_apply_radix",
                        lambda *a, **kw: calls.append(a[-1]) or real(*a, **kw))
    for max_radix, direct_radix in ((2, 2), (2, 3), (3, 3), (3, 2)):
        monkeypatch.setattr(cpu_radix, "MAX_RADIX_LOG2", max_radix)
        monkeypatch.setattr(cpu_radix, "DIRECT_RADIX_LOG2", direct_radix)
        F = FactorProduct(F.factors)  # fresh chains, plans made with these radices
        for got in (F @ X, (np.ascontiguousarray(X.T) @ F.T).T):
            np.testing.assert_allclose(got, ref, rtol=tol(dtype), atol=tol(dtype) * np.abs(ref).max())
    if B > _chain._SMALL_B:
        assert calls and (B < 64 or dtype.kind == "c" or True in calls)  # direct mode where it applies
    monkeypatch.setattr(_chain, "_RADIX_PASSES", False)
    np.testing.assert_allclose(FactorProduct(F.factors) @ X, ref, rtol=tol(dtype), atol=tol(dtype) * np.abs(ref).max())


@pytest.mark.parametrize("B", [1, 8, 9, 37, 200])
def test_permutation_before_a_chain_is_fused(B, dtype, monkeypatch):
    """FactorProduct(chain, P): P's gather read through by the chain's tile loads (complex,
    B > 8; else P's own gather), both layouts, against the dense product; the DFT against
    scipy.fft; a chain refuses a permutation where it does not read one through."""
    import scipy.fft

    rng = np.random.default_rng(B)
    ks = _product(64, dtype, rng).factors[2:-2]
    F = FactorProduct(ks + [PermFactor(rng.permutation(64))])
    X = rand((64, B), dtype, rng)
    ref = F.toarray().astype(np.complex128) @ X.astype(np.complex128)
    calls = []
    real = PermFactor.apply_cols
    monkeypatch.setattr(PermFactor, "apply_cols", lambda self, *a: calls.append(1) or real(self, *a))
    for got in (F @ X, (np.ascontiguousarray(X.T) @ F.T).T):
        np.testing.assert_allclose(got, ref, rtol=tol(dtype), atol=tol(dtype) * np.abs(ref).max())
    fused = dtype.kind == "c" and B > _chain._SMALL_B  # else P's own gather, as before the fusion
    assert (calls == []) == fused
    chain = F._get_segments()[0]
    assert chain.reads_input_perm(F.dtype, B) == fused
    if not fused:
        with pytest.raises(ValueError, match="in_perm"):
            chain.apply_cols(X, np.empty((64, B), F.dtype), in_perm=np.arange(64, dtype=np.int64))
    if dtype.kind == "c":
        D = transforms.dft(64, dtype=dtype)
        Xc = rand((64, B), dtype, rng)
        fft = scipy.fft.fft(Xc.astype(np.complex128), axis=0)
        for got in (D @ Xc, (np.ascontiguousarray(Xc.T) @ D.T).T):
            np.testing.assert_allclose(got, fft, rtol=tol(dtype), atol=tol(dtype) * np.abs(fft).max())
        Xre = np.ascontiguousarray(Xc.real)  # a real batch into the complex product, loaded as is
        fft = scipy.fft.fft(Xre.astype(np.float64), axis=0)
        for got in (D @ Xre, (np.ascontiguousarray(Xre.T) @ D.T).T):
            np.testing.assert_allclose(got, fft, rtol=tol(dtype), atol=tol(dtype) * np.abs(fft).max())


def test_read_only_batch_takes_tiles():
    rng = np.random.default_rng(1)
    F = _product(64, np.float32, rng)
    X = rand((64, 300), np.float32, rng)
    X.setflags(write=False)
    ref = F.toarray().astype(np.float64) @ X
    np.testing.assert_allclose(F @ X, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
