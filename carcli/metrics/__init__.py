"""metrics: evaluation kernels (GED, HM-IoU, calibration, mode frequencies, Dice, QUBIQ,
NCC, factor dependence), the peers' conventions and the per-split accumulator the evaluate
stage feeds. Every kernel takes plain arrays and returns numbers."""

from carcli.metrics.accumulate import EvalAccumulator
from carcli.metrics.calibration import (
    ClassCalibration,
    ReliabilityBins,
    label_probabilities,
    mean_entropy,
    sample_frequencies,
)
from carcli.metrics.conventions import CONVENTIONS, Convention, SampleCounts, parse_conventions
from carcli.metrics.dice import dice_figures, qubiq_score
from carcli.metrics.distance import image_ignore_mask, pairwise_distance, pairwise_overlap
from carcli.metrics.factors import dependence, factor_pairs
from carcli.metrics.ged import diversity, ged, ged_at_counts, ged_from_matrices
from carcli.metrics.hm_iou import hm_iou, hm_iou_from_matrix, transport_value
from carcli.metrics.modes import (
    merge_modes,
    mode_coverage,
    mode_frequencies,
    mode_statistics,
    oracle_indices,
    oracle_samples,
)

__all__ = [
    "CONVENTIONS",
    "ClassCalibration",
    "Convention",
    "EvalAccumulator",
    "SampleCounts",
    "ReliabilityBins",
    "dependence",
    "dice_figures",
    "diversity",
    "factor_pairs",
    "ged",
    "ged_at_counts",
    "ged_from_matrices",
    "hm_iou",
    "hm_iou_from_matrix",
    "image_ignore_mask",
    "label_probabilities",
    "mean_entropy",
    "merge_modes",
    "mode_coverage",
    "mode_frequencies",
    "mode_statistics",
    "oracle_indices",
    "oracle_samples",
    "pairwise_distance",
    "pairwise_overlap",
    "parse_conventions",
    "qubiq_score",
    "sample_frequencies",
    "transport_value",
]
