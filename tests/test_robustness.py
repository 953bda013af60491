"""The inputs people really pass (issue 9): each of the seven failing examples as a test, then
the other public entry points the same kind of input reaches, each against a dense NumPy /
SciPy reference, with every input checked unchanged."""
from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
import scipy.sparse as sps

import gpufact
from gpufact import CSRFactor, DenseFactor, DiagFactor, FactorProduct, KSFactor, PermFactor, proj, transforms
from gpufact.factorize import butterfly, hierarchical, ksfactor, monarch_patterns, palm4msa

from _inputs import DTYPES, LAYOUTS, SPARSE_KINDS, Snapshot, layout, noncanonical, rand, rel_err, tol_for


def _mixed(dtype, rng):
    """A product of every factor kind, 16 x 16 (KS chain, CSR, dense, diagonal, permutation)."""
    D = rand((16, 16), dtype, rng) * (rng.random((16, 16)) < 0.3)
    return FactorProduct([KSFactor(rand((2, 4, 2, 2), dtype, rng)), KSFactor(rand((2, 2, 4, 4), dtype, rng)),
                          CSRFactor(sps.csr_matrix(D)), DenseFactor(rand((16, 16), dtype, rng)),
                          DiagFactor(rand(16, dtype, rng)), PermFactor(rng.permutation(16), dtype=dtype)])


# ---- 1. read-only and memory-mapped inputs ----------------------------------------------------

def test_issue_example_read_only_batch():
    X = np.random.default_rng(0).standard_normal((16, 64))
    X.setflags(write=False)
    F = transforms.random_butterfly(16, seed=0)
    np.testing.assert_allclose(F @ X, F.toarray() @ X, rtol=1e-12, atol=1e-12)
    assert not X.flags.writeable


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", LAYOUTS + ("mmap",))
def test_apply_takes_any_layout_and_flags(dtype, kind, tmp_path):
    """F @ X, X @ F.T, X @ F and argmin_affine on read-only, memory-mapped, Fortran, negative
    and strided batches, on both kernel paths (B <= 8 serial, B > 8 tiled), real batches into
    complex products included."""
    rng = np.random.default_rng(1)
    F = _mixed(dtype, rng)
    D = F.toarray()
    for B in (3, 40):
        for xdt in {np.dtype(dtype), np.dtype(dtype).type(0).real.dtype}:
            X0 = rand((16, B), xdt, rng)
            X = layout(X0, kind, tmp_path)
            Xr = layout(np.ascontiguousarray(X0.T), kind, tmp_path)
            snap = Snapshot(X, Xr)
            assert rel_err(F @ X, D @ X0) < tol_for(dtype)
            assert rel_err(Xr @ F.T, X0.T @ D.T) < tol_for(dtype)
            assert rel_err(Xr @ F, X0.T @ D) < tol_for(dtype)
            snap.check()
    if np.dtype(dtype).kind == "f":
        X = layout(rand((40, 16), dtype, rng), kind, tmp_path)
        bias = layout(rand(16, dtype, rng), "ro")
        snap = Snapshot(X, bias)
        lab, val = F.argmin_affine(X, bias)
        S = bias[None, :] - 2 * (np.asarray(X) @ D.T)
        assert np.all(S[np.arange(40), lab] <= S.min(axis=1) + 1e-4 * np.abs(S).max())
        snap.check()


