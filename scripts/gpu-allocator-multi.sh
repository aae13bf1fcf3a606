#!/usr/bin/env bash
# GPU pass for the caching-allocator model and the multi-tensor kernel (issue 15), about 6 minutes
# on an H100/H200 (BUDGET, default 360 s), so that 15 minutes of device time leave room for a rerun.
#
#   OUT=out bash scripts/gpu-allocator-multi.sh                 # everything under $OUT
#   STEPS="llama-bf16-max llama-bf16-max1" OUT=out bash scripts/gpu-allocator-multi.sh   # a rerun of some
#
# Most important first (a step that would pass the budget is skipped and said so):
#  1. pytest -m gpu on the step paths (the multi-tensor kernel's parity, no sync, no transient);
#  2. bench-step gpt2 fp32: SGD-SaI auto (the multi-tensor kernel) vs fused AdamW, with the copy
#     bandwidth of the same run;
#  3. llama2-7b bf16 batch 1 x 512, SGD-SaI and AdamW: predicted vs measured reserved and NVML peaks
#     (every CUDA profile carries the estimate: memory.details.estimate.reserved_peak_bytes and
#     estimate_error_pct.reserved_peak_bytes);
#  4. the planner's max batch for llama2-7b bf16 SGD-SaI on this card, then real runs at max and max+1
#     (max must run, max+1 shows the margin);
#  5. gpt2-xl bf16 batch 2 with expandable_segments:True (off: step 8 and reports/gpu-h100/run2);
#  6. bench-step llama2-7b 8 layers bf16 and fp32;
#  7. llama2-7b fp32 batch 1 x 256 (AdamW runs out of memory on 80 GB: status oom);
#  8. llama2-7b bf16 batch 1 with expandable_segments:True; gpt2-xl bf16 default; fp32 max / max+1.
# Then summary.txt: per run predicted vs measured reserved, NVML peak, context (NVML - reserved).
set +e
set -u
OUT=${OUT:-out}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac  # relative to the caller's folder
cd "$(dirname "$0")/.."
mkdir -p "$OUT/logs"
T0=$(date +%s)
BUDGET=${BUDGET:-360}
STEPS=${STEPS:-}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg PYTHONUNBUFFERED=1
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  "$PY" -c "import triton; print('triton', triton.__version__)" 2>&1
  nvidia-smi --query-gpu=name,memory.total,driver_version,mig.mode.current --format=csv 2>&1
} | tee "$OUT/logs/env.log"
CARD=$("$PY" - <<'EOF'
import torch
name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
total = torch.cuda.get_device_properties(0).total_memory if name else 0
print("h100-80gb" if "H100" in name else "h200-141gb" if "H200" in name else f"custom:{total}B")
EOF
)
echo "planner card: $CARD" | tee -a "$OUT/logs/env.log"

elapsed() { echo $(( $(date +%s) - T0 )); }
run() {  # run NAME TIMEOUT COMMAND...: time-boxed, logged, never fatal; STEPS selects names
  local name=$1 limit=$2; shift 2
  if [ -n "$STEPS" ] && [[ " $STEPS " != *" $name "* ]]; then return 0; fi
  local left=$(( BUDGET - $(elapsed) - 10 ))
  if [ "$left" -lt 25 ]; then
    printf '%-22s skipped (budget of %ss spent)\n' "$name" "$BUDGET" | tee -a "$OUT/logs/steps.log"; return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
  printf '%-22s rc=%-3s %4ss  (t=%ss)\n' "$name" "$?" "$(( $(date +%s) - t ))" "$(elapsed)" | tee -a "$OUT/logs/steps.log"
}
profile() {  # profile NAME TIMEOUT ALLOC_CONF MODEL PRECISION [options]
  local name=$1 limit=$2 conf=$3 model=$4 prec=$5; shift 5
  run "$name" "$limit" env PYTORCH_CUDA_ALLOC_CONF="$conf" "$PY" -m sgdsai_cli profile --model "$model" \
    --precision "$prec" --device cuda --quiet --json "$OUT/$name.json" "$@"
}
max_batch() {  # max_batch PRECISION SEQ: the planner's max batch for SGD-SaI on this card
  "$PY" -m sgdsai_cli plan --model llama2-7b --precision "$1" --seq-len "$2" --gpu "$CARD" -o sgdsai \
    --quiet --json "$OUT/plan-llama2-7b-$1.json" >/dev/null 2>&1
  "$PY" -c "import json,sys; r=json.load(open(sys.argv[1]))['rows'][0]; print(r.get('max_batch_size') or 0)" \
    "$OUT/plan-llama2-7b-$1.json" 2>/dev/null || echo 0
}
ES=expandable_segments:True
B=(bench-step --device cuda -o sgdsai -o sgdsai:compiled -o sgdsai:foreach -o adamw-fused --warmup 5 --steps 21)

