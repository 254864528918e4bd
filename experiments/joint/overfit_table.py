"""docs/results/overfit_check.json: the check of `calibrator.overfit_ratio` on every dev set's
trained F (F's KL from the labels on the validation split against that on as many training
images, before the class-bias refit), with the threshold of the toy recipe.

    python experiments/joint/overfit_table.py

Each row's F is RUN/calibrator/model.safetensors rebuilt by carseg's loader; where it carries
a refit (`recalibration` in its metadata), the fitted class biases are taken off its last
layer again, so the check sees F as trained, as the stage does. The figures are
`carcli.training.overfit.overfit_check`'s, the function the stage calls.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from carcli.artefacts.checkpoint import load_weights
from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile, split_path
from carcli.recipe.load import load_recipe
from carcli.runtime.networks import load_network
from carcli.training.overfit import overfit_check

REPO = Path(__file__).resolve().parents[2]
# set | labels | run (runs/...) with F trained by the toy recipe | data dir
ROWS = [
    ("A", "exact modes", "devA-now", "data/devA"),
    ("A, seed 1", "exact modes", "devA-now-s1", "data/devA"),
    ("C", "exact modes", "devC-now", "data/devC"),
    ("E", "exact modes", "devE-now", "data/devE"),
    ("F (64x64)", "exact modes", "devF-now", "data/devF"),
    ("G", "exact modes", "devG-now", "data/devG"),
    ("G, seed 1", "exact modes", "devG-now-s1", "data/devG"),
    ("toy", "exact modes", "toy-now", "data/toy"),
    ("toy, seed 1", "exact modes", "rc/toy-s1", "data/toy"),
    ("unseen (64x64)", "exact modes", "unseen-now", "data/unseen"),
    ("C4", "4 raters (train); val exact", "rc/devC4", "data/devC4"),
    ("C4v", "4 raters (train and val)", "rc/devC4", "data/devC4v"),
    ("G4", "4 raters (train and val)", "x/g4-plain", "data/devG4"),
]
OUT = REPO / "docs" / "results" / "overfit_check.json"


def as_trained(run: Path, info) -> torch.nn.Module:
    path = run / "calibrator" / "model.safetensors"
    f = load_network(path, "calibrator", "calibrator", info, "-").eval()
    _, meta = load_weights(path, stage="calibrator", make_cmd="-")
    rec = meta.get("recalibration")
    if rec:
        with torch.no_grad():
            f.head.bias.sub_(torch.tensor(rec["class_bias"]))
    return f


def main() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from docs_tables import write_result

    torch.set_num_threads(1)
    recipe = load_recipe(str(REPO / "recipes" / "toy.yaml"), [])
    threshold = recipe.calibrator.overfit_ratio
    rows = []
    for label, labels, run, data in ROWS:
        run_dir = REPO / "runs" / run
        if not (run_dir / "calibrator" / "model.safetensors").exists():
            print(f"skipped {label}: no {run_dir}/calibrator/model.safetensors")
            continue
        with (
            DatasetFile(split_path(str(REPO / data), "train"), validate=True) as tr,
            DatasetFile(split_path(str(REPO / data), "val"), validate=True) as va,
        ):
            f = as_trained(run_dir, tr.info)
            check = overfit_check(
                f, BatchSource(tr), BatchSource(va), torch.device("cpu"), 32, 0, threshold
            )
        verdict = "over-fitted: a regularised F is trained" if check["overfit"] else "kept"
        rows.append(
            [
                label,
                labels,
                f"runs/{run}",
                f"{check['train_kl']:.5f}",
                f"{check['val_kl']:.5f}",
                f"{check['ratio']:.2f}",
                verdict,
            ]
        )
        print(" | ".join(rows[-1]))
    write_result(
        OUT,
        "python experiments/joint/overfit_table.py (carcli.training.overfit.overfit_check on "
        "each run's F as trained, the refit's class biases taken off)",
        "x86_64, 2 CPU cores, threads=1",
        [
            "set",
            "labels",
            "F (the toy recipe's, as trained)",
            "KL from the labels, training images",
            "KL, validation split",
            "ratio",
            f"check (threshold {threshold:g}x)",
        ],
        rows,
        note="KL: F's KL divergence from the label distribution, averaged over the valid pixels "
        "of the validation split and of as many training images drawn at random (no "
        "augmentation), before the class-bias refit, as train-calibrator computes it. C4 and "
        "C4v share their training split (and so F); C4v's and G4's validation splits hold 4 "
        "raters per image as their training splits do, C4's the exact answers.",
    )
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