@pytest.mark.parametrize("kind", ["ro", "mmap", "ro_F"])
def test_constructors_projections_and_solvers_take_read_only_inputs(kind, tmp_path):
    rng = np.random.default_rng(2)
    M = layout(rng.standard_normal((16, 16)), kind, tmp_path)
    blocks = layout(rng.standard_normal((2, 4, 2, 2)), kind, tmp_path)
    v = layout(rng.standard_normal(16), "ro")
    perm = layout(rng.permutation(16), "ro")
    snap = Snapshot(M, blocks, v, perm)
    np.testing.assert_array_equal(DenseFactor(M).toarray(), M)
    np.testing.assert_array_equal(CSRFactor(M).toarray(), M)
    np.testing.assert_array_equal(KSFactor(blocks).toarray(), KSFactor(np.array(blocks)).toarray())
    np.testing.assert_array_equal(DiagFactor(v).toarray(), np.diag(v))
    np.testing.assert_array_equal(PermFactor(perm).toarray(), np.eye(16)[perm])
    for P in (proj.sp((16, 16), 20), proj.splin((16, 16), 3), proj.spcol((16, 16), 3),
              proj.splincol((16, 16), 2), proj.normcol((16, 16)), proj.normlin((16, 16)),
              proj.butterfly_support(1, 2, 2, 8)):
        out = P(M)
        assert out.flags.writeable and np.all(np.isfinite(out))
        np.testing.assert_allclose(out, P(np.array(M)))
    F = palm4msa(M, [proj.splincol((16, 16), 4)] * 2, max_iter=5)
    assert np.isfinite(F.rel_error)
    assert rel_err(butterfly(M).toarray(), butterfly(np.array(M)).toarray()) < 1e-12
    assert rel_err(ksfactor(M, monarch_patterns(16)).toarray(), ksfactor(np.array(M), monarch_patterns(16)).toarray()) < 1e-12
    H = layout(transforms.hadamard_dense(8), kind, tmp_path)
    assert hierarchical(H, "hadamard").rel_error < 1e-6
    snap.check()


# ---- 2. save / load round trip --------------------------------------------------------------

def test_issue_example_save_name_without_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    F = transforms.random_butterfly(16, seed=0)
    F.save("op")
    assert (tmp_path / "op.npz").exists()
    G = gpufact.load("op")
    np.testing.assert_array_equal(G.toarray(), F.toarray())


@pytest.mark.parametrize("target", ["str", "path", "path_no_suffix", "bytesio", "file"])
def test_save_load_targets_and_rel_error(tmp_path, target):
    A = transforms.hadamard_dense(16) + 0.01 * np.random.default_rng(3).standard_normal((16, 16))
    F = butterfly(A)
    F.rel_error = 0.125
    if target in ("bytesio", "file"):
        f = io.BytesIO() if target == "bytesio" else open(tmp_path / "f.bin", "w+b")
        with f:
            F.save(f)
            f.seek(0)
            G = gpufact.load(f)
    else:
        p = {"str": str(tmp_path / "a.npz"), "path": tmp_path / "a.npz", "path_no_suffix": tmp_path / "a"}[target]
        F.save(p)
        G = gpufact.load(p)
    np.testing.assert_array_equal(G.toarray(), F.toarray())
    assert G.rel_error == 0.125
    H = transforms.hadamard(8)  # no rel_error: stays None
    b = io.BytesIO()
    H.save(b)
    b.seek(0)
    assert gpufact.load(b).rel_error is None


def test_save_load_refuse_other_targets(tmp_path):
    F = transforms.hadamard(4)
    for bad in (3, None, ["a.npz"]):
        with pytest.raises(TypeError, match="path"):
            F.save(bad)
        with pytest.raises(TypeError, match="path"):
            gpufact.load(bad)
    with pytest.raises(FileNotFoundError):
        gpufact.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="path"):
        gpufact.load(io.BytesIO(b"not a zip file"))


def test_factorizations_keep_rel_error_through_save(tmp_path):
    A = np.random.default_rng(4).standard_normal((16, 16))
    for F in (palm4msa(A, [proj.splincol((16, 16), 4)] * 2, max_iter=5), hierarchical(transforms.hadamard_dense(8), "hadamard")):
        F.save(tmp_path / "f")
        assert gpufact.load(tmp_path / "f").rel_error == F.rel_error


# ---- 3. pickle and deep copy ----------------------------------------------------------------

def test_issue_example_linear_operator_pickles():
    F = transforms.random_butterfly(16, seed=0)
    L = pickle.loads(pickle.dumps(F.aslinearoperator()))
    x = np.arange(16.0)
    np.testing.assert_allclose(L @ x, F.toarray() @ x, rtol=1e-12)
    np.testing.assert_allclose(L.H @ x, F.toarray().T @ x, rtol=1e-12)


