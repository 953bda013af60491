"""``KSChainFunction``: y = x Wᵀ for W = S_1 ⋯ S_J (Kronecker-sparse factors), on our kernels.

Tensors reach the kernels without copies: CPU tensors as NumPy views (``detach().numpy()``),
CUDA tensors as CuPy arrays (``cupy.from_dlpack``) with the kernels launched on torch's
current stream (``cupy.cuda.ExternalStream``), results handed back the same way. Only the
inputs are saved for the backward pass; the backward recomputes the activations tile by
tile inside :func:`gpufact.vjp` (extra memory O(B·N), not one activation per factor).
"""
from __future__ import annotations

import contextlib

import torch
from torch.autograd.function import once_differentiable
from torch.utils.weak import WeakIdKeyDictionary

from ..factors import KSFactor
from ..product import FactorProduct
from .._vjp import vjp


def _as_array(t: torch.Tensor):
    """NumPy (CPU) or CuPy (CUDA) view of a tensor's data (no copy)."""
    t = t.detach()
    if t.device.type == "cpu":
        return t.numpy()
    if t.device.type == "cuda":
        import cupy

        return cupy.from_dlpack(t)
    raise TypeError(f"tensors on {t.device.type!r} devices are not supported (cpu or cuda)")


def _as_tensor(a) -> torch.Tensor:
    if type(a).__module__.startswith("numpy"):
        return torch.from_numpy(a)
    return torch.from_dlpack(a)


def _stream(device: torch.device):
    """Run CuPy work on torch's current stream of ``device`` (no synchronisation)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    import cupy

    return cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream, device.index or 0)


def _product(blocks) -> FactorProduct:
    """The FactorProduct of block arrays (product order), referencing them (no copies)."""
    return FactorProduct([KSFactor(b, check=False) for b in blocks])


#: first block tensor -> (identity of all blocks' storage, FactorProduct over their views)
_PRODUCTS = WeakIdKeyDictionary()
_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _check_blocks(blocks) -> None:
    """TypeError/ValueError naming the block unless ``blocks`` are 4-D (a, d, b, c) tensors
    of one supported dtype and device whose factors chain (product order)."""
    if not blocks:
        raise ValueError("blocks: at least one factor's (a, d, b, c) blocks are needed")
    for j, b in enumerate(blocks):
        if not isinstance(b, torch.Tensor):
            raise TypeError(f"blocks[{j}] must be a torch.Tensor, got {type(b).__name__}")
        if b.ndim != 4 or b.numel() == 0:
            raise ValueError(f"blocks[{j}] must be a non-empty 4-D (a, d, b, c) tensor, got shape {tuple(b.shape)}")
        if b.dtype not in _DTYPES:
            raise TypeError(f"blocks[{j}] has dtype {b.dtype}: supported are float32, float64, complex64, complex128")
        if b.dtype != blocks[0].dtype or b.device != blocks[0].device:
            raise TypeError(f"blocks[{j}] is {b.dtype} on {b.device} but blocks[0] is {blocks[0].dtype} on "
                            f"{blocks[0].device}")
    for j in range(len(blocks) - 1):
        a, d, _, c = blocks[j].shape
        a2, d2, b2, _ = blocks[j + 1].shape
        if a * c * d != a2 * b2 * d2:
            raise ValueError(f"blocks[{j}] ({a * c * d} columns) and blocks[{j + 1}] ({a2 * b2 * d2} rows) do not chain")


def _check_tensor(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")


def _check_call(x, blocks, F, bias=None, with_bias=False) -> None:
    """TypeError/ValueError naming the argument unless x is a (B, N) tensor of the blocks'
    dtype and device with N = the product's columns (and ``bias`` an (M,) one)."""
    w = blocks[0]
    if x.dtype != w.dtype:
        raise TypeError(f"x has dtype {x.dtype} but the blocks are {w.dtype} (convert one of them)")
    if x.device != w.device:
        raise ValueError(f"x is on device {x.device} but the blocks are on {w.device}")
    M, N = F.shape
    if x.ndim != 2 or x.shape[1] != N:
        raise ValueError(f"x: expected shape (B, {N}) for blocks of a {M} x {N} product, got {tuple(x.shape)}")
    if x.layout != torch.strided:
        raise TypeError(f"x must be a dense (strided) tensor, got layout {x.layout}")
    if with_bias:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.dtype != x.dtype:
            raise TypeError(f"bias has dtype {bias.dtype} but x is {x.dtype}")
        if bias.device != x.device:
            raise ValueError(f"bias is on device {bias.device} but x is on {x.device}")
        if tuple(bias.shape) != (M,):
            raise ValueError(f"bias: expected shape ({M},), got {tuple(bias.shape)}")


