#!/usr/bin/env bash
# docs/results/pool_cost.json: the sample stage's wall time on a trained toy run with the
# toy recipe's pool (region_pool 4, pool_critic 3, pool_target calibrator) against one draw per sample (pool 1),
# alternating, ROUNDS rounds, in one run.   experiments/joint/pool_cost.sh RUN [ROUNDS]
set -euo pipefail
run=$1; rounds=${2:-2}
carseg=${CARSEG:-.venv/bin/carseg}
tmp=$(mktemp -d)
cp -r "$run/calibrator" "$run/refiner" "$tmp/"
declare -A opts=([pool1]="sample.region_pool=1 sample.pool_critic=0 sample.pool_target=pool" [pool4]="")
declare -A times=([pool1]="" [pool4]="")
for r in $(seq "$rounds"); do
  for v in pool1 pool4; do
    rm -rf "$tmp/samples"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    $carseg sample recipes/toy.yaml run_dir="$tmp" ${opts[$v]} --overwrite --quiet
    times[$v]="${times[$v]} $(echo "$(date +%s.%N) - $t0" | bc)"
  done
done
rm -rf "$tmp"
${PY:-.venv/bin/python} - "$run" "${times[pool1]}" "${times[pool4]}" <<'PY'
import json, platform, subprocess, sys
run, p1, p4 = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
fmt = lambda xs: " / ".join(f"{x:.1f}" for x in xs)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
out = {
    "command": f"experiments/joint/pool_cost.sh {run} {len(p1)}",
    "commit": commit,
    "machine": f"{platform.machine()}, 2 CPU cores",
    "columns": ["sampling (toy test split, 100 samples per image)", "sample stage wall time, s (rounds)", "ratio to pool 1"],
    "rows": [
        ["pool 1 (each draw used once)", fmt(p1), "1"],
        ["pool 4 weighted by exp(3 x D's logit), tilted to F (the toy recipe)", fmt(p4),
         " / ".join(f"{b / a:.2f}" for a, b in zip(p1, p4))],
    ],
    "note": "Rounds alternate the two settings in one run; each time includes start-up, F, G, the coupling head and writing the bank.",
}
json.dump(out, open("docs/results/pool_cost.json", "w"), indent=1)
print(json.dumps(out["rows"]))
PY
