"""The calibrator F's per-class offsets on a dataset split, without G or a sample bank.

    python experiments/joint/f_offsets.py RUN DATA_DIR [--split test [train ...]] [--json OUT]

F is RUN/calibrator/model.safetensors, rebuilt by carseg's own loader
(`carcli.runtime.networks.load_network`, which checks it fits the dataset) and applied as
`carseg sample` applies it (`carcli.sampling.sample.draw`): in eval mode on the batch's
``cond`` (the image, plus the black-box channels where the dataset has them), softmax over the
classes, stored as float16 in the bank, which `evaluate` reads back as float32; the same
round trip is made here. The figures are then those of `carseg evaluate` for F: per image,
``label_probabilities(label, label_weight)`` gives q and the valid mask, and
``ClassCalibration.update(q, p, None, valid)`` pools the split (as
``EvalAccumulator._frequency_columns``); ``max_calibrator_offset`` is `evaluate`'s
``class_calibration.max_calibrator_offset``, the "worst class offset" of the acceptance bar.

Also printed: F's soft cross-entropy -sum_k q_k log p_k (nats, float32 p, not rounded) and
KL(q || p) (the cross-entropy less the truth's entropy: 0 for a perfect F), each averaged
over the valid pixels and over the pixels ambiguous for some class. A split from
the train file tells under-fitting (train offset as large) from over-fitting (train small).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.special import entr

from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile, split_path
from carcli.metrics.calibration import AMBIGUITY_EPS, ClassCalibration, label_probabilities
from carcli.runtime.networks import load_network


def calibrator_probabilities(f_net: torch.nn.Module, source: BatchSource, rows: np.ndarray):
    """F's probabilities [B, K, H, W] (float32) for dataset ``rows``, as `draw` computes them."""
    with torch.inference_mode():
        b = source.get(rows, None, annotation=np.zeros(len(rows), dtype=np.int64))
        return f_net(b.cond).softmax(1).float().numpy()


def split_offsets(
    run: Path,
    data_dir: Path,
    split: str,
    batch: int = 64,
    save_probs: Path | None = None,
    wrap=None,
) -> dict:
    """ClassCalibration's result for F on ``split`` plus the cross-entropy figures;
    ``save_probs``: also write F's probabilities [N, K, H, W] (float32) there (.npy);
    ``wrap``: a function of F's network returning the network to measure (a refit on top)."""
    with DatasetFile(split_path(str(data_dir), split), validate=True) as ds:
        info = ds.info
        f_net = load_network(
            run / "calibrator" / "model.safetensors", "calibrator", "calibrator", info, "-"
        ).eval()
        if wrap is not None:
            f_net = wrap(f_net)
        source = BatchSource(ds)
        cc = ClassCalibration(info.num_classes)
        ce_sum = ce_n = ce_amb_sum = ce_amb_n = h_sum = h_amb_sum = 0.0
        kept = []
        for a in range(0, info.n, batch):
            rows = np.arange(a, min(info.n, a + batch))
            p32 = calibrator_probabilities(f_net, source, rows)
            p16 = p32.astype(np.float16).astype(np.float32)  # the bank's float16, read back
            if save_probs is not None:
                kept.append(p32)
            labels = ds.read_rows("label", rows)
            weights = ds.weights(rows)
            for i in range(len(rows)):
                q, valid = label_probabilities(
                    labels[i], weights[i], info.num_classes, info.ignore_index
                )
                cc.update(q, p16[i], None, valid)
                ce = -(q * np.log(np.clip(p32[i], 1e-12, None))).sum(0)  # [H, W]
                h = entr(q).sum(0)  # the truth's entropy: CE - h is KL(q || p)
                amb = ((q > AMBIGUITY_EPS) & (q < 1 - AMBIGUITY_EPS)).any(0) & valid
                ce_sum += float(ce[valid].sum())
                ce_n += int(valid.sum())
                ce_amb_sum += float(ce[amb].sum())
                h_sum += float(h[valid].sum())
                h_amb_sum += float(h[amb].sum())
                ce_amb_n += int(amb.sum())
        if save_probs is not None:
            np.save(save_probs, np.concatenate(kept))
        out = cc.result()
        out["split"] = split
        out["n_images"] = info.n
        out["cross_entropy"] = ce_sum / ce_n if ce_n else None
        out["cross_entropy_ambiguous"] = ce_amb_sum / ce_amb_n if ce_amb_n else None
        out["kl"] = (ce_sum - h_sum) / ce_n if ce_n else None
        out["kl_ambiguous"] = (ce_amb_sum - h_amb_sum) / ce_amb_n if ce_amb_n else None
        out["class_names"] = list(info.class_names)
        return out


def _f(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def report(res: dict) -> str:
    """Readable lines: per class true / F / offset and the worst."""
    lines = [f"split {res['split']} ({res['n_images']} images)"]
    lines.append("  class          pixels   true      F  offset")
    for k, row in res["classes"].items():
        name = res["class_names"][int(k)] if res.get("class_names") else k
        lines.append(
            f"  {k} {name:<12} {row['n_pixels']:7d} {_f(row['true'])} {_f(row['calibrator'])}"
            f"  {_f(row['calibrator_offset'])}"
        )
    worst, mean = res["max_calibrator_offset"], res["mean_calibrator_offset"]
    lines.append(f"  worst offset {_f(worst)}   mean {_f(mean)}")
    lines.append(
        f"  cross-entropy {_f(res['cross_entropy'])} (all valid pixels), "
        f"{_f(res['cross_entropy_ambiguous'])} (ambiguous pixels); KL(q || F) "
        f"{res['kl']:.4f}, {res['kl_ambiguous']:.4f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--split", nargs="+", default=["test"], help="one or more splits")
    ap.add_argument("--json", type=Path, default=None, help="write {split: result} here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--save-probs",
        type=Path,
        default=None,
        help="write F's probabilities on the first split here (.npy [N, K, H, W]), e.g. for "
        "carseg import-samples --calibration",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {
        s: split_offsets(args.run, args.data, s, save_probs=args.save_probs if j == 0 else None)
        for j, s in enumerate(args.split)
    }
    for res in results.values():
        print(report(res))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
