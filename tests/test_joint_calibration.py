"""The joint calibration loss (refiner.w_joint): hand-computed values, pair sampling, targets."""

from __future__ import annotations

import math

import pytest
import torch

from carcli.losses.joint import (
    TARGET_SMOOTHING,
    cross_factor_partners,
    joint_calibration_loss,
    joint_term,
    label_ambiguous,
    mode_label_probs,
    pair_targets,
    sample_pixel_pairs,
)

BIG = 50.0  # logit margin: softmax is one-hot to float precision


def _crisp(classes: list[list[int]], k: int) -> torch.Tensor:
    """Logits [1, M, K, 1, P] of M crisp samples; classes[m][p] is sample m's class at p."""
    c = torch.tensor(classes)
    logits = torch.full((1, c.shape[0], k, 1, c.shape[1]), -BIG)
    logits.scatter_(2, c[None, :, None, None, :], BIG)
    return logits


def _smooth(t: float, k: int) -> float:
    return (1 - TARGET_SMOOTHING) * t + TARGET_SMOOTHING / (k * k)


def test_coupled_samples_against_independent_labels_hand_value() -> None:
    """Two pixels, samples (1, 1) and (2, 2): G's joint is 1/2 on the diagonal; the labels
    are two independent fair coins (1/4 each): KL = 2 * 1/2 * log((1/2) / t(1/4))."""
    k = 3
    logits = _crisp([[1, 1], [2, 2]], k)
    target = torch.zeros(1, 1, k, k)
    target[0, 0, 1:, 1:] = 0.25
    i, j = torch.tensor([[0]]), torch.tensor([[1]])
    got = joint_calibration_loss(logits, i, j, target)
    assert got.item() == pytest.approx(math.log(0.5 / _smooth(0.25, k)), rel=1e-5)


def test_matching_joint_costs_only_the_smoothing() -> None:
    k = 3
    logits = _crisp([[1, 2], [2, 1]], k)  # anti-correlated, as the target
    target = torch.zeros(1, 1, k, k)
    target[0, 0, 1, 2] = target[0, 0, 2, 1] = 0.5
    got = joint_calibration_loss(logits, torch.tensor([[0]]), torch.tensor([[1]]), target)
    assert got.item() == pytest.approx(math.log(0.5 / _smooth(0.5, k)), rel=1e-5)
    assert 0 < got.item() < 2e-3


def test_marginals_right_joint_wrong_is_penalised_more_than_right_joint() -> None:
    """Same marginals (each pixel 1/2 class 1), coupled vs independent samples: only the
    joint loss tells them apart (L_cal cannot)."""
    k = 3
    target = torch.zeros(1, 1, k, k)
    target[0, 0, 1:, 1:] = 0.25  # independent
    i, j = torch.tensor([[0]]), torch.tensor([[1]])
    coupled = _crisp([[1, 1], [2, 2], [1, 1], [2, 2]], k)
    independent = _crisp([[1, 1], [1, 2], [2, 1], [2, 2]], k)
    assert joint_calibration_loss(coupled, i, j, target) > 0.5
    assert joint_calibration_loss(independent, i, j, target) < 2e-3


def test_pair_targets_from_weighted_modes() -> None:
    """Modes over 2 pixels with weights .5 / .3 / .2: T is their weighted joint; padding rows
    (weight 0) and ignore pixels count nothing."""
    modes = torch.tensor([[[[1, 1]], [[1, 2]], [[2, 255]], [[0, 0]]]], dtype=torch.uint8)
    weights = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    t = pair_targets(modes, weights, torch.tensor([[0]]), torch.tensor([[1]]), 3)[0, 0]
    want = torch.zeros(3, 3)
    want[1, 1], want[1, 2] = 0.5, 0.3  # mode 3's pixel 1 is ignored: no mass
    assert torch.allclose(t, want)
    q = mode_label_probs(modes, weights, 3)[0, :, 0]  # [K, 2]
    assert torch.allclose(q[:, 0], torch.tensor([0.0, 0.8, 0.2]))


def test_pairs_come_from_ambiguous_pixels_only() -> None:
    q = torch.zeros(2, 3, 4, 4)
    q[:, 0] = 1.0
    q[0, :, 1, 1] = torch.tensor([0.0, 0.5, 0.5])
    q[0, :, 2, 3] = torch.tensor([0.0, 0.3, 0.7])
    q[1, :, 0, 0] = torch.tensor([0.2, 0.8, 0.0])  # a single ambiguous pixel: no pair
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    i, j, mask = sample_pixel_pairs(label_ambiguous(q, valid), 64, g)
    assert set(i[0].tolist()) | set(j[0].tolist()) <= {1 * 4 + 1, 2 * 4 + 3}
    assert mask[0].all() and not mask[1].any()


