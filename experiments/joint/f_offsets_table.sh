#!/usr/bin/env bash
# docs/results/calibrator_offsets.json: the calibrator F's worst class offset (the acceptance
# bar: <= 0.03) for F variants of the toy recipe on the dev sets, from the runs that
# experiments/joint/f_offsets_table.sh train lists (experiments/joint/f_offsets.py on each).
#
#   experiments/joint/f_offsets_table.sh train   # print the train-calibrator commands
#   experiments/joint/f_offsets_table.sh         # the table from the finished runs
#   TABLE=schedule experiments/joint/f_offsets_table.sh [train]
#       the same for F's schedule (steps, batch, learning rate) with the toy recipe's F of
#       now (no dropout, no weight decay): docs/results/calibrator_schedule.json
#
# The data: experiments/joint/make_devset.py data/devA --seed 99;
# make_coupled_devset.py data/devG --cue link --seed 21 --flip-probs 0.2 0.4 0.6 0.8;
# make_coupled_devset.py data/devF --cue shape --size 64 --seed 13 --train 1200
#   --flip-probs 0.2 0.4 0.6 0.8; carseg prepare recipes/toy.yaml data.dir=data/toy.
set -euo pipefail
py=${PY:-.venv/bin/python}
carseg=${CARSEG:-$py -m carcli}
# set | variant | run | data dir | data.source | overrides of recipes/toy.yaml
rows=(
  "A|toy recipe (dropout 0.1, weight decay 5e-4)|runs/fA-base|data/devA|prepared|"
  "A|dropout 0|runs/fA-d0|data/devA|prepared|calibrator.dropout=0"
  "A|dropout 0, weight decay 0|runs/fA-d0wd0|data/devA|prepared|calibrator.dropout=0 calibrator.weight_decay=0"
  "A|dropout 0, weight decay 0, seed 1|runs/fA-d0wd0-s1|data/devA|prepared|calibrator.dropout=0 calibrator.weight_decay=0 seed=1"
  "G|dropout 0, weight decay 0|runs/fG-d0wd0|data/devG|prepared|calibrator.dropout=0 calibrator.weight_decay=0"
  "F (64x64)|dropout 0, weight decay 0|runs/fF-d0wd0|data/devF|prepared|calibrator.dropout=0 calibrator.weight_decay=0"
  "toy|dropout 0, weight decay 0|runs/ftoy-d0wd0|data/toy|synthetic|calibrator.dropout=0 calibrator.weight_decay=0"
  "unseen (64x64)|dropout 0, weight decay 0|runs/unseen-f0|data/unseen|synthetic|calibrator.dropout=0 calibrator.weight_decay=0"
  "toy|dropout 0, weight decay 0 (threads 2; the F of the whole cascade runs/toy-f0)|runs/toy-f0|data/toy|synthetic|calibrator.dropout=0 calibrator.weight_decay=0 threads=2"
)
out_file=docs/results/calibrator_offsets.json
if [ "${TABLE:-}" = schedule ]; then
  out_file=docs/results/calibrator_schedule.json
  rows=(
    "A|the toy recipe (2500 steps, batch 32, lr 1e-3, milestones 1500 / 2200), seed 0 (the F of runs/devA-now)|runs/devA-now|data/devA|prepared|"
    "A|the toy recipe, seed 1 (the F of runs/devA-now-s1)|runs/devA-now-s1|data/devA|prepared|seed=1"
    "A|milestones 2000 / 2400|runs/fA-ms|data/devA|prepared|calibrator.lr_milestones=[2000,2400]"
    "A|lr 2e-3|runs/fA-lr2|data/devA|prepared|calibrator.lr=2e-3"
    "A|5000 steps (milestones 3000 / 4400): twice the compute|runs/fA-5000|data/devA|prepared|calibrator.steps=5000 calibrator.lr_milestones=[3000,4400]"
    "A|5000 steps at batch 16 (milestones 3000 / 4400): the same compute|runs/fA-b16|data/devA|prepared|calibrator.steps=5000 calibrator.batch_size=16 calibrator.lr_milestones=[3000,4400]"
    "A|5000 steps at batch 16, seed 1|runs/fA-b16-s1|data/devA|prepared|seed=1 calibrator.steps=5000 calibrator.batch_size=16 calibrator.lr_milestones=[3000,4400]"
    "G|the toy recipe, seed 0 (the F of runs/devG-now)|runs/devG-now|data/devG|prepared|"
    "G|the toy recipe, seed 1 (the F of runs/devG-now-s1)|runs/devG-now-s1|data/devG|prepared|seed=1"
    "G|5000 steps at batch 16|runs/fG-b16|data/devG|prepared|calibrator.steps=5000 calibrator.batch_size=16 calibrator.lr_milestones=[3000,4400]"
    "toy|the toy recipe (the F of runs/toy-now)|runs/toy-now|data/toy|synthetic|"
    "toy|5000 steps at batch 16|runs/ftoy-b16|data/toy|synthetic|calibrator.steps=5000 calibrator.batch_size=16 calibrator.lr_milestones=[3000,4400]"
  )
fi
if [ "${1:-}" = train ]; then
  for r in "${rows[@]}"; do
    IFS='|' read -r _ _ run data src over <<< "$r"
    echo "$carseg train-calibrator recipes/toy.yaml data.source=$src data.dir=$data run_dir=$run threads=1 $over --overwrite --quiet"
  done
  exit 0