def _cached_product(blocks) -> FactorProduct:
    """The FactorProduct over views of ``blocks`` (tensors), kept from call to call while
    every block keeps its storage, shape, strides and dtype (a layer's parameters between
    optimizer steps, which update them in place): its plans (chains, tile plans, radix
    passes) are made once, and only its weight copies are refreshed per call (they are
    concatenated again from the current values: O(nnz)). Keyed weakly by the first block,
    so nothing outlives a layer; any change of storage (``.to()``, ``load_state_dict(...,
    assign=True)``) builds a new product. Per call on a 1024 x 1024 Monarch layer this saves
    the ~0.3 ms of building the product and its transpose (whose blocks a forward never read)."""
    if not blocks or not all(isinstance(b, torch.Tensor) for b in blocks):
        _check_blocks(blocks)
    key = tuple((b.data_ptr(), b.device, tuple(b.shape), b.stride(), b.dtype) for b in blocks)
    hit = _PRODUCTS.get(blocks[0])
    if hit is not None and hit[0] == key:
        F = hit[1]
        for seg in F._get_segments():
            seg.refresh()
        return F
    _check_blocks(blocks)  # once per storage: a cache hit has the same shapes and dtypes
    F = _product([_as_array(b) for b in blocks])
    _PRODUCTS[blocks[0]] = (key, F)
    return F


def _forward(x, blocks, bias=None, with_bias=False) -> torch.Tensor:
    """x Wᵀ (+ bias) through the fused chain kernels, after the input checks (the forward of
    both autograd functions)."""
    _check_tensor(x)
    with _stream(x.device):
        F = _cached_product(blocks)
        _check_call(x, blocks, F, bias, with_bias)
        xa = _as_array(x)
        # X Wᵀ = (W Xᵀ)ᵀ: F on the column view of x, output row-major (no transposed factors)
        out = F._apply_cols(xa.T, True, F._result_dtype(xa, "x")).T
        if with_bias:
            out += _as_array(bias)  # a new array (the chain has factors): never x
        return _as_tensor(out)


def _vjp_grads(x, blocks, ga, need_x, need_blocks):
    """(∂ℓ/∂x or None, [∂ℓ/∂block or None, ...]) from the output gradient ``ga`` (an array
    of x's namespace), only those asked for, through :func:`gpufact.vjp` (call on torch's
    stream)."""
    need_w = any(need_blocks)
    if not (need_x or need_w):
        return None, [None] * len(blocks)
    F = _cached_product(blocks)
    gxa, grads = vjp(F, _as_array(x), ga, layout="rows", input_grad=need_x, factor_grads=need_w)
    gx = _as_tensor(gxa) if need_x else None
    if not need_w:
        return gx, [None] * len(blocks)
    return gx, [(_as_tensor(g) if n else None) for g, n in zip(grads, need_blocks)]


