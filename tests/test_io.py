"""Save/load round trips and refusal of corrupt or foreign files."""
import numpy as np
import pytest
import scipy.sparse as sps

import gpufact
from gpufact import FactorProduct, transforms


def _all_kinds():
    rng = np.random.default_rng(0)
    return FactorProduct([
        gpufact.KSFactor(rng.standard_normal((2, 4, 2, 2)).astype(np.float32)),
        gpufact.CSRFactor(sps.random(16, 10, density=0.3, random_state=0).astype(np.float32)),
        gpufact.DenseFactor(rng.standard_normal((10, 10)).astype(np.float32)),
        gpufact.DiagFactor(rng.standard_normal(10).astype(np.float32)),
        gpufact.PermFactor(rng.permutation(10), dtype=np.float32),
    ])


@pytest.mark.parametrize("make", [_all_kinds, lambda: transforms.dft(64, dtype=np.complex64),
                                  lambda: transforms.hadamard(32)])
def test_round_trip(tmp_path, make):
    F = make()
    path = tmp_path / "f.npz"
    F.save(path)
    G = gpufact.load(path)
    assert [f.kind for f in G.factors] == [f.kind for f in F.factors]
    assert G.dtype == F.dtype and G.shape == F.shape and G.nnz == F.nnz
    np.testing.assert_array_equal(G.toarray(), F.toarray())


def test_foreign_and_corrupt_files(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.ones(3))
    with pytest.raises(ValueError, match="path"):
        gpufact.load(p)
    q = tmp_path / "junk.npz"
    q.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match="path"):
        gpufact.load(q)
    r = tmp_path / "arr.npy"
    np.save(r, np.ones(3))
    with pytest.raises(ValueError, match="path"):
        gpufact.load(r)
    # right tag, broken content
    F = _all_kinds()
    good = tmp_path / "good.npz"
    F.save(good)
    with np.load(good) as z:
        d = dict(z)
    for mutate in [lambda d: d.pop("f1.indptr"),
                   lambda d: d.__setitem__("f0.kind", np.array("nope")),
                   lambda d: d.__setitem__("__version__", np.array(99)),
                   lambda d: d.__setitem__("f1.indices", d["f1.indices"] + 100),
                   lambda d: d.__setitem__("f4.perm", np.zeros(10, dtype=np.int64)),
                   lambda d: d.__setitem__("f2.matrix", np.full((10, 10), np.nan, dtype=np.float32)),
                   lambda d: d.__setitem__("f3.diag", np.ones(3, dtype=np.float32))]:
        dd = dict(d)
        mutate(dd)
        bad = tmp_path / "bad.npz"
        np.savez(bad, **dd)
        with pytest.raises(ValueError, match="path"):
            gpufact.load(bad)
    with pytest.raises(FileNotFoundError):
        gpufact.load(tmp_path / "missing.npz")
    with pytest.raises(TypeError, match="path"):
        gpufact.load(3)
    with pytest.raises(TypeError, match="FactorProduct"):
        gpufact.io.save(np.ones(3), tmp_path / "z.npz")


def test_object_arrays_are_not_unpickled(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, __format__=np.array("gpufact.FactorProduct"), __version__=np.array(1),
             n_factors=np.array(1), **{"f0.kind": np.array("ks"), "f0.blocks": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="path"):
        gpufact.load(p)