fi
out='[]'
for r in "${rows[@]}"; do
  IFS='|' read -r set variant run data src over <<< "$r"
  [ -f "$run/calibrator/model.safetensors" ] || { echo "skip $run (not trained)" >&2; continue; }
  splits=test
  [ "$set" = A ] && splits="test train"
  $py experiments/joint/f_offsets.py "$run" "$data" --split $splits --json /tmp/f_offsets_row.json > /dev/null
  out=$($py - "$out" "$set" "$variant" "$run" /tmp/f_offsets_row.json <<'PY'
import json, sys
rows, name, variant, run, path = json.loads(sys.argv[1]), *sys.argv[2:]
res = json.load(open(path))
t = res["test"]
man = json.load(open(f"{run}/calibrator/manifest.json"))
f = lambda x: "-" if x is None else f"{x:.3f}"
per = ", ".join(f"{k}: {f(c['calibrator_offset'])} ({f(c['true'])} / {f(c['calibrator'])})"
                for k, c in t["classes"].items() if c["n_pixels"])
train = res.get("train")
rows.append([
    name, variant, run.split("/")[-1], f(t["max_calibrator_offset"]), per,
    f(train["max_calibrator_offset"]) if train else "-",
    f(man.get("best_val_ce")), f"{t['kl_ambiguous']:.4f}",
    f"{train['kl_ambiguous']:.4f}" if train else "-",
    round(man["wall_time_s"]),
])
print(json.dumps(rows))
PY
)
done
commit=$(git rev-parse --short HEAD)
$py - "$out" "$commit" "$out_file" <<'PY'
import json, sys
rows, commit = json.loads(sys.argv[1]), sys.argv[2]
NOTE_SCHEDULE = "F alone, offsets by experiments/joint/f_offsets.py as in the table above. Rows 'the toy recipe' are the F of a whole cascade of experiments/joint/every_set_table.sh (threads 1). The worst offset is a rare class's (class 3: 946 test pixels on A, 1389 on G), so one F's figure moves by about 0.015 with the seed; KL(q || F) over all ambiguous pixels is the steadier figure. Twice the steps at batch 32 (twice the compute) brings A to 0.010; twice the steps at batch 16 (the same compute as the recipe) brings A to 0.020 / 0.029 (two seeds, from 0.051 / 0.038) and lowers KL on every set, but G's worst offset rises (0.041 against 0.017 / 0.032): not adopted. Later milestones or a doubled learning rate at 2500 steps do not help."
NOTE = "F alone (train-calibrator), offsets by experiments/joint/f_offsets.py: carseg's own F loader and ClassCalibration as carseg evaluate computes them (checked identical to carseg evaluate on an imported bank of F's probabilities, experiments/joint/f_offsets_check.sh, on fA-base: 0.10604177985584506 both). The toy recipe's F was scored before (docs/results/joint_structure.json, commit bf26cc6, threads 2) A 0.136, G 0.087, F 0.032, toy 0.009, unseen 0.026; here (threads 1, same seed) A gives 0.106: one F's spread across thread counts is about 0.03 on A's class 3. G, F and toy were not retrained with the toy recipe here, nor unseen with any variant. Cause (experiments/joint/f_factor_pixels.py on A): the offset is class 3's, on the thin shape factors (halo, ring and fragment alike, touching the object or not); F gives the factor's class too little where q = 0.7 (-0.08 to -0.12 for class 3's halos and rings, on train and test) and about right where q = 0.3, the rest going to the background; A's test split has few class-3 factors (946 pixels), 82% of them at q = 0.7 (train: 46%), so its class-3 truth is 0.629 and the offset shows the q = 0.7 shortfall almost whole. On the train split the toy recipe's F misses too (0.043): under-fitting, not over-fitting. Adam's coupled L2 weight decay (torch Adam weight_decay 5e-4 on every parameter, the head and BatchNorm included) holds it back: dropout 0 alone changes nothing on A (0.106), dropout 0 with weight decay 0 brings A to 0.034 (train 0.012; with seed 1: 0.048, train 0.009, so A still misses 0.03 on test: the rest is generalisation to A's few class-3 test factors, within about 0.015 of seed noise), G to 0.023, F to 0.009, toy to 0.001, and roughly halves KL(q || F) on ambiguous pixels. Weight decay 0 alone (dropout kept) and longer training (5000 steps) were not run (time). Wall times: the same network and steps in every variant; they vary with the load another engineer put on the 2 shared cores (load average 2.5 to 6), not with the variant."
doc = {
    "command": "experiments/joint/f_offsets_table.sh (carseg train-calibrator recipes/toy.yaml data.source=prepared data.dir=DATA run_dir=RUN threads=1 OVERRIDES, then experiments/joint/f_offsets.py RUN DATA --split test [train])",
    "commit": commit,
    "machine": "x86_64, 2 CPU cores (shared), threads=1",
    "columns": [
        "set",
        "F variant (overrides of the toy recipe)",
        "run",
        "worst F offset (test)",
        "per class: offset (true / F) over its ambiguous test pixels",
        "worst F offset (train)",
        "best val CE (64 val images)",
        "KL(q || F) on ambiguous test pixels",
        "KL(q || F) on ambiguous train pixels",
        "train-calibrator wall s",
    ],
    "rows": rows,
    "note": NOTE,
}
if sys.argv[3] != "docs/results/calibrator_offsets.json":
    doc["note"] = NOTE_SCHEDULE
    doc["command"] = doc["command"].replace("f_offsets_table.sh", "f_offsets_table.sh with TABLE=schedule", 1)
    doc["machine"] = "x86_64, 2 CPU cores, threads=1, shared by 3-6 jobs at once (wall times are not costs)"
open(sys.argv[3], "w").write(json.dumps(doc, indent=1) + "\n")
PY
