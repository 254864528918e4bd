"""Evaluation conventions of the field: GED, HM-IoU and diversity under each peer's rules.

Published numbers for stochastic segmentation are computed under rules that differ in a few
places; each ``Convention`` pins them, learnt from the peers' public evaluation code (facts
only; nothing is copied). Every rule set starts from the same per-pair overlaps
(``distance.pairwise_overlap``: per-class IoU sums and the number of scored classes present
in either map), so a second convention costs a few small matrix operations per image.

The rules that differ (binary two-class data, e.g. LIDC, is scored alike by all: IoU of the
foreground, two empty masks IoU 1, every pair counts):

* ``absent_class`` (multi-class): a scored class absent from both maps is ``skip``-ped (the
  mean IoU is over the classes present in either map) or scores IoU ``one`` (the mean is over
  all scored classes: PHiSeg, CCDM).
* ``empty_pair`` (multi-class, with ``skip``): a pair with no scored class at all has d = 0
  and counts (``zero``: carseg's one rule) or is NaN (``nan``: the image's GED is NaN and the
  image is left out of the mean over images: CAR, MoSE, Flow-SSN).
* ``label_weights``: the label expectations of GED use ``label_weight`` (carseg, CAR, MoSE,
  Flow-SSN) or a uniform mean over the label rows (PHiSeg, CCDM).
* ``hm_iou``: ``transport`` (exact fractional assignment between samples of mass 1/n and
  labels of their weight, equal to the tiled Hungarian matching whenever the tiling is
  exact: carseg, CAR's 16 = 4 × 4 tiling, MoSE's tiling / optimal transport), ``lcm``
  (samples and labels both tiled to lcm(n, A), uniform label weights: CCDM), ``rectangular``
  (one Hungarian matching of the n × A matrix, so only min(n, A) samples are matched:
  Flow-SSN) or ``none`` (not part of that evaluation: PHiSeg).
* ``hm_iou_nan``: an image whose HM-IoU cost holds a NaN pair is left out (``skip``) or
  scores 0 (``zero``: MoSE's assignment raises and its handler adds 0 for the image).
* ``diversity_diagonal``: the sample diversity E d(s, s') over distinct pairs (carseg) or
  over all ordered pairs with the self-pairs (the d_SS term every peer reports).

The class subset is the dataset's ``eval_classes`` for every convention (each peer's own
class list: the foreground for LIDC; the switchable classes for CAR and MoSE on Cityscapes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, asdict, dataclass
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from carcli.metrics.hm_iou import transport_value


@dataclass(frozen=True)
class Convention:
    """One project's evaluation rules (see the module docstring for each field). The rules
    default to the peers' most common choice; each record states where it differs."""

    name: str
    _: KW_ONLY
    absent_class: Literal["skip", "one"] = "skip"
    empty_pair: Literal["zero", "nan"] = "nan"
    label_weights: bool = True
    hm_iou: Literal["transport", "lcm", "rectangular", "none"] = "transport"
    hm_iou_nan: Literal["skip", "zero"] = "skip"
    diversity_diagonal: bool = True
    published: str
    """The published numbers it reproduces and the sample counts they use."""
    source: str
    """Where the rules were read."""

    def rules(self) -> dict:
        """The rules as a JSON-ready mapping (written into metrics.json)."""
        return {k: v for k, v in asdict(self).items() if k != "name"}


@dataclass(frozen=True)
class SampleCounts:
    """How many samples the figures use: GED with the first n for each n of ``ged``, HM-IoU
    with the first ``hm_iou``."""

    ged: Sequence[int] = (16, 50, 100)
    hm_iou: int = 16


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention(
            "carseg",
            empty_pair="zero",
            diversity_diagonal=False,
            published="carseg's own tables (docs/results.md); GED at 16/50/100, HM-IoU at 16",
            source="docs/metrics.md",
        ),
        Convention(
            "car",
            published="Kassapis et al. (CAR): LIDC GED 16/50/100 and HM-IoU 16 (labels "
            "tiled 4 x 4); Cityscapes GED 16 with the 32 mode probabilities",
            source="EliasKassapis/CARSSS utils/evaluation_utils.py (NaN for a class absent "
            "from both maps, nanmean over classes; batches averaged with nanmean)",
        ),
        Convention(
            "mose",
            hm_iou_nan="zero",
            published="Gao et al. (MoSE): LIDC and Cityscapes GED and M-IoU",
            source="gaozhitong/MoSE-AUSeg utils/metrics.py (tiled Hungarian when uniform and "
            "N % A == 0, else exact optimal transport; images averaged with nanmean)",
        ),
        Convention(
            "phiseg",
            absent_class="one",
            empty_pair="zero",
            label_weights=False,
            hm_iou="none",
            published="Baumgartner et al. (PHiSeg): LIDC GED and NCC (its test script draws "
            "50 samples)",
            source="baumgach/PHiSeg-code utils.py generalised_energy_distance (per-label "
            "IoU 1 when absent from both, divided by the number of labels)",
        ),
        Convention(
            "ccdm",
            absent_class="one",
            empty_pair="zero",
            label_weights=False,
            hm_iou="lcm",
            published="Zbinden et al. (CCDM): LIDC GED and HM-IoU (its script reports four "
            "sample counts)",
            source="LarsDoorenbos/ccdm-stochastic-segmentation "
            "evaluation/evaluate_lidc_uncertainty.py (NaN IoU set to 1, mean over classes "
            "1.., samples and labels tiled to lcm(N, A))",
        ),
        Convention(
            "flowssn",
            hm_iou="rectangular",
            published="Flow-SSN (biomedia-mira): LIDC GED and HM-IoU from 100 samples, the "
            "HM-IoU matching only min(N, A) of them",
            source="biomedia-mira/flow-ssn flowssn/eval/metrics.py (NaN for a class absent "
            "from both maps, nanmean; linear_sum_assignment on the N x A matrix)",
        ),
    )
}


