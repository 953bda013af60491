"""Shared helpers for the comparison scripts: timing, machine description, Markdown output."""
from __future__ import annotations

import os

# pyfaust, Numba and OpenBLAS each run OpenMP/pthread pools; spinning idle threads of one
# library steal the 2 cores from the next one measured. Passive waiting keeps runs fair.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import platform
import time
from pathlib import Path

import numpy as np

from gpufact._timing import best_time  # noqa: F401  (re-exported for the scripts)

RESULTS = Path(__file__).resolve().parent / "results"


def interleaved_best(fns: dict, rounds: int = 3, repeat: int = 3) -> dict:
    """Best time (s) of each named callable over ``rounds`` rounds that visit all of them in
    turn (best of ``repeat`` each visit): a burst of load on this shared machine then hits
    every contender, not just the one being timed."""
    best = {name: np.inf for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], best_time(fn, repeat=repeat))
    return best


def machine() -> str:
    """CPU model, vector ISA, cache sizes, core count, Python, NumPy, BLAS and Numba threads."""
    from gpufact._cpuinfo import describe

    cpu = describe()
    blas = ""
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} {i.get('version')} ({i.get('architecture')}, {i['num_threads']} threads)"
                         for i in threadpool_info() if i["user_api"] == "blas")
    except Exception:
        pass
    import numba

    return (f"{cpu}, {os.cpu_count()} cores, Numba {numba.__version__} ({numba.get_num_threads()} threads), "
            f"Python {platform.python_version()}, NumPy {np.__version__}" + (f", BLAS: {blas}" if blas else ""))


#: in a results file, the text from this line on is notes written by hand: kept by :func:`write`
NOTES_MARK = "<!-- notes below: kept when the tables above are rewritten -->"


def write(name: str, title: str, lines: list[str]) -> Path:
    """Write results/``name``: title, machine, date, ``lines``; the hand-written notes of the
    existing file (from :data:`NOTES_MARK` on) are kept after them."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    text = [f"# {title}", "", f"Machine: {machine()}  ", f"Date: {time.strftime('%Y-%m-%d')}", ""] + lines
    body = "\n".join(text) + "\n"
    old = path.read_text() if path.exists() else ""
    if NOTES_MARK in old:
        body += "\n" + old[old.index(NOTES_MARK):]
    path.write_text(body)
    print("\n".join(text))
    return path
