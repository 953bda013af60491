"""Targeted checks of the PALM -> FactorProduct path on CuPy (debugging aid)."""
import cupy as cp
import numpy as np

from gpufact import CSRFactor, FactorProduct, proj, to_numpy
from gpufact.factorize import palm4msa

rng = np.random.default_rng(4)
for dt in (np.float64, np.complex128):
    M = rng.standard_normal((32, 48)) * (rng.random((32, 48)) < 0.2)
    M = cp.asarray(M.astype(dt))
    f = CSRFactor(M)
    print(dt.__name__, "csr toarray", float(cp.abs(f.toarray() - M).max()),
          "apply eye", float(cp.abs(f @ cp.eye(48, dtype=dt) - M).max()),
          "product", float(cp.abs(FactorProduct([f]).toarray() - M).max()))
    A = cp.asarray(rng.standard_normal((32, 48)).astype(dt))
    cons = [proj.splincol((32, 32), 6), proj.splincol((32, 48), 6)]
    F, h, st = palm4msa(A, cons, max_iter=5, _return_state=True)
    P = st.lam * (st.S[0] @ st.S[1])
    print("  lam", complex(st.lam), "state err", float(cp.linalg.norm(A - P) / cp.linalg.norm(A)), "hist", h[-1])
    for j, (fj, Sj) in enumerate(zip(F.factors, st.S)):
        print("  factor", j, fj.kind, "vs state", float(cp.abs(fj.toarray() - (Sj * st.lam if j == 0 else Sj)).max()))
    print("  product err", float(cp.linalg.norm(F.toarray() - A) / cp.linalg.norm(A)))
