"""Kill and resume, in real processes: SIGKILL at a random moment after the first checkpoint,
then `--resume` (or, for `sample`, the same command again; run in the test process to save
importing torch again); the result must equal an
uninterrupted run made at the same time in another run_dir (which also shows that two runs
in different run_dirs do not interfere). Also: the stage lock between processes.

The kill moment is drawn from a seeded random (set CARSEG_KILL_SEED to vary it); the drawn
point is in every assertion message, so a failure reproduces. The process to be killed stops
itself (SIGSTOP) at that point, so the kill lands there however loaded the machine is: the
test no longer races the run to its end (before, a test process starved of CPU for a tenth of
a second could see the run finish before its kill).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from reliability import REPO, carseg_cmd, carseg_env, write_recipe
from safetensors.torch import load_file
from typer.testing import CliRunner

from carcli.cli.app import app
from carcli.recipe.load import load_recipe
from carcli.stages.prepare import run_prepare
from carcli.training.calibrator import run_train_calibrator
from carcli.training.refiner import run_train_refiner

KILL_SEED = int(os.environ.get("CARSEG_KILL_SEED", "2024"))
POLL_S = 0.005


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared tiny dataset and a trained (4-step) calibrator and refiner in base/run."""
    tmp = tmp_path_factory.mktemp("base")
    recipe = write_recipe(tmp / "r.yaml", tmp / "run", tmp / "data")
    r = load_recipe(recipe)
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    return tmp


# `carseg ARGS...` that stops itself (SIGSTOP) right after logging step TARGET: python -c
# STOP_AT_STEP TARGET ARGS...
STOP_AT_STEP = """
import os, runpy, signal, sys
import carcli.training.stage as common
target, write = int(sys.argv[1]), common.MetricsLog.write
def stopping(self, record):
    write(self, record)
    if record.get("step") == target:
        os.kill(os.getpid(), signal.SIGSTOP)  # where the test's SIGKILL lands
common.MetricsLog.write = stopping
sys.argv = ["carseg", *sys.argv[2:]]
runpy.run_module("carcli", run_name="__main__")
"""

# The same for `sample`: stops once its TARGET-th chunk file is on disk.
STOP_AT_CHUNK = """
import os, runpy, signal, sys, time
import carcli.sampling.chunks as chunks
target, write, calls = int(sys.argv[1]), chunks._write_chunk, []
def stopping(path, *args, **kwargs):
    write(path, *args, **kwargs)
    calls.append(path)
    if len(calls) == target:
        while len(list(path.parent.glob("chunk-*.h5"))) < target:  # the writer thread's
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGSTOP)  # where the test's SIGKILL lands
chunks._write_chunk = stopping
sys.argv = ["carseg", *sys.argv[2:]]
runpy.run_module("carcli", run_name="__main__")
"""


def _start_stopping(hook: str, target: int, *args: str | Path) -> subprocess.Popen:
    """`carseg ARGS` in a process that stops itself at `target` (see STOP_AT_*)."""
    return subprocess.Popen(
        [sys.executable, "-c", hook, str(target), *map(str, args)],
        cwd=REPO,
        env=carseg_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _start(*args: str | Path) -> subprocess.Popen:
    return subprocess.Popen(
        carseg_cmd(*args),
        cwd=REPO,
        env=carseg_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until(proc: subprocess.Popen, ready, what: str, timeout: float = 90) -> None:
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}:\n{err}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def _kill(proc: subprocess.Popen, what: str) -> None:
    assert proc.poll() is None, f"the run finished before the kill ({what}); make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


def _logged_steps(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except OSError:
        return 0


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


STAGE_FILES = {
    "calibrator": {
        "model.safetensors",
        "best.safetensors",
        "last.safetensors",
        "metrics.jsonl",
        "recipe.yaml",
        "manifest.json",
    },
    "refiner": {
        "model.safetensors",
        "discriminator.safetensors",
        "best.safetensors",
        "last.safetensors",
        "metrics.jsonl",
        "recipe.yaml",
        "manifest.json",
    },
}


@pytest.mark.parametrize("stage", ["calibrator", "refiner"])
def test_kill_and_resume_training(base: Path, tmp_path: Path, stage: str) -> None:
    _kill_and_resume_training(base, tmp_path, stage, KILL_SEED)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 6))
@pytest.mark.parametrize("stage", ["calibrator", "refiner"])
def test_kill_and_resume_training_more_moments(
    base: Path, tmp_path: Path, stage: str, seed: int
) -> None:
    _kill_and_resume_training(base, tmp_path, stage, seed)


