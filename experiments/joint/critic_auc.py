"""Does D see which samples miss within-0.8? G's draws of the first N test images (as
`sample` draws them, without recombination), D's logit on each (its softmax, as in training),
and the AUC of D's logit for samples within IoU 0.8 of a true mode against the others,
pooled and within each image.

    python experiments/joint/critic_auc.py RUN DATA_DIR [--images 60]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import mannwhitneyu

from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile
from carcli.metrics.distance import pairwise_distance
from carcli.metrics.modes import merge_modes
from carcli.runtime.networks import load_network
from carcli.sampling.sample import critic_scores, image_noise


def _auc(good: np.ndarray, bad: np.ndarray) -> float:
    return float(mannwhitneyu(good, bad).statistic / (len(good) * len(bad)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--samples", type=int, default=100)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    ds = DatasetFile(f"{args.data}/test.h5")
    info, src = ds.info, BatchSource(ds)
    nets = {
        role: load_network(f"{args.run}/refiner/{f}", stage, role, info, "-").eval()
        for role, stage, f in (
            ("refiner", "refiner", "model.safetensors"),
            ("discriminator", "refiner", "discriminator.safetensors"),
        )
    }
    F = load_network(
        f"{args.run}/calibrator/model.safetensors", "calibrator", "calibrator", info, "-"
    )
    F.eval()
    G, D = nets["refiner"], nets["discriminator"]
    scores, ok = [], []
    for i in range(args.images):
        b = src.get(np.array([i]), None, annotation=np.zeros(1, dtype=np.int64))
        calib = F(b.cond).softmax(1)
        eps = image_noise(0, i, args.samples, G.noise_dim)[None]
        logits = G(b.image, calib, num_samples=args.samples, noise=eps)
        scores.append(critic_scores(D, b.image, logits)[0])
        s = logits.argmax(2)[0].numpy().astype(np.uint8)
        label, w = ds.h5["label"][i], ds.h5["label_weight"][i]
        d, valid = pairwise_distance(
            s, label[merge_modes(label, w)[0]], num_classes=info.num_classes
        )
        sim = 1 - d
        if valid is not None:
            sim[~valid] = 1
        ok.append(sim.max(1) >= 0.8 - 1e-9)
    sc, good = np.concatenate(scores), np.concatenate(ok)
    within = [_auc(x[o], x[~o]) for x, o in zip(scores, ok, strict=True) if 0 < o.sum() < len(o)]
    print(
        f"below within-0.8: {1 - good.mean():.4f}; AUC pooled {_auc(sc[good], sc[~good]):.3f}, "
        f"within images {np.mean(within):.3f} ({len(within)} images with both)"
    )


if __name__ == "__main__":
    main()
