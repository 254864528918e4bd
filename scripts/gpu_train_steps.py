"""The training steps on CUDA with and without the speed levers (scripts/gpu_check.sh, #28).

`refiner_step_pixel`, `refiner_step_dcgan` and `calibrator_step` as `make bench` builds them
(the LIDC recipe's F, G and D through the training stages' wrappers), once per setting:
baseline, speed.amp=bf16, speed.train_bf16, channels-last, fused Adam, lazy R1 (k = 4:
a timed call is 4 steps), torch.compile of F and G, and all of them. Each setting is also
checked to take effect: the dtype a convolution of D (or F) computes in, the weights' memory
format (informative only: carseg builds its networks channels-last already), Adam's `fused`
flag, G's call being a compiled module.

    .venv/bin/python scripts/gpu_train_steps.py runs/gpu_check/train_steps.json
Without a CUDA device it says so and exits 0. ``--cpu-dry-run`` runs the same code on the CPU
at the quick sizes (the script's own check; its figures mean nothing, bf16 is CPU's).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LEVERS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "amp_bf16": ("speed.amp=bf16",),
    "train_bf16": ("speed.train_bf16=true",),
    "channels_last": ("speed.channels_last=true",),
    "fused_adam": ("speed.optimizer=fused",),
    "lazy_r1": ("discriminator.r1_every=4",),
    "compile": ("speed.compile=true",),
}
LEVERS["all"] = tuple(o for k, v in LEVERS.items() if k not in ("baseline", "amp_bf16") for o in v)


def check(nets: dict, extra: tuple[str, ...]) -> str:
    """What the levers of ``extra`` changed, read off the built networks."""
    import torch

    seen = []
    net, call, opt = nets["net"], nets["call"], nets["opt"]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    # a 1x1 or single-channel kernel is contiguous in both memory formats: take a 3x3 one
    conv = next((m for m in convs if m.kernel_size != (1, 1) and m.in_channels > 1), convs[0])
    dtypes: list[torch.dtype] = []
    hook = conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    nets["forward"]()
    hook.remove()
    seen.append(f"conv out {str(dtypes[0]).replace('torch.', '') if dtypes else '?'}")
    seen.append("NHWC" if conv.weight.is_contiguous(memory_format=torch.channels_last) else "NCHW")
    seen.append("fused" if opt.defaults.get("fused") else "adam")
    compiled = "OptimizedModule" in type(getattr(call, "net", call)).__name__
    seen.append("compiled" if compiled else "eager")
    want_bf16 = any("bf16" in o for o in extra)
    if want_bf16 and (not dtypes or dtypes[0] != torch.bfloat16):
        seen.append("NOT bf16!")
    if "speed.channels_last=true" in extra and "NHWC" not in seen:
        seen.append("NOT NHWC!")
    if "speed.optimizer=fused" in extra and "fused" not in seen:
        seen.append("NOT fused!")
    return ", ".join(seen)


def main(argv: list[str]) -> int:
    import torch

    from bench.harness import FULL, QUICK

    dry = "--cpu-dry-run" in argv
    argv = [a for a in argv if a != "--cpu-dry-run"]
    if not torch.cuda.is_available() and not dry:
        print("gpu_train_steps: no CUDA device; nothing to time")
        return 0
    from bench.entries import bench_calibrator_step_setup, refiner_step_setup
    from bench.harness import release, time_calls

    device = torch.device("cpu" if dry else "cuda")
    size = QUICK.refiner if dry else FULL.refiner
    out_path = Path(argv[0]) if argv else REPO / "runs" / "gpu_check" / "train_steps.json"
    results: dict[str, dict] = {}
    failed = False
    for entry in ("refiner_step_pixel", "refiner_step_dcgan", "calibrator_step"):
        for lever, extra in LEVERS.items():
            if entry == "calibrator_step" and lever == "lazy_r1":
                continue
            if entry == "calibrator_step":
                extra = tuple(o for o in extra if "r1_every" not in o)
            t0 = time.perf_counter()
            if entry == "calibrator_step":
                step, _, parts = bench_calibrator_step_setup(size, device, extra, parts=True)
                nets = {**parts, "forward": step}
                k = 1
            else:
                d_arch = entry.rsplit("_", 1)[1]
                run, recipe, _, parts = refiner_step_setup(d_arch, size, device, extra, parts=True)
                k = recipe.discriminator.r1_every

                def step(run=run, k=k) -> None:
                    for i in range(k):
                        run(i)

                nets = {**parts, "forward": lambda run=run: run(0)}
            step()  # compiles, creates kernels
            first = time.perf_counter() - t0
            step()
            seconds = time_calls(step, 5, device) / k
            note = check(nets, extra)
            failed |= "NOT" in note
            results.setdefault(entry, {})[lever] = {"s": seconds, "first_s": first, "check": note}
            print(f"{entry:20s} {lever:14s} {seconds:8.4f} s/step  first {first:6.1f} s  {note}")
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(results, indent=1) + "\n")
            del nets
            release()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
