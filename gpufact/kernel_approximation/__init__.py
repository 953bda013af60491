"""Kernel approximation at fast-transform cost: scikit-learn transformers on NumPy or CuPy.

- :class:`Fastfood` (Le, Sarlós & Smola, ICML 2013) and :func:`fastfood_operator`;
- :class:`StructuredOrthogonalFeatures` (SORF) and :class:`OrthogonalRandomFeatures` (ORF,
  its dense reference), Yu et al., NeurIPS 2016;
- :class:`FastNystroem`: Nyström features with K-means, QuickMeans, uniform or structured
  (Si, Hsieh & Dhillon, ICML 2016) landmarks;
- :class:`LearnedStructuredFeatures`: SORF whose diagonals are tuned to the data.

All approximate the RBF kernel ``exp(-gamma ‖x − y‖²)`` with the conventions of
scikit-learn's ``RBFSampler`` / ``Nystroem``; fitted operators live in X's namespace and dtype.
"""
from ._fastfood import Fastfood, fastfood_operator
from ._learned import LearnedStructuredFeatures, sorf_loss_grad
from ._nystroem import FastNystroem
from ._sorf import OrthogonalRandomFeatures, StructuredOrthogonalFeatures

__all__ = ["Fastfood", "fastfood_operator", "StructuredOrthogonalFeatures", "OrthogonalRandomFeatures",
           "FastNystroem", "LearnedStructuredFeatures", "sorf_loss_grad"]