def _public_objects():
    rng = np.random.default_rng(5)
    F = _mixed(np.complex64, rng)
    F @ np.ones((16, 20), dtype=np.complex64)  # fill the caches (fused chains, result dtypes)
    F.T
    objs = [F, F.aslinearoperator(), transforms.dft(16), transforms.hadamard(8), gpufact.get_backend(np.ones(1)),
            gpufact.factorize.DivergenceError("x")] + list(F.factors)
    objs += [proj.sp((4, 4), 3), proj.splin((4, 4), 2), proj.spcol((4, 4), 2), proj.splincol((4, 4), 2),
             proj.supp(np.eye(4, dtype=bool)), proj.butterfly_support(1, 2, 2, 2), proj.blockdiag((4, 4), [(2, 2), (2, 2)]),
             proj.const(np.eye(4)), proj.normcol((4, 4)), proj.normlin((4, 4))]
    return objs


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
def test_everything_public_pickles_and_copies(how):
    clone = {"pickle": lambda o: pickle.loads(pickle.dumps(o)), "deepcopy": copy.deepcopy, "copy": copy.copy}[how]
    x = np.arange(16.0).astype(np.complex64)
    M = np.random.default_rng(6).standard_normal((4, 4))
    for o in _public_objects():
        c = clone(o)
        assert type(c) is type(o)
        if isinstance(o, (FactorProduct, gpufact.Factor)):
            np.testing.assert_array_equal(c.toarray(), o.toarray())
            np.testing.assert_array_equal(c @ x[:o.shape[1]], o @ x[:o.shape[1]])
            for key in ("blocks", "matrix", "diag", "perm"):  # factors stay immutable
                arr = getattr(c, key, None)
                if isinstance(arr, np.ndarray):
                    assert not arr.flags.writeable
        elif hasattr(o, "matvec"):
            np.testing.assert_array_equal(c @ x, o @ x)
            np.testing.assert_array_equal(c.H @ x, o.H @ x)
        elif isinstance(o, proj.Constraint):
            np.testing.assert_array_equal(c(M), o(M))


# ---- 4. single precision in the solvers -----------------------------------------------------

def test_issue_example_butterfly_float32_as_accurate_as_float64():
    rng = np.random.default_rng(0)
    N = 1024  # blocks of 32 x 32 at the top split: the subspace-iteration path
    B = transforms.random_butterfly(N, seed=1).toarray()
    A = B / np.linalg.norm(B) + 0.5 * rng.standard_normal((N, N)) / N
    e64 = rel_err(butterfly(A).toarray(), A)
    e32 = rel_err(butterfly(A.astype(np.float32)).toarray(), A)
    assert e32 <= e64 * (1 + 1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64], ids=["float32", "complex64"])
def test_issue_example_monarch_single_precision_reaches_the_block_optimum(dtype):
    """Monarch = batched rank-one approximation of the 32 x 32 blocks: the float32 result is
    within single-precision rounding of the float64 per-block SVD optimum."""
    rng = np.random.default_rng(1)
    N, m = 1024, 32
    A = rand((N, N), np.complex128 if np.dtype(dtype).kind == "c" else np.float64, rng)
    blocks = A.reshape(m, m, m, m).transpose(0, 2, 1, 3)  # block (i, j) = A[i*m:(i+1)*m, j*m:(j+1)*m]
    s = np.linalg.svd(blocks, compute_uv=False)
    optimum = np.sqrt(np.sum(s[..., 1:] ** 2) / np.sum(s ** 2))
    F = ksfactor(A.astype(dtype), monarch_patterns(N))
    assert F.dtype == dtype
    assert rel_err(F.toarray(), A) <= optimum * (1 + 1e-4)


