"""CuPy launchers for ``kernels/*.cu`` (imported only when CuPy arrays are used).

The module is compiled once per (device, source) with NVRTC through ``cupy.RawModule``
with one name expression per dtype; CuPy also caches the binary on disk. Launchers check
shapes and dtypes, cast scalars to the kernels' C types and skip empty launches: RawKernel
itself checks nothing.

Launchers take their array namespace from their arguments (never ``import cupy`` for
arrays) and fetch kernels only through :func:`_get`, so the test suite runs them unchanged
on NumPy arrays against a host emulation of the same CUDA sources (``tests/cuda_emulator``).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from .._backend import get_backend

_CTYPE = {
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.complex64): "complex<float>",
    np.dtype(np.complex128): "complex<double>",
}
_KERNELS = ("ks_factor_apply", "bf_chain_apply", "bf_chain_apply_radix", "bf_pass_cols")
_SMEM_TILE_BYTES = 64 * 1024  # target shared tile size (3 blocks per SM on H100)
_SMEM_MAX_BYTES = 200 * 1024  # above this, factors are applied one pass each


def kernel_source_path(name: str) -> Path:
    """Path of ``kernels/<name>`` in the wheel (gpufact/kernels) or the source tree."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "kernels" / name, here.parent / "kernels" / name):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"CUDA source {name!r} not found next to gpufact (broken install?)")


NVRTC_OPTIONS = ("-std=c++17",)  # what RawModule adds to CuPy's own (include paths, arch)
_SOURCES = {  # file -> name expressions compiled from it
    "ks_apply.cu": tuple(f"{k}<{c}>" for k in _KERNELS for c in _CTYPE.values()),
    "topk.cu": ("topk_mask<float, unsigned int>", "topk_mask<double, unsigned long long>"),
    "csr_chain.cu": tuple(f"csr_chain_apply<{c}>" for c in _CTYPE.values())
    + ("csr_chain_argmin<float>", "csr_chain_argmin<double>"),
    "ks_grad.cu": tuple(f"ks_grad<{c}>" for c in _CTYPE.values()),
}


@functools.lru_cache(maxsize=None)
def _module(source: str, device_id: int):
    """RawModule for ``kernels/<source>`` on one device (compiled once, cached)."""
    import cupy

    src = kernel_source_path(source).read_text()
    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=src, options=NVRTC_OPTIONS, name_expressions=list(_SOURCES[source]))


def _get(source: str, name: str):
    import cupy

    return _module(source, cupy.cuda.Device().id).get_function(name)


def _xp(a):
    """numpy or cupy, whichever ``a`` belongs to."""
    return get_backend(a).xp


def _function(kernel: str, dtype):
    return _get("ks_apply.cu", f"{kernel}<{_CTYPE[np.dtype(dtype)]}>")


def topk_mask(mag, k: int, axis: int):
    """uint8 mask of the k largest entries of each row (axis=1) or column (axis=0) of the
    real non-negative C-contiguous matrix ``mag`` (float32/float64); ties -> smaller index."""
    xp = _xp(mag)
    mag = xp.ascontiguousarray(mag)
    m, n = mag.shape
    mask = xp.zeros((m, n), dtype=xp.uint8)
    if mag.size == 0:
        return mask
    if axis == 1:
        nvec, length, vstride, estride = m, n, n, 1
    else:
        nvec, length, vstride, estride = n, m, 1, n
    name = "topk_mask<float, unsigned int>" if mag.dtype == np.float32 else "topk_mask<double, unsigned long long>"
    if mag.dtype not in (np.float32, np.float64):
        raise TypeError(f"mag must be float32 or float64, got {mag.dtype}")
    _get("topk.cu", name)((nvec,), (256,), (mag, mask, np.int64(nvec), np.int64(length), np.int64(vstride),
                                             np.int64(estride), np.int64(k)))
    return mask


def _elem_strides(A):
    it = A.itemsize
    s0, s1 = A.strides
    if s0 % it or s1 % it or s0 < 0 or s1 < 0:
        raise ValueError("array strides are not a non-negative multiple of the item size")
    return s0 // it, s1 // it


