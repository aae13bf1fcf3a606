#!/usr/bin/env bash
# Follow-up GPU pass (about 3 minutes on an H100): the step-path GPU tests, bench-step with
# SGD-SaI's "auto" choice, and the real runs gpu-check.sh had no time left for.
set -u
OUT=${OUT:-out}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac  # relative to the caller's folder
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
timeout 90 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_optim_paths.py 2>&1 | tail -8
B=(bench-step --device cuda -o sgdsai -o sgdsai:compiled -o sgdsai:foreach -o adamw-fused -o adamw-foreach
   --warmup 5 --steps 21)
timeout 60 python3 -m sgdsai_cli "${B[@]}" --model gpt2 --json "$OUT/bench-gpt2-fp32.json"
timeout 60 python3 -m sgdsai_cli "${B[@]}" --model llama2-7b --layers 8 --precision bf16 \
  --json "$OUT/bench-llama2-7b-8layers-bf16.json"
P=(profile --device cuda --quiet -o sgdsai -o adamw)
timeout 90 python3 -m sgdsai_cli "${P[@]}" --model llama2-7b --precision bf16 --batch-size 1 --seq-len 512 \
  --warmup 2 --steps 3 --json "$OUT/profile-llama2-7b-bf16.json" 2>&1 | head -40
timeout 80 python3 -m sgdsai_cli "${P[@]}" --model gpt2-xl --precision bf16 --batch-size 2 --seq-len 512 \
  --warmup 3 --steps 5 --json "$OUT/profile-gpt2-xl-bf16.json" 2>&1 | head -40
