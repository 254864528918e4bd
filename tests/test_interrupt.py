"""Ctrl-C and preemption, in real processes: `train-calibrator` / `train-refiner` sent SIGINT
or SIGTERM after a random number of steps (before the first periodic checkpoint) finish the
step, write last.safetensors, print one line naming the `--resume` command and exit 130 / 143;
running that very command reaches the final step with the weights of an uninterrupted run.

Which stages are deterministic: both training stages, at threads=1 on the CPU (the tiny
recipe of tests/reliability.py), give bit-identical weights, optimiser and RNG states, best
checkpoints and metrics.jsonl whether interrupted (at any step, not only at a checkpoint
boundary) and resumed or run straight through; the tests assert exact equality for both.
(On a GPU, or with several CPU threads, kernels may reduce in another order; there only the
step count and the loadability of every file would hold.)

The moment is drawn from a seeded random (CARSEG_KILL_SEED varies it) and is in every
assertion message; the test waits for metrics.jsonl to log that step (polled, with a generous
deadline), never for a fixed time.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reliability import REPO, carseg_cmd, carseg_env, write_recipe
from safetensors.torch import load_file
from typer.testing import CliRunner

from carcli import distributed
from carcli.artefacts.checkpoint import read_safetensors
from carcli.cli.app import app
from carcli.recipe.load import load_recipe
from carcli.runtime.interrupt import StopRequest, exit_status, stops_at_once
from carcli.stages.prepare import run_prepare
from carcli.training.calibrator import run_train_calibrator
from carcli.training.refiner import run_train_refiner

SEED = int(os.environ.get("CARSEG_KILL_SEED", "2024"))
DEADLINE_S = 300  # generous: a loaded machine is slow, never wrong
STEPS = {"calibrator": 120, "refiner": 60}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared tiny dataset and a trained (4-step) calibrator in base/run."""
    tmp = tmp_path_factory.mktemp("base")
    r = load_recipe(write_recipe(tmp / "r.yaml", tmp / "run", tmp / "data"))
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    return tmp


def _section(stage: str) -> dict:
    # the only periodic checkpoint is the last step's: every stop is before the first one
    return {"steps": STEPS[stage], "checkpoint_every": STEPS[stage], "val_every": 7}


