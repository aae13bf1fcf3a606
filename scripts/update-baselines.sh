#!/usr/bin/env bash
# Regenerate the committed memory baselines, profiles/baselines/<preset>-<precision>.json:
# exact meta-device sizing (plus the deterministic fake-tensor estimate) of every preset in fp32 and
# bf16, with sgdsai and adamw, batch 1, sequence 512 (128 for the tiny presets).
#
#   scripts/update-baselines.sh              # all of them
#   scripts/update-baselines.sh gpt2 vit-b16 # only these presets
#
# Run it when a change is *meant* to move memory, review `git diff profiles/baselines`, commit.
# .ci/gate re-sizes each baseline's spec and fails on any difference (tolerance 0).
set -euo pipefail
cd "$(dirname "$0")/.."
SGDSAI=${SGDSAI:-.venv/bin/sgdsai}
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-2}
mkdir -p profiles/baselines

if [ $# -gt 0 ]; then
  presets=("$@")
else
  read -r -a presets <<<"$("$PY" -c 'from sgdsai_cli.models import PRESETS; print(" ".join(PRESETS))')"
fi

one() {
  local model=$1 precision=$2 seq=512
  case $model in tiny-*) seq=128 ;; esac
  local out=profiles/baselines/$model-$precision.json
  # --update-baseline writes the result atomically to --baseline
  "$SGDSAI" profile --model "$model" --precision "$precision" --device meta --optimizer sgdsai --optimizer adamw \
    --batch-size 1 --seq-len "$seq" --baseline "$out" --update-baseline --quiet --format json >/dev/null
  echo "wrote $out"
}

status=0
for model in "${presets[@]}"; do
  for precision in fp32 bf16; do
    one "$model" "$precision" &
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || status=1; done
  done
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || status=1; done
exit $status