def test_cross_factor_partners_move_pairs_to_another_factor() -> None:
    # 1x8 image: pixels 0-2 one flip region, 3-5 another (independent), 6-7 certain
    modes = torch.tensor(
        [
            [
                [[0, 0, 0, 1, 1, 1, 2, 2]],
                [[1, 1, 1, 1, 1, 1, 2, 2]],
                [[0, 0, 0, 0, 0, 0, 2, 2]],
                [[1, 1, 1, 0, 0, 0, 2, 2]],
            ]
        ]
    )
    w = torch.ones(1, 4)
    valid = torch.ones(1, 1, 8, dtype=torch.bool)
    q = mode_label_probs(modes, w, 3)
    g = torch.Generator().manual_seed(0)
    i, j, _ = sample_pixel_pairs(label_ambiguous(q, valid), 400, g)

    def same_region(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a < 3) == (b < 3)).float().mean().item()

    assert 0.4 < same_region(i, j) < 0.6  # uniform: half the pairs inside one region
    moved = cross_factor_partners(q, modes, w, valid, i, j, 1.0, g)
    # all moved but where none of the 8 candidates lies in the other region (2^-8 of them)
    assert same_region(i, moved) < 0.02 and int(moved.max()) < 6  # ambiguous pixels only
    half = cross_factor_partners(q, modes, w, valid, i, j, 0.5, g)
    assert 0.15 < same_region(i, half) < 0.35
    assert torch.equal(cross_factor_partners(q, modes, w, valid, i, j, 0.0, g), j)
    # one region only: no other factor to move to, the uniform partners stay
    one = torch.tensor([[[[0, 0, 0, 2]], [[1, 1, 1, 2]]]])
    q1 = mode_label_probs(one, torch.ones(1, 2), 3)
    i1, j1, _ = sample_pixel_pairs(label_ambiguous(q1, torch.ones(1, 1, 4)), 50, g)
    assert torch.equal(
        cross_factor_partners(q1, one, torch.ones(1, 2), torch.ones(1, 1, 4), i1, j1, 1.0, g), j1
    )


def test_joint_term_is_zero_without_ambiguity_and_differentiable() -> None:
    modes = torch.randint(0, 3, (2, 1, 4, 4), dtype=torch.uint8)
    weights = torch.tensor([[1.0], [1.0]])
    logits = torch.randn(2, 3, 3, 4, 4, requires_grad=True)
    out = joint_term(logits, modes, weights, torch.ones(2, 4, 4, dtype=torch.bool), 8, None)
    assert out.item() == 0.0
    modes = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])[None].to(torch.uint8)
    out = joint_term(logits[:1], modes, torch.tensor([[0.5, 0.5]]), torch.ones(1, 4, 4), 8, None)
    out.backward()
    assert out.item() > 0 and logits.grad is not None and logits.grad.abs().sum() > 0


def test_train_refiner_with_joint_calibration_logs_the_term(tmp_path) -> None:
    """A tiny toy run with refiner.w_joint: the term is logged (finite, > 0 on ambiguous
    images) and the default run has no such entry (the paper's path is untouched)."""
    import json

    from carcli.stages.prepare import run_prepare
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import run_train_refiner
    from tests.test_pipeline import tiny_recipe

    r = tiny_recipe(tmp_path, "refiner.w_joint=5", "refiner.joint_pairs=16")
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    log = [
        json.loads(x) for x in (tmp_path / "run/refiner/metrics.jsonl").read_text().split("\n") if x
    ]
    values = [rec["loss_joint"] for rec in log if "loss_joint" in rec]
    assert values and all(math.isfinite(v) for v in values) and max(values) > 0
    plain = tiny_recipe(tmp_path, "refiner.w_joint=0")
    run_train_refiner(plain, overwrite=True, quiet=True)
    log = (tmp_path / "run/refiner/metrics.jsonl").read_text()
    assert "loss_joint" not in log


