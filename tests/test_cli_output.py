"""Console output in pipes and with long paths; thread defaults; help text (issue 20).

Messages must never be wrapped when stderr is not a terminal (one message = one line), so a
path of any length appears whole on one line; tables keep their numbers; every suggested
command names the recipe the user passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carcli.cli.app import app
from carcli.cli.help import name_recipe
from carcli.ui import Reporter

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "recipes" / "toy.yaml"
runner = CliRunner()


def _long_dir(tmp_path: Path) -> Path:
    """A folder whose path is well over 200 characters (made of several long parts)."""
    deep = tmp_path.joinpath(*(["a_rather_long_folder_name_for_testing_paths"] * 5))
    assert len(str(deep)) > 200
    return deep


def _lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_validate_keeps_long_paths_on_one_line_in_cli_runner(tmp_path: Path) -> None:
    deep = _long_dir(tmp_path)
    result = runner.invoke(app, ["validate", str(TOY), f"data.dir={deep}", f"run_dir={deep}"])
    assert result.exit_code == 0, result.output
    for split in ("train", "val", "test"):
        path = f"{deep}/{split}.h5"
        hits = _lines_with(result.stderr, path)
        assert len(hits) == 1, result.stderr
        assert f"`carseg prepare {TOY} data.dir={deep} run_dir={deep}`" in hits[0]
    assert len(_lines_with(result.stderr, f"{deep}/calibrator/model.safetensors")) == 1


def test_validate_keeps_long_paths_on_one_line_through_a_pipe(tmp_path: Path) -> None:
    """A real process whose stderr is a pipe (what CI and `2>&1 | grep` see)."""
    deep = _long_dir(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "CARSEG_DEBUG")}
    proc = subprocess.run(
        [sys.executable, "-m", "carcli", "validate", str(TOY), f"data.dir={deep}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    hits = _lines_with(proc.stderr, f"{deep}/train.h5")
    assert len(hits) == 1 and "not made yet" in hits[0], proc.stderr


def test_error_with_a_long_path_is_one_line(tmp_path: Path) -> None:
    deep = _long_dir(tmp_path)
    missing = deep / "no_predictions"
    result = runner.invoke(
        app, ["validate", str(TOY), f"data.blackbox_dir={missing}", f"data.dir={deep}"]
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("carseg: error:")]
    assert any(str(missing) in line and "not a folder" in line for line in errors), errors


def test_missing_input_names_the_recipe_passed(tmp_path: Path) -> None:
    """`carseg sample` without a trained calibrator names `carseg train-calibrator <recipe>`
    with the user's own overrides, never the placeholder RECIPE."""
    overrides = [f"data.dir={tmp_path / 'data'}", f"run_dir={tmp_path / 'run'}"]
    result = runner.invoke(app, ["sample", str(TOY), *overrides])
    assert result.exit_code == 1, result.output
    assert "RECIPE" not in result.stderr
    # (prepare is not told run_dir=: it does not read it)
    assert f"carseg train-calibrator {TOY} {overrides[0]} {overrides[1]}" in result.stderr or (
        f"carseg prepare {TOY} {overrides[0]}`" in result.stderr
    ), result.stderr


def test_name_recipe_quotes_and_keeps_other_text() -> None:
    text = "no refiner at x — run `carseg train-refiner RECIPE`; see RECIPE.md"
    out = name_recipe(text, "my recipes/a.yaml", ["seed=3"])
    assert (
        out
        == "no refiner at x — run `carseg train-refiner 'my recipes/a.yaml' seed=3`; see RECIPE.md"
    )
    assert name_recipe(text, None, None) == text


def test_tables_in_a_pipe_keep_every_number(capsys) -> None:
    from rich.table import Table

    rep = Reporter()
    assert not rep.console.is_terminal
    table = Table(title="t")
    table.add_column("metric")
    table.add_column("value", justify="right")
    long_name = "a metric with a very long name " * 6
    table.add_row(long_name.strip(), "0.123456789")
    rep.console.print(table)
    err = capsys.readouterr().err
    row = _lines_with(err, "0.123456789")
    assert len(row) == 1 and long_name.strip() in row[0], err


def test_help_reads_like_click() -> None:
    result = runner.invoke(app, ["evaluate", "--help"])
    assert result.exit_code == 0
    assert "Usage: carseg evaluate [OPTIONS] RECIPE [KEY=VALUE]..." in result.output
    for typed in ("<bool>", "<str>", "<list[str]>", "{recipe}", "{RECIPE}"):
        assert typed not in result.output
    assert "--fail-if CONDITION" in result.output
    top = runner.invoke(app, ["--help"])
    assert "train-refiner" in top.output and "<bool>" not in top.output


def _env_without(*keys: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in keys}


def test_thread_defaults_are_set_before_torch_unless_the_user_chose() -> None:
    code = (
        "import os, sys; import carcli.cli.app; "
        "print(os.environ['OMP_WAIT_POLICY'], os.environ['OPENBLAS_NUM_THREADS'], "
        "'torch' in sys.modules)"
    )
    keys = ("OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env_without(*keys)
    )
    assert out.stdout.split() == ["PASSIVE", "1", "False"], out.stderr
    env = _env_without(*keys) | {"OMP_WAIT_POLICY": "ACTIVE", "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["ACTIVE", "2", "False"], out.stderr


def test_malloc_tuning_applies_on_glibc_and_yields_to_the_users_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import platform

    from carcli.threads import tune_malloc

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert tune_malloc() is glibc
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")
    assert tune_malloc() is False


def test_manifest_records_the_thread_settings(tmp_path: Path) -> None:
    from carcli.artefacts.run import Manifest

    obj = Manifest(stage="x", recipe={}, seed=0).write(tmp_path, [])
    saved = json.loads((tmp_path / "manifest.json").read_text())
    assert saved["threads"] == obj["threads"]
    assert saved["threads"]["OMP_WAIT_POLICY"] == os.environ.get("OMP_WAIT_POLICY")
    assert saved["threads"]["torch_num_threads"] >= 1
