#!/usr/bin/env bash
# docs/results/toy_schedules.json: the toy recipe's figures with shorter training schedules
# (issue 28), two seeds each, from whole cascades of scripts/cascade.sh:
#   scripts/cascade.sh recipes/toy.yaml toy-base                       (and toy-base-s1 seed=1)
#   scripts/cascade.sh recipes/toy.yaml toy-fast1 threads=1 calibrator.steps=1200 \
#     'calibrator.lr_milestones=[700,1000]' refiner.steps=800 'refiner.lr_milestones=[500,700]' \
#     discriminator.width=16                                            (and toy-fast1s1 seed=1)
#   the same with calibrator.steps=1500 [900,1300], refiner.steps=1000 [600,870]: toy-fast2s0/s1
# and the unseen set (data/unseen, scripts/unseen.sh's) with the fast1 schedule: unseen-fast1.
set -euo pipefail
. "$(dirname "$0")/../joint/rows.sh"
rows=(
  "toy; seed 0, the toy recipe (F 2500 steps; G 1500; D width 32)|runs/toy-base"
  "toy; seed 0, fast1 (F 1200; G 800; D width 16)|runs/toy-fast1"
  "toy; seed 1, fast1 (F 1200; G 800; D width 16)|runs/toy-fast1s1"
  "toy; seed 0, fast2 (F 1500; G 1000; D width 16)|runs/toy-fast2s0"
  "toy; seed 1, fast2 (F 1500; G 1000; D width 16)|runs/toy-fast2s1"
  "unseen; seed 0, fast1 (F 1200; G 800; D width 16)|runs/unseen-fast1"
)
LABEL_COLUMNS="set, schedule" rows_table docs/results/toy_schedules.json \
  "scripts/cascade.sh per row (experiments/training_speed/schedule_table.sh lists them); table: experiments/training_speed/schedule_table.sh" "${rows[@]}"
