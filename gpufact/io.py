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
==========================  ==========================================================

Factors are saved from and loaded to the host; use ``to_device`` afterwards.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

FORMAT = "gpufact.FactorProduct"
VERSION = 1


def save(F, path) -> None:
    """Write ``F`` to ``path`` (a ``.npz`` file; the suffix is added by NumPy if missing)."""
    from .product import FactorProduct

    if not isinstance(F, FactorProduct):
        raise TypeError(f"F must be a FactorProduct, got {type(F).__name__}")
    arrays = {"__format__": np.array(FORMAT), "__version__": np.array(VERSION),
              "n_factors": np.array(len(F))}
    for j, f in enumerate(F.factors):
        arrays[f"f{j}.kind"] = np.array(f.kind)
        for k, v in f._state().items():
            arrays[f"f{j}.{k}"] = v
    np.savez(path, **arrays)


def load(path):
    """Read a FactorProduct written by :func:`save`. Corrupt or foreign files raise ValueError."""
    from .factors import FACTOR_KINDS
    from .product import FactorProduct

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"path: {os.fspath(path)!r} is not a gpufact .npz file ({exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"path: {os.fspath(path)!r} is not a gpufact .npz file")
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
            return FactorProduct(factors)
        except (KeyError, ValueError, TypeError, IndexError, zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"path: {os.fspath(path)!r} is not a valid gpufact file: {exc}") from exc
