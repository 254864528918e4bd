"""Training pieces: schedules, D cycles, the refiner step's gradient routing, label drawing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carcli.data.batches import BatchSource, label_distribution
from carcli.data.dataset import Classes, DatasetFile, write_dataset
from carcli.models.registry import build_calibrator, build_discriminator, build_refiner
from carcli.recipe.load import load_recipe
from carcli.runtime.device import setup_torch
from carcli.training.optim import adam, lr_at
from carcli.training.step import Nets, RefinerStep, as_label_map, d_cycle_on


def test_lr_schedule_steps_down_at_milestones():
    assert lr_at(1.0, [10, 20], 0.5, 0) == 1.0
    assert lr_at(1.0, [10, 20], 0.5, 9) == 1.0
    assert lr_at(1.0, [10, 20], 0.5, 10) == 0.5
    assert lr_at(1.0, [10, 20], 0.5, 25) == 0.25
    assert lr_at(2e-4, [], 0.5, 10**6) == 2e-4


def test_setup_torch_flushes_denormals():
    """Weight decay leaves many weights denormal; CPU maths on them is several times slower,
    so the training stages flush them to zero."""
    setup_torch(load_recipe("recipes/toy.yaml", ["threads=0"]))  # conftest resets the flag
    assert torch.tensor([1e-40], dtype=torch.float32).item() == 0.0
    assert torch.tensor([1e-37], dtype=torch.float32).item() != 0.0  # normal: kept


def test_d_cycle_on_then_off():
    on = [d_cycle_on(s, 2, 3) for s in range(10)]
    assert on == [True, True, False, False, False, True, True, False, False, False]
    assert all(d_cycle_on(s, 1, 0) for s in range(5))


def test_label_map_one_hot_and_ignore():
    y = torch.tensor([[[0, 1], [255, 2]]])
    onehot, valid = as_label_map(y, 3, 255)
    assert onehot.shape == (1, 3, 2, 2)
    assert valid.tolist() == [[[True, True], [False, True]]]
    assert onehot[0, :, 1, 0].sum() == 0 and onehot[0, 2, 1, 1] == 1


def test_label_distribution_is_weighted_one_hot():
    labels = np.array([[[[0, 1]], [[1, 1]], [[2, 2]]]], dtype=np.uint8)  # [1, 3, 1, 2]
    w = np.array([[0.5, 0.25, 0.25]])
    q = label_distribution(labels, w, 3, 255)
    assert np.allclose(q[0, :, 0, 0], [0.5, 0.25, 0.25])
    assert np.allclose(q[0, :, 0, 1], [0.0, 0.75, 0.25])
    labels[0, 1, 0, 0] = 255
    q = label_distribution(labels, w, 3, 255)
    assert np.allclose(q[0, :, 0, 0], 0) and np.allclose(q[0, :, 0, 1].sum(), 1)


def test_annotations_drawn_by_label_weight(tmp_path):
    n, a = 4, 3
    label = np.zeros((n, a, 16, 16), dtype=np.uint8)
    for k in range(a):
        label[:, k] = k  # annotation k is all class k
    w = np.tile(np.array([[0.6, 0.3, 0.1]], dtype=np.float32), (n, 1))
    write_dataset(
        tmp_path / "t.h5",
        image=np.zeros((n, 1, 16, 16), np.float32),
        label=label,
        label_weight=w,
        classes=Classes(3),
    )
    with DatasetFile(tmp_path / "t.h5") as ds:
        src = BatchSource(ds)
        rng = np.random.default_rng(0)
        drawn = np.concatenate(
            [src.get(np.arange(n), rng).label[:, 0, 0].numpy() for _ in range(1500)]
        )
    freq = np.bincount(drawn, minlength=3) / drawn.size
    assert np.allclose(freq, [0.6, 0.3, 0.1], atol=0.02)


def _nets(recipe, c=1, k=3):
    torch.manual_seed(0)
    F = build_calibrator("segnet", c, k, width=4, depth=2).eval().requires_grad_(False)
    G = build_refiner("unet", c, k, 4, width=4, depth=2)
    D = build_discriminator("dcgan", c, k, width=4, depth=2)
    return Nets(
        F,
        G,
        D,
        adam(G.parameters(), 1e-3, [0.5, 0.99], 0.0),
        adam(D.parameters(), 1e-3, [0.5, 0.99], 0.0),
    )


@pytest.mark.parametrize("cal", ["kl", "ce", "none"])
def test_refiner_step_routes_gradients(cal):
    r = load_recipe(
        "recipes/toy.yaml",
        [
            "refiner.num_samples=3",
            "refiner.w_joint=0",
            f"refiner.calibration_loss={cal}",
            "discriminator.max_accuracy=null",
        ],
    )
    nets = _nets(r)
    from carcli.data.batches import Batch

    x = torch.randn(2, 1, 16, 16)
    y = torch.randint(0, 3, (2, 16, 16))
    y[0, 0, 0] = 255
    batch = Batch(x, x, y)
    gen = torch.Generator().manual_seed(0)
    d_before = [q.detach().clone() for q in nets.D.parameters()]
    g_before = [q.detach().clone() for q in nets.G.parameters()]
    algorithm1 = RefinerStep.from_recipe(r, nets, "segmentation", 3, 255, gen)
    out = algorithm1(batch, 0, d_on=False)
    # D frozen in its cycle: untouched, and it got no gradient from G's loss.
    assert all(torch.equal(a, b) for a, b in zip(d_before, nets.D.parameters(), strict=True))
    assert all(q.grad is None for q in nets.D.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(g_before, nets.G.parameters(), strict=True))
    assert "loss_d" not in out and np.isfinite(out["loss_g"])
    if cal == "none":
        assert out["loss_cal"] == 0
    out = algorithm1(batch, 0, d_on=True)
    assert "loss_d" in out and 0 <= out["d_acc"] <= 1
    assert any(not torch.equal(a, b) for a, b in zip(d_before, nets.D.parameters(), strict=True))


def test_accuracy_cap_skips_d_update():
    r = load_recipe(
        "recipes/toy.yaml",
        ["refiner.num_samples=2", "refiner.w_joint=0", "discriminator.max_accuracy=0.0"],
    )
    nets = _nets(r)
    from carcli.data.batches import Batch

    x = torch.randn(2, 1, 16, 16)
    batch = Batch(x, x, torch.randint(0, 3, (2, 16, 16)))
    d_before = [q.detach().clone() for q in nets.D.parameters()]
    algorithm1 = RefinerStep.from_recipe(
        r, nets, "segmentation", 3, 255, torch.Generator().manual_seed(0)
    )
    out = algorithm1(batch, 0, d_on=True)
    assert "d_acc" in out and "loss_d" not in out
    assert all(torch.equal(a, b) for a, b in zip(d_before, nets.D.parameters(), strict=True))


def test_calibrator_init_from_local_weights(tmp_path):
    from safetensors.torch import save_file

    from carcli.errors import CarsegError
    from carcli.training.calibrator import _init_from

    src = build_calibrator("segnet", 1, 2, width=4, depth=2)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.st"))
    dst = build_calibrator("segnet", 1, 2, width=4, depth=2)
    _init_from(dst, tmp_path / "w.st")
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    save_file({"unrelated": torch.zeros(3)}, str(tmp_path / "bad.st"))
    with pytest.raises(CarsegError, match="no parameter matches"):
        _init_from(dst, tmp_path / "bad.st")
