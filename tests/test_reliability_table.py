"""docs/reliability.md's table is the list of faults the suite tries (tests/reliability.py):
the two cannot drift, and every row names a test that exists."""

from __future__ import annotations

import ast

from reliability import REPO, all_rows, markdown_table

START, END = "<!-- reliability-table:start -->", "<!-- reliability-table:end -->"


def test_readme_table_is_the_suite_table() -> None:
    readme = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert START in readme and END in readme, "docs/reliability.md lacks the table markers"
    table = readme.split(START, 1)[1].split(END, 1)[0].strip() + "\n"
    assert table == markdown_table(), (
        "docs/reliability.md's table differs from tests/reliability.py; paste this:\n"
        + markdown_table()
    )


def test_every_row_names_an_existing_test() -> None:
    for row in all_rows():
        file, func = row.test.split("::")
        tree = ast.parse((REPO / "tests" / file).read_text(encoding="utf-8"))
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert func in names, row
