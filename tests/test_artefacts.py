"""Run artefacts: atomic writes, overwrite refusal, stage locks, manifests and checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import carcli
from carcli.artefacts.checkpoint import (
    SCHEMA,
    load_training_state,
    load_weights,
    save_training_state,
    save_weights,
)
from carcli.artefacts.run import (
    Manifest,
    RunLayout,
    atomic_path,
    check_not_finished,
    clear_stage_dir,
    sha256_file,
    stage_lock,
    write_json_atomic,
    write_text_atomic,
)
from carcli.errors import CarsegError

MAKE = "carseg train-calibrator recipes/toy.yaml"


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------ atomic writes


def test_atomic_path_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("one")
        assert not target.exists()  # nothing visible before the rename
    assert target.read_text() == "one"
    with atomic_path(target) as tmp:
        tmp.write_text("two")
    assert target.read_text() == "two"
    assert _names(target.parent) == ["out.txt"]


def test_atomic_path_leaves_nothing_on_exception(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ValueError("interrupted")
    assert _names(tmp_path) == []
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["out.txt"]


def test_atomic_path_requires_a_written_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.txt"):
        pass
    assert _names(tmp_path) == []


def test_write_text_and_json_atomic(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    obj = {"x": [1, 2.5, None], "y": {"z": "w"}}
    write_json_atomic(tmp_path / "b" / "c.json", obj)
    assert json.loads((tmp_path / "b" / "c.json").read_text()) == obj
    assert _names(tmp_path) == ["a.txt", "b"]


def test_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(3000)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=1024) == hashlib.sha256(data).hexdigest()


def test_run_layout(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    assert layout.calibrator == tmp_path / "calibrator"
    assert layout.refiner == tmp_path / "refiner"
    assert layout.bank("val") == tmp_path / "samples" / "val.h5"
    assert layout.eval_dir("test") == tmp_path / "eval" / "test"
    assert layout.plots_dir("test") == tmp_path / "plots" / "test"


# ---------------------------------------------------------------------------- finished work


def test_check_not_finished(tmp_path: Path) -> None:
    marker = tmp_path / "manifest.json"
    check_not_finished(marker, "the calibrator", overwrite=False)  # nothing there yet
    marker.write_text("{}")
    with pytest.raises(CarsegError) as info:
        check_not_finished(marker, "the calibrator", overwrite=False)
    assert str(marker) in str(info.value) and "the calibrator" in str(info.value)
    assert info.value.hint and "--overwrite" in info.value.hint
    check_not_finished(marker, "the calibrator", overwrite=True)


def test_clear_stage_dir_keeps_the_lock(tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text("{}")
    (tmp_path / "model.safetensors").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_text("y")
    clear_stage_dir(tmp_path)
    assert _names(tmp_path) == [".lock"]
    clear_stage_dir(tmp_path / "absent")


# ------------------------------------------------------------------------------ stage locks


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stage_lock_is_taken_and_released(tmp_path: Path) -> None:
    stage = tmp_path / "calibrator"
    with stage_lock(stage):
        held = json.loads((stage / ".lock").read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    assert not (stage / ".lock").exists()
    with pytest.raises(ValueError), stage_lock(stage):
        raise ValueError
    assert not (stage / ".lock").exists()


def test_stage_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    other = {"pid": os.getpid(), "host": socket.gethostname(), "since": 0.0}
    lock.write_text(json.dumps(other))
    with pytest.raises(CarsegError) as info, stage_lock(tmp_path):
        pytest.fail("a second holder got the lock")
    assert f"process {os.getpid()}" in str(info.value)
    assert info.value.hint and str(lock) in info.value.hint
    assert json.loads(lock.read_text()) == other  # the holder's lock is untouched


def test_stage_lock_refuses_while_held_in_this_process(tmp_path: Path) -> None:
    with stage_lock(tmp_path):
        with pytest.raises(CarsegError), stage_lock(tmp_path):
            pass
        assert (tmp_path / ".lock").exists()


def test_stage_lock_refuses_a_lock_from_another_host(tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere.invalid"}))
    with pytest.raises(CarsegError, match="elsewhere.invalid"), stage_lock(tmp_path):
        pass


def test_stage_lock_removes_a_stale_lock(tmp_path: Path) -> None:
    pid = _dead_pid()
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": 0.0}))
    with stage_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


# --------------------------------------------------------------------------------- manifest


def test_manifest_write(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["carseg", "prepare", "recipes/toy.yaml", "seed=3"])
    data = tmp_path / "train.h5"
    data.write_bytes(b"some dataset bytes")
    recipe = {"name": "toy", "seed": 3, "refiner": {"steps": 7}}
    m = Manifest("calibrator", recipe, seed=3, extra={"steps_done": 7})
    m.add_input(data)
    obj = m.write(tmp_path / "calibrator", ["model.safetensors"], device="cpu")
    on_disk = json.loads((tmp_path / "calibrator" / "manifest.json").read_text())
    assert on_disk == obj
    assert on_disk["schema"] == "carseg.manifest/1"
    assert on_disk["stage"] == "calibrator"
    assert on_disk["carseg_version"] == carcli.__version__
    assert on_disk["argv"] == ["carseg", "prepare", "recipes/toy.yaml", "seed=3"]
    assert on_disk["recipe"] == recipe
    assert on_disk["inputs"] == {str(data): hashlib.sha256(b"some dataset bytes").hexdigest()}
    assert on_disk["outputs"] == ["model.safetensors"]
    assert on_disk["seed"] == 3
    assert on_disk["torch_version"] == torch.__version__
    assert on_disk["device"] == "cpu"
    assert isinstance(on_disk["wall_time_s"], (int, float)) and on_disk["wall_time_s"] >= 0
    assert on_disk["steps_done"] == 7
    assert _names(tmp_path / "calibrator") == ["manifest.json"]


# ------------------------------------------------------------------------------ checkpoints


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.norm = torch.nn.BatchNorm1d(4)
        self.out = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.norm(self.lin(x))))


def _meta() -> dict[str, object]:
    return {
        "stage": "calibrator",
        "role": "calibrator",
        "arch": "mlp",
        "config": {"width": 4, "depths": [1, 2]},
        "step": 12,
        "recipe_sha": "ab12cd",
    }


def test_save_and_load_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Tiny()
    path = tmp_path / "calibrator" / "model.safetensors"
    save_weights(path, model, _meta())
    assert _names(path.parent) == ["model.safetensors"]
    tensors, meta = load_weights(path, stage="calibrator", make_cmd=MAKE)
    expected = model.state_dict()
    assert set(tensors) == set(expected)
    for key, value in expected.items():
        assert torch.equal(tensors[key], value), key
    assert meta["schema"] == SCHEMA and meta["carseg_version"] == carcli.__version__
    for key, value in _meta().items():
        assert meta[key] == value, key
    fresh = _Tiny()
    fresh.load_state_dict(tensors, strict=True)


def test_load_weights_refuses_another_stage(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_weights(path, _Tiny(), _meta())
    with pytest.raises(CarsegError) as info:
        load_weights(path, stage="refiner", make_cmd="carseg train-refiner x.yaml")
    assert "'calibrator'" in str(info.value) and "'refiner'" in str(info.value)
    assert "carseg train-refiner x.yaml" in str(info.value)


def test_load_weights_refuses_a_foreign_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))  # no carseg metadata
    with pytest.raises(CarsegError, match="schema"):
        load_weights(path, stage="calibrator", make_cmd=MAKE)


def test_load_weights_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CarsegError) as info:
        load_weights(tmp_path / "model.safetensors", stage="calibrator", make_cmd=MAKE)
    assert info.value.hint and MAKE in info.value.hint


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "header_only"])
def test_corrupt_safetensors(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "model.safetensors"
    save_weights(path, _Tiny(), _meta())
    data = path.read_bytes()
    broken = {
        "garbage": b"\x00not safetensors" * 8,
        "truncated": data[: len(data) - 16],
        "empty": b"",
        "header_only": data[:6],
    }[damage]
    path.write_bytes(broken)
    with pytest.raises(CarsegError) as info:
        load_weights(path, stage="calibrator", make_cmd=MAKE)
    assert str(path) in str(info.value) and MAKE in str(info.value)


def _train(
    model: torch.nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, steps: int
) -> None:
    model.train()
    for _ in range(steps):
        x = torch.randn(5, 3, generator=gen)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_training_state_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = _Tiny()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.5, 0.99), weight_decay=1e-3)
    gen = torch.Generator().manual_seed(7)
    _train(model, opt, gen, 3)
    path = tmp_path / "last.safetensors"
    info = {"step": 3, "best": 0.25, "numpy_rng": {"state": [1, 2, 3]}}
    save_training_state(
        path, models={"f": model}, optimizers={"f": opt}, generators={"data": gen}, info=info
    )
    global_state = torch.get_rng_state()
    assert _names(tmp_path) == ["last.safetensors"]

    torch.manual_seed(99)  # a fresh process: other weights, empty optimiser, other RNG
    model2 = _Tiny()
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.5)
    gen2 = torch.Generator().manual_seed(123)
    got = load_training_state(
        path, models={"f": model2}, optimizers={"f": opt2}, generators={"data": gen2}, make_cmd=MAKE
    )
    assert got == info
    for key, value in model.state_dict().items():
        assert torch.equal(model2.state_dict()[key], value), key
    assert torch.equal(gen2.get_state(), gen.get_state())
    assert torch.equal(torch.get_rng_state(), global_state)

    sd, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd2["state"].keys() == sd["state"].keys() and len(sd["state"]) == 6
    for pid, st in sd["state"].items():
        assert set(sd2["state"][pid]) == set(st)
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(torch.as_tensor(sd2["state"][pid][key]), torch.as_tensor(st[key])), (
                pid,
                key,
            )
    assert float(sd2["state"][0]["step"]) == 3
    g, g2 = sd["param_groups"][0], sd2["param_groups"][0]
    assert g2["lr"] == 1e-2 and tuple(g2["betas"]) == (0.5, 0.99)
    assert g2["weight_decay"] == 1e-3 and g2["params"] == g["params"]

    # continuing from the restored state matches continuing the original exactly
    _train(model, opt, gen, 2)
    _train(model2, opt2, gen2, 2)
    for key, value in model.state_dict().items():
        assert torch.equal(model2.state_dict()[key], value), key


def test_training_state_refuses_other_networks(tmp_path: Path) -> None:
    model = _Tiny()
    opt = torch.optim.Adam(model.parameters())
    path = tmp_path / "last.safetensors"
    save_training_state(
        path, models={"f": model}, optimizers={"f": opt}, generators={}, info={"step": 0}
    )
    other = torch.nn.Linear(3, 2)
    with pytest.raises(CarsegError, match="does not fit"):
        load_training_state(path, models={"f": other}, optimizers={}, generators={}, make_cmd=MAKE)


def test_training_state_is_not_a_weights_file(tmp_path: Path) -> None:
    model = _Tiny()
    path = tmp_path / "model.safetensors"
    save_weights(path, model, _meta())
    with pytest.raises(CarsegError, match="schema"):
        load_training_state(path, models={"f": model}, optimizers={}, generators={}, make_cmd=MAKE)
    (tmp_path / "last.safetensors").write_bytes(b"junk")
    with pytest.raises(CarsegError, match="not a readable safetensors"):
        load_training_state(
            tmp_path / "last.safetensors", models={}, optimizers={}, generators={}, make_cmd=MAKE
        )


def test_empty_lock_file_left_by_a_killed_process_is_stale(tmp_path):
    import os
    import time

    from carcli.artefacts.run import stage_lock

    lock = tmp_path / ".lock"
    lock.write_text("")
    old = time.time() - 60
    os.utime(lock, (old, old))
    with stage_lock(tmp_path):
        assert lock.exists()
    assert not lock.exists()
