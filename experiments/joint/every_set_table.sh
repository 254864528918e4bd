#!/usr/bin/env bash
# docs/results/every_set.json: the toy recipe as it is (F without dropout and weight decay,
# the learned region coupling, the pool weighted by D), changed only in data.dir and seed,
# trained from scratch on every dev set: whole cascades, two seeds where the time allowed.
#
#   experiments/joint/every_set_table.sh train   # print the cascade commands
#   experiments/joint/every_set_table.sh         # the table from the finished runs
#
# The data (data/README.md): make_devset.py data/devA --seed 99; make_coupled_devset.py
# data/devC, data/devC4 --annotations 4, data/devE --kind classflip --seed 11 --max-objects 5,
# data/devF --cue shape --size 64 --seed 13 --train 1200 --flip-probs 0.2 0.4 0.6 0.8,
# data/devG --cue link --seed 21 --flip-probs 0.2 0.4 0.6 0.8; carseg prepare recipes/toy.yaml
# (data/toy); scripts/unseen.sh's carseg prepare (data/unseen).
set -euo pipefail
. "$(dirname "$0")/rows.sh"
# label | run | data dir | data.source | extra overrides
sets=(
  "A (objects independent), seed 0|runs/devA-now|data/devA|prepared|threads=1"
  "A, seed 1|runs/devA-now-s1|data/devA|prepared|seed=1 threads=1"
  "C (outline cue), seed 0|runs/devC-now|data/devC|prepared|threads=1"
  "C, seed 1|runs/devC-now-s1|data/devC|prepared|seed=1 threads=1"
  "C4 (4 raters as training labels), seed 0|runs/devC4-now|data/devC4|prepared|threads=1"
  "E (class flips), seed 0|runs/devE-now|data/devE|prepared|threads=1"
  "E, seed 1|runs/devE-now-s1|data/devE|prepared|seed=1 threads=1"
  "F (64x64 shape cue), seed 0|runs/devF-now|data/devF|prepared|threads=1"
  "G (link cue), seed 0|runs/devG-now|data/devG|prepared|threads=1"
  "G, seed 1|runs/devG-now-s1|data/devG|prepared|seed=1 threads=1"
  "toy, seed 0|runs/toy-now|data/toy|synthetic|threads=1"
  "toy, seed 1|runs/toy-now-s1|data/toy|synthetic|seed=1 threads=1"
  "unseen (64x64), seed 0|runs/unseen-now|data/unseen|synthetic|"
)
if [ "${1:-}" = train ]; then
  for s in "${sets[@]}"; do
    IFS='|' read -r _ run data src over <<< "$s"
    echo "scripts/cascade.sh recipes/toy.yaml ${run#runs/} data.dir=$data data.source=$src $over"
  done
  exit 0
fi
rows=()
for s in "${sets[@]}"; do
  IFS='|' read -r label run _ _ _ <<< "$s"
  rows+=("$label|$run")
done
LABEL_COLUMNS="set, seed" rows_table docs/results/every_set.json \
  "experiments/joint/every_set_table.sh train lists the runs (scripts/cascade.sh recipes/toy.yaml NAME data.dir=DATA data.source=SOURCE [seed=1]; threads=1 but for unseen, which runs alone with the recipe's 2 threads to time it); table: experiments/joint/every_set_table.sh" \
  "${rows[@]}"
