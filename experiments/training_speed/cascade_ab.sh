#!/usr/bin/env bash
# A short toy cascade (train-calibrator, train-refiner, sample, evaluate) from two checkouts,
# alternating A B A B, one line of wall / user / sys seconds and page faults per stage (GNU
# time), so both checkouts see the same machine load. Both run this checkout's .venv (with
# PYTHONPATH pointing at the checkout under test) on the same prepared data.
#   experiments/training_speed/cascade_ab.sh BASE_CHECKOUT OUT_DIR [ROUNDS] [key=value ...]
# e.g. (BASE_CHECKOUT from `git worktree add` or `git archive COMMIT | tar -x -C DIR`):
#   carseg prepare recipes/toy.yaml data.dir=/tmp/ab/data --overwrite
#   experiments/training_speed/cascade_ab.sh /tmp/ab/base /tmp/ab 2 data.dir=/tmp/ab/data \
#       calibrator.steps=100 refiner.steps=40 refiner.coupling_steps=20
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
base=$(cd "$1" && pwd); out=$2; rounds=${3:-2}; shift 3 || shift $#
py=$here/.venv/bin/python
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  for v in base new; do
    src=$here; [ "$v" = base ] && src=$base
    for st in train-calibrator train-refiner sample evaluate; do
      /usr/bin/time -f "round $r $v $st wall %e user %U sys %S faults %R maxrss_kb %M" \
        nice -n 10 env OMP_WAIT_POLICY=PASSIVE PYTHONPATH="$src" "$py" -m carcli "$st" \
        "$src/recipes/toy.yaml" run_dir="$out/run_$v" "$@" --overwrite --quiet 2>&1 >/dev/null \
        | grep '^round'
    done
  done
done
