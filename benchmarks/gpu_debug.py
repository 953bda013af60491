"""Targeted checks of the float32 PALM path on CuPy (debugging aid)."""
import cupy as cp
import numpy as np

from gpufact import proj, to_numpy
from gpufact._kernels.reference import topk_mask
from gpufact.factorize import palm4msa

rng = np.random.default_rng(4)
for dt in (np.float32, np.float64):
    M = rng.standard_normal((32, 48)).astype(dt)
    for k, axis in ((6, 1), (6, 0)):
        P = proj.splin((32, 48), k) if axis == 1 else proj.spcol((32, 48), k)
        g = to_numpy(P.support(cp.asarray(M)))
        print(dt.__name__, "axis", axis, "mask equal:", np.array_equal(g, topk_mask(np.abs(M), k, axis)))
    A = rng.standard_normal((32, 48)).astype(dt)
    cons = [proj.splincol((32, 32), 6), proj.splincol((32, 48), 6)]
    Fg, hg = palm4msa(cp.asarray(A), cons, max_iter=5, return_history=True)
    Fc, hc = palm4msa(A, cons, max_iter=5, return_history=True)
    print(dt.__name__, "hist gpu", np.round(hg, 4), "cpu", np.round(hc, 4))
    print(dt.__name__, "kinds", [f.kind for f in Fg.factors], [f.dtype for f in Fg.factors])
    for f, fc in zip(Fg.factors, Fc.factors):
        print("  factor max diff", float(np.abs(to_numpy(f.toarray()) - fc.toarray()).max()))
    Dg = to_numpy(Fg.toarray())
    prod = to_numpy(Fg.factors[0].toarray()) @ to_numpy(Fg.factors[1].toarray())
    print("  toarray vs product of toarrays", float(np.abs(Dg - prod).max()))
