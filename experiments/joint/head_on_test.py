"""The region coupling head of a trained run scored on the test split's exact labels.

    python experiments/joint/head_on_test.py RUN DATA_DIR

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
from carcli.training.coupling import coupling_examples, coupling_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("data", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with DatasetFile(split_path(str(args.data), "test"), validate=True) as te:
        f = load_network(args.run / "calibrator" / "model.safetensors", "calibrator",
                         "calibrator", te.info, "-").eval()  # fmt: skip
        head = load_network(args.run / "refiner" / COUPLING, "refiner", "coupling", te.info, "-")
        meta = json.loads(json.dumps(getattr(head, "meta", {}) or {}))
        ex = coupling_examples(f, BatchSource(te), 0.9, 1, torch.device("cpu"))
        print(json.dumps({"run": str(args.run), "test": coupling_scores(head, ex), **meta}))


if __name__ == "__main__":
    main()
