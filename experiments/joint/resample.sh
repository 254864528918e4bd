#!/usr/bin/env bash
# Sampling-time options on a trained cascade, without retraining: copy RUN's calibrator and
# refiner into NAME, then sample and evaluate there with the given overrides.
#   experiments/joint/resample.sh DATA_DIR RUN NAME [key=value ...]
# e.g. experiments/joint/resample.sh data/devA runs/devA-reg8 runs/devA-reg8-ind sample.independent_regions=true
set -euo pipefail
data=$1; run=$2; name=$3; shift 3
recipe=${RECIPE:-recipes/toy.yaml}
carseg=${CARSEG:-.venv/bin/carseg}
common=("data.dir=$data" "run_dir=$name")
mkdir -p "$name"; rm -rf "$name/calibrator" "$name/refiner"
cp -r "$run/calibrator" "$run/refiner" "$name/"
t1=$(date +%s)
$carseg sample "$recipe" "${common[@]}" "$@" --overwrite --quiet
$carseg evaluate "$recipe" "${common[@]}" "$@" --overwrite --quiet
t2=$(date +%s)
echo "$(basename "$name"): sample+evaluate $((t2 - t1)) s" | tee "$name/wall_time.txt"