def test_tolerances_follow_the_working_precision():
    """A tol below float32's resolution stops at the precision floor instead of running to
    max_iter, and the spectral norm converges in float32 with tol=1e-13."""
    rng = np.random.default_rng(2)
    mask = (rng.random((16, 16)) < 0.2) | np.eye(16, dtype=bool)
    S1, S2 = np.diag(rng.uniform(1, 2, 16)), rng.standard_normal((16, 16)) * mask
    cons = [proj.supp(np.eye(16, dtype=bool), normalized=False), proj.supp(mask)]  # exact: error -> 0
    for dtype in (np.float32, np.float64):
        seen = []
        palm4msa((S1 @ S2).astype(dtype), cons, max_iter=3000, tol=1e-13, callback=lambda it, e: seen.append(e))
        assert len(seen) < 3000 and seen[-1] <= max(1e-13, 4 * np.finfo(dtype).eps)
    F = transforms.random_butterfly(64, dtype=np.float32, seed=0)
    assert abs(F.norm(2, tol=1e-13) / np.linalg.norm(F.toarray().astype(np.float64), 2) - 1) < 1e-5


# ---- 5. numeric range -----------------------------------------------------------------------

_SCALES = {np.float32: (1e-30, 1e-12, 1e12, 1e30), np.float64: (1e-290, 1e-150, 1e150, 1e290)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64], ids=lambda d: np.dtype(d).name)
def test_norms_and_projections_at_any_scale(dtype):
    rng = np.random.default_rng(7)
    F = _mixed(dtype, rng)
    ref_fro = np.linalg.norm(F.toarray().astype(np.complex128))
    ref_2 = np.linalg.norm(F.toarray().astype(np.complex128), 2)
    M = rand((12, 10), dtype, rng)
    real = np.dtype(dtype).type(0).real.dtype.type
    for c in _SCALES[real]:
        G = F * real(c)
        assert abs(G.norm("fro") / (c * ref_fro) - 1) < tol_for(dtype, 10)
        assert abs(G.norm(2) / (c * ref_2) - 1) < 1e-4
        for f in F.factors[:5]:  # single-factor products: norms straight from the stored values
            H = FactorProduct([f]) * real(c)
            ref = np.linalg.norm(f.toarray().astype(np.complex128))
            assert abs(H.norm("fro") / (c * ref) - 1) < tol_for(dtype, 10)
        Mc = M * real(c)
        for P in (proj.sp((12, 10), 30), proj.splin((12, 10), 3), proj.spcol((12, 10), 3), proj.splincol((12, 10), 2),
                  proj.supp(np.ones((12, 10), dtype=bool))):
            out, ref = P(Mc), P(M)  # unit Frobenius norm at every scale
            assert rel_err(out, ref) < tol_for(dtype, 10)
        for P in (proj.normcol((12, 10), 3.0), proj.normlin((12, 10), 3.0)):
            assert rel_err(P(Mc), P(M)) < tol_for(dtype, 10)


def _unit_reference(M, keep, axis=None):
    """Dense reference in float64 / complex128: M on ``keep``, scaled to unit 2-norm over
    ``axis`` (Frobenius when None), computed as (M / max) / ‖M / max‖."""
    out = np.where(keep, M, 0)
    parts = [out.real.astype(np.float64), out.imag.astype(np.float64)]  # real division only
    m = np.maximum(np.abs(parts[0]), np.abs(parts[1])).max(axis=axis, keepdims=True)
    parts = [p / np.where(m > 0, m, 1) for p in parts]
    n = np.sqrt((parts[0] ** 2 + parts[1] ** 2).sum(axis=axis, keepdims=True))
    re, im = (p / np.where(n > 0, n, 1) for p in parts)
    return re + 1j * im if np.iscomplexobj(M) else re


