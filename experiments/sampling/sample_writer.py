"""The bank writer's share of `carseg sample` (issue #19): `run_sample` end to end at the LIDC
shapes (128x128, 2 classes, the LIDC recipe's F and G, random weights), with the HDF5 writes
on the background thread (`background`, what `sample` does) or inline (`inline`), variants
alternated in rounds within one run, each in a fresh child process.

    .venv/bin/python experiments/sampling/sample_writer.py [--rounds 2] [--images 32]
        [--samples 100]
    .venv/bin/python experiments/sampling/sample_writer.py --old-src DIR
        # adds `old`: carcli/ at DIR
    .venv/bin/python experiments/sampling/sample_writer.py --run runs/toy-sq100
        # a trained run's test split

`--old-src` takes a folder holding another version of the `carcli` package (e.g. one
extracted with `git archive COMMIT carcli | tar -x -C DIR`) and measures it as `old`.
Per run: the wall time of the stage from its first draw to its return (`after_first_draw`),
the time inside `draw` (`draw_s`), and the rest, which is what the writes cost the sampler
(`stall_s`: inline chunk and bank writes, or waiting for the writer thread, and the tail
after the last draw); `stall_share` = stall_s / after_first_draw.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def child(
    mode: str, root: Path, images: int, samples: int, chunk: int, batch: int, run: Path | None
) -> None:
    import shutil

    import numpy as np
    import torch

    import carcli.sampling.chunks as chunks_mod
    import carcli.stages.sample as sample_mod
    from carcli.data.dataset import Classes, DatasetFile, write_dataset
    from carcli.recipe.load import load_recipe
    from carcli.runtime.networks import save_network
    from carcli.training.networks import new_calibrator, new_refiner

    overrides = [
        f"run_dir={root / 'run'}",
        f"sample.num_samples={samples}",
        f"sample.chunk_size={chunk}",
        f"sample.batch_size={batch}",
        "sample.split=test",
    ]
    if run is not None:  # a trained run: its recipe, networks and dataset
        recipe = load_recipe(str(run / "refiner" / "recipe.yaml"), overrides)
        for stage in ("calibrator", "refiner"):
            if not (root / "run" / stage).exists():
                shutil.copytree(run / stage, root / "run" / stage)
    else:
        overrides += [f"data.dir={root / 'data'}", "data.source=prepared"]
        recipe = load_recipe(str(REPO / "recipes" / "lidc.yaml"), overrides)
    test = root / "data" / "test.h5"
    if run is None and not test.exists():
        rng = np.random.default_rng(0)
        write_dataset(
            test,
            image=rng.standard_normal((images, 1, 128, 128)).astype(np.float32),
            label=rng.integers(0, 2, (images, 1, 128, 128), dtype=np.uint8),
            classes=Classes(2),
        )
        with DatasetFile(test) as ds:
            info = ds.info
        torch.manual_seed(0)
        run = root / "run"
        save_network(run / "calibrator" / "model.safetensors", new_calibrator(recipe, info),
                     "calibrator", "calibrator", recipe.calibrator.arch, info, 0)  # fmt: skip
        save_network(run / "refiner" / "model.safetensors", new_refiner(recipe, info),
                     "refiner", "refiner", recipe.refiner.arch, info, 0)  # fmt: skip
    if mode != "old":
        chunks_mod.BACKGROUND_WRITER = mode == "background"
    spent, first = [0.0], [None]
    original = chunks_mod.draw

    def timed(*a, **k):
        t0 = time.perf_counter()
        if first[0] is None:
            first[0] = t0
        try:
            return original(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t0

    chunks_mod.draw = timed
    bank = sample_mod.run_sample(recipe, overwrite=True, quiet=True)
    end = time.perf_counter()
    span = end - first[0]
    out = {
        "mode": mode,
        "after_first_draw": span,
        "draw_s": spent[0],
        "stall_s": span - spent[0],
        "stall_share": (span - spent[0]) / span,
        "bank_bytes": bank.stat().st_size,
        "samples_per_s": _bank_samples(bank) / span,
    }
    import hashlib

    out["bank_sha256"] = hashlib.sha256(bank.read_bytes()).hexdigest()
    print(json.dumps(out))


def _bank_samples(bank: Path) -> int:
    import h5py

    with h5py.File(bank, "r") as h5:
        return int(h5["samples"].shape[0] * h5["samples"].shape[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--old-src", type=Path)
    p.add_argument("--run", type=Path, help="a trained run (its recipe, F, G and test split)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.root, args.images, args.samples, args.chunk, args.batch, args.run)
        return
    modes = ["inline", "background"] + (["old"] if args.old_src else [])
    rows: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for mode in modes:
                env = dict(os.environ)
                src = args.old_src if mode == "old" else REPO
                env["PYTHONPATH"] = str(Path(src).resolve())
                cmd = [sys.executable, __file__, "--child", mode, "--root", tmp]
                cmd += ["--images", str(args.images), "--samples", str(args.samples)]
                cmd += ["--chunk", str(args.chunk), "--batch", str(args.batch)]
                cmd += ["--run", str(args.run.resolve())] if args.run else []
                res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                if res.returncode:
                    sys.exit(f"{mode} failed:\n{res.stderr}")
                rows[mode].append(json.loads(res.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1} {mode}: {rows[mode][-1]}", file=sys.stderr, flush=True)
    what = f"{args.run} test split" if args.run else f"{args.images} images 128x128"
    print(
        f"run_sample, {what} x {args.samples} samples, chunks of {args.chunk}, "
        f"median of {args.rounds}"
    )
    head = (
        "writer | s from first draw | samples/s | s in draw | stall s | stall share | bank sha256"
    )
    print(f"| {head} |")
    print("|---|---|---|---|---|---|---|")
    for mode in modes:
        med = {
            k: statistics.median(r[k] for r in rows[mode])
            for k in rows[mode][0]
            if k.endswith(("draw", "_s", "share"))
        }
        sha = {r["bank_sha256"][:12] for r in rows[mode]}
        print(
            f"| {mode} | {med['after_first_draw']:.1f} | {med['samples_per_s']:.1f} | "
            f"{med['draw_s']:.1f} | {med['stall_s']:.2f} | {med['stall_share']:.1%} | "
            f"{', '.join(sorted(sha))} |"
        )


if __name__ == "__main__":
    main()
