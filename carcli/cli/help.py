"""Help text that reads like a plain click program's: `RECIPE [KEY=VALUE]...`, no `<str>`.

Typer 0.2x prints argument types (`<str>`, `<list[str]>`) and braces required arguments in
the usage line (`{recipe}`). carseg's arguments are a recipe path and free-form overrides, so
the type adds nothing; the names alone (upper case, as click shows them) say it all.
"""

from __future__ import annotations

import shlex
from typing import Any

from typer.core import TyperArgument, TyperCommand


def recipe_args(recipe: str, overrides: list[str] | None) -> str:
    """The recipe and overrides as the user passed them, quoted for a shell."""
    return shlex.join([recipe, *(overrides or [])])


def name_recipe(text: str, recipe: str | None, overrides: list[str] | None) -> str:
    """Put the recipe (and the overrides that apply) the user passed into every `carseg
    STAGE RECIPE` that a message suggests, so the command can be copied and run as it is
    (carcli.cli.hints)."""
    from carcli.cli.hints import complete

    return complete(text, recipe, overrides)


def _names(param: TyperArgument) -> tuple[str, str]:
    """(name in the Arguments list, name in the usage line): `KEY=VALUE...`, `[KEY=VALUE]...`."""
    base = param.metavar or (param.name or "").upper()
    dots = "..." if param.nargs != 1 else ""
    return base + dots, (base if param.required else f"[{base}]") + dots


class PlainCommand(TyperCommand):
    """A Typer command whose arguments show their name only (no type, no braces)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, TyperArgument):
                listed, usage = _names(param)
                # instance attributes shadow Typer's display methods for this parameter only
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
                param._rich_display_name = lambda n=listed: n  # type: ignore[method-assign]
                param._usage_display_name = lambda n=usage: n  # type: ignore[method-assign]
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        pieces += [_names(p)[1] for p in self.get_params(ctx) if isinstance(p, TyperArgument)]
        return pieces