def test_unbiased_squared_distance_hand_value_and_expectation() -> None:
    """kind='sq': crisp independent samples (all four combinations) against independent
    labels give ||G - T||^2 estimated without bias: cross terms m != m' only."""
    k = 3
    target = torch.zeros(1, 1, k, k)
    target[0, 0, 1:, 1:] = 0.25
    i, j = torch.tensor([[0]]), torch.tensor([[1]])
    independent = _crisp([[1, 1], [1, 2], [2, 1], [2, 2]], k)
    # sum_{m != m'} <P_m, P_m'> = 0 (distinct one-hot outer products): 0 - 2 * 1/4 + 1/4
    got = joint_calibration_loss(independent, i, j, target, kind="sq")
    assert got.item() == pytest.approx(-0.25, abs=1e-6)
    coupled = _crisp([[1, 1], [2, 2], [1, 1], [2, 2]], k)
    # cross: pairs (0, 2), (2, 0), (1, 3), (3, 1) equal -> 4 / 12; <G, T> = 1/4
    got = joint_calibration_loss(coupled, i, j, target, kind="sq")
    assert got.item() == pytest.approx(4 / 12 - 0.5 + 0.25, abs=1e-6)
    # soft copies of the marginals (what the M-sample KL favours) gain nothing over crisp ones
    soft = torch.zeros(1, 4, k, 1, 2)
    soft[:, :, 0] = -BIG
    got = joint_calibration_loss(soft, i, j, target, kind="sq")
    assert got.item() == pytest.approx(4 * 3 * (0.25 * 0.25 * 4) / 12 - 0.5 + 0.25, abs=1e-6)


def test_noise_grid_refiner_draws_from_its_grid_and_round_trips(tmp_path) -> None:
    """refiner.noise_grid: eps holds the global code and the g x g grid; changing only the
    grid changes the samples; a trained checkpoint loads back into `sample` with the same
    noise size (the bank is written)."""
    import h5py

    from carcli.models.refiner import GRID_CHANNELS, UNetRefiner
    from carcli.stages.prepare import run_prepare
    from carcli.stages.sample import run_sample
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import run_train_refiner
    from tests.test_pipeline import tiny_recipe

    g = UNetRefiner(3, 4, 8, width=4, depth=2, noise_grid=3).eval()
    assert g.noise_dim == 8 + GRID_CHANNELS * 9
    x, p = torch.randn(1, 3, 16, 16), torch.softmax(torch.randn(1, 4, 16, 16), 1)
    eps = torch.randn(1, 2, g.noise_dim)
    other = eps.clone()
    other[..., 8:] = torch.randn(1, 2, g.noise_dim - 8)
    with torch.no_grad():
        assert not torch.allclose(g(x, p, noise=eps), g(x, p, noise=other))
        assert torch.equal(g(x, p, noise=eps), g(x, p, noise=eps))
    r = tiny_recipe(tmp_path, "refiner.noise_grid=2", "refiner.w_joint=1")
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    bank = run_sample(r, quiet=True)
    with h5py.File(bank) as h5:
        assert h5["samples"].shape[0] == r.data.synthetic.num_test


def test_straight_through_forward_is_the_answer_and_gradient_survives_crispness() -> None:
    from carcli.losses.joint import straight_through

    logits = torch.tensor([[[[30.0], [0.0], [-5.0]]]]).reshape(1, 1, 3, 1).requires_grad_(True)
    st = straight_through(logits, 4.0)
    assert torch.equal(st.detach(), torch.tensor([1.0, 0.0, 0.0]).reshape(1, 1, 3, 1))
    (st[0, 0, 1].sum()).backward()
    grad_st = logits.grad.abs().sum().item()
    logits.grad = None
    (logits.softmax(2)[0, 0, 1].sum()).backward()
    assert grad_st > 1e3 * logits.grad.abs().sum().item()  # the plain softmax has ~none
    assert torch.equal(straight_through(logits, 0.0), logits.float().softmax(2))


