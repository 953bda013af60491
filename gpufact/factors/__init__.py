"""Factor formats: Kronecker-sparse blocks, CSR, dense, diagonal and permutation."""
from .base import Factor
from .csr import CSRFactor
from .dense import DenseFactor
from .diag import DiagFactor
from .ks import KSFactor, butterfly_pattern, ks_support
from .perm import PermFactor

FACTOR_KINDS = {cls.kind: cls for cls in (KSFactor, CSRFactor, DenseFactor, DiagFactor, PermFactor)}

__all__ = ["Factor", "KSFactor", "CSRFactor", "DenseFactor", "DiagFactor", "PermFactor",
           "FACTOR_KINDS", "butterfly_pattern", "ks_support"]
