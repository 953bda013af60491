"""Argument checks that raise ``ValueError``/``TypeError`` naming the argument."""
from __future__ import annotations

import numbers
import operator

import numpy as np
from array_api_compat import is_cupy_array, is_numpy_array

SUPPORTED_DTYPES = (np.float32, np.float64, np.complex64, np.complex128)
_SUPPORTED = tuple(np.dtype(d) for d in SUPPORTED_DTYPES)


def check_dtype(dtype, name: str = "dtype") -> np.dtype:
    """Normalise ``dtype`` to one of float32/float64/complex64/complex128."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name}: not a dtype: {dtype!r}") from exc
    if dt not in _SUPPORTED:
        raise TypeError(
            f"{name}: unsupported dtype {dt}; use float32, float64, complex64 or complex128"
        )
    return dt


def float_dtype_for(dtype) -> np.dtype:
    """The supported floating dtype an input of ``dtype`` computes in (ints -> float64)."""
    dt = np.dtype(dtype)
    if dt in _SUPPORTED:
        return dt
    if dt.kind in "biu":
        return np.dtype(np.float64)
    if dt == np.float16:
        return np.dtype(np.float32)
    raise TypeError(f"unsupported dtype {dt}")


def check_bool(value, name: str) -> bool:
    """A flag: Python or NumPy bool only (a string such as "no" is truthy: refuse it)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_seed(seed, name: str = "seed") -> np.random.Generator:
    """A NumPy Generator from ``seed``: None, an int >= 0, a SeedSequence, a Generator (used
    as is) or a legacy ``numpy.random.RandomState`` (scikit-learn's convention: a Generator
    seeded by one draw from it, so that it advances as scikit-learn's estimators advance it).
    TypeError naming ``name`` for any other type, ValueError for a negative int."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.RandomState):
        return np.random.default_rng(int(seed.randint(np.iinfo(np.int64).max, dtype=np.int64)))
    if seed is not None and not isinstance(seed, np.random.SeedSequence):
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"{name} must be None, an int >= 0, a numpy.random.RandomState, Generator or "
                            f"SeedSequence, got {type(seed).__name__}")
        check_int(seed, name, min_value=0)
    return np.random.default_rng(seed)


def max_abs(X) -> float:
    """max |x| over the entries of X (NumPy or CuPy) as a Python float, 0.0 when X is empty:
    two reductions and no temporary of X's size (``abs(X).max()`` allocates one). NaN in X
    gives NaN. Used by the range checks that refuse magnitudes whose squares or projections
    would leave X's dtype."""
    if X.size == 0:
        return 0.0
    return max(float(X.max()), -float(X.min()))


