#!/usr/bin/env bash
# `make demo`: the whole product on the bundled brain data, on a CPU, with the real `direct` and `smug` commands.
#   1. simulate the demo data (smug data demo)
#   2. pre-train the DIDN denoiser, fine-tune MoDL and SMUG from it (direct train)
#   3. print the validation metrics they reached next to zero-filled (smug metrics)
#   4. evaluate MoDL and SMUG under the paper's robustness protocol (smug evaluate) and print a short summary
# Each step is skipped when its outputs exist; an interrupted training resumes. While `direct train` runs, its
# iteration and loss are shown every DEMO_PROGRESS_S seconds (30; scripts/train_progress.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA=${DEMO_DATA:-data/demo}
# Fixed: the fine-tuning configs in projects/demo/ load the pre-trained denoiser from runs/demo.
RUNS=runs/demo
export PYTHONUNBUFFERED=1

banner() { printf '\n=== %s\n' "$*"; }
elapsed() { echo "--- $1 took $(( $(date +%s) - $2 )) s"; }

banner "1/4 demo data -> $DATA"
if [ -f "$DATA/demo_manifest.json" ]; then
  echo "exists: $DATA (delete it to simulate again)"
else
  "$BIN/smug" data demo --output-dir "$DATA"
fi

WATCHER=
stop_watcher() {  # the progress display of the running training, if any
  if [ -n "$WATCHER" ]; then
    kill "$WATCHER" 2>/dev/null || true
    wait "$WATCHER" 2>/dev/null || true
    WATCHER=
  fi
}
trap stop_watcher EXIT

train() {  # name of a projects/demo YAML
  local name=$1 start
  start=$(date +%s)
  local run="$RUNS/$name"
  if [ -f "$run/.complete" ]; then
    echo "exists: $run"
    return
  fi
  local resume=()
  [ -d "$run/$name" ] && resume=(--resume)
  local total
  total=$(awk '/^ *num_iterations:/ {print $2; exit}' "projects/demo/$name.yaml")
  echo "direct train $run --cfg projects/demo/$name.yaml: $total iterations (log: $run/$name/log_0_0.txt)"
  bash scripts/train_progress.sh "$run/$name/log_0_0.txt" "$name" "$total" "${DEMO_PROGRESS_S:-30}" &
  WATCHER=$!
  local status=0
  "$BIN/direct" train "$run" --cfg "projects/demo/$name.yaml" --training-root "$DATA/train" \
    --validation-root "$DATA/val" --device cpu --num-workers 0 "${resume[@]}" > "$run.log" 2>&1 || status=$?
  stop_watcher
  if [ "$status" -ne 0 ]; then
    tail -n 30 "$run.log"; echo "direct train failed: see $run.log"; exit 1
  fi
  touch "$run/.complete"
  elapsed "$name" "$start"
}

banner "2/4 direct train: DIDN pre-training, then MoDL and SMUG fine-tuning"
mkdir -p "$RUNS"
for name in didn_pretrain modl smug; do train "$name"; done

banner "3/4 validation metrics (4x, validation split)"
"$BIN/smug" metrics "$RUNS/modl" "$RUNS/smug" --zero-filled projects/demo/modl.yaml "$DATA/val"

banner "4/4 robustness of MoDL and SMUG on 4 test slices (protocol paper; make reproduce does all)"
checkpoint() { echo "$RUNS/$1/$1/model_$(cat "$RUNS/$1/$1/last_model.txt").pt"; }
"$BIN/smug" evaluate \
  --model "MoDL=projects/demo/modl.yaml:$(checkpoint modl)" \
  --model "SMUG=projects/demo/smug.yaml:$(checkpoint smug)" \
  --reference MoDL --protocol paper --data-root "$DATA/test" \
  --output-dir "$RUNS/robustness" --max-slices 4 --resume
echo
"$BIN/python" scripts/demo_summary.py "$RUNS/robustness/robustness.json"
