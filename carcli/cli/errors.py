"""How a `carseg` command fails: one line on stderr and an exit status.

A CarsegError becomes one line (or a few, one per line of its message) and its exit status;
usage errors (UsageError, and click's own) exit 2; a traceback is shown only with
CARSEG_DEBUG=1.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from carcli.cli.help import name_recipe
from carcli.errors import CarsegError, Interrupted

CommandFn = TypeVar("CommandFn", bound=Callable[..., Any])


def debug() -> bool:
    return os.environ.get("CARSEG_DEBUG", "") not in ("", "0")


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"carseg: error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(fn: CommandFn) -> CommandFn:
    """Turn CarsegError (and other failures) into one line and an exit status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except CarsegError as exc:
            if debug():
                raise
            text = name_recipe(str(exc), *_recipe_args(kwargs))
            lines = text.splitlines() or ["failed"]
            for line in lines:
                typer.echo(f"carseg: error: {line}", err=True)
            raise typer.Exit(exc.exit_status) from None
        except Interrupted as exc:  # stopped by SIGINT / SIGTERM after keeping its work
            if exc.message:
                text = name_recipe(exc.message, *_recipe_args(kwargs))
                typer.echo(f"carseg: {text}", err=True)
            raise typer.Exit(exc.exit_status) from None
        except KeyboardInterrupt:
            typer.echo("carseg: interrupted; finished artefacts are kept", err=True)
            raise typer.Exit(130) from None
        except MemoryError:
            if debug():
                raise
            fail("out of memory; lower the batch or chunk sizes in the recipe")
        except OSError as exc:
            if debug():
                raise
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            fail(f"{exc.strerror or exc}{where}; check the path, permissions and free disk space")
        except Exception as exc:  # an unexpected failure: still one line, unless debugging
            if debug():
                raise
            fail(
                f"internal error: {type(exc).__name__}: {exc} "
                "(rerun with CARSEG_DEBUG=1 for the traceback and report it)"
            )

    return wrapper  # type: ignore[return-value]


def _recipe_args(kwargs: dict[str, Any]) -> tuple[str | None, list[str]]:
    """The recipe and overrides a command was given (predict: a recipe MODEL, its overrides
    among the INPUT arguments), for the commands its messages suggest."""
    if "recipe" in kwargs:
        return kwargs["recipe"], kwargs.get("overrides") or []
    model = kwargs.get("model")
    if model and str(model).endswith((".yaml", ".yml")):
        from carcli.cli.hints import split_overrides

        return model, split_overrides(kwargs.get("inputs") or [])[1]
    return None, []
