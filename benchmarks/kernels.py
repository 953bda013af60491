"""Kernel approximation: gpufact's Fastfood / SORF / FastNystroem against scikit-learn's
RBFSampler and Nystroem (and scikit-learn-extra's Fastfood where it imports).

Sections (all by default; ``--only kernel,split,nystroem,learned,downstream``):

1. kernel: RBF kernel blocks (Fashion-MNIST 2 000 samples, digits 1 797), γ = 1/(mean squared
   pairwise distance): relative error ‖K − ZZᵀ‖_F/‖K‖_F and transform time per sample
   (float32) for D ∈ {1024, 4096, 16384}; the time split of the fused transform
   (structured product alone, cosine alone).
2. nystroem: landmarks quickmeans / kmeans / uniform / fast-nys and scikit-learn's Nystroem at
   K ∈ {64, 256}: error, fit and transform time.
4. learned: LearnedStructuredFeatures vs random SORF and RBFSampler at D and 4D.
5. downstream: Fashion-MNIST 60 000 train / 10 000 test, features + RidgeClassifier at equal
   D, accuracy and total time (fit + transform + classifier); exact RBF SVC on a subsample.

Writes benchmarks/results/kernels_cpu.md. ``--quick`` shrinks every size for a smoke run.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _common import interleaved_best, machine, write  # noqa: F401

from sklearn.kernel_approximation import Nystroem, RBFSampler

from gpufact.datasets import fashion_mnist_available, load_digits, load_fashion_mnist
from gpufact.kernel_approximation import Fastfood, FastNystroem, StructuredOrthogonalFeatures


def rbf_block(X, gamma):
    Xd = X.astype(np.float64)
    sq = (Xd ** 2).sum(1)
    D = np.maximum(sq[:, None] - 2 * Xd @ Xd.T + sq[None, :], 0)
    return np.exp(-gamma * D)


def gamma_of(X):
    Xd = X.astype(np.float64)
    sq = (Xd ** 2).sum(1)
    D = np.maximum(sq[:, None] - 2 * Xd @ Xd.T + sq[None, :], 0)
    return 1.0 / D[np.triu_indices(len(X), 1)].mean()


def rel_err(K, Z):
    G = (Z @ Z.T).astype(np.float64)
    return float(np.linalg.norm(K - G) / np.linalg.norm(K))


def sklearn_extra_fastfood():
    try:
        from sklearn_extra.kernel_approximation import Fastfood as SKEFastfood  # noqa: F401
        return SKEFastfood, ""
    except Exception as exc:  # not installed, or built against another NumPy
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"


def rff_methods(gamma, D, seed):
    return {
        "RBFSampler (sklearn)": RBFSampler(gamma=gamma, n_components=D, random_state=seed),
        "Fastfood cos": Fastfood(gamma=gamma, n_components=D, random_state=seed),
        "SORF cos": StructuredOrthogonalFeatures(gamma=gamma, n_components=D, random_state=seed),
        "SORF sincos": StructuredOrthogonalFeatures(gamma=gamma, n_components=D, features="sincos",
                                                    random_state=seed),
    }


def section_kernel(datasets, Ds, seeds, lines):
    lines += ["## 1. Kernel approximation error and transform time (float32)", "",
              "Relative error ‖K − ZZᵀ‖_F / ‖K‖_F (mean over seeds) and transform time per sample "
              "(best of interleaved rounds, whole block at once). Ratios: RBFSampler time / method "
              "time, method error / RBFSampler error.", ""]
    for name, X in datasets.items():
        gamma = gamma_of(X)
        K = rbf_block(X, gamma)
        lines += [f"### {name}: {X.shape[0]} × {X.shape[1]}, γ = {gamma:.4g}", "",
                  "| D | method | rel. error | µs / sample | speed-up vs RBFSampler | error / RBFSampler's |",
                  "|---:|---|---:|---:|---:|---:|"]
        for D in Ds:
            errs, times = {}, {}
            for s in (seeds if D < 16384 else seeds[:1]):
                ms = rff_methods(gamma, D, s)
                if D <= X.shape[0]:
                    ms["Nystroem (sklearn)"] = Nystroem(gamma=gamma, n_components=D, random_state=s)
                for m, est in ms.items():
                    Z = est.fit(X).transform(X)
                    errs.setdefault(m, []).append(rel_err(K, Z))
                    if s == seeds[0]:
                        times[m] = est
            best = interleaved_best({m: (lambda e=e: e.transform(X)) for m, e in times.items()},
                                    rounds=2, repeat=2)
            base_t, base_e = best["RBFSampler (sklearn)"], np.mean(errs["RBFSampler (sklearn)"])
            for m in times:
                e = np.mean(errs[m])
                lines.append(f"| {D} | {m} | {e:.4f} | {best[m] / X.shape[0] * 1e6:.1f} | "
                             f"{base_t / best[m]:.2f}× | {e / base_e:.2f} |")
            print("\n".join(lines[-len(times):]), flush=True)
        lines.append("")


def section_split(X, D, lines):
    """Where the time goes at d = 784, D = 16384 (float32): the fused transform (products,
    cosine and store in one pass per tile), the cosine alone (the same kernel's Numba cosine
    on a (B, D) array), the structured product unfused (FactorProduct ``X @ F.T``, the
    generic KS chain), and RBFSampler split into its GEMM (BLAS) and NumPy's cosine. Every
    column is timed interleaved in one process (best of rounds)."""
    from gpufact._kernels import cpu_features

    gamma = gamma_of(X[:1000])
    n = X.shape[0]
    lines += [f"## Time split at d = {X.shape[1]}, D = {D}, float32, {n} samples (µs / sample)", "",
              "| method | fused transform | cos pass alone (Numba) | product share (fused − cos) | "
              "X @ operator_.T (unfused) | RBFSampler | its GEMM | its np.cos | RBFSampler / fused |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rbf = RBFSampler(gamma=gamma, n_components=D, random_state=0).fit(X)
    W = rbf.random_weights_.astype(np.float32)
    P = np.random.default_rng(0).standard_normal((n, D)).astype(np.float32)
    off = np.zeros(D, np.float32)
    for name, est in (("SORF cos", StructuredOrthogonalFeatures(gamma=gamma, n_components=D, random_state=0)),
                      ("Fastfood cos", Fastfood(gamma=gamma, n_components=D, random_state=0))):
        est.fit(X)
        F = est.operator_
        best = interleaved_best({"fused": lambda: est.transform(X), "product": lambda: X @ F.T,
                                 "cos": lambda: cpu_features.cos_features_f32(P, off, np.float32(1)),
                                 "rbf": lambda: rbf.transform(X), "gemm": lambda: X @ W,
                                 "npcos": lambda: np.cos(P)}, rounds=3, repeat=2)
        us = {k: v / n * 1e6 for k, v in best.items()}
        lines.append(f"| {name} | {us['fused']:.1f} | {us['cos']:.1f} | {us['fused'] - us['cos']:.1f} | "
                     f"{us['product']:.1f} | {us['rbf']:.1f} | {us['gemm']:.1f} | {us['npcos']:.1f} | "
                     f"{best['rbf'] / best['fused']:.2f}× |")
        print(lines[-1], flush=True)
    lines.append("")


def section_nystroem(datasets, Ks, lines):
    from gpufact.kernel_approximation import _landmarks

    lines += ["## 2. Nyström landmarks", "",
              "Relative kernel error, fit time and transform time per sample (float32, the whole block). "
              f"QuickMeans landmarks: {_landmarks.QM_N_FACTORS} factors, sparsity {_landmarks.QM_SPARSITY}, "
              f"{_landmarks.QM_MAX_ITER} Lloyd iterations of {_landmarks.QM_PALM_MAX_ITER} PALM sweeps; "
              "nnz(V) = stored nonzeros of the centroid operator (K·d for dense landmarks).", ""]
    for name, X in datasets.items():
        gamma = gamma_of(X)
        K = rbf_block(X, gamma)
        lines += [f"### {name}", "", "| K | landmarks | rel. error | fit s | transform µs / sample | nnz(V) |",
                  "|---:|---|---:|---:|---:|---:|"]
        for k in Ks:
            ests = {"sklearn Nystroem (uniform)": Nystroem(gamma=gamma, n_components=k, random_state=0)}
            for lm in ("quickmeans", "kmeans", "uniform", "fast-nys"):
                ests[f"FastNystroem {lm}"] = FastNystroem(gamma=gamma, n_components=k, landmarks=lm, random_state=0)
            fitted = {}
            for m, est in ests.items():
                t0 = time.perf_counter()
                est.fit(X)
                fitted[m] = (est, time.perf_counter() - t0)
            best = interleaved_best({m: (lambda e=e: e.transform(X)) for m, (e, _) in fitted.items()},
                                    rounds=2, repeat=2)
            for m, (est, tfit) in fitted.items():
                op = getattr(est, "landmark_operator_", None)
                nnz = op.nnz if op is not None else k * X.shape[1]
                lines.append(f"| {k} | {m} | {rel_err(K, est.transform(X)):.4f} | {tfit:.2f} | "
                             f"{best[m] / X.shape[0] * 1e6:.1f} | {nnz} |")
                print(lines[-1], flush=True)
        lines.append("")


def section_downstream(n_train, D, n_svc, lines):
    from sklearn.linear_model import RidgeClassifier
    from sklearn.svm import SVC

    Xtr, ytr = load_fashion_mnist(subset="train", return_X_y=True)
    Xte, yte = load_fashion_mnist(subset="test", return_X_y=True)
    Xtr, ytr = Xtr[:n_train], ytr[:n_train]
    gamma = gamma_of(Xtr[:2000])
    lines += [f"## 5. Downstream: Fashion-MNIST, {len(Xtr)} train / {len(Xte)} test, D = {D}, float32", "",
              "Features + RidgeClassifier(alpha=1); total = feature fit + transform (train and test) + "
              "classifier fit + predict.", "",
              "| pipeline | accuracy | feature time s | total s |", "|---|---:|---:|---:|"]
    for name, est in {**rff_methods(gamma, D, 0),
                      "Nystroem (sklearn)": Nystroem(gamma=gamma, n_components=D, random_state=0),
                      "FastNystroem uniform": FastNystroem(gamma=gamma, n_components=D, landmarks="uniform",
                                                           random_state=0)}.items():
        t0 = time.perf_counter()
        Ztr = est.fit(Xtr).transform(Xtr)
        Zte = est.transform(Xte)
        tf = time.perf_counter() - t0
        clf = RidgeClassifier(alpha=1.0).fit(Ztr, ytr)
        acc = clf.score(Zte, yte)
        tt = time.perf_counter() - t0
        lines.append(f"| {name} | {acc:.4f} | {tf:.1f} | {tt:.1f} |")
        print(lines[-1], flush=True)
        del Ztr, Zte
    t0 = time.perf_counter()
    svc = SVC(kernel="rbf", gamma=gamma, C=10).fit(Xtr[:n_svc], ytr[:n_svc])
    acc = svc.score(Xte, yte)
    lines.append(f"| exact RBF SVC (C=10) on {n_svc} train samples | {acc:.4f} | – | "
                 f"{time.perf_counter() - t0:.1f} |")
    print(lines[-1], flush=True)
    lines.append("")


def section_learned(datasets, Ds_by_name, n_iter, lines):
    """Learned SORF diagonals vs random SORF at equal D and vs RBFSampler at D and 4D, errors on
    held-out samples (the diagonals are trained on the other samples)."""
    from gpufact.kernel_approximation import LearnedStructuredFeatures

    lines += ["## 4. Learned structured features (held-out kernel error)", "",
              f"LearnedStructuredFeatures (sincos, {n_iter} Adam steps, lr 0.02, batches of 256 training "
              "samples) against random SORF sincos at equal D (mean of 3 seeds) and RBFSampler at D and 4·D "
              "(mean of 3 seeds). Train / held-out split of each block.", ""]
    for name, X in datasets.items():
        n = len(X)
        Xtr, Xte = X[: n // 2], X[n // 2:]
        gamma = gamma_of(X)
        K = rbf_block(Xte, gamma)
        lines += [f"### {name}: train {len(Xtr)}, held out {len(Xte)}", "",
                  "| D | learned | random SORF | RBFSampler D | RBFSampler 4·D | learned ≤ RFF 4·D? | fit s |",
                  "|---:|---:|---:|---:|---:|---|---:|"]
        for D in Ds_by_name[name]:
            t0 = time.perf_counter()
            le = LearnedStructuredFeatures(gamma=gamma, n_components=D, n_iter=n_iter, learning_rate=0.02,
                                           random_state=0).fit(Xtr)
            tfit = time.perf_counter() - t0
            el = rel_err(K, le.transform(Xte))
            es = np.mean([rel_err(K, StructuredOrthogonalFeatures(gamma=gamma, n_components=D, features="sincos",
                                                                  random_state=s).fit(Xtr).transform(Xte))
                          for s in range(3)])
            er = [np.mean([rel_err(K, RBFSampler(gamma=gamma, n_components=m * D, random_state=s)
                                   .fit(Xtr).transform(Xte)) for s in range(3)]) for m in (1, 4)]
            lines.append(f"| {D} | {el:.4f} | {es:.4f} | {er[0]:.4f} | {er[1]:.4f} | "
                         f"{'yes' if el <= er[1] else 'no'} | {tfit:.1f} |")
            print(lines[-1], flush=True)
        lines.append("")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="kernel,split,nystroem,learned,downstream")
    ap.add_argument("--out", default="kernels_cpu.md")
    ap.add_argument("--data", default="Fashion-MNIST,digits", help="comma-separated data sets")
    ap.add_argument("--D", default="1024,4096,16384", help="section 1: comma-separated feature counts")
    a = ap.parse_args()
    only = set(a.only.split(","))
    datasets = {}
    n_block = 500 if a.quick else 2000
    if fashion_mnist_available() and "Fashion-MNIST" in a.data.split(","):
        datasets["Fashion-MNIST"] = load_fashion_mnist(subset="train", return_X_y=True)[0][:n_block]
    if "digits" in a.data.split(","):
        datasets["digits"] = load_digits(return_X_y=True)[0][: n_block]
    import numba

    flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "") if os.path.exists("/proc/cpuinfo") else ""
    isa = "AVX-512" if " avx512f" in flags else ("AVX2" if " avx2" in flags else "SSE")
    lines = [f"Vector ISA: {isa}. Threads: Numba {numba.get_num_threads()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}. "
             "The box is shared (load average given below); all ratios are measured side by side "
             f"in one run. Load average at the start: {os.getloadavg()[0]:.1f} (1 min).", ""]
    ske, why = sklearn_extra_fastfood()
    lines += [f"scikit-learn-extra Fastfood: {'available' if ske else 'not measured — ' + why}", ""]
    if "kernel" in only:
        Ds = [256, 1024] if a.quick else [int(v) for v in a.D.split(",")]
        section_kernel(datasets, Ds, [0] if a.quick else [0, 1], lines)
    if "split" in only and "Fashion-MNIST" in datasets:
        section_split(datasets["Fashion-MNIST"], 4096 if a.quick else 16384, lines)
    if "nystroem" in only:
        section_nystroem(datasets, [64, 256], lines)
    if "learned" in only:
        section_learned(datasets, {"Fashion-MNIST": [256, 1024], "digits": [64, 128, 256, 512]},
                        20 if a.quick else 100, lines)
    if "downstream" in only and fashion_mnist_available():
        section_downstream(5000 if a.quick else 60000, 512 if a.quick else 2048, 1000 if a.quick else 4000, lines)
    lines += [f"Load average at the end: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores."]
    write(a.out, "Kernel approximation (CPU)", lines)


if __name__ == "__main__":
    main()
