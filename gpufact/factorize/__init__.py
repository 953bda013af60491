"""Learning sparse factorizations: butterfly / Kronecker-sparse (with guarantees)."""
from .butterfly import butterfly, butterfly_patterns, chain_product_pattern, ksfactor, monarch_patterns

__all__ = ["butterfly", "ksfactor", "butterfly_patterns", "monarch_patterns", "chain_product_pattern"]
