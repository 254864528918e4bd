"""Where F's class offset sits on dev set A (experiments/joint/make_devset.py): its shape-factor
pixels (halo, ring, fragment) grouped by kind, the object's class and the factor's
probability, with the truth and F's probabilities there.

    python experiments/joint/f_factor_pixels.py RUN DATA_DIR [--split test] [--json OUT]

The factor masks are not in the dataset file; they are drawn again with the generator's own
code and arguments (the file attribute ``generator``) and the split's seeds, recording each
``_shape_mask`` call. A factor's pixels are those of its mask that are ambiguous for the
background (0 < q_0 < 1): the pixels the factor turns on in some modes. Per group: pixels,
the mean truth q of the class the factor takes (``q_on``), F's mean probability of that class
(``p_on``), of the background (``p_bg``) and of the other classes (``p_other``); ``class``
is the object's class, or ``flip`` for an object flipped between classes 1 and 2 (its factor
takes whichever class the object has, so q_on and p_on are those of classes 1 + 2).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile, split_path
from carcli.metrics.calibration import AMBIGUITY_EPS, label_probabilities
from carcli.runtime.networks import load_network

HERE = Path(__file__).resolve().parent
SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}


def _generator():
    spec = importlib.util.spec_from_file_location("make_devset", HERE / "make_devset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(attr: str) -> argparse.Namespace:
    raw = json.loads(attr)
    lists = {"flip_probs", "shape_probs"}
    ints = {"size", "seed", "train", "val", "test", "max_objects", "max_factors"}
    out = {}
    for k, v in raw.items():
        if k in lists:
            out[k] = [float(x) for x in v.strip("[]").split(",")]
        elif k in ints:
            out[k] = int(v)
        elif k == "dir":
            out[k] = v
        else:
            out[k] = float(v)
    return argparse.Namespace(**out)


def factor_masks(mod, args: argparse.Namespace, seed: int, i: int) -> list[tuple[str, np.ndarray]]:
    """(kind, mask) of every `_shape_mask` call made while drawing image ``i``."""
    calls: list[tuple[str, np.ndarray]] = []
    original = mod._shape_mask

    def record(rng, obj, kind, size):
        m = original(rng, obj, kind, size)
        calls.append((kind, m))
        return m

    mod._shape_mask = record
    try:
        mod.draw(np.random.default_rng([seed, i]), args)
    finally:
        mod._shape_mask = original
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    mod = _generator()
    sums: dict = defaultdict(lambda: np.zeros(5))
    with DatasetFile(split_path(str(args.data), args.split), validate=True) as ds:
        info = ds.info
        gen = _args(ds.h5.attrs["generator"])
        seed = gen.seed * 10 + SPLIT_INDEX[args.split]
        f_net = load_network(
            args.run / "calibrator" / "model.safetensors", "calibrator", "calibrator", info, "-"
        ).eval()
        src = BatchSource(ds)
        for a in range(0, info.n, 64):
            rows = np.arange(a, min(info.n, a + 64))
            with torch.inference_mode():
                b = src.get(rows, None, annotation=np.zeros(len(rows), dtype=np.int64))
                p = f_net(b.cond).softmax(1).float().numpy()
            labels, weights = ds.read_rows("label", rows), ds.weights(rows)
            for j, i in enumerate(rows):
                q, valid = label_probabilities(labels[j], weights[j], info.num_classes, 255)
                amb_bg = (q[0] > AMBIGUITY_EPS) & (q[0] < 1 - AMBIGUITY_EPS) & valid
                for kind, m in factor_masks(mod, gen, seed, int(i)):
                    px = m & amb_bg
                    if not px.any():
                        continue
                    on = q[1:, px].sum(1)  # the classes the factor takes
                    cls = "flip" if (on[0] > 0 and on[1] > 0) else str(1 + int(on.argmax()))
                    cols = [1, 2] if cls == "flip" else [int(cls)]
                    other = [c for c in range(1, info.num_classes) if c not in cols]
                    prob = round(float(1 - q[0, px].mean()), 2)
                    s = sums[(kind, cls, prob)]
                    s += [
                        px.sum(),
                        q[cols][:, px].sum(),
                        p[j][cols][:, px].sum(),
                        p[j][0, px].sum(),
                        p[j][other][:, px].sum(),
                    ]
    rows_out = []
    print("kind      class  q_shape  pixels   q_on   p_on  p_bg  p_other  (p_on - q_on)")
    for (kind, cls, prob), s in sorted(sums.items()):
        n = s[0]
        r = dict(kind=kind, cls=cls, shape_prob=prob, pixels=int(n), q_on=s[1] / n,
                 p_on=s[2] / n, p_bg=s[3] / n, p_other=s[4] / n)  # fmt: skip
        rows_out.append(r)
        print(f"{kind:<9} {cls:<6} {prob:6.2f} {int(n):8d} {r['q_on']:6.3f} {r['p_on']:6.3f} "
              f"{r['p_bg']:5.3f} {r['p_other']:7.3f}  {r['p_on'] - r['q_on']:+.3f}")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(rows_out, indent=1) + "\n")


if __name__ == "__main__":
    main()
