"""The benchmark entries: each calls the project's own code (the refiner step, `draw`,
`run_predict`, `evaluate_bank`) at the sizes bench/harness.py gives and returns its result
entry and a line describing the setting.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.fixtures import make_eval_data
from bench.harness import (
    RECIPE,
    REPO,
    EvalSize,
    PredictSize,
    RefinerSize,
    SampleSize,
    count_flops,
    entry,
    peak_rss_mb,
    time_calls,
)

RUN = Path(__file__).resolve().with_name("run.py")
"""The command line; `bench_evaluate` runs it again as ``--evaluate-child``."""


# --------------------------------------------------------------------------------------------
# matmul


def bench_matmul(size: int, repeats: int, device: Any, dtype: Any = None) -> float:
    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device, dtype or torch.float32)
    b = torch.randn(size, size, generator=gen).to(device, dtype or torch.float32)
    torch.mm(a, b)  # warm-up
    seconds = time_calls(lambda: torch.mm(a, b), repeats, device)
    return 2.0 * size**3 / seconds / 1e9


# --------------------------------------------------------------------------------------------
# refiner_step


def _step_recipe(name: str, overrides: list[str]) -> Any:
    from carcli.recipe.load import load_recipe

    return load_recipe(REPO / "recipes" / f"{name}.yaml", overrides)


def _info(channels: int, classes: int) -> Any:
    """What the network builders read from a dataset's info (a segmentation set)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        task="segmentation",
        num_classes=classes,
        in_channels=channels,
        calibrator_in_channels=channels,
        label_shape=(1,),
    )


def refiner_step_setup(
    d_arch: str | None,
    size: RefinerSize,
    device: Any,
    extra: tuple[str, ...] = (),
    recipe_name: str = "lidc",
    parts: bool = False,
) -> Any:
    """The networks, batch and recipe of :func:`bench_refiner_step`; returns ``run(i)``
    (one `RefinerStep` call at loop step i, D updated), the recipe and the setting's text (and,
    with ``parts``, {"net": D, "call": G's call, "opt": D's Adam}: what the CUDA check of
    scripts/gpu_train_steps.py inspects)."""
    import torch

    from carcli.data.batches import Batch
    from carcli.training.networks import new_calibrator, new_discriminator, new_refiner
    from carcli.training.refiner import step_nets
    from carcli.training.step import RefinerStep

    toy = recipe_name == "toy"
    over = ["discriminator.max_accuracy=null"]  # D is updated in every timed step
    if not toy:
        over += [f"refiner.num_samples={size.samples}", f"refiner.batch_size={size.batch}"]
    if d_arch:
        over += [f"discriminator.arch={d_arch}", "discriminator.width=null"]
    recipe = _step_recipe(recipe_name, over + list(extra))
    r, d = recipe.refiner, recipe.discriminator
    channels, classes = (3, 3) if toy else (1, 2)
    hw = recipe.data.synthetic.size if toy else size.hw
    info = _info(channels, classes)
    torch.manual_seed(0)
    F_net = new_calibrator(recipe, info).to(device).eval().requires_grad_(False)
    G, D = new_refiner(recipe, info).to(device), new_discriminator(recipe, info).to(device)
    nets = step_nets(recipe, F_net, G, D, device)
    gen = torch.Generator().manual_seed(1)
    b, annotations = r.batch_size, 4
    image = torch.randn(b, channels, hw, hw, generator=gen)
    modes = torch.randint(0, classes, (b, annotations, hw, hw), generator=gen)
    weight = torch.full((b, annotations), 1.0 / annotations)
    batch = Batch(image, image, modes[:, 0], None, modes, weight).to(device)
    noise = torch.Generator(device=device).manual_seed(2)
    k = d.r1_every
    algorithm1 = RefinerStep.from_recipe(recipe, nets, "segmentation", classes, 255, noise)

    def run(i: int) -> None:
        out = algorithm1(batch, i, d_on=True)
        assert "loss_d" in out, "D was not updated"

    setting = (
        f"{recipe_name} recipe's F ({recipe.calibrator.arch}), G ({r.arch}, width {r.width}, "
        f"depth {r.depth}), D ({d.arch}) updated with R1 x{d.r1_weight:g}"
        f"{f' every {k} steps' if k > 1 else ''}; {hw}x{hw}, B={b}, M={r.num_samples}, "
        f"median of {size.repeats}{f' calls of {k} steps' if k > 1 else ''}"
        f"{_levers(extra)}"
    )
    if parts:
        return run, recipe, setting, {"net": D, "call": nets.G, "opt": nets.opt_D}
    return run, recipe, setting


