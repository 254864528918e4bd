"""carseg benchmarks: `make bench` (or `.venv/bin/python bench/run.py`).

Measures, through the project's real code paths (no re-implementations):

* ``matmul_gflops``: float32 matmul rate of torch (2048 x 2048), the machine's yardstick;
* ``refiner_step_pixel`` / ``refiner_step_dcgan``: one `RefinerStep` call (Algorithm 1) with the
  LIDC recipe's own F, G (`car`) and training settings, built as `train-refiner` builds them,
  at the cascade issue's shapes, 128x128, 1 channel, 2 classes, batch 4, M = 20 samples, F
  frozen, D (the authors' `pixel` / the recipe's `dcgan`) updated in the step (the worst
  case, R1 penalty included);
* ``calibrator_step``: one `train-calibrator` step of the LIDC recipe's F at its batch 32;
* ``recombine_128_m100`` (only with ``--only``): the learned region coupling's own cost at
  sampling (head and recombination of a 100-sample bank; samples per second);
* ``sample_128`` / ``sample_256x512``: `draw` throughput in eval mode (samples per second);
* ``predict_128``: `carseg predict` (`run_predict`) on 200 PNG files of 128x128 with the LIDC
  recipe's architectures (random weights, exported as a bundle), 16 samples each, every
  output written; images per second, with the share of the wall time spent writing files
  (``write_share``);
* ``evaluate_lidc_test`` / ``evaluate_lidc_test_rss``: `evaluate_bank` over a bank the size
  of the LIDC test set (1992 images x 100 samples, 4 labels, 128x128, binary), run in a
  child process so its peak RSS is its own.

Writes ``bench/results.json`` (layout: docs/guide.md, "Benchmark results") and prints a table.
``--quick`` runs every benchmark at tiny sizes (seconds; its figures mean nothing, it checks
the suite itself). ``--only NAME`` (repeatable) runs some entries; the JSON then holds only
those (``--only a,b`` takes a comma list). ``--set KEY=VALUE`` applies a recipe override to
the step entries (a training-speed lever, recorded as ``machine.overrides``); ``--repeats N``
times each step and sample entry N times. The fabricated LIDC-sized dataset and bank
(~3.5 GB of gzip-compressed HDF5; a few hundred MB on disk) are cached in ``bench/.cache/``
and reused while their parameters match.

The code is split in three modules beside this one: bench/harness.py (names, sizes, timing,
output), bench/fixtures.py (the fabricated evaluation data) and bench/entries.py (the
benchmarks); this file is the command line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.entries import (  # noqa: E402
    WARMUP_CALLS,
    _recipe,
    bench_calibrator_step,
    bench_evaluate,
    bench_matmul,
    bench_predict,
    bench_recombine,
    bench_refiner_step,
    bench_sample,
    evaluate_child,
    recipe_refiner_arch,
)
from bench.fixtures import CACHE_FORMAT, fabricate_image, make_eval_data  # noqa: E402
from bench.harness import (  # noqa: E402
    DEFAULT_CACHE,
    DEFAULT_OUT,
    ENTRIES,
    EXTRA_ENTRIES,
    FULL,
    PER_MATMUL,
    QUICK,
    RECIPE,
    TARGETS,
    UNITS,
    EvalSize,
    PredictSize,
    RefinerSize,
    SampleSize,
    Sizes,
    add_per_matmul,
    machine_info,
    print_table,
    release,
    write_json,
)

__all__ = [  # what other scripts (bench/threads.py, experiments/sampling/) use from here
    "CACHE_FORMAT",
    "DEFAULT_CACHE",
    "DEFAULT_OUT",
    "ENTRIES",
    "FULL",
    "PER_MATMUL",
    "QUICK",
    "RECIPE",
    "TARGETS",
    "UNITS",
    "WARMUP_CALLS",
    "EvalSize",
    "PredictSize",
    "RefinerSize",
    "SampleSize",
    "Sizes",
    "_recipe",
    "bench_calibrator_step",
    "bench_evaluate",
    "bench_matmul",
    "bench_predict",
    "bench_refiner_step",
    "bench_sample",
    "fabricate_image",
    "main",
    "make_eval_data",
    "recipe_refiner_arch",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the suite, seconds")
    p.add_argument(
        "--only",
        action="append",
        type=_names,
        metavar="NAME[,NAME...]",
        help="run only these entries (repeatable, or comma-separated): "
        f"{', '.join(ENTRIES + EXTRA_ENTRIES)} (the last only when named)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        help="timed calls of each step and sample entry (default: the mode's, 3 in full)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override for the step entries (repeatable), e.g. speed.train_bf16=true "
        "or discriminator.r1_every=4: measures a speed option",
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


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ENTRIES + EXTRA_ENTRIES]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown entry {bad[0]!r}; one of {', '.join(ENTRIES + EXTRA_ENTRIES)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.evaluate_child:
        evaluate_child(args.evaluate_child)
        return 0
    from carcli.runtime.device import select_device

    t_start = time.perf_counter()
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = _with_repeats(sizes, args.repeats)
    device = select_device(args.device)
    wanted = {n for names in args.only or [list(ENTRIES)] for n in names}
    extra = tuple(args.set)
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
                results[name], settings[name] = bench_refiner_step(
                    d_arch, sizes.refiner, device, extra
                )
                release()
        if "calibrator_step" in wanted:
            rep("calibrator_step ...")
            results["calibrator_step"], settings["calibrator_step"] = bench_calibrator_step(
                sizes.refiner, device, extra
            )
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
        if "recombine_128_m100" in wanted:
            rep("recombine_128_m100 ...")
            results["recombine_128_m100"], settings["recombine_128_m100"] = bench_recombine(
                sizes.recombine_128_m100
            )
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
    if extra:
        results["machine"]["overrides"] = list(extra)
    add_per_matmul(results)
    write_json(args.out, results)
    print_table(results, settings, wall)
    print(f"written: {args.out}")
    return 0


def _with_repeats(sizes: Sizes, repeats: int) -> Sizes:
    """``sizes`` with every step and sample entry timed ``repeats`` times."""
    from dataclasses import replace

    return replace(
        sizes,
        refiner=replace(sizes.refiner, repeats=repeats),
        sample_128=replace(sizes.sample_128, repeats=repeats),
        sample_128_m100=replace(sizes.sample_128_m100, repeats=repeats),
        sample_256x512=replace(sizes.sample_256x512, repeats=repeats),
        recombine_128_m100=replace(sizes.recombine_128_m100, repeats=repeats),
    )


if __name__ == "__main__":
    raise SystemExit(main())
