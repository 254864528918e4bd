"""carseg benchmarks: `make bench` (or `.venv/bin/python bench/run.py`).

Measures, through the project's real code paths (no re-implementations):

* ``matmul_gflops``: float32 matmul rate of torch (2048 x 2048), the machine's yardstick;
* ``refiner_step_pixel`` / ``refiner_step_dcgan``: one `refiner_step` (Algorithm 1) at the
  paper's LIDC shapes, 128x128, 1 channel, 2 classes, batch 4, M = 20 samples, F frozen,
  D updated in the step (the worst case, R1 penalty included);
* ``sample_128`` / ``sample_256x512``: `draw` throughput in eval mode (samples per second);
* ``predict_128``: `carseg predict` (`run_predict`) on 200 PNG files of 128x128 with the LIDC
  recipe's architectures (random weights, exported as a bundle), 16 samples each, every
  output written; images per second, with the share of the wall time spent writing files
  (``write_share``);
* ``evaluate_lidc_test`` / ``evaluate_lidc_test_rss``: `evaluate_bank` over a bank the size
  of the LIDC test set (1992 images x 100 samples, 4 labels, 128x128, binary), run in a
  child process so its peak RSS is its own.

Writes ``bench/results.json`` (layout: CONTRACTS.md, "Benchmarks") and prints a table.
``--quick`` runs every benchmark at tiny sizes (seconds; its figures mean nothing, it checks
the suite itself). ``--only NAME`` (repeatable) runs some entries; the JSON then holds only
those. The fabricated LIDC-sized dataset and bank (~3.5 GB of gzip-compressed HDF5; a few
hundred MB on disk) are cached in ``bench/.cache/`` and reused while their parameters match.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RECIPE = REPO / "recipes" / "toy.yaml"
DEFAULT_OUT = REPO / "bench" / "results.json"
DEFAULT_CACHE = REPO / "bench" / ".cache"
CACHE_FORMAT = 1  # bump when the fabricated data changes

ENTRIES = (
    "refiner_step_pixel",
    "refiner_step_dcgan",
    "sample_128",
    "sample_128_m100",
    "sample_256x512",
    "predict_128",
    "evaluate_lidc_test",
    "evaluate_lidc_test_rss",
)
UNITS = {
    "refiner_step_pixel": "s/step",
    "refiner_step_dcgan": "s/step",
    "sample_128": "samples/s",
    "sample_128_m100": "samples/s",
    "sample_256x512": "samples/s",
    "predict_128": "images/s",
    "evaluate_lidc_test": "s",
    "evaluate_lidc_test_rss": "MB",
}
# Targets on the 2-core development machine: (bound, "<=" or ">=").
TARGETS: dict[str, tuple[float, str]] = {
    "refiner_step_pixel": (12.0, "<="),
    "evaluate_lidc_test": (60.0, "<="),
    "evaluate_lidc_test_rss": (2048.0, "<="),
}


# --------------------------------------------------------------------------------------------
# Sizes


@dataclass(frozen=True)
class RefinerSize:
    hw: int = 128
    batch: int = 4
    samples: int = 20
    repeats: int = 3


@dataclass(frozen=True)
class SampleSize:
    height: int
    width: int
    channels: int
    num_classes: int
    images: int
    samples: int
    repeats: int = 3


@dataclass(frozen=True)
class PredictSize:
    hw: int = 128
    images: int = 200
    samples: int = 16
    batch: int = 8


@dataclass(frozen=True)
class EvalSize:
    n: int = 1992
    samples: int = 100
    labels: int = 4
    hw: int = 128
    ged_counts: tuple[int, ...] = (16, 50, 100)
    hm_iou: int = 16
    seed: int = 0
    r_min: float = 5.0
    r_max: float = 20.0
    p_doubtful: float = 0.1


@dataclass(frozen=True)
class Sizes:
    matmul: int = 2048
    matmul_repeats: int = 5
    refiner: RefinerSize = field(default_factory=RefinerSize)
    sample_128: SampleSize = SampleSize(128, 128, 1, 2, images=4, samples=16)
    sample_128_m100: SampleSize = SampleSize(128, 128, 1, 2, images=4, samples=100)
    sample_256x512: SampleSize = SampleSize(256, 512, 3, 24, images=2, samples=16)
    predict_128: PredictSize = field(default_factory=PredictSize)
    evaluate: EvalSize = field(default_factory=EvalSize)


FULL = Sizes()
QUICK = Sizes(
    matmul=256,
    matmul_repeats=3,
    refiner=RefinerSize(hw=32, batch=2, samples=2, repeats=1),
    sample_128=SampleSize(32, 32, 1, 2, images=2, samples=2, repeats=1),
    sample_128_m100=SampleSize(32, 32, 1, 2, images=2, samples=5, repeats=1),
    sample_256x512=SampleSize(32, 64, 3, 24, images=1, samples=2, repeats=1),
    predict_128=PredictSize(hw=32, images=3, samples=2, batch=2),
    evaluate=EvalSize(
        n=6, samples=8, labels=4, hw=32, ged_counts=(4, 8), hm_iou=4, r_min=2.0, r_max=6.0
    ),
)


# --------------------------------------------------------------------------------------------
# Helpers


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: Any, quick: bool) -> dict[str, Any]:
    import torch

    dev = str(device)
    if device.type == "cuda":
        dev = f"{dev} ({torch.cuda.get_device_name(device)})"
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": dev,
        "mode": "quick" if quick else "full",
    }


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], repeats: int, device: Any) -> float:
    """Median wall time of `repeats` calls (the caller has warmed up)."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker: every FLOP goes to "Global"."""

    parents = {"Global"}

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def count_flops(fn: Callable[[], Any], device: Any) -> float:
    """FLOPs of one call (FlopCounterMode: matmuls and convolutions, forward and backward).

    FlopCounterMode's module tracker hooks break `torch.autograd.grad` on a leaf input (the
    R1 penalty: "A leaf node was passed to _will_engine_execute_node ..."), so it is replaced
    by a stub; only the total is read, which the per-module breakdown does not change.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    if hasattr(counter, "mod_tracker"):
        counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    synchronize(device)
    return float(counter.get_total_flops())


def entry(
    value: float, unit: str, flop: float | None = None, seconds: float | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"value": float(value), "unit": unit}
    if flop is not None and seconds is not None:
        out["gflop"] = flop / 1e9
        out["gflops"] = flop / 1e9 / seconds
    return out


def release() -> None:
    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


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


def bench_refiner_step(
    d_arch: str, size: RefinerSize, device: Any, g_arch: str = "unet"
) -> tuple[dict, str]:
    import torch

    from carcli.data.batches import Batch
    from carcli.models.registry import build_calibrator, build_discriminator, build_refiner
    from carcli.recipe.load import load_recipe
    from carcli.training.common import adam
    from carcli.training.refiner import Nets, refiner_step

    channels, classes, noise_dim = 1, 2, 8
    recipe = load_recipe(
        RECIPE,
        [
            f"refiner.num_samples={size.samples}",
            f"refiner.batch_size={size.batch}",
            "refiner.width=null",
            "refiner.depth=null",
            f"refiner.noise_dim={noise_dim}",
            "refiner.calibration_loss=kl",
            "calibrator.width=null",
            "calibrator.depth=null",
            f"discriminator.arch={d_arch}",
            "discriminator.width=null",
            "discriminator.max_accuracy=null",
            "discriminator.r1_weight=10.0",
            "refiner.w_joint=0",  # the paper's step (as the LIDC recipe)
        ],
    )
    r, d = recipe.refiner, recipe.discriminator
    torch.manual_seed(0)
    F_net = build_calibrator("segnet", channels, classes).to(device).eval().requires_grad_(False)
    G = build_refiner(g_arch, channels, classes, noise_dim).to(device).train()
    D = build_discriminator(d_arch, channels, classes).to(device).train()
    nets = Nets(
        F_net,
        G,
        D,
        adam(G.parameters(), r.lr, r.betas, r.weight_decay),
        adam(D.parameters(), d.lr, r.betas, r.weight_decay),
    )
    gen = torch.Generator().manual_seed(1)
    hw = size.hw
    image = torch.randn(size.batch, channels, hw, hw, generator=gen)
    label = (torch.rand(size.batch, hw, hw, generator=gen) < 0.1).long()
    batch = Batch(image.to(device), image.to(device), label.to(device))
    noise = torch.Generator(device=device).manual_seed(2)

    def step() -> None:
        out = refiner_step(nets, batch, recipe, "segmentation", classes, 255, True, noise)
        assert "loss_d" in out, "D was not updated"

    flop = count_flops(step, device)  # doubles as the warm-up step
    seconds = time_calls(step, size.repeats, device)
    setting = (
        f"{hw}x{hw}, B={size.batch}, M={size.samples}, G={g_arch}, D={d_arch} updated, "
        f"median of {size.repeats}"
    )
    return entry(seconds, "s/step", flop, seconds), setting


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
    from carcli.data.dataset import DatasetFile, write_dataset
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
        num_classes=k,
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


def bench_predict(size: PredictSize, device: Any, tmp: Path) -> tuple[dict, str]:
    """`run_predict` end to end: a bundle of the LIDC recipe's networks (random weights) and
    PNG files in a folder; every output written."""
    import torch
    from PIL import Image

    from carcli.bundle.export import run_export
    from carcli.data.dataset import DatasetFile, write_dataset
    from carcli.data.preprocess import ATTR, lidc_spec, to_json
    from carcli.predict.run import run_predict
    from carcli.recipe.load import load_recipe
    from carcli.runtime.networks import save_network
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
        num_classes=2,
        class_names=["background", "lesion"],
        eval_classes=[1],
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
        bundle,
        [str(images)],
        out=root / "out",
        num_samples=size.samples,
        batch_size=size.batch,
        device=str(device),
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
# evaluate: fabricated LIDC-like data


def _ellipses(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    ry: np.ndarray,
    rx: np.ndarray,
    theta: np.ndarray,
) -> np.ndarray:
    """Signed "radius" field of S ellipses on the grid: < 1 inside. Returns [S, H, W]."""
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    ct, st = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = (ct * dx + st * dy) / rx[:, None, None]
    v = (-st * dx + ct * dy) / ry[:, None, None]
    return np.sqrt(u * u + v * v)


def fabricate_image(rng: np.random.Generator, size: EvalSize) -> tuple[np.ndarray, ...]:
    """One lesion: image [1, H, W], labels [A, H, W], samples [M, H, W], calibration [2, H, W].

    A random ellipse (radius r_min..r_max); annotators jitter its centre and size (each
    misses it with probability 0.2, at least one does not); samples jitter it more (one in
    ten is empty); F's foreground probability is a soft version of the ellipse. A fraction
    p_doubtful of the images is a lesion no annotator marked: all labels empty, 80% of the
    samples empty, F's probability at most 0.3.
    """
    hw, a, m = size.hw, size.labels, size.samples
    yy, xx = np.mgrid[0:hw, 0:hw].astype(np.float32)
    r = rng.uniform(size.r_min, size.r_max)
    margin = size.r_max * 1.5
    cy, cx = rng.uniform(margin, hw - margin, 2) if hw > 2 * margin else (hw / 2, hw / 2)
    ratio, theta = rng.uniform(0.7, 1.3), rng.uniform(0, np.pi)

    def shapes(count: int, shift: float, scale: float) -> np.ndarray:
        s = rng.uniform(1 - scale, 1 + scale, count).astype(np.float32)
        f = _ellipses(
            yy,
            xx,
            (cy + rng.normal(0, shift, count)).astype(np.float32),
            (cx + rng.normal(0, shift, count)).astype(np.float32),
            (r * s).astype(np.float32),
            (r * ratio * s).astype(np.float32),
            (theta + rng.normal(0, 0.2, count)).astype(np.float32),
        )
        return f

    doubtful = rng.random() < size.p_doubtful
    labels = (shapes(a, 1.0, 0.15) < 1).astype(np.uint8)
    miss = rng.random(a) < (1.0 if doubtful else 0.2)
    if not doubtful:
        miss[rng.integers(a)] = False
    labels[miss] = 0
    samples = (shapes(m, 1.5, 0.25) < 1).astype(np.uint8)
    samples[rng.random(m) < (0.8 if doubtful else 0.1)] = 0
    field_ = shapes(1, 0.0, 0.0)[0]
    p1 = (0.3 if doubtful else 0.9) * 0.5 * (1 - np.tanh((field_ - 1) * r / 3.0))
    calib = np.stack([1 - p1, p1]).astype(np.float16)
    inside = (field_ < 1.2).astype(np.float32)
    image = (0.6 * inside + 0.3 * rng.standard_normal((hw, hw))).astype(np.float32)[None]
    return image, labels, samples, calib


def make_eval_data(size: EvalSize, folder: Path, rep: Callable[[str], None]) -> tuple[Path, Path]:
    """Write test.h5 (dataset) and bank.h5 into `folder`; reuse them when the key matches."""
    from carcli.data.dataset import DatasetFile, write_dataset
    from carcli.sampling.bank import create_bank

    data_path, bank_path, key_path = folder / "test.h5", folder / "bank.h5", folder / "key.json"
    key = {"format": CACHE_FORMAT, **asdict(size)}
    key["ged_counts"] = list(size.ged_counts)
    if data_path.exists() and bank_path.exists() and key_path.exists():
        with contextlib.suppress(OSError, ValueError):
            if json.loads(key_path.read_text()) == key:
                return data_path, bank_path
    folder.mkdir(parents=True, exist_ok=True)
    key_path.unlink(missing_ok=True)
    rep(
        f"fabricating the evaluation data in {folder} ({size.n} images x {size.samples} "
        "samples; once, then cached)"
    )
    t0 = time.perf_counter()
    rng = np.random.default_rng(size.seed)
    n, hw = size.n, size.hw
    images = np.empty((n, 1, hw, hw), np.float32)
    labels = np.empty((n, size.labels, hw, hw), np.uint8)
    tmp_bank = bank_path.with_name(bank_path.name + ".tmp")
    h5 = None
    try:
        chunk = 64
        samples = np.empty((chunk, size.samples, hw, hw), np.uint8)
        calib = np.empty((chunk, 2, hw, hw), np.float16)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            for i in range(a, b):
                images[i], labels[i], samples[i - a], calib[i - a] = fabricate_image(rng, size)
            if h5 is None:
                write_dataset(
                    data_path.with_name("probe.h5"),
                    image=images[:1],
                    label=labels[:1],
                    num_classes=2,
                )
                with DatasetFile(data_path.with_name("probe.h5")) as probe:
                    info = probe.info
                data_path.with_name("probe.h5").unlink()
                attrs = {
                    "dataset": str(data_path),
                    "split": "test",
                    "num_samples": size.samples,
                    "seed": size.seed,
                }
                h5 = create_bank(tmp_bank, info, n, size.samples, attrs)
            h5["samples"][a:b] = samples[: b - a]
            h5["calibration"][a:b] = calib[: b - a]
        assert h5 is not None
        h5["index"][...] = np.arange(n, dtype=np.int64)
        h5.close()
        h5 = None
        write_dataset(
            data_path,
            image=images,
            label=labels,
            num_classes=2,
            class_names=["background", "lesion"],
            eval_classes=[1],
        )
        os.replace(tmp_bank, bank_path)
    finally:
        if h5 is not None:
            h5.close()
        tmp_bank.unlink(missing_ok=True)
    key_path.write_text(json.dumps(key))
    rep(f"evaluation data written in {time.perf_counter() - t0:.0f} s")
    return data_path, bank_path


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own address
    space. Not ru_maxrss: the kernel carries it across execve, so a child started from a large
    parent (subprocess uses vfork) reports the parent's RSS when that is the larger.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


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
        str(Path(__file__).resolve()),
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


# --------------------------------------------------------------------------------------------
# Main


def print_table(results: dict[str, Any], settings: dict[str, str], wall: float) -> None:
    from rich.console import Console
    from rich.table import Table

    m = results["machine"]
    console = Console(width=None if sys.stdout.isatty() else 100)
    table = Table(title=f"carseg benchmarks ({m['mode']})")
    table.add_column("benchmark", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("unit", no_wrap=True)
    table.add_column("GFLOP", justify="right", no_wrap=True)
    table.add_column("GFLOP/s", justify="right", no_wrap=True)
    table.add_column("per matmul GFLOP/s", justify="right", no_wrap=True)
    table.add_column("target", no_wrap=True)
    table.add_row("matmul_gflops", f"{results['matmul_gflops']:.1f}", "GFLOP/s", "", "", "", "")
    if "matmul_gflops_bf16" in results:
        bf16 = f"{results['matmul_gflops_bf16']:.1f}"
        table.add_row("matmul_gflops_bf16", bf16, "GFLOP/s", "", "", "", "")
    for name in ENTRIES:
        if name not in results:
            continue
        e = results[name]
        target = ""
        if name in TARGETS and m["mode"] == "full":
            bound, op = TARGETS[name]
            ok = e["value"] <= bound if op == "<=" else e["value"] >= bound
            target = f"{op} {bound:g} " + ("[green]ok[/]" if ok else "[red]missed[/]")
        value = e["value"]
        table.add_row(
            name,
            f"{value:.4g}" if value < 1000 else f"{value:.0f}",
            e["unit"],
            f"{e['gflop']:.1f}" if "gflop" in e else "",
            f"{e['gflops']:.1f}" if "gflops" in e else "",
            f"{e[PER_MATMUL]:.3g}" if PER_MATMUL in e else "",
            target,
        )
    console.print(table)
    console.print(
        f"machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, "
        f"device {m['device']}, torch {m['torch']}, numpy {m['numpy']}, "
        f"python {m['python']}",
        highlight=False,
    )
    for name, text in settings.items():
        console.print(f"{name}: {text}", highlight=False)
    console.print(f"suite wall time: {wall:.0f} s", highlight=False)


PER_MATMUL = "per_matmul_gflops"
"""Added key of the samples/s entries: samples/s per GFLOP/s of the measured matmul rate, so
figures from machines of different speed compare."""


def add_per_matmul(results: dict[str, Any]) -> None:
    rate = results.get("matmul_gflops")
    for name in ENTRIES:
        e = results.get(name)
        if e and e["unit"] == "samples/s" and rate:
            e[PER_MATMUL] = e["value"] / rate


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the suite, seconds")
    p.add_argument(
        "--only",
        action="append",
        choices=ENTRIES,
        metavar="NAME",
        help=f"run only this entry (repeatable): {', '.join(ENTRIES)}",
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="results JSON (default: bench/results.json)"
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="folder of the fabricated LIDC-sized evaluation data",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--evaluate-child", nargs=4, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.evaluate_child:
        evaluate_child(args.evaluate_child)
        return 0
    from carcli.runtime.device import select_device

    t_start = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    device = select_device(args.device)
    wanted = set(args.only or ENTRIES)
    if "evaluate_lidc_test_rss" in wanted:
        wanted.add("evaluate_lidc_test")  # one run gives both
    if "evaluate_lidc_test" in wanted:
        wanted.add("evaluate_lidc_test_rss")

    def rep(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    results: dict[str, Any] = {"machine": machine_info(device, args.quick)}
    settings: dict[str, str] = {}
    rep(f"matmul {sizes.matmul}x{sizes.matmul} ...")
    results["matmul_gflops"] = bench_matmul(sizes.matmul, sizes.matmul_repeats, device)
    settings["matmul_gflops"] = (
        f"float32 {sizes.matmul}x{sizes.matmul} matmul, median of {sizes.matmul_repeats}"
    )
    if device.type == "cuda":  # the yardstick of speed.amp=bf16 runs (an extra key)
        import torch

        size = 4 * sizes.matmul
        results["matmul_gflops_bf16"] = bench_matmul(
            size, sizes.matmul_repeats, device, torch.bfloat16
        )
        settings["matmul_gflops_bf16"] = f"bfloat16 {size}x{size} matmul (CUDA only)"
    with tempfile.TemporaryDirectory(prefix="carseg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for d_arch in ("pixel", "dcgan"):
            name = f"refiner_step_{d_arch}"
            if name in wanted:
                rep(f"{name} ...")
                results[name], settings[name] = bench_refiner_step(d_arch, sizes.refiner, device)
                release()
        for name, size in (
            ("sample_128", sizes.sample_128),
            ("sample_128_m100", sizes.sample_128_m100),
            ("sample_256x512", sizes.sample_256x512),
        ):
            if name in wanted:
                rep(f"{name} ...")
                results[name], settings[name] = bench_sample(size, device, tmp)
                release()
        if "predict_128" in wanted:
            rep("predict_128 ...")
            results["predict_128"], settings["predict_128"] = bench_predict(
                sizes.predict_128, device, tmp
            )
            release()
        if "evaluate_lidc_test" in wanted:
            rep("evaluate_lidc_test ...")
            folder = tmp / "eval" if args.quick else args.cache / "lidc_test"
            results["evaluate_lidc_test"], results["evaluate_lidc_test_rss"], setting = (
                bench_evaluate(sizes.evaluate, folder, rep)
            )
            settings["evaluate_lidc_test"] = setting
            settings["evaluate_lidc_test_rss"] = "peak RSS of the evaluating process"
    wall = time.perf_counter() - t_start
    add_per_matmul(results)
    write_json(args.out, results)
    print_table(results, settings, wall)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
