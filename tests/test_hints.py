"""Every hint works, found by running them: each situation of the reliability table
(tests/test_reliability_inputs.py's bad inputs, plus the situations of issue 26 below) is
built, its command run, and every command its error line suggests (in backticks) is run in
the same situation: it must succeed, not answer with the same error. A suggestion holds no
placeholder (RECIPE, N): it is the command as the user can paste it.

Faults injected into the process (a full disk) are undone before the suggestion runs: the
hint says what to fix by hand (free disk space) and then the command. Set CARSEG_HINT_TABLE
to a file path to get the hints and what they answered as a Markdown table.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from reliability import write_recipe
from test_reliability_inputs import CASES as BAD_INPUT_CASES
from test_reliability_inputs import _truncate
from typer.testing import CliRunner

from carcli.cli.app import app

TABLE: list[tuple[str, str, str, str, str]] = []  # case, command, error, suggestion, answer


@dataclass
class Situation:
    args: list[str]  # RECIPE: the recipe; {root}: the case folder
    setup: Callable[[Path, pytest.MonkeyPatch], None] | None = None
    by_hand: bool = False  # the hint names no command, only what to fix by hand


def _import_three_samples(root: Path, mp: pytest.MonkeyPatch) -> None:
    """The test bank replaced by another method's samples: M = 3 per image, imported; the
    importer has no calibrator or refiner (no `carseg sample` can remake the bank)."""
    import h5py

    with h5py.File(root / "data" / "test.h5") as h5:
        n, _, h, w = h5["label"].shape
    src = root / "other_method.npy"
    np.save(src, np.random.default_rng(0).integers(0, 3, (n, 3, h, w), dtype=np.uint8))
    args = ["import-samples", str(root / "r.yaml"), str(src), "--overwrite", "-q"]
    assert CliRunner().invoke(app, args).exit_code == 0
    shutil.rmtree(root / "run" / "calibrator")
    shutil.rmtree(root / "run" / "refiner")


def _no_calibrator_in(run: str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def fn(root: Path, mp: pytest.MonkeyPatch) -> None:
        (root / "in").mkdir()
        np.save(root / "in" / "x.npy", np.zeros((3, 16, 16), np.float32))

    return fn


# The situations of issue 26 (section 3) beyond the bad-input table.
EXTRA: dict[str, Situation] = {
    "prepared-truncated": Situation(
        ["train-calibrator", "RECIPE", "data.source=prepared", "--overwrite"],
        lambda root, mp: _truncate(root / "data" / "train.h5"),
        by_hand=True,
    ),
    "prepared-missing": Situation(
        [
            "train-calibrator",
            "RECIPE",
            "data.source=prepared",
            "data.dir={root}/none",
            "--overwrite",
        ],
        by_hand=True,
    ),
    "override-of-another-stage": Situation(
        ["train-calibrator", "RECIPE", "calibrator.steps=5", "--overwrite"],
        lambda root, mp: (root / "data" / "train.h5").unlink(),
    ),
    "imported-bank-too-few": Situation(
        ["evaluate", "RECIPE", "--overwrite"], _import_three_samples
    ),
    "imported-bank-truncated": Situation(
        ["evaluate", "RECIPE", "--overwrite"],
        lambda root, mp: (
            _import_three_samples(root, mp),
            _truncate(root / "run" / "samples" / "test.h5"),
        ),
    ),
    "drawn-bank-too-few": Situation(
        ["evaluate", "RECIPE", "evaluate.ged_counts=[2,50]", "--overwrite"]
    ),
    "predict-recipe-no-calibrator": Situation(
        ["predict", "RECIPE", "{root}/in", "run_dir={root}/other", "--out", "{root}/pred"],
        _no_calibrator_in("other"),
    ),
}

SITUATIONS: dict[str, Situation] = {
    **{k: Situation(c.args, c.setup) for k, c in BAD_INPUT_CASES.items()},
    **EXTRA,
}
# bad inputs whose hint is what to fix by hand (no command would fix them)
BY_HAND = {
    "malformed-yaml",
    "wrong-type",
    "bad-choice",
    "unknown-key",
    "resume-other-arch",
    "pickle-no-opt-in",
    "unwritable-run-dir",
    "disk-full-checkpoint",
    "disk-full-bank",
    "disk-full-metrics",
}

_BACKTICKED = re.compile(r"`(carseg [^`]+)`")
_PLACEHOLDER = re.compile(r"\bRECIPE\b|=N\b|\bSOURCE\b")


def _args(args: list[str], root: Path) -> list[str]:
    out = []
    for a in args:
        a = str(root / "r.yaml") if a == "RECIPE" else str(root / "bad.yaml") if a == "BAD" else a
        out.append(a.replace("{root}", str(root)))
    return out


def _error_line(result) -> str:  # noqa: ANN001
    lines = [x for x in result.stderr.splitlines() if x.startswith("carseg: error: ")]
    return lines[0] if lines else ""


@pytest.mark.parametrize("case_id", sorted(SITUATIONS))
def test_every_suggested_command_works(
    case_id: str, finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = SITUATIONS[case_id]
    root = tmp_path / "case"
    shutil.copytree(finished, root, symlinks=False)
    write_recipe(root / "r.yaml", root / "run", root / "data")
    if case_id == "disk-full-metrics":
        CliRunner().invoke(app, ["evaluate", str(root / "r.yaml"), "-q"])  # metrics to replace
    if case.setup:
        case.setup(root, monkeypatch)
    args = _args(case.args, root)
    shown = shlex.join(["carseg", *args]).replace(str(root), "…")
    result = CliRunner().invoke(app, [*args, "-q"])
    monkeypatch.undo()  # (an injected full disk: the user frees space, as the hint says)
    error = _error_line(result)
    assert result.exit_code == 1 and error, (case_id, result.output)
    suggestions = _BACKTICKED.findall(error)
    for cmd in suggestions:
        assert not _PLACEHOLDER.search(cmd), f"{case_id}: a placeholder in `{cmd}`"
    if case_id in BY_HAND or case.by_hand:
        assert not suggestions, f"{case_id}: a command where the fix is by hand: {error}"
        TABLE.append((case_id, shown, _short(error, root), "(what to fix by hand)", "—"))
        return
    assert suggestions, f"{case_id}: no command suggested: {error}"
    for cmd in suggestions:
        words = shlex.split(cmd)
        again = CliRunner().invoke(app, words[1:])
        answer = _error_line(again)
        TABLE.append(
            (
                case_id,
                shown,
                _short(error, root),
                cmd.replace(str(root), "…"),
                "exit 0" if again.exit_code == 0 else _short(answer, root),
            )
        )
        assert answer != error, f"{case_id}: `{cmd}` answers with the same error"
        assert again.exit_code == 0, f"{case_id}: `{cmd}` failed: {again.output}"


def _short(text: str, root: Path) -> str:
    return text.replace(str(root), "…").replace("carseg: error: ", "").replace("|", "\\|")


def teardown_module() -> None:
    path = os.environ.get("CARSEG_HINT_TABLE")
    if not path or not TABLE:
        return
    lines = [
        "| situation | command | error line | suggested command | it answered |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(TABLE):
        lines.append("| " + " | ".join(f"`{c}`" if i == 1 else c for i, c in enumerate(row)) + " |")
    Path(path).write_text("\n".join(lines) + "\n")
