"""experiments/joint/f_offsets.py: F's per-class offsets without G, as `evaluate` computes them.

A fabricated split (3 classes, 4x4, two modes per image) and an F whose every weight is zero
but the head's bias, log(0.5, 0.3, 0.2): F's probabilities are those three everywhere, so
each class's offset is |its p - the mean q over its ambiguous pixels|, computed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from script_loader import load_script

from carcli.data.dataset import Classes, DatasetFile, write_dataset
from carcli.metrics.accumulate import EvalAccumulator
from carcli.metrics.conventions import SampleCounts
from carcli.models.registry import build_calibrator
from carcli.runtime.networks import save_network

P = np.array([0.5, 0.3, 0.2])


def _split(path):
    label = np.zeros((2, 2, 4, 4), np.uint8)
    # image 0: mode 0 (w 0.75) is class 1 in the top row, mode 1 (w 0.25) class 2 there
    label[0, 0, 0, :] = 1
    label[0, 1, 0, :] = 2
    # image 1: the left column is class 1 (w 0.4) or background (w 0.6); row 3 is class 2
    label[1, 0, :, 0] = 1
    label[1, :, 3, 1:] = 2
    weight = np.array([[0.75, 0.25], [0.4, 0.6]], np.float32)
    image = np.zeros((2, 3, 4, 4), np.float32)
    write_dataset(path, image=image, label=label, label_weight=weight, classes=Classes(3))
    return label, weight


def _constant_f(run, info):
    torch.manual_seed(0)
    net = build_calibrator("unet", info.calibrator_in_channels, 3, width=2, depth=1, dropout=0.0)
    with torch.no_grad():
        for prm in net.parameters():
            prm.zero_()
        net.head.bias.copy_(torch.tensor(np.log(P), dtype=torch.float32))
    (run / "calibrator").mkdir(parents=True)
    save_network(run / "calibrator" / "model.safetensors", net, "calibrator", "calibrator",
                 "unet", info, 1)  # fmt: skip


def test_offsets_by_hand_and_as_evaluate(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    label, weight = _split(data / "test.h5")
    with DatasetFile(data / "test.h5") as ds:
        _constant_f(run, ds.info)
    mod = load_script("f_offsets", "experiments/joint")
    res = mod.main([str(run), str(data), "--json", str(tmp_path / "o.json")])["test"]
    cls = res["classes"]
    # class 0: image 0 has no pixel ambiguous for the background; image 1's left column
    # (4 pixels, row 3's included) is background at q 0.6
    assert cls["0"]["n_pixels"] == 4 and cls["0"]["true"] == pytest.approx(0.6)
    # class 1: top row of image 0 (4 px, q 0.75) and image 1's left column (4 px, q 0.4)
    assert cls["1"]["n_pixels"] == 8 and cls["1"]["true"] == pytest.approx((3 + 1.6) / 8)
    # class 2: only image 0's top row (q 0.25); image 1's row 3 is class 2 in both modes
    assert cls["2"]["n_pixels"] == 4 and cls["2"]["true"] == pytest.approx(0.25)
    want = [abs(0.5 - 0.6), abs(0.3 - 4.6 / 8), abs(0.2 - 0.25)]
    for k in range(3):
        assert cls[str(k)]["calibrator"] == pytest.approx(P[k], abs=1e-3)  # float16 storage
        assert cls[str(k)]["calibrator_offset"] == pytest.approx(want[k], abs=1e-3)
    assert res["max_calibrator_offset"] == pytest.approx(max(want), abs=1e-3)
    # cross-entropy: -sum_k q_k log P_k, the mean over the 32 pixels
    q = np.zeros((2, 3, 4, 4))
    for i in range(2):
        for a in range(2):
            for k in range(3):
                q[i, k] += weight[i, a] * (label[i, a] == k)
    ce = -(q * np.log(P)[None, :, None, None]).sum(1).mean()
    assert res["cross_entropy"] == pytest.approx(ce, rel=1e-5)
    h = -(q * np.log(np.where(q > 0, q, 1))).sum(1).mean()
    assert res["kl"] == pytest.approx(ce - h, rel=1e-5)
    assert "worst offset" in capsys.readouterr().out
    # the same figures as `evaluate`'s accumulator fed F's float16 probabilities
    acc = EvalAccumulator(3, counts=SampleCounts([2], 2))
    p16 = np.broadcast_to(P.astype(np.float16)[:, None, None], (3, 4, 4)).astype(np.float32)
    for i in range(2):
        acc.update(i, label[i, :1].repeat(2, 0), label[i], weight[i], p16)
    ev = acc.result()["class_calibration"]
    for k in range(3):
        assert cls[str(k)]["calibrator"] == ev["classes"][str(k)]["calibrator"]
        assert cls[str(k)]["calibrator_offset"] == ev["classes"][str(k)]["calibrator_offset"]
    assert res["max_calibrator_offset"] == ev["max_calibrator_offset"]
