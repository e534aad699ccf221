#!/usr/bin/env bash
# Show what a running `direct train` is doing, every INTERVAL seconds until killed (scripts/demo.sh starts it in the
# background): its latest "iter: N ... loss: L" line of DIRECT's log, or what it does after it (validation, saving).
#   scripts/train_progress.sh LOG LABEL [TOTAL_ITERATIONS] [INTERVAL_S]
set -uo pipefail
log=$1 label=$2 total=${3:-} interval=${4:-30}
start=$(date +%s)

# The line for the log's current state (also when the log does not exist yet).
status_line() {
  local elapsed=$(( $(date +%s) - start ))
  local clock
  clock=$(printf '%d:%02d' $((elapsed / 60)) $((elapsed % 60)))
  if [ ! -s "$log" ]; then
    echo "  [$label $clock] starting (building the datasets and the model)"
    return
  fi
  awk -v label="$label" -v clock="$clock" -v total="$total" '
    /[[:space:]]iter: [0-9]+/ {
      iter = ""; loss = ""; eta = ""; after = ""
      for (i = 1; i <= NF; i++) {
        if ($i == "iter:") iter = $(i + 1)
        if ($i == "loss:") loss = $(i + 1)
        if ($i == "eta:") eta = $(i + 1)
      }
      next
    }
    /Evaluating|volumes reconstructed/ { after = "validating" }
    /Saving checkpoint/ { after = "saving a checkpoint" }
    /Training completed/ { after = "done" }
    END {
      if (iter == "") { print "  [" label " " clock "] starting (first iteration not logged yet)"; exit }
      line = "  [" label " " clock "] iteration " iter (total != "" ? "/" total : "")
      if (loss != "") line = line ", loss " loss
      if (eta != "" && eta != "N/A") line = line ", eta " eta
      if (after != "") line = line " (" after ")"
      print line
    }' "$log"
}

while true; do
  sleep "$interval"
  status_line
done
