"""The region coupling head of a trained run scored on the test split's exact labels.

    python experiments/joint/head_on_test.py RUN DATA_DIR
    python experiments/joint/head_on_test.py --table   # docs/results/raters_head.json

The pairs of F's separate uncertain regions of every test image (found as at sampling) get
their exact association from the test split's modes (label_weight), and the head's calls
(probability above 1/3) are compared with them: how many truly coupled pairs it calls
coupled, how many independent ones independent. Tells a head that learned the structure from
noisy (rater) training labels from one that did not, on labels it never saw.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile, split_path
from carcli.runtime.networks import COUPLING, load_network
from carcli.training.coupling import CouplingExamples, coupling_examples, coupling_scores

# set | the head's targets | run | data (test split exact)
TABLE = [
    ("G (exact modes)", "exact", "rc/devG-s0", "data/devG"),
    ("G4 (4 raters)", "U-statistic (before)", "r4/devG4", "data/devG4"),
    ("G4", "permutation-standardised (the toy recipe)", "r6b/devG4", "data/devG4"),
    ("C4 (4 raters; val exact)", "U-statistic (before)", "r4/devC4", "data/devC4"),
    ("C4", "permutation-standardised (the toy recipe)", "r6b/devC4", "data/devC4"),
    ("C4v (4 raters)", "U-statistic (before)", "r4/devC4v", "data/devC4v"),
    ("C4v", "permutation-standardised (the toy recipe)", "r6b/devC4v", "data/devC4v"),
]


def split_examples(run: Path, data: Path, split: str) -> CouplingExamples:
    """The pairs of F's regions (as at sampling) of one split, with their labels' targets."""
    with DatasetFile(split_path(str(data), split), validate=True) as ds:
        f = load_network(run / "calibrator" / "model.safetensors", "calibrator",
                         "calibrator", ds.info, "-").eval()  # fmt: skip
        return coupling_examples(f, BatchSource(ds), 0.9, 1, torch.device("cpu"))


def scores(run: Path, data: Path) -> dict:
    ex = split_examples(run, data, "test")
    with DatasetFile(split_path(str(data), "test"), validate=True) as te:
        head = load_network(run / "refiner" / COUPLING, "refiner", "coupling", te.info, "-")
    return coupling_scores(head, ex)


def table() -> None:
    import sys

    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo / "scripts"))
    from docs_tables import write_result

    rows = []
    for label, targets, run, data in TABLE:
        s = scores(repo / "runs" / run, repo / data)
        rows.append(
            [
                label,
                targets,
                f"runs/{run}",
                str(s["pairs"]),
                f"{s['accuracy']:.3f}",
                f"{s['coupled_found']:.3f}",
                f"{s['independent_found']:.3f}",
            ]
        )
        print(" | ".join(rows[-1]))
    write_result(
        repo / "docs" / "results" / "raters_head.json",
        "python experiments/joint/head_on_test.py --table",
        "x86_64, 2 CPU cores, threads=1",
        [
            "set",
            "the head's targets from the training labels",
            "run",
            "test pairs",
            "calls right",
            "coupled pairs called coupled",
            "independent pairs called independent",
        ],
        rows,
        note="The region coupling head of each run (fitted on its training split's labels) "
        "called on the pairs of F's separate uncertain regions of the test split, whose exact "
        "modes give each pair's true association (coupled above 1/3).",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?")
    ap.add_argument("data", type=Path, nargs="?")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.table:
        table()
        return
    print(json.dumps({"run": str(args.run), "test": scores(args.run, args.data)}))


if __name__ == "__main__":
    main()