@pytest.mark.parametrize("dtype", [np.float32, np.complex64, np.float64, np.complex128], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("edge", ["near max", "subnormal"])
def test_normalized_projections_at_the_edges_of_the_range(dtype, edge):
    """Entries whose norm is not representable (float32 2e38 and 3e38: norm 3.6e38 > max) or
    subnormal (complex quotients by a subnormal overflow when formed as 1 / d) still give
    the unit-norm projection (was: zeros, and inf + NaN·i)."""
    real = np.dtype(dtype).type(0).real.dtype
    fi = np.finfo(real)
    c = float(fi.max) * 0.6 if edge == "near max" else float(fi.smallest_subnormal) * 64
    rng = np.random.default_rng(3)
    M0 = np.abs(rng.standard_normal((6, 5))) + 0.5
    M = (M0 / M0.max() * c).astype(dtype)  # entries in [~0.1 c, c]
    if np.iscomplexobj(M):
        M = M * np.asarray(1j, dtype=dtype) if edge == "subnormal" else M
    assert np.isfinite(M).all()
    cases = [(proj.splin((6, 5), 2), None), (proj.spcol((6, 5), 2), None), (proj.splincol((6, 5), 2), None),
             (proj.sp((6, 5), 7), None), (proj.supp(np.ones((6, 5), dtype=bool)), None),
             (proj.normcol((6, 5), 1.0), 0), (proj.normlin((6, 5), 1.0), 1)]
    for P, axis in cases:
        keep = P.support(M) if axis is None else np.ones(M.shape, dtype=bool)
        out = P(M)
        assert out.dtype == M.dtype and np.isfinite(out).all(), P
        ref = _unit_reference(M, keep, axis)
        tol = 1e-2 if edge == "subnormal" and real == np.float32 else (1e-5 if real == np.float32 else 1e-12)
        assert np.abs(out - ref).max() < tol, P  # subnormal float32 keeps a few bits only


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_projections_reject_nan_and_inf(bad):
    """A NaN took a top-k slot and came out as 0; an inf made the whole output NaN."""
    M = np.arange(1.0, 13.0).reshape(3, 4)
    M[1, 2] = bad
    before = M.copy()
    for P in (proj.splin((3, 4), 1), proj.spcol((3, 4), 1), proj.splincol((3, 4), 2), proj.sp((3, 4), 2),
              proj.splincol((3, 4), 3, normalized=False), proj.normcol((3, 4), 1.0),
              proj.splin((3, 4), 3)):
        with pytest.raises(ValueError, match="M contains NaN or inf"):
            P(M)
        with pytest.raises(ValueError, match="M contains NaN or inf"):
            P(np.asfortranarray(M))
    big = np.ones((80, 80))  # the NumPy path of large k on a large matrix
    big[5, 7] = bad
    with pytest.raises(ValueError, match="M contains NaN or inf"):
        proj.splincol((80, 80), 20)(big)
    np.testing.assert_array_equal(M, before)


def test_projections_name_unsupported_dtypes():
    for dt in (np.float16, np.int64, np.bool_):
        with pytest.raises(TypeError, match="M must be a float32, float64, complex64 or complex128"):
            proj.splin((3, 4), 1)(np.ones((3, 4), dtype=dt))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_solvers_near_the_largest_finite_values(dtype):
    """Hadamard 16 x 16 times 0.3·max: every factor and the product are representable, but
    λ (or the first factor times it) is not; the scale is spread over the factors (was: a
    ValueError from hierarchical, and a silent NaN product from palm4msa)."""
    c = float(np.finfo(dtype).max) * 0.3
    H = transforms.hadamard_dense(16, np.float64)
    A = (H * c).astype(dtype)
    F = hierarchical(A, preset="hadamard")
    assert F.dtype == dtype and all(np.isfinite(f.toarray()).all() for f in F.factors)
    P = F.toarray().astype(np.float64) / c
    assert np.abs(P - H).max() < (1e-5 if dtype == np.float32 else 1e-10)
    G = palm4msa(A, [proj.splincol((16, 16), 2)] * 4, max_iter=30)
    Q = G.toarray().astype(np.float64) / c
    assert np.isfinite(Q).all() and all(np.isfinite(f.toarray()).all() for f in G.factors)
    small = palm4msa(H.astype(dtype), [proj.splincol((16, 16), 2)] * 4, max_iter=30)
    assert abs(G.rel_error - small.rel_error) < 1e-3  # the same run, scaled


def test_solvers_on_subnormal_complex_data():
    """complex64 data of 1e-40 (subnormal): the solvers divide by a power of two below
    float32's normal range, which NumPy's complex quotient turned into inf + NaN·i (palm4msa
    and hierarchical reported a divergence, butterfly a failed SVD)."""
    H = transforms.hadamard_dense(16, np.float64)
    A = (H * 1e-40).astype(np.complex64)
    A1 = H.astype(np.complex64)
    ref = np.abs(A.astype(np.complex128))
    F = hierarchical(A, preset="hadamard")
    assert np.abs(F.toarray().astype(np.complex128) - A).max() < 1e-3 * ref.max()  # subnormal: few bits
    G = butterfly(A)
    assert np.abs(G.toarray().astype(np.complex128) - A).max() < 1e-3 * ref.max()
    cons = [proj.splincol((16, 16), 2)] * 4
    P = palm4msa(A, cons, max_iter=20)
    assert np.isfinite(P.toarray()).all() and abs(P.rel_error - palm4msa(A1, cons, max_iter=20).rel_error) < 1e-3


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_solvers_at_any_scale(dtype):
    """Powers of two: the solvers are scale-equivariant (the same relative error, factors
    scaled); other scales anywhere in the range give finite factors and the same accuracy."""
    rng = np.random.default_rng(8)
    A0 = (transforms.random_butterfly(16, seed=3).toarray() + 0.05 * rng.standard_normal((16, 16))).astype(dtype)
    H = transforms.hadamard_dense(16, dtype)
    cons = [proj.splincol((16, 16), 2)] * 4
    base = {"palm": palm4msa(A0, cons, 20).rel_error, "hier": hierarchical(H, "hadamard").rel_error,
            "bf": rel_err(butterfly(A0).toarray(), A0), "monarch": ksfactor(A0, monarch_patterns(16), return_errors=True)[1]["rel_error"]}
    for c in _SCALES[dtype] + (2.0 ** 100 if dtype == np.float64 else 2.0 ** 60,):
        A = A0 * dtype(c)
        snap = Snapshot(A)
        got = {"palm": palm4msa(A, cons, 20), "hier": hierarchical(H * dtype(c), "hadamard"), "bf": butterfly(A)}
        for F in got.values():
            assert all(np.all(np.isfinite(f.toarray())) for f in F.factors)
        exact_scale = np.log2(c) == int(np.log2(c))
        assert got["palm"].rel_error == pytest.approx(base["palm"], rel=1e-6 if exact_scale else 0.25)
        assert rel_err(got["palm"].toarray() / c, A0) == pytest.approx(base["palm"], rel=1e-3 if exact_scale else 0.25)
        assert got["hier"].rel_error < 1e-5 and rel_err(got["hier"].toarray() / c, H) < 1e-5
        assert rel_err(got["bf"].toarray() / c, A0) == pytest.approx(base["bf"], rel=1e-3)
        e = ksfactor(A, monarch_patterns(16), return_errors=True)[1]["rel_error"]
        assert e == pytest.approx(base["monarch"], rel=1e-3)
        snap.check()


# ---- 6. non-canonical sparse input ----------------------------------------------------------

def test_issue_example_duplicate_entries():
    M = sps.csr_matrix((np.array([1.0, 3.0]), np.array([0, 0]), np.array([0, 2, 2])), shape=(2, 2))
    snap = Snapshot(M)
    F = FactorProduct([CSRFactor(M)])
    assert F.norm("fro") == 4.0 and F.nnz == 1
    np.testing.assert_array_equal(F.toarray(), [[4, 0], [0, 0]])
    snap.check()


@pytest.mark.parametrize("kind", SPARSE_KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.complex128], ids=["float32", "complex128"])
def test_sparse_inputs_give_the_canonical_matrix(kind, dtype):
    rng = np.random.default_rng(9)
    D = rand((9, 7), dtype, rng) * (rng.random((9, 7)) < 0.4)
    D[0, :] = 0  # an empty row
    S = noncanonical(D, kind)
    snap = Snapshot(S)
    f = CSRFactor(S)
    assert f.dtype == dtype and f.nnz == np.count_nonzero(D)
    assert f.matrix.has_canonical_format
    assert rel_err(f.toarray(), D) < tol_for(dtype)
    F = FactorProduct([S, DenseFactor(rand((7, 5), dtype, rng))])
    assert rel_err(F.toarray(), D @ F.factors[1].toarray()) < tol_for(dtype)
    assert abs(FactorProduct([S]).norm("fro") / np.linalg.norm(D) - 1) < tol_for(dtype)
    assert rel_err(f.T.toarray(), D.T) < tol_for(dtype) and rel_err(f.H.toarray(), D.conj().T) < tol_for(dtype)
    snap.check()