@pytest.fixture(scope="module")
def straight(base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted runs of both stages (in this process), the reference."""
    out = {}
    for stage in ("calibrator", "refiner"):
        tmp = tmp_path_factory.mktemp(f"straight-{stage}")
        if stage == "refiner":
            shutil.copytree(base / "run" / "calibrator", tmp / "run" / "calibrator")
        r = load_recipe(
            write_recipe(tmp / "r.yaml", tmp / "run", base / "data", **{stage: _section(stage)})
        )
        (run_train_calibrator if stage == "calibrator" else run_train_refiner)(r, quiet=True)
        out[stage] = tmp / "run" / stage
    return out


def _logged(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except OSError:
        return 0


def _wait_for_step(proc: subprocess.Popen, log: Path, step: int, why: str) -> None:
    t0 = time.monotonic()
    while _logged(log) < step:
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"{why}: the run ended (rc {proc.returncode}) before step {step}:\n{err}")
        if time.monotonic() - t0 > DEADLINE_S:
            proc.kill()
            pytest.fail(f"{why}: no step {step} in {log} after {DEADLINE_S} s")
        time.sleep(0.005)


def _records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("stage", ["calibrator", "refiner"])
def test_signal_checkpoints_and_the_resume_line_resumes(
    base: Path, straight: dict[str, Path], tmp_path: Path, stage: str, sig: signal.Signals
) -> None:
    steps = STEPS[stage]
    target = random.Random(f"{SEED}-{stage}-{sig.name}").randint(2, steps // 4)
    why = f"{stage}, {sig.name} after step {target} (CARSEG_KILL_SEED={SEED})"
    if stage == "refiner":
        shutil.copytree(base / "run" / "calibrator", tmp_path / "run" / "calibrator")
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "run", base / "data")
    # the sections as overrides: the resume line must carry them
    overrides = [f"{stage}.{k}={v}" for k, v in _section(stage).items()]
    sdir = tmp_path / "run" / stage
    proc = subprocess.Popen(
        carseg_cmd(f"train-{stage}", recipe, *overrides, "-q"),
        cwd=REPO,
        env=carseg_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_step(proc, sdir / "metrics.jsonl", target, why)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], (why, err)
    assert out == "" and "Traceback" not in err, why
    (line,) = err.strip().splitlines()
    m = re.fullmatch(r"carseg: interrupted at step (\d+); resume with (.*)", line)
    assert m, (why, line)
    stopped = int(m.group(1))
    assert target <= stopped < steps, (why, line)
    command = shlex.split(m.group(2))
    assert command == ["carseg", f"train-{stage}", str(recipe), *overrides, "--resume"], why

    # what the stop leaves: a resumable checkpoint at that very step, the log up to it
    assert not (sdir / "manifest.json").exists() and not (sdir / "model.safetensors").exists()
    _, meta = read_safetensors(sdir / "last.safetensors", "training state", "")
    assert json.loads(meta["info"])["step"] == stopped, why
    assert [r["step"] for r in _records(sdir / "metrics.jsonl")] == list(range(1, stopped + 1))
    assert not list(sdir.glob("*.tmp")) and not list(sdir.glob(".*.tmp")), why

    # the printed command, as it is (in this process: it saves importing torch again)
    resumed = CliRunner().invoke(app, [*command[1:], "-q"])
    assert resumed.exit_code == 0, f"{why}\n{resumed.output}"
    ref = straight[stage]
    assert _records(sdir / "metrics.jsonl") == _records(ref / "metrics.jsonl"), why
    names = {"model.safetensors", "best.safetensors", "last.safetensors"}
    if stage == "refiner":
        names.add("discriminator.safetensors")
    for name in sorted(names):
        a, b = load_file(str(sdir / name)), load_file(str(ref / name))
        assert a.keys() == b.keys(), (why, name)
        for k in a:  # weights, and in last.safetensors the optimiser and RNG states
            assert torch.equal(a[k], b[k]), (why, name, k)


def test_time_based_checkpoint(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`checkpoint_minutes`: a checkpoint whenever that long has passed since the last one,
    besides every `checkpoint_every` steps; 0 turns it off. (A fake clock: 1 minute a step.)"""
    import carcli.training.loop as loop_mod
    from carcli.training.stage import TrainingStage

    saved: list[int] = []
    real_save = TrainingStage.save

    def save(self, parts, info):  # noqa: ANN001
        saved.append(info["step"])
        real_save(self, parts, info)

    class Clock:
        now = 0.0

        @classmethod
        def monotonic(cls) -> float:
            return cls.now

    monkeypatch.setattr(TrainingStage, "save", save)
    monkeypatch.setattr(loop_mod, "time", Clock)
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "run", base / "data")

    real_shard = distributed.shard

    def shard(batch):  # noqa: ANN001, ANN202 (called once a step: the clock moves a minute)
        Clock.now += 60.0
        return real_shard(batch)

    monkeypatch.setattr(distributed, "shard", shard)

    def train(minutes: float, run: str) -> list[int]:
        saved.clear()
        sec = {"steps": 10, "checkpoint_every": 4, "checkpoint_minutes": minutes, "val_every": 0}
        over = [f"run_dir={tmp_path / run}", *(f"calibrator.{k}={v}" for k, v in sec.items())]
        run_train_calibrator(load_recipe(recipe, over), quiet=True)
        return list(saved)

    assert train(0, "off") == [4, 8, 10]
    # 2.5 minutes at a minute a step: steps 3, 4 (checkpoint_every), then 7, 8, 10
    assert train(2.5, "on") == [3, 4, 7, 8, 10]


def test_a_second_signal_aborts_at_once() -> None:
    """The first SIGINT / SIGTERM is remembered for the loop; a second raises at once."""
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        _deliver()
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            _deliver()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    assert exit_status(signal.SIGINT) == 130 and exit_status(signal.SIGTERM) == 143


