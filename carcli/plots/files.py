"""Writing a figure's files: the PNG (atomically) and the CSV of its numbers."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from carcli.artefacts.run import atomic_path, cannot_write


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """CSV text (None as an empty cell, floats at full precision)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def save_figure(fig: Any, path: Path) -> None:
    """Save a Figure as PNG atomically (temporary name, then rename)."""
    from carcli.plots.figures import DPI

    with atomic_path(path) as tmp:
        try:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.03)
        except OSError as exc:
            raise cannot_write(path, str(exc.strerror or exc)) from None
