#!/usr/bin/env bash
# The paper's refiner variants on the same data and budget, sharing one F (issue 7):
#   gaussian  the method (eps ~ N(0, I) drives G's decoder)
#   posterior latent-code refiner, L_G + L_cal, no prior (appendix B.2.3)
#   kl0.1 kl1 kl10  cVAE-GAN comparison: latent codes, L_adv + beta * KL(q || N(0, I)), L_cal off
#   joint     the method with F trained jointly inside train-refiner (the authors' code default)
# Usage: scripts/variants.sh [RECIPE] [key=value ...]
#   VARIANTS="posterior kl1"  the subset to run, in order (default: all six)
#   PREFIX=variants/          run folders are runs/<PREFIX><variant>
#   REUSE_CALIBRATOR=runs/x   share that run's F (default: the first variant trains it)
#   OUT=runs/variants.md      the side-by-side table (compare_runs.py)
set -euo pipefail
recipe=${1:-recipes/toy.yaml}
shift || true
py=${PY:-.venv/bin/python}
prefix=${PREFIX:-variants/}
out=${OUT:-runs/${prefix%/}.md}
runs=()
for v in ${VARIANTS:-gaussian posterior kl0.1 kl1 kl10 joint}; do
  case $v in
    gaussian) args=() ;;
    posterior) args=(refiner.noise=posterior) ;;
    kl*) args=(refiner.noise=posterior "refiner.kl_beta=${v#kl}" refiner.calibration_loss=none) ;;
    joint) args=(refiner.joint_calibrator=true) ;;
    *) echo "unknown variant $v (gaussian posterior kl<beta> joint)" >&2; exit 2 ;;
  esac
  # the paper's variants, without the joint calibration loss (beyond the paper)
  scripts/cascade.sh "$recipe" "$prefix$v" "$@" "${args[@]}" refiner.w_joint=0 refiner.noise_regions=0 sample.independent_regions=false refiner.coupling_steps=0 sample.region_coupling=none sample.region_pool=1 sample.pool_critic=0 sample.pool_target=pool
  runs+=("runs/$prefix$v")
  export REUSE_CALIBRATOR=${REUSE_CALIBRATOR:-runs/$prefix$v}
done
mkdir -p "$(dirname "$out")"
$py scripts/compare_runs.py "${runs[@]}" | tee "$out"
