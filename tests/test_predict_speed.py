"""`predict` runs F and G through the same speed options as `sample` (#19): with each option
off and on, predict on the split gives the bank's samples and probabilities exactly; the
options come from the recipe, or from model.json for a bundle, and `--speed` overrides
them; an option that cannot apply here is said, not silently dropped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from predict_fixtures import tiny_recipe, trained
from torch import nn
from typer.testing import CliRunner

from carcli.cli.app import app
from carcli.runtime import speed as speed_mod

__all__ = ["trained"]  # the session fixture, imported for pytest
runner = CliRunner()

OPTIONS = {
    "off": [],
    "fold_bn": ["speed.fold_bn=true"],
    "cpu_bf16": ["speed.cpu_bf16=true"],
    "both": ["speed.fold_bn=true", "speed.cpu_bf16=true", "speed.channels_last=true"],
    "sample_chunk": ["speed.sample_chunk=3"],
}


def _run(tmp: Path, root: Path, *extra: str):
    for stage in ("calibrator", "refiner"):
        if not (root / "run" / stage).exists():
            shutil.copytree(tmp / "run" / stage, root / "run" / stage)
    return tiny_recipe(tmp, f"run_dir={root / 'run'}", *extra)


def _has_bn(net: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("name", list(OPTIONS))
def test_predict_equals_sample_with_the_same_speed_options(trained, tmp_path, name):
    from carcli import load_model
    from carcli.bundle.export import run_export
    from carcli.stages.sample import run_sample

    tmp, _, _ = trained
    r = _run(tmp, tmp_path, *OPTIONS[name])
    bank = run_sample(r, quiet=True)
    bundle = run_export(r, quiet=True)
    assert json.loads((bundle / "model.json").read_text())["speed"]["fold_bn"] == r.speed.fold_bn
    split = tmp / "data" / "test.h5"
    model = load_model(bundle)
    F_call, G_call = model.calls()
    # honoured: the folded copies are called (the loaded networks keep their BN), bf16 on
    bf16 = r.speed.cpu_bf16 and speed_mod.cpu_has_native_bf16()
    assert _has_bn(model.loaded.G) and _has_bn(G_call) != r.speed.fold_bn
    assert _has_bn(F_call) != r.speed.fold_bn
    assert (getattr(G_call, "amp", "off") == "bf16") == bf16
    assert (
        model.meta["speed_applied"]
        == json.loads((bank.parent / "manifest.json").read_text())["speed"]
    )
    pred = model.predict([split], num_samples=8, seed=r.seed, batch_size=r.sample.batch_size)
    with h5py.File(bank, "r") as h5:
        np.testing.assert_array_equal(pred.samples, h5["samples"][...])
        np.testing.assert_array_equal(pred.probabilities, h5["calibration"][...])
    # the same from the recipe itself (MODEL may be a recipe: its speed section applies)
    from carcli.recipe.load import recipe_to_yaml

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(recipe_to_yaml(r))
    again = load_model(recipe_file)
    assert again.meta["speed_applied"] == model.meta["speed_applied"]
    pred2 = again.predict([split], num_samples=8, seed=r.seed, batch_size=r.sample.batch_size)
    np.testing.assert_array_equal(pred2.samples, pred.samples)


def test_options_change_what_runs_and_speed_overrides(trained, tmp_path):
    """bf16 changes F's probabilities (so it really runs); `--speed` overrides model.json;
    prediction.json records the options that applied; an unknown option is an error."""
    from carcli import load_model
    from carcli.bundle.export import run_export

    tmp, _, _ = trained
    # sample_chunk 0: the toy recipe's chunk off, so that the two options are all there is
    r = _run(tmp, tmp_path, "speed.cpu_bf16=true", "speed.fold_bn=true", "speed.sample_chunk=0")
    bundle = run_export(r, quiet=True)
    split = tmp / "data" / "test.h5"
    on = load_model(bundle).predict([split], num_samples=4)
    off = load_model(bundle, speed={"cpu_bf16": False, "fold_bn": False}).predict(
        [split], num_samples=4
    )
    if speed_mod.cpu_has_native_bf16():
        assert not np.array_equal(on.probabilities, off.probabilities)
    out = tmp_path / "out"
    cmd = ["predict", str(bundle), str(split), "--out", str(out), "--num-samples", "4", "-q"]
    res = runner.invoke(app, cmd)
    assert res.exit_code == 0, res.output
    rec = json.loads(next(out.glob("*/prediction.json")).read_text())
    assert rec["speed"]["fold_bn"] is True
    with h5py.File(out / "predictions.h5", "r") as h5:
        np.testing.assert_array_equal(h5["samples"][...], on.samples)
    args = ["--speed", "fold_bn=false", "--speed", "cpu_bf16=false", "--overwrite"]
    res = runner.invoke(app, [*cmd, *args])
    assert res.exit_code == 0, res.output
    rec = json.loads(next(out.glob("*/prediction.json")).read_text())
    assert "speed" not in rec  # every option off: the record of before the options
    with h5py.File(out / "predictions.h5", "r") as h5:
        np.testing.assert_array_equal(h5["samples"][...], off.samples)
    res = runner.invoke(app, ["predict", str(bundle), str(split), "--speed", "fold=true"])
    assert res.exit_code == 1 and "unknown speed option 'fold'" in res.output
    for bad in ("sample_chunk=-1", "sample_chunk=two", "sample_chunk=true"):
        res = runner.invoke(app, ["predict", str(bundle), str(split), "--speed", bad])
        assert res.exit_code == 1 and "sample_chunk must be an integer >= 0" in res.output


def test_cpu_bf16_without_native_bf16_falls_back_with_a_note(trained, tmp_path, monkeypatch):
    from carcli import load_model
    from carcli.bundle.export import run_export
    from carcli.stages.sample import run_sample

    tmp, _, _ = trained
    monkeypatch.setattr(speed_mod, "cpu_has_native_bf16", lambda: False)
    r = _run(tmp, tmp_path, "speed.cpu_bf16=true")
    bundle = run_export(r, quiet=True)
    split = tmp / "data" / "test.h5"
    res = runner.invoke(app, ["predict", str(bundle), str(split), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "speed.cpu_bf16: this CPU has no native bf16" in res.output
    model = load_model(bundle)
    assert model.meta["speed_applied"]["amp"] == "off"
    bank = run_sample(r, quiet=True)
    pred = model.predict([split], num_samples=8, seed=r.seed, batch_size=r.sample.batch_size)
    with h5py.File(bank, "r") as h5:  # float32, as without the option
        np.testing.assert_array_equal(pred.samples, h5["samples"][...])


BF16_AGREEMENT = 0.995
"""Tolerance (docs/benchmarks.md): share of pixels whose argmax is the same in bf16 as in
float32, on the briefly trained model below (trained toy models: 0.99988 and more)."""


@pytest.mark.skipif(not speed_mod.cpu_has_native_bf16(), reason="no native bf16 on this CPU")
def test_bf16_and_fold_bn_keep_the_argmax_within_the_tolerance(tmp_path):
    """A small model with the recipes' `car` G, trained here for a few seconds (40 steps
    each): the bf16 draws' per-pixel argmax agrees with float32's on >= BF16_AGREEMENT of
    the test pixels, and folding BN changes (almost) none."""
    from carcli import load_model
    from carcli.bundle.export import run_export
    from carcli.stages.prepare import run_prepare
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import run_train_refiner

    steps = ["calibrator.steps=40", "refiner.steps=40", "refiner.arch=car"]
    r = tiny_recipe(tmp_path, *steps)
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    bundle = run_export(r, quiet=True)
    split = tmp_path / "data" / "test.h5"
    ref = load_model(bundle).predict([split], num_samples=32).samples
    bf16 = load_model(bundle, speed={"cpu_bf16": True}).predict([split], num_samples=32)
    fold = load_model(bundle, speed={"fold_bn": True}).predict([split], num_samples=32)
    assert (bf16.samples == ref).mean() >= BF16_AGREEMENT
    assert (fold.samples == ref).mean() >= 0.9999
