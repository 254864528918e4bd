#!/usr/bin/env bash
# docs/results/toy_recipe_now.json: the toy recipe as it is (F's class biases refitted on the
# validation split, learned coupling, pool 4 weighted by D at sharpness 3 and tilted to F) on
# the toy set (two seeds) and on the unseen set: the runs of experiments/joint/bias_runs_table.sh
# (runs/rc/toy and runs/rc/unseen reuse the trained F of every_set_table.sh's toy-now and
# unseen-now, refitted, with G, head, bank and evaluation made afresh; runs/rc/toy-s1 is a
# whole cascade).
set -euo pipefail
. "$(dirname "$0")/rows.sh"
rows=(
  "toy (32x32; 3 classes), seed 0|runs/rc/toy"
  "toy, seed 1|runs/rc/toy-s1"
  "unseen (64x64; 4 classes; not tuned on), seed 0|runs/rc/unseen"
)
LABEL_COLUMNS="set, seed" rows_table docs/results/toy_recipe_now.json "experiments/joint/bias_runs_table.sh train (threads 1, several jobs at once), then scripts/acceptance.py runs/rc/toy --control runs/toy-none --control runs/toy-ce --control runs/toy-m1 (12 of 12 bars) and scripts/acceptance.py runs/rc/unseen (11 of 11 bars besides the budget; that run's wall time is not a cost: it shared the cores with 2-5 jobs); table: experiments/joint/recipe_now_table.sh" "${rows[@]}"
