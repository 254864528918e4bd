#!/usr/bin/env bash
# docs/results/raters_cascade.json: the toy recipe with F's regularisation chosen from the data
# (calibrator.overfit_ratio) on the dev sets with 4 raters per training image, beside the
# recipe before it (F always without dropout and weight decay).
#
#   experiments/joint/raters_table.sh train   # print the commands (threads 1, 2 at once)
#   experiments/joint/raters_table.sh         # the table from the finished runs
#
# C4 is a whole cascade (F, the check, the regularised F, G, head, bank, evaluation). C4v and
# G4 reuse trained Fs (REUSE_CALIBRATOR): the first F of the same seed and recipe (C4v shares
# C4's training split, so runs/rc/devC4's F; G4: runs/x/g4-plain) with the regularised F of
# the same settings in calibrator/regularised/ (runs/x/g4-reg; C4v: runs/x/c4-reg), which a
# fresh run trains bit for bit (tests/test_overfit.py); the stage then makes the check, the
# refits and the choice afresh. The data: data/README.md.
set -euo pipefail
. "$(dirname "$0")/rows.sh"
if [ "${1:-}" = train ]; then
  echo "scripts/cascade.sh recipes/toy.yaml r4/devC4 data.dir=data/devC4 data.source=prepared seed=0 threads=1"
  for s in "c4v rc/devC4 x/c4-reg devC4v" "g4 x/g4-plain x/g4-reg devG4"; do
    read -r n first second data <<< "$s"
    echo "mkdir -p runs/r4/$n-src && cp -r runs/$first/calibrator runs/r4/$n-src/ && cp -r runs/$second/calibrator runs/r4/$n-src/calibrator/regularised && REUSE_CALIBRATOR=runs/r4/$n-src scripts/cascade.sh recipes/toy.yaml r4/$data data.dir=data/$data data.source=prepared seed=0 threads=1"
  done
  exit 0
fi
LABEL_COLUMNS="set, F" rows_table docs/results/raters_cascade.json \
  "experiments/joint/raters_table.sh train (C4 a whole cascade; C4v and G4 with both Fs reused, the check, refits and choice made by the stage); table: experiments/joint/raters_table.sh" \
  "C4 (4 raters; val exact), F as trained (the recipe before)|runs/rc/devC4" \
  "C4, **F chosen by the check** (the toy recipe)|runs/r4/devC4" \
  "C4v (4 raters in train and val), **F chosen by the check**|runs/r4/devC4v" \
  "G4 (4 raters in train and val), **F chosen by the check**|runs/r4/devG4"
