"""Training faults and write failures: a non-finite loss or gradient (`on_nonfinite: stop`
or `skip`), a metrics line torn by a kill, a real write failure in a subprocess, an output
folder without write permission."""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from reliability import REPO, carseg_cmd, carseg_env, files_under, write_recipe
from safetensors.torch import load_file
from typer.testing import CliRunner

import carcli.losses.calibration as calibration_mod
import carcli.training.calibrator as calibrator_mod
from carcli.cli.app import app
from carcli.recipe.load import load_recipe
from carcli.stages.prepare import run_prepare
from carcli.training.calibrator import run_train_calibrator


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("faults")
    run_prepare(load_recipe(write_recipe(tmp / "r.yaml", tmp / "run", tmp / "data")), quiet=True)
    return tmp / "data"


@pytest.fixture(scope="module")
def calibrator(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("f")
    run_train_calibrator(load_recipe(write_recipe(tmp / "r.yaml", tmp / "run", data)), quiet=True)
    return tmp / "run" / "calibrator"


class _InfGrad(torch.autograd.Function):
    """Identity forward (a finite value), infinite gradient backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")


def _poison(mp: pytest.MonkeyPatch, module: Any, name: str, at: set[int], kind: str) -> None:
    """Make the `at`-th calls (1-based) of module.name non-finite: `nan` multiplies the loss
    by NaN (its gradients are NaN too), `inf_grad` keeps the value, poisons the gradient."""
    original = getattr(module, name)
    calls = [0]

    def poisoned(*args: Any, **kwargs: Any) -> torch.Tensor:
        loss = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] in at:
            return loss * float("nan") if kind == "nan" else _InfGrad.apply(loss)
        return loss

    mp.setattr(module, name, poisoned)


def _recipe(tmp: Path, data: Path, **sections: dict[str, Any]) -> str:
    tmp.mkdir(parents=True, exist_ok=True)
    return str(write_recipe(tmp / "r.yaml", tmp / "run", data, **sections))


def _log(stage: Path) -> list[dict[str, Any]]:
    def no_nan(token: str) -> None:
        raise AssertionError(f"metrics.jsonl holds {token}: not strict JSON")

    text = (stage / "metrics.jsonl").read_text()
    return [json.loads(x, parse_constant=no_nan) for x in text.splitlines() if x]


def _error(result: Any) -> str:
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("carseg: error: ") and "Traceback" not in result.output
    return line


def test_nonfinite_loss_stops(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN at step 5 stops the stage, naming the checkpoint of step 4; `--resume` from it
    ends with the weights of a run that never met the NaN."""
    section = {"calibrator": {"steps": 8, "checkpoint_every": 2, "val_every": 0}}
    recipe = _recipe(tmp_path / "a", data, **section)
    stage = tmp_path / "a" / "run" / "calibrator"
    _poison(monkeypatch, calibrator_mod, "calibrator_loss", {5}, "nan")
    line = _error(CliRunner().invoke(app, ["train-calibrator", recipe, "-q"]))
    last = stage / "last.safetensors"
    assert (
        f"loss_ce and gradients became non-finite at step 5; the last good checkpoint is {last}"
        in line
    )
    assert "--resume" in line and "calibrator.on_nonfinite=skip" in line
    monkeypatch.undo()
    state = load_file(str(stage / "last.safetensors"))
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    result = CliRunner().invoke(app, ["train-calibrator", recipe, "--resume", "-q"])
    assert result.exit_code == 0, result.output
    straight = _recipe(tmp_path / "b", data, **section)
    assert CliRunner().invoke(app, ["train-calibrator", straight, "-q"]).exit_code == 0
    a = load_file(str(stage / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "calibrator" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nonfinite_loss_before_any_checkpoint(
    data: Path, calibrator: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refiner: NaN at step 1, no checkpoint yet: the message says so."""
    recipe = _recipe(tmp_path, data)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "calibrator").symlink_to(calibrator)
    _poison(monkeypatch, calibration_mod, "calibration_loss", {1}, "nan")
    line = _error(CliRunner().invoke(app, ["train-refiner", recipe, "-q"]))
    assert "became non-finite at step 1; no checkpoint was written before it" in line
    assert "loss_g" in line and "refiner.on_nonfinite=skip" in line


def _adam_steps(state: dict[str, torch.Tensor], name: str) -> set[int]:
    return {int(v) for k, v in state.items() if k.startswith(f"optim.{name}.") and "step" in k}


@pytest.mark.parametrize("kind", ["nan", "inf_grad"])
def test_nonfinite_loss_skip(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """`skip`: the poisoned steps change no weight (Adam counted 8 - 2 updates), are marked in
    metrics.jsonl, and counted in the log and the manifest."""
    section = {"calibrator": {"steps": 8, "checkpoint_every": 4, "on_nonfinite": "skip"}}
    recipe = _recipe(tmp_path, data, **section)
    _poison(monkeypatch, calibrator_mod, "calibrator_loss", {3, 6}, kind)
    result = CliRunner().invoke(app, ["train-calibrator", recipe, "-q"])
    assert result.exit_code == 0, result.output
    stage = tmp_path / "run" / "calibrator"
    log = _log(stage)
    assert [x["step"] for x in log] == list(range(1, 9))
    assert [x["step"] for x in log if x.get("skipped")] == [3, 6]
    assert [x.get("skipped_steps", 0) for x in log] == [0, 0, 1, 1, 1, 2, 2, 2]
    if kind == "nan":
        assert log[2]["loss_ce"] is None
    assert json.loads((stage / "manifest.json").read_text())["skipped_steps"] == 2
    state = load_file(str(stage / "last.safetensors"))
    assert _adam_steps(state, "F") == {6}
    assert all(
        torch.isfinite(t).all() for t in load_file(str(stage / "model.safetensors")).values()
    )


def test_refiner_skip(
    data: Path, calibrator: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = {"refiner": {"steps": 4, "on_nonfinite": "skip"}}
    recipe = _recipe(tmp_path, data, **section)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "calibrator").symlink_to(calibrator)
    _poison(monkeypatch, calibration_mod, "calibration_loss", {2}, "nan")
    result = CliRunner().invoke(app, ["train-refiner", recipe, "-q"])
    assert result.exit_code == 0, result.output
    stage = tmp_path / "run" / "refiner"
    log = _log(stage)
    assert [x["step"] for x in log if x.get("skipped")] == [2]
    assert log[1]["loss_g"] is None and log[-1]["skipped_steps"] == 1
    assert _adam_steps(load_file(str(stage / "last.safetensors")), "G") == {3}


def test_nonfinite_gradients_never_reach_the_weights(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finite loss with infinite gradients at step 3 (after the checkpoint of step 2):
    `stop` ends the stage; the checkpoint holds the finite weights of step 2."""
    section = {"calibrator": {"steps": 8, "checkpoint_every": 2, "val_every": 0}}
    recipe = _recipe(tmp_path, data, **section)
    _poison(monkeypatch, calibrator_mod, "calibrator_loss", {3}, "inf_grad")
    line = _error(CliRunner().invoke(app, ["train-calibrator", recipe, "-q"]))
    assert "gradients became non-finite at step 3; the last good checkpoint is" in line
    state = load_file(str(tmp_path / "run" / "calibrator" / "last.safetensors"))
    assert _adam_steps(state, "F") == {2}
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_torn_metrics_line_is_dropped_on_resume(data: Path, tmp_path: Path) -> None:
    """A kill in the middle of appending to metrics.jsonl leaves a torn last line."""
    recipe = _recipe(tmp_path, data)
    stage = tmp_path / "run" / "calibrator"
    assert CliRunner().invoke(app, ["train-calibrator", recipe, "-q"]).exit_code == 0
    with open(stage / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 5, "loss_c')
    result = CliRunner().invoke(
        app, ["train-calibrator", recipe, "--resume", "calibrator.steps=6", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert [x["step"] for x in _log(stage)] == list(range(1, 7))


def _limit_file_size(limit: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_real_write_failure_in_a_subprocess(data: Path, tmp_path: Path) -> None:
    """No monkeypatching: the process may not write files over 8 kB (as on a full disk, the
    write system call fails); the first checkpoint (14 kB) fails cleanly."""
    recipe = _recipe(tmp_path, data)
    result = subprocess.run(
        carseg_cmd("train-calibrator", recipe, "-q"),
        cwd=REPO,
        env=carseg_env(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_file_size(8000),
    )
    assert result.returncode == 1, result.stderr
    stage = tmp_path / "run" / "calibrator"
    assert result.stderr.strip().splitlines() == [
        f"carseg: error: cannot write {stage / 'best.safetensors'}: File too large — free disk "
        f"space or make {stage} writable, then run the command again"
    ]
    assert sorted(files_under(stage)) == ["metrics.jsonl", "recipe.yaml"]


def test_output_folder_without_write_permission(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(os.access is faked: the tests may run as root, who can write anywhere.)"""
    import carcli.artefacts.run as run_mod

    recipe = _recipe(tmp_path, data)
    real = run_mod.os.access
    monkeypatch.setattr(
        run_mod.os, "access", lambda p, mode: not str(p).endswith("calibrator") and real(p, mode)
    )
    line = _error(CliRunner().invoke(app, ["train-calibrator", recipe, "-q"]))
    assert f"directory {tmp_path / 'run' / 'calibrator'} is not writable" in line
    assert "choose another run_dir" in line
    assert not (tmp_path / "run").exists()  # the folders this run made are gone again
