#!/usr/bin/env bash
# Sampling variants of one trained run (issue 25): independent regions, and the learned
# coupling head (link 1 and link 0) fitted on RUN's F; each in a copy of RUN's F and G,
# sampled and evaluated again (RUN itself holds G's samples as drawn).
#   experiments/joint/variants.sh DATA_DIR RUN [head steps]
set -euo pipefail
data=$1; run=$2; steps=${3:-600}
py=${PY:-.venv/bin/python}
carseg=${CARSEG:-.venv/bin/carseg}
recipe=${RECIPE:-recipes/toy.yaml}
again() {  # NAME overrides...: sample and evaluate in NAME
  local name=$1; shift
  $carseg sample "$recipe" data.dir="$data" run_dir="$name" "$@" --overwrite --quiet
  $carseg evaluate "$recipe" data.dir="$data" run_dir="$name" "$@" --overwrite --quiet
}
copy() { mkdir -p "$1"; rm -rf "$1/calibrator" "$1/refiner"; cp -r "$run/calibrator" "$run/refiner" "$1/"; }
copy "$run-ind"
again "$run-ind" sample.independent_regions=true
for link in 1 0; do
  name=$run-learned-l$link
  copy "$name"
  t0=$(date +%s)
  $py experiments/joint/coupling_head.py "$name" "$data" --steps "$steps" --link "$link" > "$name/coupling.json"
  echo "coupling head $(( $(date +%s) - t0 )) s" > "$name/head_time.txt"
  again "$name" sample.independent_regions=false sample.region_coupling=learned
done