def ks_factor_apply(blocks, Xc, Yc):
    """Yc (M, B) <- KS(blocks) @ Xc (N, B); logical column views with any strides."""
    a, d, b, c = blocks.shape
    M, B = Yc.shape
    if M * B == 0:
        return Yc
    w = _xp(blocks).ascontiguousarray(blocks)
    xs, xb = _elem_strides(Xc)
    ys, yb = _elem_strides(Yc)
    fn = _function("ks_factor_apply", Yc.dtype)
    threads = 256
    blocks_n = int(min((M * B + threads - 1) // threads, 65535 * 4))
    fn((blocks_n,), (threads,),
       (w, Xc, Yc, np.int32(a), np.int32(b), np.int32(c), np.int32(d), np.int64(B),
        np.int64(xs), np.int64(xb), np.int64(ys), np.int64(yb), np.int32(1 if ys == 1 else 0)))
    return Yc


GRAD_THREADS = 128  # threads per stored entry of ks_grad (a power of two: tree reduction)
GRAD_MAX_GRID = 65535 * 8  # entries beyond this are visited grid-stride


def ks_grad(Xc, Gc, out, accumulate: bool = False):
    """out (a, d, b, c) <- (+=, if ``accumulate``) the block gradient of a KS factor:
    ``out[α, δ, r, s] = Σ_t Gc[α·b·d + r·d + δ, t] · conj(Xc[α·c·d + s·d + δ, t])``.

    Xc (a·c·d, B), Gc (a·b·d, B): logical column views with any non-negative strides, dtype
    of ``out`` (C-contiguous). Kernel ``ks_grad`` of ``kernels/ks_grad.cu``.
    """
    if out.ndim != 4 or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous (a, d, b, c) array")
    a, d, b, c = (int(v) for v in out.shape)
    if Xc.ndim != 2 or Gc.ndim != 2 or Xc.shape != (a * c * d, Gc.shape[1]) or Gc.shape[0] != a * b * d:
        raise ValueError(f"Xc and Gc must have shapes ({a * c * d}, B) and ({a * b * d}, B) for blocks "
                         f"{tuple(out.shape)}, got {tuple(Xc.shape)} and {tuple(Gc.shape)}")
    if Xc.dtype != out.dtype or Gc.dtype != out.dtype or out.dtype not in _CTYPE:
        raise TypeError(f"Xc, Gc and out must share one of {[str(k) for k in _CTYPE]}, got "
                        f"{Xc.dtype}, {Gc.dtype}, {out.dtype}")
    B = Xc.shape[1]
    if out.size == 0:
        return out
    if B == 0:
        if not accumulate:
            out[...] = 0
        return out
    xs, xb = _elem_strides(Xc)
    gs, gb = _elem_strides(Gc)
    fn = _get("ks_grad.cu", f"ks_grad<{_CTYPE[out.dtype]}>")
    grid = int(min(out.size, GRAD_MAX_GRID))
    fn((grid,), (GRAD_THREADS,),
       (Xc, Gc, out, np.int32(a), np.int32(b), np.int32(c), np.int32(d), np.int64(B),
        np.int64(xs), np.int64(xb), np.int64(gs), np.int64(gb), np.int32(1 if accumulate else 0)),
       shared_mem=GRAD_THREADS * out.itemsize)
    return out


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def bf_chain_tile(N: int, itemsize: int, max_smem: int = _SMEM_MAX_BYTES) -> int:
    """Samples per thread block for the fused butterfly chain (0: tile does not fit)."""
    if N * itemsize > max_smem:
        return 0
    bt = 1
    while bt < 64 and 2 * bt * N * itemsize <= min(_SMEM_TILE_BYTES, max_smem):
        bt *= 2
    return bt


@functools.lru_cache(maxsize=None)
def _smem_limit(dtype_name: str, kernel: str = "bf_chain_apply") -> int:
    """Shared memory a block of ``kernel`` may use: opt in beyond 48 KiB when CuPy exposes
    the attribute (the opt-in is per function), else stay at the default limit."""
    fn = _function(kernel, np.dtype(dtype_name))
    try:
        fn.max_dynamic_shared_size_bytes = _SMEM_MAX_BYTES
        return _SMEM_MAX_BYTES
    except Exception:  # attribute missing or the device refuses: default 48 KiB
        return 48 * 1024


def bf_chain_apply(w, meta, N: int, Xc, Yc):
    """Yc (N, B) <- chain of square butterfly factors @ Xc (N, B), fused in shared memory.

    w : weights (concatenated blocks) on the device, dtype of Yc; meta : int64 device array
    (J, 2) of (log2 d, offset), application order.
    """
    B = Yc.shape[1]
    if B == 0:
        return Yc
    bt = bf_chain_tile(N, Yc.itemsize, _smem_limit(Yc.dtype.name))
    if bt == 0:
        raise ValueError(f"N = {N} is too large for the fused kernel; use the per-factor path")
    bt = min(bt, _pow2_at_least(B))  # small batches: no work on padding samples
    log2bt = bt.bit_length() - 1
    smem = N * bt * Yc.itemsize
    fn = _function("bf_chain_apply", Yc.dtype)
    xs, xb = _elem_strides(Xc)
    ys, yb = _elem_strides(Yc)
    grid = (B + bt - 1) // bt
    threads = min(512, max(32, N // 2))
    fn((grid,), (threads,),
       (w, meta, np.int32(meta.shape[0]), np.int32(N), np.int64(B), np.int32(log2bt),
        Xc, np.int64(xs), np.int64(xb), Yc, np.int64(ys), np.int64(yb)),
       shared_mem=smem)
    return Yc


BUTTERFLY_KERNELS = ("radix2", "radix", "passes")


def butterfly_kernel() -> str:
    """Which butterfly-chain kernel the GPU path uses, from ``GPUFACT_GPU_BUTTERFLY``:

    * "radix2" (default, validated on an H100): ``bf_chain_apply``, tiles of samples in
      shared memory, one pass per factor;
    * "radix": ``bf_chain_apply_radix``, the same tiles, radix-8 passes in registers;
    * "passes": ``bf_pass_cols`` for column batches (unit sample stride), one kernel per
      radix-64 pass with the weights staged once per block (other layouts: "radix2").

    All three are checked on every test run, GPU or not: the host emulator of
    ``tests/test_kernels_emulated.py`` runs them through these launchers against dense
    references. The last two await a GPU timing before one becomes the default; the GPU
    tests and ``benchmarks/gpu_bench.py`` run and time all three.
    """
    choice = os.environ.get("GPUFACT_GPU_BUTTERFLY", "radix2")
    if choice not in BUTTERFLY_KERNELS:
        raise ValueError(f"GPUFACT_GPU_BUTTERFLY must be one of {BUTTERFLY_KERNELS}, got {choice!r}")
    return choice


def radix_log2(dtype) -> int:
    """Largest pass radix (log2) of bf_chain_apply_radix for ``dtype`` (its RMAX)."""
    return 3 if np.dtype(dtype).itemsize <= 8 else 2


_RADIX_TILE_BYTES = 72 * 1024  # 3 blocks per SM on H100 (228 KiB)


def radix_padded_rows(N: int, itemsize: int) -> int:
    """Shared-memory rows per sample of bf_chain_apply_radix: one pad per 128 bytes."""
    shift = {4: 5, 8: 4}.get(itemsize, 3)
    return N + (N >> shift)


def bf_radix_tile(N: int, itemsize: int, max_smem: int = _SMEM_MAX_BYTES) -> int:
    """Samples per thread block of bf_chain_apply_radix (0: one padded sample does not fit)."""
    per_sample = radix_padded_rows(N, itemsize) * itemsize
    if per_sample > max_smem:
        return 0
    bt = 1
    while bt < 64 and 2 * bt * per_sample <= min(_RADIX_TILE_BYTES, max_smem):
        bt *= 2
    return bt


def bf_chain_apply_radix(w, passes, N: int, Xc, Yc):
    """Yc (N, B) <- chain of square butterfly factors @ Xc (N, B) in radix-2^R passes.

    w : weights on the device, dtype of Yc; passes : int64 device array (P, 13) from
    ``plan.butterfly_passes(..., radix_log2(dtype))``.
    """
    B = Yc.shape[1]
    if B == 0:
        return Yc
    bt = bf_radix_tile(N, Yc.itemsize, _smem_limit(Yc.dtype.name, "bf_chain_apply_radix"))
    if bt == 0:
        raise ValueError(f"N = {N} is too large for the fused kernel; use the per-factor path")
    bt = min(bt, _pow2_at_least(B))
    log2bt = bt.bit_length() - 1
    smem = radix_padded_rows(N, Yc.itemsize) * bt * Yc.itemsize
    fn = _function("bf_chain_apply_radix", Yc.dtype)
    xs, xb = _elem_strides(Xc)
    ys, yb = _elem_strides(Yc)
    grid = (B + bt - 1) // bt
    threads = 256  # the kernel's __launch_bounds__
    fn((grid,), (threads,),
       (w, passes, np.int32(passes.shape[0]), np.int32(N), np.int64(B), np.int32(log2bt),
        Xc, np.int64(xs), np.int64(xb), Yc, np.int64(ys), np.int64(yb)),
       shared_mem=smem)
    return Yc


MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y (the pass kernel's groups)


def pass_radix_log2(dtype) -> int:
    """Largest pass radix (log2) of bf_pass_cols for ``dtype`` (its RMAX: 2^R registers)."""
    return {4: 6, 8: 5}.get(np.dtype(dtype).itemsize, 4)


def bf_pass_cols_apply(w, passes_host, passes, N: int, Xc, Yc):
    """Yc (N, B) <- butterfly chain @ Xc (N, B), one ``bf_pass_cols`` launch per pass.

    Both views need a unit sample stride (column batches); Yc may be Xc (in place).
    passes_host / passes: the pass table (numpy / device) from
    ``plan.butterfly_passes(..., pass_radix_log2(dtype))``.
    """
    B = Yc.shape[1]
    if B == 0:
        return Yc
    xs, xb = _elem_strides(Xc)
    ys, yb = _elem_strides(Yc)
    if xb != 1 or yb != 1:
        raise ValueError("bf_pass_cols needs column batches (unit sample stride)")
    fn = _function("bf_pass_cols", Yc.dtype)
    threads = 256
    src, s_si = Xc, xs
    for p in range(passes_host.shape[0]):
        G = N >> int(passes_host[p, 0])
        if G > MAX_GRID_Y:
            raise ValueError(f"N = {N}: {G} groups exceed the grid limit; use another kernel")
        fn(((B + threads - 1) // threads, G), (threads,),
           (w, passes[p], np.int32(N), np.int64(B), src, np.int64(s_si), Yc, np.int64(ys)))
        src, s_si = Yc, ys
    return Yc


# ---- chains of CSR factors (kernels/csr_chain.cu) ---------------------------------------------
CSR_THREADS = 256  # the kernels' __launch_bounds__
_CSR_MAX_BT = 32  # samples per tile: a warp shares one output row


@functools.lru_cache(maxsize=None)
def _csr_smem_limit(kernel: str) -> int:
    """Dynamic shared memory a block of ``kernel`` (a csr_chain.cu name expression) may use:
    opt in beyond 48 KiB where the device allows it (per function), else 48 KiB."""
    fn = _get("csr_chain.cu", kernel)
    try:
        fn.max_dynamic_shared_size_bytes = _SMEM_MAX_BYTES
        return _SMEM_MAX_BYTES
    except Exception:  # attribute missing or the device refuses: default 48 KiB
        return 48 * 1024


def _csr_name(kernel: str, dtype) -> str:
    dt = np.dtype(dtype)
    if dt not in _CTYPE or (kernel == "csr_chain_argmin" and dt.kind == "c"):
        raise TypeError(f"{kernel}: unsupported dtype {dt}")
    return f"{kernel}<{_CTYPE[dt]}>"


def _csr_smem(rows: int, bt: int, itemsize: int, argmin: bool) -> int:
    red = CSR_THREADS * (itemsize + 4) if argmin else 0
    return rows * (bt | 1) * itemsize + red


def csr_chain_tile(rows: int, dtype, B: int, argmin: bool = False) -> int:
    """Samples per thread block of the csr_chain.cu kernels for tile buffers of ``rows``
    rows in all (0: not even one sample fits the shared memory): the largest power of two
    <= 32, <= the batch, whose tile fits _SMEM_TILE_BYTES; else 1 if one sample fits the
    device's limit."""
    dt = np.dtype(dtype)
    limit = _csr_smem_limit(_csr_name("csr_chain_argmin" if argmin else "csr_chain_apply", dt))
    bt = min(_CSR_MAX_BT, _pow2_at_least(max(1, B)))
    while bt > 1 and _csr_smem(rows, bt, dt.itemsize, argmin) > min(_SMEM_TILE_BYTES, limit):
        bt //= 2
    return bt if _csr_smem(rows, bt, dt.itemsize, argmin) <= limit else 0


def _check_chain(plan, indptr, indices, data, dtype):
    if plan.dtype != np.int64 or plan.ndim != 2 or plan.shape[1] != 3 or plan.shape[0] == 0:
        raise ValueError("plan must be a non-empty int64 (J, 3) array")
    if indptr.dtype != np.int64 or indices.dtype != np.int32 or data.dtype != dtype:
        raise TypeError(f"chain arrays must be int64 indptr, int32 indices and {dtype} data")
    for a in (plan, indptr, indices, data):
        if not a.flags.c_contiguous:
            raise ValueError("chain arrays must be C-contiguous")


def csr_chain_apply(plan, indptr, indices, data, rows0: int, rows1: int, bt: int, Xc, Yc):
    """Yc (M, B) <- chain @ Xc (N, B), logical column views with any non-negative strides,
    all of data's dtype. plan/indptr/indices/data: the concatenated chain on the device
    (kernels/csr_chain.cu); rows0, rows1: ping-pong buffer rows; bt: samples per block
    (:func:`csr_chain_tile`, a power of two)."""
    M, B = Yc.shape
    if M * B == 0:
        return Yc
    _check_chain(plan, indptr, indices, data, Yc.dtype)
    if Xc.dtype != Yc.dtype or Xc.shape[1] != B:
        raise ValueError("Xc and Yc must share the dtype and the batch size")
    if bt < 1 or bt & (bt - 1):
        raise ValueError(f"bt must be a power of two, got {bt}")
    name = _csr_name("csr_chain_apply", Yc.dtype)
    smem = _csr_smem(rows0 + rows1, bt, Yc.itemsize, False)
    if smem > _csr_smem_limit(name):
        raise ValueError(f"a tile of {bt} samples needs {smem} bytes of shared memory")
    xs, xb = _elem_strides(Xc)
    ys, yb = _elem_strides(Yc)
    fn = _get("csr_chain.cu", name)
    fn(((B + bt - 1) // bt,), (CSR_THREADS,),
       (plan, np.int32(plan.shape[0]), indptr, indices, data, np.int32(rows0), np.int64(B),
        np.int32(bt.bit_length() - 1), Xc, np.int64(xs), np.int64(xb), Yc, np.int64(ys), np.int64(yb)),
       shared_mem=smem)
    return Yc


def csr_chain_argmin(plan, indptr, indices, data, rows0: int, rows1: int, bt: int, Xc, bias, alpha,
                     labels, values):
    """labels (B,) int32, values (B,) <- argmin / min over k of bias[k] + alpha · (chain @ Xc)[k]
    for a logical (N, B) view Xc (any non-negative strides); real data, Xc, bias (K,
    contiguous) and values of one dtype; rows0, rows1 cover all steps but the last."""
    B = Xc.shape[1]
    if B == 0:
        return labels, values
    dt = values.dtype
    _check_chain(plan, indptr, indices, data, dt)
    if Xc.dtype != dt or bias.dtype != dt or not bias.flags.c_contiguous:
        raise TypeError(f"Xc and a contiguous bias must have dtype {dt}")
    if labels.dtype != np.int32 or labels.shape != (B,) or values.shape != (B,):
        raise ValueError("labels must be int32 (B,) and values (B,)")
    if bt < 1 or bt & (bt - 1) or bt > CSR_THREADS:
        raise ValueError(f"bt must be a power of two <= {CSR_THREADS}, got {bt}")
    name = _csr_name("csr_chain_argmin", dt)
    smem = _csr_smem(rows0 + rows1, bt, dt.itemsize, True)
    if smem > _csr_smem_limit(name):
        raise ValueError(f"a tile of {bt} samples needs {smem} bytes of shared memory")
    xs, xb = _elem_strides(Xc)
    fn = _get("csr_chain.cu", name)
    fn(((B + bt - 1) // bt,), (CSR_THREADS,),
       (plan, np.int32(plan.shape[0]), indptr, indices, data, np.int32(rows0), np.int32(rows1), np.int64(B),
        np.int32(bt.bit_length() - 1), Xc, np.int64(xs), np.int64(xb), bias, dt.type(alpha), labels, values),
       shared_mem=smem)
    return labels, values
