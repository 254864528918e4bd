"""Write the LIDC splits from the cases of one of the three formats (`carcli.data.lidc`
reads them): normalised 128x128 crops in blocks, the black box beside them, a cases CSV."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from carcli.data.blackbox import BlackboxFolder
from carcli.data.dataset import SPLITS
from carcli.data.lidc import (
    BLOCK,
    CLASS_NAMES,
    CROP,
    NORMALISATION,
    Case,
    normalise,
    open_cases,
)
from carcli.data.preprocess import ATTR, lidc_spec, to_json
from carcli.data.writer import SplitWriter, StagedSplits
from carcli.errors import CarsegError
from carcli.ui import Reporter


def _blocks(cases: list[Case], size: int) -> Iterator[list[Case]]:
    for i in range(0, len(cases), size):
        yield cases[i : i + size]


def write_lidc_split(
    staged: StagedSplits,
    split: str,
    cases: list[Case],
    *,
    source: str,
    lesion_only: bool,
    blackbox: BlackboxFolder | None,
    rep: Reporter,
) -> tuple[int, int]:
    """Write one split in blocks; returns (images written, images skipped as lesion-free)."""
    keep_all = not (lesion_only and split == "train")
    written: list[tuple[str, str]] = []
    skipped = 0
    attrs = {
        "source": source,
        "split": split,
        "normalisation": NORMALISATION,
        "lesion_only": not keep_all,
        ATTR: to_json(lidc_spec(CROP)),
    }
    tmp = staged.path(f"{split}.h5")
    with (
        SplitWriter(
            tmp, num_classes=2, class_names=CLASS_NAMES, eval_classes=[1], attrs=attrs
        ) as w,
        rep.progress(len(cases), f"prepare {split}") as bar,
    ):
        for block in _blocks(cases, BLOCK):
            imgs, labs, bbs = [], [], []
            for c in block:
                raw_img, raw_lab = c.load()
                if raw_lab.ndim != 3 or raw_lab.shape[0] < 1:
                    raise CarsegError(
                        f"{c.where}: labels have shape {raw_lab.shape}, expected [A, H, W]"
                    )
                x, y = normalise(raw_img, raw_lab, c.where)
                if not keep_all and not y.any():
                    skipped += 1
                    continue
                if blackbox is not None:
                    bbs.append(blackbox.load([c.case], c.where, (CROP, CROP)))
                imgs.append(x[None])
                labs.append(y)
                written.append((c.case, c.group))
            if imgs:
                w.append(np.stack(imgs), np.stack(labs), blackbox=np.stack(bbs) if bbs else None)
            bar.advance(len(block))
        if w.n == 0:
            raise CarsegError(
                f"{split}: no images left"
                + (" after keeping lesion crops only (data.lesion_only)" if skipped else ""),
                hint="check data.raw",
            )
    staged.write_cases(split, written)
    return len(written), skipped


def prepare_lidc(
    source: str,
    raw: Path,
    staged: StagedSplits,
    *,
    seed: int,
    allow_pickle: bool,
    lesion_only: bool,
    blackbox: BlackboxFolder | None,
    rep: Reporter,
) -> None:
    """Stage train/val/test.h5 (and cases CSVs) from one of the three formats."""
    kw: dict[str, Any] = dict(source=source, lesion_only=lesion_only, blackbox=blackbox, rep=rep)

    def report(split: str, done: tuple[int, int]) -> None:
        extra = f" ({done[1]} lesion-free crops skipped)" if done[1] else ""
        rep.line(f"  {split}: {done[0]} images{extra}")

    with open_cases(source, raw, seed=seed, allow_pickle=allow_pickle) as cases:
        for s in SPLITS:
            report(s, write_lidc_split(staged, s, cases[s], **kw))