def bench_refiner_step(
    d_arch: str | None,
    size: RefinerSize,
    device: Any,
    extra: tuple[str, ...] = (),
    recipe_name: str = "lidc",
) -> tuple[dict, str]:
    """One `RefinerStep` call (Algorithm 1, D updated: R1 included) with the recipe's own F, G
    and D layouts and training settings (weights, M, speed options; ``extra``: overrides,
    e.g. the speed levers), through the same wrappers and optimisers as `train-refiner`
    (`step_nets`). LIDC: 1 channel, 2 classes, at ``size`` (the cascade issue's shapes:
    128x128, batch 4, M = 20), D = ``d_arch``; toy: the toy recipe's own shapes (3 channels,
    3 classes, 32x32, its batch and M, its D) with 4 fabricated annotations per image (the
    joint loss reads them). With discriminator.r1_every = k a timed call is k consecutive
    steps (one with R1) and the figure is per step; the FLOPs are those of that mix."""
    run, recipe, setting = refiner_step_setup(d_arch, size, device, extra, recipe_name)
    k, count = recipe.discriminator.r1_every, [0]

    def step() -> None:
        for _ in range(k):
            run(count[0])
            count[0] += 1

    flop = count_flops(step, device) / k  # doubles as the warm-up
    seconds = time_calls(step, size.repeats, device) / k
    return entry(seconds, "s/step", flop, seconds), setting


def _levers(extra: tuple[str, ...]) -> str:
    return f", with {' '.join(extra)}" if extra else ""


def bench_calibrator_step(
    size: RefinerSize, device: Any, extra: tuple[str, ...] = (), recipe_name: str = "lidc"
) -> tuple[dict, str]:
    """One step of `train-calibrator` (`calibrator_step`, through `accelerate` and the
    recipe's optimiser, as the stage calls it) with the recipe's F (LIDC: segnet width 64,
    depth 4, at ``size``: 128x128, batch 32, the recipe's; toy: its own shapes and batch)."""
    step, setting = bench_calibrator_step_setup(size, device, extra, recipe_name)
    flop = count_flops(step, device)  # doubles as the warm-up
    seconds = time_calls(step, size.repeats, device)
    return entry(seconds, "s/step", flop, seconds), setting


def bench_calibrator_step_setup(
    size: RefinerSize,
    device: Any,
    extra: tuple[str, ...] = (),
    recipe_name: str = "lidc",
    parts: bool = False,
) -> Any:
    """The network, optimiser and batch of :func:`bench_calibrator_step`: ``step()`` and
    the setting's text (and, with ``parts``, {"net": F, "call": its call, "opt": Adam})."""
    import torch

    from carcli.data.batches import Batch
    from carcli.runtime.speed import accelerate
    from carcli.training.calibrator import calibrator_step
    from carcli.training.networks import new_calibrator
    from carcli.training.optim import adam

    recipe = _step_recipe(recipe_name, list(extra))
    c = recipe.calibrator
    toy = recipe_name == "toy"
    channels, classes = (3, 3) if toy else (1, 2)
    hw = recipe.data.synthetic.size if toy else size.hw
    batch_size = size.calibrator_batch if not toy else c.batch_size
    torch.manual_seed(0)
    model = new_calibrator(recipe, _info(channels, classes)).to(device).train()
    opt = adam(model.parameters(), c.lr, c.betas, c.weight_decay, recipe.speed.optimizer)
    net = accelerate(model, recipe, device, 1, ddp=True)
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(batch_size, channels, hw, hw, generator=gen)
    label = torch.randint(0, classes, (batch_size, hw, hw), generator=gen)
    batch = Batch(image, image, label).to(device)

    def step() -> None:
        calibrator_step(net, opt, batch, "segmentation", 255)

    setting = (
        f"{recipe_name} recipe's F ({c.arch}, width {c.width}, depth {c.depth}), "
        f"{hw}x{hw}, B={batch_size}, median of {size.repeats}{_levers(extra)}"
    )
    if parts:
        return step, setting, {"net": model, "call": net, "opt": opt}
    return step, setting


