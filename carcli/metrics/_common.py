"""Small shared helpers of the metric kernels: argument checks and defaults."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Weights of one image must sum to 1 within this tolerance (the dataset schema's ± 1e-5).
WEIGHT_SUM_TOL = 1e-4


def resolve_eval_classes(num_classes: int, eval_classes: Sequence[int] | None) -> list[int]:
    """Return the scored classes: ``eval_classes`` checked, or all classes but 0."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if eval_classes is None:
        return list(range(1, num_classes))
    classes = [int(c) for c in eval_classes]
    if not classes:
        raise ValueError("eval_classes is empty")
    if len(set(classes)) != len(classes):
        raise ValueError(f"eval_classes has duplicates: {classes}")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"eval_classes {bad} outside [0, {num_classes})")
    return classes


def check_weights(w: np.ndarray | Sequence[float] | None, num_labels: int) -> np.ndarray:
    """Return the label weights as float64 [A]: uniform when None, else checked (>= 0, sum 1)."""
    if w is None:
        return np.full(num_labels, 1.0 / num_labels)
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if w.shape != (num_labels,):
        raise ValueError(f"weights have shape {w.shape}, expected ({num_labels},)")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    total = float(w.sum())
    if abs(total - 1.0) > WEIGHT_SUM_TOL:
        raise ValueError(f"weights sum to {total}, expected 1")
    return w


def as_maps(x: np.ndarray, name: str) -> np.ndarray:
    """Check a stack of class maps [n, H, W] and return it as a C-contiguous uint8 array."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape [n, H, W], got {x.shape}")
    if x.dtype != np.uint8:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"{name} has values outside 0..255")
        x = x.astype(np.uint8)
    return np.ascontiguousarray(x)
