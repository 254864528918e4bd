#!/usr/bin/env bash
# The toy recipe, unchanged but for data.dir, on another synthetic set of the same kind that
# the recipe was not tuned on: 64x64 RGB, 4 classes, 1200 training images, another seed.
set -euo pipefail
recipe=${1:-recipes/toy.yaml}
carseg=${CARSEG:-.venv/bin/carseg}
$carseg prepare "$recipe" data.dir=data/unseen seed=2026 data.synthetic.size=64 data.synthetic.num_classes=4 \
  data.synthetic.num_train=1200 data.synthetic.num_val=200 data.synthetic.num_test=300 --overwrite --quiet
scripts/cascade.sh "$recipe" unseen data.dir=data/unseen
${PY:-.venv/bin/python} scripts/compare_runs.py runs/unseen | tee runs/unseen.md
${PY:-.venv/bin/python} experiments/joint/factor_coupling.py runs/unseen | tee -a runs/unseen.md
# the acceptance bars, with the 30-minute budget (exit 1 when one is missed)
${PY:-.venv/bin/python} scripts/acceptance.py runs/unseen --budget-s 1800 | tee runs/unseen_bars.md
exit "${PIPESTATUS[0]}"