# --------------------------------------------------------------------------------------------
# draw


def recipe_refiner_arch(name: str) -> str:
    """The refiner architecture recipes/<name>.yaml uses (what the sample entries measure)."""
    return _recipe(name).refiner.arch


WARMUP_CALLS = 2
"""Untimed calls of a sampling entry before its timed ones (after the flop-counting call)."""


def _recipe(name: str) -> Any:
    from carcli.recipe.load import load_recipe

    return load_recipe(REPO / "recipes" / f"{name}.yaml")


def bench_sample(size: SampleSize, device: Any, tmp: Path) -> tuple[dict, str]:
    """`draw` throughput with the networks of the LIDC recipe (128x128, 2 classes) or of the
    Cityscapes recipe (black-box input) at their default sizes, random weights."""
    import torch

    from carcli.data.batches import BatchSource
    from carcli.data.dataset import Classes, DatasetFile, write_dataset
    from carcli.models.registry import build_calibrator, build_refiner
    from carcli.runtime.speed import accelerate, settings
    from carcli.sampling.sample import draw

    rng = np.random.default_rng(0)
    n, k, c, h, w = size.images, size.num_classes, size.channels, size.height, size.width
    blackbox = None
    if k > 2:  # Cityscapes-like: F sees the image and the black box's one-hot prediction
        blackbox = rng.integers(0, k, (n, h, w), dtype=np.uint8)
    path = write_dataset(
        tmp / f"sample_{h}x{w}.h5",
        image=rng.standard_normal((n, c, h, w)).astype(np.float32),
        label=rng.integers(0, k, (n, 1, h, w), dtype=np.uint8),
        classes=Classes(k),
        blackbox=blackbox,
    )
    noise_dim = 8
    with DatasetFile(path) as ds:
        info = ds.info
        torch.manual_seed(0)
        if blackbox is None:
            F_net = build_calibrator("segnet", info.calibrator_in_channels, k)
            f_desc = "segnet F"
        else:
            F_net = build_calibrator("convnet", info.calibrator_in_channels, k)
            f_desc = f"convnet F on {c}+{k} ch"
        F_net = F_net.to(device).eval()
        recipe = _recipe("lidc" if blackbox is None else "cityscapes")
        g_arch = recipe.refiner.arch
        G = build_refiner(g_arch, c, k, noise_dim).to(device).eval()
        source = BatchSource(ds)
        rows = np.arange(n)
        # as `carseg sample` calls them: through the recipe's speed options
        speed = settings(recipe, device, 1, inference=True)
        F_call = accelerate(F_net, recipe, device, inference=True)
        G_call = accelerate(G, recipe, device, inference=True)

        def call() -> None:
            draw(
                F_call,
                G_call,
                source,
                rows,
                size.samples,
                noise_dim,
                0,
                device,
                chunk_samples=recipe.speed.sample_chunk,
            )

        flop = count_flops(call, device)
        # Two untimed calls first: the first real (not flop-counted) calls of a process run
        # 30-40% slower (oneDNN's bf16 kernels being made), and a user's run of thousands of
        # draws sees the steady state.
        for _ in range(WARMUP_CALLS):
            call()
        seconds = time_calls(call, size.repeats, device)
    per_call = n * size.samples
    setting = (
        f"{h}x{w}, {c} ch, {k} classes, {f_desc}, {g_arch} G, {n} images x "
        f"M={size.samples}, median of {size.repeats} after {WARMUP_CALLS} warm-up calls"
    )
    on = [k for k, v in speed.items() if v not in (False, "off")]
    setting += f", speed: {', '.join(f'{k}={speed[k]}' for k in on) or 'all off'}"
    out = entry(per_call / seconds, "samples/s", flop, seconds)
    out["refiner_arch"] = g_arch
    out["speed"] = speed
    return out, setting


