"""Property-based tests (Hypothesis) over the public API, on the inputs people really pass:
random shapes (1, primes, non-powers of two where allowed), the four dtypes (and integer
data), memory layouts and flags (Fortran, negative strides, read-only, zero-stride,
strided), magnitudes from 1e-30 to 1e30 in float32 (1e-290 .. 1e290 in float64), canonical
and non-canonical sparse matrices.

The property is always the same: the dense-reference answer, or a ValueError/TypeError
that names the argument; never a crash, another exception type, a silent NaN or a changed
input. A small, derandomized number of examples by default (the suite's time budget); set
GPUFACT_HYPOTHESIS_EXAMPLES=500 (say) for a longer, randomized search. Failures found are
kept as explicit regression tests at the end of this file.
"""
from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import gpufact  # noqa: E402
from gpufact import CSRFactor, DenseFactor, DiagFactor, FactorProduct, KSFactor, PermFactor, proj  # noqa: E402
from gpufact.factorize import butterfly, ksfactor, palm4msa  # noqa: E402

from _inputs import DTYPES, SPARSE_KINDS, Snapshot, noncanonical  # noqa: E402

_N = int(os.environ.get("GPUFACT_HYPOTHESIS_EXAMPLES", "0"))
settings.register_profile("gpufact", max_examples=_N or 12, derandomize=not _N, deadline=None, database=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("gpufact")

SIZES = (1, 2, 3, 5, 7, 8, 12)
LAYOUTS = ("C", "F", "neg", "ro", "ro_F", "strided", "zero_stride")
_EXP = {np.dtype(np.float32): 28, np.dtype(np.float64): 280}  # |log10 scale| of data


def _real(dt):
    return np.dtype(np.dtype(dt).type(0).real.dtype)


@st.composite
def arrays(draw, shape, dtype, *, layouts=LAYOUTS, max_exp=None):
    """A NumPy array of ``shape`` / ``dtype`` in a drawn layout at a drawn magnitude 10^k."""
    dt = np.dtype(dtype)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dt.kind in "iu":
        X = rng.integers(-5, 6, size=shape).astype(dt)
    else:
        lim = _EXP[_real(dt)] if max_exp is None else max_exp
        k = draw(st.sampled_from(sorted({0, -lim, lim, -lim // 2, lim // 2, -3, 3})))
        X = rng.standard_normal(shape)
        if dt.kind == "c":
            X = X + 1j * rng.standard_normal(shape)
        X = (X * 10.0 ** k).astype(dt)
    kind = draw(st.sampled_from(layouts))
    if kind == "zero_stride" and len(shape) == 2 and shape[0] > 0:
        return np.broadcast_to(X[:1], shape) if draw(st.booleans()) else np.broadcast_to(X[:, :1], shape)
    if kind == "zero_stride":
        kind = "ro"
    if kind == "C":
        return np.ascontiguousarray(X)
    if kind == "F":
        return np.asfortranarray(X)
    if kind == "neg":
        sl = tuple(slice(None, None, -1) for _ in shape)
        return np.ascontiguousarray(X[sl])[sl]
    if kind in ("ro", "ro_F"):
        Y = np.array(X, order="F" if kind == "ro_F" else "C")
        Y.setflags(write=False)
        return Y
    big = np.zeros(tuple(2 * s for s in shape), dtype=dt)
    sl = tuple(slice(None, None, 2) for _ in shape)
    big[sl] = X
    return big[sl]


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def factor_and_dense(draw, n, dtype):
    """A factor with n columns (any format) and its dense matrix."""
    kind = draw(st.sampled_from(["ks", "csr", "dense", "diag", "perm"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dt = np.dtype(dtype)

    def r(shape):
        x = rng.standard_normal(shape)
        return (x + 1j * rng.standard_normal(shape) if dt.kind == "c" else x).astype(dt)

    if kind == "ks":
        a = draw(st.sampled_from(_divisors(n)))
        d = draw(st.sampled_from(_divisors(n // a)))
        c = n // (a * d)
        b = draw(st.integers(1, 3))
        f = KSFactor(draw(arrays((a, d, b, c), dt, layouts=("C", "F", "ro", "neg"), max_exp=0)))
    elif kind in ("csr", "dense"):
        m = draw(st.sampled_from(SIZES))
        D = r((m, n)) * (rng.random((m, n)) < 0.5)
        if kind == "dense":
            f = DenseFactor(draw(arrays((m, n), dt, layouts=("C", "F", "ro", "neg"), max_exp=0)))
        else:
            f = CSRFactor(noncanonical(D, draw(st.sampled_from(SPARSE_KINDS))))
            np.testing.assert_array_equal(f.toarray(), D)
            assert f.nnz == np.count_nonzero(D)
    elif kind == "diag":
        f = DiagFactor(draw(arrays((n,), dt, layouts=("C", "ro", "neg"), max_exp=0)))
    else:
        f = PermFactor(rng.permutation(n).astype(draw(st.sampled_from([np.int32, np.int64]))), dtype=dt)
    return f, f.toarray().astype(np.complex128)


@st.composite
def products(draw):
    """A FactorProduct of 1-3 factors of drawn formats and dtypes, its dense matrix (complex128)
    and the dense product of the factors' magnitudes (for a forward error bound)."""
    n = draw(st.sampled_from(SIZES))
    J = draw(st.integers(1, 3))
    facs, dense = [], []
    for _ in range(J):  # built from the right (application order)
        f, D = draw(factor_and_dense(n, draw(st.sampled_from(DTYPES))))
        facs.insert(0, f)
        dense.insert(0, D)
        n = f.shape[0]
    F = FactorProduct(facs)
    k = draw(st.sampled_from([0, -4, 4]))  # the product scaled too (its first factor)
    if k:
        F = F * 10.0 ** k
        dense[0] = F.factors[0].toarray().astype(np.complex128)  # the values F holds
    D = dense[0]
    A = np.abs(dense[0])
    for M in dense[1:]:
        D = D @ M
        A = A @ np.abs(M)
    return F, D, A


def _norm(x, axis=None):
    """Reference 2-norm without overflow/underflow (np.linalg.norm squares as is)."""
    x = np.abs(np.asarray(x, dtype=np.complex128))
    m = np.max(x, axis=axis, keepdims=True) if x.size else np.zeros((1,) * x.ndim)
    d = np.where(m > 0, m, 1)
    out = np.sqrt(np.sum((x / d) ** 2, axis=axis, keepdims=True)) * d
    return out.reshape(()) if axis is None else np.squeeze(out, axis=axis)


def _eps(dt):
    return float(np.finfo(_real(dt)).eps)


def _close(got, ref, absref, dt, factor=200.0):
    """Forward error bound of a product: |got - ref| <= c · eps · (|F_1|⋯|F_J| |X|)."""
    got = np.asarray(got).astype(np.complex128)
    err = np.abs(got - ref)
    bound = factor * _eps(dt) * absref + 1e3 * np.finfo(_real(dt)).tiny
    assert np.all(np.isfinite(got)), "non-finite result from finite inputs"
    assert np.all(err <= bound), f"max error/bound {np.max(err / bound):.3g}"


@given(prod=products(), data=st.data())
def test_apply_matches_the_dense_product(prod, data):
    F, D, A = prod
    M, N = F.shape
    B = data.draw(st.sampled_from([0, 1, 3, 9, 17]))
    xdt = data.draw(st.sampled_from(DTYPES + (np.int64,)))
    X = data.draw(arrays((N, B), xdt))
    Xr = data.draw(arrays((B, M), xdt))
    snap = Snapshot(X, Xr)
    out_dt = np.result_type(F.dtype, np.float64 if np.dtype(xdt).kind in "iu" else xdt)
    Y = F @ X
    assert Y.shape == (M, B) and Y.dtype == out_dt
    _close(Y, D @ X.astype(np.complex128), A @ np.abs(X.astype(np.complex128)), out_dt)
    Z = Xr @ F
    assert Z.shape == (B, N) and Z.dtype == out_dt
    _close(Z, Xr.astype(np.complex128) @ D, np.abs(Xr.astype(np.complex128)) @ A, out_dt)
    if B:  # vectors
        _close(F @ X[:, 0], D @ X[:, 0].astype(np.complex128), A @ np.abs(X[:, 0].astype(np.complex128)), out_dt)
    snap.check()


@given(prod=products(), data=st.data())
def test_argmin_affine_finds_the_smallest_score(prod, data):
    F, D, A = prod
    if F.dtype.kind == "c":
        with pytest.raises(TypeError):
            F.argmin_affine(np.ones((2, F.shape[1])), np.zeros(F.shape[0]))
        return
    K, N = F.shape
    B = data.draw(st.sampled_from([0, 1, 5, 33]))
    dt = np.dtype(data.draw(st.sampled_from([np.float32, np.float64])))
    X = data.draw(arrays((B, N), dt, max_exp=3))
    bias = data.draw(arrays((K,), dt, layouts=("C", "ro", "neg"), max_exp=3))
    snap = Snapshot(X, bias)
    labels, values = F.argmin_affine(X, bias, chunk_bytes=data.draw(st.sampled_from([64, 32 << 20])))
    snap.check()
    assert labels.shape == (B,) and labels.dtype == np.int32 and values.shape == (B,)
    if B == 0:
        return
    S = bias.astype(np.float64)[None, :] - 2 * (X.astype(np.float64) @ D.real.T)
    err = 1e3 * _eps(np.result_type(F.dtype, dt)) * (np.abs(bias)[None, :] + 2 * np.abs(X) @ A.T).max(axis=1)
    assert np.all((labels >= 0) & (labels < K))
    assert np.all(S[np.arange(B), labels] <= S.min(axis=1) + 2 * err)
    assert np.all(np.abs(values - S.min(axis=1)) <= 2 * err)


@given(prod=products())
def test_norms_match_numpy(prod):
    F, D, _ = prod
    fro = _norm(D)
    assert abs(F.norm("fro") - fro) <= 1e3 * _eps(F.dtype) * fro
    two = np.linalg.norm(D, 2)
    est = F.norm(2, max_iter=2000)
    assert np.isfinite(est) and est <= two * (1 + 1e3 * _eps(F.dtype)) and est >= 0.8 * two


@given(prod=products(), data=st.data())
def test_transpose_adjoint_dtype_and_round_trips(prod, data, tmp_path_factory):
    F, D, _ = prod
    tol = 1e3 * _eps(F.dtype) * max(1.0, np.abs(D).max())
    assert np.allclose(F.T.toarray(), D.T, rtol=0, atol=tol) and np.allclose(F.H.toarray(), D.conj().T, rtol=0, atol=tol)
    F.rel_error = data.draw(st.sampled_from([None, 0.5]))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(F)).toarray(), F.toarray())
    L = pickle.loads(pickle.dumps(F.aslinearoperator()))
    np.testing.assert_array_equal(L @ np.eye(F.shape[1], dtype=F.dtype), F.toarray())
    how = data.draw(st.sampled_from(["bytes", "name"]))
    if how == "bytes":
        b = io.BytesIO()
        F.save(b)
        b.seek(0)
        G = gpufact.load(b)
    else:
        p = tmp_path_factory.mktemp("io") / "op"
        F.save(p)
        G = gpufact.load(p)
    for g, f in zip(G.factors, F.factors):  # stored values bit-exact
        assert type(g) is type(f) and g.dtype == f.dtype
        np.testing.assert_array_equal(g.toarray(), f.toarray())
    # the product up to BLAS rounding (a Fortran-ordered dense factor comes back C-ordered)
    np.testing.assert_allclose(G.toarray(), F.toarray(), rtol=0, atol=tol)
    assert G.dtype == F.dtype and G.rel_error == F.rel_error and G.nnz == F.nnz


@given(data=st.data())
def test_sparse_input_gives_the_canonical_matrix(data):
    m, n = data.draw(st.sampled_from(SIZES)), data.draw(st.sampled_from(SIZES))
    dt = np.dtype(data.draw(st.sampled_from(DTYPES + (np.int32,))))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    D = rng.integers(-3, 4, size=(m, n)).astype(dt) if dt.kind == "i" else rng.standard_normal((m, n)).astype(dt)
    D = D * (rng.random((m, n)) < data.draw(st.sampled_from([0.0, 0.3, 1.0])))
    kind = data.draw(st.sampled_from(SPARSE_KINDS))
    S = noncanonical(D, kind, index_dtype=data.draw(st.sampled_from([np.int32, np.int64])))
    snap = Snapshot(S)
    f = CSRFactor(S)
    assert f.matrix.has_canonical_format and f.nnz == np.count_nonzero(D)
    assert f.dtype == (np.float64 if dt.kind == "i" else dt)
    np.testing.assert_allclose(f.toarray(), D, rtol=4 * _eps(f.dtype), atol=0)
    assert abs(FactorProduct([f]).norm("fro") - _norm(D)) <= 10 * _eps(f.dtype) * _norm(D)
    snap.check()


_CONSTRAINTS = ["sp", "splin", "spcol", "splincol", "normcol", "normlin", "supp"]


@given(data=st.data())
def test_projections_keep_the_largest_entries_at_any_scale(data):
    m, n = data.draw(st.sampled_from(SIZES)), data.draw(st.sampled_from(SIZES))
    dt = np.dtype(data.draw(st.sampled_from(DTYPES)))
    M = data.draw(arrays((m, n), dt))
    name = data.draw(st.sampled_from(_CONSTRAINTS))
    normalized = data.draw(st.booleans())
    limit = {"sp": m * n, "splin": n, "spcol": m, "splincol": max(m, n)}.get(name, 1)
    k = data.draw(st.integers(1, limit))
    if name in ("normcol", "normlin"):
        P = getattr(proj, name)((m, n), 2.0)
    elif name == "supp":
        P = proj.supp(np.asarray(data.draw(arrays((m, n), np.int64))) > 0, normalized=normalized)
    else:
        P = getattr(proj, name)((m, n), k, normalized=normalized)
    snap = Snapshot(M)
    out = P(M)
    snap.check()
    assert out.shape == (m, n) and out.dtype == dt and np.all(np.isfinite(out))
    mag, keep = np.abs(M.astype(np.complex128)), out != 0
    Mc = M.astype(np.complex128)
    if name in ("normcol", "normlin"):
        ax = 0 if name == "normcol" else 1
        nrm = _norm(out, axis=ax)
        nz = _norm(Mc, axis=ax) > 0
        np.testing.assert_allclose(nrm[nz], 2.0, rtol=1e2 * _eps(dt))
        return
    scale = _norm(Mc[keep]) if normalized and keep.any() else 1.0
    np.testing.assert_allclose(out.astype(np.complex128)[keep] * scale, Mc[keep], rtol=1e2 * _eps(dt), atol=0)
    if normalized and keep.any():
        assert abs(_norm(out) - 1) <= 1e2 * _eps(dt)
    if name == "splin":  # every kept entry of a row at least as large as every dropped one
        for i in range(m):
            if keep[i].any() and (~keep[i]).any():
                assert mag[i][keep[i]].min() >= mag[i][~keep[i] & (mag[i] > 0)].max(initial=0)
        assert np.all(keep.sum(axis=1) <= k)
    if name == "spcol":
        for j in range(n):
            if keep[:, j].any() and (~keep[:, j]).any():
                assert mag[:, j][keep[:, j]].min() >= mag[:, j][~keep[:, j] & (mag[:, j] > 0)].max(initial=0)
        assert np.all(keep.sum(axis=0) <= k)
    if name == "sp":
        assert keep.sum() <= k
        if keep.any() and (~keep).any():
            assert mag[keep].min() >= mag[~keep].max()


@given(data=st.data())
def test_solvers_answer_or_refuse_by_name(data):
    """butterfly / ksfactor / palm4msa on drawn shapes, dtypes, layouts and magnitudes: a
    finite factorization whose rel_error is what the dense product gives (and PALM's at most
    1), or a ValueError naming A / the argument for shapes they do not take."""
    m, n = data.draw(st.sampled_from((1, 2, 3, 4, 6, 8, 9, 16))), data.draw(st.sampled_from((1, 2, 4, 5, 8, 16)))
    dt = np.dtype(data.draw(st.sampled_from(DTYPES)))
    A = data.draw(arrays((m, n), dt))
    snap = Snapshot(A)
    Ac = A.astype(np.complex128)
    nrm = _norm(Ac)
    which = data.draw(st.sampled_from(["butterfly", "monarch", "palm"]))
    if which == "butterfly":
        ok = m == n and m >= 2 and m & (m - 1) == 0
        if not ok:
            with pytest.raises(ValueError, match="A"):
                butterfly(A)
            return
        F, info = butterfly(A, return_errors=True)
    elif which == "monarch":
        r = int(round(np.sqrt(n)))
        if r * r != n or m != n:
            with pytest.raises(ValueError, match="N|pattern|A"):
                ksfactor(A, gpufact.factorize.monarch_patterns(n))
            return
        F, info = ksfactor(A, gpufact.factorize.monarch_patterns(n), return_errors=True)
    else:
        k = data.draw(st.integers(1, max(m, n)))
        cons = [proj.splincol((m, min(m, n)), min(k, max(m, min(m, n)))), proj.splincol((min(m, n), n), min(k, max(min(m, n), n)))]
        F = palm4msa(A, cons, max_iter=data.draw(st.integers(1, 8)))
        info = {"rel_error": F.rel_error}
        assert F.rel_error <= 1 + 1e2 * _eps(dt)
    snap.check()
    assert F.dtype == dt and all(np.all(np.isfinite(f.toarray())) for f in F.factors)
    dense_err = _norm(F.toarray().astype(np.complex128) - Ac) / nrm if nrm > 0 else 0.0
    assert abs(info["rel_error"] - dense_err) <= 1e3 * _eps(dt) * max(1.0, dense_err)


@given(data=st.data())
def test_bad_arguments_raise_errors_naming_them(data):
    """Inputs of the wrong kind or shape: ValueError/TypeError naming the argument."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    F = FactorProduct([DenseFactor(rng.standard_normal((5, 7)))])
    case = data.draw(st.sampled_from(["shape", "ndim", "sparse", "list", "nan_factor", "object", "bias"]))
    if case == "shape":
        X = np.ones((data.draw(st.sampled_from([1, 4, 6, 8])), 3))
        with pytest.raises(ValueError, match="X"):
            F @ X
    elif case == "ndim":
        with pytest.raises(ValueError, match="X"):
            F @ np.ones((7, 2, 2))
    elif case == "sparse":
        S = noncanonical(np.eye(7), data.draw(st.sampled_from(SPARSE_KINDS)))
        with pytest.raises(TypeError, match="X"):
            F @ S
    elif case == "list":
        with pytest.raises(TypeError):
            F @ [[1.0] * 3] * 7
    elif case == "nan_factor":
        v = rng.standard_normal(7)
        v[data.draw(st.integers(0, 6))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        with pytest.raises(ValueError, match="diag"):
            DiagFactor(v)
        with pytest.raises(ValueError, match="A"):
            palm4msa(v.reshape(7, 1), [proj.sp((7, 1), 2)])
    elif case == "object":
        with pytest.raises(TypeError, match="X"):
            F @ np.array([[object()]] * 7)
    else:
        with pytest.raises((ValueError, TypeError), match="bias"):
            F.argmin_affine(np.ones((2, 7)), np.ones(4))


# ---- regression tests: examples Hypothesis found -------------------------------------------

def test_regression_scaled_permutation_keeps_its_precision():
    """F * c with a PermFactor first: the CSR factor it becomes keeps F's float32 (a Python
    scalar is weak under NEP 50; np.asarray(c) made it float64)."""
    F = FactorProduct([PermFactor(np.array([2, 0, 1]), dtype=np.float32), DiagFactor(np.ones(3, np.float32))])
    G = F * 1e-4
    assert G.dtype == np.float32 and G.factors[0].dtype == np.float32
    np.testing.assert_allclose(G.toarray(), F.toarray() * np.float32(1e-4))


def test_regression_projection_of_one_entry_at_the_range_ends():
    """sp(1) of a 1 x 1 float64 matrix holding 1.26e279 / 1.26e-281 (drawn by Hypothesis):
    the normalised projection is exactly ±1 (its norm squared leaves the range)."""
    for v in (1.25730221e279, 1.25730221e-281, -3e-320):
        np.testing.assert_array_equal(proj.sp((1, 1), 1)(np.array([[v]])), [[np.sign(v)]])
        np.testing.assert_array_equal(proj.splincol((1, 1), 1)(np.array([[v]])), [[np.sign(v)]])


def test_regression_round_trip_of_a_fortran_ordered_dense_factor():
    """Found by Hypothesis: a product with a Fortran-ordered DenseFactor saved and loaded
    gives the same stored values, and products equal up to one rounding (BLAS sums the
    C-ordered copy in another order)."""
    M = np.asfortranarray(np.array([[0.3, 1.7], [2.9, -0.1]]) * 1e-8)
    F = FactorProduct([DenseFactor(M), KSFactor(np.array([[[[0.7], [1.3]]]]))])
    b = io.BytesIO()
    F.save(b)
    b.seek(0)
    G = gpufact.load(b)
    np.testing.assert_array_equal(G.factors[0].toarray(), M)
    np.testing.assert_allclose(G.toarray(), F.toarray(), rtol=4 * np.finfo(np.float64).eps)
