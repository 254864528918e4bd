"""L_ce, the calibrator's loss, on F's output for the three kinds of target."""

from __future__ import annotations

from torch import Tensor

from carcli.losses.regression import gaussian_nll
from carcli.losses.segmentation import cross_entropy, expected_cross_entropy


def calibrator_loss(
    out: Tensor, label: Tensor, task: str, ignore_index: int, soft: Tensor | None = None
) -> Tensor:
    """F's training loss on its output ``out``: the expected cross-entropy against the label
    distribution ``soft`` when given (calibrator.soft_targets), else the cross-entropy against
    one drawn annotation (segmentation), or the unit-variance Gaussian NLL (regression)."""
    if soft is not None:
        return expected_cross_entropy(out, soft, soft.sum(1) > 0)
    if task == "segmentation":
        return cross_entropy(out, label, ignore_index=ignore_index)
    return gaussian_nll(out, label)
