"""The README and docs/ cannot drift from the code: links resolve, documented commands and
recipe keys exist, the Quick start is what `make demo` runs, and every generated table equals
its result file (scripts/docs_tables.py). Nothing is trained here; the API example of
docs/using-a-model.md runs in tests/test_predict.py."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Links are also checked in the other READMEs of the repository.
OTHER_READMES = [
    REPO / "bench" / "README.md",
    REPO / "data" / "README.md",
    *sorted((REPO / "experiments").rglob("README.md")),
]

# Commands the docs describe ahead of the branch that adds them (issue 26 adds `status`); a
# name here passes whether or not the CLI has it yet. Remove it once the CLI has it.
DOCUMENTED_AHEAD = {"status"}

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SECTIONS = (
    "data",
    "calibrator",
    "refiner",
    "discriminator",
    "sample",
    "evaluate",
    "distributed",
    "speed",
)
KEY = re.compile(r"^((?:" + "|".join(SECTIONS) + r")\.[a-z0-9_]+(?:\.[a-z0-9_]+)*)(?:\s*[=:].*)?$")
FILE_SUFFIX = re.compile(r"\.(py|h5|json|jsonl|yaml|yml|png|csv|md|sh|npy|npz|txt|safetensors)$")


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _code(text: str) -> list[str]:
    """Fenced blocks and inline code spans (outside the fenced blocks)."""
    blocks = FENCE.findall(text)
    return blocks + SPAN.findall(FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    out: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", _text(page)).splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def test_relative_links_resolve() -> None:
    broken = []
    for page in [*PAGES, *OTHER_READMES]:
        for target in LINK.findall(FENCE.sub("", _text(page))):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_nothing_points_outside_the_repository() -> None:
    """No file of the repository names documents that live outside it (a developers' folder
    beside the checkout): the docs of a clone are docs/."""
    suffixes = {".py", ".md", ".sh", ".yaml", ".toml", ".txt", ".json", ""}
    files = [REPO / "README.md", REPO / "Makefile", REPO / "pyproject.toml"]
    for folder in ("carcli", "tests", "scripts", "bench", "experiments", "docs", "recipes", "data"):
        files += [p for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in suffixes]
    outside = ["../" + "shared", "CONTRACTS" + ".md", "METHOD" + ".md"]
    found = []
    for path in files:
        if ".cache" in path.parts or "__pycache__" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{path.relative_to(REPO)}: {name}" for name in outside if name in text]
    assert not found, "\n".join(found)


def _cli_commands() -> set[str]:
    import typer

    from carcli.cli.app import app

    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_documented_commands_exist() -> None:
    commands = _cli_commands()
    said = re.compile(r"(?:\bcarseg|-m carcli)\s+([a-z][a-z-]*)")
    unknown = []
    for page in PAGES:
        for code in _code(_text(page)):
            for name in said.findall(code):
                if name not in commands:
                    unknown.append(f"{page.relative_to(REPO)}: carseg {name}")
    assert not unknown, "\n".join(unknown)
    assert len(commands) >= 12  # the scan has something to compare with


def _recipe_keys() -> set[str]:
    from carcli.recipe.deprecated import _FLAT_DATA
    from carcli.recipe.schema import Recipe

    keys: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            keys.add(key)
            default = f.default_factory() if callable(f.default_factory) else None  # type: ignore[misc]
            if dataclasses.is_dataclass(default):
                walk(type(default), key + ".")

    walk(Recipe, "")
    keys |= {f"data.{old}" for old in _FLAT_DATA}  # old names, still read (with a warning)
    return keys


def test_documented_recipe_keys_exist() -> None:
    keys = _recipe_keys()
    unknown, seen = [], 0
    for page in PAGES:
        text = _text(page)
        tokens = SPAN.findall(FENCE.sub("", text))
        for block in FENCE.findall(text):  # overrides on command lines: key=value
            tokens += [t for t in block.split() if "=" in t]
        for token in tokens:
            m = KEY.match(token.strip())
            if not m or FILE_SUFFIX.search(m.group(1)):
                continue
            seen += 1
            if m.group(1) not in keys:
                unknown.append(f"{page.relative_to(REPO)}: {m.group(1)}")
    assert not unknown, "\n".join(unknown)
    assert seen > 50  # the scan finds the keys the docs mention


def _make_commands(target: str, makefile: str) -> list[str]:
    """The commands of a Makefile target, with its variables as `make demo` sets them."""
    body = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert body, target
    out = []
    for line in body.group(1).splitlines():
        line = line.strip()
        sub = re.search(r"\$\(MAKE\) .*?([a-z-]+); fi$", line)
        if sub:
            out += _make_commands(sub.group(1), makefile)
            continue
        for var, value in (("$(CARSEG)", "carseg"), ("$(PY)", "python")):
            line = line.replace(var, value)
        out.append(line.replace("$(RECIPE)", "recipes/toy.yaml"))
    return out


def test_quick_start_is_what_make_demo_runs() -> None:
    readme = _text(REPO / "README.md")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in FENCE.findall(section):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line and line != "make demo" and not line.startswith("source "):
                lines.append(line)
    makefile = _text(REPO / "Makefile")
    assert lines == _make_commands("demo", makefile)
    assert "make demo" in section


def _docs_tables(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "docs_tables.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_generated_tables_equal_their_result_files() -> None:
    proc = _docs_tables(REPO, "--check")
    assert proc.returncode == 0, proc.stderr
    names = list((REPO / "docs" / "results").glob("*.json"))
    assert len(names) >= 20
    for path in names:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert {"command", "commit", "machine", "columns", "rows"} <= set(data), path


@pytest.mark.parametrize("change", ["number", "page"])
def test_docs_tables_check_fails_on_a_difference(tmp_path: Path, change: str) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "docs_tables.py", tmp_path / "scripts")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    path = tmp_path / "docs" / "results" / "toy_neither.json"
    if change == "number":
        data = json.loads(path.read_text(encoding="utf-8"))
        data["rows"][0][1] = data["rows"][0][1] + "9"
        path.write_text(json.dumps(data), encoding="utf-8")
    else:
        page = tmp_path / "docs" / "results.md"
        text = page.read_text(encoding="utf-8")
        page.write_text(text.replace("| 0.942 |", "| 0.943 |", 1), encoding="utf-8")
    proc = _docs_tables(tmp_path, "--check")
    assert proc.returncode == 1
    assert "toy_neither" in proc.stderr
    assert _docs_tables(tmp_path).returncode == 0  # rendering repairs the page
    assert _docs_tables(tmp_path, "--check").returncode == 0
