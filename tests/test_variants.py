"""The paper's variants (issue 7): the latent-code refiner (noise = posterior, with or without
the beta-KL prior term) and joint training of F inside train-refiner."""

from __future__ import annotations

import hashlib
import json
import math

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_pipeline import tiny_recipe
from test_training import _nets

from carcli.data.batches import Batch, BatchSource
from carcli.data.dataset import DatasetFile
from carcli.losses import latent_kl
from carcli.models.registry import build_model, build_refiner
from carcli.recipe.load import RecipeError, load_recipe
from carcli.runtime.networks import load_network, refiner_calibrator, save_network
from carcli.sampling.sample import draw
from carcli.stages.prepare import run_prepare
from carcli.stages.sample import run_sample
from carcli.training.calibrator import run_train_calibrator
from carcli.training.refiner import run_train_refiner
from carcli.training.step import RefinerStep


def _posterior(k: int = 3, d: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_refiner("unet", 1, k, d, width=4, depth=2, noise="posterior")


def _inputs(b: int = 2, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(b, 1, 16, 16), torch.softmax(torch.randn(b, k, 16, 16), 1)


def test_posterior_head_shapes_and_zero_start():
    g = _posterior().eval()
    x, p = _inputs()
    feats = g.encode(x, p)
    mu, log_sigma = g.posterior(feats)
    assert mu.shape == log_sigma.shape == (2, 4)
    # the head starts at zero: q = N(0, I), so training starts from the gaussian refiner
    assert torch.all(mu == 0) and torch.all(log_sigma == 0)
    assert g(x, p, num_samples=5).shape == (2, 5, 3, 16, 16)
    assert g.config["noise"] == "posterior"
    with pytest.raises(ValueError, match="posterior"):
        build_refiner("unet", 1, 3, 4, width=4, depth=2).posterior(feats)
    with pytest.raises(ValueError, match="noise source"):
        build_refiner("unet", 1, 3, 4, width=4, noise="uniform")


def test_reparameterisation_drives_the_decoder_with_codes():
    g = _posterior().eval()
    with torch.no_grad():
        g.posterior_head.bias.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0, math.log(2), 0, -1]))
    x, p = _inputs()
    eps = torch.randn(2, 3, 4)
    feats = g.encode(x, p)
    z = g.codes(feats, eps)
    mu = torch.tensor([1.0, -2.0, 0.5, 0.0])
    sigma = torch.tensor([1.0, 2.0, 1.0, math.exp(-1)])
    assert torch.allclose(z, mu + sigma * eps, atol=1e-6)
    # a gaussian refiner with the same weights, fed the codes, gives the same samples
    plain = build_refiner("unet", 1, 3, 4, width=4, depth=2).eval()
    state = {k: v for k, v in g.state_dict().items() if not k.startswith("posterior_head")}
    plain.load_state_dict(state)
    assert torch.allclose(g(x, p, noise=eps), plain(x, p, noise=z), atol=1e-5)
    # gradients reach mu and log sigma through the samples
    g.train()
    g(x, p, noise=eps).sum().backward()
    assert g.posterior_head.bias.grad is not None and g.posterior_head.bias.grad.abs().sum() > 0


def test_latent_kl_by_hand():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    log_sigma = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # image 0: 0.5 * (1 + 1 - 1 - 0) + 0.5 * (0 + 4 - 1 - 2 log 2); image 1: 0 (= the prior)
    want = 0.5 * (0.5 * 1.0 + 0.5 * (3.0 - 2 * math.log(2.0)))
    assert latent_kl(mu, log_sigma).item() == pytest.approx(want, rel=1e-6)
    assert latent_kl(torch.zeros(3, 8), torch.zeros(3, 8)).item() == 0.0
    with pytest.raises(ValueError):
        latent_kl(torch.zeros(3, 8), torch.zeros(3, 4))


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_refiner_step_posterior_logs_kl_and_trains_the_head(beta):
    r = load_recipe(
        "recipes/toy.yaml",
        [
            "refiner.num_samples=3",
            "refiner.w_joint=0",
            "refiner.noise_regions=0",
            "refiner.noise=posterior",
            f"refiner.kl_beta={beta}",
        ],
    )
    nets = _nets(r)
    nets.G = _posterior(d=4)
    nets.opt_G = torch.optim.Adam(nets.G.parameters(), 1e-2)
    x = torch.randn(2, 1, 16, 16)
    algorithm1 = RefinerStep.from_recipe(
        r, nets, "segmentation", 3, 255, torch.Generator().manual_seed(0)
    )
    out = algorithm1(Batch(x, x, torch.randint(0, 3, (2, 16, 16))), 0, d_on=False)
    assert out["loss_kl"] == 0.0  # q starts at the prior
    assert nets.G.posterior_head.weight.abs().sum() > 0  # the head moved


