#!/usr/bin/env bash
# The method and the paper's controls on the same data and budget (issue table):
# calibration_loss=none (lambda = 0), =ce (cross-entropy control), num_samples=1 (M = 1).
# F is trained once (the method's run) and shared, so the rows differ only in G.
set -euo pipefail
recipe=${1:-recipes/toy.yaml}
py=${PY:-.venv/bin/python}
scripts/cascade.sh "$recipe" toy-method
export REUSE_CALIBRATOR=runs/toy-method
# The controls are the paper's: without the joint calibration loss and the region noise (beyond
# the paper); the joint loss would otherwise still hold the marginals (lambda = 0) and needs
# M >= 2 (M = 1).
off=(refiner.w_joint=0 refiner.noise_regions=0 sample.independent_regions=false refiner.coupling_steps=0 sample.region_coupling=none sample.region_pool=1 sample.pool_critic=0 sample.pool_target=pool)
scripts/cascade.sh "$recipe" toy-none refiner.calibration_loss=none "${off[@]}"
scripts/cascade.sh "$recipe" toy-ce refiner.calibration_loss=ce "${off[@]}"
scripts/cascade.sh "$recipe" toy-m1 refiner.num_samples=1 "${off[@]}"
$py scripts/compare_runs.py runs/toy-method runs/toy-none runs/toy-ce runs/toy-m1 | tee runs/controls.md
# the docs' table (docs/results.md, "controls"): CONTROLS_JSON=docs/results/controls.json
$py scripts/controls_table.py runs/toy-method runs/toy-none runs/toy-ce runs/toy-m1 \
  ${CONTROLS_JSON:+--json "$CONTROLS_JSON"} | tee -a runs/controls.md
# how independent G's answers in separate ambiguous regions are (mode TV's main remainder)
$py experiments/joint/factor_coupling.py runs/toy-method runs/toy-none runs/toy-ce runs/toy-m1 \
  | tee -a runs/controls.md
# the acceptance bars (exit 1 when one is missed)
$py scripts/acceptance.py runs/toy-method --budget-s 900 \
  --control runs/toy-none --control runs/toy-ce --control runs/toy-m1 | tee runs/controls_bars.md
exit "${PIPESTATUS[0]}"
