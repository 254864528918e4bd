"""`carseg status`: each stage's artefact done / stale / missing / partial / running, and the
command to run next (DVC's `dvc status`, Snakemake's rerun triggers).

An artefact is **stale** when an input it recorded (see :mod:`carcli.artefacts.provenance`)
is now a different file (:mod:`carcli.runtime.staleness`, the same checks the reading stages
make), when its stage did fewer steps than the recipe asks, or when a stage it was made from
is itself stale, partial or running. **Running** means a live process holds the stage's lock
(``.lock``: prepare, the training stages, sample) or is writing one of its temporary files
(``.NAME.PID.tmp``: evaluate, plot-reliability, the bundle of export). Commands say
``RECIPE``; the command line puts the user's recipe and overrides in its place. Nothing here
imports torch.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from carcli.artefacts.provenance import Change, compare, short
from carcli.artefacts.run import _pid_alive
from carcli.data.dataset import SPLITS
from carcli.recipe.schema import Recipe
from carcli.runtime.staleness import (
    COUPLING,
    EXPORT_SPLIT,
    VERBS,
    Run,
    bank_changes,
    bank_records,
    derived_changes,
    metrics_staleness,
    read_json,
    trained_changes,
    weights_calibrator,
)

STAGES = (
    "prepare",
    "train-calibrator",
    "train-refiner",
    "sample",
    "evaluate",
    "plot-reliability",
    "export",
)


@dataclass
class Row:
    """One stage in `carseg status`."""

    stage: str
    artefact: str
    state: str  # done, stale, missing, partial, running, or n/a (a stage that does not apply)
    why: str = ""
    command: str = ""  # what to run next (empty when done)
    changes: list[Change] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state in ("done", "n/a")


# ---------------------------------------------------------------- reading what is on disk


def lock_holder(folder: Path) -> str | None:
    """'process P on HOST' while a live process holds `folder`'s stage lock (.lock), or
    while a live process is writing one of its temporary files; else None."""
    lock = folder / ".lock"
    if lock.exists():
        info = read_json(lock) or {}
        pid, host = info.get("pid"), info.get("host")
        if isinstance(pid, int) and (host != socket.gethostname() or _pid_alive(pid)):
            return f"process {pid} on {host}"
    if folder.is_dir():
        for child in folder.iterdir():
            m = re.match(r"^\..+\.(\d+)\.(tmp|partial)$", child.name)
            if m and int(m.group(1)) != os.getpid() and _pid_alive(int(m.group(1))):
                return f"process {m.group(1)} on {socket.gethostname()}"
    return None


# ---------------------------------------------------------------- the status table


def _upstream(row: Row, before: list[Row]) -> Row:
    """A done row becomes stale while a stage it was made from is not up to date (a missing
    one cannot be checked: the row stays as it is)."""
    if row.state != "done":
        return row
    bad = [r for r in before if r.state in ("stale", "partial", "running")]
    if bad:
        row.state = "stale"
        row.why = f"made before {bad[0].stage} ({bad[0].state}) is redone"
        row.command = row.command or ""
    return row


def _prepare(run: Run) -> Row:
    d = run.recipe.data
    missing = [str(run.data(s)) for s in SPLITS if not run.data(s).is_file()]
    holder = lock_holder(run.data_dir)
    if holder:
        return Row("prepare", str(run.data_dir), "running", f"locked by {holder}")
    if not missing:
        return Row("prepare", str(run.data_dir), "done")
    if d.source == "prepared":
        return Row(
            "prepare",
            str(run.data_dir),
            "missing",
            f"{', '.join(missing)} missing (data.source is 'prepared')",
            "point data.dir at the prepared files",
        )
    why = f"{', '.join(missing)} missing"
    if d.source not in ("synthetic", "regression") and (d.raw is None or not Path(d.raw).exists()):
        return Row(
            "prepare",
            str(run.data_dir),
            "missing",
            f"{why}; data.raw ({d.raw}) does not exist",
            f"get the {d.source} data (see data/README.md), set data.raw, then "
            "carseg prepare RECIPE",
        )
    return Row("prepare", str(run.data_dir), "missing", why, "carseg prepare RECIPE")


def _trained(run: Run, name: str) -> Row:
    stage = f"train-{name}"
    folder = run.layout.calibrator if name == "calibrator" else run.layout.refiner
    model = folder / "model.safetensors"
    section = run.recipe.calibrator if name == "calibrator" else run.recipe.refiner
    manifest = read_json(folder / "manifest.json")
    holder = lock_holder(folder)
    if holder:
        return Row(stage, str(model), "running", f"locked by {holder}")
    if manifest is None or not model.is_file():
        if (folder / "last.safetensors").is_file():
            return Row(
                stage,
                str(model),
                "partial",
                f"interrupted (a checkpoint is in {folder})",
                f"carseg {stage} RECIPE --resume",
            )
        return Row(stage, str(model), "missing", "", f"carseg {stage} RECIPE")
    changes = trained_changes(run, name)
    if changes:
        return Row(
            stage,
            str(model),
            "stale",
            changes[0].line(VERBS[name]),
            f"carseg {stage} RECIPE --overwrite",
            changes,
        )
    steps = manifest.get("steps")
    if isinstance(steps, int) and steps < section.steps:
        return Row(
            stage,
            str(model),
            "stale",
            f"trained {steps} steps; the recipe asks {section.steps}",
            f"carseg {stage} RECIPE --resume",
        )
    return Row(stage, str(model), "done", f"{steps} steps" if isinstance(steps, int) else "")


def _sample(run: Run) -> Row:
    split = run.recipe.sample.split
    bank = run.layout.bank(split)
    holder = lock_holder(run.layout.samples_dir())
    if holder:
        return Row("sample", str(bank), "running", f"locked by {holder}")
    if not bank.is_file():
        partial = run.layout.samples_dir() / f".{split}.partial"
        if partial.is_dir():
            return Row(
                "sample",
                str(bank),
                "partial",
                f"interrupted (finished chunks are kept in {partial})",
                "carseg sample RECIPE",
            )
        return Row("sample", str(bank), "missing", "", "carseg sample RECIPE")
    changes = bank_changes(run, split)
    _, attrs = bank_records(bank)
    if not attrs:
        why = f"{bank} is not a readable HDF5 file"
        return Row("sample", str(bank), "stale", why, "carseg sample RECIPE --overwrite")
    if changes:
        cmd = "carseg sample RECIPE --overwrite"
        if attrs.get("imported_from"):
            cmd = f"carseg import-samples RECIPE {attrs['imported_from']} --overwrite"
        return Row("sample", str(bank), "stale", changes[0].line(VERBS["bank"]), cmd, changes)
    g = attrs.get("refiner_sha256")
    why = f"drawn from refiner {short(str(g))}" if g else "imported"
    return Row("sample", str(bank), "done", why)


def _derived(run: Run, stage: str) -> Row:
    split = run.recipe.evaluate.split
    if stage == "evaluate":
        folder = run.layout.eval_dir(split)
        artefact, verb = folder / "metrics.json", VERBS["metrics"]
    else:
        folder = run.layout.plots_dir(split)
        artefact, verb = folder, VERBS["plots"]
    holder = lock_holder(folder)
    if holder:
        return Row(stage, str(artefact), "running", f"writing: {holder}")
    if not (folder / "manifest.json").is_file() or (stage == "evaluate" and not artefact.is_file()):
        return Row(stage, str(artefact), "missing", "", f"carseg {stage} RECIPE")
    changes = derived_changes(run, folder, artefact, split)
    cmd = f"carseg {stage} RECIPE --overwrite"
    if changes:
        return Row(stage, str(artefact), "stale", changes[0].line(verb), cmd, changes)
    bank = bank_changes(run, split)
    if bank:  # the bank it read is still there, but stale itself
        text = f"{artefact} {verb} a stale bank: {bank[0].line(VERBS['bank'])}"
        return Row(stage, str(artefact), "stale", text, cmd, bank)
    return Row(stage, str(artefact), "done")


def _task(run: Run) -> str:
    """The dataset's task (from the train split, else the recipe's source)."""
    import h5py

    try:
        with h5py.File(run.data("train"), "r") as h5:
            task = h5.attrs.get("task", "segmentation")
            return task.decode() if isinstance(task, bytes) else str(task)
    except (OSError, ValueError):
        return "regression" if run.recipe.data.source == "regression" else "segmentation"


def _export(run: Run) -> Row:
    target = run.layout.root / "bundle"
    if _task(run) == "regression":
        return Row("export", str(target), "n/a", "bundles hold segmentation models")
    model = read_json(target / "model.json")
    holder = lock_holder(run.layout.root) if run.layout.root.is_dir() else None
    if holder:  # the bundle is assembled in .bundle.<pid>.tmp beside it
        return Row("export", str(target), "running", f"writing: {holder}")
    if model is None:
        return Row("export", str(target), "missing", "", "carseg export RECIPE")
    now = {"calibrator": weights_calibrator(run.g_path, run.f_path), "refiner": run.g_path}
    prov = model.get("provenance")
    if isinstance(prov, dict) and prov.get("inputs"):
        records = dict(prov["inputs"])
    else:  # bundles exported before provenance: the copied weights' sha256
        records = {r: {"sha256": (model.get(r) or {}).get("sha256")} for r in now}
    metrics = run.layout.eval_dir(EXPORT_SPLIT) / "metrics.json"
    if "metrics" in records:
        now["metrics"] = metrics
    if "coupling" in records:
        now["coupling"] = run.layout.refiner / COUPLING
    changes = compare(target / "model.json", records, now)
    cmd = "carseg export RECIPE --overwrite"
    if changes:
        return Row(
            "export", str(target), "stale", changes[0].line("was exported from"), cmd, changes
        )
    if (
        "metrics" not in records
        and metrics.is_file()
        and not metrics_staleness(run, EXPORT_SPLIT)[0]
    ):
        return Row(
            "export",
            str(target),
            "stale",
            f"its model card says 'not evaluated', but {metrics} now holds these weights' metrics",
            cmd,
        )
    return Row("export", str(target), "done")


def run_status(recipe: Recipe) -> list[Row]:
    """One row per stage (STAGES), in pipeline order."""
    run = Run(recipe)
    prep = _prepare(run)
    cal = _upstream(_trained(run, "calibrator"), [prep])
    ref = _upstream(_trained(run, "refiner"), [prep, cal])
    smp = _upstream(_sample(run), [prep, cal, ref])
    same_split = recipe.evaluate.split == recipe.sample.split
    before = [prep, cal, ref, smp] if same_split else [prep, cal, ref]
    ev = _upstream(_derived(run, "evaluate"), before)
    pl = _upstream(_derived(run, "plot-reliability"), before)
    ex = _upstream(_export(run), [cal, ref])
    rows = [prep, cal, ref, smp, ev, pl, ex]
    for r in rows:  # a row made stale by its upstream is redone by its own stage
        if r.state == "stale" and not r.command:
            r.command = f"carseg {r.stage} RECIPE --overwrite"
    return rows


def next_command(rows: list[Row]) -> str:
    """The first command to run (that of the first row not done), or "": also while the
    first row not done is running (every later stage needs what it is making)."""
    if running_first(rows) is not None:
        return ""
    return next((r.command for r in rows if not r.ok and r.command), "")


def running_first(rows: list[Row]) -> Row | None:
    """The first row not done, when it is running (a process holds its stage lock)."""
    first = next((r for r in rows if not r.ok), None)
    return first if first is not None and first.state == "running" else None
