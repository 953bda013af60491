"""Saving and loading :class:`~gpufact.FactorProduct` objects.

File format (``.npz``, read with ``allow_pickle=False``; version 1):

==========================  ==========================================================
key                         content
==========================  ==========================================================
``__format__``              the string ``"gpufact.FactorProduct"``
``__version__``             int, 1
``n_factors``               int J
``f{j}.kind``               ``"ks"``, ``"csr"``, ``"dense"``, ``"diag"`` or ``"perm"``
``f{j}.<field>``            the factor's arrays: ks: ``blocks`` (a, d, b, c);
                            csr: ``data``, ``indices``, ``indptr``, ``shape``;
                            dense: ``matrix``; diag: ``diag``; perm: ``perm``, ``dtype``
``rel_error``               optional float64 scalar: the product's ``rel_error``
==========================  ==========================================================

Factors are saved from and loaded to the host; use ``to_device`` afterwards. ``save`` and
``load`` take the same targets: a path (``str`` or ``os.PathLike``; ``.npz`` is appended when
missing, as :func:`numpy.savez` does, so ``save(F, "op")`` and ``load("op")`` meet at
``op.npz``) or a binary file object (written / read at its current position).
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

FORMAT = "gpufact.FactorProduct"
VERSION = 1


def _is_file(path) -> bool:
    return hasattr(path, "read") or hasattr(path, "write")


def _check_target(path, mode):
    if _is_file(path):
        if not hasattr(path, mode):
            raise TypeError(f"path: the file object is not open for {'reading' if mode == 'read' else 'writing'}")
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str, os.PathLike or a binary file object, got {type(path).__name__}")
    p = os.fspath(path)
    if not isinstance(p, str):  # bytes paths
        p = os.fsdecode(p)
    return p


def _npz_name(p: str) -> str:
    """The file ``save`` writes for the name ``p`` (NumPy appends ``.npz`` when missing)."""
    return p if p.endswith(".npz") else p + ".npz"


def save(F, path) -> None:
    """Write ``F`` to ``path``: a ``str``/``os.PathLike`` (``.npz`` appended when missing)
    or a binary file object open for writing. ``F.rel_error`` is saved with the factors.
    Raises TypeError for anything else."""
    from .product import FactorProduct

    if not isinstance(F, FactorProduct):
        raise TypeError(f"F must be a FactorProduct, got {type(F).__name__}")
    target = _check_target(path, "write")
    arrays = {"__format__": np.array(FORMAT), "__version__": np.array(VERSION),
              "n_factors": np.array(len(F))}
    for j, f in enumerate(F.factors):
        arrays[f"f{j}.kind"] = np.array(f.kind)
        for k, v in f._state().items():
            arrays[f"f{j}.{k}"] = v
    if F.rel_error is not None:
        arrays["rel_error"] = np.array(float(F.rel_error), dtype=np.float64)
    np.savez(target if _is_file(target) else _npz_name(target), **arrays)


def load(path):
    """Read a FactorProduct written by :func:`save` from the same ``path`` (a name given to
    ``save`` without ``.npz`` finds the ``.npz`` file) or a binary file object open for
    reading. ``rel_error`` is restored. Corrupt or foreign files raise ValueError, a missing
    file FileNotFoundError, other argument types TypeError."""
    from .factors import FACTOR_KINDS
    from .product import FactorProduct

    path = _check_target(path, "read")
    if not _is_file(path) and not os.path.exists(path) and os.path.exists(_npz_name(path)):
        path = _npz_name(path)
    name = repr(path) if not _is_file(path) else f"<file {getattr(path, 'name', type(path).__name__)!r}>"
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"path: {name} is not a gpufact .npz file ({exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"path: {name} is not a gpufact .npz file")
    with npz:
        try:
            keys = set(npz.files)
            if "__format__" not in keys or str(npz["__format__"]) != FORMAT:
                raise ValueError("missing or wrong __format__ tag")
            version = int(npz["__version__"])
            if version != VERSION:
                raise ValueError(f"unsupported format version {version} (this gpufact reads {VERSION})")
            J = int(npz["n_factors"])
            if J < 1:
                raise ValueError("n_factors must be >= 1")
            factors = []
            for j in range(J):
                kind = str(npz[f"f{j}.kind"])
                cls = FACTOR_KINDS.get(kind)
                if cls is None:
                    raise ValueError(f"factor {j}: unknown kind {kind!r}")
                prefix = f"f{j}."
                state = {k[len(prefix):]: npz[k] for k in keys if k.startswith(prefix) and k != f"f{j}.kind"}
                factors.append(cls._from_state(state))
            F = FactorProduct(factors)
            if "rel_error" in keys:
                rel = npz["rel_error"]
                if rel.shape != () or rel.dtype.kind != "f":
                    raise ValueError("rel_error must be a float scalar")
                F.rel_error = float(rel)
            return F
        except (KeyError, ValueError, TypeError, IndexError, zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"path: {name} is not a valid gpufact file: {exc}") from exc
