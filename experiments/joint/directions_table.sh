#!/usr/bin/env bash
# docs/results/joint_directions.json: the G-training directions of issue 25 on the coupled dev
# sets, each G trained on the set's shared F (experiments/joint/joint_study.sh DATA F_RUN NAME
# key=value), then sampled as drawn and with the learned coupling (the run's own head;
# SKIP_HEAD=1 experiments/joint/variants.sh DATA NAME); rows for runs that do not exist are
# left out.
set -euo pipefail
. "$(dirname "$0")/rows.sh"
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
rows_table docs/results/joint_directions.json "C rows: experiments/joint/joint_study.sh data/devC runs/devC runs/x/NAME key=value (G trained on C's F), then SKIP_HEAD=1 experiments/joint/variants.sh data/devC runs/x/NAME; table: experiments/joint/directions_table.sh" "${rows[@]}"
