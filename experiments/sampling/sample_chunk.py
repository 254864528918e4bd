"""`speed.sample_chunk` (samples per image in one pass of G's decoder) at the shapes of the
sampling entries of `bench/run.py`, the chunk sizes alternated in rounds within one run (so a
loaded machine affects them alike; compare within a row).

    .venv/bin/python experiments/sampling/sample_chunk.py [--rounds 3] [--repeats 2]

Each cell is `bench_sample` of bench/entries.py (the LIDC / Cityscapes recipe's networks with
random weights and the recipe's speed options) with only `speed.sample_chunk` replaced;
0 is "as many samples as fit 2^25 logits". Prints one line per entry: for each k, the median
samples/s and each round's.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import entries as bench  # noqa: E402  (bench_sample looks `_recipe` up here)
from bench.harness import FULL  # noqa: E402

CHUNKS = {
    "sample_128": (0, 2, 4, 8),
    "sample_128_m100": (0, 2, 4, 8),
    "sample_256x512": (0, 1, 2),
}


def with_chunk(k: int):
    """bench/entries.py's `_recipe` with speed.sample_chunk = k."""
    original = bench._recipe

    def recipe(name: str):
        r = original(name)
        return dataclasses.replace(r, speed=dataclasses.replace(r.speed, sample_chunk=k))

    return recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    cpu = torch.device("cpu")
    original = bench._recipe
    with tempfile.TemporaryDirectory(prefix="carseg-chunk-") as tmp:
        for name, chunks in CHUNKS.items():
            size = dataclasses.replace(getattr(FULL, name), repeats=args.repeats)
            got: dict[int, list[float]] = {k: [] for k in chunks}
            for _ in range(args.rounds):
                for k in chunks:
                    bench._recipe = with_chunk(k)
                    try:
                        out, _ = bench.bench_sample(size, cpu, Path(tmp))
                    finally:
                        bench._recipe = original
                    got[k].append(out["value"])
            cells = [
                f"{k}: {statistics.median(v):.1f} ({' / '.join(f'{x:.1f}' for x in v)})"
                for k, v in got.items()
            ]
            print(f"{name}, samples/s by sample_chunk k: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
