"""Command line: ``python -m gpufact demo [quickmeans|transforms|layers]``.

``python -m gpufact demo`` runs the main demo (QuickMeans vs scikit-learn KMeans, see
:mod:`gpufact._demo_quickmeans`); ``python -m gpufact demo transforms`` the fast-transform
benchmark (:func:`demo`).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ._timing import best_time


def demo(n: int = 4096, batch: int = 256, repeat: int = 3, out=sys.stdout) -> dict:
    """Build exact Hadamard and DFT operators, check them against dense, time the apply."""
    from tqdm.auto import tqdm

    from . import transforms
    from .factorize import butterfly

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, batch)).astype(np.float32)
    results = {}
    steps = [("hadamard", np.float32), ("dft", np.complex64)]
    with tqdm(total=len(steps) * 3 + 1, desc="gpufact demo", file=out, leave=False) as bar:
        for name, dt in steps:
            if name == "hadamard":
                F = transforms.hadamard(n, dtype=dt)
                D = transforms.hadamard_dense(n, dtype=dt)
            else:
                F = transforms.dft(n, dtype=dt)
                D = transforms.dft_dense(n, dtype=dt)
            bar.set_postfix_str(f"{name}: time fast apply")
            Y = F @ X  # warm-up (compilation)
            # BLAS worker threads spin for ~0.1 s after a dense product and would share the
            # cores with ours: let them go idle, and time before this operator's dense product
            time.sleep(0.25)
            t_fast = best_time(lambda: F @ X, max(repeat, 10))
            bar.update()
            bar.set_postfix_str(f"{name}: check vs dense")
            ref = D @ X
            err = float(np.linalg.norm(Y - ref) / np.linalg.norm(ref))
            bar.update()
            bar.set_postfix_str(f"{name}: time dense matmul")
            t_dense = best_time(lambda: D @ X, repeat)
            bar.update()
            results[name] = dict(err=err, t_fast=t_fast, t_dense=t_dense, nnz=F.nnz, rcg=F.rcg)
            del D
        bar.set_postfix_str("learn the DFT back from its dense matrix")
        N2 = min(n, 1024)
        A = transforms.dft_dense(N2)
        t0 = time.perf_counter()
        G = butterfly(A, perm="bit-reversal")
        t_fact = time.perf_counter() - t0
        err_fact = float(np.linalg.norm(G.toarray() - A) / np.linalg.norm(A))
        results["butterfly_dft"] = dict(n=N2, err=err_fact, time=t_fact)
        bar.update()
    print(f"gpufact demo: N = {n}, batch of {batch} vectors (float32 / complex64), CPU", file=out)
    print(f"{'operator':<10} {'nnz':>9} {'rcg':>7} {'rel. error':>11} {'fast apply':>11} {'dense':>10} {'speed-up':>9}", file=out)
    for name in ("hadamard", "dft"):
        r = results[name]
        print(f"{name:<10} {r['nnz']:>9} {r['rcg']:>7.1f} {r['err']:>11.2e} {r['t_fast'] * 1e3:>9.2f}ms "
              f"{r['t_dense'] * 1e3:>8.2f}ms {r['t_dense'] / r['t_fast']:>8.1f}x", file=out)
    r = results["butterfly_dft"]
    print(f"butterfly factorization of the dense DFT (N = {r['n']}): relative error {r['err']:.1e} "
          f"in {r['time']:.2f} s", file=out)
    return results


DEMOS = {
    "quickmeans": "QuickMeans vs scikit-learn KMeans on Fashion-MNIST (else digits) [default]",
    "transforms": "fast transforms (Hadamard, DFT) vs dense on this machine",
    "layers": "an MLP with dense vs butterfly vs Monarch hidden layers (PyTorch, the torch extra)",
}
_OPTS = {  # which options each demo reads (the others are refused)
    "quickmeans": {"dataset", "n_samples", "clusters", "sparsity", "max_iter", "palm_max_iter", "plot", "repeat"},
    "transforms": {"n", "batch", "repeat"},
    "layers": {"dataset", "epochs", "n_samples"},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpufact",
                                description="gpufact demos: python -m gpufact demo [quickmeans|transforms|layers] "
                                            "(quickmeans, the main demo, by default); "
                                            "python -m gpufact demo --help lists their options.")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run a demo: " + "; ".join(f"{k}: {v}" for k, v in DEMOS.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="\n".join(f"  {k:<11} {v}" for k, v in DEMOS.items()))
    d.add_argument("which", nargs="?", default="quickmeans", choices=list(DEMOS), help="the demo to run")
    g = d.add_argument_group("quickmeans")
    g.add_argument("--dataset", default=None, choices=["auto", "fashion-mnist", "digits"],
                   help="data set (auto: Fashion-MNIST if installed, else digits)")
    g.add_argument("--n-samples", type=int, default=None,
                   help="training samples (a uniform subsample; default: all)")
    g.add_argument("--clusters", type=int, default=None, help="K (default 64 on Fashion-MNIST, 32 on digits)")
    g.add_argument("--sparsity", type=int, default=None, help="nonzeros per row and column of each factor (3)")
    g.add_argument("--max-iter", type=int, default=None, help="Lloyd iterations (10)")
    g.add_argument("--palm-max-iter", type=int, default=None, help="PALM sweeps per centroid update (30)")
    g.add_argument("--plot", default=None, metavar="FILE", help="save objective curves and factor supports")
    lg = d.add_argument_group("layers")
    lg.add_argument("--epochs", type=int, default=None, help="training epochs (3)")
    t = d.add_argument_group("transforms")
    t.add_argument("--n", type=int, default=None, help="transform size (power of two, 4096)")
    t.add_argument("--batch", type=int, default=None, help="number of vectors (256)")
    d.add_argument("--repeat", type=int, default=None, help="timing repetitions")
    args = p.parse_args(argv)
    if args.cmd == "demo":
        try:
            _demo(d, args)
        except _UsageError as exc:
            d.error(str(exc))
    return 0


class _UsageError(Exception):
    """A bad option value: reported by argparse (usage, exit status 2), not as a traceback."""


def _checked(check, *args, **kw):
    """check(*args, **kw) with its ValueError / TypeError turned into a :class:`_UsageError`."""
    try:
        return check(*args, **kw)
    except (ValueError, TypeError) as exc:
        raise _UsageError(str(exc)) from None


def _plot_path(path):
    """The file --plot will write, checked before the demo runs: matplotlib installed, a
    folder that exists, a format matplotlib writes (no suffix: .png, as matplotlib does)."""
    import os

    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise _UsageError("--plot needs matplotlib: pip install -e '.[plot]'") from None
    if not path or os.path.isdir(path):
        raise _UsageError(f"--plot {path!r}: give a file name, e.g. quickmeans.png")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise _UsageError(f"--plot {path!r}: the folder {folder} does not exist")
    suffix = os.path.splitext(path)[1][1:].lower()
    if not suffix:
        return path + ".png"
    formats = Figure().canvas.get_supported_filetypes()
    if suffix not in formats:
        raise _UsageError(f"--plot {path!r}: matplotlib cannot write .{suffix} files; use one of "
                          + ", ".join(sorted(formats)))
    return path


def _demo(d, args):
    """Validate the options of ``args.which`` and run that demo."""
    from ._validation import check_int, check_power_of_two

    given = {k for k, v in vars(args).items() if v is not None and k not in ("cmd", "which")}
    extra = given - _OPTS[args.which]
    if extra:
        names = ", ".join("--" + e.replace("_", "-") for e in sorted(extra))
        raise _UsageError(f"{names}: not an option of the {args.which!r} demo")
    if args.which == "layers":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise SystemExit("the layers demo needs PyTorch: pip install torch==2.13.0 && "
                             "pip install -e '.[torch]'") from None
        from ._demo_layers import demo_layers

        kw = {"dataset": args.dataset or "auto"}
        if args.epochs is not None:
            kw["epochs"] = _checked(check_int, args.epochs, "--epochs", min_value=1)
        if args.n_samples is not None:
            kw["n_train"] = _checked(check_int, args.n_samples, "--n-samples", min_value=1)
        demo_layers(**kw)
    elif args.which == "transforms":
        n = _checked(check_power_of_two, 4096 if args.n is None else args.n, "--n", min_value=4)
        batch = _checked(check_int, 256 if args.batch is None else args.batch, "--batch", min_value=1)
        demo(n, batch, 3 if args.repeat is None else _checked(check_int, args.repeat, "--repeat", min_value=1))
    else:
        from ._demo_quickmeans import DemoArgumentError, demo_quickmeans

        kw = {}
        for opt, key in (("clusters", "n_clusters"), ("sparsity", "sparsity"), ("max_iter", "max_iter"),
                         ("palm_max_iter", "palm_max_iter"), ("n_samples", "n_samples"), ("repeat", "repeat")):
            v = getattr(args, opt)
            if v is not None:
                kw[key] = _checked(check_int, v, "--" + opt.replace("_", "-"), min_value=1)
        plot = None if args.plot is None else _plot_path(args.plot)
        try:
            demo_quickmeans(dataset=args.dataset or "auto", plot=plot, **kw)
        except DemoArgumentError as exc:
            raise _UsageError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
