"""The metrics read samples through a small protocol: arrays in memory give the same figures
as the sample bank file holding them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from carcli.data.dataset import DatasetFile
from carcli.metrics.evaluate import EvalSettings, evaluate_samples
from carcli.metrics.samples import ArraySamples
from carcli.sampling.bank import create_bank
from carcli.stages.evaluate import evaluate_bank
from carcli.ui import Reporter


def test_arrays_and_bank_give_the_same_metrics(tiny_dataset: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    with DatasetFile(tiny_dataset) as ds:
        info = ds.info
        n, k, (h, w) = info.n, info.num_classes, info.label_shape
        samples = rng.integers(0, k, (n, 4, h, w), dtype=np.uint8)
        calib = rng.dirichlet(np.ones(k), (n, h, w)).transpose(0, 3, 1, 2).astype(np.float16)
        index = np.arange(n)[::-1].copy()
        bank_path = tmp_path / "bank.h5"
        with create_bank(bank_path, info, n, 4, {}) as h5:
            h5["samples"][...], h5["calibration"][...], h5["index"][...] = samples, calib, index
        e = EvalSettings(ged_counts=(2, 4), hm_iou_samples=2, chunk_size=3)
        rep = Reporter(quiet=True)
        arrays = ArraySamples(samples, calib, index, path=bank_path)
        from_arrays = evaluate_samples(ds, arrays, e, rep)
    assert from_arrays == evaluate_bank(tiny_dataset, bank_path, e, rep)
    assert from_arrays[0]["ged"].keys() == {"2", "4"}