def test_recipe_checks_for_the_variants():
    with pytest.raises(RecipeError) as err:
        load_recipe(
            "recipes/regression.yaml",
            ["refiner.noise=posterior", "refiner.kl_beta=-1"],
        )
    text = str(err.value)
    assert "refiner.kl_beta -> must be >= 0" in text and "needs refiner.arch=unet" in text
    with pytest.raises(RecipeError, match="needs refiner.noise=posterior"):
        load_recipe("recipes/toy.yaml", ["refiner.kl_beta=1"])
    posterior = ["refiner.noise=posterior", "refiner.noise_regions=0"]  # regions need gaussian
    r = load_recipe("recipes/toy.yaml", [*posterior, "refiner.kl_beta=0.1"])
    assert r.refiner.kl_beta == 0.1 and not r.refiner.joint_calibrator


def test_posterior_checkpoint_round_trip_and_seeded_sampling(tmp_path, write_split):
    path = write_split(tmp_path / "test.h5", n=5, channels=1)
    g = _posterior()
    with torch.no_grad():  # a non-trivial posterior, so the codes differ from eps
        g.posterior_head.weight.normal_(0, 0.5)
        g.posterior_head.bias.normal_(0, 0.5)
    g.eval()
    with DatasetFile(path) as ds:
        info = ds.info
        save_network(tmp_path / "g.safetensors", g, "refiner", "refiner", "unet", info, 1)
        back = load_network(tmp_path / "g.safetensors", "refiner", "refiner", info, "make").eval()
        assert back.config == g.config and back.noise == "posterior"
        F_net = build_model(
            "calibrator",
            {"arch": "convnet", "in_channels": 1, "num_classes": 3, "width": 4},
        ).eval()
        src = BatchSource(ds)
        rows = np.arange(5)
        whole, _ = draw(F_net, back, src, rows, 6, 4, seed=3, device=torch.device("cpu"))
        parts = [
            draw(F_net, g, src, r, 6, 4, 3, torch.device("cpu"))[0] for r in ([0, 1], [2, 3, 4])
        ]
    assert np.array_equal(whole, np.concatenate(parts))  # per-image noise: batching is irrelevant
    assert len({whole[i].tobytes() for i in range(5)}) > 1


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_joint_training_saves_f_and_sample_uses_it(tmp_path):
    r = tiny_recipe(
        tmp_path,
        "refiner.noise=posterior",
        "refiner.noise_regions=0",
        "refiner.joint_calibrator=true",
    )
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    run = tmp_path / "run"
    f0, fj = run / "calibrator" / "model.safetensors", run / "refiner" / "calibrator.safetensors"
    assert fj.is_file()
    before, after = load_file(str(f0)), load_file(str(fj))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # F trained
    assert refiner_calibrator(run / "refiner" / "model.safetensors", f0) == fj
    log = [
        json.loads(line) for line in (run / "refiner" / "metrics.jsonl").read_text().splitlines()
    ]
    assert all("loss_ce" in rec and "loss_kl" in rec for rec in log)
    manifest = json.loads((run / "refiner" / "manifest.json").read_text())
    assert "calibrator.safetensors" in manifest["outputs"]
    bank = run_sample(r, quiet=True)
    with h5py.File(bank, "r") as h5:
        assert h5.attrs["calibrator_sha256"] == _sha(fj) != _sha(f0)
        recipe = h5.attrs["recipe"]
    assert "joint_calibrator: true" in recipe and "noise: posterior" in recipe
