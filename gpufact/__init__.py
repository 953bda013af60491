"""gpufact: learn and apply fast linear transforms (products of sparse factors) on CPU and GPU.

Main entry points: :class:`FactorProduct`, the factor formats (:class:`KSFactor`, ...),
:mod:`gpufact.transforms` (Hadamard, DFT, random butterflies), :func:`load`,
:mod:`gpufact.proj` and :mod:`gpufact.factorize`. Arrays may be NumPy or CuPy; results stay
where the inputs are. Importing gpufact never imports CuPy.
"""
from ._backend import get_backend, gpu_available, to_device, to_numpy
from .factors import CSRFactor, DenseFactor, DiagFactor, Factor, KSFactor, PermFactor
from .io import load
from .product import FactorProduct
from ._vjp import vjp
from . import transforms

__version__ = "0.1.0"

__all__ = ["FactorProduct", "Factor", "KSFactor", "CSRFactor", "DenseFactor", "DiagFactor",
           "PermFactor", "load", "to_device", "to_numpy", "get_backend", "gpu_available",
           "transforms", "vjp", "__version__"]
