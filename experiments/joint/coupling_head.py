"""Fit the region coupling head on a trained run's F, without retraining G (issue 25 study).

python experiments/joint/coupling_head.py RUN DATA_DIR [--steps 1000] [--lr 2e-3] [--seed 0]
Writes RUN/refiner/coupling.safetensors and prints its scores on the train and val pairs;
then `carseg sample recipes/toy.yaml run_dir=RUN data.dir=DATA_DIR sample.region_coupling=learned`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile, split_path
from carcli.runtime.networks import COUPLING, load_network
from carcli.training.coupling import fit_coupling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--link", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with (
        DatasetFile(split_path(args.data, "train")) as tr,
        DatasetFile(split_path(args.data, "val")) as va,
    ):
        F_net = load_network(args.run / "calibrator" / "model.safetensors", "calibrator",
                             "calibrator", tr.info, "carseg train-calibrator")  # fmt: skip
        t0 = time.time()
        settings = dict(steps=args.steps, lr=args.lr, seed=args.seed,
                        region_threshold=args.threshold, region_link=args.link)  # fmt: skip
        scores = fit_coupling(F_net, BatchSource(tr), BatchSource(va), settings,
                              torch.device("cpu"), args.run / "refiner" / COUPLING)  # fmt: skip
    print(json.dumps({"seconds": round(time.time() - t0, 1), **scores}, indent=1))


if __name__ == "__main__":
    main()
