"""Provenance and staleness (issue 26, section 1): every artefact records what it was made
from; a stage that reads a stale artefact refuses in one line unless --allow-stale;
`carseg status`; the model card describes the weights it ships; identical saves give
identical files; `carseg --version` and the git commit in manifests."""

from __future__ import annotations

import json
import random
import re
import shlex
from pathlib import Path

import h5py
import pytest
import torch
import yaml
from conftest import tiny_overrides
from typer.testing import CliRunner

import carcli
from carcli.artefacts.checkpoint import save_weights
from carcli.artefacts.run import sha256_file
from carcli.cli.app import app

RECIPE = "recipes/toy.yaml"


def _args(tmp: Path, *extra: str) -> list[str]:
    return tiny_overrides(tmp, *extra)


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _ok(*args: str):
    result = _invoke(*args)
    assert result.exit_code == 0, f"{args[0]}: {result.output}"
    return result


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _status(tmp: Path, *extra: str):
    result = _invoke("status", RECIPE, *_args(tmp, *extra))
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.strip()[1:-1].split("│")]
        if len(cells) == 5 and cells[0] in STAGES:
            rows[cells[0]] = cells
    return result, rows


STAGES = (
    "prepare",
    "train-calibrator",
    "train-refiner",
    "sample",
    "evaluate",
    "plot-reliability",
    "export",
)


def _card_recipe(card: str) -> dict:
    return yaml.safe_load(card.split("```yaml\n", 1)[1].split("```", 1)[0])


