"""The `carseg` command line: stages, exit codes 0/1/2, one-line errors, validate/show/prepare.

In-process tests use typer's CliRunner; one subprocess test runs the installed `carseg`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from carcli.cli.app import app
from carcli.data.dataset_check import validate_dataset
from carcli.errors import CarsegError

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "recipes" / "toy.yaml"
STAGES = ("prepare", "train-calibrator", "train-refiner", "sample", "evaluate", "plot-reliability")

runner = CliRunner()


def _isolated(tmp_path: Path) -> list[str]:
    """Overrides that keep a command away from the repository's data/ and runs/."""
    return [f"data.dir={tmp_path / 'data'}", f"run_dir={tmp_path / 'run'}"]


def _invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _error_lines(result) -> list[str]:
    """The `carseg: error:` lines of a command that failed with status 1, no traceback.

    (`validate` also reports what it checked on stderr before its error lines.)
    """
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, CarsegError)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("carseg: error: ")]
    assert errors, lines
    assert lines[-len(errors) :] == errors, lines  # the errors come last, nothing after them
    return errors


# ------------------------------------------------------------------------------- help, usage


def test_help_lists_the_stages() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    for name in (*STAGES, "validate", "show"):
        assert name in result.output, name


def test_no_arguments_shows_help() -> None:
    result = _invoke()
    assert result.exit_code in (0, 2)
    assert "prepare" in result.output


@pytest.mark.parametrize("stage", [*STAGES, "validate", "show"])
def test_stage_help(stage: str) -> None:
    result = _invoke(stage, "--help")
    assert result.exit_code == 0
    assert "RECIPE" in result.output.upper()


