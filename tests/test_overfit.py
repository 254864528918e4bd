"""calibrator.overfit_ratio: F's over-fitting measured on the labels, and the regularised
second F the stage then trains and keeps only if its validation cross-entropy is lower
(carcli/training/overfit.py, carcli/training/calibrator.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from carcli.artefacts.checkpoint import load_weights, read_safetensors
from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile
from carcli.errors import CarsegError
from carcli.recipe.load import load_recipe
from carcli.training import calibrator as calibrator_stage
from carcli.training.overfit import divergences, overfit_check


def test_divergences_by_hand():
    """Uniform p over 2 classes: CE = log 2 whatever q; KL = log 2 for a one-hot q, 0 for
    q = (0.5, 0.5); p = (0.8, 0.2) against q = (1, 0): CE = KL = -log 0.8."""
    logits = torch.zeros(2, 2)
    q = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    ce, kl = divergences(logits, q)
    assert ce == pytest.approx(math.log(2))
    assert kl == pytest.approx(0.5 * math.log(2))
    ce, kl = divergences(torch.log(torch.tensor([[0.8, 0.2]])), torch.tensor([[1.0, 0.0]]))
    assert ce == pytest.approx(-math.log(0.8)) and kl == pytest.approx(-math.log(0.8))


class _Memoriser(torch.nn.Module):
    """An F that has memorised its training images: their label distribution exactly (up to
    1e-4), and uniform probabilities on any image it has not seen."""

    def __init__(self, images: torch.Tensor, q: torch.Tensor) -> None:
        super().__init__()
        self.images, self.logits = images, torch.log(q + 1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.logits.shape[1], *x.shape[2:])
        for i, img in enumerate(x):
            hit = [j for j, seen in enumerate(self.images) if torch.equal(seen, img)]
            if hit:
                out[i] = self.logits[hit[0]]
        return out


class _Uniform(torch.nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], self.k, *x.shape[2:])


def test_a_memorising_f_is_caught_and_a_uniform_one_is_not(tiny_data_dir):
    """The memoriser's KL on training images is about 0 and on validation images log K less
    the labels' entropy: far above any threshold. A uniform F has KL log K - H(q) on both
    splits: a ratio near 1 (these tiny splits hold one-hot labels: exactly log 3 on both)."""
    cpu = torch.device("cpu")
    with (
        DatasetFile(tiny_data_dir / "train.h5", validate=True) as tr,
        DatasetFile(tiny_data_dir / "val.h5", validate=True) as va,
    ):
        train, val = BatchSource(tr), BatchSource(va)
        n = tr.info.n
        b = train.get(np.arange(n), None, annotation=np.zeros(n, int), soft=True)
        mem = _Memoriser(b.cond, b.soft.float())
        check = overfit_check(mem, train, val, cpu, 4, seed=0, threshold=3.0)
        assert check["overfit"] and check["train_kl"] < 1e-3
        assert check["train_images"] == min(n, va.info.n)
        k = tr.info.num_classes
        uni = overfit_check(_Uniform(k), train, val, cpu, 4, seed=0, threshold=3.0)
    assert not uni["overfit"]
    assert uni["ratio"] == pytest.approx(1.0, abs=0.05)
    assert check["val_kl"] == pytest.approx(uni["val_kl"], rel=1e-3)  # uniform on unseen


def test_recipe_checks_the_overfit_keys():
    for bad, match in [
        ("calibrator.overfit_ratio=0.5", "overfit_ratio -> must be above 1"),
        ("calibrator.overfit_dropout=1.5", "overfit_dropout"),
        ("calibrator.overfit_dropout=[0.1,1.5]", "overfit_dropout"),
        ("calibrator.overfit_dropout=[]", "overfit_dropout"),
        ("calibrator.overfit_weight_decay=-1", "overfit_weight_decay"),
    ]:
        with pytest.raises(CarsegError, match=match):
            load_recipe("recipes/toy.yaml", [bad])
    with pytest.raises(CarsegError, match="overfit_ratio -> is for segmentation"):
        load_recipe(
            "recipes/toy.yaml",
            ["calibrator.arch=mlp", "calibrator.recalibrate=none", "calibrator.overfit_ratio=3"],
        )


def _force(monkeypatch, overfit: bool) -> list[dict]:
    """Make the stage's check return ``overfit`` (the real figures, the verdict forced)."""
    seen: list[dict] = []
    real = calibrator_stage.overfit_check

    def forced(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(dict(out))
        return {**out, "overfit": overfit}

    monkeypatch.setattr(calibrator_stage, "overfit_check", forced)
    return seen


def _weights(path):
    tensors, _ = read_safetensors(path, "weights", "-")
    return {k: v for k, v in tensors.items()}


def test_the_stage_trains_a_regularised_f_and_keeps_the_lower_validation_ce(
    tmp_path, tiny_data_dir, monkeypatch
):
    """Forced to fire: calibrator/regularised/ holds a finished second F (its own manifest,
    dropout and weight decay from the overfit keys), both validation cross-entropies are
    recorded, model.safetensors is the one of the lower, and a --resume (nothing left to
    train) comes to the same F bit for bit."""
    seen = _force(monkeypatch, True)
    over = tiny_overrides(
        tmp_path,
        "data.source=prepared",
        "calibrator.overfit_ratio=3",
        "calibrator.overfit_dropout=0.2",
        "calibrator.overfit_weight_decay=1e-3",
    )
    r = load_recipe("recipes/toy.yaml", over)
    calibrator_stage.run_train_calibrator(r, quiet=True)
    d = tmp_path / "run" / "calibrator"
    sub = d / "regularised"
    assert (sub / "manifest.json").exists() and (sub / "model.safetensors").exists()
    sub_recipe = json.loads((sub / "manifest.json").read_text())["recipe"]["calibrator"]
    assert sub_recipe["dropout"] == 0.2 and sub_recipe["weight_decay"] == 1e-3
    _, meta = load_weights(d / "model.safetensors", stage="calibrator", make_cmd="-")
    check = meta["overfit_check"]
    assert check["ratio"] == pytest.approx(seen[0]["ratio"])
    ces = check["val_ce"]
    assert set(ces) == {"as trained", "regularised"}
    assert check["chosen"] == min(ces, key=ces.get)
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["overfit_check"]["chosen"] == check["chosen"]
    kept = _weights(d / "model.safetensors")
    if check["chosen"] == "regularised":
        other = _weights(sub / "model.safetensors")
        assert all(torch.equal(kept[k], other[k]) for k in kept)
    calibrator_stage.run_train_calibrator(r, resume=True, quiet=True)
    again = _weights(d / "model.safetensors")
    assert all(torch.equal(kept[k], again[k]) for k in kept)


def test_an_interrupted_second_f_resumes(tmp_path, tiny_data_dir, monkeypatch):
    """The second F's last.safetensors at an earlier step (an interruption): --resume
    continues it in calibrator/regularised/ to the full step count, without retraining the
    first F, and ends with the same weights as the uninterrupted run."""
    _force(monkeypatch, True)
    over = tiny_overrides(tmp_path, "data.source=prepared", "calibrator.overfit_ratio=3")
    r = load_recipe("recipes/toy.yaml", over)
    calibrator_stage.run_train_calibrator(r, quiet=True)
    sub = tmp_path / "run" / "calibrator" / "regularised"
    full = _weights(sub / "model.safetensors")
    # the state at step 2 (checkpoint_every=2): rerun that far, keep its last.safetensors
    mid = tmp_path / "mid"
    r2 = load_recipe("recipes/toy.yaml", [*over, "calibrator.steps=2", f"run_dir={mid}"])
    calibrator_stage.run_train_calibrator(r2, quiet=True)
    (sub / "manifest.json").unlink()
    state = mid / "calibrator" / "regularised" / "last.safetensors"
    (sub / "last.safetensors").write_bytes(state.read_bytes())
    first_log = (tmp_path / "run" / "calibrator" / "metrics.jsonl").read_text()
    calibrator_stage.run_train_calibrator(r, resume=True, quiet=True)
    assert (tmp_path / "run" / "calibrator" / "metrics.jsonl").read_text() == first_log
    log = [json.loads(x) for x in (sub / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4
    resumed = _weights(sub / "model.safetensors")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_no_second_f_when_the_check_passes(tmp_path, tiny_data_dir, monkeypatch):
    """Check passed: no second F, and F is the one a run without the check makes, bit for
    bit (the check reads F and draws nothing from torch's generator)."""
    _force(monkeypatch, False)
    over = tiny_overrides(tmp_path, "data.source=prepared", "calibrator.overfit_ratio=3")
    calibrator_stage.run_train_calibrator(load_recipe("recipes/toy.yaml", over), quiet=True)
    d = tmp_path / "run" / "calibrator"
    assert not (d / "regularised").exists()
    off = tiny_overrides(tmp_path, "data.source=prepared", "calibrator.overfit_ratio=0", run="off")
    calibrator_stage.run_train_calibrator(load_recipe("recipes/toy.yaml", off), quiet=True)
    a, b = (
        _weights(d / "model.safetensors"),
        _weights(tmp_path / "off" / "calibrator" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    _, meta = load_weights(d / "model.safetensors", stage="calibrator", make_cmd="-")
    assert meta["overfit_check"]["overfit"] is False and "chosen" not in meta["overfit_check"]


def _forced_without_decay(tmp_path, monkeypatch, dropout: str):
    """The stage forced to fire, no refit, the regularised Fs' weight decay 0 and
    overfit_dropout ``dropout``: the calibrator folder."""
    _force(monkeypatch, True)
    over = tiny_overrides(
        tmp_path,
        "data.source=prepared",
        "calibrator.recalibrate=none",
        "calibrator.overfit_ratio=3",
        f"calibrator.overfit_dropout={dropout}",
        "calibrator.overfit_weight_decay=0",
    )
    calibrator_stage.run_train_calibrator(load_recipe("recipes/toy.yaml", over), quiet=True)
    return tmp_path / "run" / "calibrator"


def test_the_second_f_differs_from_the_first_only_in_its_regularisation(
    tmp_path, tiny_data_dir, monkeypatch
):
    """Same initial weights, same batches: with the first F's own dropout and weight decay as
    the overfit keys, the second F is the first bit for bit (a fresh run of the regularised
    settings alone makes the same F)."""
    d = _forced_without_decay(tmp_path, monkeypatch, "0")
    first, second = (
        _weights(d / "last.safetensors"),
        _weights(d / "regularised" / "last.safetensors"),
    )
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_list_of_dropouts_trains_one_f_each_and_keeps_the_lowest_validation_ce(
    tmp_path, tiny_data_dir, monkeypatch
):
    """overfit_dropout [0, 0.3]: calibrator/regularised/ (dropout 0: with weight decay 0 the
    first F bit for bit) and regularised-2/ (dropout 0.3, in its manifest); the three
    validation cross-entropies are recorded with each F's dropout, and model.safetensors is
    the F of the lowest."""
    d = _forced_without_decay(tmp_path, monkeypatch, "[0,0.3]")
    first = _weights(d / "last.safetensors")
    same = _weights(d / "regularised" / "last.safetensors")
    assert all(torch.equal(first[k], same[k]) for k in first)
    sub2 = json.loads((d / "regularised-2" / "manifest.json").read_text())
    assert sub2["recipe"]["calibrator"]["dropout"] == 0.3
    _, meta = load_weights(d / "model.safetensors", stage="calibrator", make_cmd="-")
    check = meta["overfit_check"]
    ces = check["val_ce"]
    assert set(ces) == {"as trained", "regularised", "regularised-2"}
    assert ces["as trained"] == pytest.approx(ces["regularised"])  # the same weights
    assert check["dropout"] == {"regularised": 0.0, "regularised-2": 0.3}
    assert check["chosen"] == min(ces, key=ces.get)
    chosen = "." if check["chosen"] == "as trained" else check["chosen"]
    kept, want = _weights(d / "model.safetensors"), _weights(d / chosen / "model.safetensors")
    assert all(torch.equal(kept[k], want[k]) for k in kept)
