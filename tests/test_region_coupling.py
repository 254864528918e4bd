"""Learned region coupling (issue 25): the association targets, the head's training, the
recombination by groups, and the coupled-pair figures of `evaluate`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from carcli.data.batches import BatchSource
from carcli.data.dataset import DatasetFile
from carcli.metrics.association import association
from carcli.metrics.factors import region_pairs, summarise_regions
from carcli.models.coupling import RegionCoupling
from carcli.sampling.regions import (
    CoupledRegions,
    independent_regions,
    region_groups,
    region_offsets,
)
from carcli.training.coupling import (
    CHECK_EVERY,
    coupling_examples,
    coupling_scores,
    expand_flips,
    pair_targets,
    predict_pairs,
    train_coupling,
)

# ---------------------------------------------------------------- association (hand cases)


def test_association_of_exact_modes() -> None:
    x = np.array([[1.0], [1.0], [0.0], [0.0]])
    y = np.array([[1.0], [0.0], [1.0], [0.0]])
    w = np.full(4, 0.25)
    assert association(x, y, w) == pytest.approx(0.0, abs=1e-12)  # two independent coins
    assert association(x, x, w) == pytest.approx(1.0)  # one coin
    # one coin seen with p = 0.2: still fully associated
    assert association(
        np.array([[1.0], [0.0]]), np.array([[0.0], [1.0]]), np.array([0.2, 0.8])
    ) == (pytest.approx(1.0))
    # binary answers: the squared correlation phi^2. Joint P(1,1)=.4 P(1,0)=.1 P(0,1)=.1
    # P(0,0)=.4 -> phi = (.4*.4 - .1*.1) / (.5*.5) = 0.6, phi^2 = 0.36
    xb = np.array([[1.0], [1.0], [0.0], [0.0]])
    yb = np.array([[1.0], [0.0], [1.0], [0.0]])
    assert association(xb, yb, np.array([0.4, 0.1, 0.1, 0.4])) == pytest.approx(0.36)


def test_association_of_raters_is_permutation_standardised() -> None:
    """Uniform annotations: t = (A - mean over re-pairings of A) / (1 - that mean), A the
    plug-in squared distance correlation (phi^2 for binary answers). By hand, 4 raters:
    x = (1,1,0,0), y = (1,0,1,0): A = 0; of the 6 equally likely ways y's two 1s can sit,
    one overlaps x's fully and one not at all (phi^2 = 1), four by one (phi^2 = 0), so the
    mean is 1/3 and t = (0 - 1/3) / (2/3) = -1/2. A 3-to-1 split against a 2-to-2 split has
    phi^2 = 1/3 under every pairing: t = 0 (no information)."""
    col = lambda v: np.array(v, dtype=float)[:, None]  # noqa: E731
    assert association(col([1, 1, 0, 0]), col([1, 0, 1, 0])) == pytest.approx(-0.5)
    assert association(col([1, 0, 0, 0]), col([1, 1, 0, 0])) == pytest.approx(0.0, abs=1e-12)
    for x in ([1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 1, 0, 1]):  # one coin: exactly 1
        assert association(col(x), col(x)) == pytest.approx(1.0)
        assert association(col(x), 1 - col(x)) == pytest.approx(1.0)
    assert association(col([1, 0]), col([0, 1])) is None  # 2 raters: every pairing is perfect
    assert association(np.zeros((4, 1)), col([0, 1, 0, 1])) is None  # a constant side
    assert association(np.zeros((4, 1)), col([0, 1, 0, 1]), np.full(4, 0.25)) is None


@pytest.mark.parametrize(("p", "q"), [(0.2, 0.2), (0.5, 0.7), (0.9, 0.3)])
def test_raters_association_is_exactly_zero_on_average_for_independent_coins(p, q) -> None:
    """Every outcome of 4 raters on two independent binary regions (coins p and q),
    enumerated with its probability: the mean of t where defined is 0 (exchangeable raters:
    given the answers, every pairing is equally likely)."""
    import itertools

    total = mass = 0.0
    for xs in itertools.product((0, 1), repeat=4):
        for ys in itertools.product((0, 1), repeat=4):
            pr = np.prod([p if v else 1 - p for v in xs]) * np.prod([q if v else 1 - q for v in ys])
            t = association(np.array(xs, float)[:, None], np.array(ys, float)[:, None])
            if t is not None:
                total, mass = total + pr * t, mass + pr
    assert mass > 0.2 and abs(total / mass) < 1e-12


def test_association_of_many_raters_uses_fixed_random_pairings() -> None:
    """Beyond 7 raters the permutation mean is over fixed random pairings: the same value
    each call, near 0 on average for independent coins and 1 for one coin."""
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, (10, 1)).astype(float)
    assert association(z, z) == pytest.approx(1.0)
    y = rng.integers(0, 2, (10, 1)).astype(float)
    assert association(z, y) == association(z, y)
    values = [
        association(rng.integers(0, 2, (10, 1)) * 1.0, rng.integers(0, 2, (10, 1)) * 1.0)
        for _ in range(300)
    ]
    assert abs(np.mean([v for v in values if v is not None])) < 0.03


# ---------------------------------------------------------------- targets from the labels


def _objects(size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Region ids [H, W] of two separate 3x3 objects (ids 0, 1) and their masks."""
    ids = np.full((size, size), 64, dtype=np.int64)
    ids[1:4, 1:4] = 0
    ids[7:10, 7:10] = 1
    return ids, np.stack([ids == 0, ids == 1])