def parse_conventions(spec: str | Sequence[str]) -> list[str]:
    """Names from ``carseg``, ``all`` or a comma-separated list; the first is the primary."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for part in parts:
        for name in str(part).split(","):
            name = name.strip().lower()
            if not name:
                continue
            for n in CONVENTIONS if name == "all" else [name]:
                if n not in CONVENTIONS:
                    valid = ", ".join([*CONVENTIONS, "all"])
                    raise ValueError(f"unknown convention {name!r}; valid: {valid}")
                if n not in names:
                    names.append(n)
    if not names:
        raise ValueError("no convention given")
    return names


def distances(
    conv: Convention, iou_sum: np.ndarray, count: np.ndarray, binary: bool, n_classes: int
) -> np.ndarray:
    """d = 1 − IoU for every pair under ``conv`` (NaN where the convention makes it NaN)."""
    if binary:
        return 1.0 - iou_sum / np.maximum(count, 1)
    if conv.absent_class == "one":
        return 1.0 - (iou_sum + (n_classes - count)) / n_classes
    d = np.zeros(count.shape)
    present = count > 0
    d[present] = 1.0 - iou_sum[present] / count[present]
    if conv.empty_pair == "nan":
        d[~present] = np.nan
    return d


def _ged(d_sy: np.ndarray, d_ss: np.ndarray, d_yy: np.ndarray, w: np.ndarray) -> float:
    """2·E d(s, y) − E d(s, s') − E d(y, y'), all ordered pairs; NaN in, NaN out."""
    m = d_ss.shape[0]
    e_sy = float((d_sy * (w[None, :] / m)).sum())
    e_ss = float(d_ss.sum() / (m * m))
    e_yy = float((d_yy * np.outer(w, w)).sum())
    return 2.0 * e_sy - e_ss - e_yy


def _hm_iou(
    conv: Convention, d_sy: np.ndarray, w: np.ndarray, cache: dict | None = None
) -> float | None:
    if conv.hm_iou == "none":
        return None
    if cache is not None:  # conventions that agree on this image share one solve
        key = (conv.hm_iou, conv.hm_iou_nan, d_sy.tobytes(), w.tobytes())
        if key not in cache:
            cache[key] = _hm_iou(conv, d_sy, w)
        return cache[key]
    if np.isnan(d_sy).any():
        return 0.0 if conv.hm_iou_nan == "zero" else None
    n, a = d_sy.shape
    if conv.hm_iou == "rectangular":
        i, j = linear_sum_assignment(d_sy)
        return float(1.0 - d_sy[i, j].mean())
    if conv.hm_iou == "lcm":
        w = np.full(a, 1.0 / a)  # lcm(n, A) tiling of both sides = uniform transport
    return 1.0 - transport_value(d_sy, np.full(n, 1.0 / n), w)


def convention_figures(
    conv: Convention,
    iou_sum: np.ndarray,
    count: np.ndarray,
    w: np.ndarray,
    *,
    binary: bool,
    n_classes: int,
    counts: SampleCounts,
    cache: dict | None = None,
) -> dict:
    """GED at each count, HM-IoU and diversity of one image under ``conv``.

    ``iou_sum``, ``count`` [n_top + A, n_top + A] are the overlaps of the stack [first n_top
    samples; the A non-padding labels] (``pairwise_overlap``), ``w`` [A] the labels' weights
    (so n_top is the stack's size less A).
    NaN results are returned as None (the image is left out of that mean). ``cache`` (one
    dict per image) lets several conventions share an identical HM-IoU solve.
    """
    ged_counts, hm_iou_n = counts.ged, counts.hm_iou
    d = distances(conv, iou_sum, count, binary, n_classes)
    a = len(w)
    n_top = len(iou_sum) - a
    w = np.asarray(w, dtype=np.float64) if conv.label_weights else np.full(a, 1.0 / a)
    d_ss, d_sy, d_yy = d[:n_top, :n_top], d[:n_top, n_top:], d[n_top:, n_top:]

    def clean(x: float | None) -> float | None:
        return None if x is None or np.isnan(x) else float(x)

    geds = {str(n): clean(_ged(d_sy[:n], d_ss[:n, :n], d_yy, w)) for n in ged_counts if n <= n_top}
    hm = clean(_hm_iou(conv, d_sy[:hm_iou_n], w, cache)) if hm_iou_n <= n_top else None
    if conv.diversity_diagonal:
        div = clean(float(d_ss.mean()))
    elif n_top < 2:
        div = 0.0
    else:
        div = clean(float(d_ss[~np.eye(n_top, dtype=bool)].mean()))
    return {"ged": geds, "hm_iou": hm, "diversity": div}
