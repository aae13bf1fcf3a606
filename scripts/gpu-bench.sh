#!/usr/bin/env bash
# GPU check for the fast SGD-SaI step paths, about 2 minutes on one H100 (at most 190 s):
#   1. the GPU tests of every SGD-SaI path (parity with the CPU loop, no host sync in a
#      steady step, transient memory below the largest tensor from the allocator's peak);
#   2. `sgdsai bench-step` for gpt2 (fp32) and the first 8 layers of llama2-7b (fp32 and bf16),
#      SGD-SaI's paths against AdamW fused and foreach, with the copy bandwidth of the same run.
# Results: $OUT (default ./out): bench-*.json, bench-*.txt, gpu-tests.txt, env.txt.
# PYTHON picks the interpreter (default .venv/bin/python, else python3); it needs CUDA torch,
# and Triton for the compiled path (without it "sgdsai" falls back to the fused path, and says so).
set -uo pipefail
OUT="${OUT:-out}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac  # relative to the caller's folder
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
status=0

"$PY" - <<'PYEOF' 2>&1 | tee "$OUT/env.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"{p.total_memory / 2**30:.1f} GiB")
try:
    import triton
    print("triton", triton.__version__)
except Exception as e:
    print("triton missing:", e)
PYEOF

echo "== GPU tests" | tee "$OUT/gpu-tests.txt"
timeout 70 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_optim_paths.py 2>&1 | tee -a "$OUT/gpu-tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

OPTS=(-o sgdsai -o sgdsai:fused -o sgdsai:foreach -o adamw-fused -o adamw-foreach)
bench() {  # name, then bench-step arguments
  local name=$1; shift
  echo "== bench-step $name" | tee "$OUT/bench-$name.txt"
  timeout 40 "$PY" -m sgdsai_cli bench-step --device cuda "${OPTS[@]}" --warmup 5 --steps 21 \
    --json "$OUT/bench-$name.json" "$@" 2>&1 | tee -a "$OUT/bench-$name.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}
bench gpt2-fp32 --model gpt2 --precision fp32
bench llama2-7b-8layers-fp32 --model llama2-7b --layers 8 --precision fp32
bench llama2-7b-8layers-bf16 --model llama2-7b --layers 8 --precision bf16
exit $status