def _modes(coupled: bool, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Modes of two objects flipping between class 1 and 2: one coin or two fair coins."""
    _, masks = _objects(size)
    states = [(1, 1), (2, 2)] if coupled else [(1, 1), (1, 2), (2, 1), (2, 2)]
    labels = np.zeros((len(states), size, size), dtype=np.uint8)
    for k, (a, b) in enumerate(states):
        labels[k][masks[0]], labels[k][masks[1]] = a, b
    return labels, np.full(len(states), 1.0 / len(states))


def test_pair_targets_follow_the_labels() -> None:
    ids, _ = _objects()
    labels, w = _modes(coupled=True)
    assert pair_targets(labels, w, ids, 3) == [(0, 1, pytest.approx(1.0))]
    labels, w = _modes(coupled=False)
    assert pair_targets(labels, w, ids, 3) == [(0, 1, pytest.approx(0.0, abs=1e-9))]


def test_class_flips_expand_into_their_modes() -> None:
    label = np.array([[1, 0, 3]], dtype=np.uint8)
    maps, w = expand_flips(label, [(1, 2, 0.25), (3, 4, 0.5)])
    assert w.tolist() == [0.375, 0.375, 0.125, 0.125]
    assert maps.tolist() == [[[1, 0, 3]], [[1, 0, 4]], [[2, 0, 3]], [[2, 0, 4]]]


# ---------------------------------------------------------------- recombination by groups


def test_region_groups_join_coupled_chains() -> None:
    pairs = np.array([[0, 1], [0, 2], [1, 2], [2, 3], [3, 4]])
    assert region_groups(5, pairs, np.array([1, 0, 0, 0, 1])).tolist() == [0, 0, 1, 2, 2]
    assert region_groups(3, pairs[:0], np.zeros(0)).tolist() == [0, 1, 2]


class _Head:
    """A stand-in head: pairs in ``coupled`` get a positive logit."""

    def __init__(self, coupled: set[tuple[int, int]]) -> None:
        self.coupled = coupled

    def __call__(self, x, p, ids, pairs):
        return torch.tensor(
            [4.0 if (int(r), int(s)) in self.coupled else -4.0 for _, r, s in pairs]
        )


def _three_regions(m: int) -> tuple[np.ndarray, np.ndarray]:
    p = np.zeros((1, 2, 6, 12), dtype=np.float32)
    p[:, 0] = 1.0
    p[:, 0, 1:3, 0:2] = 0.6  # region 0
    p[:, 0, 1:3, 5:7] = 0.6  # region 1
    p[:, 0, 1:3, 10:12] = 0.6  # region 2
    p[:, 1] = 1 - p[:, 0]
    samples = np.broadcast_to(np.arange(m, dtype=np.uint8)[None, :, None, None], (1, m, 6, 12))
    return p, np.ascontiguousarray(samples)


def test_coupled_regions_keep_one_draw_and_groups_are_drawn_apart() -> None:
    p, samples = _three_regions(6)
    mix = CoupledRegions(_Head({(0, 2)}), threshold=0.9, link=0)
    image = np.zeros((1, 3, 6, 12), dtype=np.float32)
    for row in range(10):
        out = mix(samples, p, np.array([row]), 0, image=image)
        # regions 0 and 2 (coupled) come from one draw in every output; region 1 from another
        assert (out[0, :, 1, 0] == out[0, :, 1, 10]).all()
        assert (out[0, :, 1, 0] != out[0, :, 1, 5]).all()
        assert (out[0, :, 0, 3] == np.arange(6)).all()  # certain pixels stay
        assert np.array_equal(np.sort(out, 1), np.sort(samples, 1))  # marginals kept
        assert (out[0, :, 1, 0] == np.arange(6)).all()  # the first group keeps its draw


def test_all_independent_calls_draw_every_region_apart() -> None:
    """Every pair called independent: region r of output m is G's draw (m + o_r - o_0) mod M
    (the first region keeps its draw), as independent_regions up to which output is which."""
    p, _ = _three_regions(5)
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 3, size=(1, 5, 6, 12), dtype=np.uint8)
    mix = CoupledRegions(_Head(set()), threshold=0.9, link=0)
    out = mix(samples, p, np.array([3]), 7, image=np.zeros((1, 3, 6, 12), np.float32))
    o = region_offsets(7, 3, 5)
    for m in range(5):
        for r, cols in enumerate((slice(0, 2), slice(5, 7), slice(10, 12))):
            src = (m + o[r] - o[0]) % 5
            assert np.array_equal(out[0, m, 1:3, cols], samples[0, src, 1:3, cols])
    ref = independent_regions(samples, p, np.array([3]), 7, 0.9, 0)
    assert np.array_equal(np.sort(out, 1), np.sort(ref, 1))


# ---------------------------------------------------------------- the head learns a cue


def _cue_split(path, n: int, seed: int) -> None:
    """Two objects per image; a bright cue pixel on both says they share one coin."""
    from carcli.data.dataset import Classes, write_dataset

    rng = np.random.default_rng(seed)
    ids, masks = _objects()
    image = rng.normal(0, 0.05, (n, 3, 12, 12)).astype(np.float32)
    label = np.zeros((n, 4, 12, 12), dtype=np.uint8)
    weight = np.zeros((n, 4), dtype=np.float32)
    for i in range(n):
        coupled = bool(i % 2)
        image[i, :, masks[0] | masks[1]] += 0.5
        if coupled:
            image[i, 1, 2, 2] = image[i, 1, 8, 8] = 3.0
        lab, w = _modes(coupled)
        label[i, : len(lab)], weight[i, : len(w)] = lab, w
    write_dataset(path, image=image, label=label, label_weight=weight, classes=Classes(3))


class _Uncertain(torch.nn.Module):
    """A stand-in F: uncertain (0.5 / 0.5) where the image is bright, else background."""

    def forward(self, x):
        bright = (x.mean(1, keepdim=True) > 0.25).float()
        return torch.log(torch.cat([1 - 0.5 * bright, 0.25 * bright, 0.25 * bright], 1) + 1e-6)


def test_the_head_learns_which_pairs_go_together(tmp_path) -> None:
    _cue_split(tmp_path / "train.h5", 32, 0)
    _cue_split(tmp_path / "val.h5", 16, 1)
    with DatasetFile(tmp_path / "train.h5") as tr, DatasetFile(tmp_path / "val.h5") as va:
        ex = coupling_examples(_Uncertain(), BatchSource(tr), 0.9, 0, torch.device("cpu"))
        assert len(ex.pairs) == 32 and ex.target.sum() == pytest.approx(16.0)
        head = train_coupling(ex, steps=150, lr=5e-3, seed=0, width=8, batch_images=16)
        val = coupling_examples(_Uncertain(), BatchSource(va), 0.9, 0, torch.device("cpu"))
        scores = coupling_scores(head, val)
    assert scores["pairs"] == 16 and scores["coupled_pairs"] == 8
    assert scores["accuracy"] == 1.0
    assert isinstance(head, RegionCoupling)
    # a split without coupled pairs: the share found is None (strict JSON), not NaN
    alone = dataclasses.replace(
        val, pairs=val.pairs[val.target < 0.5], target=val.target[val.target < 0.5]
    )
    only_independent = coupling_scores(head, alone)
    assert only_independent["coupled_found"] is None
    json.loads(json.dumps(only_independent, allow_nan=False))
    # early stopping on validation pairs: with the truth as validation the last check is best,
    # with every target flipped the first check is (the head only learns the truth)
    as_is = train_coupling(ex, steps=300, lr=5e-3, seed=0, width=8, batch_images=16, val=val)
    flipped = dataclasses.replace(val, target=1.0 - val.target)
    wrong = train_coupling(ex, steps=300, lr=5e-3, seed=0, width=8, batch_images=16, val=flipped)
    assert as_is.selected_step > CHECK_EVERY and wrong.selected_step == CHECK_EVERY

    def error(head: RegionCoupling) -> float:
        return float(np.mean((predict_pairs(head, val) - val.target) ** 2))

    assert error(as_is) < error(wrong)  # the head kept is the one of the lowest error


# ---------------------------------------------------------------- evaluate sees both errors


def test_region_pairs_score_coupled_and_independent_pairs() -> None:
    labels, w = _modes(coupled=True)
    together = np.stack([labels[0]] * 5 + [labels[1]] * 5)
    # samples that draw the twins apart: states (1, 2) and (2, 1) half the time
    mixed = together.copy()
    _, masks = _objects()
    mixed[:5, masks[1]] = 2
    mixed[5:, masks[1]] = 1
    oracle = np.array([0, 1] * 5)
    (good,) = region_pairs(labels, w, together, oracle)
    (bad,) = region_pairs(labels, w, mixed, oracle)
    assert good["coupled"] and good["agree"] == 1.0 and good["joint_tv"] == pytest.approx(0.0)
    assert bad["agree"] == 0.0 and bad["joint_tv"] == pytest.approx(1.0)
    out = summarise_regions([good, bad])
    assert out["coupled"]["n_pairs"] == 2 and out["coupled"]["agree_g"] == pytest.approx(0.5)
    assert out["independent"]["n_pairs"] == 0 and out["independent"]["joint_tv_g"] is None
    labels, w = _modes(coupled=False)
    (ind,) = region_pairs(labels, w, together, np.array([0, 1, 2, 3] * 3))
    assert not ind["coupled"] and ind["joint_tv"] == pytest.approx(0.5)


# ---------------------------------------------------------------- the stages carry the head


def test_cascade_trains_samples_exports_and_predicts_with_the_head(tmp_path) -> None:
    import json
    import shutil

    import h5py
    from predict_fixtures import tiny_recipe

    from carcli import load_model
    from carcli.bundle.export import run_export
    from carcli.errors import CarsegError
    from carcli.stages.prepare import run_prepare
    from carcli.stages.sample import run_sample
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import run_train_refiner

    learned = ["sample.independent_regions=false", "sample.region_coupling=learned"]
    # D weights a pool of 2M, tilted to F's region frequencies
    pooled = ["sample.region_pool=2", "sample.pool_critic=1", "sample.pool_target=calibrator"]
    r = tiny_recipe(tmp_path, "refiner.coupling_steps=3", *learned, *pooled)
    run_prepare(r, quiet=True)
    run_train_calibrator(r, quiet=True)
    without = tiny_recipe(tmp_path, "refiner.coupling_steps=0", *learned)
    run_train_refiner(without, quiet=True)
    with pytest.raises(CarsegError, match="needs the region coupling head"):
        run_sample(without, quiet=True)
    run_train_refiner(r, overwrite=True, quiet=True)
    head = tmp_path / "run" / "refiner" / "coupling.safetensors"
    manifest = json.loads((head.parent / "manifest.json").read_text())
    assert head.is_file() and "val" in manifest["coupling"]
    bank = run_sample(r, quiet=True)
    assert bank.is_file()
    bundle = run_export(r, quiet=True)
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["region_coupling"]["file"] == "coupling.safetensors"
    assert meta["region_coupling"]["pool"] == 2 and meta["region_coupling"]["pool_critic"] == 1
    assert meta["region_coupling"]["pool_target"] == "calibrator"
    assert (bundle / meta["region_coupling"]["critic_file"]).is_file()
    with h5py.File(bank) as f:
        assert f["samples"].shape[1] == r.sample.num_samples  # M kept from the pool of 2M
    split = tmp_path / "data" / "test.h5"
    from_bundle = load_model(bundle).predict([split], num_samples=8, seed=r.seed)
    recipe_file = tmp_path / "tiny.yaml"
    from carcli.recipe.load import recipe_to_yaml

    recipe_file.write_text(recipe_to_yaml(r))
    from_recipe = load_model(recipe_file).predict([split], num_samples=8, seed=r.seed)
    assert np.array_equal(from_bundle.samples, from_recipe.samples)
    copy = tmp_path / "damaged"
    shutil.copytree(bundle, copy)
    (copy / "coupling.safetensors").write_bytes(b"not a head")
    with pytest.raises(CarsegError, match="sha256 does not match"):
        load_model(copy)
    shutil.rmtree(copy)
    shutil.copytree(bundle, copy)
    (copy / "discriminator.safetensors").unlink()
    with pytest.raises(CarsegError, match="discriminator.safetensors: missing from the bundle"):
        load_model(copy)
    shutil.rmtree(copy)
    shutil.copytree(bundle, copy)
    meta["region_coupling"]["pool_target"] = "labels"
    (copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CarsegError, match='optional "pool_target": one of pool, calibrator'):
        load_model(copy)


def test_evaluate_reports_coupled_pairs_and_fail_if_reads_them() -> None:
    from carcli.metrics import EvalAccumulator, SampleCounts
    from carcli.metrics.evaluate import check_conditions

    labels, w = _modes(coupled=True)
    _, masks = _objects()
    apart = np.stack([labels[0]] * 8 + [labels[1]] * 8)
    apart[:4, masks[1]] = 2  # a quarter of the samples: the twins disagree
    apart[8:12, masks[1]] = 1
    acc = EvalAccumulator(3, counts=SampleCounts([16], 16), with_modes=True, oracle_seed=0)
    row = acc.update(0, apart, labels, w)
    assert row["coupled_pairs"] == 1 and row["coupled_agree"] == pytest.approx(0.5)
    out = acc.result()
    assert out["region_pairs"]["coupled"]["agree_g"] == pytest.approx(0.5)
    assert out["region_pairs"]["coupled"]["agree_oracle"] == pytest.approx(1.0)
    assert out["factor_dependence"]["n_pairs"] == 0  # only independent pairs there
    failed = check_conditions(out, ["region_pairs.coupled.agree_g<0.97"])
    assert failed == ["region_pairs.coupled.agree_g = 0.5 < 0.97"]
    assert check_conditions(out, ["region_pairs.coupled.joint_tv_g>0.6"]) == []


def test_without_a_labelled_pair_the_head_keeps_g_draws() -> None:
    """No pair has a defined association (e.g. fewer than four raters): every call is
    coupled, so the recombination leaves G's samples as drawn."""
    ex_ids = torch.full((1, 6, 12), 64, dtype=torch.int64)
    from carcli.training.coupling import CouplingExamples

    ex = CouplingExamples(
        torch.zeros(1, 3, 6, 12), torch.zeros(1, 2, 6, 12), ex_ids, np.zeros((0, 3), np.int64),
        np.zeros(0, np.float32),
    )  # fmt: skip
    head = train_coupling(ex, steps=5, lr=1e-3, seed=0, width=4)
    p, samples = _three_regions(5)
    rng = np.random.default_rng(1)
    samples = rng.integers(0, 3, size=samples.shape, dtype=np.uint8)
    out = CoupledRegions(head, 0.9, 0)(
        samples, p, np.array([0]), 0, image=np.zeros((1, 3, 6, 12), np.float32)
    )
    assert np.array_equal(out, samples)


def test_class_flip_splits_give_targets_from_their_modes(tmp_path) -> None:
    """A split that draws class flips afresh (the modified Cityscapes' `class_flips`): two
    instances of the flipped class are coupled, an instance of another flipped class is
    independent of them."""
    import json

    import h5py

    from carcli.data.dataset import Classes, write_dataset

    size = 16
    label = np.zeros((1, 1, size, size), dtype=np.uint8)
    label[0, 0, 1:4, 1:4] = 1  # two instances of class 1 (flips to 2 with p 0.3)
    label[0, 0, 1:4, 10:13] = 1
    label[0, 0, 10:13, 5:8] = 3  # one instance of class 3 (flips to 4 with p 0.6)
    image = np.zeros((1, 3, size, size), dtype=np.float32)
    image[:, :, label[0, 0] > 0] = 1.0
    path = tmp_path / "train.h5"
    write_dataset(path, image=image, label=label, classes=Classes(5))
    with h5py.File(path, "a") as h5:
        h5.attrs["class_flips"] = json.dumps([[1, 2, 0.3], [3, 4, 0.6]])

    class Bright(torch.nn.Module):
        def forward(self, x):
            b = (x.mean(1, keepdim=True) > 0.5).float()
            return torch.log(torch.cat([1 - 0.5 * b] + [0.125 * b] * 4, 1) + 1e-6)

    with DatasetFile(path) as ds:
        ex = coupling_examples(Bright(), BatchSource(ds), 0.9, 0, torch.device("cpu"))
    got = {(int(r), int(s)): float(t) for (_, r, s), t in zip(ex.pairs, ex.target, strict=True)}
    # regions in raster order: 0 and 1 the class-1 twins, 2 the class-3 object
    assert got[(0, 1)] == pytest.approx(1.0)
    assert got[(0, 2)] == pytest.approx(0.0, abs=1e-9)
    assert got[(1, 2)] == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------- the pool (sample.region_pool)


def test_compositions_are_class_fractions() -> None:
    from carcli.sampling.regions import compositions

    v = np.array([[0, 0, 1, 2], [2, 2, 2, 2]], dtype=np.uint8)
    assert np.allclose(compositions(v, 3), [[0.5, 0.25, 0.25], [0.0, 0.0, 1.0]])


def test_stratified_pick_uses_each_draw_once_at_uniform_weights() -> None:
    from carcli.sampling.regions import stratified_pick

    rng = np.random.default_rng(0)
    comp = np.eye(2)[rng.integers(0, 2, 10)]
    pick = stratified_pick(np.full(10, 0.1), comp, 10, rng)
    assert sorted(pick) == list(range(10))


def test_stratified_pick_counts_each_answer_within_one_of_its_share() -> None:
    """40 draws: answer a in 13 of them (share 0.325), answer b in 27; 8 picks take a
    2.6 times on average, so 2 or 3 times, never 0 or 5 as iid picks can; zero weights are
    never picked; the expected count over seeds is the share."""
    from carcli.sampling.regions import stratified_pick

    comp = np.zeros((40, 2))
    comp[:13, 0] = 1.0
    comp[13:, 1] = 1.0
    rng = np.random.default_rng(3)
    order = rng.permutation(40)
    comp = comp[order]
    counts = []
    for seed in range(400):
        pick = stratified_pick(np.full(40, 1 / 40), comp, 8, np.random.default_rng(seed))
        counts.append(int(comp[pick, 0].sum()))
    assert set(counts) == {2, 3}
    assert np.mean(counts) == pytest.approx(8 * 13 / 40, abs=0.08)
    w = np.where(comp[:, 0] == 1, 0.0, 1 / 27)
    pick = stratified_pick(w, comp, 8, np.random.default_rng(0))
    assert (comp[pick, 1] == 1).all()


def test_pool_keeps_coupled_groups_and_picks_every_group_apart() -> None:
    """pool 2: 12 draws, 6 outputs; the coupled regions 0 and 2 take one draw's answers,
    region 1 another's, certain pixels stay the first 6 draws'; each group's answer counts
    are within one of their share of the 12 draws (draw d answers d % 3 here)."""
    p, _ = _three_regions(12)
    samples = np.broadcast_to(
        (np.arange(12) % 3).astype(np.uint8)[None, :, None, None], (1, 12, 6, 12)
    ).copy()
    samples[0, :, 0, :] = np.arange(12, dtype=np.uint8)[:, None]  # certain row: the draw id
    mix = CoupledRegions(_Head({(0, 2)}), threshold=0.9, link=0, pool=2)
    for row in range(5):
        out = mix(samples, p, np.array([row]), 0, image=np.zeros((1, 3, 6, 12), np.float32))
        assert out.shape == (1, 6, 6, 12)
        assert (out[0, :, 0, 0] == np.arange(6)).all()
        assert (out[0, :, 1, 0] == out[0, :, 1, 10]).all()
        for col in (0, 5):
            assert sorted(np.bincount(out[0, :, 1, col], minlength=3)) == [2, 2, 2]


def test_tilt_weights_restore_the_mean_closest_to_the_prior() -> None:
    """Two answers, a prior 19:1 for the first: the tilt closest to it whose mean is 50/50
    is uniform; a third, mixed answer the prior all but excludes stays excluded, and the
    mean is still met."""
    from carcli.sampling.regions import tilt_weights

    comp = np.eye(2)[[0] * 5 + [1] * 5]
    prior = np.r_[[0.19] * 5, [0.01] * 5]
    w = tilt_weights([comp], [np.array([0.5, 0.5])], prior)
    assert np.allclose(w, 0.1, atol=1e-6)
    comp3 = np.r_[comp, [[0.5, 0.5]]]
    prior3 = np.r_[[0.1] * 10, [1e-6]]
    w = tilt_weights([comp3], [comp3.mean(0)], prior3 / prior3.sum())
    assert w[-1] < 1e-5 and np.allclose(w @ comp3, comp3.mean(0), atol=1e-6)
    w = tilt_weights([comp], [np.array([0.8, 0.2])], np.full(10, 0.1))
    assert np.allclose(w[:5], 0.16) and np.allclose(w[5:], 0.04)


def test_tilt_weights_meet_coupled_regions_and_targets_with_a_class_no_draw_shows() -> None:
    """Two coupled regions (the same answer in every draw: equal columns) each with F's
    target 0.4 / 0.598 for classes 1 / 2 and 0.001 each for classes 0 and 3, which no draw
    shows; the draws show class 1 in 100 of 400. Classes 0 and 3 keep 0, the rest is shared
    in F's proportions (0.4 / 0.998 for class 1), and both regions meet it."""
    from carcli.sampling.regions import reachable_target, tilt_weights

    a = (np.arange(400) < 100).astype(float)
    comp = np.stack([np.zeros(400), a, 1 - a, np.zeros(400)], 1)
    target = np.array([0.001, 0.4, 0.598, 0.001])
    assert np.allclose(reachable_target(comp, target), [0, 0.4 / 0.998, 0.598 / 0.998, 0])
    w = tilt_weights([comp, comp], [target, target], np.full(400, 1 / 400))
    assert np.isclose(w @ a, 0.4 / 0.998, atol=1e-6)
    assert np.allclose(w[:100], w[0]) and np.allclose(
        w[100:], w[100]
    )  # a tilt: one weight per answer


def test_pool_target_calibrator_gives_each_region_f_frequencies() -> None:
    """F gives class 0 probability 0.6 in each of three independent regions; G's pool of 20
    draws (pool 2, 10 outputs) shows class 0 there in 4 of 20 (G under-calibrated). With
    pool_target "calibrator" each region is class 0 in 6 of the 10 outputs (F's 0.6); with
    "pool", in 2 (the pool's 0.2); certain pixels stay the output's own draw either way."""
    p, _ = _three_regions(20)
    samples = np.ones((1, 20, 6, 12), dtype=np.uint8)
    samples[0, :, 0, :] = 0  # a certain row of class 0 (F: 1.0 there)
    samples[0, [0, 5, 10, 15], 1:3, :] = 0  # class 0 in every region in 4 draws
    image = np.zeros((1, 3, 6, 12), np.float32)
    for target, count in (("calibrator", 6), ("pool", 2)):
        mix = CoupledRegions(_Head(set()), 0.9, 0, pool=2, target=target)
        for row in range(3):
            out = mix(samples, p, np.array([row]), 0, image=image)
            for col in (0, 5, 10):
                assert (out[0, :, 1:3, col] == 0).all(1).sum() == count
            assert (out[0, :, 0, :] == 0).all()


def test_pool_critic_drops_what_d_rejects_but_keeps_the_answers_frequencies() -> None:
    """12 draws (pool 2, 6 outputs): answers all-0, all-1 and a mixed one D scores far
    lower. The mixed answer is never picked; all-0 and all-1 keep their shares of the pool's
    mean (3 and 3); at sharpness 0 the scores do nothing (each answer twice)."""
    p, _ = _three_regions(12)
    samples = np.zeros((1, 12, 6, 12), dtype=np.uint8)
    kind = np.arange(12) % 3  # 0: all 0, 1: all 1, 2: mixed (left half 1)
    samples[0, kind == 1] = 1
    samples[0, kind == 2, :, 0::2] = 1
    scores = np.where(kind == 2, -30.0, 0.0)[None]
    image = np.zeros((1, 3, 6, 12), np.float32)
    sharp = CoupledRegions(_Head(set()), 0.9, 0, pool=2, sharpness=1.0)
    out = sharp(samples, p, np.array([0]), 0, image=image, scores=scores)
    region = out[0, :, 1:3, 0:2].reshape(6, -1)
    assert set(region.mean(1)) <= {0.0, 1.0}  # no mixed answer
    assert region.mean(1).sum() == 3  # all-1 three times, all-0 three times
    flat = CoupledRegions(_Head(set()), 0.9, 0, pool=2, sharpness=0.0)
    out = flat(samples, p, np.array([0]), 0, image=image, scores=scores)
    region = out[0, :, 1:3, 0:2].reshape(6, -1)
    assert sorted(region.mean(1)) == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]


