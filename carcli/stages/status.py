"""`carseg status`: each stage's artefact done / stale / missing / partial / running, and the
command to run next (DVC's `dvc status`, Snakemake's rerun triggers); and the checks that
the reading stages (`evaluate`, `plot-reliability`, `export`, and `sample` on an existing
bank) make before they trust an artefact.

An artefact is **stale** when an input it recorded (see :mod:`carcli.artefacts.provenance`)
is now a different file, when its stage did fewer steps than the recipe asks, or when a stage
it was made from is itself stale, partial or running. Commands say ``RECIPE``; the command
line puts the user's recipe and overrides in its place. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carcli.artefacts.provenance import Change, compare, records_of, short
from carcli.artefacts.run import RunLayout, _pid_alive
from carcli.data.dataset import SPLITS, split_path
from carcli.errors import CarsegError
from carcli.recipe.schema import Recipe

STAGES = (
    "prepare",
    "train-calibrator",
    "train-refiner",
    "sample",
    "evaluate",
    "plot-reliability",
    "export",
)
EXPORT_SPLIT = "test"
"""The split whose metrics a bundle's model card shows (carcli.bundle.export)."""


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


def _json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def lock_holder(folder: Path) -> str | None:
    """'process P on HOST' while a live process holds `folder`'s stage lock (.lock), or
    while a live process is writing one of its temporary files; else None."""
    lock = folder / ".lock"
    if lock.exists():
        info = _json(lock) or {}
        pid, host = info.get("pid"), info.get("host")
        if isinstance(pid, int) and (host != socket.gethostname() or _pid_alive(pid)):
            return f"process {pid} on {host}"
    if folder.is_dir():
        for child in folder.iterdir():
            m = re.match(r"^\..+\.(\d+)\.(tmp|partial)$", child.name)
            if m and int(m.group(1)) != os.getpid() and _pid_alive(int(m.group(1))):
                return f"process {m.group(1)} on {socket.gethostname()}"
    return None


def weights_calibrator(g_path: Path, default: Path) -> Path:
    """The F that G at `g_path` was trained with (carcli.runtime.networks.refiner_calibrator,
    without importing torch)."""
    try:
        from safetensors import safe_open

        with safe_open(str(g_path), framework="numpy") as fh:
            name = json.loads((fh.metadata() or {}).get("calibrator", "null"))
    except Exception:  # missing or unreadable: loading G reports it
        return default
    if not isinstance(name, str) or not name or Path(name).name != name:
        return default
    return g_path.parent / name


