"""calibrator.recalibrate=class_bias: F's per-class logit biases refitted on the validation
split (carcli/training/recalibration.py), checked on hand-computed cases and on a stage run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from carcli.artefacts.checkpoint import load_weights, read_safetensors
from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile
from carcli.errors import CarsegError
from carcli.models.registry import build_calibrator
from carcli.recipe.load import load_recipe
from carcli.training.calibrator import run_train_calibrator
from carcli.training.recalibration import fit_class_bias, fit_logit_map, logit_bias, recalibrate


def test_constant_logits_get_the_labels_log_odds():
    """Zero logits everywhere, q = (0.7, 0.2, 0.1) on every pixel: the optimum is
    softmax(b) = q, i.e. b = log q less its mean (computed by hand)."""
    q = torch.tensor([[0.7, 0.2, 0.1]]).repeat(50, 1)
    b, before, after = fit_class_bias(torch.zeros(50, 3), q)
    want = np.log([0.7, 0.2, 0.1])
    assert np.allclose(b.numpy(), want - want.mean(), atol=1e-4)
    assert before == pytest.approx(np.log(3), abs=1e-6)  # uniform p: CE = log K
    h = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    assert after == pytest.approx(h, abs=1e-6)  # at softmax(b) = q, CE is q's entropy
    assert abs(float(b.sum())) < 1e-5


def test_fitted_mean_probability_equals_the_labels_per_class():
    """The stationarity condition: after the fit, mean_pixels p_k = mean_pixels q_k for every
    class, on logits that under-predict class 2 (a rare class left low)."""
    g = torch.Generator().manual_seed(0)
    n, k = 4000, 3
    q = torch.distributions.Dirichlet(torch.ones(k)).sample((n,))
    logits = torch.log(q) + 0.3 * torch.randn(n, k, generator=g)
    logits[:, 2] -= 0.5  # F's offset on class 2
    p0 = logits.softmax(1).mean(0)
    assert float(q.mean(0)[2] - p0[2]) > 0.05  # the offset the fit has to remove
    b, before, after = fit_class_bias(logits, q)
    p1 = (logits + b).softmax(1).mean(0)
    assert torch.allclose(p1, q.mean(0), atol=1e-5)
    assert after < before
    assert float(b[2]) > 0.3  # class 2 pushed up


def test_fit_never_worse_than_no_bias_and_empty_is_an_error():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = torch.tensor([[3.0, -3.0], [-3.0, 3.0]])
    b, before, after = fit_class_bias(logits, q)
    assert after <= before and torch.allclose(b, torch.zeros(2), atol=1e-6)  # symmetric
    with pytest.raises(CarsegError, match="n > 0"):
        fit_class_bias(torch.zeros(0, 2), torch.zeros(0, 2))


def test_logit_bias_is_the_last_convolution_or_a_clear_error():
    f = build_calibrator("unet", 3, 4, width=4, depth=1)
    assert logit_bias(f) is f.head.bias
    with pytest.raises(CarsegError, match="recalibrate"):
        logit_bias(build_calibrator("mlp", 1, 1))


def test_recalibrate_adds_the_bias_to_the_head(tiny_data_dir):
    """On a real split: the head's bias moves by exactly the fitted b, and F's mean probability
    of each class over the valid validation pixels then equals the label distribution's."""
    torch.manual_seed(0)
    f = build_calibrator("unet", 3, 3, width=4, depth=1).eval()
    with torch.no_grad():
        f.head.bias.copy_(torch.tensor([1.0, -0.5, 0.0]))  # a strong offset to undo
    before = f.head.bias.detach().clone()
    with DatasetFile(tiny_data_dir / "val.h5", validate=True) as ds:
        val = BatchSource(ds)
        rec = recalibrate(f, val, torch.device("cpu"), 3, seed=0)
        b = val.get(np.arange(ds.info.n), None, annotation=np.zeros(ds.info.n, int), soft=True)
        with torch.no_grad():
            p = f.eval()(b.cond).softmax(1)
    assert torch.allclose(f.head.bias - before, torch.tensor(rec["class_bias"]), atol=1e-5)
    valid = b.soft.sum(1) > 0.5  # [N, H, W]
    pm = p.permute(0, 2, 3, 1)[valid].mean(0)
    qm = b.soft.float().permute(0, 2, 3, 1)[valid].mean(0)
    assert torch.allclose(pm, qm, atol=1e-4)
    assert rec["val_ce_after"] < rec["val_ce_before"]
    assert rec["val_pixels"] == int(valid.sum())


def test_recipe_refuses_class_bias_on_an_mlp_calibrator():
    with pytest.raises(CarsegError, match="calibrator.recalibrate"):
        load_recipe(
            "recipes/toy.yaml", ["calibrator.arch=mlp", "calibrator.recalibrate=class_bias"]
        )


