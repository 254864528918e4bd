"""`carseg export RECIPE`: parse ``--preprocess`` and write the bundle with
`carcli.bundle.export.run_export` (this module was carcli/bundle/cli.py)."""

from __future__ import annotations

from typing import Any

from carcli.errors import CarsegError


def export_command(
    recipe: Any,
    out: str | None,
    preprocess: str | None,
    overwrite: bool,
    quiet: bool,
    allow_stale: bool = False,
) -> None:
    import json

    from carcli.bundle.export import run_export

    spec = None
    if preprocess is not None:
        try:
            spec = json.loads(preprocess)
        except ValueError as exc:
            raise CarsegError(f"--preprocess: not JSON ({exc})") from None
    run_export(
        recipe, out=out, overwrite=overwrite, quiet=quiet, preprocess=spec, allow_stale=allow_stale
    )
