"""Demo and benchmark helpers: an MLP whose hidden layers are dense, butterfly or Monarch
(:class:`gpufact.torch.KSLinear`), trained with PyTorch on Fashion-MNIST or digits.

``python -m gpufact demo layers`` runs :func:`demo_layers`. Needs the ``torch`` extra.
"""
from __future__ import annotations

import sys
import time

import numpy as np

STRUCTURES = ("dense", "butterfly", "monarch")


def make_mlp(sizes, structure: str = "dense", *, seed: int = 0, init: str = "uniform"):
    """``sizes[0] → sizes[1] → … → sizes[-1]`` with ReLUs; every layer but the last (the
    classifier) is ``nn.Linear`` (``structure="dense"``) or a ``KSLinear`` of that structure
    and ``init``."""
    import torch
    from torch import nn

    from .torch import KSLinear

    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    torch.manual_seed(seed)
    layers = []
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = j == len(sizes) - 2
        if last or structure == "dense":
            layers.append(nn.Linear(n_in, n_out))
        else:
            layers.append(KSLinear(n_in, n_out, structure=structure, init=init))
        if not last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def replaced_params(model) -> int:
    """Weight entries of the hidden layers (all layers but the classifier), biases excluded."""
    from torch import nn

    from .torch import KSLinear

    lin = [m for m in model if isinstance(m, (nn.Linear, KSLinear))][:-1]
    return sum(m.nnz if isinstance(m, KSLinear) else m.weight.numel() for m in lin)


def train_epoch(model, opt, X, y, *, batch_size: int = 128, seed: int = 0) -> float:
    """One epoch of minibatch training (cross-entropy), shuffled by ``seed``; returns seconds."""
    import torch

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(X.shape[0], generator=g)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    t0 = time.perf_counter()
    for i in range(0, X.shape[0], batch_size):
        idx = perm[i:i + batch_size]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(X[idx]), y[idx])
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def warm_up(model, X, y, batch_size: int = 128):
    """Forward and backward of a throwaway model on a full and a partial batch: a first run
    compiles the layers' kernels here (Numba, cached on disk), not inside a timed epoch."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    for n in (batch_size, X.shape[0] % batch_size or batch_size):
        loss_fn(model(X[:n]), y[:n]).backward()
        with torch.no_grad():
            model(X[:n])


def accuracy(model, X, y, batch_size: int = 2048) -> float:
    """Test accuracy in percent."""
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, X.shape[0], batch_size):
            correct += int((model(X[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return 100.0 * correct / X.shape[0]


def load_data(dataset: str = "auto", *, n_train=None, n_test=None, seed: int = 0):
    """(name, X_train, y_train, X_test, y_test) as torch tensors (float32, int64).

    ``dataset``: "fashion-mnist" (local files, see :mod:`gpufact.datasets`), "digits"
    (scikit-learn's 8×8 digits, 75/25 split) or "auto" (Fashion-MNIST where installed, else
    digits). ``n_train`` / ``n_test`` take the first samples of a seeded shuffle."""
    import torch

    from . import datasets

    if dataset == "auto":
        dataset = "fashion-mnist" if datasets.fashion_mnist_available() else "digits"
    if dataset == "fashion-mnist":
        Xtr, ytr = datasets.load_fashion_mnist(subset="train", return_X_y=True)
        Xte, yte = datasets.load_fashion_mnist(subset="test", return_X_y=True)
    elif dataset == "digits":
        X, y = datasets.load_digits(return_X_y=True)
        X = X / np.float32(16.0)
        p = np.random.default_rng(seed).permutation(len(y))
        cut = (3 * len(y)) // 4
        Xtr, ytr, Xte, yte = X[p[:cut]], y[p[:cut]], X[p[cut:]], y[p[cut:]]
    else:
        raise ValueError(f"dataset must be 'auto', 'fashion-mnist' or 'digits', got {dataset!r}")
    rng = np.random.default_rng(seed)
    if n_train is not None:
        p = rng.permutation(len(ytr))[:n_train]
        Xtr, ytr = Xtr[p], ytr[p]
    if n_test is not None:
        p = rng.permutation(len(yte))[:n_test]
        Xte, yte = Xte[p], yte[p]
    t = torch.from_numpy
    return (dataset, t(np.ascontiguousarray(Xtr, dtype=np.float32)), t(np.asarray(ytr, dtype=np.int64)),
            t(np.ascontiguousarray(Xte, dtype=np.float32)), t(np.asarray(yte, dtype=np.int64)))


def demo_layers(out=sys.stdout, *, dataset: str = "auto", epochs: int = 3, n_train: int = 10_000,
                n_test: int = 2_000, hidden: int = 1024, lr: float = 1e-3, seed: int = 0) -> dict:
    """Train the same MLP with dense, butterfly and Monarch hidden layers; print test
    accuracy, parameters of the hidden layers and epoch time. A few minutes on 2 cores with
    the defaults (Fashion-MNIST: 10 000 training images, 784 → 1024 → 1024 → 10, 3 epochs;
    without Fashion-MNIST installed: digits, 64 → ``hidden`` → ``hidden`` → 10)."""
    import torch

    name, Xtr, ytr, Xte, yte = load_data(dataset, n_train=n_train, n_test=n_test, seed=seed)
    sizes = [Xtr.shape[1], hidden, hidden, 10]
    print(f"gpufact demo layers: {name}, {Xtr.shape[0]} training / {Xte.shape[0]} test samples, "
          f"MLP {' -> '.join(map(str, sizes))}, {epochs} epochs, Adam lr={lr}, "
          f"{torch.get_num_threads()} torch threads", file=out)
    print(f"{'hidden layers':<14} {'test acc.':>9} {'params':>9} {'vs dense':>9} {'epoch':>8}", file=out)
    results = {}
    for structure in STRUCTURES:
        warm_up(make_mlp(sizes, structure, seed=seed), Xtr, ytr)  # compile outside the epoch times
        model = make_mlp(sizes, structure, seed=seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        times = [train_epoch(model, opt, Xtr, ytr, seed=seed + e) for e in range(epochs)]
        acc = accuracy(model, Xte, yte)
        results[structure] = dict(accuracy=acc, params=replaced_params(model), epoch_s=min(times))
    dense = results["dense"]["params"]
    for structure, r in results.items():
        print(f"{structure:<14} {r['accuracy']:>8.2f}% {r['params']:>9} {dense / r['params']:>8.1f}x "
              f"{r['epoch_s']:>7.2f}s", file=out)
    return results