def _kill_and_resume_training(base: Path, tmp_path: Path, stage: str, seed: int) -> None:
    steps, every = 40, 4
    rng = random.Random(f"{seed}-{stage}")
    target = rng.randint(every + 1, steps // 2)  # logged steps before the kill
    why = f"stage {stage}, kill after step {target} (CARSEG_KILL_SEED={seed})"
    section = {"steps": steps, "checkpoint_every": every, "val_every": 6}
    runs = {}
    for name in ("killed", "straight"):
        root = tmp_path / name
        if stage == "refiner":
            shutil.copytree(base / "run" / "calibrator", root / "run" / "calibrator")
        runs[name] = write_recipe(
            tmp_path / f"{name}.yaml", root / "run", base / "data", **{stage: section}
        )
    cmd = f"train-{stage}"
    # Both at once, in different run_dirs: the straight one is the reference.
    killed = _start_stopping(STOP_AT_STEP, target, cmd, runs["killed"], "-q")
    straight = _start(cmd, runs["straight"], "-q")
    sdir = tmp_path / "killed" / "run" / stage
    _wait_until(
        killed,
        lambda: (
            (sdir / "last.safetensors").exists() and _logged_steps(sdir / "metrics.jsonl") >= target
        ),
        f"step {target}",
    )
    _kill(killed, why)
    # What a kill leaves: a lock of a dead process, a loadable checkpoint, no model yet.
    lock = json.loads((sdir / ".lock").read_text())
    assert lock["pid"] == killed.pid and lock["host"] == socket.gethostname(), why
    assert not (sdir / "manifest.json").exists(), why
    load_file(str(sdir / "last.safetensors"))

    # (resumed in this process: it saves importing torch again; the killed one is gone)
    resumed = CliRunner().invoke(app, [cmd, str(runs["killed"]), "--resume", "-q"])
    assert resumed.exit_code == 0, f"{why}\n{resumed.output}"
    _finish(straight)

    tdir = tmp_path / "straight" / "run" / stage
    assert {p.name for p in sdir.iterdir()} == STAGE_FILES[stage], why  # no lock, no temp
    log_a, log_b = _records(sdir / "metrics.jsonl"), _records(tdir / "metrics.jsonl")
    assert [x["step"] for x in log_a] == list(range(1, steps + 1)), why
    assert log_a == log_b, why
    assert json.loads((sdir / "manifest.json").read_text())["steps"] == steps
    for name in sorted(STAGE_FILES[stage]):
        if name.endswith(".safetensors"):
            a, b = load_file(str(sdir / name)), load_file(str(tdir / name))
            assert a.keys() == b.keys(), (why, name)
            for k in a:  # weights, and in last.safetensors optimiser and RNG states
                assert torch.equal(a[k], b[k]), (why, name, k)


def _chunks(partial: Path) -> list[str]:
    try:
        return sorted(p.name for p in partial.glob("chunk-*.h5"))
    except OSError:
        return []


def test_kill_and_resume_sample(base: Path, tmp_path: Path) -> None:
    n_test, chunk = 48, 3
    n_chunks = n_test // chunk
    rng = random.Random(f"{KILL_SEED}-sample")
    target = rng.randint(1, n_chunks // 3)
    why = f"sample, kill after chunk {target} of {n_chunks} (CARSEG_KILL_SEED={KILL_SEED})"
    section = {"num_samples": 60, "chunk_size": chunk, "batch_size": 1}
    runs = {}
    for name in ("killed", "straight"):
        root = tmp_path / name
        for stage in ("calibrator", "refiner"):
            shutil.copytree(base / "run" / stage, root / "run" / stage)
        runs[name] = write_recipe(
            tmp_path / f"{name}.yaml", root / "run", base / "data", sample=section
        )
    killed = _start_stopping(STOP_AT_CHUNK, target, "sample", runs["killed"], "-q")
    straight = _start("sample", runs["straight"], "-q")
    out = tmp_path / "killed" / "run" / "samples"
    partial = out / ".test.partial"
    _wait_until(killed, lambda: len(_chunks(partial)) >= target, f"chunk {target}")
    _kill(killed, why)
    kept = _chunks(partial)
    assert 1 <= len(kept) < n_chunks and not (out / "test.h5").exists(), why

    again = CliRunner().invoke(app, ["sample", str(runs["killed"]), "-q"])
    assert again.exit_code == 0, f"{why}\n{again.output}"
    _finish(straight)

    manifest = json.loads((out / "manifest.json").read_text())
    # the chunks finished before the kill were reused, only the others computed
    assert manifest["chunks"] == n_chunks and manifest["chunks_reused"] == len(kept), why
    assert {p.name for p in out.iterdir()} == {"test.h5", "manifest.json"}, why
    ref = tmp_path / "straight" / "run" / "samples" / "test.h5"
    with h5py.File(out / "test.h5") as a, h5py.File(ref) as b:
        for name in ("samples", "calibration", "index"):
            assert np.array_equal(a[name][...], b[name][...]), (why, name)
        for key in ("calibrator_sha256", "refiner_sha256", "num_samples", "seed", "schema"):
            assert a.attrs[key] == b.attrs[key], (why, key)


HOLDER = """
import sys, time
from pathlib import Path
from carcli.artefacts.run import stage_lock
lock = stage_lock(Path(sys.argv[1]))
lock.__enter__()
(Path(sys.argv[1]) / ".calibrator.safetensors.{pid}.tmp".format(pid=__import__("os").getpid())
 ).write_bytes(b"half-written")
print("locked", flush=True)
time.sleep(120)
"""


def test_second_process_is_refused_then_stale_lock_cleared(base: Path, tmp_path: Path) -> None:
    """Another process holds run/calibrator: train-calibrator is refused, naming it. Once
    that process is SIGKILLed, its lock and half-written temp file are recognised as stale."""
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "run", base / "data")
    stage = tmp_path / "run" / "calibrator"
    stage.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(stage)],
        cwd=REPO,
        env=carseg_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(app, ["train-calibrator", str(recipe), "-q"])
        assert result.exit_code == 1, result.output
        (line,) = result.stderr.strip().splitlines()
        assert f"in use by process {holder.pid}" in line and str(stage / ".lock") in line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (stage / ".lock").exists() and len(list(stage.glob(".*.tmp"))) == 1
    result = CliRunner().invoke(app, ["train-calibrator", str(recipe), "-q"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in stage.iterdir()} == STAGE_FILES["calibrator"]