def test_resumed_refiner_makes_every_reader_refuse_until_refreshed(tmp_path: Path) -> None:
    """The scenario of the issue with tiny step counts: train G 3 steps, sample, evaluate,
    plot, export; resume G to 6 steps; every reader of the old bank refuses with one line
    naming the change and the command (with the user's recipe and overrides), unless
    --allow-stale, which is recorded; `carseg status` and `validate` say stale."""
    old, new = "refiner.steps=3", "refiner.steps=6"
    run = tmp_path / "run"
    _ok("prepare", RECIPE, *_args(tmp_path))
    _ok("train-calibrator", RECIPE, *_args(tmp_path), "-q")
    _ok("train-refiner", RECIPE, *_args(tmp_path, old), "-q")
    for stage in ("sample", "evaluate", "plot-reliability", "export"):
        _ok(stage, RECIPE, *_args(tmp_path, old), "-q")
    result, rows = _status(tmp_path, old)
    assert result.exit_code == 0, result.output
    assert {r[1] for r in rows.values()} == {"done"} and len(rows) == len(STAGES)
    assert "everything is up to date" in result.stdout
    g_before = sha256_file(run / "refiner" / "model.safetensors")
    bank = h5py.File(run / "samples" / "test.h5", "r")
    assert bank.attrs["refiner_sha256"] == g_before
    bank.close()

    # asking for more steps than were trained: the refiner row says to resume
    result, rows = _status(tmp_path, new)
    assert result.exit_code == 1
    assert rows["train-refiner"][1] == "stale" and "trained 3 steps" in rows["train-refiner"][3]
    assert rows["train-refiner"][4].endswith(f"{new} --resume")

    _ok("train-refiner", RECIPE, *_args(tmp_path, new), "--resume", "-q")
    g_after = sha256_file(run / "refiner" / "model.safetensors")
    assert g_after != g_before
    # (a suggested command carries the overrides its stage reads: carcli/cli/hints.py)
    from carcli.cli.hints import relevant

    user_args = shlex.join([RECIPE, *(a for a in _args(tmp_path, new) if relevant("sample", a))])
    refresh = f"carseg sample {user_args} --overwrite"
    change = (
        f"{run}/samples/test.h5 was drawn from refiner {g_before[:4]}… but "
        f"{run}/refiner/model.safetensors is now {g_after[:4]}… (trained further: step 3 -> 6"
    )

    result, rows = _status(tmp_path, new)
    assert result.exit_code == 1
    assert rows["train-refiner"][1] == "done"
    for stage in ("sample", "evaluate", "plot-reliability", "export"):
        assert rows[stage][1] == "stale", rows[stage]
    assert change in rows["sample"][3]
    assert rows["sample"][4] == refresh
    assert f"next: {refresh}" in result.stdout

    validate = _ok("validate", RECIPE, *_args(tmp_path, new))
    bank_line = next(ln for ln in validate.stderr.splitlines() if "samples/test.h5" in ln)
    assert "present" not in bank_line and "stale" in bank_line and change in bank_line

    line = _one_line_error(_invoke("sample", RECIPE, *_args(tmp_path, new)))
    assert "stale" in line and change in line and "--overwrite" in line

    for stage in ("evaluate", "plot-reliability"):
        line = _one_line_error(_invoke(stage, RECIPE, *_args(tmp_path, new), "--overwrite"))
        assert change in line and f"run {refresh}" in line and "--allow-stale" in line, line
    metrics_before = (run / "eval" / "test" / "metrics.json").read_text()
    line = _one_line_error(_invoke("export", RECIPE, *_args(tmp_path, new), "--overwrite"))
    assert "eval/test/metrics.json" in line and change in line and refresh in line
    assert (run / "eval" / "test" / "metrics.json").read_text() == metrics_before

    # --allow-stale proceeds and is recorded
    _ok("evaluate", RECIPE, *_args(tmp_path, new), "--overwrite", "--allow-stale", "-q")
    manifest = json.loads((run / "eval" / "test" / "manifest.json").read_text())
    assert manifest["allow_stale"] is True and change in manifest["stale_inputs"][0]
    _ok("export", RECIPE, *_args(tmp_path), "--overwrite", "--allow-stale", "-q")
    model = json.loads((run / "bundle" / "model.json").read_text())
    assert model["provenance"]["allow_stale"] is True and model["test_metrics"] is None
    card = (run / "bundle" / "README.md").read_text()
    assert "- not evaluated: the latest metrics are stale" in card and "ged:" not in card
    assert "refiner G: `unet`, 6 steps" in card
    # the recipe G was trained with, though export was given the recipe's default steps
    assert _card_recipe(card)["refiner"]["steps"] == 6
    assert model["trained_on"]["resolved_recipe"]["refiner"]["steps"] == 6
    assert model["refiner"]["step"] == 6

    # refresh everything: up to date again, and the card carries these weights' metrics
    for stage in ("sample", "evaluate", "plot-reliability"):
        _ok(stage, RECIPE, *_args(tmp_path, new), "--overwrite", "-q")
    result, rows = _status(tmp_path, new)
    assert result.exit_code == 1 and rows["export"][1] == "stale"  # card: "not evaluated"
    _ok("export", RECIPE, *_args(tmp_path, new), "--overwrite", "-q")
    result, rows = _status(tmp_path, new)
    assert result.exit_code == 0, result.output
    model = json.loads((run / "bundle" / "model.json").read_text())
    prov = model["provenance"]
    assert prov["allow_stale"] is False and prov["stale_inputs"] == []
    assert prov["inputs"]["refiner"]["sha256"] == g_after == model["refiner"]["sha256"]
    assert prov["inputs"]["metrics"]["sha256"] == sha256_file(run / "eval/test/metrics.json")
    assert (
        model["test_metrics"]["ged"]
        == json.loads((run / "eval/test/metrics.json").read_text())["ged"]
    )
    assert "- ged:" in (run / "bundle" / "README.md").read_text()


