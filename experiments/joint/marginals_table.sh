#!/usr/bin/env bash
# docs/results/region_marginals.json: each ambiguous region's answer frequencies in G's samples
# (as drawn) and in F's probabilities against the truth (experiments/joint/marginals.py).
set -euo pipefail
py=${PY:-.venv/bin/python}
rows=("C|runs/devC-none|data/devC" "F (64x64)|runs/devF-none|data/devF" "G (link cue)|runs/devG-none|data/devG"
      "A|runs/devA-none|data/devA" "toy|runs/toy-none|data/toy" "unseen|runs/unseen|data/unseen")
out='[]'
for r in "${rows[@]}"; do
  IFS='|' read -r name run data <<< "$r"
  [ -f "$run/samples/test.h5" ] || continue
  line=$($py experiments/joint/marginals.py "$run" "$data")
  out=$(printf '%s' "$out" | $py -c "import json,sys; rows=json.load(sys.stdin); m=json.loads(sys.argv[2]); rows.append([sys.argv[1], m['n_regions']] + [f'{m[k]:.3f}' for k in ('g', 'oracle', 'f', 'g_f')]); print(json.dumps(rows))" "$name" "$line")
done
commit=$(git rev-parse --short HEAD)
$py - "$out" "$commit" <<'PY'
import json, sys
rows, commit = json.loads(sys.argv[1]), sys.argv[2]
doc = {
    "command": "experiments/joint/marginals_table.sh (experiments/joint/marginals.py RUN DATA on the runs sampled as drawn; unseen: its own bank)",
    "commit": commit,
    "machine": "x86_64, 2 CPU cores",
    "columns": ["set", "regions", "G: TV to the truth", "oracle (100 draws)", "F: TV to the truth (no sampling noise)", "TV(G, F)"],
    "rows": rows,
    "note": "Per ambiguous region of the test split: total variation between the frequencies of its true states and those of G's 100 samples, of as many draws from the truth, and of F's probabilities averaged over the region.",
}
open("docs/results/region_marginals.json", "w").write(json.dumps(doc, indent=1) + "\n")
PY
