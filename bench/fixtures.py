"""The fabricated LIDC-sized evaluation data of ``evaluate_lidc_test``: a dataset and a sample
bank of elliptic lesions (annotators jitter and miss them, samples jitter them more), cached
and rebuilt when their parameters change. bench/threads.py uses the same generator.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.harness import EvalSize

CACHE_FORMAT = 1  # bump when the fabricated data changes


def _ellipses(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    ry: np.ndarray,
    rx: np.ndarray,
    theta: np.ndarray,
) -> np.ndarray:
    """Signed "radius" field of S ellipses on the grid: < 1 inside. Returns [S, H, W]."""
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    ct, st = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = (ct * dx + st * dy) / rx[:, None, None]
    v = (-st * dx + ct * dy) / ry[:, None, None]
    return np.sqrt(u * u + v * v)


def fabricate_image(rng: np.random.Generator, size: EvalSize) -> tuple[np.ndarray, ...]:
    """One lesion: image [1, H, W], labels [A, H, W], samples [M, H, W], calibration [2, H, W].

    A random ellipse (radius r_min..r_max); annotators jitter its centre and size (each
    misses it with probability 0.2, at least one does not); samples jitter it more (one in
    ten is empty); F's foreground probability is a soft version of the ellipse. A fraction
    p_doubtful of the images is a lesion no annotator marked: all labels empty, 80% of the
    samples empty, F's probability at most 0.3.
    """
    hw, a, m = size.hw, size.labels, size.samples
    yy, xx = np.mgrid[0:hw, 0:hw].astype(np.float32)
    r = rng.uniform(size.r_min, size.r_max)
    margin = size.r_max * 1.5
    cy, cx = rng.uniform(margin, hw - margin, 2) if hw > 2 * margin else (hw / 2, hw / 2)
    ratio, theta = rng.uniform(0.7, 1.3), rng.uniform(0, np.pi)

    def shapes(count: int, shift: float, scale: float) -> np.ndarray:
        s = rng.uniform(1 - scale, 1 + scale, count).astype(np.float32)
        f = _ellipses(
            yy,
            xx,
            (cy + rng.normal(0, shift, count)).astype(np.float32),
            (cx + rng.normal(0, shift, count)).astype(np.float32),
            (r * s).astype(np.float32),
            (r * ratio * s).astype(np.float32),
            (theta + rng.normal(0, 0.2, count)).astype(np.float32),
        )
        return f

    doubtful = rng.random() < size.p_doubtful
    labels = (shapes(a, 1.0, 0.15) < 1).astype(np.uint8)
    miss = rng.random(a) < (1.0 if doubtful else 0.2)
    if not doubtful:
        miss[rng.integers(a)] = False
    labels[miss] = 0
    samples = (shapes(m, 1.5, 0.25) < 1).astype(np.uint8)
    samples[rng.random(m) < (0.8 if doubtful else 0.1)] = 0
    field_ = shapes(1, 0.0, 0.0)[0]
    p1 = (0.3 if doubtful else 0.9) * 0.5 * (1 - np.tanh((field_ - 1) * r / 3.0))
    calib = np.stack([1 - p1, p1]).astype(np.float16)
    inside = (field_ < 1.2).astype(np.float32)
    image = (0.6 * inside + 0.3 * rng.standard_normal((hw, hw))).astype(np.float32)[None]
    return image, labels, samples, calib


def make_eval_data(size: EvalSize, folder: Path, rep: Callable[[str], None]) -> tuple[Path, Path]:
    """Write test.h5 (dataset) and bank.h5 into `folder`; reuse them when the key matches."""
    from carcli.data.dataset import Classes, DatasetFile, write_dataset
    from carcli.sampling.bank import create_bank

    data_path, bank_path, key_path = folder / "test.h5", folder / "bank.h5", folder / "key.json"
    key = {"format": CACHE_FORMAT, **asdict(size)}
    key["ged_counts"] = list(size.ged_counts)
    if data_path.exists() and bank_path.exists() and key_path.exists():
        with contextlib.suppress(OSError, ValueError):
            if json.loads(key_path.read_text()) == key:
                return data_path, bank_path
    folder.mkdir(parents=True, exist_ok=True)
    key_path.unlink(missing_ok=True)
    rep(
        f"fabricating the evaluation data in {folder} ({size.n} images x {size.samples} "
        "samples; once, then cached)"
    )
    t0 = time.perf_counter()
    rng = np.random.default_rng(size.seed)
    n, hw = size.n, size.hw
    images = np.empty((n, 1, hw, hw), np.float32)
    labels = np.empty((n, size.labels, hw, hw), np.uint8)
    tmp_bank = bank_path.with_name(bank_path.name + ".tmp")
    h5 = None
    try:
        chunk = 64
        samples = np.empty((chunk, size.samples, hw, hw), np.uint8)
        calib = np.empty((chunk, 2, hw, hw), np.float16)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            for i in range(a, b):
                images[i], labels[i], samples[i - a], calib[i - a] = fabricate_image(rng, size)
            if h5 is None:
                write_dataset(
                    data_path.with_name("probe.h5"),
                    image=images[:1],
                    label=labels[:1],
                    classes=Classes(2),
                )
                with DatasetFile(data_path.with_name("probe.h5")) as probe:
                    info = probe.info
                data_path.with_name("probe.h5").unlink()
                attrs = {
                    "dataset": str(data_path),
                    "split": "test",
                    "num_samples": size.samples,
                    "seed": size.seed,
                }
                h5 = create_bank(tmp_bank, info, n, size.samples, attrs)
            h5["samples"][a:b] = samples[: b - a]
            h5["calibration"][a:b] = calib[: b - a]
        assert h5 is not None
        h5["index"][...] = np.arange(n, dtype=np.int64)
        h5.close()
        h5 = None
        write_dataset(
            data_path,
            image=images,
            label=labels,
            classes=Classes(2, class_names=["background", "lesion"], eval_classes=[1]),
        )
        os.replace(tmp_bank, bank_path)
    finally:
        if h5 is not None:
            h5.close()
        tmp_bank.unlink(missing_ok=True)
    key_path.write_text(json.dumps(key))
    rep(f"evaluation data written in {time.perf_counter() - t0:.0f} s")
    return data_path, bank_path
