#!/usr/bin/env bash
# GPU check: the real-run paths end to end on one CUDA device, in about 4-5 minutes on an H100.
#
#   OUT=out bash scripts/gpu-check.sh        # everything under $OUT (default: out/, relative to the
#                                            # folder it is called from)
#   BUDGET=300 OUT=out bash scripts/gpu-check.sh   # stop starting steps after ~300 s
#
# 1. sgdsai profile --device cuda for gpt2 and gpt2-xl in fp32 and bf16 with sgdsai and adamw
#    (JSON, figures, samples CSVs; a memory snapshot for gpt2 bf16);
# 2. llama2-7b bf16 (fits an 80 GB card) and llama2-7b fp32, where AdamW's model states alone are
#    16 B/param = 107.8 GB: an out-of-memory that must come back as status "oom" with the estimate
#    beside it, while the other optimizer still runs;
# 3. benchmarks/sampler_overhead.py on gpt2 (step latency with the sampler on and off; run after
#    the gpt2 profiles);
# 4. pytest -m gpu (last);
# then a summary table of every result. Each command is time-boxed; a failing piece is logged
# and the script goes on (set +e). Logs: $OUT/logs/*.log.
# Exit status: 0 every step that ran passed (rc 0), 1 some failed, 2 every one failed (or none ran:
# no CUDA, the budget spent before the first).
set +e
set -u
OUT=${OUT:-out}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac  # relative to the caller's folder
cd "$(dirname "$0")/.."
mkdir -p "$OUT/logs"
T0=$(date +%s)

PY=${PY:-}
if [ -z "$PY" ]; then
  for cand in .venv/bin/python python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
      PY=$cand; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "gpu-check: no Python with a CUDA-enabled torch found (set PY=...)" | tee "$OUT/logs/setup.log"
  PY=python3
fi
# the package must import: install it in place if needed (no network needed for an editable install)
if ! "$PY" -c "import sgdsai_cli, typer, rich, pandas, matplotlib" 2>/dev/null; then
  "$PY" -m pip install -q -e . >>"$OUT/logs/setup.log" 2>&1
fi
{
  echo "python: $("$PY" -c 'import sys; print(sys.version.split()[0])')"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,mig.mode.current --format=csv 2>&1
} | tee "$OUT/logs/env.log"

elapsed() { echo $(( $(date +%s) - T0 )); }

# run NAME TIMEOUT_S COMMAND...: time-boxed, logged, never fatal. The whole script keeps within
# BUDGET seconds (default 330): a step gets at most what is left, and none starts with < 25 s left,
# so the summary is always printed.
BUDGET=${BUDGET:-330}
run() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - $(elapsed) - 10 ))
  if [ "$left" -lt 25 ]; then
    printf '%-28s skipped (budget of %ss spent)\n' "$name" "$BUDGET" | tee -a "$OUT/logs/steps.log"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t=$(date +%s)
  timeout --signal=INT --kill-after=15 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
  local rc=$?
  printf '%-28s rc=%-3s %4ss  (t=%ss)\n' "$name" "$rc" "$(( $(date +%s) - t ))" "$(elapsed)" | tee -a "$OUT/logs/steps.log"
  if [ "$rc" -eq 0 ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
  return 0
}
PASSED=0
FAILED=0

profile() {  # profile NAME TIMEOUT MODEL PRECISION [extra options]
  local name=$1 limit=$2 model=$3 prec=$4; shift 4
  run "$name" "$limit" "$PY" -m sgdsai_cli profile --model "$model" --precision "$prec" --device cuda \
    --optimizer sgdsai --optimizer adamw --quiet --out "$OUT/$name" --json "$OUT/$name.json" "$@"
}

