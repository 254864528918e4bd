#!/usr/bin/env bash
# Run the whole cascade of a recipe into runs/<name> and print its wall times.
#   scripts/cascade.sh RECIPE NAME [key=value ...]
# With REUSE_CALIBRATOR=runs/other, F's trained weights are copied from that run instead of
# trained again (controls then differ from the method only in G); its post-training refit
# (calibrator.recalibrate) is redone with this recipe.
set -euo pipefail
recipe=$1; name=$2; shift 2
carseg=${CARSEG:-.venv/bin/carseg}
run=runs/$name
t0=$(date +%s)
if [ -n "${REUSE_CALIBRATOR:-}" ]; then
  mkdir -p "$run"; rm -rf "$run/calibrator"; cp -r "$REUSE_CALIBRATOR/calibrator" "$run/"
  # no training steps (the copy is finished), but F's post-training work (a class-bias
  # refit, calibrator.recalibrate) follows this recipe: model.safetensors from last.safetensors
  $carseg train-calibrator "$recipe" run_dir="$run" "$@" --resume --quiet
else
  $carseg train-calibrator "$recipe" run_dir="$run" "$@" --overwrite --quiet
fi
t1=$(date +%s)
$carseg train-refiner "$recipe" run_dir="$run" "$@" --overwrite --quiet
t2=$(date +%s)
$carseg sample "$recipe" run_dir="$run" "$@" --overwrite --quiet
$carseg evaluate "$recipe" run_dir="$run" "$@" --overwrite --quiet
t3=$(date +%s)
echo "$name: train-calibrator $((t1 - t0)) s, train-refiner $((t2 - t1)) s, sample+evaluate $((t3 - t2)) s, total $((t3 - t0)) s" | tee "$run/wall_time.txt"
