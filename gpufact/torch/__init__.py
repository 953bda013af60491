"""PyTorch layers over gpufact's fast factor products (optional extra ``gpufact[torch]``).

* :class:`KSLinear` — a drop-in replacement for ``torch.nn.Linear`` whose weight is a
  product of Kronecker-sparse factors (butterfly, Monarch, or any chain of KS patterns),
  trained end to end, convertible from a trained dense layer (:meth:`KSLinear.from_dense`)
  and back (:meth:`KSLinear.to_dense`).
* :class:`KSChainFunction` — the ``torch.autograd.Function`` under it: the forward runs the
  fused chain kernels of :class:`gpufact.FactorProduct`, the backward the fused
  recompute-per-tile gradient kernels of :func:`gpufact.vjp`; tensors are handed over
  without copies (CPU: ``Tensor.numpy()``; CUDA: DLPack to CuPy on torch's current stream).
  :class:`KSAffineFunction` adds a bias inside the same function (what ``KSLinear`` uses).
* :func:`ks_patterns` — the KS patterns of a structure for given feature counts.
* :func:`param_groups` — optimizer groups with the factors' learning rates scaled
  (:meth:`KSLinear.lr_scales`) so that W moves at ``nn.Linear``'s relative rate.

Importing :mod:`gpufact` never imports torch; importing this module does.
"""
try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("gpufact.torch needs PyTorch: pip install 'gpufact[torch]'") from e

from ._function import KSAffineFunction, KSChainFunction, ks_chain
from .modules import KSLinear, ks_patterns, param_groups

__all__ = ["KSLinear", "KSAffineFunction", "KSChainFunction", "ks_chain", "ks_patterns", "param_groups"]