# most important first: if time runs short the last steps are the ones skipped
profile gpt2-bf16       90 gpt2      bf16 --batch-size 4 --seq-len 512 --warmup 3 --steps 10 --snapshot
profile gpt2-fp32       90 gpt2      fp32 --batch-size 4 --seq-len 512 --warmup 3 --steps 10
run sampler-overhead    90 "$PY" benchmarks/sampler_overhead.py --model gpt2 --device cuda --batch-size 4 \
  --seq-len 512 --rounds 12 --steps 10 --interval-ms 10 --json "$OUT/sampler-overhead.json"
profile llama2-7b-fp32 110 llama2-7b fp32 --batch-size 1 --seq-len 256 --warmup 2 --steps 2
run pytest-gpu         100 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests
profile gpt2-xl-bf16   100 gpt2-xl   bf16 --batch-size 2 --seq-len 512 --warmup 3 --steps 5
profile gpt2-xl-fp32   100 gpt2-xl   fp32 --batch-size 2 --seq-len 512 --warmup 3 --steps 5
profile llama2-7b-bf16 110 llama2-7b bf16 --batch-size 1 --seq-len 512 --warmup 2 --steps 3

echo
echo "== summary (GiB; ms; estimate error % of the peak) — $(elapsed) s in all"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
G = 2**30
fmt = lambda b: "-" if b is None else f"{b / G:.2f}"
rows = []
for p in sorted(out.glob("*.json")):
    if p.name == "sampler-overhead.json":
        continue
    try:
        doc = json.loads(p.read_text())
    except Exception as e:
        print(f"{p.name}: unreadable ({e})")
        continue
    dev = (doc.get("environment", {}).get("device") or {}).get("name")
    for r in doc.get("runs", []):
        m = r.get("memory") or {}
        lat = (r.get("latency_ms") or {}).get("step") or {}
        err = ((m.get("details") or {}).get("estimate_error_pct") or {}).get("peak_bytes")
        rows.append((doc["spec"]["model"], doc["spec"]["precision"], r["optimizer"], r.get("impl") or "-",
                     r["status"], fmt(m.get("state_bytes")), fmt(m.get("peak_allocated_bytes")),
                     fmt(m.get("peak_reserved_bytes")), fmt(m.get("nvml_used_peak_bytes")),
                     fmt(m.get("estimated_peak_bytes")), "-" if err is None else f"{err:+.1f}",
                     "-" if not lat else f"{lat['p50']:.1f}", dev or "-"))
head = ("model", "prec", "optimizer", "impl", "status", "state", "peak_alloc", "peak_resv", "nvml_peak",
        "estimate", "est_err%", "step_p50", "device")
w = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
for row in [head, *rows]:
    print("  ".join(str(x).ljust(n) for x, n in zip(row, w)))
for p in sorted(out.glob("*.json")):
    try:
        doc = json.loads(p.read_text())
    except Exception:
        continue
    for r in doc.get("runs", []):
        if r.get("status") != "ok":
            print(f"  {doc['spec']['model']} {doc['spec']['precision']} {r['optimizer']}: {r['status']}: {r.get('error')}")
so = out / "sampler-overhead.json"
if so.exists():
    s = json.loads(so.read_text())
    print(f"sampler overhead ({s['model']} {s['precision']} {s['optimizer']}, {s['device']}, every "
          f"{s['interval_ms']:g} ms): step p50 on {s['step_ms_p50_on']:.2f} ms / off {s['step_ms_p50_off']:.2f} ms"
          f" = {s['ratio_on_off']:.4f}; per-pair median {s.get('ratio_per_pair_median')}; wall "
          f"{s['wall_ratio_on_off']:.4f}; overhead {s.get('overhead_pct', 0):+.2f} %")
EOF
echo "== steps"
cat "$OUT/logs/steps.log"
tail -n 3 "$OUT/logs/pytest-gpu.log" 2>/dev/null
echo "gpu-check done in $(elapsed) s; logs in $OUT/logs; $PASSED step(s) passed, $FAILED failed"
if [ "$PASSED" -eq 0 ]; then exit 2; fi
if [ "$FAILED" -gt 0 ]; then exit 1; fi
exit 0
