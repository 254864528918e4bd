#!/usr/bin/env bash
# docs/results/raters_cascade.json: the toy recipe with F's regularisation chosen from the data
# (calibrator.overfit_ratio) on the dev sets with 4 raters per training image, beside the
# recipe before it (F always without dropout and weight decay).
#
#   experiments/joint/raters_table.sh train   # print the commands (threads 1, 2 at once)
#   experiments/joint/raters_table.sh         # the table from the finished runs
#
# runs/r4/devC4 is a whole cascade (F, the check, the regularised F, G, head, bank,
# evaluation); its two Fs came out bit for bit those of runs/rc/devC4 and runs/x/c4-reg. The
# other rows reuse trained Fs (REUSE_CALIBRATOR): the first F of the same seed and recipe (C4v
# shares C4's training split, so runs/rc/devC4's F; G4: runs/x/g4-plain) with the regularised
# F of the same settings in calibrator/regularised/ (runs/x/c4-reg; G4: runs/x/g4-reg), which
# a fresh run trains bit for bit (tests/test_overfit.py); the stage then makes the check, the
# refits and the choice afresh. The data: data/README.md.
set -euo pipefail
. "$(dirname "$0")/rows.sh"
if [ "${1:-}" = train ]; then
  c=scripts/cascade.sh; o="data.source=prepared seed=0 threads=1"
  echo "mkdir -p runs/r4/c4v-src && cp -r runs/rc/devC4/calibrator runs/r4/c4v-src/ && cp -r runs/x/c4-reg/calibrator runs/r4/c4v-src/calibrator/regularised"
  echo "mkdir -p runs/r4/g4-src && cp -r runs/x/g4-plain/calibrator runs/r4/g4-src/ && cp -r runs/x/g4-reg/calibrator runs/r4/g4-src/calibrator/regularised"
  echo "git checkout 6a564da  # F's check, before refiner.joint_pixels"
  echo "$c recipes/toy.yaml r4/devC4 data.dir=data/devC4 $o"
  echo "REUSE_CALIBRATOR=runs/r4/c4v-src $c recipes/toy.yaml r4/devC4v data.dir=data/devC4v $o"
  echo "REUSE_CALIBRATOR=runs/r4/g4-src $c recipes/toy.yaml r4/devG4 data.dir=data/devG4 $o"
  echo "REUSE_CALIBRATOR=runs/x/g4-plain $c recipes/toy.yaml r4/devG4-before data.dir=data/devG4 $o calibrator.overfit_ratio=0"
  echo "git checkout main  # the toy recipe"
  echo "REUSE_CALIBRATOR=runs/r4/c4v-src $c recipes/toy.yaml r5/devC4 data.dir=data/devC4 $o"
  echo "REUSE_CALIBRATOR=runs/r4/c4v-src $c recipes/toy.yaml r5/devC4v data.dir=data/devC4v $o"
  echo "REUSE_CALIBRATOR=runs/r4/g4-src $c recipes/toy.yaml r5/devG4 data.dir=data/devG4 $o"
  exit 0
fi
LABEL_COLUMNS="set, recipe" rows_table docs/results/raters_cascade.json \
  "experiments/joint/raters_table.sh train (C4 with the check: a whole cascade; the other rows reuse the trained Fs named there, the check, refits and choice made by the stage, G, head, bank and evaluation afresh; two at once on the 2 cores); table: experiments/joint/raters_table.sh" \
  "C4 (4 raters in train; val exact), the recipe before (F as trained)|runs/rc/devC4" \
  "C4, + F's regularisation chosen (calibrator.overfit_ratio)|runs/r4/devC4" \
  "C4, + pairs where F is uncertain (refiner.joint_pixels: auto; **the toy recipe**)|runs/r5/devC4" \
  "C4v (4 raters in train and val), + F's regularisation chosen|runs/r4/devC4v" \
  "C4v, + pairs where F is uncertain (**the toy recipe**)|runs/r5/devC4v" \
  "G4 (4 raters in train and val), the recipe before (F as trained)|runs/r4/devG4-before" \
  "G4, + F's regularisation chosen|runs/r4/devG4" \
  "G4, + pairs where F is uncertain (**the toy recipe**)|runs/r5/devG4"
