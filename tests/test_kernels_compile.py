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