def test_set_discriminator_trains_saves_and_resumes(tmp_path) -> None:
    """discriminator.set_size: the set D's figures are logged, its weights saved, and a
    resumed run restores it (its optimiser too) and finishes."""
    import json

    from carcli.recipe.load import RecipeError, load_recipe
    from carcli.stages.prepare import run_prepare
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import SET_DISCRIMINATOR, run_train_refiner
    from tests.test_pipeline import tiny_recipe

    with pytest.raises(RecipeError, match="discriminator.set_size"):
        load_recipe("recipes/toy.yaml", ["discriminator.set_size=9", "refiner.num_samples=8"])
    r = tiny_recipe(tmp_path, "discriminator.set_size=2", "refiner.num_samples=4")
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    run_train_refiner(r, quiet=True)
    stage = tmp_path / "run" / "refiner"
    assert (stage / SET_DISCRIMINATOR).exists()
    log = [json.loads(x) for x in (stage / "metrics.jsonl").read_text().splitlines() if x]
    assert all("loss_set" in rec and 0 <= rec["set_acc"] <= 1 for rec in log)
    more = tiny_recipe(
        tmp_path,
        "discriminator.set_size=2",
        "refiner.num_samples=4",
        f"refiner.steps={r.refiner.steps + 2}",
    )
    run_train_refiner(more, resume=True, quiet=True)
    log = [json.loads(x) for x in (stage / "metrics.jsonl").read_text().splitlines() if x]
    assert log[-1]["step"] == r.refiner.steps + 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["refiner.w_joint=-1"], "refiner.w_joint -> must be >= 0"),
        (["refiner.joint_pairs=0"], "refiner.joint_pairs"),
        (["refiner.joint_cross=1.5"], "refiner.joint_cross -> must be in [0, 1]"),
        (["refiner.joint_temperature=-1"], "refiner.joint_temperature -> must be >= 0"),
        (["refiner.noise_grid=-2"], "refiner.noise_grid -> must be >= 0"),
        (["refiner.noise_grid=2", "refiner.noise=posterior"], "refiner.noise_grid -> needs"),
        (
            ["refiner.w_joint=1", "refiner.joint_loss=sq", "refiner.num_samples=1"],
            "'sq' needs refiner.num_samples >= 2",
        ),
    ],
)
def test_recipe_checks_of_the_joint_options(overrides, message) -> None:
    from carcli.recipe.load import RecipeError, load_recipe

    with pytest.raises(RecipeError) as err:
        load_recipe("recipes/toy.yaml", overrides)
    assert message in str(err.value)


def test_calibration_temperature_sees_answers_and_moves_crisp_frequencies() -> None:
    from carcli.losses.calibration import calibration_loss, sample_mean

    # 4 decided samples at one pixel (logit margin 10), 3 say class 0: G's answers come
    # 3/4 : 1/4 while F says 1/2 : 1/2
    logits = (_crisp([[0], [0], [0], [1]], 2) / BIG * 5.0).requires_grad_(True)
    hard = sample_mean(logits, "segmentation", temperature=5.0)
    assert torch.allclose(hard[0, :, 0, 0], torch.tensor([0.75, 0.25]))
    p = torch.tensor([0.5, 0.5]).reshape(1, 2, 1, 1)
    calibration_loss(logits, p, g_bar=sample_mean(logits, "segmentation")).backward()
    soft_grad = logits.grad.abs().max().item()
    logits.grad = None
    calibration_loss(logits, p, g_bar=hard).backward()
    g = logits.grad[0, :, :, 0, 0]  # [M, K]: the samples saying 0 are pushed toward 1
    assert (g[:3, 0] > 0).all() and (g[:3, 1] < 0).all()
    assert g.abs().max().item() > 100 * soft_grad  # the softmax's gradient has all but gone


def test_calibration_temperature_recipe_checks() -> None:
    from carcli.recipe.load import RecipeError, load_recipe

    with pytest.raises(RecipeError, match="calibration_temperature -> must be >= 0"):
        load_recipe("recipes/toy.yaml", ["refiner.calibration_temperature=-1"])
    with pytest.raises(RecipeError, match="only with refiner.calibration_loss=kl"):
        load_recipe(
            "recipes/toy.yaml",
            ["refiner.calibration_temperature=2", "refiner.calibration_loss=kl_forward"],
        )


def _raters(n: int, p: float, seed: int) -> torch.Tensor:
    """Annotations [n, 4, 1, 8] of 4 raters: pixels 0-3 one region, 4-7 another, each rater's
    answer in each region class 1 with probability ``p`` (else 0), the two independent."""
    g = torch.Generator().manual_seed(seed)
    answers = (torch.rand(n, 4, 2, generator=g) < p).long()  # [image, rater, region]
    return answers.repeat_interleave(4, dim=2)[:, :, None, :]


