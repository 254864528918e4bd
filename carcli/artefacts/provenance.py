"""What each artefact was made from, and whether that still holds (DVC's `dvc.lock` idea).

A stage records, for each input it read, a *record*: the role it played (``calibrator``,
``refiner``, ``data.train``, ``bank``, ...), its path, sha256, size and modification time
(ns), and for a checkpoint the step it held. A stage that later reads the artefact compares
each record with the file now at the role's path (:func:`compare`):

* the file is missing: nothing to compare (an artefact may travel without its inputs: CONTRACTS
  lets `evaluate` run from the dataset and the bank alone);
* same size and modification time as recorded: unchanged, nothing is hashed (as `make`, DVC
  and git trust them);
* otherwise its sha256 decides (computed once per process and (path, size, mtime_ns)).

Records of manifests written before roles existed (``inputs``: path -> sha256) still compare,
by path.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_cached(path: str | Path) -> str:
    """sha256 of a file, hashed once per process while its size and mtime stay the same."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(p)
    return _HASHES[key]


def checkpoint_step(path: Path) -> int | None:
    """The `step` in a safetensors checkpoint's metadata (None if not one, or unreadable)."""
    if path.suffix != ".safetensors":
        return None
    try:
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            step = json.loads((fh.metadata() or {}).get("step", "null"))
        return step if isinstance(step, int) else None
    except Exception:  # not readable: the record simply has no step
        return None


def record(path: str | Path) -> dict[str, Any]:
    """The record of an input file as it is now."""
    p = Path(path)
    st = p.stat()
    out: dict[str, Any] = {
        "path": str(p),
        "sha256": sha256_cached(p),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }
    step = checkpoint_step(p)
    if step is not None:
        out["step"] = step
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """HEAD of the git checkout carseg runs from (its source folder, else the working
    directory); None outside a checkout or without git. Never raises."""
    here = Path(__file__).resolve().parents[1]
    for where in (here, Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "-C", str(where), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
        commit = out.stdout.strip()
        if out.returncode == 0 and len(commit) >= 40:
            return commit
    return None


def short(sha: str | None) -> str:
    return f"{sha[:4]}…" if sha else "?"


@dataclass(frozen=True)
class Change:
    """An input of `artefact` that is no longer what it was made from."""

    artefact: Path
    role: str
    path: Path
    recorded: str
    current: str
    detail: str  # what happened, e.g. "trained further: step 30 -> 60, at 2026-12-07 09:31"

    def line(self, verb: str) -> str:
        """`runs/toy/samples/test.h5 was drawn from refiner ead9… but ... is now ed02… (...)`"""
        what = self.role.replace("data.", "dataset split ")
        text = (
            f"{self.artefact} {verb} {what} {short(self.recorded)} but {self.path} is now "
            f"{short(self.current)}"
        )
        return f"{text} ({self.detail})" if self.detail else text


def _detail(rec: dict[str, Any], path: Path) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
    old, new = rec.get("step"), checkpoint_step(path)
    if isinstance(old, int) and new is not None:
        if new > old:
            return f"trained further: step {old} -> {new}, at {when}"
        return f"trained again: step {old} -> {new}, at {when}"
    return f"changed at {when}"


def compare(
    artefact: Path, recorded: dict[str, dict[str, Any]], now: dict[str, Path]
) -> list[Change]:
    """The recorded inputs (role -> record) of `artefact` that differ from the files now at
    `now` (role -> path); roles without a record, or whose file is missing, are skipped."""
    changes = []
    for role, path in now.items():
        rec = recorded.get(role)
        if not rec or not rec.get("sha256") or not path.is_file():
            continue
        st = path.stat()
        if rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
            continue
        current = sha256_cached(path)
        if current != rec["sha256"]:
            changes.append(Change(artefact, role, path, rec["sha256"], current, _detail(rec, path)))
    return changes


def records_of(manifest: dict[str, Any], now: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """A manifest's records by role: its ``provenance``, else (older manifests) its
    ``inputs`` matched to the roles' paths."""
    prov = manifest.get("provenance")
    if isinstance(prov, dict) and prov:
        return {k: v for k, v in prov.items() if isinstance(v, dict)}
    inputs = manifest.get("inputs") or {}
    out = {}
    for role, path in now.items():
        for key in (str(path), os.path.normpath(str(path))):
            if isinstance(inputs.get(key), str):
                out[role] = {"path": key, "sha256": inputs[key]}
                break
    return out
