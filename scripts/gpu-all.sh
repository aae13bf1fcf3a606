#!/usr/bin/env bash
# Everything that needs a GPU, in one call of about 7 minutes on one H100:
#   1. scripts/gpu-bench.sh   the GPU tests of SGD-SaI's step paths and `sgdsai bench-step`
#   2. scripts/gpu-check.sh   real `sgdsai profile --device cuda` runs, sampler overhead, pytest -m gpu
#   3. `sgdsai gsnr` on CUDA for gpt2
# Everything lands under $OUT (default out/). On a machine with no network the official
# sgd-sai package (a test oracle) can travel as a wheel in .whl/.
set -u
OUT=${OUT:-out}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac  # relative to the caller's folder
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
export PY=${PY:-python3} PYTHONPATH MPLBACKEND=Agg PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"

echo "== 1. step benchmark ($(( $(date +%s) - T0 )) s)"
OUT="$OUT/bench" PYTHON="$PY" timeout 170 bash scripts/gpu-bench.sh
echo "== 2. real runs ($(( $(date +%s) - T0 )) s)"
OUT="$OUT/check" BUDGET=${CHECK_BUDGET:-200} bash scripts/gpu-check.sh
echo "== 3. g-SNR on CUDA ($(( $(date +%s) - T0 )) s)"
timeout 60 "$PY" -m sgdsai_cli gsnr --model gpt2 --device cuda --steps 0,20 --json "$OUT/gsnr-gpt2-cuda.json" \
  > "$OUT/gsnr-gpt2-cuda.txt" 2>&1; echo "gsnr rc=$?"; tail -5 "$OUT/gsnr-gpt2-cuda.txt"
echo "== done in $(( $(date +%s) - T0 )) s"