run pytest-gpu 90 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_optim_paths.py tests/test_triton_multi.py
run bench-gpt2-fp32 60 "$PY" -m sgdsai_cli "${B[@]}" --model gpt2 --json "$OUT/bench-gpt2-fp32.json"
profile llama-bf16-b1 100 "" llama2-7b bf16 -o sgdsai -o adamw --batch-size 1 --seq-len 512 --warmup 2 --steps 3
MAXB=$(max_batch bf16 512)
echo "planner max batch, llama2-7b bf16 x 512, sgdsai, $CARD: $MAXB" | tee -a "$OUT/logs/steps.log"
if [ "${MAXB:-0}" -gt 0 ]; then
  profile llama-bf16-max 90 "" llama2-7b bf16 -o sgdsai --batch-size "$MAXB" --seq-len 512 --warmup 1 --steps 2
  profile llama-bf16-max1 90 "" llama2-7b bf16 -o sgdsai --batch-size $((MAXB + 1)) --seq-len 512 --warmup 1 --steps 2
fi
profile gpt2xl-bf16-es 60 "$ES" gpt2-xl bf16 -o sgdsai -o adamw --batch-size 2 --seq-len 512 --warmup 3 --steps 5
run bench-llama8-bf16 60 "$PY" -m sgdsai_cli "${B[@]}" --model llama2-7b --layers 8 --precision bf16 \
  --json "$OUT/bench-llama2-7b-8layers-bf16.json"
run bench-llama8-fp32 60 "$PY" -m sgdsai_cli "${B[@]}" --model llama2-7b --layers 8 --precision fp32 \
  --json "$OUT/bench-llama2-7b-8layers-fp32.json"
profile llama-fp32-b1 80 "" llama2-7b fp32 -o sgdsai -o adamw --batch-size 1 --seq-len 256 --warmup 2 --steps 2
profile llama-bf16-b1-es 100 "$ES" llama2-7b bf16 -o sgdsai -o adamw --batch-size 1 --seq-len 512 --warmup 2 --steps 3
profile gpt2xl-bf16 60 "" gpt2-xl bf16 -o sgdsai -o adamw --batch-size 2 --seq-len 512 --warmup 3 --steps 5
if [ -z "$STEPS" ] || [[ " $STEPS " == *" llama-fp32-max"* ]]; then
  MAXF=$(max_batch fp32 256)
  echo "planner max batch, llama2-7b fp32 x 256, sgdsai, $CARD: $MAXF" | tee -a "$OUT/logs/steps.log"
  if [ "${MAXF:-0}" -gt 0 ]; then
    profile llama-fp32-max 80 "" llama2-7b fp32 -o sgdsai --batch-size "$MAXF" --seq-len 256 --warmup 1 --steps 2
    profile llama-fp32-max1 80 "" llama2-7b fp32 -o sgdsai --batch-size $((MAXF + 1)) --seq-len 256 --warmup 1 --steps 2
  fi
fi

"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
G = 2**30
f = lambda b: "-" if b is None else f"{b / G:.3f}"
print("run | model prec batch x seq | optimizer impl | status | alloc conf | reserved measured / predicted (err %) "
      "| allocated measured / estimated | NVML peak | context (NVML - reserved)")
for p in sorted(out.glob("*.json")):
    try:
        doc = json.loads(p.read_text())
    except Exception as e:
        print(f"{p.name}: unreadable ({e})")
        continue
    if doc.get("kind") != "profile":
        continue
    s = doc["spec"]
    for r in doc.get("runs", []):
        m = r.get("memory") or {}
        d = m.get("details") or {}
        est = d.get("estimate") or {}
        err = (d.get("estimate_error_pct") or {}).get("reserved_peak_bytes")
        resv, nvml = m.get("peak_reserved_bytes"), m.get("nvml_used_peak_bytes")
        conf = "expandable" if "-es" in p.stem else "default"
        print(f"{p.stem} | {s['model']} {s['precision']} {s['batch_size']} x {s['seq_len']} | {r['optimizer']} "
              f"{r.get('impl')} | {r['status']} | {conf} | {f(resv)} / {f(est.get('reserved_peak_bytes'))} "
              f"({'-' if err is None else f'{err:+.2f}'}) | {f(m.get('peak_allocated_bytes'))} / "
              f"{f(est.get('peak_bytes'))} | {f(nvml)} | {'-' if None in (resv, nvml) else nvml - resv}")
        if r["status"] != "ok":
            print(f"    {r.get('error')}")
for p in sorted(out.glob("bench-*.json")):
    try:
        doc = json.loads(p.read_text())
    except Exception:
        continue
    copy = (doc.get("copy") or {}).get("gb_per_s")
    print(f"{p.stem}: copy {copy and round(copy)} GB/s")
    for r in doc.get("rows", []):
        print(f"    {r['optimizer']:14} {r.get('impl') or '-':9} {r['status']:5} step p50 "
              f"{(r.get('step_ms') or {}).get('p50')} ms, ratio to fused AdamW {r.get('ratio_to_adamw_fused')} "
              f"{r.get('ratio_range')}, bandwidth fraction {r.get('bandwidth_fraction')}")
EOF
echo "== steps"; cat "$OUT/logs/steps.log"
tail -n 5 "$OUT/logs/pytest-gpu.log" 2>/dev/null
echo "done in $(elapsed) s; logs in $OUT/logs"
