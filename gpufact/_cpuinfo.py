"""What the CPU is, read at run time: model, vector ISA, cache sizes (Linux sysfs, then
``os.sysconf``, then conservative defaults). Used to size the apply kernels' tiles and to
name the machine in benchmark results."""
from __future__ import annotations

import functools
import os
import platform
import re

_DEFAULT_CACHES = {"L1d": 32 << 10, "L2": 512 << 10, "L3": 8 << 20}  # when nothing can be read
_SYSCONF = {"L1d": "SC_LEVEL1_DCACHE_SIZE", "L2": "SC_LEVEL2_CACHE_SIZE", "L3": "SC_LEVEL3_CACHE_SIZE"}


def _parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)\s*B?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(text)
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]


@functools.lru_cache(maxsize=None)
def cache_sizes() -> dict:
    """Per-core data cache sizes in bytes, {"L1d", "L2", "L3"} (L3: the whole shared cache),
    for the core the process starts on (cpu0 in sysfs)."""
    sizes = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            d = os.path.join(base, entry)
            with open(os.path.join(d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(d, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(d, "size")) as f:
                size = _parse_size(f.read())
            if kind in ("Data", "Unified"):
                sizes.setdefault("L1d" if level == 1 else f"L{level}", size)
    except (OSError, ValueError):
        pass
    for key, name in _SYSCONF.items():
        if key not in sizes:
            try:
                v = os.sysconf(name)
            except (ValueError, OSError, AttributeError):
                v = -1
            if v and v > 0:
                sizes[key] = int(v)
    return {k: sizes.get(k, v) for k, v in _DEFAULT_CACHES.items()}


def _cpuinfo_field(name: str):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    """The CPU model string ("AMD EPYC 7B13", "Intel(R) Xeon(R) Platinum 8581C CPU @ ...")."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def vector_isa() -> str:
    """The widest vector instruction set the CPU reports: AVX-512, AVX2, AVX, SSE4.2, SVE,
    NEON, or the machine name when none is known."""
    flags = set((_cpuinfo_field("flags") or _cpuinfo_field("Features") or "").split())
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"),
                       ("sve", "SVE"), ("asimd", "NEON")):
        if flag in flags:
            return name
    return platform.machine()


def cpu_family() -> str:
    """A short file-name-safe name of the CPU family: vendor and product line of the model
    string ("amd-epyc", "intel-xeon", "apple-m2"); the machine name when unknown."""
    words = re.sub(r"\((R|TM|tm|r)\)", " ", cpu_model()).replace("CPU", " ").split()
    words = [w.lower() for w in words if re.fullmatch(r"[A-Za-z]+", w)][:2]
    return "-".join(words) or platform.machine().lower()


def describe() -> str:
    """One line naming the CPU for results files: model, vector ISA, cache sizes."""
    c = cache_sizes()
    return (f"{cpu_model()} ({vector_isa()}; L1d {c['L1d'] >> 10} KiB, L2 {c['L2'] >> 10} KiB per core, "
            f"L3 {c['L3'] >> 20} MiB)")