def bank_records(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """A bank's provenance records by role, and its attributes (both empty if unreadable)."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
    except (OSError, ValueError):
        return {}, {}
    try:
        prov = json.loads(str(attrs.get("provenance", "")))
    except ValueError:
        prov = None
    if isinstance(prov, dict) and prov:
        return prov, attrs
    split = str(attrs.get("split", ""))
    legacy = {  # banks written before the provenance attribute
        "calibrator": attrs.get("calibrator_sha256"),
        "refiner": attrs.get("refiner_sha256"),
        f"data.{split}": attrs.get("dataset_sha256"),
    }
    return {k: {"sha256": str(v)} for k, v in legacy.items() if v}, attrs


@dataclass
class Run:
    """The paths of a recipe's artefacts and where each one's inputs are now."""

    recipe: Recipe

    def __post_init__(self) -> None:
        self.layout = RunLayout(Path(self.recipe.run_dir))
        self.data_dir = Path(self.recipe.data.dir)
        self.f_path = self.layout.calibrator / "model.safetensors"
        self.g_path = self.layout.refiner / "model.safetensors"

    def data(self, split: str) -> Path:
        return split_path(self.data_dir, split)

    def bank_inputs(self, split: str) -> dict[str, Path]:
        return {
            "calibrator": weights_calibrator(self.g_path, self.f_path),
            "refiner": self.g_path,
            f"data.{split}": self.data(split),
        }

    def trained_inputs(self, stage: str) -> dict[str, Path]:
        now = {"data.train": self.data("train"), "data.val": self.data("val")}
        if stage == "refiner":
            now["calibrator"] = self.f_path
        return now


# ---------------------------------------------------------------- what a reading stage checks


def bank_changes(run: Run, split: str) -> list[Change]:
    """What changed since the bank of `split` was drawn (empty if it is missing)."""
    bank = run.layout.bank(split)
    if not bank.is_file():
        return []
    records, _ = bank_records(bank)
    return compare(bank, records, run.bank_inputs(split))


def trained_changes(run: Run, stage: str) -> list[Change]:
    """What changed since F ("calibrator") or G ("refiner") was trained."""
    folder = run.layout.calibrator if stage == "calibrator" else run.layout.refiner
    manifest = _json(folder / "manifest.json")
    if manifest is None or not (folder / "model.safetensors").is_file():
        return []
    now = run.trained_inputs(stage)
    return compare(folder / "model.safetensors", records_of(manifest, now), now)


def derived_changes(run: Run, folder: Path, artefact: Path, split: str) -> list[Change]:
    """What changed since evaluate / plot-reliability read the bank and dataset of `split`."""
    manifest = _json(folder / "manifest.json")
    if manifest is None:
        return []
    now = {"bank": run.layout.bank(split), f"data.{split}": run.data(split)}
    return compare(artefact, records_of(manifest, now), now)


VERBS = {
    "bank": "was drawn from",
    "calibrator": "was trained on",
    "refiner": "was trained from",
    "metrics": "were computed from",
    "plots": "were drawn from",
}


def sample_command(recipe: Recipe, split: str) -> str:
    extra = "" if split == recipe.sample.split else f" sample.split={split}"
    return f"carseg sample RECIPE{extra} --overwrite"


def _weights_lines(run: Run, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """Stale-input lines of the weights a stage reads: F ("calibrator") and / or G
    ("refiner"). After joint training G comes with its own F (refiner/calibrator.safetensors),
    so calibrator/model.safetensors is then read by neither."""
    joint = weights_calibrator(run.g_path, run.f_path) != run.f_path
    lines = []
    for name in names:
        if name == "calibrator" and joint:
            continue
        changes = trained_changes(run, name)
        if name == "refiner" and joint:
            changes = [c for c in changes if c.role != "calibrator"]
        cmd = f"carseg train-{name} RECIPE --overwrite"
        lines += [(c.line(VERBS[name]), cmd) for c in changes]
    return lines


def reading_check(recipe: Recipe, stage: str) -> tuple[list[str], str]:
    """For a stage that reads artefacts (`train-refiner`, `sample`, `evaluate`,
    `plot-reliability`, `export`): one line per stale input, and the command that refreshes
    the first."""
    run = Run(recipe)
    lines: list[tuple[str, str]] = []
    if stage == "train-refiner":  # reads F
        changes = trained_changes(run, "calibrator")
        lines += [
            (c.line(VERBS["calibrator"]), "carseg train-calibrator RECIPE --overwrite")
            for c in changes
        ]
    elif stage == "sample":  # reads F and G
        lines += _weights_lines(run, ("calibrator", "refiner"))
    elif stage in ("evaluate", "plot-reliability"):
        split = recipe.evaluate.split
        lines += [
            (c.line(VERBS["bank"]), sample_command(recipe, split)) for c in bank_changes(run, split)
        ]
    elif stage == "export":
        lines += _weights_lines(run, ("calibrator", "refiner"))
        metrics = run.layout.eval_dir(EXPORT_SPLIT) / "metrics.json"
        if metrics.is_file():
            why, cmd = metrics_staleness(run, EXPORT_SPLIT)
            if why:
                lines.append((why, cmd))
    else:  # pragma: no cover - a programming error
        raise ValueError(stage)
    return [text for text, _ in lines], (lines[0][1] if lines else "")


def metrics_staleness(run: Run, split: str) -> tuple[str, str]:
    """Why the metrics of `split` are not those of the current F and G ("" if they are), and
    the commands that refresh them."""
    eval_dir = run.layout.eval_dir(split)
    metrics = eval_dir / "metrics.json"
    evaluate = "carseg evaluate RECIPE --overwrite"
    bank = bank_changes(run, split)
    if bank:
        return (
            f"{metrics} were computed from a stale bank: {bank[0].line(VERBS['bank'])}",
            f"{sample_command(run.recipe, split)}, then {evaluate}",
        )
    own = derived_changes(run, eval_dir, metrics, split)
    if own:
        return own[0].line(VERBS["metrics"]), evaluate
    return "", ""


def require_fresh(recipe: Recipe, stage: str, allow_stale: bool) -> list[str]:
    """Refuse (CarsegError) when what `stage` reads is stale, unless `allow_stale`; returns
    the stale lines (for the manifest)."""
    lines, cmd = reading_check(recipe, stage)
    if lines and not allow_stale:
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise CarsegError(
            f"{lines[0]}{more}",
            hint=f"run {cmd}, or pass --allow-stale to use it as it is",
        )
    return lines


def stale_bank_error(recipe: Recipe, split: str) -> CarsegError | None:
    """`sample` without --overwrite on an existing bank: the refusal, saying whether it is
    stale (None if there is no bank)."""
    run = Run(recipe)
    bank = run.layout.bank(split)
    if not bank.exists():
        return None
    changes = bank_changes(run, split)
    if changes:
        return CarsegError(
            f"a {split} sample bank already exists and is stale: {changes[0].line(VERBS['bank'])}",
            hint="pass --overwrite to draw it again",
        )
    return CarsegError(
        f"a {split} sample bank already exists at {bank}",
        hint="pass --overwrite to replace it",
    )


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
    manifest = _json(folder / "manifest.json")
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
    model = _json(target / "model.json")
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
    """The first command to run (that of the first row not done), or ""."""
    return next((r.command for r in rows if not r.ok and r.command), "")
