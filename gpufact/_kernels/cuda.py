"""CuPy launchers for ``kernels/ks_apply.cu`` (imported only when CuPy arrays are used).

The module is compiled once per (device, source) with NVRTC through ``cupy.RawModule``
with one name expression per dtype; CuPy also caches the binary on disk. Launchers check
shapes and dtypes, cast scalars to the kernels' C types and skip empty launches: RawKernel
itself checks nothing.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

_CTYPE = {
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.complex64): "complex<float>",
    np.dtype(np.complex128): "complex<double>",
}
_KERNELS = ("ks_factor_apply", "bf_chain_apply")
_SMEM_TILE_BYTES = 64 * 1024  # target shared tile size (3 blocks per SM on H100)
_SMEM_MAX_BYTES = 200 * 1024  # above this, factors are applied one pass each


def kernel_source_path(name: str) -> Path:
    """Path of ``kernels/<name>`` in the wheel (gpufact/kernels) or the source tree."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "kernels" / name, here.parent / "kernels" / name):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"CUDA source {name!r} not found next to gpufact (broken install?)")


@functools.lru_cache(maxsize=None)
def _module(device_id: int):
    import cupy

    src = kernel_source_path("ks_apply.cu").read_text()
    names = [f"{k}<{c}>" for k in _KERNELS for c in _CTYPE.values()]
    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=src, options=("-std=c++17",), name_expressions=names)


def _function(kernel: str, dtype):
    import cupy

    dev = cupy.cuda.Device().id
    return _module(dev).get_function(f"{kernel}<{_CTYPE[np.dtype(dtype)]}>")


def _elem_strides(A):
    it = A.itemsize
    s0, s1 = A.strides
    if s0 % it or s1 % it or s0 < 0 or s1 < 0:
        raise ValueError("array strides are not a non-negative multiple of the item size")
    return s0 // it, s1 // it


def ks_factor_apply(blocks, Xc, Yc):
    """Yc (M, B) <- KS(blocks) @ Xc (N, B); logical column views with any strides."""
    import cupy

    a, d, b, c = blocks.shape
    M, B = Yc.shape
    if M * B == 0:
        return Yc
    w = cupy.ascontiguousarray(blocks)
    xs, xb = _elem_strides(Xc)
    ys, yb = _elem_strides(Yc)
    fn = _function("ks_factor_apply", Yc.dtype)
    threads = 256
    blocks_n = int(min((M * B + threads - 1) // threads, 65535 * 4))
    fn((blocks_n,), (threads,),
       (w, Xc, Yc, np.int32(a), np.int32(b), np.int32(c), np.int32(d), np.int64(B),
        np.int64(xs), np.int64(xb), np.int64(ys), np.int64(yb), np.int32(1 if ys == 1 else 0)))
    return Yc


def bf_chain_tile(N: int, itemsize: int) -> int:
    """Samples per thread block for the fused butterfly chain (0: tile does not fit)."""
    if N * itemsize > _SMEM_MAX_BYTES:
        return 0
    bt = 1
    while bt < 64 and 2 * bt * N * itemsize <= _SMEM_TILE_BYTES:
        bt *= 2
    return bt


def bf_chain_apply(w, meta, N: int, Xc, Yc):
    """Yc (N, B) <- chain of square butterfly factors @ Xc (N, B), fused in shared memory.

    w : weights (concatenated blocks) on the device, dtype of Yc; meta : int64 device array
    (J, 2) of (log2 d, offset), application order.
    """
    B = Yc.shape[1]
    if B == 0:
        return Yc
    bt = bf_chain_tile(N, Yc.itemsize)
    log2bt = bt.bit_length() - 1
    smem = N * bt * Yc.itemsize
    fn = _function("bf_chain_apply", Yc.dtype)
    if smem > 48 * 1024:
        fn.max_dynamic_shared_size_bytes = smem
    xs, xb = _elem_strides(Xc)
    ys, yb = _elem_strides(Yc)
    grid = (B + bt - 1) // bt
    threads = 512 if N * bt >= 1024 else 128
    fn((grid,), (threads,),
       (w, meta, np.int32(meta.shape[0]), np.int32(N), np.int64(B), np.int32(log2bt),
        Xc, np.int64(xs), np.int64(xb), Yc, np.int64(ys), np.int64(yb)),
       shared_mem=smem)
    return Yc
