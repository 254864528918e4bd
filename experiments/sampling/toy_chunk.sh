#!/usr/bin/env bash
# The toy recipe's sample stage (the pool of 4 x M draws weighted by D) on a trained run at
# several `speed.sample_chunk` values, alternating, with GNU time's wall / user / sys seconds;
# then whether each bank equals the first one bit for bit. Writes RESULT (docs/results JSON).
#   experiments/sampling/toy_chunk.sh RUN RESULT [CHUNK ...]   (default chunks: 0 32)
# e.g. experiments/sampling/toy_chunk.sh runs/toy-base docs/results/toy_sample_chunk.json 0 32 16 64
set -euo pipefail
run=$1; result=$2; shift 2
if [ $# -eq 0 ]; then set -- 0 32; fi
chunks=("$@")
carseg=${CARSEG:-.venv/bin/carseg}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
lines=$work/times.txt
i=0
for c in "${chunks[@]}"; do  # a chunk size may repeat (rounds); each run has its own folder
  i=$((i + 1)); dir=$work/run$i; mkdir -p "$dir"; cp -r "$run/calibrator" "$run/refiner" "$dir/"
  /usr/bin/time -f "$i $c %e %U %S" -a -o "$lines" \
    "$carseg" sample recipes/toy.yaml run_dir="$dir" speed.sample_chunk="$c" --overwrite --quiet
done
${PY:-.venv/bin/python} - "$work" "$lines" "$result" "$run" "${chunks[@]}" <<'PY'
import json, platform, subprocess, sys
import h5py, numpy as np
work, lines, result, run, *chunks = sys.argv[1:]
first = h5py.File(f"{work}/run1/samples/test.h5")["samples"][:]
rows = []
for line in open(lines):
    i, c, wall, user, sys_s = line.split()
    same = np.array_equal(first, h5py.File(f"{work}/run{i}/samples/test.h5")["samples"][:])
    cpu = float(user) + float(sys_s)
    rows.append([c, float(wall), float(user), float(sys_s), round(cpu, 1), "yes" if same else "no"])
base = rows[0][4]
for r in rows:
    r.append(f"{base / r[4]:.2f}x")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
json.dump({
    "command": f"experiments/sampling/toy_chunk.sh {run} {result} {' '.join(chunks)}",
    "commit": commit,
    "machine": f"{platform.machine()}, 2 CPU cores, shared with other jobs (compare CPU seconds within the run)",
    "columns": ["speed.sample_chunk", "wall s", "user s", "sys s", "CPU s (user + sys)",
                "bank equal to the first row's", "CPU speed-up"],
    "rows": rows,
    "note": "The toy recipe's sample stage (300 test images, M = 100 from a pool of 400 draws weighted by D) on one trained run; 0 = as many samples per pass as fit 2^25 logits (all 400 of 8 images at once).",
}, open(result, "w"), indent=1)
print(json.dumps(rows))
PY
