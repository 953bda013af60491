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
        main(["demo", "transforms", "--n", "1000"])


def test_quickmeans_demo_digits(tmp_path):
    pytest.importorskip("matplotlib")
    from gpufact._demo_quickmeans import demo_quickmeans

    out = io.StringIO()
    png = tmp_path / "qm.png"
    res = demo_quickmeans(dataset="digits", n_clusters=8, sparsity=2, max_iter=3, palm_max_iter=10,
                          repeat=1, plot=str(png), out=out)
    text = out.getvalue()
    for key in ("objective ratio", "compression", "fit time", "predict 1 vector"):
        assert key in text
    # the objective ratio and compression are what they claim to be
    assert res["obj_ratio"] == pytest.approx(res["obj_qm"] / res["obj_km"])
    assert res["compression"] == pytest.approx(8 * 64 / res["nnz"])
    assert res["obj_ratio"] > 0.9 and png.stat().st_size > 0


def test_cli_options_belong_to_their_demo(capsys):
    # a usage error (exit status 2, the message on stderr), not a traceback
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--n", "256"])
    assert exc.value.code == 2
    assert "--n: not an option of the 'quickmeans' demo" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--clusters"):
        main(["demo", "--clusters", "0"])
    with pytest.raises(SystemExit):
        main(["demo", "transforms", "--plot", "x.png"])
    assert "--plot: not an option of the 'transforms'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "layers", "--n", "64"])
    assert "--n: not an option of the 'layers'" in capsys.readouterr().err
