"""Whether the artefacts a stage reads are still what they were made from.

The reading stages call :func:`require_fresh` before they trust their inputs: `train-refiner`
(F), `sample` (F and G), `evaluate` and `plot-reliability` (the bank), `export` (F, G and the
test metrics for the card); `sample` on an existing bank says whether it is stale
(:func:`stale_bank_error`). `carseg status` (:mod:`carcli.stages.status`) uses the same
comparisons. The records themselves: :mod:`carcli.artefacts.provenance`. Commands say
``RECIPE``; the command line puts the user's recipe and overrides in its place. Nothing here
imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carcli.artefacts.provenance import Change, compare, records_of
from carcli.artefacts.run import COUPLING, DISCRIMINATOR, RunLayout
from carcli.data.dataset import split_path
from carcli.errors import CarsegError
from carcli.recipe.schema import Recipe

EXPORT_SPLIT = "test"
"""The split whose metrics a bundle's model card shows (carcli.bundle.export)."""


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


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
            "coupling": self.layout.refiner / COUPLING,  # compared only where recorded
            "discriminator": self.layout.refiner / DISCRIMINATOR,  # sample.pool_critic > 0
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
    manifest = read_json(folder / "manifest.json")
    if manifest is None or not (folder / "model.safetensors").is_file():
        return []
    now = run.trained_inputs(stage)
    return compare(folder / "model.safetensors", records_of(manifest, now), now)


def derived_changes(run: Run, folder: Path, artefact: Path, split: str) -> list[Change]:
    """What changed since evaluate / plot-reliability read the bank and dataset of `split`."""
    manifest = read_json(folder / "manifest.json")
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
