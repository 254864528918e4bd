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
from pathlib import Path
from typing import Any

from carcli.api import load_model
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


def run_predict(
    model_path: str | Path,
    inputs: list[str],
    out: str | Path = "predictions",
    num_samples: int = 16,
    seed: int = 0,
    blackbox: str | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    overwrite: bool = False,
    quiet: bool = False,
    recursive: bool = False,
    speed: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Predict and write; returns counts and the share of wall time spent writing files.
    F and G run with the model's speed options, as `sample` runs them; ``speed`` overrides
    some (``--speed KEY=VALUE``). ``overrides`` (`key=value`) apply to a recipe MODEL."""
    t0 = time.perf_counter()
    rep = Reporter(quiet)
    check_args(inputs, num_samples, batch_size)
    model = load_model(model_path, device, speed, overrides)
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
    records = [outputs.expected_record(it, num_samples, seed, model.meta) for it in items]
    keep = plan(out, items, records, overwrite)
    make_out(out)
    again = "rerun it without --overwrite" if overwrite else "the same command"
    with stops_at_once(
        f"interrupted; every input finished so far is kept in {out} (one folder each) and "
        f"{again} continues with the others"
    ):
        opts = PredictOptions(num_samples, seed, batch_size)
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
