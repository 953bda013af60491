"""Command line: ``python -m gpufact demo``."""
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpufact", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="fast transforms vs dense on this machine")
    d.add_argument("--n", type=int, default=4096, help="transform size (power of two)")
    d.add_argument("--batch", type=int, default=256, help="number of vectors")
    d.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    if args.cmd == "demo":
        from ._validation import check_int, check_power_of_two

        check_power_of_two(args.n, "--n", min_value=4)
        check_int(args.batch, "--batch", min_value=1)
        demo(args.n, args.batch, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
