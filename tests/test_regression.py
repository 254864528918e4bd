"""The 1D bimodal regression task: data, exact likelihoods, the regression path of every
stage (tiny settings), evaluation figures against hand-computed cases, and the plots."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from carcli.data.dataset import DatasetFile, write_dataset
from carcli.data.dataset_check import validate_dataset
from carcli.data.regression import (
    DENSITY_FLOOR,
    bimodal_mixture,
    generate_bimodal,
    mixture_log_likelihood,
    mixture_mean_y,
    mixture_prob_positive,
)
from carcli.errors import CarsegError
from carcli.metrics.regression import evaluate_regression
from carcli.recipe.load import load_recipe
from carcli.sampling.bank import Bank, create_bank
from carcli.ui import Reporter

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "data.regression.num_train=300",
    "data.regression.num_val=40",
    "data.regression.num_test=30",
    "calibrator.steps=6",
    "calibrator.batch_size=50",
    "calibrator.val_every=3",
    "calibrator.checkpoint_every=3",
    "refiner.steps=20",
    "refiner.batch_size=16",
    "refiner.num_samples=4",
    "refiner.val_every=10",
    "refiner.val_size=40",
    "refiner.checkpoint_every=10",
    "refiner.lr_milestones=[10]",
    "sample.num_samples=8",
    "threads=1",
]


# --- data ---------------------------------------------------------------------------------


def test_bimodal_mixture_by_region() -> None:
    mean, weight, std = bimodal_mixture(np.array([0.1, 0.5, 0.9]), pi=0.7, sigma=0.02)
    np.testing.assert_allclose(mean[:, :, 0], [[0.5, -0.5], [0.375, -0.375], [0.0, 0.0]])
    np.testing.assert_allclose(weight, [[0.7, 0.3], [0.7, 0.3], [1.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(std, 0.02)


def test_generate_bimodal_is_deterministic_and_follows_pi() -> None:
    a, b = generate_bimodal(20000, 0.9, 0.03, seed=5), generate_bimodal(20000, 0.9, 0.03, seed=5)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.x.shape == (20000, 1) and a.y.shape == (20000, 1, 1)
    x, y = a.x[:, 0], a.y[:, 0, 0]
    left = x < 0.4
    assert abs((y[left] > 0).mean() - 0.9) < 0.01  # the upper mode, with probability pi
    # residuals around the nearest mode have the noise's standard deviation
    resid = np.min(np.abs(y[:, None] - a.mixture_mean[:, :, 0]), axis=1)
    assert abs(np.sqrt(np.mean(resid[x >= 0.8] ** 2)) - 0.03) < 0.002
    with pytest.raises(ValueError, match="pi"):
        generate_bimodal(5, 1.5, 0.03, seed=0)


def test_log_likelihood_by_hand() -> None:
    # one component N(0, 1): log(phi(y) + floor)
    mean, weight, std = np.zeros((1, 1, 1)), np.ones((1, 1)), np.ones((1, 1))
    ll = mixture_log_likelihood(np.array([[[0.0], [1.0]]]), mean, weight, std)
    phi = lambda v: math.exp(-0.5 * v * v) / math.sqrt(2 * math.pi)  # noqa: E731
    np.testing.assert_allclose(
        ll[0], [math.log(phi(0) + DENSITY_FLOOR), math.log(phi(1) + DENSITY_FLOOR)]
    )
    # two components, sigma 0.5, weights 0.25 / 0.75 at -1 and +1; y = 1
    mean = np.array([[[-1.0], [1.0]]])
    w = np.array([[0.25, 0.75]])
    s = np.full((1, 2), 0.5)
    expect = 0.25 * phi(4.0) / 0.5 + 0.75 * phi(0.0) / 0.5
    ll = mixture_log_likelihood(np.array([[[1.0]]]), mean, w, s)
    assert ll[0, 0] == pytest.approx(math.log(expect + DENSITY_FLOOR))
    # a zero-weight component contributes nothing; far-off samples hit the floor
    ll = mixture_log_likelihood(np.array([[[-1.0], [50.0]]]), mean, np.array([[0.0, 1.0]]), s)
    assert ll[0, 0] == pytest.approx(math.log(phi(4.0) / 0.5 + DENSITY_FLOOR))
    assert ll[0, 1] == pytest.approx(math.log(DENSITY_FLOOR))


def test_mixture_mean_and_positive_share() -> None:
    mean = np.array([[[0.5], [-0.5]], [[0.0], [0.0]]])
    weight = np.array([[0.9, 0.1], [1.0, 0.0]])
    std = np.full((2, 2), 0.03)
    np.testing.assert_allclose(mixture_mean_y(mean, weight)[:, 0], [0.4, 0.0])
    np.testing.assert_allclose(mixture_prob_positive(mean, weight, std), [0.9, 0.5], atol=1e-9)


def _mixture_file(tmp_path: Path, **changes) -> Path:
    d = generate_bimodal(6, 0.9, 0.03, seed=0)
    extra = {"mixture_mean": d.mixture_mean, "mixture_weight": d.mixture_weight}
    extra["mixture_std"] = d.mixture_std
    extra.update(changes)
    extra = {k: v for k, v in extra.items() if v is not None}
    return write_dataset(tmp_path / "r.h5", image=d.x, label=d.y, extra=extra)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"mixture_std": None}, "mixture_std missing"),
        ({"mixture_weight": np.full((6, 2), 0.7, np.float32)}, "sum to 1"),
        ({"mixture_std": np.zeros((6, 2), np.float32)}, "must be positive"),
        ({"mixture_mean": np.zeros((6, 3, 1), np.float32)}, "do not match"),
        ({"mixture_mean": np.full((6, 2, 1), np.nan, np.float32)}, "NaN"),
    ],
)
def test_bad_mixture_is_rejected(tmp_path: Path, changes, needle: str) -> None:
    path = _mixture_file(tmp_path, **changes)
    with pytest.raises(CarsegError, match=needle):
        validate_dataset(path)


def test_regression_dataset_is_small_and_contiguous(tmp_path: Path) -> None:
    path = _mixture_file(tmp_path)
    assert validate_dataset(path).task == "regression"
    with h5py.File(path) as h5:
        assert h5["label"].chunks is None  # tiny rows are not chunked one per row


# --- evaluation against hand-computed figures ---------------------------------------------


def _bank(tmp_path: Path, data: Path, samples: np.ndarray, calib: np.ndarray) -> Path:
    with DatasetFile(data) as ds:
        info = ds.info
    path = tmp_path / "bank.h5"
    h5 = create_bank(path, info, samples.shape[0], samples.shape[1], {})
    h5["samples"][...] = samples
    h5["calibration"][...] = calib
    h5["index"][...] = np.arange(samples.shape[0])
    h5.close()
    return path


def test_evaluate_regression_by_hand(tmp_path: Path) -> None:
    x = np.array([[0.1], [0.2], [0.5], [0.9]], np.float32)
    mean, weight, std = bimodal_mixture(x[:, 0], 0.75, 0.05)
    y = np.array([[[0.5]], [[-0.5]], [[0.375]], [[0.0]]], np.float32)
    data = write_dataset(
        tmp_path / "test.h5",
        image=x,
        label=y,
        attrs={"regions": [[0, 0.4], [0.4, 0.8], [0.8, 1.0]]},
        extra={"mixture_mean": mean, "mixture_weight": weight, "mixture_std": std},
    )
    # 4 samples per x: region 0 has 8 samples, 6 above 0 (share 0.75 = truth: not collapsed)
    samples = np.array(
        [
            [0.5, 0.5, 0.5, -0.5],
            [0.5, 0.5, 0.5, -0.5],
            [0.375, 0.375, 0.375, 0.375],  # region 1 all upper: collapsed (truth 0.75)
            [0.01, -0.01, 0.02, -0.02],
        ],
        np.float32,
    )[:, :, None]
    calib = np.array([[0.25], [0.25], [0.1875], [0.0]], np.float32)
    bank = _bank(tmp_path, data, samples, calib)
    with DatasetFile(data) as ds, Bank(bank, ds.info) as b:
        summary, rows, cols = evaluate_regression(ds, b, 2, Reporter(quiet=True))
    r0, r1, r2 = (summary["upper_share"][k] for k in ("r0", "r1", "r2"))
    assert r0["samples"] == pytest.approx(0.75) and r0["real"] == pytest.approx(0.5)
    assert r0["true"] == pytest.approx(0.75, abs=1e-6) and not r0["collapsed"]
    assert r1["samples"] == 1.0 and r1["collapsed"] and r1["n"] == 1
    assert r2["samples"] == pytest.approx(0.5) and r2["true"] == pytest.approx(0.5)
    # x >= 0.8 has one mode: a one-sided sample there is a bias, never a "collapse"
    assert r0["multimodal"] and r1["multimodal"] and not r2["multimodal"]
    assert not r2["collapsed"]
    assert summary["collapsed"] is True
    # |mean - F|: 0, 0, 0.375 - 0.1875, 0 -> mean 0.046875; E[y|x] = F here
    assert summary["mean_vs_calibrator"] == pytest.approx(0.1875 / 4)
    assert summary["mean_vs_truth"] == pytest.approx(0.1875 / 4)
    assert summary["calibrator_vs_truth"] == pytest.approx(0.0, abs=1e-6)
    ll_first = mixture_log_likelihood(samples[:, :1], mean, weight, std).mean()
    assert summary["log_likelihood"]["samples"] == pytest.approx(ll_first)
    ll_real = mixture_log_likelihood(y, mean, weight, std).mean()
    assert summary["log_likelihood"]["real"] == pytest.approx(ll_real)
    assert [r["index"] for r in rows] == [0, 1, 2, 3] and "ll_sample" in cols


def test_evaluate_regression_without_mixture(tmp_path: Path) -> None:
    x = np.array([[0.1], [0.6]], np.float32)
    data = write_dataset(tmp_path / "t.h5", image=x, label=np.zeros((2, 1, 1), np.float32))
    bank = _bank(tmp_path, data, np.ones((2, 3, 1), np.float32), np.zeros((2, 1), np.float32))
    with DatasetFile(data) as ds, Bank(bank, ds.info) as b:
        summary, _, _ = evaluate_regression(ds, b, 8, Reporter(quiet=True))
    assert "log_likelihood" not in summary and "mean_vs_truth" not in summary
    assert summary["mean_vs_calibrator"] == pytest.approx(1.0)
    assert summary["upper_share"]["r0"]["samples"] == 1.0


# --- every stage, tiny ----------------------------------------------------------------------


def _recipe(tmp: Path, *extra: str):
    return load_recipe(
        REPO / "recipes" / "regression.yaml",
        tiny_overrides(tmp, *extra, base=TINY),
    )


@pytest.fixture(scope="module")
def reg_chain(tmp_path_factory):
    from carcli.stages.evaluate import run_evaluate
    from carcli.stages.plot_reliability import run_plot_reliability
    from carcli.stages.prepare import run_prepare
    from carcli.stages.sample import run_sample
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import run_train_refiner

    tmp = tmp_path_factory.mktemp("reg")
    r = _recipe(tmp)
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    run_sample(r, quiet=True)
    metrics = run_evaluate(r, quiet=True)
    plots = run_plot_reliability(r, quiet=True)
    return tmp, r, metrics, plots


def test_prepare_regression_files(reg_chain) -> None:
    tmp, r, _, _ = reg_chain
    info = validate_dataset(tmp / "data" / "train.h5")
    assert (info.task, info.n, info.image_shape, info.label_shape) == (
        "regression",
        300,
        (1,),
        (1,),
    )
    with h5py.File(tmp / "data" / "test.h5") as h5:
        assert h5.attrs["pi"] == pytest.approx(0.9) and h5.attrs["sigma"] == pytest.approx(0.03)
        assert json.loads(h5.attrs["regions"]) == [[0.0, 0.4], [0.4, 0.8], [0.8, 1.0]]
        assert h5["mixture_mean"].shape == (30, 2, 1)


def test_regression_chain_outputs(reg_chain) -> None:
    tmp, r, metrics, plots = reg_chain
    run = tmp / "run"
    log = [
        json.loads(line) for line in (run / "refiner" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [rec["step"] for rec in log if "val_ll" in rec] == [10, 20]
    assert log[-1]["lr_g"] == pytest.approx(1e-4 * 0.3)  # the milestone at step 10
    with h5py.File(run / "samples" / "test.h5") as bank:
        assert bank["samples"].shape == (30, 8, 1) and bank["samples"].dtype == np.float32
        assert bank["calibration"].shape == (30, 1)
    assert metrics["task"] == "regression" and metrics["n_images"] == 30
    assert set(metrics["upper_share"]) == {"r0", "r1", "r2"}
    for key in ("samples", "all_samples", "real"):
        assert math.isfinite(metrics["log_likelihood"][key])
    on_disk = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert on_disk["mean_vs_calibrator"] == pytest.approx(metrics["mean_vs_calibrator"])
    assert {p.name for p in plots} == {
        "fit.png",
        "fit.csv",
        "loglik.png",
        "loglik.csv",
        "manifest.json",
    }
    assert (run / "plots" / "test" / "fit.csv").read_text().startswith("index,x,calibrator")


def test_regression_fail_if_and_ce_refused(reg_chain) -> None:
    from carcli.stages.evaluate import run_evaluate
    from carcli.training.refiner import run_train_refiner

    tmp, r, _, _ = reg_chain
    with pytest.raises(CarsegError, match="upper_share.r0.samples"):
        run_evaluate(r, fail_if=["upper_share.r0.samples>=0"], overwrite=True, quiet=True)
    run_evaluate(r, fail_if=["mean_vs_calibrator>100"], overwrite=True, quiet=True)
    with pytest.raises(CarsegError, match="'ce'"):
        run_train_refiner(_recipe(tmp, "refiner.calibration_loss=ce"), overwrite=True, quiet=True)
    with pytest.raises(CarsegError, match="'kl_forward' is for segmentation"):
        run_train_refiner(
            _recipe(tmp, "refiner.calibration_loss=kl_forward"), overwrite=True, quiet=True
        )
    with pytest.raises(CarsegError, match="w_entropy is for segmentation"):
        run_train_refiner(_recipe(tmp, "refiner.w_entropy=1"), overwrite=True, quiet=True)


def test_regression_cli_evaluate_table(reg_chain) -> None:
    tmp, *_ = reg_chain
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "carcli",
            "evaluate",
            str(REPO / "recipes" / "regression.yaml"),
            f"run_dir={tmp / 'run'}",
            f"data.dir={tmp / 'data'}",
            "--overwrite",
        ],
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert "share y > 0, x in [0, 0.4)" in text and "E[y|x]" in text


# --- the two update orders of D -------------------------------------------------------------


def test_alternating_and_simultaneous_updates() -> None:
    """D's update is the same in both orders; G's differs (it sees the updated D only when
    alternating)."""
    from carcli.data.batches import Batch
    from carcli.models.registry import build_calibrator, build_discriminator, build_refiner
    from carcli.training.optim import adam
    from carcli.training.step import Nets, RefinerStep

    def one(update: str):
        torch.manual_seed(0)
        F, G, D = build_calibrator("mlp", 1, 1), build_refiner("mlp", 1, 1, 1), None
        D = build_discriminator("mlp", 1, 1)
        nets = Nets(F, G, D, adam(G.parameters(), 1e-2, [0.9, 0.999], 0.0),
                    adam(D.parameters(), 1e-2, [0.9, 0.999], 0.0))  # fmt: skip
        recipe = load_recipe(
            REPO / "recipes" / "regression.yaml", [f"discriminator.update={update}"]
        )
        x = torch.rand(8, 1)
        batch = Batch(x, x, torch.randn(8, 1))
        gen = torch.Generator().manual_seed(1)
        RefinerStep.from_recipe(recipe, nets, "regression", 0, -1, gen)(batch, 0, d_on=True)
        return [p.detach().clone() for p in G.parameters()], [
            p.detach().clone() for p in D.parameters()
        ]

    g_sim, d_sim = one("simultaneous")
    g_alt, d_alt = one("alternating")
    for a, b in zip(d_sim, d_alt, strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(g_sim, g_alt, strict=True))