class KSChainFunction(torch.autograd.Function):
    """``KSChainFunction.apply(x, *blocks)`` = x Wᵀ with W = S_1 ⋯ S_J.

    x : (B, N) tensor, float32 or float64 (complex64/complex128 also work); blocks : the
    factors' blocks in product order, S_j of pattern (a, b, c, d) as an (a, d, b, c) tensor of
    x's dtype and device. Returns (B, M). Forward O(B · Σ nnz_j) through the fused chain
    kernels; backward ≈ 3× that (gradients w.r.t. x and every block, only those in
    ``ctx.needs_input_grad``), recomputing the activations per tile. Not twice
    differentiable (``once_differentiable``). The FactorProduct over the blocks' views and
    its plans are kept between calls while the blocks keep their storage
    (:func:`_cached_product`): per call only the weights are gathered again (O(nnz)).
    """

    @staticmethod
    def forward(ctx, x, *blocks):
        out = _forward(x, blocks)
        ctx.save_for_backward(x, *blocks)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, *blocks = ctx.saved_tensors
        need = ctx.needs_input_grad
        with _stream(x.device):
            gx, gw = _vjp_grads(x, blocks, _as_array(grad_y), bool(need[0]), need[1:])
        return (gx, *gw)


_SUM_CHUNK = 1024  # rows summed at a time in the bias gradient


def _col_sums(g):
    """Σ_rows of a (B, M) NumPy/CuPy array, in chunks of _SUM_CHUNK rows summed first (a plain
    sum along the rows accumulates B terms one after the other: error ∝ B·eps in float32;
    chunked, ∝ (_SUM_CHUNK + B/_SUM_CHUNK)·eps)."""
    B = g.shape[0]
    if B <= _SUM_CHUNK:
        return g.sum(axis=0)
    n = B - B % _SUM_CHUNK
    s = g[:n].reshape(n // _SUM_CHUNK, _SUM_CHUNK, g.shape[1]).sum(axis=1).sum(axis=0)
    if n < B:
        s += g[n:].sum(axis=0)
    return s


class KSAffineFunction(torch.autograd.Function):
    """``KSAffineFunction.apply(x, bias, *blocks)`` = x Wᵀ + bias, W = S_1 ⋯ S_J.

    :class:`KSChainFunction` with the bias added in place to the kernels' output array and
    its gradient (the column sums of ∂ℓ/∂Y) taken in the backward beside :func:`gpufact.vjp`,
    on the same arrays (NumPy, or CuPy on torch's stream): no torch operation runs between
    the chain's forward and its backward. On the CPU a torch operation there wakes PyTorch's
    OpenMP pool, whose threads then share the cores with ours: N = 1024 butterfly, B = 256,
    forward + backward 10–20 % faster this way (AMD EPYC, 2 cores, measured side by side).
    bias : (M,) tensor of x's dtype and device.
    """

    @staticmethod
    def forward(ctx, x, bias, *blocks):
        out = _forward(x, blocks, bias, True)
        ctx.save_for_backward(x, *blocks)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, *blocks = ctx.saved_tensors
        need = ctx.needs_input_grad
        with _stream(x.device):
            ga = _as_array(grad_y)
            gb = _as_tensor(_col_sums(ga)) if need[1] else None
            gx, gw = _vjp_grads(x, blocks, ga, bool(need[0]), need[2:])
        return (gx, gb, *gw)


@torch.compiler.disable
def ks_chain(x: torch.Tensor, *blocks: torch.Tensor, bias=None) -> torch.Tensor:
    """``x Wᵀ`` (``KSChainFunction.apply(x, *blocks)``), or ``x Wᵀ + bias``
    (``KSAffineFunction``) when a ``bias`` (M,) is given; opaque to ``torch.compile`` (a graph
    break: the kernels are Numba/CUDA code that TorchDynamo cannot trace).

    x : (B, N) tensor; blocks : 4-D (a, d, b, c) tensors of x's dtype (float32, float64,
    complex64, complex128) and device, product order, chaining into an M x N weight; bias :
    (M,) tensor of x's dtype and device, or None. Raises TypeError (a non-tensor, another
    dtype) or ValueError (shapes, devices) naming the argument, before any kernel runs."""
    if bias is None:
        return KSChainFunction.apply(x, *blocks)
    return KSAffineFunction.apply(x, bias, *blocks)
