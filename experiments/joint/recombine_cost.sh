#!/usr/bin/env bash
# docs/results/recombine_cost.json: what the learned region coupling adds to sampling, from one
# bench run of `draw` (sample_128_m100, the LIDC recipe's networks) and of the coupling head
# plus recombination of a bank of the same size (recombine_128_m100).
set -euo pipefail
py=${PY:-.venv/bin/python}
out=${1:-/tmp/recombine_bench.json}
OMP_WAIT_POLICY=PASSIVE $py bench/run.py --only sample_128_m100,recombine_128_m100 --out "$out"
$py - "$out" "$(git rev-parse --short HEAD)" <<'PY'
import json, sys
r, commit = json.load(open(sys.argv[1])), sys.argv[2]
draw, rec = r["sample_128_m100"]["value"], r["recombine_128_m100"]["value"]
both = 1 / (1 / draw + 1 / rec)
m = r["machine"]
doc = {
    "command": "experiments/joint/recombine_cost.sh (bench/run.py --only sample_128_m100,recombine_128_m100)",
    "commit": commit,
    "machine": f"{m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')}, {m.get('device')}",
    "columns": ["128x128, 4 images x M=100", "samples/s"],
    "rows": [
        ["`draw` (sample_128_m100)", f"{draw:.0f}"],
        ["coupling head + recombination (recombine_128_m100)", f"{rec:.0f}"],
        ["both: sampling with `region_coupling: learned`", f"{both:.0f} ({100 * (draw / both - 1):.1f}% more time than `draw`)"],
    ],
    "note": "One run; the recombination: 8 uncertain discs per image, a randomly initialised head.",
}
open("docs/results/recombine_cost.json", "w").write(json.dumps(doc, indent=1) + "\n")
PY
$py scripts/docs_tables.py
