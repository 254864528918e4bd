"""Load, type-check and override recipes; every problem is collected and reported at once."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from carcli.errors import CarsegError, UsageError
from carcli.recipe.checks import check_ranges
from carcli.recipe.deprecated import migrate_file_data, migrate_overrides, source_of
from carcli.recipe.schema import Recipe


class RecipeError(CarsegError):
    """A recipe (or override) that does not fit the schema; `problems` lists every issue.
    A problem with a key that a `key=value` override set is blamed on the command line, not
    on the recipe file (`overridden`: the keys the overrides set)."""

    def __init__(
        self, source: str, problems: list[str], overridden: frozenset[str] = frozenset()
    ) -> None:
        self.problems = problems
        lines = [f"{_blamed(p, source, overridden)}: {p}" for p in problems]
        super().__init__(
            "\n".join(lines) if len(lines) > 1 else lines[0],
            hint=None,
        )


def _blamed(problem: str, source: str, overridden: frozenset[str]) -> str:
    """ "command line" when `problem` ("KEY -> ...") is about a key an override set."""
    key = problem.split(" -> ", 1)[0].split("[", 1)[0]
    if " " not in key and any(k == key or k.startswith(key + ".") for k in overridden):
        return "command line"
    return source


_MISSING = object()


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str) -> Any:
    """Parse with the safe loader above (no Python objects are ever constructed)."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except (ValueError, OverflowError) as exc:  # e.g. an integer of over 4300 digits
        problem = str(exc).split(";")[0]
        raise yaml.constructor.ConstructorError(problem=problem) from None
    finally:
        loader.dispose()


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp)
        return f"list of {_type_name(inner)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """Return `value` converted to `tp`, or _MISSING after recording a problem."""
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
        choices = ", ".join(str(a) for a in get_args(tp))
        problems.append(f"{key} -> expected one of {choices}, got {value!r}")
        return _MISSING
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            sub: list[str] = []
            out = _coerce(value, arg, key, sub)
            if not sub:
                return out
        problems.append(f"{key} -> expected {_type_name(tp)}, got {value!r}")
        return _MISSING
    if origin is list:
        (inner,) = get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{key} -> expected {_type_name(tp)}, got {value!r}")
            return _MISSING
        out = [_coerce(v, inner, f"{key}[{i}]", problems) for i, v in enumerate(value)]
        return _MISSING if any(o is _MISSING for o in out) else out
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{key} -> expected a mapping (section), got {value!r}")
            return _MISSING
        return _build(tp, value, f"{key}.", problems)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                if math.isfinite(float(value)):
                    return float(value)
            except OverflowError:
                pass
            problems.append(f"{key} -> expected a finite number, got {value!r}")
            return _MISSING
    elif tp is str:
        if isinstance(value, str):
            return value
    problems.append(f"{key} -> expected {_type_name(tp)}, got {value!r}")
    return _MISSING


def _unknown(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=3, cutoff=0.6)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    if close:
        return f"{key} -> unknown key; did you mean {', '.join(prefix + c for c in close)}?"
    return f"{key} -> unknown key; valid keys here: {', '.join(valid)}"


def _build(cls: type, raw: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in hints:
            problems.append(_unknown(f"{prefix}{key}", names))
            continue
        out = _coerce(value, hints[key], f"{prefix}{key}", problems)
        if out is not _MISSING:
            kwargs[key] = out
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """Split `key=value`; the value parses as a YAML scalar (or flow list)."""
    if "=" not in text:
        raise UsageError(
            f"command line: {text!r} -> expected key=value (a recipe override), "
            "e.g. refiner.steps=200"
        )
    key, _, raw = text.partition("=")
    key = key.strip()
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def _apply_override(raw: dict[str, Any], key: str, value: Any, problems: list[str]) -> None:
    parts = key.split(".")
    cls: Any = Recipe
    node = raw
    for i, part in enumerate(parts):
        hints = _hints(cls)
        if part not in hints:
            problems.append(_unknown(".".join(parts[: i + 1]), list(hints)))
            return
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(hints[part]):
                problems.append(f"{key} -> is a section; override one of its keys")
                return
            node[part] = value
            return
        if not dataclasses.is_dataclass(hints[part]):
            problems.append(f"{key} -> {'.'.join(parts[: i + 1])} is not a section")
            return
        cls = hints[part]
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        elif not isinstance(child, dict):
            return  # the section itself is wrong; _build reports it
        node = child


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe, apply `key=value` overrides, and return the typed Recipe.

    Raises RecipeError listing every problem (file, key, expected type, value).
    """
    path = Path(path)
    if not path.is_file():
        raise CarsegError(
            f"recipe {path} not found", hint="pass a YAML file, e.g. recipes/toy.yaml"
        )
    try:
        raw = _yaml_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise CarsegError(f"{path}: malformed YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise CarsegError(f"{path}: not a text file") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(str(path), [f"expected a mapping of keys at top level, got {raw!r}"])
    problems: list[str] = []
    pairs = [parse_override(text) for text in overrides]
    source = source_of(raw, pairs)
    warned: set[str] = set()
    migrate_file_data(raw, source, str(path), problems, warned)
    for key, value in migrate_overrides(pairs, source, problems, warned):
        _apply_override(raw, key, value, problems)
    recipe = _build(Recipe, raw, "", problems)
    check_ranges(recipe, problems)  # ill-typed fields kept their (valid) defaults
    if problems:
        raise RecipeError(str(path), problems, frozenset(key.strip() for key, _ in pairs))
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The fully resolved recipe as plain data (what `carseg show` prints)."""
    return dataclasses.asdict(recipe)


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)


def recipe_from_yaml_text(text: str, source: str = "recipe") -> Recipe:
    """Rebuild a Recipe from resolved YAML (as stored in manifests and banks)."""
    try:
        raw = _yaml_load(text) or {}
    except yaml.YAMLError as exc:
        raise CarsegError(f"{source}: malformed YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise RecipeError(source, [f"expected a mapping of keys at top level, got {raw!r}"])
    problems: list[str] = []
    migrate_file_data(raw, source_of(raw, []), source, problems, set())
    recipe = _build(Recipe, raw, "", problems)
    if problems:
        raise RecipeError(source, problems)
    return recipe
