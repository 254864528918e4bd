"""Toy-recipe step levers that change the numbers (measurements only; no recipe default
changes): the F step and the toy G step with one override each, the settings alternating in
rounds within one process; the median CPU seconds (process_time, both threads) and wall
seconds per step. Lazy R1 and ``n_off``: the mean of 8 consecutive steps (whole cycles; D is
then updated only on its cycle's steps).

    OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python \
        experiments/training_speed/toy_levers.py [ROUNDS]

writes toy_levers.json beside this file (the first run: commit 84ca5e9, 2 rounds, the
2-core development machine shared with other training runs).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

REFINER = {
    "baseline": (),
    "M=4": ("refiner.num_samples=4",),
    "D width 16": ("discriminator.width=16",),
    "lazy R1 k=4": ("discriminator.r1_every=4",),
    "D every 2nd step (n_off=1)": ("discriminator.n_off=1",),
    "G width 12": ("refiner.width=12",),
    "G dropout 0": ("refiner.dropout=0",),
    "foreach Adam": ("speed.optimizer=foreach",),
}
CALIBRATOR = {
    "baseline": (),
    "F dropout 0": ("calibrator.dropout=0",),
    "F batch 16": ("calibrator.batch_size=16",),
    "F width 12": ("calibrator.width=12",),
    "foreach Adam": ("speed.optimizer=foreach",),
}
CYCLE = 8  # steps averaged where the step varies (lazy R1, D's on/off cycle)


def timed(fn, n: int) -> tuple[float, float]:
    cpus, walls = [], []
    for i in range(n):
        c, w = time.process_time(), time.perf_counter()
        fn(i)
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
    return statistics.median(cpus), statistics.median(walls)


def cycle_mean(fn, n: int) -> tuple[float, float]:
    c, w = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.process_time() - c) / n, (time.perf_counter() - w) / n


def d_on_its_cycle() -> None:
    """The bench's toy step updates D at every step; here D follows n_on / n_off."""
    import carcli.training.refiner as refiner

    every_step = refiner.refiner_step

    def step(nets, batch, recipe, task, k, ignore, _d_update, noise, i=0):
        d = recipe.discriminator
        out = every_step(
            nets, batch, recipe, task, k, ignore, i % (d.n_on + d.n_off) < d.n_on, noise, i
        )
        out.setdefault("loss_d", 0.0)
        return out

    refiner.refiner_step = step


def main() -> None:
    import torch

    from bench.entries import bench_calibrator_step_setup, refiner_step_setup
    from bench.harness import FULL

    torch.set_flush_denormal(True)
    torch.set_num_threads(2)
    d_on_its_cycle()
    dev = torch.device("cpu")
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    res: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for name, extra in CALIBRATOR.items():
            step, _ = bench_calibrator_step_setup(FULL.refiner, dev, extra, "toy")
            for _ in range(2):
                step()
            res.setdefault(("calibrator_step", name), []).append(timed(lambda i, f=step: f(), 7))
        for name, extra in REFINER.items():
            run, _, _ = refiner_step_setup(None, FULL.refiner, dev, extra, "toy")
            for i in range(2):
                run(i)
            cyc = "n_off" in name or "R1" in name
            res.setdefault(("toy_refiner_step", name), []).append(
                cycle_mean(run, CYCLE) if cyc else timed(run, 7)
            )
    out = []
    for (entry, name), v in res.items():
        base = res[(entry, "baseline")]
        row = {
            "entry": entry,
            "lever": name,
            "cpu": [round(c, 4) for c, _ in v],
            "wall": [round(w, 4) for _, w in v],
            "speedup_cpu": [round(b[0] / c, 2) for b, (c, _) in zip(base, v, strict=True)],
        }
        out.append(row)
        print(row, flush=True)
    path = Path(__file__).with_name("toy_levers.json")
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