@pytest.mark.parametrize(
    "args",
    [
        ("validate",),  # missing argument
        ("validate", str(TOY), "--bogus"),  # unknown option
        ("show", "--bogus"),
        ("no-such-stage", str(TOY)),
        ("train-calibrator", str(TOY), "--resume=maybe"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------------------- validate


def test_validate_toy_with_empty_data_dir(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = _invoke("validate", TOY, *_isolated(tmp_path))
    assert result.exit_code == 0, result.output
    assert "carseg prepare" in result.output  # the synthetic source can make the files
    assert "ok" in result.output.splitlines()[-1]


def test_validate_reads_an_old_flat_key_with_one_warning(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    new = _invoke("validate", TOY, "data.synthetic.size=32", *_isolated(tmp_path))
    old = _invoke("validate", TOY, "data.size=32", *_isolated(tmp_path))
    assert new.exit_code == old.exit_code == 0, old.output
    warning = (
        "override: data.size is deprecated: use data.synthetic.size (read for this version, "
        "removed in the next)"
    )
    old_lines = old.stderr.splitlines()
    assert old_lines.count(warning) == 1 and warning not in new.stderr
    # otherwise the same report (the suggested commands echo the key as it was passed)
    rest = [x.replace("data.size=32", "data.synthetic.size=32") for x in old_lines if x != warning]
    assert rest == new.stderr.splitlines()


def test_validate_valid_prepared_files(tmp_path: Path, tiny_data_dir: Path) -> None:
    result = _invoke("validate", TOY, "data.source=prepared", *_isolated(tmp_path))
    assert result.exit_code == 0, result.output
    assert "valid, 4 images, 3 classes" in result.output


def test_validate_prepared_without_files(tmp_path: Path) -> None:
    lines = _error_lines(_invoke("validate", TOY, "data.source=prepared", *_isolated(tmp_path)))
    text = "\n".join(lines)
    for split in ("train", "val", "test"):
        assert str(tmp_path / "data" / f"{split}.h5") in text


def test_validate_real_source_without_raw(tmp_path: Path) -> None:
    lines = _error_lines(
        _invoke(
            "validate",
            TOY,
            "data.source=lidc-png",
            f"data.raw={tmp_path / 'nowhere'}",
            *_isolated(tmp_path),
        )
    )
    assert any("carseg prepare" in line and "train.h5" in line for line in lines)


def test_validate_checks_the_blackbox_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    missing = tmp_path / "no_predictions"
    lines = _error_lines(
        _invoke("validate", TOY, f"data.blackbox_dir={missing}", *_isolated(tmp_path))
    )
    assert any(str(missing) in line and "not a folder" in line for line in lines)
    missing.mkdir()
    (missing / "train_000000.png").write_bytes(b"")
    result = _invoke("validate", TOY, f"data.blackbox_dir={missing}", *_isolated(tmp_path))
    assert result.exit_code == 0, result.output
    assert "1 black-box prediction files" in result.output


def test_validate_pickle_needs_opt_in(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    lines = _error_lines(
        _invoke(
            "validate",
            TOY,
            "data.source=lidc-pickle",
            f"data.raw={tmp_path / 'raw'}",
            *_isolated(tmp_path),
        )
    )
    assert any("data.allow_pickle" in line for line in lines)
    result = _invoke(
        "validate",
        TOY,
        "data.source=lidc-pickle",
        "data.allow_pickle=true",
        f"data.raw={tmp_path / 'raw'}",
        *_isolated(tmp_path),
    )
    assert result.exit_code == 0, result.output


def _break_missing(h5: h5py.File) -> None:
    del h5["label"]


def _break_dtype(h5: h5py.File) -> None:
    lab = h5["label"][()].astype(np.int32)
    del h5["label"]
    h5["label"] = lab


def _break_class_id(h5: h5py.File) -> None:
    lab = h5["label"][()]
    lab[1, 0, 0, 0] = 7
    h5["label"][...] = lab


def _break_weights(h5: h5py.File) -> None:
    w = h5["label_weight"][()]
    w[0] = [0.3, 0.3]
    h5["label_weight"][...] = w


def _break_shape(h5: h5py.File) -> None:
    lab = h5["label"][:, :, :8, :]
    del h5["label"]
    h5["label"] = lab


@pytest.mark.parametrize(
    ("breaker", "needle"),
    [
        (_break_missing, "'label' is missing"),
        (_break_dtype, "label has dtype int32"),
        (_break_class_id, "class id 7"),
        (_break_weights, "label_weight row 0 sums to"),
        (_break_shape, "label maps are (8, 16)"),
    ],
    ids=["missing", "dtype", "class-id", "weights", "shape"],
)
def test_validate_rejects_a_bad_dataset(
    tmp_path: Path, tiny_data_dir: Path, breaker, needle: str
) -> None:
    bad = tiny_data_dir / "val.h5"
    with h5py.File(bad, "a") as h5:
        breaker(h5)
    lines = _error_lines(_invoke("validate", TOY, "data.source=prepared", *_isolated(tmp_path)))
    assert len(lines) == 1, lines
    assert f"carseg: error: {bad}: " in lines[0] and needle in lines[0]


def test_validate_reports_several_bad_files(tmp_path: Path, tiny_data_dir: Path) -> None:
    with h5py.File(tiny_data_dir / "train.h5", "a") as h5:
        _break_class_id(h5)
    (tiny_data_dir / "test.h5").write_bytes(b"not hdf5")
    lines = _error_lines(_invoke("validate", TOY, "data.source=prepared", *_isolated(tmp_path)))
    assert len(lines) == 2
    assert "train.h5" in lines[0] and "test.h5" in lines[1]


def test_misspelled_override_names_the_close_match(tmp_path: Path) -> None:
    lines = _error_lines(_invoke("validate", TOY, "refiner.stepz=3", *_isolated(tmp_path)))
    assert lines == [
        "carseg: error: command line: refiner.stepz -> unknown key; did you mean refiner.steps?"
    ]


def test_three_bad_overrides_three_lines(tmp_path: Path) -> None:
    lines = _error_lines(
        _invoke(
            "validate",
            TOY,
            "refiner.lr=fast",
            "seed=x",
            "refiner.calibration_loss=mse",
            *_isolated(tmp_path),
        )
    )
    assert len(lines) == 3


def test_missing_recipe_file(tmp_path: Path) -> None:
    lines = _error_lines(_invoke("validate", tmp_path / "nope.yaml"))
    assert "nope.yaml" in lines[0] and "recipes/toy.yaml" in lines[0]


def test_malformed_recipe(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [toy\nseed: 1\n")
    (line,) = _error_lines(_invoke("show", bad))
    assert str(bad) in line and "line" in line


def test_debug_lets_the_exception_through(tmp_path: Path) -> None:
    result = _invoke(
        "validate", TOY, "refiner.stepz=3", *_isolated(tmp_path), env={"CARSEG_DEBUG": "1"}
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, CarsegError)
    assert "did you mean refiner.steps" in str(result.exception)


def test_debug_zero_means_off(tmp_path: Path) -> None:
    result = _invoke("validate", TOY, "refiner.stepz=3", env={"CARSEG_DEBUG": "0"})
    _error_lines(result)


# -------------------------------------------------------------------------------------- show


def test_show_prints_the_resolved_recipe() -> None:
    result = _invoke("show", TOY, "refiner.steps=7", "calibrator.width=null")
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.stdout)
    assert resolved["refiner"]["steps"] == 7
    assert resolved["calibrator"]["width"] is None
    assert resolved["name"] == "toy"
    assert resolved["sample"]["batch_size"] == 8  # a default the toy recipe does not state
    assert result.stderr == ""


def test_show_output_is_a_loadable_recipe(tmp_path: Path) -> None:
    from carcli.recipe.load import load_recipe

    result = _invoke("show", TOY, "refiner.steps=7")
    again = tmp_path / "resolved.yaml"
    again.write_text(result.stdout)
    assert load_recipe(again) == load_recipe(TOY, ["refiner.steps=7"])


# ----------------------------------------------------------------------------------- prepare


def test_prepare_tiny_then_refuse_to_overwrite(tmp_path: Path) -> None:
    args = (
        "prepare",
        TOY,
        "data.synthetic.num_train=8",
        "data.synthetic.num_val=4",
        "data.synthetic.num_test=4",
        "--quiet",
        *_isolated(tmp_path),
    )
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    data = tmp_path / "data"
    sizes = {"train": 8, "val": 4, "test": 4}
    for split, n in sizes.items():
        info = validate_dataset(data / f"{split}.h5")
        assert info.n == n and info.num_classes == 3 and info.image_shape == (3, 32, 32)
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["stage"] == "prepare"
    assert manifest["recipe"]["data"]["synthetic"]["num_train"] == 8
    assert not (data / ".lock").exists()
    assert not list(data.glob("*.tmp"))
    before = (data / "train.h5").read_bytes()

    (line,) = _error_lines(_invoke(*args))
    assert "--overwrite" in line and "already exist" in line
    assert (data / "train.h5").read_bytes() == before

    result = _invoke(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (data / "train.h5").read_bytes() != b""
    # prepared files now validate through the command line, too
    assert _invoke("validate", TOY, "data.source=prepared", *_isolated(tmp_path)).exit_code == 0


def test_prepare_prepared_without_files(tmp_path: Path) -> None:
    (line,) = _error_lines(_invoke("prepare", TOY, "data.source=prepared", *_isolated(tmp_path)))
    assert "train.h5" in line


# ----------------------------------------------------------------- the installed executable


def _carseg() -> Path:
    exe = Path(sys.executable).parent / "carseg"
    if not exe.exists():
        pytest.skip("the carseg console script is not installed in this environment")
    return exe


def test_installed_carseg(tmp_path: Path) -> None:
    """Exit codes, no traceback, fast --help: `import carcli.cli.app` does not import torch."""
    env = {k: v for k, v in os.environ.items() if k != "CARSEG_DEBUG"}
    env["OMP_NUM_THREADS"] = "1"
    exe = str(_carseg())

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [exe, *args],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, carcli.cli.app\n"
            "try:\n    carcli.cli.app.app(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'h5py')),"
            " file=sys.stderr)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    # `carseg --help` answers at once: it imports neither torch nor h5py (checked by what
    # is imported, not by a wall-clock limit, which a loaded machine can miss)
    assert probe.returncode == 0, probe.stderr
    assert probe.stderr.strip().splitlines()[-1] == "[]", probe.stderr

    result = run("--help")
    assert result.returncode == 0, result.stderr
    for name in (*STAGES, "validate", "show"):
        assert name in result.stdout

    # the toy recipe from a fresh working directory: nothing prepared yet, still valid
    result = run("validate", str(TOY))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()

    result = run("validate", str(TOY), "refiner.stepz=3")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [
        "carseg: error: command line: refiner.stepz -> unknown key; did you mean refiner.steps?"
    ]

    result = run("validate", str(TOY), "--bogus")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr

    result = run("validate", str(TOY), "refiner.stepz=3", CARSEG_DEBUG="1")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RecipeError" in result.stderr


# ------------------------------------------------------------- unexpected failures, one line


def _raise(exc: BaseException):
    def fake(*args: object, **kwargs: object) -> None:
        raise exc

    return fake


def test_unexpected_error_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import carcli.cli.validate_command

    monkeypatch.setattr(carcli.cli.validate_command, "run_validate", _raise(RuntimeError("boom")))
    (line,) = _error_lines(_invoke("validate", TOY))
    assert "internal error: RuntimeError: boom" in line and "CARSEG_DEBUG=1" in line
    result = _invoke("validate", TOY, env={"CARSEG_DEBUG": "1"})
    assert isinstance(result.exception, RuntimeError)


def test_os_error_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import carcli.cli.validate_command

    exc = PermissionError(13, "Permission denied", "/some/file.h5")
    monkeypatch.setattr(carcli.cli.validate_command, "run_validate", _raise(exc))
    (line,) = _error_lines(_invoke("validate", TOY))
    assert "Permission denied" in line and "/some/file.h5" in line
