"""gpufact.torch: KSLinear and KSChainFunction against an einsum reference, gradcheck in
float64, conversions, state_dict, torch.compile, bad input; CUDA under the ``gpu`` marker."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpufact._kernels import reference  # noqa: E402
from gpufact.torch import KSAffineFunction, KSChainFunction, KSLinear, ks_chain, ks_patterns, param_groups  # noqa: E402


def einsum_forward(x, blocks):
    """x Wᵀ through the factors by einsum in pure torch (blocks in product order)."""
    y = x.T  # (N, B) columns
    for bl in reversed(blocks):
        a, d, b, c = bl.shape
        y = torch.einsum("adrs,asdB->ardB", bl, y.reshape(a, c, d, -1)).reshape(a * b * d, -1)
    return y.T


SIZES = [(16, 16, "butterfly"), (16, 16, "monarch"), (12, 20, "butterfly"), (784, 10, "monarch"),
         (24, 48, "butterfly"), (7, 5, "butterfly")]


@pytest.mark.parametrize("n_in,n_out,structure", SIZES)
def test_outputs_and_gradients_match_einsum_reference(n_in, n_out, structure):
    torch.manual_seed(0)
    layer = KSLinear(n_in, n_out, structure=structure, dtype=torch.float64)
    ref_blocks = [p.detach().clone().requires_grad_(True) for p in layer.factors]
    ref_bias = layer.bias.detach().clone().requires_grad_(True)
    x = torch.randn(3, 5, n_in, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    y = layer(x)
    yr = einsum_forward(xr.reshape(-1, n_in), ref_blocks).reshape(3, 5, n_out) + ref_bias
    assert y.shape == (3, 5, n_out)
    torch.testing.assert_close(y, yr, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    y.backward(g)
    yr.backward(g)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-12, atol=1e-12)
    for p, r in zip(layer.factors, ref_blocks):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, ref_bias.grad)
    # the exact dense weight
    W = layer.to_dense()
    assert W.shape == (n_out, n_in)
    torch.testing.assert_close(x @ W.T + layer.bias, y, rtol=1e-12, atol=1e-12)


def test_float32_matches_the_numpy_reference():
    torch.manual_seed(1)
    layer = KSLinear(64, 64, structure="butterfly", bias=False)
    x = torch.randn(70, 64)
    y = layer(x)
    blocks = [p.detach().numpy() for p in layer.factors]
    ref = reference.ks_chain_apply(blocks[::-1], x.numpy().T).T
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    assert y.dtype == torch.float32


def test_cached_product_follows_in_place_updates_and_new_storage():
    """The layer's FactorProduct is kept between calls: outputs and gradients follow
    in-place parameter updates (optimizer steps) and new storage (.double(), assign=True)."""
    torch.manual_seed(2)
    layer = KSLinear(32, 32, structure="monarch")
    x = torch.randn(9, 32)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(2):
        layer(x).square().mean().backward()
        opt.step()  # in place
        opt.zero_grad()
        y = layer(x)
        torch.testing.assert_close(y, einsum_forward(x, [p.detach() for p in layer.factors]) + layer.bias,
                                   rtol=1e-5, atol=1e-6)
    layer.double()  # new storage, new dtype
    xd = x.double().requires_grad_(True)
    blocks = [p.detach().clone().requires_grad_(True) for p in layer.factors]
    y = layer(xd)
    yr = einsum_forward(xd, blocks) + layer.bias
    torch.testing.assert_close(y, yr, rtol=1e-12, atol=1e-12)
    y.sum().backward()
    yr.sum().backward()
    for p, r in zip(layer.factors, blocks):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-12, atol=1e-12)
    new = {k: torch.randn_like(v) for k, v in layer.state_dict().items()}
    layer.load_state_dict(new, assign=True)
    torch.testing.assert_close(layer(xd), einsum_forward(xd, [new[f"factors.{j}"] for j in range(2)]) + new["bias"],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("structure", ["butterfly", "monarch", [(1, 6, 4, 1), (2, 2, 6, 1)]])
def test_gradcheck_float64(structure):
    torch.manual_seed(2)
    n_out = 6 if not isinstance(structure, str) else 8
    n_in = 12 if not isinstance(structure, str) else 8
    layer = KSLinear(n_in, n_out, structure=structure, dtype=torch.float64)
    x = torch.randn(3, n_in, dtype=torch.float64, requires_grad=True)
    blocks = [p.detach().clone().requires_grad_(True) for p in layer.factors]
    assert torch.autograd.gradcheck(KSChainFunction.apply, (x, *blocks))
    # only some inputs need gradients (needs_input_grad respected); the module with its bias
    blocks[0].requires_grad_(False)
    assert torch.autograd.gradcheck(KSChainFunction.apply, (x, *blocks), fast_mode=True)
    assert torch.autograd.gradcheck(layer, (x,), fast_mode=True)
    bias = torch.randn(n_out, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(KSAffineFunction.apply, (x, bias, *blocks), fast_mode=True)


def test_ks_chain_bias_matches_chain_plus_bias():
    """The fused bias (KSAffineFunction) against KSChainFunction + bias, values and every
    gradient."""
    torch.manual_seed(5)
    layer = KSLinear(32, 32, dtype=torch.float64)
    blocks = [p.detach().clone().requires_grad_(True) for p in layer.factors]
    x = torch.randn(7, 32, dtype=torch.float64, requires_grad=True)
    b = torch.randn(32, dtype=torch.float64, requires_grad=True)
    g = torch.randn(7, 32, dtype=torch.float64)
    y = ks_chain(x, *blocks, bias=b)
    y.backward(g)
    got = [t.grad.clone() for t in (x, b, *blocks)]
    for t in (x, b, *blocks):
        t.grad = None
    ref = KSChainFunction.apply(x, *blocks) + b
    ref.backward(g)
    torch.testing.assert_close(y, ref)
    for a, r in zip(got, [t.grad for t in (x, b, *blocks)]):
        torch.testing.assert_close(a, r)
    x0 = x.detach().clone()
    ks_chain(x, *blocks, bias=b)
    assert torch.equal(x, x0)  # the bias is added to the output, never to the input


def test_needs_input_grad_only_blocks_or_only_input():
    torch.manual_seed(3)
    layer = KSLinear(16, 16, dtype=torch.float64)
    x = torch.randn(4, 16, dtype=torch.float64)  # no grad for the input
    layer(x).sum().backward()
    assert all(p.grad is not None for p in layer.factors) and x.grad is None
    layer.zero_grad()
    for p in layer.parameters():
        p.requires_grad_(False)
    x.requires_grad_(True)
    layer(x).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in layer.factors)
    torch.testing.assert_close(x.grad, layer.to_dense().sum(0).expand(4, 16))


def test_patterns_for_rectangular_and_non_power_of_two_sizes():
    for n_in, n_out in ((784, 1024), (1000, 1000), (768, 3072), (3 * 2**5, 3 * 2**5), (13, 1009)):
        for structure in ("butterfly", "monarch"):
            pats = ks_patterns(n_in, n_out, structure)
            a, b, c, d = pats[0]
            assert a * b * d == n_out
            a, b, c, d = pats[-1]
            assert a * c * d == n_in
            for p, q in zip(pats, pats[1:]):
                assert p[0] * p[2] * p[3] == q[0] * q[1] * q[3]
    assert ks_patterns(1024, 1024, "butterfly") == [(2**(k - 1), 2, 2, 1024 // 2**k) for k in range(1, 11)]
    assert ks_patterns(1024, 1024, "monarch") == [(1, 32, 32, 32), (32, 32, 32, 1)]
    layer = KSLinear(784, 1024, structure="butterfly")
    assert layer.nnz < 784 * 1024 / 10
    assert "no padding" in repr(layer) and "fused" in repr(layer)


def test_reset_parameters_keeps_nn_linear_output_variance():
    """E y_i² = E x² · E Σ_k W_ik² = E x² / 3 for nn.Linear's U(±1/√in); the same for KSLinear
    (averaged over 32 draws), and each entry of W has variance 1/(3·in) (one path per entry)."""
    torch.manual_seed(4)
    n = 64
    for structure in ("butterfly", "monarch"):
        for init in ("uniform", "normal", "orthogonal"):
            W = torch.stack([KSLinear(n, n, bias=False, structure=structure, init=init,
                                      dtype=torch.float64).to_dense() for _ in range(32)])
            gain = (W ** 2).sum(-1).mean().item()  # E Σ_k W_ik²
            assert abs(gain - 1 / 3) < 0.02, (structure, init, gain)
            assert abs(W.var().item() * 3 * n - 1) < 0.06
    dense = torch.stack([torch.nn.Linear(n, n, bias=False, dtype=torch.float64).weight.detach() for _ in range(32)])
    assert abs((dense ** 2).sum(-1).mean().item() - 1 / 3) < 0.02


def test_from_dense_exact_on_structured_weights_and_projection_otherwise():
    torch.manual_seed(5)
    src = KSLinear(64, 64, structure="butterfly", dtype=torch.float64)
    lin = torch.nn.Linear(64, 64, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(src.to_dense())
    conv = KSLinear.from_dense(lin, structure="butterfly")
    assert conv.rel_error_ < 1e-10
    torch.testing.assert_close(conv.to_dense(), lin.weight.detach(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(conv.bias, lin.bias)
    # Monarch of a random layer: the best rank-one approximation of each block (closed form)
    lin = torch.nn.Linear(16, 16, dtype=torch.float64)
    conv = KSLinear.from_dense(lin, structure="monarch")
    W = lin.weight.detach().numpy()
    Wh = conv.to_dense().detach().numpy()
    err = np.linalg.norm(W - Wh)
    # any other Monarch weight (e.g. a random one) is farther away
    other = KSLinear(16, 16, structure="monarch", dtype=torch.float64).to_dense().detach().numpy()
    assert err < np.linalg.norm(W - other)
    assert abs(conv.rel_error_ - err / np.linalg.norm(W)) < 1e-12
    with pytest.raises(TypeError, match="nn.Linear"):
        KSLinear.from_dense(torch.nn.Conv1d(1, 1, 1))
    bad = torch.nn.Linear(16, 16)
    with torch.no_grad():
        bad.weight[3, 4] = float("nan")
    with pytest.raises(ValueError, match="linear.weight"):
        KSLinear.from_dense(bad, structure="monarch")
    with torch.no_grad():
        bad.weight[3, 4] = 0.0
        bad.bias[0] = float("inf")
    with pytest.raises(ValueError, match="linear.bias"):
        KSLinear.from_dense(bad, structure="butterfly")


@pytest.mark.parametrize("n_in, n_out, structure", [(64, 64, "butterfly"), (64, 64, "monarch"), (28, 32, "butterfly"),
                                                    (32, 12, "monarch")])
def test_orthogonal_init(n_in, n_out, structure):
    """init="orthogonal": each block has orthonormal columns or rows times √max(1, b/c) ·
    3^(-1/2J); a square chain of square blocks is 3^(-1/2) times an orthogonal matrix."""
    torch.manual_seed(7)
    layer = KSLinear(n_in, n_out, structure=structure, init="orthogonal", dtype=torch.float64)
    J = len(layer.patterns)
    for p, (a, b, c, d) in zip(layer.factors, layer.patterns):
        blk = p.detach().reshape(a * d, b, c) / (np.sqrt(max(1.0, b / c)) * 3.0 ** (-0.5 / J))
        gram = blk.transpose(1, 2) @ blk if b >= c else blk @ blk.transpose(1, 2)
        torch.testing.assert_close(gram, torch.eye(min(b, c), dtype=torch.float64).expand_as(gram))
    if n_in == n_out and all(b == c for (a, b, c, d) in layer.patterns):
        W = layer.to_dense()
        torch.testing.assert_close(W @ W.T, torch.eye(n_out, dtype=torch.float64) / 3)


def test_state_dict_round_trip_and_training_step():
    torch.manual_seed(6)
    a = KSLinear(24, 48, structure="butterfly")
    b = KSLinear(24, 48, structure="butterfly")
    b.load_state_dict(a.state_dict())
    x = torch.randn(9, 24)
    torch.testing.assert_close(a(x), b(x))
    assert set(a.state_dict()) == {f"factors.{j}" for j in range(len(a.patterns))} | {"bias"}
    # one SGD step lowers a regression loss
    target = torch.randn(9, 48)
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    loss0 = torch.nn.functional.mse_loss(a(x), target)
    loss0.backward()
    opt.step()
    assert torch.nn.functional.mse_loss(a(x), target) < loss0


@pytest.mark.parametrize("structure", ["butterfly", "monarch"])
def test_param_groups_match_nn_linear_relative_step(structure):
    """With param_groups, the first Adam step moves a KSLinear's factors by J · Σ relative
    changes ≈ the relative change of nn.Linear's weight under the same lr (lr_scales' claim);
    every parameter lands in exactly one group; bad input raises."""
    torch.manual_seed(8)
    n = 256
    model = torch.nn.Sequential(KSLinear(n, n, structure=structure), torch.nn.ReLU(), torch.nn.Linear(n, 10))
    dense = torch.nn.Linear(n, n)
    groups = param_groups(model, 1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    ks = model[0]
    assert [g["lr"] for g in groups[:len(ks.factors)]] == pytest.approx([1e-3 * s for s in ks.lr_scales()])
    assert groups[-1]["lr"] == 1e-3
    x = torch.randn(64, n)

    def relative_steps(params, opt_groups, out):
        before = [p.detach().clone() for p in params]
        opt = torch.optim.Adam(opt_groups)
        out().square().mean().backward()
        opt.step()
        return [float((p.detach() - b).norm() / b.norm()) for p, b in zip(params, before)]

    r_ks = sum(relative_steps(list(ks.factors), groups[:len(ks.factors)], lambda: model(x)))
    r_dense = relative_steps([dense.weight], [{"params": [dense.weight], "lr": 1e-3}], lambda: dense(x))[0]
    assert r_ks == pytest.approx(r_dense, rel=0.25)
    with pytest.raises(TypeError, match="model"):
        param_groups([ks], 1e-3)
    with pytest.raises(ValueError, match="lr"):
        param_groups(model, 0.0)


def test_torch_compile_with_graph_break():
    torch.manual_seed(7)
    model = torch.nn.Sequential(KSLinear(32, 32), torch.nn.ReLU(), KSLinear(32, 8, structure="monarch"))
    x = torch.randn(5, 32, requires_grad=True)
    compiled = torch.compile(model, backend="aot_eager")
    y = compiled(x)
    torch.testing.assert_close(y, model(x))
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_input():
    layer = KSLinear(16, 8)
    with pytest.raises(ValueError, match="16"):
        layer(torch.randn(3, 15))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(3, 16, dtype=torch.float64))
    with pytest.raises(TypeError, match="Tensor"):
        layer(np.zeros((3, 16), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        KSLinear(16, 8, dtype=torch.float16)
    # converted after construction (.half(), .to(bfloat16)): refused, not run in float32
    for dt in (torch.float16, torch.bfloat16):
        low = KSLinear(16, 8).to(dt)
        with pytest.raises(TypeError, match="float32 and"):
            low(torch.randn(3, 16).to(dt))
        with pytest.raises(TypeError, match="float32 and"):
            low.to_dense()
    with pytest.raises(ValueError, match="structure"):
        KSLinear(16, 8, structure="fft")
    with pytest.raises(ValueError, match="chain into"):
        KSLinear(16, 8, structure=[(1, 4, 4, 4)])
    with pytest.raises(ValueError, match="do not chain"):
        KSLinear(16, 16, structure=[(1, 4, 4, 4), (2, 2, 2, 2)])
    with pytest.raises(ValueError, match="in_features"):
        KSLinear(0, 8)
    with pytest.raises(ValueError, match="init"):
        KSLinear(16, 8, init="zeros")
    if torch.device("meta").type == "meta":
        with pytest.raises(ValueError, match="device"):
            layer(torch.randn(3, 16, device="meta"))


def test_import_gpufact_does_not_import_torch():
    code = "import sys, gpufact, gpufact.factorize; assert 'torch' not in sys.modules, 'torch imported'"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_demo_layers_on_digits():
    import io

    from gpufact._demo_layers import demo_layers

    buf = io.StringIO()
    res = demo_layers(buf, dataset="digits", epochs=3, hidden=256, lr=1e-2)
    text = buf.getvalue()
    for structure in ("dense", "butterfly", "monarch"):
        assert structure in text
        assert res[structure]["accuracy"] > 70  # 10 classes: chance is 10 % (measured: 93-95 %)
    assert res["butterfly"]["params"] < res["dense"]["params"] / 5


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    pytest.importorskip("cupy")
    torch.manual_seed(8)
    cpu = KSLinear(256, 256, dtype=torch.float64)
    gpu = KSLinear(256, 256, dtype=torch.float64, device="cuda")
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(300, 256, dtype=torch.float64)
    xg = x.cuda().requires_grad_(True)
    x.requires_grad_(True)
    torch.testing.assert_close(gpu(xg).cpu(), cpu(x))
    cpu(x).square().sum().backward()
    gpu(xg).square().sum().backward()
    torch.testing.assert_close(xg.grad.cpu(), x.grad)
    for p, q in zip(gpu.factors, cpu.factors):
        torch.testing.assert_close(p.grad.cpu(), q.grad)
    with pytest.raises(ValueError, match="device"):
        gpu(x)


def test_ks_chain_bad_input_is_refused_before_any_kernel():
    """ks_chain / KSChainFunction / KSAffineFunction check x, the blocks and the bias (a wrong
    feature count once read past x's end: garbage out, a corrupted heap); messages name the
    argument, and a good call afterwards still matches the einsum reference."""
    torch.manual_seed(6)
    blocks = [p.detach() for p in KSLinear(64, 64).factors]
    x = torch.randn(5, 64)
    bad = [
        ((torch.randn(5, 63), blocks, None), ValueError, "x: expected shape"),
        ((torch.randn(5, 128), blocks, None), ValueError, "x: expected shape"),
        ((torch.randn(64), blocks, None), ValueError, "x: expected shape"),
        ((torch.randn(2, 5, 64), blocks, None), ValueError, "x: expected shape"),
        (([[0.0] * 64], blocks, None), TypeError, "x must be a torch.Tensor"),
        ((x, [], None), ValueError, "blocks"),
        ((x.long(), blocks, None), TypeError, "x has dtype"),
        ((x.double(), blocks, None), TypeError, "x has dtype"),
        ((x, blocks[:-1] + [blocks[-1].double()], None), TypeError, r"blocks\[5\]"),
        ((x, blocks[:-1] + [blocks[-1].int()], None), TypeError, r"blocks\[5\]"),
        ((x, blocks[:-1] + [blocks[-1].reshape(-1)], None), ValueError, r"blocks\[5\]"),
        ((x, blocks[:-1] + [torch.randn(1, 16, 2, 2)], None), ValueError, "do not chain"),
        ((x, blocks, torch.zeros(63)), ValueError, "bias: expected shape"),
        ((x, blocks, torch.zeros(64, dtype=torch.float64)), TypeError, "bias has dtype"),
        ((x, blocks, 1.0), TypeError, "bias must be a torch.Tensor"),
        ((x, blocks, np.zeros(64, dtype=np.float32)), TypeError, "bias must be a torch.Tensor"),
    ]
    for (xx, bl, bias), err, msg in bad:
        with pytest.raises(err, match=msg):
            ks_chain(xx, *bl, bias=bias)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        KSChainFunction.apply(None, *blocks)
    with pytest.raises(TypeError, match="dense"):
        KSLinear(64, 64)(x.to_sparse())
    torch.testing.assert_close(ks_chain(x, *blocks), einsum_forward(x, blocks))


def test_bias_gradient_sums_rows_in_chunks():
    """The bias gradient (column sums of ∂ℓ/∂Y) against a float64 sum, for batches below, at
    and above the chunk size, contiguous or not (a stride-0 upstream gradient included)."""
    from gpufact.torch._function import _SUM_CHUNK, _col_sums

    rng = np.random.default_rng(8)
    for B in (1, 7, _SUM_CHUNK, 3 * _SUM_CHUNK + 5):
        g = rng.standard_normal((B, 12)).astype(np.float32)
        for arr in (g, np.asfortranarray(g), g[:, ::-1], np.broadcast_to(g[:1], g.shape)):
            ref = arr.astype(np.float64).sum(axis=0)
            np.testing.assert_allclose(_col_sums(arr), ref, rtol=1e-5, atol=1e-5 * np.abs(arr).sum(axis=0).max())
