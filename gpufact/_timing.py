"""Wall-clock timing helper shared by the demo and the benchmark scripts."""
from __future__ import annotations

import time

import numpy as np


def best_time(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Best of ``repeat`` wall-clock runs of ``fn()`` in seconds, after ``warmup`` calls
    (JIT compilation and caches happen there). GPU callers synchronize inside ``fn``."""
    for _ in range(warmup):
        fn()
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
