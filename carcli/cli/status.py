"""The body of `carseg status`: the table of :func:`carcli.stages.status.run_status`."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from carcli.cli.help import name_recipe
from carcli.recipe.load import load_recipe
from carcli.stages.status import next_command, run_status, running_first
from carcli.ui import PIPE_WIDTH

STYLE = {
    "n/a": "dim",
    "done": "green",
    "stale": "yellow",
    "missing": "red",
    "partial": "yellow",
    "running": "cyan",
}


def print_status(path: str, overrides: list[str]) -> int:
    """Print one row per stage to stdout; the exit status: 0 when every stage is done."""
    rows = run_status(load_recipe(path, overrides))
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    table = Table(title=f"carseg status: {path}")
    for col in ("stage", "state", "artefact", "why", "run next"):
        table.add_column(col)
    for r in rows:
        command = name_recipe(r.command, path, overrides)
        state = f"[{STYLE.get(r.state, '')}]{r.state}[/]"
        table.add_row(r.stage, state, escape(r.artefact), escape(r.why), escape(command))
    console.print(table)
    following = next_command(rows)
    if all(r.ok for r in rows):
        console.print("everything is up to date")
        return 0
    busy = running_first(rows)
    if busy is not None:
        console.print(
            f"waiting: {busy.stage} is running ({escape(busy.why)}); run `carseg status` again "
            "when it ends"
        )
    elif following:
        console.print(f"next: {escape(name_recipe(following, path, overrides))}")
    return 1
