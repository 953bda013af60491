"""Fastfood random features (Le, Sarlós & Smola, ICML 2013)."""
from __future__ import annotations

import math

import numpy as np

from .._validation import check_dtype, check_int, check_seed
from ..factors import PermFactor
from ..product import FactorProduct
from ._base import StructuredFeaturesBase
from ._structured import check_gamma, hadamard_run, ks_factors, pad_factor, padded_size, row_selection


def fastfood_draw(N: int, k: int, sigma: float, rng):
    """Host parts of k Fastfood blocks ``V_j = (1/(σ√N)) S_j H G_j Π_j H B_j``.

    Returns ``(runs1, perm, runs2)``: runs1 = ``H B_j`` replicated over the blocks (N → kN),
    perm (k, N) the permutations Π_j (``(Π x)_i = x[perm[i]]``), runs2 =
    ``diag(S_j/(σ√N)) H G_j`` (application order, host float64). B: Rademacher, G: standard
    normal, S_ii = s_i / ‖G_j‖_F with s_i ~ chi(N), so that each row of V_j has the norm of
    a Gaussian row N(0, σ⁻² I_N).
    """
    Bd = rng.choice(np.array([-1.0, 1.0]), size=(k, N))
    perm = np.stack([rng.permutation(N) for _ in range(k)]).astype(np.int64)
    G = rng.standard_normal((k, N))
    s = np.sqrt(rng.chisquare(N, size=(k, N)))
    S = s / np.linalg.norm(G, axis=1, keepdims=True)
    runs1 = hadamard_run(N, k, Bd, replicate=True)
    runs2 = hadamard_run(N, k, G, (S / (sigma * math.sqrt(N))).ravel(), replicate=False)
    return runs1, perm, runs2


def _factors(runs1, perm, runs2, dtype, xp):
    k, N = perm.shape
    glob = (perm + (np.arange(k) * N)[:, None]).ravel()
    return (ks_factors(runs2, dtype, xp) + [PermFactor(xp.asarray(glob), dtype=dtype, check=False)]
            + ks_factors(runs1, dtype, xp))


def fastfood_operator(n_features: int, n_components: int, gamma: float = 1.0, *, dtype=np.float64,
                      seed=None, xp=np) -> FactorProduct:
    """The Fastfood frequency operator V (Le, Sarlós & Smola, ICML 2013) as a FactorProduct.

    V stacks ``k = ceil(n_components / N)`` blocks ``(1/(σ√N)) S H G Π H B`` (N = 2^L ≥
    n_features, σ = 1/√(2 gamma)), keeps the first n_components rows and zero-pads its
    input: shape (n_components, n_features), rows
    distributed like i.i.d. N(0, 2 gamma I) frequencies, so ``cos(V x + b)`` are random
    Fourier features of exp(-gamma ‖x − y‖²). Factors: L butterflies (row scaling S folded
    in), the block permutation, L butterflies (G and B folded in, the first one replicating
    the input over the k blocks); the row cut and the padding are CSR factors (absent when
    n_components = k·N and n_features = N).
    Apply O(k N log N) per vector. ``seed``: None, int ≥ 0, RandomState, SeedSequence or Generator (host);
    ``xp``: numpy or cupy. Raises ValueError/TypeError on bad arguments.
    """
    d = check_int(n_features, "n_features", min_value=1)
    n = check_int(n_components, "n_components", min_value=1)
    g = check_gamma(gamma)
    dt = check_dtype(dtype)
    if dt.kind == "c":
        raise TypeError(f"dtype: random features are real, got {dt}")
    rng = check_seed(seed)
    N = padded_size(d)
    k = -(-n // N)
    runs1, perm, runs2 = fastfood_draw(N, k, 1.0 / math.sqrt(2.0 * g), rng)
    pad = pad_factor(d, N, dt, xp)
    sel = row_selection(n, k * N, dt, xp)
    return FactorProduct(([sel] if sel is not None else []) + _factors(runs1, perm, runs2, dt, xp)
                         + ([pad] if pad is not None else []))


class Fastfood(StructuredFeaturesBase):
    """Fastfood random features for the RBF kernel exp(-gamma ‖x − y‖²).

    Le, Sarlós & Smola, "Fastfood — Approximating Kernel Expansions in Loglinear Time",
    ICML 2013: frequencies ``V = (1/(σ√N)) S H G Π H B`` per block of N = 2^L rows (H the ±1
    Walsh–Hadamard matrix, B Rademacher, Π a random permutation, G Gaussian, S chi-distributed
    row norms, σ = 1/√(2 gamma)); inputs zero-padded to N; ``ceil(n_components / N)`` blocks
    (see :func:`fastfood_operator`). Features and output scaling as scikit-learn's
    ``RBFSampler`` (``"cos"``, random offsets) or ``"sincos"`` (lower variance).

    Parameters
    ----------
    gamma : float > 0, default 1.0.
    n_components : int ≥ 1, default 100: the output width ("sincos": an odd value is
        rounded up by one, ``n_components_``); the last block of N rows is cut to fit.
    features : "cos" (default) or "sincos".
    random_state : None, int ≥ 0, RandomState, SeedSequence or numpy Generator.

    Attributes
    ----------
    operator_ : FactorProduct V (rows = frequencies, X's namespace and dtype).
    random_offset_ : (n_components_,) ("cos"), None ("sincos").
    n_components_, n_blocks_, padded_features_ (N), n_features_in_.

    Cost: transform O(n_samples · D log N) time, O(D) parameters, versus O(n_samples · D ·
    n_features) and O(D · n_features) for ``RBFSampler``.
    """

    def _draw(self, rng, N, k, sigma, X):
        runs1, perm, runs2 = fastfood_draw(N, k, sigma, rng)
        return runs1, perm, runs2, lambda dt, xp: _factors(runs1, perm, runs2, dt, xp)
