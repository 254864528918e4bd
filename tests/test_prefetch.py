"""The background batch prefetcher: same batches in the same order as drawing inline, the
generator state saved for resume is the one after the last consumed batch, errors surface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carcli.data.batches import Batch
from carcli.data.prefetch import BatchPrefetcher


def draw(rng: np.random.Generator) -> Batch:
    x = torch.from_numpy(rng.random((2, 3)).astype(np.float32))
    return Batch(x, x, torch.from_numpy(rng.integers(0, 5, (2,))))


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_same_stream_and_resume_state(depth: int) -> None:
    ref_rng = np.random.default_rng(7)
    ref = [draw(ref_rng) for _ in range(6)]
    with BatchPrefetcher(draw, np.random.default_rng(7), depth=depth) as loader:
        got = [loader.next() for _ in range(4)]
        state = loader.rng_state()
    for a, b in zip(got, ref[:4], strict=True):
        torch.testing.assert_close(a.image, b.image)
        torch.testing.assert_close(a.label, b.label)
    # resuming from the saved state continues exactly where the consumer stopped
    resumed = np.random.default_rng()
    resumed.bit_generator.state = state
    torch.testing.assert_close(draw(resumed).image, ref[4].image)


def test_errors_reach_the_consumer() -> None:
    calls = {"n": 0}

    def failing(rng: np.random.Generator) -> Batch:
        calls["n"] += 1
        if calls["n"] == 3:
            raise ValueError("bad row 17")
        return draw(rng)

    with BatchPrefetcher(failing, np.random.default_rng(0), depth=2) as loader:
        loader.next()
        loader.next()
        with pytest.raises(ValueError, match="bad row 17"):
            loader.next()


def test_negative_depth_refused() -> None:
    with pytest.raises(ValueError, match="depth"):
        BatchPrefetcher(draw, np.random.default_rng(0), depth=-1)


@pytest.mark.parametrize("stage", ["calibrator", "refiner"])
def test_training_with_prefetch_equals_without(tmp_path, stage: str) -> None:
    """speed.prefetch changes when batches are made, never which: same weights bit for bit."""
    from safetensors.torch import load_file
    from test_pipeline import tiny_recipe

    from carcli.stages.prepare import run_prepare
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import run_train_refiner

    weights = {}
    for depth in (0, 2):
        r = tiny_recipe(tmp_path / f"p{depth}", f"speed.prefetch={depth}")
        run_prepare(r, quiet=True)
        run_train_calibrator(r, quiet=True)
        if stage == "refiner":
            run_train_refiner(r, quiet=True)
        weights[depth] = load_file(tmp_path / f"p{depth}" / "run" / stage / "model.safetensors")
    assert weights[0].keys() == weights[2].keys()
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[2][k], rtol=0, atol=0)
