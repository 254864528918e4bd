#!/usr/bin/env bash
# GPU readiness check (one CUDA machine, under 8 minutes), short table printed last:
#   1. the toy cascade on the GPU with bf16 autocast and channels-last (shortened schedule);
#   2. with two or more GPUs, train-refiner and sample as 2 processes under torchrun (NCCL),
#      and the 2-process bank compared with the 1-process bank;
#   3. the training steps (`refiner_step_pixel`, `refiner_step_dcgan`, `calibrator_step` at
#      the LIDC recipe's settings) with and without the CUDA levers (speed.amp / train_bf16,
#      channels-last, fused Adam, lazy R1, torch.compile), each checked to take effect
#      (bf16 convolutions, NHWC weights, fused Adam, a compiled G);
#   4. `make bench` (every benchmark, on the GPU).
#   scripts/gpu_check.sh            # VENV=.venv by default; writes runs/gpu_check/
# Without a CUDA device it says so and exits 0 (nothing to check).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=$VENV/bin/python
export OMP_WAIT_POLICY=PASSIVE
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device; nothing to check (run it on a machine with a GPU)"
  exit 0
fi
out=runs/gpu_check
rm -rf "$out"
mkdir -p "$out"
log=$out/times.tsv
: >"$log"

$PY - <<'EOF'
import torch
n = torch.cuda.device_count()
print(f"torch {torch.__version__}, {n} x {torch.cuda.get_device_name(0)}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF
ngpu=$($PY -c "import torch; print(torch.cuda.device_count())")

args=(
  run_dir=$out/run data.dir=$out/data device=cuda speed.amp=bf16 speed.channels_last=true
  calibrator.steps=800 refiner.steps=500 sample.num_samples=32 evaluate.ged_counts=[16,32]
)
timed() {  # timed NAME CMD...: run, append "NAME<TAB>seconds" to the log
  local name=$1 t0 t1
  shift
  t0=$(date +%s%N)
  "$@"
  t1=$(date +%s%N)
  printf '%s\t%d.%d\n' "$name" $(((t1 - t0) / 1000000000)) $(((t1 - t0) / 100000000 % 10)) >>"$log"
}
carseg() { timeout 240 "$PY" -m carcli "$@" --quiet; }

timed prepare carseg prepare recipes/toy.yaml "${args[@]}"
timed train-calibrator carseg train-calibrator recipes/toy.yaml "${args[@]}"
timed train-refiner carseg train-refiner recipes/toy.yaml "${args[@]}"
timed sample carseg sample recipes/toy.yaml "${args[@]}"
timed evaluate carseg evaluate recipes/toy.yaml "${args[@]}"

if [ "$ngpu" -ge 2 ]; then
  two=(run_dir=$out/run2 "${args[@]:1}" refiner.steps=100)
  mkdir -p "$out/run2"
  cp -r "$out/run/calibrator" "$out/run2/"
  trun() { timeout 240 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m carcli "$@" --quiet; }
  timed "train-refiner x2 (100 steps)" trun train-refiner recipes/toy.yaml "${two[@]}"
  rm -rf "$out/run2/refiner" && cp -r "$out/run/refiner" "$out/run2/"
  timed "sample x2" trun sample recipes/toy.yaml "${two[@]}"
  $PY - "$out" <<'EOF'
import sys, h5py, numpy as np
out = sys.argv[1]
with h5py.File(f"{out}/run/samples/test.h5") as a, h5py.File(f"{out}/run2/samples/test.h5") as b:
    same = all(np.array_equal(a[k][...], b[k][...]) for k in ("samples", "calibration", "index"))
print(f"2-process bank equals 1-process bank: {same}")
open(f"{out}/bank_equal.txt", "w").write(str(same))
EOF
fi

timed "training steps, levers" timeout 420 "$PY" scripts/gpu_train_steps.py "$out/train_steps.json"

timed "make bench" timeout 300 make bench VENV="$VENV"

$PY - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [line.split("\t") for line in (out / "times.tsv").read_text().splitlines()]
m = json.loads((out / "run/eval/test/metrics.json").read_text())
print("\n== gpu_check ==")
for name, sec in rows:
    print(f"{name:32s} {float(sec):8.1f} s")
print(f"{'toy GED16 / ECE (bf16, NHWC)':32s} {m['ged']['16']:8.3f} / {m['ece']:.4f}")
if (out / "bank_equal.txt").exists():
    print(f"{'2-GPU bank == 1-GPU bank':32s} {(out / 'bank_equal.txt').read_text():>8s}")
steps = out / "train_steps.json"
if steps.exists():
    print("training steps (s/step; speed-up against the same entry's baseline):")
    for entry, levers in json.loads(steps.read_text()).items():
        base = levers["baseline"]["s"]
        for lever, res in levers.items():
            print(f"  {entry:22s} {lever:16s} {res['s']:8.4f}  {base / res['s']:5.2f}x"
                  f"  {res.get('check', '')}")
r = json.loads(Path("bench/results.json").read_text())
print(f"{'matmul fp32':32s} {r['matmul_gflops']:8.0f} GFLOP/s  ({r['machine']['device']})")
for k, v in r.items():
    if isinstance(v, dict) and "value" in v:
        extra = f"  {v['gflops']:.0f} GFLOP/s" if "gflops" in v else ""
        print(f"{k:32s} {v['value']:8.4g} {v['unit']}{extra}")
EOF
