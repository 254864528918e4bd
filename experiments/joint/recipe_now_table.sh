#!/usr/bin/env bash
# docs/results/toy_recipe_now.json: the toy recipe as it is (learned coupling, pool 4 weighted
# by D) on the toy set (a whole cascade: scripts/cascade.sh recipes/toy.yaml toy-pool) and on
# the unseen set (its trained run resampled: experiments/joint/resample.sh data/unseen
# runs/x/unseen-head1500es runs/t/unseen-p4c2k sample.pool_critic=2, the recipe's value).
set -euo pipefail
. "$(dirname "$0")/rows.sh"
rows=(
  "toy (32x32; 3 classes), a whole cascade|runs/toy-pool"
  "unseen (64x64; 4 classes; not tuned on), its trained run sampled with the recipe|runs/t/unseen-p4c2k"
)
rows_table docs/results/toy_recipe_now.json "scripts/cascade.sh recipes/toy.yaml toy-pool, then scripts/acceptance.py runs/toy-pool --budget-s 900 (10 of 10 bars, 513 s); unseen: experiments/joint/resample.sh data/unseen runs/x/unseen-head1500es runs/t/unseen-p4c2k sample.pool_critic=2 (11 of 11 bars); table: experiments/joint/recipe_now_table.sh" "${rows[@]}"
