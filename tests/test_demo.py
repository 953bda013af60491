import io

from gpufact.__main__ import demo, main

import pytest


def test_demo_checks_operators_against_dense():
    out = io.StringIO()
    res = demo(n=256, batch=8, repeat=1, out=out)
    assert res["hadamard"]["err"] < 1e-5 and res["dft"]["err"] < 1e-5
    assert res["butterfly_dft"]["err"] < 1e-12
    assert "speed-up" in out.getvalue()


def test_cli_rejects_bad_size():
    with pytest.raises(ValueError, match="--n"):
        main(["demo", "--n", "1000"])
