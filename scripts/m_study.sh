#!/usr/bin/env bash
# The paper's Table 3 on our data: the method with M in {1, 5, 10, 20} samples for L_cal,
# one F shared by all, same steps; GED16/50/100, HM-IoU, mode frequencies, class offsets.
# Usage: scripts/m_study.sh [RECIPE] [key=value ...]
#   COUNTS="1 5 10 20"        the values of M (refiner.num_samples), in order
#   PREFIX=m-study/           run folders are runs/<PREFIX>m<M>
#   REUSE_CALIBRATOR=runs/x   share that run's F (default: the first M trains it)
#   OUT=runs/m-study.md       the table (compare_runs.py)
set -euo pipefail
recipe=${1:-recipes/toy.yaml}
shift || true
py=${PY:-.venv/bin/python}
prefix=${PREFIX:-m-study/}
out=${OUT:-runs/${prefix%/}.md}
runs=()
for m in ${COUNTS:-1 5 10 20}; do
  # the paper's Table 3 is about L_cal alone: no joint calibration loss (M = 1 could not run it)
  scripts/cascade.sh "$recipe" "${prefix}m$m" "$@" "refiner.num_samples=$m" refiner.w_joint=0 refiner.noise_regions=0 sample.independent_regions=false refiner.coupling_steps=0 sample.region_coupling=none sample.region_pool=1 sample.pool_critic=0 sample.pool_target=pool
  runs+=("runs/${prefix}m$m")
  export REUSE_CALIBRATOR=${REUSE_CALIBRATOR:-runs/${prefix}m$m}
done
mkdir -p "$(dirname "$out")"
$py scripts/compare_runs.py "${runs[@]}" | tee "$out"
