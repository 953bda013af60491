"""Every CUDA source compiles with nvcc (where nvcc exists), so CUDA errors surface without a GPU."""
import shutil
import subprocess
from pathlib import Path

import pytest

KERNELS = sorted((Path(__file__).resolve().parent.parent / "kernels").glob("*.cu"))


def test_there_are_kernels():
    assert KERNELS, "kernels/*.cu not found"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("src", KERNELS, ids=lambda p: p.name)
def test_nvcc_compiles(src, tmp_path):
    out = tmp_path / (src.stem + ".ptx")
    res = subprocess.run(["nvcc", "-arch=sm_90", "-std=c++17", "--ptx", "-o", str(out), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    ptx = out.read_text()
    # every launcher name expression has an explicit instantiation that nvcc emitted
    from gpufact._kernels.cuda import _SOURCES

    assert ptx.count(".entry") == len(_SOURCES[src.name])


def test_kernel_source_is_found_by_the_launcher():
    from gpufact._kernels.cuda import kernel_source_path

    for src in KERNELS:
        assert kernel_source_path(src.name).read_text() == src.read_text()


def _cupy_nvrtc():
    """CuPy's NVRTC front end, where CuPy is installed (no GPU needed)."""
    pytest.importorskip("cupy")
    try:
        from cupy._core.core import assemble_cupy_compiler_options
        from cupy.cuda import compiler

        compiler._get_arch_for_options_for_nvrtc  # noqa: B018 (present in CuPy 13-14)
    except (ImportError, AttributeError):
        pytest.skip("this CuPy version's compiler internals differ")
    return compiler, assemble_cupy_compiler_options


@pytest.mark.parametrize("arch", ["90", "80"])
@pytest.mark.parametrize("src", KERNELS, ids=lambda p: p.name)
def test_nvrtc_compiles_as_cupy_rawmodule(src, arch, monkeypatch):
    """Where CuPy and NVRTC are installed, GPU or not: the source compiles as the launcher's
    RawModule compiles it (CuPy's headers and options, its complex type, NVRTC_OPTIONS, every
    name expression), for an H100 (sm_90) and an A100 (sm_80). nvcc above checks the same
    code with libcu++'s complex; this is the path a GPU run takes."""
    compiler, assemble = _cupy_nvrtc()
    from gpufact._kernels.cuda import NVRTC_OPTIONS, _SOURCES

    # the architecture is given, not read from a device
    monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc", lambda a=None: (f"-arch=sm_{arch}", "cubin"))
    exprs = list(_SOURCES[src.name])
    try:
        out = compiler.compile_using_nvrtc(src.read_text(), options=assemble(NVRTC_OPTIONS), arch=arch,
                                           name_expressions=exprs)
    except compiler.CompileException:
        raise
    except Exception as e:  # NVRTC library absent (CuPy without the [ctk] extra)
        if "nvrtc" in str(e).lower():
            pytest.skip(f"NVRTC not available: {e}")
        raise
    binary, mapping = out[0], out[1]
    assert sorted(mapping) == sorted(exprs) and len(binary) > 0
