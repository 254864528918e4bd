"""Multi-process runs on CPU: 2-process gloo jobs under torchrun (`python -m
torch.distributed.run`), as a user would start them, plus unit checks of the helpers.

The torchrun jobs: train-refiner writes a valid checkpoint and exactly one manifest, consumes
the same data stream as one process (the global batch), resumes with one process, and stops
every rank at once when rank 0 refuses to start; a 2-process `sample` writes the bank that one
process writes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY as conftest_TINY
from conftest import tiny_overrides

from carcli import distributed
from carcli.artefacts.checkpoint import read_safetensors
from carcli.data.batches import Batch
from carcli.errors import CarsegError
from carcli.recipe.load import load_recipe
from carcli.runtime.device import select_device
from carcli.runtime.speed import accelerate, notes, settings
from carcli.stages.prepare import run_prepare
from carcli.stages.sample import run_sample
from carcli.training.calibrator import run_train_calibrator
from carcli.training.refiner import run_train_refiner

REPO = Path(__file__).resolve().parents[1]
TINY = [
    *conftest_TINY,  # the shared tiny run, with these settings of the distributed tests
    "calibrator.steps=2",
    "calibrator.val_every=0",
    "refiner.batch_size=4",
]


def overrides(tmp: Path, run: str = "run", *extra: str) -> list[str]:
    return tiny_overrides(tmp, *extra, base=TINY, run=run)


def torchrun(tmp: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    env.pop("CARSEG_DEBUG", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(nproc), "-m", "carcli", *args, "--quiet"]
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0 and len(proc.stderr) > 6000:  # a rank's own error comes first
        proc.stderr = proc.stderr[:3000] + "\n[...]\n" + proc.stderr[-3000:]
    return proc


def state_info(path: Path) -> dict:
    _, meta = read_safetensors(path, "training state", "")
    return json.loads(meta["info"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Dataset and F (one process, in this process)."""
    tmp = tmp_path_factory.mktemp("dist")
    r = load_recipe(REPO / "recipes" / "toy.yaml", overrides(tmp))
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    return tmp


