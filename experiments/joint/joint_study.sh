#!/usr/bin/env bash
# One G variant on a dataset folder, sharing its F (copied from F_RUN): train-refiner,
# sample, evaluate (train-refiner, sample and evaluate read only data.dir).
#   experiments/joint/joint_study.sh DATA_DIR F_RUN NAME [key=value ...]
# e.g. experiments/joint/joint_study.sh data/devA runs/devA runs/devA-joint refiner.w_joint=10
set -euo pipefail
data=$1; f_run=$2; name=$3; shift 3
recipe=${RECIPE:-recipes/toy.yaml}
carseg=${CARSEG:-.venv/bin/carseg}
common=("data.dir=$data" "run_dir=$name")
mkdir -p "$name"; rm -rf "$name/calibrator"; cp -r "$f_run/calibrator" "$name/"
t1=$(date +%s)
$carseg train-refiner "$recipe" "${common[@]}" "$@" --overwrite --quiet
t2=$(date +%s)
$carseg sample "$recipe" "${common[@]}" "$@" --overwrite --quiet
$carseg evaluate "$recipe" "${common[@]}" "$@" --overwrite --quiet
t3=$(date +%s)
echo "$(basename "$name"): train-refiner $((t2 - t1)) s, sample+evaluate $((t3 - t2)) s" | tee "$name/wall_time.txt"