def test_draw_pools_only_images_with_a_region_and_d_scores_only_those() -> None:
    """`draw` with pool 2 and D on two images, one with uncertain regions and one F is sure
    of: the sure image's output is G's first M draws of its noise (what the pool would keep)
    and D never sees it; the other's is the pool of 2M draws picked with D's scores, exactly
    as CoupledRegions does on them."""
    import types

    from carcli.sampling.sample import draw, image_noise

    p3, _ = _three_regions(1)
    p = np.concatenate([p3, np.stack([np.ones((6, 12)), np.zeros((6, 12))])[None]]).astype(
        np.float32
    )
    logits = torch.from_numpy(np.log(np.clip(p, 1e-6, None)))

    class Source:
        info = types.SimpleNamespace(task="segmentation")

        def get(self, rows, rng, annotation=None):
            return types.SimpleNamespace(image=torch.zeros(2, 3, 6, 12), cond=torch.zeros(2))

    class Coin(torch.nn.Module):  # class 1 where F is unsure, and on row 0 where eps_0 > 0
        noise_dim = 2

        def forward(self, x, p, num_samples=1, noise=None):
            y = torch.zeros(x.shape[0], noise.shape[1], 2, 6, 12)
            y[:, :, 1] = torch.where(p[:, None, 0] < 0.9, noise[..., :1, None], -1.0)
            y[:, :, 1, 0, 0] = noise[..., 0]  # a certain pixel that still follows the noise
            return y

    seen: list[int] = []

    class Critic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x, y):
            seen.append(x.shape[0])
            return y[:, 1, 1, 0] * self.w  # prefers class 1 in region 0

    mix = CoupledRegions(_Head(set()), 0.9, 0, pool=2, critic=Critic(), sharpness=1.0)
    F_net = lambda c: logits  # noqa: E731
    rows, m = np.array([3, 7]), 8
    out, _ = draw(F_net, Coin(), Source(), rows, m, 2, 0, torch.device("cpu"),
                  independent_regions=mix)  # fmt: skip
    assert out.shape == (2, m, 6, 12) and seen == [2 * m]  # D saw only row 3's 16 draws
    sure = image_noise(0, 7, 2 * m, 2)[:m, 0]
    assert np.array_equal(out[1, :, 0, 0], (sure > 0).numpy().astype(np.uint8))
    assert (out[1, :, 1:] == 0).all()
    eps = image_noise(0, 3, 2 * m, 2)[None]
    draws = Coin()(torch.zeros(1, 3, 6, 12), torch.from_numpy(p[:1]), noise=eps)
    ids = draws.movedim(2, -1).argmax(-1).to(torch.uint8).numpy()
    scores = draws.softmax(2)[:, :, 1, 1, 0].numpy()
    want = mix(ids, p[:1], rows[:1], 0, image=np.zeros((1, 3, 6, 12)), scores=scores)
    assert np.array_equal(out[:1], want)
