"""The recipe's value checks beyond types (ranges, and keys that only go together), each
appending its problems to one list so that `load_recipe` reports every problem at once."""

from __future__ import annotations

from collections.abc import Callable

from carcli.recipe.schema import Recipe


def _bounds(problems: list[str]) -> tuple[Callable[[str, float], None], Callable[..., None]]:
    """Two checks that append to `problems`: positive(KEY, value) "KEY -> must be > 0" and
    at_least(KEY, value, low) "KEY -> must be >= low"."""

    def positive(key: str, value: float) -> None:
        if value <= 0:
            problems.append(f"{key} -> must be > 0, got {value}")

    def at_least(key: str, value: float, low: int) -> None:
        if value < low:
            problems.append(f"{key} -> must be >= {low}, got {value}")

    return positive, at_least


def check_ranges(r: Recipe, problems: list[str]) -> None:
    """Value checks beyond types (in this order: training keys, G's options, the rest)."""
    _check_training(r, problems)
    _check_refiner(r, problems)
    _check_rest(r, problems)


def _check_training(r: Recipe, problems: list[str]) -> None:
    positive, at_least = _bounds(problems)
    for key in ("calibrator", "refiner"):
        sec = getattr(r, key)
        for f in ("steps", "batch_size", "checkpoint_every", "val_size"):
            positive(f"{key}.{f}", getattr(sec, f))
        positive(f"{key}.lr", sec.lr)
        if sec.checkpoint_minutes < 0:
            problems.append(
                f"{key}.checkpoint_minutes -> must be >= 0 (0: off), got {sec.checkpoint_minutes}"
            )
        at_least(f"{key}.val_every", sec.val_every, 0)
        if len(sec.betas) != 2 or not all(0 <= b < 1 for b in sec.betas):
            problems.append(f"{key}.betas -> expected two numbers in [0, 1), got {sec.betas}")
        if sorted(sec.lr_milestones) != sec.lr_milestones:
            problems.append(f"{key}.lr_milestones -> must be increasing, got {sec.lr_milestones}")
    c = r.calibrator
    if c.overfit_ratio != 0 and c.overfit_ratio <= 1:
        problems.append(
            f"calibrator.overfit_ratio -> must be above 1 (or 0: off), got {c.overfit_ratio}"
        )
    dropouts = c.overfit_dropouts()
    if not dropouts or not all(0 <= d < 1 for d in dropouts):
        problems.append(
            f"calibrator.overfit_dropout -> must be in [0, 1) (or a non-empty list of such), "
            f"got {c.overfit_dropout}"
        )
    at_least("calibrator.overfit_weight_decay", c.overfit_weight_decay, 0)
    if c.overfit_ratio and c.arch == "mlp":
        problems.append(
            "calibrator.overfit_ratio -> is for segmentation calibrators (segnet, unet, "
            "convnet), got calibrator.arch=mlp"
        )
    if r.calibrator.recalibrate != "none" and r.calibrator.arch == "mlp":
        problems.append(
            f"calibrator.recalibrate -> {r.calibrator.recalibrate} is for segmentation "
            "calibrators (segnet, unet, convnet), got calibrator.arch=mlp"
        )


def _check_refiner(r: Recipe, problems: list[str]) -> None:
    positive, at_least = _bounds(problems)
    positive("refiner.num_samples", r.refiner.num_samples)
    positive("refiner.noise_dim", r.refiner.noise_dim)
    at_least("refiner.kl_beta", r.refiner.kl_beta, 0)
    if r.refiner.kl_beta > 0 and r.refiner.noise != "posterior":
        problems.append("refiner.kl_beta -> needs refiner.noise=posterior (gaussian has no q)")
    at_least("refiner.w_entropy", r.refiner.w_entropy, 0)
    at_least("refiner.w_joint", r.refiner.w_joint, 0)
    positive("refiner.joint_pairs", r.refiner.joint_pairs)
    k = r.discriminator.set_size
    if k < 0 or k == 1 or (k and k > r.refiner.num_samples):
        problems.append(
            f"discriminator.set_size -> 0 (off) or 2..refiner.num_samples "
            f"({r.refiner.num_samples}), got {k}"
        )
    at_least("refiner.calibration_temperature", r.refiner.calibration_temperature, 0)
    if r.refiner.calibration_temperature and r.refiner.calibration_loss != "kl":
        problems.append(
            "refiner.calibration_temperature -> only with refiner.calibration_loss=kl, got "
            f"{r.refiner.calibration_loss!r}"
        )
    at_least("refiner.w_energy", r.refiner.w_energy, 0)
    if r.refiner.w_energy and r.refiner.num_samples == 1:
        problems.append(
            "refiner.w_energy -> the energy score needs refiner.num_samples >= 2 (it compares "
            "different samples); set refiner.w_energy=0"
        )
    if r.refiner.w_joint and r.refiner.joint_loss == "sq" and r.refiner.num_samples == 1:
        problems.append(
            "refiner.joint_loss -> 'sq' needs refiner.num_samples >= 2 (it compares different "
            "samples); set refiner.w_joint=0 or joint_loss=kl"
        )
    at_least("refiner.joint_temperature", r.refiner.joint_temperature, 0)
    if not 0 <= r.refiner.joint_cross <= 1:
        problems.append(f"refiner.joint_cross -> must be in [0, 1], got {r.refiner.joint_cross}")
    at_least("refiner.noise_grid", r.refiner.noise_grid, 0)
    conv_g = r.refiner.arch in ("unet", "car")
    if r.refiner.noise_grid and (not conv_g or r.refiner.noise != "gaussian"):
        problems.append(
            "refiner.noise_grid -> needs refiner.arch=unet or car and refiner.noise=gaussian"
        )
    if r.refiner.noise_regions < 0 or r.refiner.region_dim < 1 or r.refiner.region_levels < 0:
        problems.append(
            "refiner.noise_regions / region_dim / region_levels -> must be >= 0 / >= 1 / >= 0,"
            f" got {r.refiner.noise_regions} / {r.refiner.region_dim} / {r.refiner.region_levels}"
        )
    if not 0 < r.refiner.region_threshold <= 1:
        problems.append(
            f"refiner.region_threshold -> must be in (0, 1], got {r.refiner.region_threshold}"
        )
    if r.refiner.noise_regions and (not conv_g or r.refiner.noise != "gaussian"):
        problems.append(
            "refiner.noise_regions -> needs refiner.arch=unet or car and refiner.noise=gaussian"
        )
    if r.refiner.noise == "posterior" and not conv_g:
        problems.append(
            f"refiner.noise -> posterior needs refiner.arch=unet or car, got {r.refiner.arch}"
        )


