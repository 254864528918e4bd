"""The energy score (refiner.w_energy): hand-computed values and its propriety on a joint."""

from __future__ import annotations

import math

import pytest
import torch

from carcli.losses.energy import energy_score

BIG = 50.0


def _crisp(classes: list[list[int]], k: int) -> torch.Tensor:
    """Logits [1, M, K, 1, P] of M crisp samples; classes[m][p] is sample m's class at p."""
    c = torch.tensor(classes)
    logits = torch.full((1, c.shape[0], k, 1, c.shape[1]), -BIG)
    logits.scatter_(2, c[None, :, None, None, :], BIG)
    return logits


MODES = torch.tensor([[[[0, 0]], [[1, 1]]]])  # two pixels that always agree, a fair coin
WEIGHTS = torch.tensor([[0.5, 0.5]])
VALID = torch.ones(1, 1, 2)


def test_hand_values() -> None:
    # samples as the truth: fit = mean distance to the labels = (0 + 2) / 2 = 1 (one-hot maps
    # that differ at both pixels are sqrt(2 + 2) = 2 apart); spread: 8 of the 12 ordered pairs
    # differ (distance 2): 16 / (2 * 4 * 3); divided by sqrt(2 pixels)
    good = energy_score(_crisp([[0, 0], [1, 1], [0, 0], [1, 1]], 2), MODES, WEIGHTS, VALID)
    assert good.item() == pytest.approx((1 - 16 / 24) / math.sqrt(2), abs=1e-4)
    # right marginals, half the samples split the pair: fit (2 * sqrt2 + 2) / 4,
    # spread (2 * 2 + 4 * sqrt2) * 2 / 24
    bad = energy_score(_crisp([[0, 1], [1, 0], [0, 0], [1, 1]], 2), MODES, WEIGHTS, VALID)
    r2 = math.sqrt(2)
    assert bad.item() == pytest.approx(((2 * r2 + 2) / 4 - (4 + 4 * r2) * 2 / 24) / r2, abs=1e-4)
    assert bad.item() > good.item()


def test_expected_score_is_lowest_at_the_true_joint() -> None:
    # exact expectations over all 4-sample draws from three candidate joints with the same
    # marginals: the labels' (always agree), independent pixels, always disagree
    maps = [[0, 0], [0, 1], [1, 0], [1, 1]]
    joints = {"true": [0.5, 0, 0, 0.5], "independent": [0.25] * 4, "opposite": [0, 0.5, 0.5, 0]}
    expected = {}
    for name, p in joints.items():
        total = 0.0
        for a in range(4):
            for b in range(4):
                if p[a] * p[b] == 0:
                    continue
                s = energy_score(_crisp([maps[a], maps[b]], 2), MODES, WEIGHTS, VALID)
                total += p[a] * p[b] * s.item()
        expected[name] = total
    assert expected["true"] < expected["independent"] < expected["opposite"]


def test_masked_pixels_do_not_count_and_gradient_flows() -> None:
    logits = _crisp([[0, 0], [1, 1]], 2).clone().requires_grad_(True)
    # a third pixel where every sample is wrong, masked out
    extra = torch.cat([logits, _crisp([[1], [1]], 2)], dim=-1)
    modes3 = torch.tensor([[[[0, 0, 0]], [[1, 1, 0]]]])
    masked = energy_score(extra, modes3, WEIGHTS, torch.tensor([[[1, 1, 0]]]))
    plain = energy_score(logits, MODES, WEIGHTS, VALID)
    assert masked.item() == pytest.approx(plain.item(), abs=1e-5)
    soft = torch.randn(1, 3, 2, 1, 2, generator=torch.Generator().manual_seed(0)).requires_grad_()
    energy_score(soft, MODES, WEIGHTS, VALID).backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="M >= 2"):
        energy_score(soft[:, :1], MODES, WEIGHTS, VALID)


def test_recipe_checks() -> None:
    from carcli.recipe.load import RecipeError, load_recipe

    with pytest.raises(RecipeError, match="refiner.w_energy -> must be >= 0"):
        load_recipe("recipes/toy.yaml", ["refiner.w_energy=-1"])
    with pytest.raises(RecipeError, match="needs refiner.num_samples >= 2"):
        load_recipe("recipes/toy.yaml", ["refiner.w_energy=1", "refiner.num_samples=1"])
