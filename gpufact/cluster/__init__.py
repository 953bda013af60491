"""Clustering with fast-transform centroids.

* :class:`QuickMeans` — K-means whose centroid matrix is a product of sparse factors
  (QuicK-means, Giffon et al., Machine Learning 2021): assignments in O(nnz) per sample.
"""
from ._quickmeans import QuickMeans

__all__ = ["QuickMeans"]
