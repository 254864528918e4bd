"""The run layout, atomic writes, overwrite refusal, stage locks and manifests.

Every stage writes under ``run_dir/<stage>/``. A stage's outputs count as finished when its
``manifest.json`` exists (the manifest is written last). Files are written to a temporary
name in the same folder and renamed, so a reader never sees a half-written artefact.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carcli._version import __version__
from carcli.artefacts.provenance import (  # noqa: F401 (sha256_file: re-exported)
    git_commit,
    record,
    sha256_cached,
    sha256_file,
)
from carcli.errors import CarsegError
from carcli.threads import thread_settings

COUPLING = "coupling.safetensors"
"""refiner/coupling.safetensors: the region coupling head (refiner.coupling_steps)."""
DISCRIMINATOR = "discriminator.safetensors"
"""refiner/discriminator.safetensors: D's weights (resuming; sample.pool_critic weights the
sampling pool by it)."""


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run's artefacts (docs/guide.md, "Artefacts")."""

    root: Path

    @property
    def calibrator(self) -> Path:
        return self.root / "calibrator"

    @property
    def refiner(self) -> Path:
        return self.root / "refiner"

    def samples_dir(self) -> Path:
        return self.root / "samples"

    def bank(self, split: str) -> Path:
        return self.root / "samples" / f"{split}.h5"

    def eval_dir(self, split: str) -> Path:
        return self.root / "eval" / split

    def plots_dir(self, split: str) -> Path:
        return self.root / "plots" / split


def tmp_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


_ERRNO_IN_TEXT = re.compile(r"(?:os error|errno =?)\s*(\d+)")


def write_failure(exc: BaseException) -> str | None:
    """The operating system's reason for a failed write (disk full, quota, permissions...),
    or None when `exc` is not one. safetensors and h5py report these as their own error types
    with the errno in the text."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.strerror or os.strerror(exc.errno)
    match = _ERRNO_IN_TEXT.search(str(exc))
    if match:
        return os.strerror(int(match.group(1)))
    if isinstance(exc, OSError):
        return str(exc) or type(exc).__name__
    return None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success.

    On any failure the temporary file is removed; an operating-system write failure (a full
    disk, a quota, permissions) becomes a CarsegError naming `path`.
    """
    path = Path(path)
    ensure_dir(path.parent)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {tmp}")
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        reason = None if isinstance(exc, CarsegError) else write_failure(exc)
        if reason is None:
            raise
        raise cannot_write(path, reason) from None


def cannot_write(path: str | Path, reason: str) -> CarsegError:
    """The error of a write that failed for ``reason`` (disk full, no permission, ...)."""
    return CarsegError(
        f"cannot write {path}: {reason}",
        hint=f"free disk space or make {Path(path).parent} writable, then run the command again",
    )


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise cannot_write(path, str(exc.strerror or exc)) from None


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def ensure_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CarsegError(
            f"cannot create directory {path}: {exc.strerror or exc}",
            hint="check run_dir / data.dir and their permissions",
        ) from None
    if not os.access(path, os.W_OK):
        raise CarsegError(f"directory {path} is not writable", hint="choose another run_dir")


def check_not_finished(marker: Path, what: str, overwrite: bool) -> None:
    """Refuse to redo a finished artefact unless `overwrite` (callers replace it)."""
    if marker.exists():
        if not overwrite:
            raise CarsegError(
                f"{what} already exists at {marker}", hint="pass --overwrite to replace it"
            )


def clear_stage_dir(path: Path, keep: tuple[str, ...] = (".lock",)) -> None:
    """Remove a stage folder's contents (for --overwrite), keeping the lock."""
    if not path.exists():
        return
    for child in path.iterdir():
        if child.name in keep:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


EMPTY_LOCK_GRACE_S = 10.0
_TMP_NAME = re.compile(r"^\..+\.(\d+)\.tmp$")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files (see tmp_path_for) that killed processes left in `folder`;
    called by the holder of the folder's lock. Returns what was removed."""
    removed = []
    for child in folder.iterdir():
        match = _TMP_NAME.match(child.name)
        if not match or not child.is_file():
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not _pid_alive(pid):
            child.unlink(missing_ok=True)
            removed.append(child)
    return removed


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


@contextlib.contextmanager
def stage_lock(stage_dir: Path) -> Iterator[None]:
    """Refuse a second process on the same run_dir and stage; recognise stale locks."""
    ensure_dir(stage_dir)
    lock = stage_dir / ".lock"
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                other = json.loads(lock.read_text())
            except (OSError, ValueError):
                other = {}
            same_host = other.get("host") == me["host"]
            if same_host and isinstance(other.get("pid"), int) and not _pid_alive(other["pid"]):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            if not isinstance(other.get("pid"), int) and _age(lock) > EMPTY_LOCK_GRACE_S:
                lock.unlink(missing_ok=True)  # killed between creating and writing the lock
                continue
            raise CarsegError(
                f"{stage_dir} is in use by process {other.get('pid', '?')} on "
                f"{other.get('host', '?')}",
                hint=f"wait for it, or delete {lock} if that process is gone",
            ) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    remove_stale_temps(stage_dir)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


@dataclass
class Manifest:
    """What a stage records beside its outputs (manifest.json)."""

    stage: str
    recipe: dict[str, Any]
    seed: int
    inputs: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Role -> record of each input (see carcli.artefacts.provenance)."""

    def add_input(self, path: str | Path, role: str | None = None) -> None:
        """Record an input's sha256 (``inputs``) and, with a `role`, its provenance record."""
        if role is None:
            self.inputs[str(path)] = sha256_cached(path)
            return
        rec = record(path)
        self.inputs[str(path)] = rec["sha256"]
        self.provenance[role] = rec

    def staleness(self, allowed: bool, changes: list[str]) -> None:
        """Record whether the stage was told --allow-stale, and what was stale when it ran."""
        self.extra["allow_stale"] = allowed
        self.extra["stale_inputs"] = list(changes)

    def write(self, stage_dir: Path, outputs: list[str], device: str = "cpu") -> dict[str, Any]:
        try:
            import torch

            torch_version = torch.__version__
        except ImportError:  # pragma: no cover - torch is a dependency
            torch_version = None
        obj = {
            "schema": "carseg.manifest/1",
            "stage": self.stage,
            "carseg_version": __version__,
            "git_commit": git_commit(),
            "argv": list(sys.argv),
            "recipe": self.recipe,
            "seed": self.seed,
            "inputs": self.inputs,
            "provenance": self.provenance,
            "outputs": outputs,
            "torch_version": torch_version,
            "python_version": sys.version.split()[0],
            "device": device,
            "threads": thread_settings(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "wall_time_s": round(time.time() - self.started, 3),
            **self.extra,
        }
        write_json_atomic(stage_dir / "manifest.json", obj)
        return obj
