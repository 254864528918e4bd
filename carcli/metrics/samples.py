"""What the metrics read from a bank of samples: a small protocol, so that `metrics` needs no
file format (the sample bank, `carcli.sampling.bank.Bank`, is one; arrays in memory are
another: `ArraySamples`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


class SampleSource(Protocol):
    """N images' samples and calibration, rows read in chunks."""

    path: Path
    """Where the samples came from (reported in metrics.json)."""
    n: int
    """Images."""
    num_samples: int
    """M, samples per image."""
    index: np.ndarray
    """[N] row of each image in the dataset split."""

    def read(self, name: str, rows: slice) -> np.ndarray:
        """Rows of ``samples`` ([n, M, ...]) or ``calibration`` (F's output per image)."""
        ...


@dataclass
class ArraySamples:
    """A SampleSource over arrays in memory."""

    samples: np.ndarray
    calibration: np.ndarray
    index: np.ndarray
    path: Path = field(default_factory=lambda: Path("<arrays>"))

    @property
    def n(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[1])

    def read(self, name: str, rows: slice) -> np.ndarray:
        return {"samples": self.samples, "calibration": self.calibration}[name][rows]
