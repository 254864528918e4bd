"""End to end: every stage on a tiny synthetic dataset, the exact files each stage writes,
resume equivalence, and a bank that is independent of chunking."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY, tiny_overrides
from safetensors.torch import load_file

from carcli.errors import CarsegError
from carcli.recipe.load import load_recipe
from carcli.stages.evaluate import run_evaluate
from carcli.stages.prepare import run_prepare
from carcli.stages.sample import run_sample
from carcli.training.calibrator import run_train_calibrator
from carcli.training.refiner import run_train_refiner


def tiny_recipe(tmp: Path, *extra: str):
    return load_recipe("recipes/toy.yaml", tiny_overrides(tmp, *extra))


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chain")
    r = tiny_recipe(tmp)
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    run_sample(r, quiet=True)
    metrics = run_evaluate(r, quiet=True)
    return tmp, r, metrics


def test_every_stage_writes_exactly_its_files(chain):
    tmp, r, _ = chain
    assert files(tmp / "data") == {"train.h5", "val.h5", "test.h5", "manifest.json"}
    run = tmp / "run"
    assert files(run / "calibrator") == {
        "model.safetensors",
        "best.safetensors",
        "last.safetensors",
        "metrics.jsonl",
        "recipe.yaml",
        "manifest.json",
    }
    assert files(run / "refiner") == {
        "model.safetensors",
        "discriminator.safetensors",
        "coupling.safetensors",  # the region coupling head (refiner.coupling_steps)
        "best.safetensors",
        "last.safetensors",
        "metrics.jsonl",
        "recipe.yaml",
        "manifest.json",
    }
    assert files(run / "samples") == {"test.h5", "manifest.json"}
    assert files(run / "eval" / "test") == {"metrics.json", "per_case.csv", "manifest.json"}


def test_manifests_record_inputs_and_environment(chain):
    tmp, r, _ = chain
    m = json.loads((tmp / "run" / "refiner" / "manifest.json").read_text())
    assert m["stage"] == "refiner" and m["seed"] == r.seed
    assert str(tmp / "run" / "calibrator" / "model.safetensors") in m["inputs"]
    assert all(len(h) == 64 for h in m["inputs"].values())
    assert m["recipe"]["refiner"]["steps"] == 4 and m["torch_version"] and m["wall_time_s"] >= 0
    log = [
        json.loads(x)
        for x in (tmp / "run" / "refiner" / "metrics.jsonl").read_text().split("\n")
        if x
    ]
    assert [x["step"] for x in log] == [1, 2, 3, 4]
    assert "val_ged16" in log[1] and "loss_cal" in log[0]


def test_bank_schema(chain):
    tmp, r, _ = chain
    with h5py.File(tmp / "run" / "samples" / "test.h5") as h5:
        assert h5.attrs["schema"] == "carseg.samples/1"
        assert h5["samples"].shape == (6, 5, 16, 16) and h5["samples"].dtype == np.uint8
        assert h5["calibration"].shape == (6, 3, 16, 16) and h5["calibration"].dtype == np.float16
        assert list(h5["index"][...]) == list(range(6))
        assert h5["samples"][...].max() < 3
        p = h5["calibration"][...].astype(np.float32)
        assert np.allclose(p.sum(1), 1, atol=1e-2)
        for key in (
            "dataset",
            "split",
            "num_samples",
            "seed",
            "calibrator_sha256",
            "refiner_sha256",
            "recipe",
            "carseg_version",
        ):
            assert key in h5.attrs


def test_metrics_json(chain):
    tmp, r, metrics = chain
    m = json.loads((tmp / "run" / "eval" / "test" / "metrics.json").read_text())
    assert m == json.loads(json.dumps(metrics))
    assert m["schema"] == "carseg.metrics/1" and m["n_images"] == 6 and m["num_samples"] == 5
    # d in [0, 1], so GED = 2 E d(s, y) - E d(s, s') - E d(y, y') lies in [-1, 2]; a squared
    # distance's GED is >= 0, and these tiny models stay far from the labels (up to ~1.7)
    assert set(m["ged"]) == {"2", "5"} and 0 <= m["ged"]["5"] <= 2
    assert 0 <= m["hm_iou"] <= 1 and 0 <= m["ece"] <= 1
    assert "tv" in m["modes"] and "16" not in m["ged"]
    rows = (tmp / "run" / "eval" / "test" / "per_case.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("index,")


def test_fail_if_gates(chain):
    tmp, r, _ = chain
    with pytest.raises(CarsegError, match="threshold crossed"):
        run_evaluate(r, fail_if=["ged.5>-1"], overwrite=True, quiet=True)
    run_evaluate(r, fail_if=["ged.5>2", "hm_iou<-1"], overwrite=True, quiet=True)
    with pytest.raises(CarsegError, match="no 'ged.99'"):
        run_evaluate(r, fail_if=["ged.99>0"], overwrite=True, quiet=True)


def test_stages_refuse_to_overwrite(chain):
    tmp, r, _ = chain
    with pytest.raises(CarsegError, match="--overwrite"):
        run_train_calibrator(r, quiet=True)
    with pytest.raises(CarsegError, match="--overwrite"):
        run_sample(r, quiet=True)
    with pytest.raises(CarsegError, match="--overwrite"):
        run_evaluate(r, quiet=True)


def test_sample_bank_independent_of_chunking_and_resumes(chain):
    tmp, r, _ = chain
    bank = tmp / "run" / "samples" / "test.h5"
    with h5py.File(bank) as h5:
        ref = h5["samples"][...]
    r2 = tiny_recipe(tmp, "sample.chunk_size=2", "sample.batch_size=1")
    run_sample(r2, overwrite=True, quiet=True)
    with h5py.File(bank) as h5:
        assert np.array_equal(h5["samples"][...], ref)
    # An interrupted --overwrite keeps the old bank and the finished chunks; the next run
    # reuses them.
    partial = tmp / "run" / "samples" / ".test.partial"
    r3 = tiny_recipe(tmp, "sample.chunk_size=2")
    import carcli.sampling.chunks as chunks_mod

    calls = []
    original = chunks_mod._write_chunk

    def failing(path, *a, **k):
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(path, *a, **k)

    chunks_mod._write_chunk = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sample(r3, overwrite=True, quiet=True)
    finally:
        chunks_mod._write_chunk = original
    assert bank.exists() and (partial / "chunk-00000000.h5").exists()
    calls.clear()
    chunks_mod._write_chunk = lambda path, *a, **k: (
        calls.append(path.name),
        original(path, *a, **k),
    )
    try:
        run_sample(r3, overwrite=True, quiet=True)
    finally:
        chunks_mod._write_chunk = original
    assert calls == ["chunk-00000002.h5", "chunk-00000004.h5"]
    with h5py.File(bank) as h5:
        assert np.array_equal(h5["samples"][...], ref)
    assert not partial.exists()


@pytest.mark.parametrize("stage", ["calibrator", "refiner"])
def test_resume_equals_uninterrupted(tmp_path, stage):
    straight, split = tmp_path / "a", tmp_path / "b"
    runs = {}
    for root, steps in ((straight, [4]), (split, [2, 4])):
        r = tiny_recipe(root)
        run_prepare(r, quiet=True)
        if stage == "refiner":
            run_train_calibrator(r, quiet=True)
        for i, n in enumerate(steps):
            rr = tiny_recipe(root, f"{stage}.steps={n}")
            fn = run_train_calibrator if stage == "calibrator" else run_train_refiner
            fn(rr, resume=i > 0, quiet=True)
        runs[root] = load_file(str(root / "run" / stage / "model.safetensors"))
    a, b = runs[straight], runs[split]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = (split / "run" / stage / "metrics.jsonl").read_text().split("\n")
    assert [json.loads(x)["step"] for x in log if x] == [1, 2, 3, 4]


def test_resume_without_state_fails(tmp_path):
    r = tiny_recipe(tmp_path)
    with pytest.raises(CarsegError, match="nothing to resume"):
        run_train_calibrator(r, resume=True, quiet=True)


def test_refiner_needs_calibrator(tmp_path):
    r = tiny_recipe(tmp_path)
    run_prepare(r, quiet=True)
    with pytest.raises(CarsegError, match="carseg train-calibrator"):
        run_train_refiner(r, quiet=True)


def test_other_dataset_shape_only_data_dir_changes(tmp_path):
    """A 48x64, 1-channel, 5-class dataset works with the same recipe (channels and classes
    come from the file)."""
    from carcli.data.dataset import Classes, write_dataset

    rng = np.random.default_rng(0)
    data = tmp_path / "other"
    for split, n in (("train", 12), ("val", 4), ("test", 3)):
        lab = rng.integers(0, 5, size=(n, 2, 48, 64)).astype(np.uint8)
        write_dataset(
            data / f"{split}.h5",
            image=rng.normal(size=(n, 1, 48, 64)).astype(np.float32),
            label=lab,
            classes=Classes(5, class_names=list("abcde")),
        )
    r = load_recipe(
        "recipes/toy.yaml",
        [f"run_dir={tmp_path / 'run'}", f"data.dir={data}", *TINY, "data.source=prepared"],
    )
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    run_sample(r, quiet=True)
    m = run_evaluate(r, quiet=True)
    assert m["n_images"] == 3 and m["known_distribution"] is False
    assert not m.get("modes")
