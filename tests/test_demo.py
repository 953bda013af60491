import importlib.util
import io

from gpufact.__main__ import demo, main

import pytest


def test_demo_checks_operators_against_dense():
    out = io.StringIO()
    res = demo(n=256, batch=8, repeat=1, out=out)
    assert res["hadamard"]["err"] < 1e-5 and res["dft"]["err"] < 1e-5
    assert res["butterfly_dft"]["err"] < 1e-12
    assert "speed-up" in out.getvalue()


def _usage_error(argv, capsys):
    """main(argv) exits with argparse's usage error (status 2); returns its stderr."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_cli_rejects_bad_size(capsys):
    assert "--n must be a power of two >= 4, got 1000" in _usage_error(["demo", "transforms", "--n", "1000"], capsys)
    assert "--batch must be >= 1" in _usage_error(["demo", "transforms", "--batch", "0"], capsys)


def test_cli_bad_values_are_usage_errors(capsys, monkeypatch, tmp_path):
    """Bad option values, options that do not fit the data and --plot without matplotlib are
    usage errors, reported before any fit (no traceback)."""
    assert "--clusters must be >= 1, got 0" in _usage_error(["demo", "--clusters", "0"], capsys)
    assert "--repeat must be >= 1" in _usage_error(["demo", "--repeat", "-2"], capsys)
    err = _usage_error(["demo", "--dataset", "digits", "--n-samples", "5"], capsys)
    assert "5 training samples (--n-samples) for 32 clusters (--clusters)" in err
    err = _usage_error(["demo", "--dataset", "digits", "--n-samples", "32"], capsys)  # as many as clusters
    assert "pass more samples than clusters" in err
    err = _usage_error(["demo", "--dataset", "digits", "--clusters", "4", "--sparsity", "9"], capsys)
    assert "--sparsity 9 is larger than min(clusters, features) = 4" in err
    if importlib.util.find_spec("matplotlib") is not None:  # --plot checked before the demo runs
        for path, msg in (("/nonexistent-dir/x.png", "does not exist"), ("x.unknownext", "cannot write .unknownext"),
                          (str(tmp_path), "give a file name"), ("", "give a file name")):
            assert msg in _usage_error(["demo", "--dataset", "digits", "--plot", path], capsys)
        from gpufact.__main__ import _plot_path

        assert _plot_path(str(tmp_path / "fig")) == str(tmp_path / "fig.png")  # matplotlib's default suffix
        assert _plot_path(str(tmp_path / "fig.svg")) == str(tmp_path / "fig.svg")
    import gpufact._demo_quickmeans as dq

    monkeypatch.setattr(dq, "demo_quickmeans", lambda **kw: pytest.fail("the demo ran"))
    for mod in ("matplotlib", "matplotlib.figure"):  # importing them: ImportError
        monkeypatch.setitem(__import__("sys").modules, mod, None)
    assert "--plot needs matplotlib" in _usage_error(["demo", "--dataset", "digits", "--plot", "x.png"], capsys)


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
    with pytest.raises(SystemExit):
        main(["demo", "transforms", "--plot", "x.png"])
    assert "--plot: not an option of the 'transforms'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "layers", "--n", "64"])
    assert "--n: not an option of the 'layers'" in capsys.readouterr().err