def _check_rest(r: Recipe, problems: list[str]) -> None:
    positive, at_least = _bounds(problems)
    positive("discriminator.lr", r.discriminator.lr)
    if r.discriminator.n_on <= 0 or r.discriminator.n_off < 0:
        problems.append("discriminator.n_on/n_off -> need n_on > 0 and n_off >= 0")
    if r.discriminator.r1_every < 1:
        problems.append(
            f"discriminator.r1_every -> must be >= 1 (1: R1 on every D update), "
            f"got {r.discriminator.r1_every}"
        )
    for key in (
        "sample.num_samples",
        "sample.batch_size",
        "sample.chunk_size",
        "evaluate.chunk_size",
        "evaluate.hm_iou_samples",
    ):
        sec, f = key.split(".")
        positive(key, getattr(getattr(r, sec), f))
    for n in r.evaluate.ged_counts:
        positive("evaluate.ged_counts", n)
    positive("distributed.timeout_s", r.distributed.timeout_s)
    if not 0 < r.sample.region_threshold <= 1:
        problems.append(
            f"sample.region_threshold -> must be in (0, 1], got {r.sample.region_threshold}"
        )
    at_least("speed.sample_chunk", r.speed.sample_chunk, 0)
    if r.sample.region_coupling == "learned" and r.sample.independent_regions:
        problems.append(
            "sample.region_coupling -> 'learned' and sample.independent_regions=true are two "
            "recombinations; keep one (region_coupling learns which regions go together)"
        )
    at_least("sample.region_pool", r.sample.region_pool, 1)
    at_least("sample.pool_critic", r.sample.pool_critic, 0)
    if r.sample.pool_critic > 0 and r.sample.region_pool < 2:
        problems.append("sample.pool_critic -> weights a pool; set sample.region_pool >= 2")
    if r.sample.pool_target != "pool" and r.sample.region_pool < 2:
        problems.append(
            "sample.pool_target -> tilts the picks from a pool; set sample.region_pool >= 2 "
            "or sample.pool_target=pool"
        )
    if r.sample.region_coupling != "learned" and r.sample.region_pool > 1:
        problems.append(
            "sample.region_pool -> the learned recombination's groups pick from the pool; "
            "set sample.region_coupling=learned or sample.region_pool=1"
        )
    at_least("refiner.coupling_steps", r.refiner.coupling_steps, 0)
    at_least("sample.region_link", r.sample.region_link, 0)
    syn, reg = r.data.synthetic, r.data.regression
    if syn.size % 16:
        problems.append(f"data.synthetic.size -> must be a multiple of 16, got {syn.size}")
    if syn.num_classes < 3:
        problems.append(
            f"data.synthetic.num_classes -> synthetic data needs >= 3, got {syn.num_classes}"
        )
    for f in ("num_train", "num_val", "num_test", "channels"):
        positive(f"data.synthetic.{f}", getattr(syn, f))
    for f in ("num_train", "num_val", "num_test"):
        positive(f"data.regression.{f}", getattr(reg, f))
    if not 0.0 <= reg.pi <= 1.0:
        problems.append(f"data.regression.pi -> must be in [0, 1], got {reg.pi}")
    at_least("threads", r.threads, 0)
