"""`carseg predict` and the Python API on a tiny trained toy model: the output layout,
predictions.h5, seeding, padding, the API example of docs/using-a-model.md, and consistency
with `sample`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from predict_fixtures import REPO, split_images, trained, write_inputs, write_recipe
from typer.testing import CliRunner

from carcli.cli.app import app

__all__ = ["trained"]  # the session fixture, imported for pytest
runner = CliRunner()

PER_INPUT = {
    "samples",
    "probabilities.npy",
    "uncertainty.npy",
    "uncertainty.png",
    "proposals.json",
    "overview.png",
    "prediction.json",
}


def predict(*args: str | Path) -> None:
    res = runner.invoke(app, ["predict", *map(str, args), "-q"])
    assert res.exit_code == 0, res.output


def test_output_layout_and_predictions_h5(trained, tmp_path):
    tmp, _, bundle = trained
    inputs = write_inputs(tmp, tmp_path / "in", n=2)
    out = tmp_path / "out"
    predict(bundle, inputs, "--out", out, "--num-samples", 4, "--seed", 3)
    names = ["arr0", "arr1", "img0", "img1"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "predictions.h5"])
    k = 3
    for name in names:
        d = out / name
        assert {p.name for p in d.iterdir()} == PER_INPUT
        assert sorted(p.name for p in (d / "samples").iterdir()) == [
            f"{i:03d}.png" for i in range(4)
        ]
        im = Image.open(d / "samples" / "000.png")
        assert im.mode == "P" and im.size == (16, 16)
        assert np.asarray(im).max() < k
        probs = np.load(d / "probabilities.npy")
        assert probs.dtype == np.float16 and probs.shape == (k, 16, 16)
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1, atol=5e-3)
        ent = np.load(d / "uncertainty.npy")
        assert ent.shape == (16, 16) and (ent >= -1e-4).all() and (ent <= np.log(k) + 1e-3).all()
        props = json.loads((d / "proposals.json").read_text())["proposals"]
        assert abs(sum(p["frequency"] for p in props) - 1) < 1e-9
        assert [p["count"] for p in props] == sorted((p["count"] for p in props), reverse=True)
        rec = json.loads((d / "prediction.json").read_text())
        assert rec["num_samples"] == 4 and rec["seed"] == 3 and rec["size"] == [16, 16]
        model = json.loads((bundle / "model.json").read_text())
        assert rec["bundle"]["refiner_sha256"] == model["refiner"]["sha256"]
    with h5py.File(out / "predictions.h5", "r") as h5:
        assert h5.attrs["schema"] == "carseg.predictions/1"
        assert h5["samples"].shape == (4, 4, 16, 16) and h5["samples"].dtype == np.uint8
        assert h5["probabilities"].dtype == np.float16 and h5["entropy"].dtype == np.float16
        got = [n.decode() for n in h5["names"][...]]
        i = got.index("arr1")
        smp = np.stack(
            [np.asarray(Image.open(out / "arr1" / "samples" / f"{j:03d}.png")) for j in range(4)]
        )
        np.testing.assert_array_equal(h5["samples"][i], smp)


def test_same_seed_same_samples_whatever_batch_or_order(trained):
    from carcli import load_model

    tmp, _, bundle = trained
    x = split_images(tmp)
    model = load_model(bundle)
    a = model.predict(x, num_samples=6, seed=1, batch_size=1)
    b = model.predict(x[::-1].copy(), num_samples=6, seed=1, batch_size=4)
    np.testing.assert_array_equal(a.samples, b.samples[::-1])
    # F's float16 probabilities may differ by one float16 step: CPU convolution kernels round
    # differently for different batch sizes
    np.testing.assert_allclose(a.probabilities, b.probabilities[::-1], atol=1e-3)
    c = model.predict(x, num_samples=6, seed=2)
    assert c.samples.shape == a.samples.shape


def test_any_size_is_padded_and_cropped_back(trained, tmp_path):
    from carcli import load_model

    tmp, _, bundle = trained
    model = load_model(bundle)
    rng = np.random.default_rng(0)
    odd = [rng.standard_normal((3, 13, 19)).astype(np.float32), split_images(tmp)[0]]
    pred = model.predict(odd, num_samples=3)
    assert isinstance(pred.samples, list)  # two sizes: lists, not stacked
    assert pred.samples[0].shape == (3, 13, 19) and pred.probabilities[0].shape == (3, 13, 19)
    assert pred.entropy[1].shape == (16, 16)
    pred.save(tmp_path / "o")
    with h5py.File(tmp_path / "o" / "predictions.h5", "r") as h5:
        assert h5["size"][...].tolist() == [[13, 19], [16, 16]]
        assert h5["samples"].shape == (2, 3, 16, 19)
        assert (h5["samples"][0, :, 13:, :] == 255).all()


def test_readme_snippet_runs_verbatim(trained, monkeypatch, tmp_path):
    tmp, _, bundle = trained
    readme = (REPO / "docs" / "using-a-model.md").read_text(encoding="utf-8")
    section = readme.split("## The Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    # the snippet's paths: runs/toy/bundle and a folder of PNGs, made here in a scratch cwd
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "toy").mkdir(parents=True)
    shutil.copytree(bundle, tmp_path / "runs" / "toy" / "bundle")
    write_inputs(tmp, tmp_path / "runs" / "toy" / "demo_images", n=2, png=True)
    ns: dict = {}
    exec(compile(code, "using-a-model.md", "exec"), ns)  # noqa: S102 - our own docs, in a test
    pred = ns["pred"]
    assert pred.samples.shape[1] == 16


def test_predict_from_a_recipe_equals_the_bundle(trained, tmp_path):
    from carcli import load_model

    tmp, _, bundle = trained
    x = split_images(tmp)[:2]
    a = load_model(bundle).predict(x, num_samples=4)
    b = load_model(write_recipe(tmp)).predict(x, num_samples=4)
    np.testing.assert_array_equal(a.samples, b.samples)


def test_rerun_keeps_complete_folders(trained, tmp_path):
    tmp, _, bundle = trained
    inputs = write_inputs(tmp, tmp_path / "in", n=2, png=False)
    out = tmp_path / "out"
    predict(bundle, inputs, "--out", out, "--num-samples", 3)
    stamp = (out / "arr0" / "prediction.json").stat().st_mtime_ns
    shutil.rmtree(out / "arr1")
    res = runner.invoke(
        app, ["predict", str(bundle), str(inputs), "--out", str(out), "--num-samples", "3"]
    )
    assert res.exit_code == 0 and "1 kept from an earlier run" in res.output
    assert (out / "arr0" / "prediction.json").stat().st_mtime_ns == stamp
    assert (out / "arr1" / "prediction.json").exists()
    # another N: the old folders are not silently mixed in
    res = runner.invoke(app, ["predict", str(bundle), str(inputs), "--out", str(out), "-q"])
    assert res.exit_code == 1 and "--overwrite" in res.stderr


def test_interrupt_keeps_finished_inputs_and_says_so(trained, tmp_path, monkeypatch):
    """Ctrl-C after the first input's folder: exit 130, one line saying what was kept and
    that the same command continues; the same command then predicts only the others."""
    from carcli.predict import outputs

    tmp, _, bundle = trained
    inputs = write_inputs(tmp, tmp_path / "in", n=3, png=False)
    out = tmp_path / "out"
    real, written = outputs.write_folder, []

    def write_folder(*args, **kwargs):
        if written:
            raise KeyboardInterrupt
        written.append(real(*args, **kwargs))
        return written[-1]

    monkeypatch.setattr(outputs, "write_folder", write_folder)
    args = ["predict", str(bundle), str(inputs), "--out", str(out), "--num-samples", "3"]
    res = runner.invoke(app, [*args, "-q"])
    monkeypatch.undo()
    assert res.exit_code == 130, res.output
    assert res.stderr.strip() == (
        f"carseg: interrupted; every input finished so far is kept in {out} (one folder "
        "each) and the same command continues with the others"
    )
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["arr0"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "1 kept from an earlier run" in res.output, res.output


def test_same_stems_get_unique_folders(trained, tmp_path):
    tmp, _, bundle = trained
    a = write_inputs(tmp, tmp_path / "a", n=1, png=False)
    b = write_inputs(tmp, tmp_path / "b", n=1, png=False)
    out = tmp_path / "out"
    predict(bundle, a / "arr0.npy", b / "arr0.npy", "--out", out, "--num-samples", 2)
    assert {p.name for p in out.iterdir()} == {"arr0", "arr0-2", "predictions.h5"}


def test_predict_on_the_split_reproduces_sample(trained):
    """The same samples as `sample`: an HDF5 row is seeded by its row index as `sample` does."""
    from carcli import load_model
    from carcli.stages.sample import run_sample

    tmp, r, bundle = trained
    bank = run_sample(r, quiet=True, overwrite=True)
    split = tmp / "data" / "test.h5"
    bsz = r.sample.batch_size  # the same batches: F's float16 probabilities bit for bit too
    pred = load_model(bundle).predict([split], num_samples=8, seed=r.seed, batch_size=bsz)
    with h5py.File(bank, "r") as h5:
        np.testing.assert_array_equal(pred.samples, h5["samples"][...])
        np.testing.assert_array_equal(pred.probabilities, h5["calibration"][...])


def test_npy_files_give_the_same_distribution_as_sample(trained, tmp_path):
    """Files are seeded by their sha256, so the samples differ from the bank's, but their
    per-pixel class frequencies agree within sampling error and GED within 0.005."""
    from carcli import load_model
    from carcli.metrics.ged import ged

    tmp, r, bundle = trained
    m = 64
    model = load_model(bundle)
    x = split_images(tmp)
    by_row = model.predict([tmp / "data" / "test.h5"], num_samples=m, seed=0)
    files = write_inputs(tmp, tmp_path / "in", n=len(x), png=False)
    by_file = model.predict(sorted(files.glob("*.npy")), num_samples=m, seed=0)
    k = 3
    with h5py.File(tmp / "data" / "test.h5", "r") as h5:
        labels, weights = h5["label"][...], h5["label_weight"][...]
    for i in range(len(x)):
        fa = np.stack([(by_row.samples[i] == c).mean(0) for c in range(k)])
        fb = np.stack([(by_file.samples[i] == c).mean(0) for c in range(k)])
        # two independent frequencies of m draws: |difference| <= 5 sigma of p(1-p)(2/m)
        p = (fa + fb) / 2
        assert (np.abs(fa - fb) <= 5 * np.sqrt(p * (1 - p) * 2 / m) + 1e-9).all()
    ga = np.mean(
        [ged(by_row.samples[i], labels[i], weights[i], num_classes=k) for i in range(len(x))]
    )
    gb = np.mean(
        [ged(by_file.samples[i], labels[i], weights[i], num_classes=k) for i in range(len(x))]
    )
    assert abs(ga - gb) <= 0.005, (ga, gb)
