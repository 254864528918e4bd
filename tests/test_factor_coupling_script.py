"""experiments/joint/factor_coupling.py: dependence of G's answers in separate ambiguous regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from script_loader import load_script

fc = load_script("factor_coupling", "experiments/joint")


def _two_coins() -> tuple[np.ndarray, np.ndarray]:
    """Two separate 2x2 regions, each class 1 or 2 with probability 1/2, independently."""
    modes = np.zeros((5, 8, 8), dtype=np.uint8)  # the last row is padding
    for a, (u, v) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2)]):
        modes[a, 1:3, 1:3] = u
        modes[a, 5:7, 5:7] = v
    return modes, np.array([0.25, 0.25, 0.25, 0.25, 0.0])


def test_dependence_hand_cases() -> None:
    assert fc.dependence(np.full((2, 2), 0.25)) == pytest.approx(0.0)
    # two fair coins that always agree: |.5 - .25| * 2 + |0 - .25| * 2, halved
    assert fc.dependence(np.array([[0.5, 0.0], [0.0, 0.5]])) == pytest.approx(0.5)
    assert fc.dependence(np.array([[0.49, 0.21], [0.21, 0.09]])) == pytest.approx(0.0)


def test_coupled_and_independent_samples() -> None:
    modes, w = _two_coins()
    rng = np.random.default_rng(0)
    coupled = np.stack([modes[0]] * 50 + [modes[3]] * 50)  # both regions always agree
    (pair,) = fc.image_pairs(modes, w, coupled, rng)
    assert pair["dependence"] == pytest.approx(0.5)
    assert pair["joint_tv"] == pytest.approx(0.5)  # mass 1 on 2 of 4 cells that hold .25 each
    independent = np.stack([modes[a] for a in range(4)] * 25)
    (pair,) = fc.image_pairs(modes, w, independent, rng)
    assert pair["dependence"] == pytest.approx(0.0)
    assert pair["joint_tv"] == pytest.approx(0.0)
    assert 0 <= pair["oracle_dependence"] < 0.3
    # a sample with one stray pixel still maps to its nearest pattern
    noisy = independent.copy()
    noisy[:, 1, 1] = 0
    assert fc.image_pairs(modes, w, noisy, rng)[0]["dependence"] == pytest.approx(0.0)


def test_dependent_truth_and_single_mode_are_skipped() -> None:
    modes, _ = _two_coins()
    rng = np.random.default_rng(0)
    samples = np.stack([modes[0]] * 4)
    assert fc.image_pairs(modes, np.array([0.5, 0.0, 0.0, 0.5, 0.0]), samples, rng) == []
    assert fc.image_pairs(modes, np.array([1.0, 0.0, 0.0, 0.0, 0.0]), samples, rng) == []


def test_coupling_reads_the_dataset_the_bank_names(tmp_path: Path) -> None:
    import h5py

    modes, w = _two_coins()
    data = tmp_path / "test.h5"
    with h5py.File(data, "w") as f:
        f["label"] = np.stack([modes, modes])
        f["label_weight"] = np.stack([w, w])
    (tmp_path / "run" / "samples").mkdir(parents=True)
    coupled = np.stack([modes[0]] * 50 + [modes[3]] * 50)
    independent = np.stack([modes[a] for a in range(4)] * 25)
    with h5py.File(tmp_path / "run" / "samples" / "test.h5", "w") as f:
        f["samples"] = np.stack([coupled, independent])
        f.attrs["dataset"] = str(data)
    out = fc.coupling(tmp_path / "run")
    assert out["pairs"] == 2
    assert out["dependence"] == pytest.approx(0.25)  # mean of 0.5 and 0
    assert out["joint_tv"] == pytest.approx(0.25)
