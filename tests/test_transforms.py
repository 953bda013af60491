"""Exact fast transforms against dense references and scipy."""
import numpy as np
import pytest
import scipy.fft
import scipy.linalg

from gpufact import transforms

from conftest import host, rand


@pytest.mark.parametrize("N", [2, 4, 16, 256, 1024])
def test_hadamard_exact(N, xp):
    H = transforms.hadamard(N, xp=xp)
    assert len(H) == int(np.log2(N)) and H.nnz == 2 * N * int(np.log2(N))
    np.testing.assert_array_equal(host(H.toarray()), scipy.linalg.hadamard(N))
    Hn = transforms.hadamard(N, normalized=True, xp=xp)
    np.testing.assert_allclose(host(Hn.toarray()), scipy.linalg.hadamard(N) / np.sqrt(N), atol=1e-14)


@pytest.mark.parametrize("N", [2, 8, 64, 512])
def test_dft_exact(N, xp):
    F = transforms.dft(N, xp=xp)
    ref = scipy.fft.fft(np.eye(N), axis=0)
    np.testing.assert_allclose(host(F.toarray()), ref, atol=1e-12 * N)
    np.testing.assert_allclose(transforms.dft_dense(N), ref, atol=1e-10)
    rng = np.random.default_rng(0)
    X = rand((N, 7), np.complex128, rng, xp)
    np.testing.assert_allclose(host(F @ X), scipy.fft.fft(host(X), axis=0), atol=1e-10 * N)
    Fo = transforms.dft(N, norm="ortho", xp=xp)
    np.testing.assert_allclose(host(Fo.H @ (Fo @ X)), host(X), atol=1e-12 * N)


def test_dft_complex64_rows_match_fft():
    rng = np.random.default_rng(1)
    X = rand((100, 256), np.complex64, rng)
    Y = X @ transforms.dft(256, dtype=np.complex64).T
    assert Y.dtype == np.complex64
    ref = scipy.fft.fft(X.astype(np.complex128), axis=1)
    np.testing.assert_allclose(Y, ref, atol=1e-4 * np.abs(ref).max())


def test_random_butterfly_structure(dtype):
    F = transforms.random_butterfly(64, dtype=dtype, seed=5)
    assert F.dtype == dtype and len(F) == 6
    assert [f.pattern for f in F.factors] == [(2 ** (l - 1), 2, 2, 64 // 2 ** l) for l in range(1, 7)]
    G = transforms.random_butterfly(64, dtype=dtype, seed=5)
    np.testing.assert_array_equal(F.toarray(), G.toarray())
    assert np.count_nonzero(F.toarray()) == 64 * 64  # butterflies are dense as products


@pytest.mark.parametrize("fn", [transforms.hadamard, transforms.dft, transforms.random_butterfly])
@pytest.mark.parametrize("N", [0, 3, 12, -4, 1])
def test_non_power_of_two_is_rejected(fn, N):
    with pytest.raises(ValueError, match="N must be a power of two"):
        fn(N)


def test_bad_transform_arguments():
    with pytest.raises(TypeError, match="N must be an integer"):
        transforms.hadamard(16.0)
    with pytest.raises(TypeError, match="dtype"):
        transforms.dft(16, dtype=np.float64)
    with pytest.raises(ValueError, match="norm"):
        transforms.dft(16, norm="forward")


def test_random_seeds():
    """Seeds as int, SeedSequence or Generator give the same draws; bad seeds name 'seed'."""
    from gpufact import KSFactor

    a = transforms.random_butterfly(16, seed=3).toarray()
    b = transforms.random_butterfly(16, seed=np.random.SeedSequence(3)).toarray()
    c = transforms.random_butterfly(16, seed=np.random.default_rng(3)).toarray()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, transforms.random_butterfly(16, seed=4).toarray())
    for bad, err in (("x", TypeError), (1.5, TypeError), (True, TypeError), (-1, ValueError)):
        with pytest.raises(err, match="seed"):
            transforms.random_butterfly(16, seed=bad)
        with pytest.raises(err, match="seed"):
            KSFactor.random((1, 2, 2, 4), seed=bad)
