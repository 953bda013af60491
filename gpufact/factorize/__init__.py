"""Learning sparse factorizations.

* :func:`palm4msa` — PALM for A ≈ λ S_1⋯S_J under any :mod:`gpufact.proj` constraints;
* :func:`hierarchical` — peel factors one at a time (presets "hadamard", "rectangular");
* :func:`butterfly` / :func:`ksfactor` — butterfly / Kronecker-sparse factorization with
  guarantees (hierarchical block low-rank).
"""
from .butterfly import butterfly, butterfly_patterns, chain_product_pattern, ksfactor, monarch_patterns
from .hierarchical import hadamard_constraints, hierarchical, rectangular_constraints
from .palm import DivergenceError, palm4msa

__all__ = ["palm4msa", "hierarchical", "butterfly", "ksfactor", "butterfly_patterns", "monarch_patterns",
           "chain_product_pattern", "hadamard_constraints", "rectangular_constraints", "DivergenceError"]