def test_train_calibrator_saves_the_refitted_f(tmp_path, tiny_data_dir):
    """The stage: model.safetensors carries the refit (weights and metadata), the manifest
    records it, last.safetensors keeps the trained weights (a resume continues from those),
    and with recalibrate=none the head is as trained."""
    over = tiny_overrides(tmp_path, "calibrator.recalibrate=class_bias", "data.source=prepared")
    r = load_recipe("recipes/toy.yaml", over)
    run_train_calibrator(r, quiet=True)
    d = tmp_path / "run" / "calibrator"
    model, meta = load_weights(d / "model.safetensors", stage="calibrator", make_cmd="-")
    rec = meta["recalibration"]
    assert rec["kind"] == "class_bias" and len(rec["class_bias"]) == 3
    manifest = json.loads((d / "manifest.json").read_text())
    assert json.dumps(manifest).count("class_bias") >= 1
    last, _ = read_safetensors(d / "last.safetensors", "state", "-")
    (t,) = [v for k, v in last.items() if k.endswith("head.bias")]
    assert torch.allclose(model["head.bias"] - t, torch.tensor(rec["class_bias"]), atol=1e-5)


def test_a_class_the_labels_never_show_keeps_its_logit():
    """Class 2 has no mass in q: its optimum is -inf (and the others' +inf), so it takes the
    mean of the others' biases: the fit stays finite and the seen classes get q's ratio."""
    logits = torch.zeros(20, 3)
    logits[:, 2] = -2.0
    q = torch.tensor([[0.6, 0.4, 0.0]]).repeat(20, 1)
    b, _, _ = fit_class_bias(logits, q)
    assert torch.isfinite(b).all() and float(b.abs().max()) < 1.0
    assert np.isclose(float(b[2]), float(b[:2].mean()), atol=1e-6)
    p = torch.softmax(logits[0] + b, 0)
    # close to q's ratio 1.5 (not equal: with the tie, moving the ratio also moves p_2)
    assert np.isclose(float(p[0] / p[1]), 1.5, atol=0.1)


def test_regression_data_gets_a_clear_error():
    class _Val:  # the two attributes recalibrate reads before anything else
        info = type("Info", (), {"task": "regression"})()
        ds = type("Ds", (), {"path": "data/r/val.h5"})()

    f = build_calibrator("unet", 3, 3, width=4, depth=1)
    with pytest.raises(CarsegError, match="for segmentation.*regression"):
        recalibrate(f, _Val(), torch.device("cpu"), 2, seed=0)


def test_vector_scaling_undoes_per_class_softening():
    """Logits l_k = c_k log q_k (class k softened or sharpened by 1 / c_k): the optimum is
    a_k = 1 / c_k with no bias, where softmax(a * l) = q exactly and the CE is q's entropy."""
    torch.manual_seed(1)
    q = torch.distributions.Dirichlet(torch.ones(3)).sample((3000,)).clamp_min(1e-4)
    q = q / q.sum(1, keepdim=True)
    c = torch.tensor([0.5, 0.8, 0.4])
    logits = c * q.log()
    a, b, before, after = fit_logit_map(logits, q, scale=True)
    assert torch.allclose(a, 1 / c, rtol=1e-3)
    assert torch.allclose(b, torch.zeros(3), atol=1e-3)
    h = float(-(q.double() * q.double().log()).sum(1).mean())
    assert after == pytest.approx(h, abs=1e-6) and before > after + 0.01
    # the biases alone cannot undo it: their fit leaves a higher cross-entropy
    _, _, _, after_bias = fit_logit_map(logits, q, scale=False)
    assert after_bias > after + 0.01


def test_vector_scaling_folds_into_the_head(tiny_data_dir):
    """On a real split: after recalibrate(kind=vector_scaling), F's logits are exactly
    a * (its logits before) + b with the recorded a and b, and the fit lowered the CE."""
    torch.manual_seed(0)
    f = build_calibrator("unet", 3, 3, width=4, depth=1).eval()
    with DatasetFile(tiny_data_dir / "val.h5", validate=True) as ds:
        val = BatchSource(ds)
        b = val.get(np.arange(ds.info.n), None, annotation=np.zeros(ds.info.n, int), soft=True)
        with torch.no_grad():
            before = f.eval()(b.cond)
        rec = recalibrate(f, val, torch.device("cpu"), 3, seed=0, kind="vector_scaling")
        with torch.no_grad():
            after = f.eval()(b.cond)
    a = torch.tensor(rec["class_scale"]).view(1, -1, 1, 1)
    bias = torch.tensor(rec["class_bias"]).view(1, -1, 1, 1)
    assert rec["kind"] == "vector_scaling" and (a > 0).all()
    assert torch.allclose(after, a * before + bias, atol=1e-4)
    assert rec["val_ce_after"] < rec["val_ce_before"]
