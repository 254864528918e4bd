#!/usr/bin/env bash
# docs/results/joint_pool.json: sampling from a pool (sample.region_pool, sample.pool_critic)
# on each dev set's trained run, without retraining (experiments/joint/resample.sh DATA RUN
# NAME key=value); rows for runs that do not exist yet are left out.
set -euo pipefail
. "$(dirname "$0")/rows.sh"
rows=()
for s in "C|x/C-head1500es" "C4 (4 raters; C's F and G; the head fitted on 4 raters)|x/C4-head1500es" "F (64x64; shape cue)|x/F-head1500es" \
  "G (link cue)|x/G-head1500es" "E (class flips)|devE-learned" "A (independent)|devA" \
  "toy|x/toy-head1500es" "unseen (64x64)|x/unseen-head1500es"; do
  set_name=${s%%|*}; run=${s#*|}; short=${set_name%% *}
  rows+=("$set_name, learned coupling, each draw used once (pool 1)|runs/$run")
  rows+=("$set_name, pool 4|runs/t/$short-p4")
  rows+=("$set_name, pool 4 weighted by exp(D's logit), answers' shares kept|runs/t/$short-p4c1k")
  rows+=("$set_name, **pool 4 weighted by exp(2 x D's logit), shares kept** (the toy recipe)|runs/t/$short-p4c2k")
done
rows+=("C, pool 8 weighted by exp(D's logit), shares kept|runs/t/C-p8c1k")
rows+=("C, pool 4 weighted by D (sharpness 0.5), shares not kept (commit 1995b52)|runs/t/C-p4c05")
rows+=("C, pool 4 weighted by D (sharpness 1), shares not kept (commit 1995b52)|runs/t/C-p4c1")
rows+=("C, pool 4 weighted by D (sharpness 2), shares not kept (commit 1995b52)|runs/t/C-p4c2")
rows+=("F, pool 4 weighted by D (sharpness 1), shares not kept (commit 1995b52)|runs/t/F-p4c1")
rows+=("G, pool 4 weighted by D (sharpness 1), shares not kept (commit 1995b52)|runs/t/G-p4c1")
rows+=("toy, pool 4 weighted by D (sharpness 1), shares not kept (commit 1995b52)|runs/t/toy-p4c1")
rows_table docs/results/joint_pool.json "experiments/joint/resample.sh DATA RUN runs/t/SET-p4 sample.region_pool=4 sample.pool_critic=0 (-p4), 1 (-p4c1k) or 2 (-p4c2k; C-p8c1k: sample.region_pool=8 sample.pool_critic=1) on the run of each set's row 'pool 1' (its F, G and early-stopped head unchanged); table: experiments/joint/pool_table.sh" "${rows[@]}"
