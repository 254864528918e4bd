#!/usr/bin/env bash
# docs/results/toy_recipe_now.json: the toy recipe as it is (learned coupling, pool 4 weighted
# by D at sharpness 3 and tilted to F) on the toy set and on the unseen set: each a whole
# cascade of experiments/joint/every_set_table.sh (toy-now, unseen-now: the recipe of commit
# 73b777e, whose training is the recipe's now) sampled with the recipe's sampling
# (runs/t/NAME-pt3: sample.pool_target=calibrator sample.pool_critic=3).
set -euo pipefail
. "$(dirname "$0")/rows.sh"
rows=(
  "toy (32x32; 3 classes), a whole cascade sampled with the recipe|runs/t/toy-now-pt3"
  "unseen (64x64; 4 classes; not tuned on), a whole cascade sampled with the recipe|runs/t/unseen-now-pt3"
)
rows_table docs/results/toy_recipe_now.json "experiments/joint/every_set_table.sh train and resample (runs toy-now, unseen-now; threads 1, several jobs at once), then scripts/acceptance.py runs/t/toy-now-pt3 --control runs/toy-none --control runs/toy-ce --control runs/toy-m1 and scripts/acceptance.py runs/t/unseen-now-pt3; table: experiments/joint/recipe_now_table.sh" "${rows[@]}"