def bench_recombine(size: SampleSize) -> tuple[dict, str]:
    """The learned region coupling's own cost at sampling (`sample.region_coupling: learned`):
    the coupling head over every pair of F's uncertain regions and the recombination of an
    M-sample bank, on 8 uncertain discs per image (F's probabilities 0.5 there, 1 elsewhere),
    a randomly initialised head. `draw` adds it to a call of ``sample_128_m100``'s size."""
    import torch

    from carcli.models.coupling import RegionCoupling
    from carcli.sampling.regions import CoupledRegions

    rng = np.random.default_rng(0)
    n, k, c, h, w = size.images, size.num_classes, size.channels, size.height, size.width
    yy, xx = np.mgrid[0:h, 0:w]
    calib = np.zeros((n, k, h, w), np.float32)
    calib[:, 0] = 1.0
    for i in range(n):
        for _ in range(8):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), max(2.0, h / 20)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            calib[i, :2, disc] = 0.5
    samples = rng.integers(0, k, (n, size.samples, h, w), dtype=np.uint8)
    image = rng.standard_normal((n, c, h, w)).astype(np.float32)
    torch.manual_seed(0)
    coupled = CoupledRegions(RegionCoupling(c, k).eval())
    rows = np.arange(n)

    def call() -> None:
        coupled(samples, calib, rows, 0, image=image)

    for _ in range(WARMUP_CALLS):
        call()
    seconds = time_calls(call, size.repeats, torch.device("cpu"))
    setting = (
        f"{h}x{w}, {n} images x M={size.samples}, 8 uncertain discs per image, random head, "
        f"median of {size.repeats} after {WARMUP_CALLS} warm-up calls"
    )
    return entry(n * size.samples / seconds, "samples/s"), setting


