#!/usr/bin/env bash
# Sampling variants of one trained run (issue 25), each in a copy of RUN's F and G, sampled
# and evaluated again: G's draws as drawn (RUN-none), declared independent regions
# (RUN-ind), and the learned region coupling with a head fitted afresh on RUN's F
# (RUN-learned; head time in RUN-learned/head_time.txt, its scores in coupling.json).
#   experiments/joint/variants.sh DATA_DIR RUN [head steps] [key=value ...]
# With SKIP_HEAD=1, RUN itself (trained and sampled with the recipe's own head) stands for
# the learned row and only the other two are drawn.
set -euo pipefail
data=$1; run=$2; steps=${3:-600}; shift 3 || shift $#
py=${PY:-.venv/bin/python}
carseg=${CARSEG:-.venv/bin/carseg}
recipe=${RECIPE:-recipes/toy.yaml}
export OMP_WAIT_POLICY=PASSIVE
again() {  # NAME overrides...: sample and evaluate in NAME
  local name=$1; shift
  $carseg sample "$recipe" data.dir="$data" run_dir="$name" "$@" --overwrite --quiet
  $carseg evaluate "$recipe" data.dir="$data" run_dir="$name" "$@" --overwrite --quiet
}
copy() { mkdir -p "$1"; rm -rf "$1/calibrator" "$1/refiner"; cp -r "$run/calibrator" "$run/refiner" "$1/"; }
off=(sample.independent_regions=false sample.region_coupling=none sample.region_pool=1 sample.pool_critic=0 sample.pool_target=pool)
copy "$run-none"; again "$run-none" "${off[@]}" "$@"
copy "$run-ind"; again "$run-ind" sample.independent_regions=true sample.region_coupling=none sample.region_pool=1 sample.pool_critic=0 sample.pool_target=pool "$@"
[ "${SKIP_HEAD:-0}" = 1 ] && exit 0
name=$run-learned
copy "$name"
t0=$(date +%s)
$py experiments/joint/coupling_head.py "$name" "$data" --steps "$steps" > "$name/coupling.json"
echo "coupling head $(( $(date +%s) - t0 )) s" > "$name/head_time.txt"
again "$name" sample.independent_regions=false sample.region_coupling=learned "$@"
