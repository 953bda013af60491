"""Inputs people really pass, and a check that nothing we are given is modified.

Shared by tests/test_robustness.py (the examples of issue 9, one per kind, and the entry
points each kind reaches) and tests/test_properties.py (Hypothesis over the public API).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sps

DTYPES = (np.float32, np.float64, np.complex64, np.complex128)


def layout(X, kind: str, tmp_path=None):
    """X (a NumPy array) in another memory layout or with other flags, same values:
    "C", "F" (Fortran), "neg" (negative strides), "ro" (read-only), "ro_F", "mmap"
    (np.load(mmap_mode="r") of a file under tmp_path), "strided" (every other element)."""
    if kind == "C":
        return np.ascontiguousarray(X)
    if kind == "F":
        return np.asfortranarray(X)
    if kind == "neg":
        Y = np.ascontiguousarray(X[::-1, ...] if X.ndim == 1 else X[::-1, ::-1])
        return Y[::-1, ...] if X.ndim == 1 else Y[::-1, ::-1]
    if kind in ("ro", "ro_F"):
        Y = np.array(X, order="F" if kind == "ro_F" else "C")
        Y.setflags(write=False)
        return Y
    if kind == "mmap":
        path = tmp_path / f"x{np.random.default_rng().integers(1 << 30)}.npy"
        np.save(path, np.ascontiguousarray(X))
        return np.load(path, mmap_mode="r")
    if kind == "strided":
        big = np.zeros(tuple(2 * s for s in X.shape), dtype=X.dtype)
        sl = tuple(slice(None, None, 2) for _ in X.shape)
        big[sl] = X
        return big[sl]
    raise ValueError(kind)


LAYOUTS = ("C", "F", "neg", "ro", "ro_F", "strided")


def noncanonical(D, kind: str, index_dtype=np.int32):
    """The dense matrix D as a scipy sparse matrix in a non-canonical or other format:
    "dup" (each nonzero split into two duplicate halves), "unsorted", "zeros" (explicit
    zeros stored), "int64" (int64 index arrays), "coo", "csc", "csr_array", "coo_array"."""
    m, n = D.shape
    rows, cols = np.nonzero(D)
    vals = D[rows, cols]
    if kind == "dup":
        half = (vals / 2).astype(D.dtype)  # halves: the sum is exact in floating point
        r = np.concatenate([rows, rows])
        c = np.concatenate([cols, cols])
        v = np.concatenate([half, vals - half])
        order = np.argsort(r, kind="stable")
        r, c, v = r[order], c[order], v[order]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=m))])
        return sps.csr_matrix((v, c.astype(index_dtype), indptr.astype(index_dtype)), shape=(m, n))
    if kind == "unsorted":
        S = sps.csr_matrix(D)
        for i in range(m):  # reverse each row's entries
            a, b = S.indptr[i], S.indptr[i + 1]
            S.indices[a:b] = S.indices[a:b][::-1].copy()
            S.data[a:b] = S.data[a:b][::-1].copy()
        S.has_sorted_indices = False
        return S
    if kind == "zeros":
        mask = np.ones_like(D, dtype=bool)
        r, c = np.nonzero(mask)
        indptr = np.arange(0, m * n + 1, n)
        return sps.csr_matrix((D[r, c], c.astype(index_dtype), indptr.astype(index_dtype)), shape=(m, n))
    if kind == "int64":
        S = sps.csr_matrix(D)
        return sps.csr_matrix((S.data, S.indices.astype(np.int64), S.indptr.astype(np.int64)), shape=(m, n))
    if kind == "coo":
        return sps.coo_matrix(D)
    if kind == "csc":
        return sps.csc_matrix(D)
    if kind == "csr_array":
        return sps.csr_array(D)
    if kind == "coo_array":
        return sps.coo_array(D)
    raise ValueError(kind)


SPARSE_KINDS = ("dup", "unsorted", "zeros", "int64", "coo", "csc", "csr_array", "coo_array")


class Snapshot:
    """Everything observable about the arrays and sparse matrices in ``objs``: values, dtype,
    shape, strides and flags of arrays; every array attribute of a sparse matrix (data,
    index arrays) and its format flags. ``check()`` asserts nothing changed."""

    def __init__(self, *objs):
        self.objs = objs
        self.state = [self._grab(o) for o in objs]

    @staticmethod
    def _array(a):
        return (np.array(a, copy=True), a.dtype, a.shape, a.strides, a.flags.writeable,
                a.flags.c_contiguous, a.flags.f_contiguous, a.flags.owndata)

    def _grab(self, o):
        if isinstance(o, np.ndarray):
            return ("array", self._array(o))
        if sps.issparse(o):
            arrs = {k: self._array(v) for k, v in vars(o).items() if isinstance(v, np.ndarray)}
            flags = {}
            for f in ("has_sorted_indices", "has_canonical_format"):
                if hasattr(o, f):
                    flags[f] = bool(getattr(o, f))
            return ("sparse", (o.format, o.shape, arrs, flags))
        return ("other", None)

    def check(self):
        for o, (kind, before) in zip(self.objs, self.state):
            if kind == "array":
                _assert_same_array(o, before)
            elif kind == "sparse":
                fmt, shape, arrs, flags = before
                assert o.format == fmt and o.shape == shape
                now = {k: v for k, v in vars(o).items() if isinstance(v, np.ndarray)}
                assert set(now) == set(arrs), "sparse input: array attributes changed"
                for k, v in now.items():
                    _assert_same_array(v, arrs[k])
                for f, val in flags.items():
                    assert bool(getattr(o, f)) == val, f"sparse input: flag {f} changed"


def _assert_same_array(a, before):
    vals, dtype, shape, strides, writeable, c, f, own = before
    assert a.dtype == dtype and a.shape == shape and a.strides == strides, "input array metadata changed"
    assert a.flags.writeable == writeable, "input array writeable flag changed"
    assert (a.flags.c_contiguous, a.flags.f_contiguous, a.flags.owndata) == (c, f, own)
    np.testing.assert_array_equal(a, vals, err_msg="input array values changed")


def rel_err(got, ref):
    got = np.asarray(got, dtype=np.complex128)
    ref = np.asarray(ref, dtype=np.complex128)
    den = np.linalg.norm(ref)
    return np.linalg.norm(got - ref) / (den if den > 0 else 1.0)


def tol_for(dtype, factor: float = 1.0) -> float:
    return factor * (5e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-11)


def rand(shape, dtype, rng):
    dt = np.dtype(dtype)
    x = rng.standard_normal(shape)
    if dt.kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dt)