def bench_predict(size: PredictSize, device: Any, tmp: Path) -> tuple[dict, str]:
    """`run_predict` end to end: a bundle of the LIDC recipe's networks (random weights) and
    PNG files in a folder; every output written."""
    import torch
    from PIL import Image

    from carcli.bundle.export import run_export
    from carcli.data.dataset import Classes, DatasetFile, write_dataset
    from carcli.data.preprocess import ATTR, lidc_spec, to_json
    from carcli.predict.engine import PredictOptions
    from carcli.recipe.load import load_recipe
    from carcli.runtime.networks import save_network
    from carcli.stages.predict import ModelSource, run_predict
    from carcli.training.networks import new_calibrator, new_refiner

    root = tmp / "predict"
    recipe = load_recipe(
        str(REPO / "recipes" / "lidc.yaml"),
        [f"run_dir={root / 'run'}", f"data.dir={root / 'data'}", "data.source=prepared"],
    )
    rng = np.random.default_rng(0)
    hw = size.hw
    train = write_dataset(
        root / "data" / "train.h5",
        image=rng.standard_normal((1, 1, hw, hw)).astype(np.float32),
        label=rng.integers(0, 2, (1, 1, hw, hw), dtype=np.uint8),
        classes=Classes(2, class_names=["background", "lesion"], eval_classes=[1]),
        attrs={ATTR: to_json(lidc_spec(hw))},
    )
    with DatasetFile(train) as ds:
        info = ds.info
    torch.manual_seed(0)
    run = root / "run"
    save_network(run / "calibrator" / "model.safetensors", new_calibrator(recipe, info),
                 "calibrator", "calibrator", recipe.calibrator.arch, info, 0)  # fmt: skip
    save_network(run / "refiner" / "model.safetensors", new_refiner(recipe, info),
                 "refiner", "refiner", recipe.refiner.arch, info, 0)  # fmt: skip
    bundle = run_export(recipe, quiet=True)
    images = root / "images"
    images.mkdir()
    for i in range(size.images):
        pix = rng.integers(0, 256, (hw, hw), dtype=np.uint8)
        Image.fromarray(pix).save(images / f"crop_{i:04d}.png")
    stats = run_predict(
        ModelSource(bundle, device=str(device)),
        [str(images)],
        out=root / "out",
        opts=PredictOptions(num_samples=size.samples, batch_size=size.batch),
        quiet=True,
    )
    out = entry(size.images / stats["wall_s"], "images/s")
    out["write_share"] = round(stats["write_s"] / stats["wall_s"], 4)
    out["wall_s"] = round(stats["wall_s"], 2)
    out["speed"] = stats["speed"]  # the recipe's, through the bundle's model.json
    on = [f"{k}={v}" for k, v in stats["speed"].items() if v not in (False, "off")]
    setting = (
        f"{size.images} PNG files {hw}x{hw}, LIDC recipe's {recipe.calibrator.arch} F + "
        f"{recipe.refiner.arch} G (random weights), N={size.samples}, batch {size.batch}, "
        f"speed: {', '.join(on) or 'all off'}; writing {out['write_share']:.0%} of the wall time"
    )
    return out, setting


# --------------------------------------------------------------------------------------------
# evaluate


def evaluate_child(args: list[str]) -> None:
    """Child process: run evaluate_bank once; print seconds and this process's peak RSS."""
    data_path, bank_path, ged, hm = Path(args[0]), Path(args[1]), args[2], args[3]
    from carcli.metrics.evaluate import EvalSettings
    from carcli.recipe.load import load_recipe
    from carcli.stages.evaluate import evaluate_bank
    from carcli.ui import Reporter

    recipe = load_recipe(
        RECIPE,
        [f"evaluate.ged_counts=[{ged}]", f"evaluate.hm_iou_samples={hm}", "evaluate.split=test"],
    )
    settings = EvalSettings.from_recipe(recipe)
    t0 = time.perf_counter()
    summary, rows, _ = evaluate_bank(data_path, bank_path, settings, Reporter(quiet=True))
    seconds = time.perf_counter() - t0
    rss_mb = peak_rss_mb()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_mb": rss_mb,
                "rows": len(rows),
                "ged": summary.get("ged"),
                "hm_iou": summary.get("hm_iou"),
            }
        )
    )


def bench_evaluate(
    size: EvalSize, folder: Path, rep: Callable[[str], None]
) -> tuple[dict, dict, str]:
    data_path, bank_path = make_eval_data(size, folder, rep)
    cmd = [
        sys.executable,
        str(RUN),
        "--evaluate-child",
        str(data_path),
        str(bank_path),
        ",".join(map(str, size.ged_counts)),
        str(size.hm_iou),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"evaluation child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    rss_mb = out["rss_mb"]  # the child's own peak (RUSAGE_CHILDREN would include this parent)
    if out["rows"] != size.n:
        raise RuntimeError(f"evaluation saw {out['rows']} images, expected {size.n}")
    ged = ", ".join(f"{k}: {v:.3f}" for k, v in (out.get("ged") or {}).items())
    setting = (
        f"{size.n} images x {size.samples} samples, {size.labels} labels, "
        f"{size.hw}x{size.hw}, GED {'/'.join(map(str, size.ged_counts))}, "
        f"HM-IoU {size.hm_iou} (GED {ged})"
    )
    return entry(out["seconds"], "s"), entry(rss_mb, "MB"), setting
