"""Render the result tables of the docs from their result files, or check that they agree.

Every table of docs/results.md and docs/benchmarks.md (and the `make` targets' times in
docs/development.md) sits between two marker lines,

    <!-- generated:NAME -->
    ...
    <!-- end:NAME -->

and is rendered from ``docs/results/NAME.json``: an object with ``command``, ``commit`` and
``machine`` (what made the figures; "not recorded" where the run did not say), ``columns``
(the header cells), ``rows`` (lists of cells, as they are shown, or a reference to a cell of
another result file: ``{"same_as": NAME, "row": i, "column": j}``) and optionally ``note``
(one line of text under the table). A number lives in its result file only; the page shows it.

    python scripts/docs_tables.py          # rewrite every generated table in docs/*.md
    python scripts/docs_tables.py --check  # exit 1 naming each page and table that differs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
RESULTS = DOCS / "results"
BLOCK = re.compile(
    r"(<!-- generated:(?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- end:(?P=name) -->)", re.S
)
REQUIRED = ("command", "commit", "machine", "columns", "rows")


def write_result(
    path: Path, command: str, machine: str, columns: list, rows: list, **extra
) -> None:
    """Write a result file in this format, ``commit`` the checkout's short hash (``extra``:
    e.g. ``note``)."""
    import subprocess

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    doc = {"command": command, "commit": commit or "not recorded", "machine": machine}
    doc.update(columns=columns, rows=rows, **extra)
    Path(path).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _cell(value: object) -> str:
    """A cell as shown: text as is, a number as JSON writes it, or ``{"same_as": "NAME",
    "row": i, "column": j}`` for a figure another result file holds (the same run shown in
    two tables), so that it is typed once; a list of such parts is shown joined."""
    if isinstance(value, list):  # parts joined, e.g. [ref, " (", ref, ")"]
        return "".join(_cell(part) for part in value)
    if isinstance(value, dict) and "same_as" in value:
        other = json.loads((RESULTS / f"{value['same_as']}.json").read_text(encoding="utf-8"))
        return _cell(other["rows"][value["row"]][value["column"]])
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("\n", " ")


def render(name: str, page: Path) -> str:
    """The Markdown of the table NAME, as it stands between its markers on `page`."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{page.relative_to(REPO)}: no result file {path.relative_to(REPO)}")
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise SystemExit(f"{path.relative_to(REPO)}: missing {', '.join(missing)}")
    columns = data["columns"]
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for i, row in enumerate(data["rows"]):
        if len(row) != len(columns):
            raise SystemExit(
                f"{path.relative_to(REPO)}: row {i} has {len(row)} cells, not {len(columns)}"
            )
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    link = Path("results") / path.name if page.parent == DOCS else path.relative_to(REPO)
    source = (
        f"*Source: [{path.name}]({link.as_posix()}); command: {data['command']}; "
        f"commit: {data['commit']}; machine: {data['machine']}.*"
    )
    parts = ["\n".join(lines), ""]
    if data.get("note"):
        parts += [data["note"], ""]
    parts += [source, ""]
    return "\n" + "\n".join(parts)


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def generated(text: str, page: Path) -> str:
    """`text` with every generated block rendered afresh."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name"), page) + m.group(4), text)


def differing(page: Path) -> list[str]:
    """Names of the generated tables of `page` that differ from their result files."""
    text = page.read_text(encoding="utf-8")
    return [
        m.group("name")
        for m in BLOCK.finditer(text)
        if m.group("body") != render(m.group("name"), page)
    ]


def unused() -> list[str]:
    """Result files that no page shows."""
    shown = {
        m.group("name") for p in pages() for m in BLOCK.finditer(p.read_text(encoding="utf-8"))
    }
    return sorted(p.name for p in RESULTS.glob("*.json") if p.stem not in shown)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    args = ap.parse_args(argv)
    bad = []
    for page in pages():
        if args.check:
            bad += [
                f"{page.relative_to(REPO)}: table {n} differs from docs/results/{n}.json"
                for n in differing(page)
            ]
        else:
            text = page.read_text(encoding="utf-8")
            new = generated(text, page)
            if new != text:
                page.write_text(new, encoding="utf-8")
                print(f"written: {page.relative_to(REPO)}")
    bad += [f"docs/results/{name}: shown on no page" for name in unused()]
    for line in bad:
        print(line, file=sys.stderr)
    if bad and args.check:
        print("run: python scripts/docs_tables.py", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
