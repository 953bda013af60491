"""Run ``kernels/*.cu`` on the host, with no GPU: g++ and ``emulator.h``, behind CuPy's interface.

    mod = EmulatedModule("ks_apply.cu")                # compiled once per source (cached on disk)
    fn = mod.get_function("bf_chain_apply<float>")      # the launchers' name expressions
    fn((grid,), (threads,), (w, meta, np.int32(J), ...), shared_mem=nbytes)

Arguments follow ``cupy.RawKernel``: NumPy arrays stand for device pointers, NumPy scalars
(``np.int32``, ``np.int64``, ...) for values. Everything RawKernel would pass unchecked is
checked here, so a launcher bug fails a CPU test instead of corrupting GPU memory:

* the C type of every argument against the kernel's parameter (a ``np.int32`` passed for a
  ``long long`` is an error; Python scalars are refused: RawKernel guesses their type);
* CUDA's launch limits (1024 threads a block, grid y/z <= 65535, no empty grid), the kernel's
  ``__launch_bounds__``, and dynamic shared memory against the function's
  ``max_dynamic_shared_size_bytes`` (48 KiB unless raised, at most 227 KiB as on an H100);
* inside the kernel (``emulator.h``): barriers, warp shuffles, exactly sized and poisoned
  dynamic shared memory with guard bands, ``__trap()``, and a schedule order (``order``:
  0 forward, 1 reverse, >= 2 seeded shuffles) so that races show as order-dependent results.

Blocks run one after another and threads are cooperative fibers with 1 MiB stacks (local
arrays as large as real kernels use; a thread that overflows hits a guard page and the
process stops with SIGSEGV rather than corrupting memory). This checks index arithmetic,
synchronisation and launch configuration on small problems, not speed.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KERNELS = HERE.parent.parent / "kernels"
# -U_FORTIFY_SOURCE: longjmp between fiber stacks; stack-clash probes: overflows hit the guard
CXX_FLAGS = ("-std=c++20", "-O1", "-fPIC", "-shared", "-w", "-U_FORTIFY_SOURCE", "-fstack-clash-protection")
MAX_THREADS = 1024
MAX_GRID = (2**31 - 1, 65535, 65535)
DEFAULT_DYNAMIC_SMEM = 48 * 1024
MAX_DYNAMIC_SMEM = 227 * 1024  # per-block opt-in limit of an H100 (sm_90)


class EmulatorError(RuntimeError):
    """A launch the emulator refused or a kernel that failed (trap, deadlock, overflow)."""


def compiler() -> str | None:
    return shutil.which("g++")


_DYN_SMEM = re.compile(r"extern\s+__shared__\s+([A-Za-z_][\w\s]*?)\s+(\w+)\s*\[\s*\]\s*;")
_STATIC_SMEM = re.compile(r"__shared__\s+([A-Za-z_][\w\s:<>]*?)\s+(\w+)\s*\[([^\]]+)\]\s*;")
_BOUNDS = re.compile(r"__launch_bounds__\(\s*(\d+)\s*\)\s*(\w+)\s*\(")


def translation_unit(source_text: str, name_expressions) -> str:
    """The kernel source with dynamic shared memory pointed at the emulator's buffer, followed
    by the registry of its name expressions."""
    text = _DYN_SMEM.sub(lambda m: f"{m[1]}* {m[2]} = reinterpret_cast<{m[1]}*>(emu::L->dyn_smem);",
                         source_text)
    text = _STATIC_SMEM.sub(lambda m: (f"static const char {m[2]}_site = 0; "
                                       f"{m[1]} (&{m[2]})[{m[3]}] = emu::shared_array<{m[1]}[{m[3]}]>(&{m[2]}_site);"),
                            text)
    if "__shared__" in re.sub(r"//[^\n]*", "", text):
        raise EmulatorError("a __shared__ declaration the emulator does not understand")
    entries = ",\n".join(f'        emu::entry("{n}", &{n})' for n in name_expressions)
    return (f"{text}\n\nstd::vector<emu::Entry>& emu::registry() {{\n"
            f"    static std::vector<emu::Entry> r = {{\n{entries}\n    }};\n    return r;\n}}\n")


def _cache_dir() -> Path:
    d = Path(os.environ.get("GPUFACT_EMULATOR_CACHE", Path(tempfile.gettempdir()) / "gpufact-cuda-emulator"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def build(tu: str, tag: str) -> Path:
    """Compile a translation unit into a shared library, cached by content, flags and compiler
    version in ``$GPUFACT_EMULATOR_CACHE`` (default: a folder under the system temp dir)."""
    cxx = compiler()
    if cxx is None:
        raise EmulatorError("g++ not found")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    header = (HERE / "emulator.h").read_text() + (HERE / "include/cuda/std/complex").read_text()
    key = hashlib.sha256("\0".join((tu, header, " ".join(CXX_FLAGS), version)).encode()).hexdigest()[:16]
    lib = _cache_dir() / f"{tag}-{key}.so"
    if lib.is_file():
        return lib
    work = Path(tempfile.mkdtemp(prefix="build-", dir=lib.parent))  # same filesystem: atomic replace
    try:
        src = work / f"{tag}.cpp"
        src.write_text(tu)
        tmp = work / "lib.so"
        cmd = [cxx, *CXX_FLAGS, "-I", str(HERE / "include"), "-include", str(HERE / "emulator.h"),
               str(src), "-o", str(tmp)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise EmulatorError(f"g++ failed on {tag}:\n{res.stderr[-4000:]}")
        os.replace(tmp, lib)  # atomic: concurrent test runs never load half a file
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lib


def _code(dt: np.dtype) -> str:
    if dt.kind not in "fciu":
        raise TypeError(f"no kernel argument of dtype {dt}")
    return f"{dt.kind}{dt.itemsize}"


class EmulatedFunction:
    """One kernel instantiation; called like ``cupy.RawKernel``."""

    def __init__(self, module: "EmulatedModule", name: str, signature: str, max_threads: int):
        self.module, self.name, self.signature = module, name, signature
        self.max_threads = max_threads
        self._max_dyn = DEFAULT_DYNAMIC_SMEM

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        return self._max_dyn

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value: int) -> None:
        if not 0 <= int(value) <= MAX_DYNAMIC_SMEM:  # as cuFuncSetAttribute: invalid value
            raise EmulatorError(f"{self.name}: max_dynamic_shared_size_bytes {value} > {MAX_DYNAMIC_SMEM}")
        self._max_dyn = int(value)

    def __call__(self, grid, block, args, shared_mem: int = 0):
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        block = tuple(int(b) for b in block) + (1,) * (3 - len(block))
        threads = block[0] * block[1] * block[2]
        if min(grid) < 1 or min(block) < 1:
            raise EmulatorError(f"{self.name}: empty launch grid={grid} block={block}")
        if threads > min(MAX_THREADS, self.max_threads) or block[2] > 64:
            raise EmulatorError(f"{self.name}: block {block} exceeds {min(MAX_THREADS, self.max_threads)} threads")
        if any(g > m for g, m in zip(grid, MAX_GRID)):
            raise EmulatorError(f"{self.name}: grid {grid} exceeds CUDA's limits {MAX_GRID}")
        if shared_mem > self._max_dyn:
            raise EmulatorError(f"{self.name}: {shared_mem} bytes of dynamic shared memory exceed the "
                                f"function's limit {self._max_dyn} (raise max_dynamic_shared_size_bytes)")
        holders, codes = [], []
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray):
                holders.append(ctypes.c_void_p(a.ctypes.data))
                codes.append("p" + _code(a.dtype))
            elif isinstance(a, np.generic):
                arr = np.array(a)
                holders.append(ctypes.create_string_buffer(arr.tobytes(), arr.itemsize))
                codes.append(_code(arr.dtype))
            else:
                raise TypeError(f"{self.name}: argument {i} is a {type(a).__name__}; pass NumPy arrays "
                                "and NumPy scalars of the kernel's C types")
        params = (ctypes.c_void_p * max(1, len(holders)))(*[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p)
                                                            for h in holders])
        err = ctypes.create_string_buffer(2048)
        rc = self.module.lib.emu_launch(self.name.encode(), (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block),
                                        ctypes.c_size_t(shared_mem), params, ",".join(codes).encode(),
                                        ctypes.c_int(self.module.order), err, ctypes.c_size_t(len(err)))
        self.module.launches.append((self.name, grid, block, int(shared_mem)))
        if rc != 0:
            raise EmulatorError(err.value.decode())


class EmulatedModule:
    """``cupy.RawModule`` stand-in for ``kernels/<source>`` (or for ``code`` in tests)."""

    def __init__(self, source: str, name_expressions=None, code: str | None = None):
        if name_expressions is None:
            from gpufact._kernels.cuda import _SOURCES

            name_expressions = _SOURCES[source]
        text = code if code is not None else (KERNELS / source).read_text()
        self.names = tuple(name_expressions)
        self.bounds = {m[2]: int(m[1]) for m in _BOUNDS.finditer(text)}
        self.lib = ctypes.CDLL(str(build(translation_unit(text, self.names), Path(source).stem)))
        self.lib.emu_launch.restype = ctypes.c_int
        self.lib.emu_signature.restype = ctypes.c_int
        self.order = 0
        self.launches: list = []
        self._functions: dict = {}

    def get_function(self, name: str) -> EmulatedFunction:
        fn = self._functions.get(name)
        if fn is None:
            if name not in self.names:
                raise EmulatorError(f"{name!r} is not a name expression of this module")
            buf = ctypes.create_string_buffer(1024)
            if self.lib.emu_signature(name.encode(), buf, ctypes.c_size_t(len(buf))) != 0:
                raise EmulatorError(f"{name!r} not registered")
            fn = EmulatedFunction(self, name, buf.value.decode(), self.bounds.get(name.split("<")[0], MAX_THREADS))
            self._functions[name] = fn
        return fn
