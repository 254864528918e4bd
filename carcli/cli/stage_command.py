"""The arguments and options the `carseg` commands share, and ``stage_command``: one
pipeline stage's command (a recipe, its overrides, options and flags) built from a table."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from carcli.cli.errors import handle_errors
from carcli.cli.help import PlainCommand

RecipeArg = Annotated[
    str, typer.Argument(metavar="RECIPE", help="YAML recipe, e.g. recipes/toy.yaml")
]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="KEY=VALUE",
        help="recipe overrides, e.g. refiner.steps=200",
        show_default=False,
    ),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="replace finished outputs")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars; plain lines")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint")]
AllowStaleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-stale",
        help="run even if the weights or bank read were made from inputs that have changed "
        "since (recorded in the manifest); see carseg status",
    ),
]

FLAGS: dict[str, Any] = {
    "resume": ResumeOpt,
    "overwrite": OverwriteOpt,
    "allow_stale": AllowStaleOpt,
    "quiet": QuietOpt,
}
"""The flags a pipeline stage may take, as its command lists them (in its own order)."""


def load(path: str, overrides: list[str] | None) -> Any:
    """The recipe at ``path`` with its command-line overrides applied."""
    from carcli.recipe.load import load_recipe

    return load_recipe(path, overrides or [])


def stage_command(
    app: typer.Typer,
    name: str,
    run: Callable[[], Callable[..., Any]],
    doc: str,
    flags: tuple[str, ...],
    options: Sequence[tuple[str, Any]] = (),
) -> None:
    """Register ``carseg NAME RECIPE [KEY=VALUE ...] [options] [flags]`` on ``app``: the
    recipe loaded with its overrides and handed, with the options and flags as keywords, to
    the stage's run function, which ``run()`` imports when the command runs. The command's
    signature (what typer reads) is built from ``options`` ((name, annotation) pairs, default
    None) and then ``flags``, in that order."""

    def command(recipe: str, overrides: list[str] | None = None, **kwargs: Any) -> None:
        run()(load(recipe, overrides), **kwargs)

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("recipe", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=RecipeArg),
        inspect.Parameter(
            "overrides", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
            annotation=OverridesArg,
        ),
        *(inspect.Parameter(o, kw, default=None, annotation=a) for o, a in options),
        *(inspect.Parameter(f, kw, default=False, annotation=FLAGS[f]) for f in flags),
    ]  # fmt: skip
    command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__doc__ = doc
    command.__name__ = command.__qualname__ = name.replace("-", "_")
    app.command(name, cls=PlainCommand)(handle_errors(command))
