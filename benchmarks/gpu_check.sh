#!/usr/bin/env bash
# One device run: GPU tests, then the GPU benchmark. Expects array-api-compat as a wheel in
# .whl/ when the machine lacks it (pip download --no-deps array-api-compat -d .whl).
# Output under $OUT (or ./gpu_out).
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu_info.txt"
timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tail -60 > "$OUT/gpu_tests.log"; tail -5 "$OUT/gpu_tests.log"
timeout 200 python3 benchmarks/gpu_bench.py "$OUT/gpu_bench.md" 2>&1 | tail -60
