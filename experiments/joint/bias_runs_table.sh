#!/usr/bin/env bash
# docs/results/every_set_bias.json: the toy recipe as it is (F's class biases refitted on the
# validation split, calibrator.recalibrate: class_bias) on every dev set, beside the runs of
# every_set.json sampled with the recipe before (runs/t/NAME-pt3: F as trained).
#
#   experiments/joint/bias_runs_table.sh train   # print the commands (threads 1, 2 at once)
#   experiments/joint/bias_runs_table.sh         # the table from the finished runs
#
# Where a trained run of every_set_table.sh exists, its F's trained weights are reused
# (REUSE_CALIBRATOR: the same seed and recipe train the same F; the refit is redone by the
# recipe) and G, the coupling head, the bank and the evaluation are made afresh. C4 and the
# toy set's seed 1 had no such run and are whole cascades. The data: data/README.md.
set -euo pipefail
. "$(dirname "$0")/rows.sh"
# label | reused F (runs/...; empty: trained) | name under runs/rc | data dir | source | seed
sets=(
  "A (objects independent), seed 0|devA-now|devA-s0|data/devA|prepared|0"
  "A, seed 1|devA-now-s1|devA-s1|data/devA|prepared|1"
  "C (outline cue), seed 0|devC-now|devC|data/devC|prepared|0"
  "C4 (4 raters as training labels), seed 0||devC4|data/devC4|prepared|0"
  "E (class flips), seed 0|devE-now|devE|data/devE|prepared|0"
  "F (64x64 shape cue), seed 0|devF-now|devF|data/devF|prepared|0"
  "G (link cue), seed 0|devG-now|devG-s0|data/devG|prepared|0"
  "G, seed 1|devG-now-s1|devG-s1|data/devG|prepared|1"
  "toy, seed 0|toy-now|toy|data/toy|prepared|0"
  "toy, seed 1||toy-s1|data/toy|prepared|1"
  "unseen (64x64), seed 0|unseen-now|unseen|data/unseen|prepared|0"
)
if [ "${1:-}" = train ]; then
  for s in "${sets[@]}"; do
    IFS='|' read -r _ reuse name data src seed <<< "$s"
    pre=""; [ -n "$reuse" ] && pre="REUSE_CALIBRATOR=runs/$reuse "
    echo "${pre}scripts/cascade.sh recipes/toy.yaml rc/$name data.dir=$data data.source=$src seed=$seed threads=1"
  done
  exit 0
fi
rows=()
for s in "${sets[@]}"; do
  IFS='|' read -r label reuse name _ _ _ <<< "$s"
  [ -n "$reuse" ] && rows+=("$label, F as trained (the recipe before)|runs/t/$reuse-pt3")
  rows+=("$label, **F's class biases refitted** (the toy recipe now)|runs/rc/$name")
done
# C4 again with F regularised as the schema's defaults (dropout 0.1, weight decay 5e-4; not the
# recipe): REUSE_CALIBRATOR=runs/x/c4-reg scripts/cascade.sh recipes/toy.yaml x/c4-regF
#   data.dir=data/devC4 data.source=prepared seed=0 threads=1 calibrator.dropout=0.1
#   calibrator.weight_decay=5e-4 (runs/x/c4-reg: f_bias_table.py's regularisation rows)
rows+=("C4 (4 raters as training labels), seed 0, F with dropout 0.1 and weight decay 5e-4, refitted (not the recipe)|runs/x/c4-regF")
LABEL_COLUMNS="set, seed, F" rows_table docs/results/every_set_bias.json \
  "experiments/joint/bias_runs_table.sh train (REUSE_CALIBRATOR=runs/NAME scripts/cascade.sh recipes/toy.yaml rc/NAME data.dir=DATA data.source=prepared seed=S threads=1: F's trained weights of every_set_table.sh's run, its refit, then G, the head, sample and evaluate afresh; C4 and toy seed 1 whole cascades; two at once on the 2 cores); rows 'F as trained': runs/t/NAME-pt3 of every_set.json; table: experiments/joint/bias_runs_table.sh" \
  "${rows[@]}"
