"""Usage errors exit 2 (a malformed --fail-if, an override without `=`, a --fail-if figure
the evaluation will not write, found before evaluating); `evaluate` says where metrics.json
went and shows a figure a convention leaves undefined as `n/a (reason)`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from reliability import write_recipe
from rich.console import Console
from typer.testing import CliRunner

import carcli.stages.evaluate as evaluate_mod
from carcli.cli.app import app
from carcli.metrics.evaluate import EvalSettings, lookup, metrics_skeleton
from carcli.recipe.load import load_recipe
from carcli.stages.prepare import run_prepare
from carcli.stages.sample import run_sample
from carcli.training.calibrator import run_train_calibrator
from carcli.training.refiner import run_train_refiner
from carcli.ui import Reporter

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run up to the bank; returns its recipe path."""
    tmp = tmp_path_factory.mktemp("usage")
    recipe = write_recipe(tmp / "r.yaml", tmp / "run", tmp / "data")
    r = load_recipe(recipe)
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    run_sample(r, quiet=True)
    return recipe


def _one_error(result) -> str:  # noqa: ANN001
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("carseg: error: "), result.output
    return lines[0]


def _not_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the evaluation ran")

    monkeypatch.setattr(evaluate_mod, "evaluate_bank", never)


@pytest.mark.parametrize("condition", ["ged.16", "ged.2>>1", "hm_iou<fast"])
def test_malformed_fail_if_is_a_usage_error(run: Path, monkeypatch, condition: str) -> None:
    _not_evaluated(monkeypatch)
    result = runner.invoke(app, ["evaluate", str(run), "--fail-if", condition])
    assert result.exit_code == 2
    assert f"--fail-if {condition!r}" in _one_error(result)


def test_override_without_equals_is_a_usage_error(run: Path) -> None:
    result = runner.invoke(app, ["validate", str(run), "refiner.steps"])
    assert result.exit_code == 2
    line = _one_error(result)
    assert line.startswith("carseg: error: command line: 'refiner.steps' -> expected key=value")


def test_unknown_fail_if_path_is_refused_before_evaluating(run: Path, monkeypatch) -> None:
    """Rejected before any work, with exit 2; the paths the hint names exist."""
    _not_evaluated(monkeypatch)
    cases = {
        "ged.16>0.3": "ged.2",  # TINY evaluates GED at 2 and 5 samples
        "hm_iuo<0.5": "hm_iou",  # a typo: the close match
        "conventions.mose.hm_iou<0.5": None,  # only with --convention mose (or all)
    }
    hints = []
    for condition, close in cases.items():
        result = runner.invoke(app, ["evaluate", str(run), "--fail-if", condition, "-q"])
        assert result.exit_code == 2, result.output
        line = _one_error(result)
        assert "will have no" in line and "checked before evaluating" in line, line
        if close:
            assert close in line.split(" — ")[1], line
        hints.append(line.split(" — ")[1])
    assert not (run.parent / "run" / "eval").exists()
    monkeypatch.undo()
    # the same metric with the convention that computes it: accepted, and it is there
    args = ["evaluate", str(run), "--convention", "carseg,mose", "-q"]
    result = runner.invoke(app, [*args, "--fail-if", "conventions.mose.hm_iou<-1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run.parent / "run" / "eval" / "test" / "metrics.json").read_text())
    for hint in hints:  # every path a hint names is in metrics.json
        for path in hint.replace("did you mean ", "").split("e.g. ")[-1].split(" (")[0].split(", "):
            lookup(metrics, path.strip(" ?"))


def test_evaluate_says_where_metrics_went(run: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(run), "--overwrite"])
    assert result.exit_code == 0, result.output
    out = run.parent / "run" / "eval" / "test"
    assert f"metrics written: {out / 'metrics.json'}" in result.stderr


def test_undefined_figures_show_as_na_with_the_reason(run: Path) -> None:
    """`--convention car` on images whose pairs of maps all lack a scored class leaves GED
    undefined at every count: the table still has a GED row per count, saying why."""
    from carcli.data.dataset import DatasetFile

    with DatasetFile(run.parent / "data" / "test.h5") as ds:
        e = EvalSettings(ged_counts=(2, 5), hm_iou_samples=4, convention="car")
        summary = metrics_skeleton(ds.info, e)  # every figure undefined, nothing scored
    assert summary is not None
    summary |= {"split": "test", "ged": {}, "hm_iou_samples": 4}
    rep = Reporter()
    rep.console = Console(file=io.StringIO(), width=300)
    evaluate_mod.print_table(summary, rep)
    text = rep.console.file.getvalue()
    for n in (2, 5):
        row = next(line for line in text.splitlines() if f"GED ({n} samples)" in line)
        assert "n/a (no image scored: the car convention leaves GED undefined" in row, row
    assert "ECE of F" in text and "n/a (the bank holds no probabilities of F)" in text