def test_every_edge_is_recorded_and_a_new_dataset_makes_the_weights_stale(
    tmp_path: Path,
) -> None:
    """dataset -> F -> G -> bank -> metrics / plots, each with role, sha256 and git commit;
    preparing the data again (another seed) makes F, and all after it, stale."""
    run = tmp_path / "run"
    for stage in ("prepare", "train-calibrator", "train-refiner", "sample", "evaluate"):
        _ok(stage, RECIPE, *_args(tmp_path), "-q")
    data = tmp_path / "data"
    expect = {
        "calibrator": {"data.train", "data.val"},
        "refiner": {"data.train", "data.val", "calibrator"},
        # the toy recipe's coupling head, and D, which weights its pool (sample.pool_critic)
        "samples": {"data.test", "calibrator", "refiner", "coupling", "discriminator"},
        "eval/test": {"data.test", "bank"},
    }
    for folder, roles in expect.items():
        m = json.loads((run / folder / "manifest.json").read_text())
        assert set(m["provenance"]) == roles, folder
        assert m["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", m["git_commit"])
        for rec in m["provenance"].values():
            assert rec["sha256"] == sha256_file(rec["path"])
    m = json.loads((run / "calibrator" / "manifest.json").read_text())
    assert m["provenance"]["data.train"]["sha256"] == sha256_file(data / "train.h5")
    m = json.loads((run / "refiner" / "manifest.json").read_text())
    assert m["provenance"]["calibrator"]["step"] == 4
    with h5py.File(run / "samples" / "test.h5", "r") as h5:
        assert h5.attrs["dataset_sha256"] == sha256_file(data / "test.h5")

    _ok("prepare", RECIPE, *_args(tmp_path, "seed=1"), "--overwrite", "-q")
    result, rows = _status(tmp_path)
    assert result.exit_code == 1
    assert rows["train-calibrator"][1] == "stale"
    assert "was trained on dataset split train" in rows["train-calibrator"][3]
    assert rows["train-calibrator"][4].endswith("--overwrite")
    assert rows["train-refiner"][1] == "stale" and rows["sample"][1] == "stale"
    assert rows["evaluate"][1] == "stale"

    # the readers of the weights refuse too: G's training reads F, sampling reads F and G
    from carcli.cli.hints import relevant  # a suggestion carries the overrides it reads

    def user(stage: str) -> str:
        return shlex.join([RECIPE, *(a for a in _args(tmp_path, "seed=1") if relevant(stage, a))])

    g_sha = sha256_file(run / "refiner" / "model.safetensors")
    line = _one_line_error(
        _invoke("train-refiner", RECIPE, *_args(tmp_path, "seed=1"), "--overwrite", "-q")
    )
    assert "calibrator/model.safetensors was trained on dataset split train" in line
    assert f"run carseg train-calibrator {user('train-calibrator')} --overwrite" in line
    assert sha256_file(run / "refiner" / "model.safetensors") == g_sha  # left as it was
    line = _one_line_error(
        _invoke("sample", RECIPE, *_args(tmp_path, "seed=1"), "--overwrite", "-q")
    )
    assert "was trained on dataset split test" not in line and "--allow-stale" in line
    _ok("train-calibrator", RECIPE, *_args(tmp_path, "seed=1"), "--overwrite", "-q")
    line = _one_line_error(
        _invoke("sample", RECIPE, *_args(tmp_path, "seed=1"), "--overwrite", "-q")
    )
    assert "refiner/model.safetensors was trained from" in line  # the old data and F
    assert f"run carseg train-refiner {user('train-refiner')} --overwrite" in line
    _ok("sample", RECIPE, *_args(tmp_path, "seed=1"), "--overwrite", "--allow-stale", "-q")
    m = json.loads((run / "samples" / "manifest.json").read_text())
    assert m["allow_stale"] is True
    assert any("was trained from calibrator" in x for x in m["stale_inputs"])
    _ok("train-refiner", RECIPE, *_args(tmp_path, "seed=1"), "--overwrite", "-q")
    for stage in ("sample", "evaluate"):
        _ok(stage, RECIPE, *_args(tmp_path, "seed=1"), "--overwrite", "-q")
    result, rows = _status(tmp_path, "seed=1")
    assert [rows[s][1] for s in STAGES[:5]] == ["done"] * 5, rows

    # D weights the toy recipe's pool: another D makes the bank stale
    d_path = run / "refiner" / "discriminator.safetensors"
    d_path.write_bytes(d_path.read_bytes() + b" ")
    result, rows = _status(tmp_path, "seed=1")
    assert rows["sample"][1] == "stale" and "discriminator" in rows["sample"][3], rows


