"""Recipe keys read for one more version under their old names (a warning names the new key).

Issue 15 grouped the source-specific `data.*` keys: `data.size` is now `data.synthetic.size`,
`data.pi` is `data.regression.pi`, and so on. A recipe file's old keys are moved into their
group before the file is read; an old override key is renamed before it is applied.
"""

from __future__ import annotations

import sys
from typing import Any

# Flat `data.*` keys of one source, read for this version only (issue 15): the group each
# moves to; the split sizes move to the group of the recipe's data.source.
_FLAT_DATA = {
    "size": "synthetic",
    "channels": "synthetic",
    "num_classes": "synthetic",
    "pi": "regression",
    "sigma": "regression",
    "num_train": None,
    "num_val": None,
    "num_test": None,
}


def _data_group(key: str, source: Any) -> str:
    group = _FLAT_DATA[key]
    return group or ("regression" if source == "regression" else "synthetic")


def _deprecated(old: str, new: str, where: str, warned: set[str]) -> None:
    """One stderr line per deprecated key and load, naming the key that replaces it."""
    if old not in warned:
        warned.add(old)
        print(
            f"{where}: {old} is deprecated: use {new} (read for this version, removed in the next)",
            file=sys.stderr,
        )


def migrate_file_data(
    raw: dict[str, Any], source: Any, where: str, problems: list[str], warned: set[str]
) -> None:
    """Move a recipe file's flat source keys (`data.size`) into their groups in place."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for key in [k for k in data if k in _FLAT_DATA]:
        value = data.pop(key)
        group = _data_group(key, source)
        old, new = f"data.{key}", f"data.{group}.{key}"
        _deprecated(old, new, where, warned)
        sub = data.setdefault(group, {})
        if not isinstance(sub, dict):
            continue  # the group itself is wrong; _build reports it
        if key in sub and sub[key] != value:
            problems.append(f"{old} -> set to {value!r} and {new} to {sub[key]!r}; keep only {new}")
            continue
        sub[key] = value


def migrate_overrides(
    pairs: list[tuple[str, Any]], source: Any, problems: list[str], warned: set[str]
) -> list[tuple[str, Any]]:
    """Rename deprecated override keys (`data.size=64` -> `data.synthetic.size=64`)."""
    out: list[tuple[str, Any]] = []
    renamed: dict[str, tuple[str, Any]] = {}
    for key, value in pairs:
        parts = key.split(".")
        if len(parts) == 2 and parts[0] == "data" and parts[1] in _FLAT_DATA:
            new = f"data.{_data_group(parts[1], source)}.{parts[1]}"
            _deprecated(key, new, "override", warned)
            renamed[new] = (key, value)
            key = new
        out.append((key, value))
    for key, value in out:
        if key in renamed and renamed[key][1] != value:
            old, old_value = renamed[key]
            problems.append(
                f"{old} -> set to {old_value!r} and {key} to {value!r}; keep only {key}"
            )
    return out


def source_of(raw: dict[str, Any], pairs: list[tuple[str, Any]]) -> Any:
    """data.source as the overrides and the file set it (the split sizes' group)."""
    for key, value in reversed(pairs):
        if key == "data.source":
            return value
    data = raw.get("data")
    return data.get("source") if isinstance(data, dict) else None