def test_pairs_chosen_by_the_raters_disagreement_bias_the_targets() -> None:
    """Two independent regions, class 1 with p = 0.8, 4 raters per image. Pairs drawn where
    the raters disagree (the labels' ambiguous pixels) see region 1 only when its 4 answers
    differ, so their targets' marginal is E[share | not all equal] = (0.8 - 0.8^4) /
    (1 - 0.8^4 - 0.2^4) = 0.663 (by hand), not 0.8; L_cal holds G's marginal at F's 0.8, and
    the two pulls together make G anti-correlate independent regions. Pairs drawn from a
    pool that does not look at the labels (F's uncertain pixels; here every pixel) have the
    unbiased mean 0.8."""
    modes = _raters(6000, 0.8, seed=1)
    w = torch.ones(modes.shape[:2])
    valid = torch.ones(modes.shape[0], 1, 8, dtype=torch.bool)
    q = mode_label_probs(modes, w, 2)
    want = (0.8 - 0.8**4) / (1 - 0.8**4 - 0.2**4)
    for pool, expected in [(label_ambiguous(q, valid), want), (valid, 0.8)]:
        g = torch.Generator().manual_seed(0)
        i, j, mask = sample_pixel_pairs(pool, 16, g)
        across = (i < 4) & (j >= 4) & mask
        t = pair_targets(modes, w, i, j, 2)[across]  # [pairs, 2, 2]
        share = float(t[:, 1, :].sum(1).mean())  # region 1's class-1 share in the targets
        assert share == pytest.approx(expected, abs=0.015)
    assert abs(want - 0.8) > 0.1  # the two are far apart


def test_joint_term_draws_only_from_the_candidates() -> None:
    """``candidates`` restricts the pairs: with one certain-labelled pixel pair as the only
    candidates, the loss is that pair's (0 for G's crisp right answer)."""
    modes = torch.tensor([[[[0, 1, 1, 0]], [[1, 1, 0, 0]]]])  # 2 annotations, 1x4
    w = torch.ones(1, 2)
    valid = torch.ones(1, 1, 4, dtype=torch.bool)
    logits = torch.full((1, 3, 2, 1, 4), -BIG)
    logits[:, :, 1, :, 1] = BIG  # pixel 1: class 1 (both annotations agree)
    logits[:, :, 0, :, 3] = BIG  # pixel 3: class 0 (both agree)
    logits[:, :, 0, :, 0] = BIG  # the ambiguous pixels 0 and 2: always class 0
    logits[:, :, 0, :, 2] = BIG
    only = torch.tensor([[[False, True, False, True]]])
    g = torch.Generator().manual_seed(0)
    assert float(joint_term(logits, modes, w, valid, 32, g, "sq", candidates=only)) == (
        pytest.approx(0.0, abs=1e-6)
    )
    # the labels' own ambiguous pixels (0 and 2) see the wrong joint answer: a positive loss
    assert float(joint_term(logits, modes, w, valid, 32, g, "sq")) > 0.1


@pytest.mark.parametrize(("setting", "by_f"), [("labels", False), ("calibrator", True)])
def test_joint_pixels_chooses_the_pool(monkeypatch, setting, by_f) -> None:
    """refiner.joint_pixels: labels draws the pairs from the labels' ambiguous pixels (the
    joint term gets no pool), calibrator from F's uncertain pixels (top probability below
    refiner.region_threshold)."""
    from carcli.data.batches import Batch
    from carcli.recipe.load import load_recipe
    from carcli.training import step as step_module

    seen = {}

    def spy(*args, **kwargs):
        seen["pool"] = args[9] if len(args) > 9 else kwargs.get("candidates")
        return torch.zeros(())

    monkeypatch.setattr(step_module, "joint_term", spy)
    r = load_recipe("recipes/toy.yaml", [f"refiner.joint_pixels={setting}"])
    terms = step_module.RefinerTerms.from_recipe(r, "segmentation", 3, 255)
    (fn,) = [f for name, _, f in terms.extras if name == "loss_joint"]
    p = torch.tensor([0.95, 0.5, 0.89, 1.0]).reshape(1, 1, 1, 4)
    p = torch.cat([p, 1 - p, torch.zeros_like(p)], 1)  # [1, 3, 1, 4]
    modes = torch.zeros(1, 2, 1, 4, dtype=torch.long)
    batch = Batch(
        torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4), modes[:, 0], None, modes, torch.ones(1, 2)
    )
    fn(torch.zeros(1, 2, 3, 1, 4), batch, torch.ones(1, 1, 4, dtype=torch.bool), None, None, p)
    if by_f:
        assert seen["pool"].tolist() == [[[False, True, True, False]]]  # below 0.9
    else:
        assert seen["pool"] is None
