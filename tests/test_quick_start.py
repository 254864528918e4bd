"""The README's Quick start and the API example of docs/using-a-model.md, verbatim, in a fresh
clone (slow: the whole toy cascade, about as long as `make demo`; `make test-all` runs it).

The clone gets this checkout's `.venv` as a link, so `source .venv/bin/activate` works
without a second install; the commands and paths are the clone's own."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```", re.S | re.M)


def _blocks(path: Path, heading: str, lang: str) -> list[str]:
    section = path.read_text(encoding="utf-8").split(heading, 1)[1].split("\n## ", 1)[0]
    return [body for kind, body in FENCE.findall(section) if kind == lang]


@pytest.mark.slow
def test_quick_start_and_api_example_run_verbatim(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    (clone / ".venv").symlink_to(REPO / ".venv")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    stages = [b for b in _blocks(REPO / "README.md", "## Quick start", "sh") if "carseg" in b]
    assert len(stages) == 1, "the Quick start has one block of stage commands"
    subprocess.run(["bash", "-eo", "pipefail", "-c", stages[0]], cwd=clone, env=env, check=True)
    out = clone / "runs" / "toy" / "predictions"
    assert (out / "predictions.h5").is_file()
    assert len([p for p in out.iterdir() if p.is_dir()]) == 4

    (api,) = _blocks(REPO / "docs" / "using-a-model.md", "## The Python API", "python")
    script = api + "\nassert pred.samples.shape[:2] == (4, 16), pred.samples.shape\n"
    subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-c", script],
        cwd=clone,
        env=env,
        check=True,
    )
