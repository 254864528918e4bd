"""The region coupling head's training curve on a run's F: every 100 steps its squared error
on the validation pairs (what early stopping looks at) and its calls on the test split's
exact pairs (what it should get right), so that a selection rule can be judged on data with
rater labels.

    python experiments/joint/head_curve.py RUN DATA_DIR [--steps 1500] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf

from carcli.models.coupling import RegionCoupling
from carcli.training.coupling import _pair_batch, coupling_scores, predict_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from head_on_test import split_examples

    ex = {split: split_examples(args.run, args.data, split) for split in ("train", "val", "test")}
    tr = ex["train"]
    torch.manual_seed(0)
    head = RegionCoupling(tr.image.shape[1], tr.calib.shape[1], 16)
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    with_pairs = np.unique(tr.pairs[:, 0])
    rng = np.random.default_rng([0, 0xC0])
    curve = []
    head.train()
    for step in range(1, args.steps + 1):
        rows = np.sort(rng.choice(with_pairs, min(32, len(with_pairs)), replace=False))
        x, p, ids, pairs, target = _pair_batch(tr, rows)
        loss = nnf.mse_loss(torch.sigmoid(head(x, p, ids, pairs)), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            val_mse = float(np.mean((predict_pairs(head, ex["val"]) - ex["val"].target) ** 2))
            test_mse = float(np.mean((predict_pairs(head, ex["test"]) - ex["test"].target) ** 2))
            s = coupling_scores(head, ex["test"])
            head.train()
            row = {"step": step, "val_mse": val_mse, "test_mse": test_mse, **s}
            curve.append(row)
            print(
                f"{step:5d} val {val_mse:.4f} test {test_mse:.4f} acc {s['accuracy']:.3f} "
                f"coupled {s['coupled_found']:.3f} indep {s['independent_found']:.3f}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(curve, indent=1) + "\n")


if __name__ == "__main__":
    main()
