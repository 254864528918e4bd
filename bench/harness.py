"""The benchmark harness: entry names, units and targets, the sizes of a full and a quick run,
timing and FLOP counting, machine information, peak RSS, and the output (table and JSON).

The entries themselves are in bench/entries.py, the fabricated LIDC-sized evaluation data in
bench/fixtures.py, the command line in bench/run.py.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "toy.yaml"
DEFAULT_OUT = REPO / "bench" / "results.json"
DEFAULT_CACHE = REPO / "bench" / ".cache"

ENTRIES = (
    "refiner_step_pixel",
    "refiner_step_dcgan",
    "calibrator_step",
    "sample_128",
    "sample_128_m100",
    "sample_256x512",
    "predict_128",
    "evaluate_lidc_test",
    "evaluate_lidc_test_rss",
)
EXTRA_ENTRIES = ("recombine_128_m100",)
"""Run only when named with --only (the contract's entry list stays as it is)."""
UNITS = {
    "refiner_step_pixel": "s/step",
    "refiner_step_dcgan": "s/step",
    "calibrator_step": "s/step",
    "sample_128": "samples/s",
    "sample_128_m100": "samples/s",
    "sample_256x512": "samples/s",
    "recombine_128_m100": "samples/s",
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
    calibrator_batch: int = 32  # calibrator_step: the LIDC recipe's batch


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
    recombine_128_m100: SampleSize = SampleSize(128, 128, 1, 2, images=4, samples=100)
    predict_128: PredictSize = field(default_factory=PredictSize)
    evaluate: EvalSize = field(default_factory=EvalSize)


FULL = Sizes()
QUICK = Sizes(
    matmul=256,
    matmul_repeats=3,
    refiner=RefinerSize(hw=32, batch=2, samples=2, repeats=1, calibrator_batch=2),
    sample_128=SampleSize(32, 32, 1, 2, images=2, samples=2, repeats=1),
    sample_128_m100=SampleSize(32, 32, 1, 2, images=2, samples=5, repeats=1),
    sample_256x512=SampleSize(32, 64, 3, 24, images=1, samples=2, repeats=1),
    recombine_128_m100=SampleSize(32, 32, 1, 2, images=2, samples=5, repeats=1),
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
# Peak memory


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


# --------------------------------------------------------------------------------------------
# Output


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
