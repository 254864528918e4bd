#!/usr/bin/env bash
# docs/results/every_set.json: the toy recipe (F without dropout and weight decay, the learned
# region coupling, the pool weighted by D), changed only in data.dir and seed, trained from
# scratch on every dev set (whole cascades), each run then sampled again without retraining
# with the pool tilted to F (sample.pool_target: calibrator) instead of the pool's own mean:
#
#   experiments/joint/every_set_table.sh train      # print the cascade commands
#   experiments/joint/every_set_table.sh resample   # sample each finished run the other ways
#   experiments/joint/every_set_table.sh            # the table
#
# The data (data/README.md): make_devset.py data/devA --seed 99; make_coupled_devset.py
# data/devC, data/devC4 --annotations 4, data/devE --kind classflip --seed 11 --max-objects 5,
# data/devF --cue shape --size 64 --seed 13 --train 1200 --flip-probs 0.2 0.4 0.6 0.8,
# data/devG --cue link --seed 21 --flip-probs 0.2 0.4 0.6 0.8; carseg prepare recipes/toy.yaml
# (data/toy); scripts/unseen.sh's carseg prepare (data/unseen).
#
# RUN: the run as trained (the recipe's pool_target of its time: pool, pool_critic 2);
# runs/t/NAME-pt: pool_target calibrator, pool_critic 2; runs/t/NAME-pt3: the same with
# pool_critic 3. Seed-1 runs are sampled with seed=1.
set -euo pipefail
. "$(dirname "$0")/rows.sh"
# label | run | data dir | data.source | seed
sets=(
  "A (objects independent), seed 0|devA-now|data/devA|prepared|0"
  "A, seed 1|devA-now-s1|data/devA|prepared|1"
  "C (outline cue), seed 0|devC-now|data/devC|prepared|0"
  "C4 (4 raters as training labels), seed 0|devC4-now|data/devC4|prepared|0"
  "E (class flips), seed 0|devE-now|data/devE|prepared|0"
  "F (64x64 shape cue), seed 0|devF-now|data/devF|prepared|0"
  "G (link cue), seed 0|devG-now|data/devG|prepared|0"
  "G, seed 1|devG-now-s1|data/devG|prepared|1"
  "toy, seed 0|toy-now|data/toy|synthetic|0"
  "toy, seed 1|toy-now-s1|data/toy|synthetic|1"
  "unseen (64x64), seed 0|unseen-now|data/unseen|synthetic|0"
)
variants=(
  "|pool (the pool's own mean), pool_critic 2"
  "-pt|calibrator (each region's mean to F's), pool_critic 2"
  "-pt3|**calibrator**, **pool_critic 3** (the toy recipe now)"
)
if [ "${1:-}" = train ]; then
  for s in "${sets[@]}"; do
    IFS='|' read -r _ name data src seed <<< "$s"
    echo "scripts/cascade.sh recipes/toy.yaml $name data.dir=$data data.source=$src seed=$seed threads=1"
  done
  exit 0
fi
if [ "${1:-}" = resample ]; then
  for s in "${sets[@]}"; do
    IFS='|' read -r _ name data src seed <<< "$s"
    [ -f "runs/$name/eval/test/metrics.json" ] || { echo "skip $name (not finished)" >&2; continue; }
    for over in "-pt|sample.pool_critic=2" "-pt3|sample.pool_critic=3"; do
      suffix=${over%%|*}; extra=${over#*|}
      [ -f "runs/t/$name$suffix/eval/test/metrics.json" ] && continue
      experiments/joint/resample.sh "$data" "runs/$name" "runs/t/$name$suffix" \
        "data.source=$src" "seed=$seed" threads=1 sample.pool_target=calibrator $extra
    done
  done
  exit 0
fi
rows=()
for s in "${sets[@]}"; do
  IFS='|' read -r label name _ _ _ <<< "$s"
  for v in "${variants[@]}"; do
    suffix=${v%%|*}; what=${v#*|}
    run=runs/$name; [ -n "$suffix" ] && run=runs/t/$name$suffix
    rows+=("$label, $what|$run")
  done
done
LABEL_COLUMNS="set, seed, pool target, D's sharpness" rows_table docs/results/every_set.json \
  "experiments/joint/every_set_table.sh train (scripts/cascade.sh recipes/toy.yaml NAME data.dir=DATA data.source=SOURCE seed=S threads=1, the recipe of commit 73b777e, several at once on the 2 cores), then experiments/joint/every_set_table.sh resample (experiments/joint/resample.sh DATA RUN runs/t/NAME-pt sample.pool_target=calibrator [sample.pool_critic=3]); table: experiments/joint/every_set_table.sh" \
  "${rows[@]}"