def test_two_process_refiner_writes_one_checkpoint_and_resumes_with_one(trained):
    tmp = trained
    proc = torchrun(tmp, "train-refiner", "recipes/toy.yaml", *overrides(tmp))
    assert proc.returncode == 0, proc.stderr  # head and tail (torchrun)
    folder = tmp / "run" / "refiner"
    assert {p.name for p in folder.iterdir()} == {
        "model.safetensors",
        "discriminator.safetensors",
        "coupling.safetensors",  # the toy recipe's region coupling head, written by rank 0
        "best.safetensors",
        "last.safetensors",
        "metrics.jsonl",
        "recipe.yaml",
        "manifest.json",
    }
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["distributed"] == {
        "world_size": 2,
        "backend": "gloo",
        "batch_size_global": 4,
        "batch_size_per_rank": 2,
    }
    steps = [
        json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4]  # one writer
    tensors, meta = read_safetensors(folder / "model.safetensors", "refiner", "")
    assert tensors and all(torch.isfinite(t).all() for t in tensors.values())

    # The global batch: 2 ranks consumed the same data stream as 1 process would.
    one = load_recipe(REPO / "recipes" / "toy.yaml", overrides(tmp, "one"))
    shutil.copytree(tmp / "run" / "calibrator", tmp / "one" / "calibrator")
    run_train_refiner(one, quiet=True)
    assert (
        state_info(folder / "last.safetensors")["rng"]
        == state_info(tmp / "one" / "refiner" / "last.safetensors")["rng"]
    )

    # Resume the 2-process run with 1 process, to a higher step count.
    more = load_recipe(REPO / "recipes" / "toy.yaml", overrides(tmp, "run", "refiner.steps=6"))
    run_train_refiner(more, resume=True, quiet=True)
    steps = [
        json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((folder / "manifest.json").read_text())["distributed"]["world_size"] == 1

    # Rank 0 refuses (already trained): every rank stops with the message, none hangs.
    proc = torchrun(tmp, "train-refiner", "recipes/toy.yaml", *overrides(tmp))
    assert proc.returncode != 0
    assert "already trained" in proc.stderr  # (rank 1 says "rank 0 stopped: ..." too)


def test_two_process_sample_writes_the_one_process_bank(trained):
    tmp = trained
    one = load_recipe(REPO / "recipes" / "toy.yaml", overrides(tmp, "s1"))
    shutil.copytree(tmp / "run" / "calibrator", tmp / "s1" / "calibrator")
    run_train_refiner(one, quiet=True)
    run_sample(one, quiet=True)
    for stage in ("calibrator", "refiner"):
        shutil.copytree(tmp / "s1" / stage, tmp / "s2" / stage)
    proc = torchrun(tmp, "sample", "recipes/toy.yaml", *overrides(tmp, "s2"))
    assert proc.returncode == 0, proc.stderr  # head and tail (torchrun)
    samples = tmp / "s2" / "samples"
    assert {p.name for p in samples.iterdir()} == {"test.h5", "manifest.json"}
    assert json.loads((samples / "manifest.json").read_text())["world_size"] == 2
    with h5py.File(tmp / "s1" / "samples" / "test.h5") as a, h5py.File(samples / "test.h5") as b:
        assert set(a) == set(b)
        for name in a:
            np.testing.assert_array_equal(a[name][...], b[name][...])
        for key in ("num_samples", "seed", "calibrator_sha256", "refiner_sha256", "schema"):
            assert a.attrs[key] == b.attrs[key]


# --- helpers, one process -------------------------------------------------------------------


def test_one_process_needs_no_process_group(tmp_path):
    r = load_recipe(REPO / "recipes" / "toy.yaml", overrides(tmp_path))
    with distributed.session(r) as dist:
        assert (dist.rank, dist.world, dist.active, dist.main) == (0, 1, False, True)
        assert distributed.from_main(lambda: 7) == 7
        assert distributed.mean_figures({"a": 1.0}) == {"a": 1.0}
        distributed.barrier()
    assert not torch.distributed.is_initialized()


def test_shard_takes_rows_rank_step_world(monkeypatch):
    batch = Batch(torch.arange(6), torch.arange(6) + 10, torch.arange(6) + 20, None)
    monkeypatch.setattr(distributed, "_current", distributed.Dist(1, 2, 1, "gloo"))
    part = distributed.shard(batch)
    assert part.image.tolist() == [1, 3, 5] and part.label.tolist() == [21, 23, 25]
    assert part.soft is None
    with pytest.raises(CarsegError, match="multiple of 2"):
        distributed.check_batch(5, "refiner.batch_size")


def test_rank_seeds_keep_rank_zero_and_differ_by_rank():
    assert distributed.rank_seed(3, 0) == 3
    assert len({distributed.rank_seed(3, r, s) for r in range(4) for s in (0, 10)}) == 8


def test_env_and_device_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.env_world() == (1, 2, 1)
    with pytest.raises(CarsegError, match="every rank on one GPU"):
        select_device("cuda:0")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(CarsegError, match="does not fit"):
        distributed.env_world()


def test_speed_options_are_harmless_on_cpu(tmp_path):
    r = load_recipe(
        REPO / "recipes" / "toy.yaml",
        overrides(tmp_path, "run", "speed.amp=bf16", "speed.channels_last=true"),
    )
    cpu = torch.device("cpu")
    assert settings(r, cpu, 1)["amp"] == "off"
    assert any("ignored on cpu" in n for n in notes(r, cpu))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4)).eval()
    x = torch.randn(2, 3, 8, 8)
    want = net(x)
    call = accelerate(net, r, cpu)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(call(x), want)
    assert call.parameters().__next__() is net[0].weight  # the saved network is trained
