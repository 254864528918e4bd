#!/usr/bin/env bash
# docs/results/scaling_cascade.json: the toy recipe with F's class biases refitted
# (calibrator.recalibrate: class_bias, the recipe before) against F's logit scales and biases
# (vector_scaling, the toy recipe now), whole cascades on the four-rater sets and on sets with
# exact labels. The Fs are reused (REUSE_CALIBRATOR: the trained weights; the stage redoes the
# over-fitting check, the refits and the choice), so the rows differ only from the refit on.
#
#   experiments/joint/scaling_table.sh train   # print the commands (threads 1, 2 at once)
#   experiments/joint/scaling_table.sh         # the table from the finished runs
set -euo pipefail
. "$(dirname "$0")/rows.sh"
if [ "${1:-}" = train ]; then
  c=scripts/cascade.sh; o="data.source=prepared seed=0 threads=1"
  echo "REUSE_CALIBRATOR=runs/r4/c4v-src $c recipes/toy.yaml v1/devC4 data.dir=data/devC4 $o"
  echo "REUSE_CALIBRATOR=runs/r4/c4v-src $c recipes/toy.yaml v1/devC4v data.dir=data/devC4v $o"
  echo "REUSE_CALIBRATOR=runs/r4/g4-src $c recipes/toy.yaml v1/devG4 data.dir=data/devG4 $o"
  echo "mkdir -p runs/v1/g4d2-src && cp -r runs/x/g4-plain/calibrator runs/v1/g4d2-src/ && rm -rf runs/v1/g4d2-src/calibrator/regularised && cp -r runs/x/g4-d2/calibrator runs/v1/g4d2-src/calibrator/regularised"
  echo "REUSE_CALIBRATOR=runs/v1/g4d2-src $c recipes/toy.yaml v1/devG4-d2 data.dir=data/devG4 $o calibrator.overfit_dropout=0.2  # = [0.1, 0.2] on G4: 0.2 chosen"
  echo "REUSE_CALIBRATOR=runs/r4/g4-src $c recipes/toy.yaml v1/devG4-jpc data.dir=data/devG4 $o refiner.joint_pixels=calibrator"
  echo "REUSE_CALIBRATOR=runs/r4/g4-src $c recipes/toy.yaml v1/devG4-cal100 data.dir=data/devG4 $o refiner.w_cal=100"
  echo "$c recipes/toy.yaml v1/devC4-s1 data.dir=data/devC4 data.source=prepared seed=1 threads=1  # whole cascade, F trained"
  echo "$c recipes/toy.yaml v1/devC4-s2 data.dir=data/devC4 data.source=prepared seed=2 threads=1  # whole cascade, F trained"
  echo "$c recipes/toy.yaml v1/devG4-s1 data.dir=data/devG4 data.source=prepared seed=1 threads=1  # whole cascade, F trained"
  echo "REUSE_CALIBRATOR=runs/rc/devA-s0 $c recipes/toy.yaml v1/devA data.dir=data/devA $o"
  echo "REUSE_CALIBRATOR=runs/rc/devC $c recipes/toy.yaml v1/devC data.dir=data/devC $o"
  echo "REUSE_CALIBRATOR=runs/rc/devG-s0 $c recipes/toy.yaml v1/devG data.dir=data/devG $o"
  echo "REUSE_CALIBRATOR=runs/rc/unseen $c recipes/toy.yaml v1/unseen data.dir=data/unseen $o"
  echo "REUSE_CALIBRATOR=runs/rc/toy $c recipes/toy.yaml v1/toy seed=0 threads=1"
  exit 0
fi
LABEL_COLUMNS="set, F's refit" rows_table docs/results/scaling_cascade.json \
  "experiments/joint/scaling_table.sh train (whole cascades with F reused, two at once on the 2 cores); table: experiments/joint/scaling_table.sh" \
  "C4 (4 raters in train; val exact), class biases (the recipe before)|runs/r6b/devC4" \
  "C4, **vector scaling** (the toy recipe)|runs/v1/devC4" \
  "C4, **vector scaling**, seed 1 (a whole cascade: both Fs trained)|runs/v1/devC4-s1" \
  "C4, **vector scaling**, seed 2 (a whole cascade)|runs/v1/devC4-s2" \
  "C4v (4 raters in train and val), class biases|runs/r8/devC4v" \
  "C4v, **vector scaling**|runs/v1/devC4v" \
  "G4 (4 raters in train and val), class biases|runs/r6b/devG4" \
  "G4, **vector scaling**|runs/v1/devG4" \
  "G4, **vector scaling**, seed 1 (a whole cascade: both Fs trained)|runs/v1/devG4-s1" \
  "G4, vector scaling, the second F's dropout chosen from 0.1 and 0.2 (0.2 kept; not adopted)|runs/v1/devG4-d2" \
  "G4, vector scaling, the joint loss's pairs where F is uncertain (refiner.joint_pixels=calibrator; not adopted)|runs/v1/devG4-jpc" \
  "G4, vector scaling, refiner.w_cal=100 (not adopted)|runs/v1/devG4-cal100" \
  "A (exact modes), class biases|runs/rc/devA-s0" \
  "A, **vector scaling**|runs/v1/devA" \
  "C (exact modes; outline cue), class biases|runs/rc/devC" \
  "C, **vector scaling**|runs/v1/devC" \
  "G (exact modes; link cue), class biases|runs/rc/devG-s0" \
  "G, **vector scaling**|runs/v1/devG" \
  "toy, class biases|runs/rc/toy" \
  "toy, **vector scaling**|runs/v1/toy" \
  "unseen (64x64), class biases|runs/rc/unseen" \
  "unseen, **vector scaling**|runs/v1/unseen"
