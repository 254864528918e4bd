"""metrics: evaluation kernels (GED, HM-IoU, calibration, mode frequencies) and the
per-split accumulator the evaluate stage feeds."""

from carcli.metrics.accumulate import EvalAccumulator
from carcli.metrics.calibration import (
    ClassCalibration,
    ReliabilityBins,
    label_probabilities,
    mean_entropy,
    sample_frequencies,
)
from carcli.metrics.distance import image_ignore_mask, pairwise_distance
from carcli.metrics.ged import diversity, ged, ged_at_counts, ged_from_matrices
from carcli.metrics.hm_iou import hm_iou, hm_iou_from_matrix, tile_counts
from carcli.metrics.modes import (
    merge_modes,
    mode_frequencies,
    mode_statistics,
    oracle_indices,
    oracle_samples,
)

__all__ = [
    "ClassCalibration",
    "EvalAccumulator",
    "ReliabilityBins",
    "diversity",
    "ged",
    "ged_at_counts",
    "ged_from_matrices",
    "hm_iou",
    "hm_iou_from_matrix",
    "image_ignore_mask",
    "label_probabilities",
    "mean_entropy",
    "merge_modes",
    "mode_frequencies",
    "mode_statistics",
    "oracle_indices",
    "oracle_samples",
    "pairwise_distance",
    "sample_frequencies",
    "tile_counts",
]