def test_stops_at_once_names_what_was_kept() -> None:
    from carcli.runtime.interrupt import Interrupted

    with pytest.raises(Interrupted) as info, stops_at_once("kept; run it again"):
        os.kill(os.getpid(), signal.SIGTERM)
        _deliver()
    assert info.value.exit_status == 143 and info.value.message == "kept; run it again"
    with pytest.raises(Interrupted) as info, stops_at_once("kept"):
        raise KeyboardInterrupt
    assert info.value.exit_status == 130


def _deliver() -> None:
    """Give Python a chance to run a pending signal handler (between bytecodes)."""
    for _ in range(1000):
        time.sleep(0)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(x) for x in text]
    return kids


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds workers via /proc")
def test_torchrun_ranks_agree_on_the_stop_step(base: Path, tmp_path: Path) -> None:
    """Under torchrun, SIGTERM reaching rank 1 alone still stops both ranks at the same
    step (an all-reduce of the stop request each step); rank 0 writes the checkpoint and its
    line; one process then resumes it to the final step."""
    steps = 200
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "run", base / "data")
    over = [f"calibrator.steps={steps}", f"calibrator.checkpoint_every={steps}"]
    env = {**carseg_env(), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    cmd += ["2", "-m", "carcli", "train-calibrator", str(recipe), *over, "-q"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sdir = tmp_path / "run" / "calibrator"
    _wait_for_step(proc, sdir / "metrics.jsonl", 5, "torchrun")
    ranks = {_rank_of(p): p for p in _children(proc.pid)}
    assert set(ranks) >= {0, 1}, ranks
    os.kill(ranks[1], signal.SIGTERM)
    _, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode != 0, err
    m = re.search(r"carseg: interrupted at step (\d+); resume with (.*)", err)
    assert m and err.count("carseg: interrupted") == 1, err[-3000:]  # rank 0 speaks
    stopped = int(m.group(1))
    assert 5 <= stopped < steps
    _, meta = read_safetensors(sdir / "last.safetensors", "training state", "")
    assert json.loads(meta["info"])["step"] == stopped
    assert [r["step"] for r in _records(sdir / "metrics.jsonl")] == list(range(1, stopped + 1))
    assert not (sdir / "manifest.json").exists()
    command = shlex.split(m.group(2))
    resumed = CliRunner().invoke(app, [*command[1:], "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert [r["step"] for r in _records(sdir / "metrics.jsonl")] == list(range(1, steps + 1))


def test_sample_sigterm_keeps_chunks_and_says_how_to_continue(base: Path, tmp_path: Path):
    """`sample` sent SIGTERM after a chunk: exit 143, one line naming the kept chunks and the
    command that continues; that command reuses them and writes the bank."""
    shutil.copytree(base / "run" / "calibrator", tmp_path / "run" / "calibrator")
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "run", base / "data")
    run_train_refiner(load_recipe(recipe), quiet=True)
    over = ["sample.chunk_size=2", "sample.batch_size=1", "sample.num_samples=40"]
    proc = subprocess.Popen(
        carseg_cmd("sample", recipe, *over, "-q"),
        cwd=REPO,
        env=carseg_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    partial = tmp_path / "run" / "samples" / ".test.partial"
    t0 = time.monotonic()
    while not list(partial.glob("chunk-*.h5")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() - t0 < DEADLINE_S, "no chunk written"
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 143, err
    (line,) = err.strip().splitlines()
    m = re.fullmatch(
        rf"carseg: interrupted; the finished chunks are kept in {re.escape(str(partial))} "
        r"and `(.*)` continues from them",
        line,
    )
    assert m, line
    command = shlex.split(m.group(1))
    assert command == ["carseg", "sample", str(recipe), *over]
    kept = len(list(partial.glob("chunk-*.h5")))
    again = CliRunner().invoke(app, [*command[1:], "-q"])
    assert again.exit_code == 0, again.output
    manifest = json.loads((tmp_path / "run" / "samples" / "manifest.json").read_text())
    assert manifest["chunks_reused"] == kept >= 1