def test_status_marks_running_and_interrupted_stages(tmp_path: Path) -> None:
    """A live lock is `running`; a checkpoint without a manifest is `partial` (resume)."""
    import os
    import socket

    from carcli.recipe.load import load_recipe
    from carcli.stages.status import next_command, run_status, running_first

    _ok("prepare", RECIPE, *_args(tmp_path), "-q")
    recipe = load_recipe(RECIPE, _args(tmp_path))
    folder = tmp_path / "run" / "calibrator"
    folder.mkdir(parents=True)
    (folder / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    listed = run_status(recipe)
    rows = {r.stage: r for r in listed}
    assert rows["train-calibrator"].state == "running"
    # no later stage is suggested while F is being trained: they all need it
    assert next_command(listed) == "" and running_first(listed) is rows["train-calibrator"]
    result = CliRunner().invoke(app, ["status", RECIPE, *_args(tmp_path)])
    assert "waiting: train-calibrator is running" in result.output, result.output
    assert "next:" not in result.output
    (folder / ".lock").unlink()
    (folder / "last.safetensors").write_bytes(b"")
    rows = {r.stage: r for r in run_status(recipe)}
    assert rows["train-calibrator"].state == "partial"
    assert rows["train-calibrator"].command == "carseg train-calibrator RECIPE --resume"


def test_same_weights_and_metadata_give_the_same_file(tmp_path: Path) -> None:
    """safetensors writes its header from a hash map; the metadata order must not change
    the file (so a sha256 means "same model")."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    meta = {f"key_{i}": {"value": i, "text": f"v{i}"} for i in range(12)}
    digests = set()
    for i in range(6):
        items = list(meta.items())
        random.Random(i).shuffle(items)
        path = tmp_path / f"w{i}.safetensors"
        save_weights(path, net, dict(items))
        digests.add(sha256_file(path))
    assert len(digests) == 1
    raw = (tmp_path / "w0.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    keys = list(header["__metadata__"])
    assert keys == sorted(keys) and list(header)[0] == "__metadata__"
    from safetensors.torch import load_file

    assert torch.equal(load_file(tmp_path / "w0.safetensors")["0.weight"], net[0].weight)


def test_two_identical_runs_write_identical_checkpoints(tmp_path: Path) -> None:
    """The same recipe trained twice (same data): every checkpoint file is the same, byte for
    byte, so the sha256 recorded downstream means "the same model"."""
    _ok("prepare", RECIPE, *_args(tmp_path), "-q")
    digests = []
    for i in range(2):
        args = [*_args(tmp_path), f"run_dir={tmp_path / f'run{i}'}"]
        _ok("train-calibrator", RECIPE, *args, "-q")
        folder = tmp_path / f"run{i}" / "calibrator"
        digests.append([sha256_file(folder / n) for n in ("model.safetensors", "last.safetensors")])
    assert digests[0] == digests[1]


def test_version_option_and_command() -> None:
    for args in (["--version"], ["version"]):
        result = _invoke(*args)
        assert result.exit_code == 0 and result.stdout.strip() == carcli.__version__


def test_git_commit_is_null_without_git(monkeypatch: pytest.MonkeyPatch) -> None:
    from carcli.artefacts import provenance

    provenance.git_commit.cache_clear()
    monkeypatch.setenv("PATH", "")
    try:
        assert provenance.git_commit() is None
    finally:
        provenance.git_commit.cache_clear()


def test_allow_stale_is_documented() -> None:
    for stage in ("train-refiner", "sample", "evaluate", "plot-reliability", "export"):
        result = _invoke(stage, "--help")
        assert "--allow-stale" in result.stdout, stage
    assert "stale" in _invoke("status", "--help").stdout


def test_runs_made_before_provenance_are_still_checked(tmp_path: Path) -> None:
    """A bank and manifests written by an older carseg (sha256 by path only, no role
    records) still make `evaluate` refuse and `status` say stale once G has changed."""
    old, new = "refiner.steps=3", "refiner.steps=6"
    run = tmp_path / "run"
    _ok("prepare", RECIPE, *_args(tmp_path), "-q")
    _ok("train-calibrator", RECIPE, *_args(tmp_path), "-q")
    for stage in ("train-refiner", "sample"):
        _ok(stage, RECIPE, *_args(tmp_path, old), "-q")
    with h5py.File(run / "samples" / "test.h5", "a") as h5:
        for key in ("provenance", "dataset_sha256"):
            del h5.attrs[key]
    for folder in ("calibrator", "refiner", "samples"):
        path = run / folder / "manifest.json"
        m = json.loads(path.read_text())
        del m["provenance"], m["git_commit"]
        path.write_text(json.dumps(m))
    result, rows = _status(tmp_path, old)
    assert [rows[s][1] for s in STAGES[:4]] == ["done"] * 4, rows
    _ok("train-refiner", RECIPE, *_args(tmp_path, new), "--resume", "-q")
    result, rows = _status(tmp_path, new)
    assert rows["sample"][1] == "stale" and "was drawn from refiner" in rows["sample"][3]
    line = _one_line_error(_invoke("evaluate", RECIPE, *_args(tmp_path, new)))
    assert "was drawn from refiner" in line and "carseg sample" in line
