#!/usr/bin/env bash
# docs/results/joint_directions.json: the G-training directions of issue 25 on the coupled dev
# sets, each G trained on the set's shared F (experiments/joint/joint_study.sh DATA F_RUN NAME
# key=value), then sampled as drawn and with the learned coupling (the run's own head;
# SKIP_HEAD=1 experiments/joint/variants.sh DATA NAME); rows for runs that do not exist are
# left out.
set -euo pipefail
py=${PY:-.venv/bin/python}
rows=(
  "C, the toy recipe's G (pairs uniform among ambiguous pixels), G's draws as drawn|runs/devC-none"
  "C, the toy recipe's G, **learned coupling**|runs/devC-learned"
  "C, joint_cross 0.5 (half the pairs across factors), as drawn|runs/x/C-cross50-none"
  "C, joint_cross 0.5, learned coupling|runs/x/C-cross50"
  "C, joint_cross 0.5 + noise_regions 8 (a code per region), as drawn|runs/x/C-cross50-rn8-none"
  "C, joint_cross 0.5 + noise_regions 8, learned coupling|runs/x/C-cross50-rn8"
  "C, calibration_temperature 5 (L_cal on the answers, straight-through), as drawn|runs/x/C-caltemp5-none"
  "C, calibration_temperature 5, learned coupling|runs/x/C-caltemp5"
  "C, w_energy 20 (energy score, whole map), as drawn|runs/x/C-energy20-none"
  "C, w_energy 20, learned coupling|runs/x/C-energy20"
)
labels=(); runs=()
for r in "${rows[@]}"; do
  run=${r#*|}
  [ -f "$run/eval/test/metrics.json" ] || continue
  labels+=("${r%%|*}"); runs+=("$run")
done
$py experiments/joint/coupling_table.py "${runs[@]}" --json docs/results/joint_directions.json \
  --labels "${labels[@]}" \
  --command "C rows: experiments/joint/joint_study.sh data/devC runs/devC runs/x/NAME key=value (G trained on C's F), then SKIP_HEAD=1 experiments/joint/variants.sh data/devC runs/x/NAME; table: experiments/joint/directions_table.sh" \
  --note "Bars of the issue: both ratios at most 1.5, coupled agree at least 0.97, mode TV − oracle at most 0.025, GED16 − oracle at most 0.01, within 0.8 at least 0.93, worst offsets at most 0.03."
$py scripts/docs_tables.py
