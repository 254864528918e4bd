"""`carseg predict MODEL INPUT...`: a thin command over `load_model(...).predict` and the
writing pieces of carcli/predict/run.py.

Order of work, so that a bad input never leaves a half-written output: load and verify the
model; check `--out` (not inside an input folder, writable); read and preprocess every
input and its black-box prediction; decide per input whether its folder can be kept (a rerun
keeps a complete folder whose prediction.json matches) or must be made; only then predict
and write, each folder atomically, and predictions.h5 last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carcli.api import Model, load_model
from carcli.errors import CarsegError
from carcli.predict import outputs
from carcli.predict.engine import PredictOptions
from carcli.predict.inputs import SUFFIXES, not_inputs
from carcli.predict.run import (
    check_args,
    check_exist,
    check_out,
    make_out,
    plan,
    predict_and_write,
)
from carcli.runtime.interrupt import stops_at_once
from carcli.ui import Reporter


@dataclass(frozen=True)
class ModelSource:
    """The model `predict` runs: a bundle folder (carseg export) or a recipe, loaded by
    :func:`carcli.api.load_model` on ``device`` with ``speed`` over its speed options
    (``--speed KEY=VALUE``) and, for a recipe, its ``overrides`` (`key=value`)."""

    path: str | Path
    device: str = "cpu"
    speed: dict[str, Any] | None = None
    overrides: list[str] | None = None

    def load(self) -> Model:
        return load_model(self.path, self.device, self.speed, self.overrides)


def run_predict(
    model_source: ModelSource,
    inputs: list[str],
    out: str | Path = "predictions",
    opts: PredictOptions = PredictOptions(),
    *,
    blackbox: str | None = None,
    recursive: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Predict and write; returns counts and the share of wall time spent writing files.
    F and G run with the model's speed options, as `sample` runs them (``model_source``'s
    ``speed`` overrides some). ``opts``: samples per input, noise seed, inputs per batch."""
    t0 = time.perf_counter()
    rep = Reporter(quiet)
    num_samples = opts.num_samples
    check_args(inputs, num_samples, opts.batch_size)
    model = model_source.load()
    for note in model.speed_notes:
        rep.line(note)
    out = Path(out)
    check_exist(inputs)
    check_out(out, inputs)
    items = model.read(inputs, recursive)
    skipped = not_inputs(inputs, recursive)
    if skipped:  # one line, every file named
        rep.console.print(  # even with --quiet: a warning
            f"carseg: not read ({len(skipped)} file(s) that are not {'/'.join(SUFFIXES)} "
            "inputs): " + ", ".join(str(p) for p in skipped),
            markup=False,
        )
    bbs = model.blackboxes(items, blackbox)
    records = [outputs.expected_record(it, num_samples, opts.seed, model.meta) for it in items]
    keep = plan(out, items, records, overwrite)
    make_out(out)
    again = "rerun it without --overwrite" if overwrite else "the same command"
    with stops_at_once(
        f"interrupted; every input finished so far is kept in {out} (one folder each) and "
        f"{again} continues with the others"
    ):
        write_s = predict_and_write(model, out, items, records, keep, bbs, rep, opts)
    wall = time.perf_counter() - t0
    rep.line(
        f"predictions written: {out} ({len(items)} inputs x {num_samples} samples; "
        f"{len(keep)} kept from an earlier run)"
    )
    return {
        "inputs": len(items),
        "kept": len(keep),
        "wall_s": wall,
        "write_s": write_s,
        "write_share": write_s / wall if wall > 0 else 0.0,
        "speed": model.meta["speed_applied"],
    }


def parse_speed(pairs: list[str] | None) -> dict[str, Any]:
    """``--speed KEY=VALUE`` options (values as YAML scalars: true, false, bf16)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise CarsegError(
                f"--speed {pair}: expected KEY=VALUE", hint="e.g. --speed fold_bn=true"
            )
        out[key.strip()] = yaml.safe_load(value)
    return out