def test_sparse_in_solvers_and_as_data():
    rng = np.random.default_rng(10)
    D = rng.standard_normal((8, 8)) * (rng.random((8, 8)) < 0.5)
    S = noncanonical(D, "dup")
    snap = Snapshot(S)
    init = [noncanonical(np.eye(8), "dup"), noncanonical(np.eye(8), "unsorted")]
    cons = [proj.splincol((8, 8), 3)] * 2
    F = palm4msa(D, cons, max_iter=3, init=init)  # sparse warm starts: their canonical matrices
    G = palm4msa(D, cons, max_iter=3, init=[np.eye(8), np.eye(8)])
    np.testing.assert_allclose(F.toarray(), G.toarray())
    for solver in (lambda A: palm4msa(A, cons), lambda A: hierarchical(A, "hadamard"), butterfly,
                   lambda A: ksfactor(A, [(1, 8, 8, 1)])):
        with pytest.raises(TypeError, match="A"):
            solver(S)
    F = transforms.hadamard(8)
    with pytest.raises(TypeError, match="X"):
        F @ S
    with pytest.raises(TypeError, match="X"):
        S @ F
    np.testing.assert_allclose((F @ CSRFactor(S)).toarray(), F.toarray() @ D)
    # dense-only constructors and projections: a TypeError naming the argument
    for make, name in ((DenseFactor, "matrix"), (DiagFactor, "diag"), (KSFactor, "blocks"), (PermFactor, "perm"),
                       (proj.supp, "mask"), (proj.const, "C"), (proj.splin((8, 8), 2), "M"), (proj.sp((8, 8), 2), "M"),
                       (proj.normcol((8, 8)), "M"), (proj.supp(np.eye(8, dtype=bool)), "M")):
        with pytest.raises(TypeError, match=name):
            make(S)
    snap.check()


