"""Cold (empty Numba cache) and warm first-call times of each public operation, each in a
fresh process, plus the ``python -m gpufact demo`` command.

Run: python benchmarks/first_call.py [--compare OLD_TREE] [op ...]   (prints a Markdown table)

Cold: NUMBA_CACHE_DIR points at a new empty directory, so every jitted kernel the call needs
is compiled. Warm: a second process with that same directory (kernels loaded from disk).
Each time is the operation alone (after imports and input set-up; the lazy import of Numba
by the first kernel call is included): wall clock, and the process's CPU time, which a
loaded machine inflates less. ``--compare`` runs the same in a second source tree (e.g. an
export of an older commit) in the same rounds, so that both see the same machine load.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

SETUP = """
import time, numpy as np
from gpufact import transforms, proj
from gpufact.factorize import butterfly, palm4msa, hierarchical
rng = np.random.default_rng(0)
H = transforms.hadamard(4096, dtype=np.float32)
X = rng.standard_normal((4096, 256)).astype(np.float32)
Xr = np.ascontiguousarray(X.T)
x = X[:, 0].copy()
Fc = transforms.dft(1024, dtype=np.complex64)
Xc = (rng.standard_normal((1024, 256)) + 1j * rng.standard_normal((1024, 256))).astype(np.complex64)
A = transforms.dft_dense(1024)
Hd = transforms.hadamard_dense(256)
P = rng.standard_normal((128, 128))
"""

OPS = {
    "F @ X (float32, N = 4096, B = 256)": "H @ X",
    "X @ F.T (float32)": "Xr @ H.T",
    "F @ x (float32, one vector)": "H @ x",
    "F @ X (complex64 DFT, N = 1024)": "Fc @ Xc",
    "palm4msa (128 x 128, 2 factors, 20 sweeps)": "palm4msa(P, [proj.splincol((128, 128), 8)] * 2, max_iter=20)",
    "butterfly (DFT N = 1024)": "butterfly(A, perm='bit-reversal')",
    "hierarchical (Hadamard N = 256)": "hierarchical(Hd, preset='hadamard')",
}


def _run(code: str, cache: str, tree: str):
    prog = (SETUP + "\nt0, c0 = time.perf_counter(), time.process_time()\n" + code
            + "\nprint(time.perf_counter() - t0, time.process_time() - c0)\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, "-c", prog], env=env, check=True, capture_output=True, text=True, cwd=tree)
    wall, cpu = map(float, out.stdout.strip().splitlines()[-1].split())
    return wall, cpu


def _demo(cache: str, tree: str):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=tree)
    t0 = time.perf_counter()
    r0 = os.times()
    subprocess.run([sys.executable, "-m", "gpufact", "demo"], env=env, check=True, capture_output=True, cwd=tree)
    r1 = os.times()
    return time.perf_counter() - t0, (r1.children_user + r1.children_system) - (r0.children_user + r0.children_system)


def _cold_warm(name, tree):
    with tempfile.TemporaryDirectory() as cache:
        if name == "demo":
            return _demo(cache, tree), _demo(cache, tree)
        return _run(OPS[name], cache, tree), _run(OPS[name], cache, tree)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--compare", help="a second source tree, timed in the same rounds (before)")
    p.add_argument("ops", nargs="*")
    args = p.parse_args(argv)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = ([("before", os.path.abspath(args.compare))] if args.compare else []) + [("now", here)]
    cols = " | ".join(f"{t} cold wall / cpu (s) | {t} warm wall / cpu (s)" for t, _ in trees)
    print(f"| operation | {cols} |\n|---|" + "---|" * (2 * len(trees)), flush=True)
    for name in args.ops or list(OPS) + ["demo"]:
        cells = []
        for _, tree in trees:
            (cw, cc), (ww, wc) = _cold_warm(name, tree)
            cells += [f"{cw:.2f} / {cc:.2f}", f"{ww:.2f} / {wc:.2f}"]
        label = "python -m gpufact demo (whole process)" if name == "demo" else name
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