def physical_memory_bytes():
    """This machine's physical memory in bytes, or None where the OS does not say."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(nbytes: float, what: str) -> None:
    """MemoryError naming ``what`` (the arguments that set the size) when an allocation of
    about ``nbytes`` exceeds this machine's physical memory: refused at once, instead of
    minutes of swapping or the OS killing the process after the pieces are allocated."""
    total = physical_memory_bytes()
    if total is not None and nbytes > total:
        raise MemoryError(f"{what}: needs about {nbytes / 2 ** 30:.3g} GiB, more than this machine's "
                          f"{total / 2 ** 30:.3g} GiB of memory")


def check_int(value, name: str, *, min_value: int | None = None, max_value: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    v = operator.index(value)
    if min_value is not None and v < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {v}")
    if max_value is not None and v > max_value:
        raise ValueError(f"{name} must be <= {max_value}, got {v}")
    return v


def check_power_of_two(n, name: str = "N", *, min_value: int = 2) -> int:
    n = check_int(n, name)
    if n < min_value or n & (n - 1):
        raise ValueError(f"{name} must be a power of two >= {min_value}, got {n}")
    return n


class NonFiniteInput(ValueError):
    """An array argument holds NaN or inf (a ``ValueError``; its own class so that PALM can
    tell a diverged iterate, met by a projection, from other bad input)."""


def check_finite(x, name: str, xp=None) -> None:
    """Raise :class:`NonFiniteInput` (a ``ValueError``) if ``x`` holds NaN or inf (one
    reduction, one host sync)."""
    if xp is None:
        xp = np
    if x.size and not bool(xp.isfinite(x).all()):
        raise NonFiniteInput(f"{name} contains NaN or inf")


def is_sparse(x) -> bool:
    """A scipy.sparse or cupyx.scipy.sparse matrix/array."""
    return (type(x).__module__ or "").startswith(("scipy.sparse", "cupyx.scipy.sparse"))


def check_dense(x, name: str) -> None:
    """TypeError naming ``name`` when ``x`` is a sparse matrix or not a NumPy/CuPy array."""
    if is_sparse(x):
        raise TypeError(f"{name} must be a dense array, got a sparse matrix: pass {name}.toarray()")
    if not (is_numpy_array(x) or is_cupy_array(x)):
        raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(x).__name__}")


def check_matrix(A, name: str = "A", be=None, *, allow_empty: bool = False, finite: bool = True):
    """Validate a 2-D numeric array of the backend ``be``; returns it with a supported dtype."""
    from ._backend import get_backend

    if be is None:
        be = get_backend(A)
    check_dense(A, name)
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(A.shape)}")
    if not allow_empty and A.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(A.shape)})")
    dt = float_dtype_for(A.dtype) if A.dtype.kind in "biufc" else None
    if dt is None:
        raise TypeError(f"{name} has non-numeric dtype {A.dtype}")
    if finite:
        check_finite(A, name, be.xp)
    if A.dtype != dt:
        A = A.astype(dt)
    return A


def _dtype_kind(X):
    """The NumPy kind of X's dtype; None without one or for a dtype NumPy does not read (a
    pandas extension dtype: scikit-learn's ``validate_data`` converts such X and checks the
    converted dtype). PyTorch tensors are NumPy arrays by then (:func:`_from_torch`)."""
    dt = getattr(X, "dtype", None)
    if dt is None:
        return None
    try:
        return np.dtype(dt).kind
    except TypeError:
        return None


def _from_torch(X, name):
    """A CPU PyTorch tensor as the NumPy array that shares its memory (``detach().numpy()``:
    float32 stays float32, a tensor that requires grad is read as it is; the memory is never
    written); other inputs unchanged. TypeError naming ``name`` for a tensor on another device
    (moving data is the caller's choice) or of a dtype NumPy lacks (bfloat16)."""
    if not type(X).__module__.startswith("torch") or not hasattr(X, "detach"):
        return X
    if X.device.type != "cpu":
        raise TypeError(f"{name}: a PyTorch tensor on {X.device}; pass a CPU tensor (tensor.cpu()) or a CuPy array")
    try:
        return X.detach().numpy()
    except (TypeError, RuntimeError) as exc:
        raise TypeError(f"{name}: a PyTorch tensor of dtype {X.dtype}, which NumPy cannot hold ({exc}); "
                        "convert it first, e.g. tensor.float()") from None


def check_samples(est, X, *, reset: bool, name: str = "X", finite: bool = True):
    """Validate a sample matrix ``X`` (n_samples, n_features) for the estimator ``est``.

    NumPy input and array-likes go through scikit-learn's ``validate_data`` (float64 or
    float32 kept, other dtypes converted to float64, NaN/inf refused, ``n_features_in_``
    set when ``reset`` and checked otherwise); read-only and memory-mapped arrays are kept
    as they are (never copied for their flags). CuPy arrays are checked with
    :func:`check_matrix` (never moved to the host). Complex data is a ``TypeError``.
    ``finite=False`` skips the NaN/inf scan of NumPy input (for callers whose kernel finds
    them while reading X; CuPy input is always scanned). Returns ``(X, backend)``.
    """
    from sklearn.utils.validation import validate_data

    from ._backend import get_backend

    X = _from_torch(X, name)
    be = get_backend(X)
    if be.is_gpu:
        X = validate_data(est, X, skip_check_array=True, reset=reset)
        X = check_matrix(X, name, be)
        if X.dtype.kind == "c":
            raise TypeError(f"{name}: complex data is not supported, got dtype {X.dtype}")
        return X, be
    if _dtype_kind(X) == "c":
        raise TypeError(f"{name}: complex data is not supported, got dtype {X.dtype}")
    X = validate_data(est, X, dtype=[np.float64, np.float32], reset=reset, ensure_all_finite=bool(finite))
    return X, be


def chunk_rows(n_rows: int, row_bytes: int, budget_bytes: int = 64 << 20, *, min_rows: int = 1):
    """Row ranges ``(start, stop)`` covering ``n_rows`` in chunks of at most ``budget_bytes``
    (each row costing ``row_bytes``), so a temporary per chunk stays within the budget."""
    rows = max(min_rows, int(budget_bytes // max(1, row_bytes)))
    return [(i, min(n_rows, i + rows)) for i in range(0, n_rows, rows)]