def test_large_read_only_batches_through_the_parallel_permutation():
    """PermFactor's Numba gathers (batches of >= 2^15 entries) on read-only data, both layouts."""
    rng = np.random.default_rng(12)
    p = rng.permutation(256)
    F = FactorProduct([DiagFactor(rng.standard_normal(256)), PermFactor(p)])  # the permutation sees X
    for X in (layout(rng.standard_normal((256, 200)), "ro"), layout(rng.standard_normal((200, 256)), "ro")):
        snap = Snapshot(X)
        if X.shape[0] == 256:
            np.testing.assert_allclose(F @ X, F.toarray() @ X, rtol=1e-15)
        else:
            np.testing.assert_allclose(X @ F.T, X @ F.toarray().T, rtol=1e-15)
        snap.check()


def test_loaded_files_are_canonical(tmp_path):
    F = FactorProduct([CSRFactor(sps.eye(3, format="csr"))])
    F.save(tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz") as z:
        d = dict(z)
    d["f0.data"] = np.array([1.0, 3.0, 1.0, 1.0])  # row 0 stored as 1 + 3, one column twice
    d["f0.indices"] = np.array([0, 0, 1, 2])
    d["f0.indptr"] = np.array([0, 2, 3, 4])
    np.savez(tmp_path / "g.npz", **d)
    G = gpufact.load(tmp_path / "g.npz")
    assert G.nnz == 3 and G.norm("fro") == pytest.approx(np.sqrt(18))


# ---- 7. inputs never modified ---------------------------------------------------------------

def test_no_entry_point_modifies_its_inputs():
    rng = np.random.default_rng(11)
    A = rng.standard_normal((16, 16))
    init = [np.eye(16), rng.standard_normal((16, 16))]
    perm = rng.permutation(16)
    mask = rng.random((16, 16)) < 0.5
    C = rng.standard_normal((16, 16))
    blocks = rng.standard_normal((2, 4, 2, 2))
    diag = rng.standard_normal(16)
    S = noncanonical(A * mask, "unsorted")
    X = rng.standard_normal((16, 12))
    bias = rng.standard_normal(16)
    snap = Snapshot(A, *init, perm, mask, C, blocks, diag, S, X, bias)
    F = FactorProduct([KSFactor(blocks), CSRFactor(S), DenseFactor(C), DiagFactor(diag), PermFactor(perm)])
    F @ X, X.T @ F, F.argmin_affine(X.T, bias), F.norm(), F.norm(2), F.toarray()
    F.astype(np.complex64) @ X
    for P in (proj.sp((16, 16), 9), proj.splincol((16, 16), 2), proj.supp(mask), proj.const(C), proj.normcol((16, 16))):
        P(A)
    palm4msa(A, [proj.splincol((16, 16), 4)] * 2, max_iter=3, init=init)
    palm4msa(A, [proj.splincol((16, 16), 4)] * 2, max_iter=3, init=F.factors[1:3])
    ksfactor(A, monarch_patterns(16), perm=perm)
    butterfly(A, perm=perm)
    hierarchical(A, "rectangular", n_iter_local=5, n_iter_global=2)
    snap.check()


def test_check_samples_keeps_read_only_and_memory_mapped_data(tmp_path):
    """check_samples (the estimators' input helper): read-only and memory-mapped float data
    pass through uncopied with their flags; float32 stays float32; sparse and complex data
    are refused naming X."""
    from sklearn.base import BaseEstimator

    from gpufact._validation import check_samples

    rng = np.random.default_rng(13)
    for kind in ("ro", "mmap", "ro_F"):
        for dtype in (np.float32, np.float64):
            X = layout(rng.standard_normal((20, 5)).astype(dtype), kind, tmp_path)
            snap = Snapshot(X)
            est = BaseEstimator()
            Y, be = check_samples(est, X, reset=True)
            assert Y.dtype == dtype and np.shares_memory(Y, X) and est.n_features_in_ == 5
            check_samples(est, X, reset=False)
            snap.check()
    with pytest.raises(TypeError, match="X"):
        check_samples(BaseEstimator(), noncanonical(np.eye(4), "dup"), reset=True)
    with pytest.raises(TypeError, match="X"):
        check_samples(BaseEstimator(), np.ones((3, 2), dtype=np.complex64), reset=True)


@pytest.mark.parametrize("bad_index", [4, 1_000_000, -1])
def test_csr_out_of_range_indices_refused(bad_index):
    # found by a new-user trial: malformed index arrays were read out of bounds (garbage or a crash)
    M = sps.csr_matrix((4, 4))
    M.indices = np.array([bad_index], np.int32)
    M.data = np.array([1.0])
    M.indptr = np.array([0, 1, 1, 1, 1], np.int32)
    with pytest.raises(ValueError, match="matrix"):
        gpufact.CSRFactor(M)
    bad_ptr = sps.csr_matrix((np.array([1.0]), np.array([0], np.int32), np.array([0, 1, 1, 1, 1], np.int32)), shape=(4, 4))
    bad_ptr.indptr = np.array([0, 2, 1, 1, 1], np.int32)
    with pytest.raises(ValueError, match="matrix"):
        gpufact.CSRFactor(bad_ptr)
