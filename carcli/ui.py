"""Console output: rich progress bars on a terminal, plain lines in CI or with --quiet."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console

# Width of a console that is not a terminal: wide enough that rich never wraps or crops a
# table row there (tables are never expanded to it; they take the width their cells need).
PIPE_WIDTH = 100_000


def make_console() -> Console:
    """A stderr console that never inserts a line break into a message.

    ``soft_wrap`` leaves long lines to the terminal (which folds them only on screen, so a
    copied path stays whole); in a pipe, a file or CI the console is ``PIPE_WIDTH`` wide, so
    tables keep every row on one line and every number whole.
    """
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


class Reporter:
    """One place for a stage's console output (stderr, so stdout stays clean for data)."""

    def __init__(self, quiet: bool = False) -> None:
        self.console = make_console()
        self.quiet = quiet
        self.fancy = not quiet and self.console.is_terminal

    def line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False)

    def progress(self, total: int, description: str, start: int = 0) -> Progress:
        return Progress(self, total, description, start)


class Progress:
    """A progress bar with a text of live figures; a plain line every ~10% when not a TTY."""

    def __init__(self, rep: Reporter, total: int, description: str, start: int = 0) -> None:
        self.rep, self.total, self.description = rep, total, description
        self.done = start
        self._bar: Any = None
        self._task: Any = None
        self._last_print = -1
        self._t0 = time.time()

    def __enter__(self) -> Progress:
        if self.rep.fancy:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.rep.console,
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                self.description, total=self.total, completed=self.done, info=""
            )
        return self

    def advance(self, n: int = 1, info: str = "") -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n, info=info)
        elif not self.rep.quiet:
            tenth = int(10 * self.done / max(1, self.total))
            if tenth != self._last_print or self.done == self.total:
                self._last_print = tenth
                rate = time.time() - self._t0
                print(
                    f"{self.description}: {self.done}/{self.total} {info} [{rate:.0f} s]",
                    file=sys.stderr,
                    flush=True,
                )

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
