#!/usr/bin/env python3
"""The paper's 1D regression sweep (section 5.1, Fig. 2, Fig. 7) through the six stages.

For every data configuration (pi, sigma) and seed: `prepare` the data, `train-calibrator` once,
then for lambda = w_cal in {1, 0}: `train-refiner` (sharing that F), `sample` (1000 samples per
test input) and `evaluate`. The showcase configuration (pi 0.9, sigma 0.03) gets a 20000-point
test split, so that its per-seed share checks have a precise reference. The stages run
in-process (the same functions as the CLI, without one Python start-up per stage); finished
stages are skipped, so an interrupted sweep resumes. Writes into --out: summary.csv (a row per
run), table.md (per configuration, medians over seeds, and the acceptance tallies),
checks.json, fig7.png (log-likelihood over training, median and IQR across seeds) and fig2.png
(pi = 0.9, sigma = 0.03, first seed: lambda = 1 against lambda = 0).

    python scripts/regression_sweep.py --jobs 2          # `make regression-sweep`
    python scripts/regression_sweep.py --report-only     # tables and figures from the runs
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAMBDAS = (1.0, 0.0)
LL_TARGET = 1.0
SHOWCASE = (0.9, 0.03)
SHOWCASE_TEST = 20000
SUMMARY_COLUMNS = [
    "pi",
    "sigma",
    "seed",
    "lambda",
    "first_step_ll_1",
    "worst_ll_second_half",
    "final_val_ll",
    "test_ll",
    "real_ll",
    "share_r0",
    "real_share_r0",
    "share_r1",
    "real_share_r1",
    "mean_vs_calibrator",
    "mean_vs_truth",
    "collapsed",
    "seconds",
]


def unit_dir(out: Path, pi: float, sigma: float, seed: int) -> Path:
    return out / f"pi{pi:g}_sigma{sigma:g}" / f"seed{seed}"


def run_dir(out: Path, pi: float, sigma: float, seed: int, lam: float) -> Path:
    return unit_dir(out, pi, sigma, seed) / f"lambda{lam:g}"


def overrides(out: Path, pi: float, sigma: float, seed: int, lam: float, steps: int | None):
    u = unit_dir(out, pi, sigma, seed)
    ov = [
        f"seed={seed}",
        f"data.regression.pi={pi}",
        f"data.regression.sigma={sigma}",
        f"data.dir={u / 'data'}",
        f"run_dir={run_dir(out, pi, sigma, seed, lam)}",
        f"refiner.w_cal={lam}",
        "threads=1",
    ]
    if steps is not None:
        ov.append(f"refiner.steps={steps}")
    return ov


def run_unit(args: tuple) -> list[dict]:
    """prepare + F once, then G, sample and evaluate for each lambda (skipping finished work)."""
    recipe_path, out, pi, sigma, seed, steps, f_steps, extra = args
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from carcli.recipe.load import load_recipe
    from carcli.stages.evaluate import run_evaluate
    from carcli.stages.prepare import run_prepare
    from carcli.stages.sample import run_sample
    from carcli.training.calibrator import run_train_calibrator
    from carcli.training.refiner import run_train_refiner

    rows = []
    first = run_dir(out, pi, sigma, seed, LAMBDAS[0])
    for lam in LAMBDAS:
        t0 = time.time()
        ov = overrides(out, pi, sigma, seed, lam, steps)
        if f_steps is not None:
            ov.append(f"calibrator.steps={f_steps}")
        if (pi, sigma) == SHOWCASE:
            # the per-seed share checks compare with the test labels' share: 20000 points
            # make that reference precise (sd ~0.003 instead of ~0.01 with 2000)
            ov.append(f"data.regression.num_test={SHOWCASE_TEST}")
        ov += list(extra)
        recipe = load_recipe(recipe_path, ov)
        rd = Path(recipe.run_dir)
        data_dir = Path(recipe.data.dir)
        if not (data_dir / "manifest.json").exists():
            run_prepare(recipe, overwrite=True, quiet=True)
        f_model = rd / "calibrator" / "model.safetensors"
        if not f_model.exists():
            if rd != first and (first / "calibrator" / "model.safetensors").exists():
                shutil.copytree(first / "calibrator", rd / "calibrator", dirs_exist_ok=True)
            else:
                run_train_calibrator(recipe, overwrite=True, quiet=True)
        if not (rd / "refiner" / "model.safetensors").exists():
            run_train_refiner(recipe, overwrite=True, quiet=True)
        if not (rd / "samples" / "test.h5").exists():
            run_sample(recipe, overwrite=True, quiet=True)
        if not (rd / "eval" / "test" / "metrics.json").exists():
            run_evaluate(recipe, overwrite=True, quiet=True)
        rows.append(collect(out, pi, sigma, seed, lam, time.time() - t0))
    return rows


def collect(out: Path, pi: float, sigma: float, seed: int, lam: float, seconds=None) -> dict:
    from carcli.plots.regression import read_loglik

    rd = run_dir(out, pi, sigma, seed, lam)
    steps, ll = read_loglik(rd / "refiner" / "metrics.jsonl")
    m = json.loads((rd / "eval" / "test" / "metrics.json").read_text())
    reach = steps[ll >= LL_TARGET]
    half = steps > steps.max() / 2
    share = m["upper_share"]
    return {
        "pi": pi,
        "sigma": sigma,
        "seed": seed,
        "lambda": lam,
        "first_step_ll_1": int(reach[0]) if len(reach) else None,
        "worst_ll_second_half": float(ll[half].min()),
        "final_val_ll": float(ll[-1]),
        "test_ll": m["log_likelihood"]["samples"],
        "real_ll": m["log_likelihood"]["real"],
        "share_r0": share["r0"]["samples"],
        "real_share_r0": share["r0"]["real"],
        "share_r1": share["r1"]["samples"],
        "real_share_r1": share["r1"]["real"],
        "mean_vs_calibrator": m["mean_vs_calibrator"],
        "mean_vs_truth": m["mean_vs_truth"],
        "collapsed": bool(m["collapsed"]),
        "seconds": None if seconds is None else round(seconds, 1),
        "_steps": steps,
        "_ll": ll,
    }


def median_first(values: list[int | None], never: float) -> float:
    return float(np.median([never if v is None else v for v in values]))


def report(out: Path, rows: list[dict], wall: float | None) -> dict:
    """summary.csv, table.md, checks.json, fig7.png, fig2.png."""
    from carcli.plots.figures import DPI  # noqa: F401  (Agg backend before any figure)
    from carcli.plots.regression import loglik_figure

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items() if not k.startswith("_")})
    (out / "summary.csv").write_text(buf.getvalue())

    configs = sorted({(r["pi"], r["sigma"]) for r in rows})
    lines = [
        "| pi | sigma | median first step ll >= 1 (lambda 1 / 0) | median worst ll, 2nd half "
        "(1 / 0) | median final test ll (1 / 0) | real data ll | collapsed runs (1 / 0) |",
        "|---|---|---|---|---|---|---|",
    ]
    sooner = steadier = 0
    per_config = {}
    grid = {}
    for pi, sigma in configs:
        by = {
            lam: [r for r in rows if (r["pi"], r["sigma"], r["lambda"]) == (pi, sigma, lam)]
            for lam in LAMBDAS
        }
        if not all(by.values()):
            continue
        never = max(int(r["_steps"].max()) for r in by[1.0]) + 1
        first = {lam: median_first([r["first_step_ll_1"] for r in by[lam]], never) for lam in by}
        worst = {lam: float(np.median([r["worst_ll_second_half"] for r in by[lam]])) for lam in by}
        final = {lam: float(np.median([r["test_ll"] for r in by[lam]])) for lam in by}
        coll = {lam: sum(r["collapsed"] for r in by[lam]) for lam in by}
        real = float(np.median([r["real_ll"] for r in by[1.0]]))
        s_ok = first[1.0] < first[0.0]
        w_ok = worst[1.0] > worst[0.0]
        sooner += s_ok
        steadier += w_ok

        def fmt_first(v: float, never: float = never) -> str:
            return "never" if v >= never else f"{v:.0f}"

        lines.append(
            f"| {pi:g} | {sigma:g} | {fmt_first(first[1.0])} / {fmt_first(first[0.0])}"
            f"{' ✓' if s_ok else ' ✗'} | {worst[1.0]:.2f} / {worst[0.0]:.2f}"
            f"{' ✓' if w_ok else ' ✗'} | {final[1.0]:.3f} / {final[0.0]:.3f} | {real:.3f} | "
            f"{coll[1.0]}/{len(by[1.0])} / {coll[0.0]}/{len(by[0.0])} |"
        )
        per_config[f"{pi:g}/{sigma:g}"] = {
            "median_first_step_ll_1": {str(k): v for k, v in first.items()},
            "median_worst_ll_second_half": {str(k): v for k, v in worst.items()},
            "median_final_test_ll": {str(k): v for k, v in final.items()},
            "collapsed": {str(k): v for k, v in coll.items()},
            "lambda1_sooner": bool(s_ok),
            "lambda1_steadier": bool(w_ok),
        }
        grid[(pi, sigma)] = {
            f"lambda = {lam:g}": _curves(by[lam]) for lam in sorted(by, reverse=False)
        }
    checks: dict = {"configs": per_config, "sooner": sooner, "steadier": steadier}
    lines += [
        "",
        f"lambda = 1 reaches ll {LL_TARGET} sooner (median over seeds) in {sooner} of "
        f"{len(per_config)} configurations; its worst ll over the second half is higher in "
        f"{steadier} of {len(per_config)}.",
    ]
    show = [r for r in rows if (r["pi"], r["sigma"]) == SHOWCASE]
    if show:
        lines += ["", f"pi = {SHOWCASE[0]}, sigma = {SHOWCASE[1]}, per seed:", ""]
        lines += [
            "| lambda | seed | share y>0 on [0, 0.4) (real) | share on [0.4, 0.8) (real) | "
            "abs(mean - F) | collapsed | test ll |",
            "|---|---|---|---|---|---|---|",
        ]
        ok = []
        for r in sorted(show, key=lambda r: (-r["lambda"], r["seed"])):
            d0 = abs(r["share_r0"] - r["real_share_r0"])
            d1 = abs(r["share_r1"] - r["real_share_r1"])
            if r["lambda"] == 1.0:
                ok.append(d0 <= 0.02 and d1 <= 0.05)
            lines.append(
                f"| {r['lambda']:g} | {r['seed']} | {r['share_r0']:.3f} ({r['real_share_r0']:.3f})"
                f" | {r['share_r1']:.3f} ({r['real_share_r1']:.3f}) | "
                f"{r['mean_vs_calibrator']:.4f} | {'yes' if r['collapsed'] else 'no'} | "
                f"{r['test_ll']:.3f} |"
            )
        lam1 = [r for r in show if r["lambda"] == 1.0]
        gap = float(np.mean([r["mean_vs_calibrator"] for r in lam1])) if lam1 else None
        checks["showcase"] = {
            "lambda1_share_within_bars_every_seed": bool(all(ok)) if ok else None,
            "lambda1_seeds_within_bars": f"{sum(ok)}/{len(ok)}",
            "lambda1_mean_vs_calibrator": gap,
            "lambda0_collapsed": sum(r["collapsed"] for r in show if r["lambda"] == 0.0),
            "lambda0_runs": sum(r["lambda"] == 0.0 for r in show),
        }
        lines += [
            "",
            f"lambda = 1: shares within 0.02 / 0.05 of the real data in "
            f"{checks['showcase']['lambda1_seeds_within_bars']} seeds; mean abs(mean of the "
            f"samples - F(x)) = {gap:.4f}. lambda = 0: {checks['showcase']['lambda0_collapsed']}"
            f" of {checks['showcase']['lambda0_runs']} runs collapsed.",
        ]
    if wall is not None:
        checks["wall_seconds"] = round(wall, 1)
        lines += ["", f"wall time: {wall / 60:.1f} min"]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "checks.json").write_text(json.dumps(checks, indent=2))
    if grid:
        loglik_figure(grid).savefig(out / "fig7.png")
    fig2(out, rows)
    print("\n".join(lines))
    return checks


def _curves(runs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(r["_steps"]) for r in runs)
    return runs[0]["_steps"][:n], np.stack([r["_ll"][:n] for r in runs])


def fig2(out: Path, rows: list[dict]) -> None:
    """Fig. 2 for the showcase configuration, first seed: lambda = 1 beside lambda = 0."""
    import h5py

    from carcli.data.dataset import DatasetFile
    from carcli.data.regression import mixture_mean_y
    from carcli.plots.regression import fit_figure

    seeds = sorted({r["seed"] for r in rows if (r["pi"], r["sigma"]) == SHOWCASE})
    if not seeds:
        return
    pi, sigma = SHOWCASE
    panels = []
    for lam in LAMBDAS:
        rd = run_dir(out, pi, sigma, seeds[0], lam)
        with h5py.File(rd / "samples" / "test.h5", "r") as bank:
            samples, calib = bank["samples"][:, :, 0], bank["calibration"][:, 0]
        with DatasetFile(unit_dir(out, pi, sigma, seeds[0]) / "data" / "test.h5") as ds:
            x = ds.h5["image"][:, 0]
            y = ds.h5["label"][:, 0, 0]
            truth = mixture_mean_y(ds.h5["mixture_mean"][...], ds.h5["mixture_weight"][...])
        panels.append(
            {
                "data_x": x,
                "data_y": y,
                "x": x,
                "samples": samples,
                "calibrator": calib,
                "true_mean": truth[:, 0],
                "title": f"lambda = {lam:g} (pi {pi}, sigma {sigma}, seed {seeds[0]})",
            }
        )
    fit_figure(panels).savefig(out / "fig2.png")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "regression.yaml"))
    ap.add_argument("--out", default="runs/regression_sweep")
    ap.add_argument("--pis", type=float, nargs="+", default=[0.5, 0.6, 0.9])
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.01, 0.02, 0.03])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="override refiner.steps")
    ap.add_argument("--f-steps", type=int, default=None, help="override calibrator.steps")
    ap.add_argument("--set", nargs="*", default=[], help="more recipe overrides KEY=VALUE")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    units = [
        (a.recipe, out, pi, sigma, seed, a.steps, a.f_steps, tuple(a.set))
        for pi in a.pis
        for sigma in a.sigmas
        for seed in a.seeds
    ]
    t0 = time.time()
    if a.report_only:
        rows = [
            collect(out, pi, sigma, seed, lam)
            for _, _, pi, sigma, seed, *_ in units
            for lam in LAMBDAS
            if (run_dir(out, pi, sigma, seed, lam) / "eval" / "test" / "metrics.json").exists()
        ]
        wall = None
    else:
        rows = []
        with get_context("spawn").Pool(a.jobs) as pool:
            for i, unit_rows in enumerate(pool.imap_unordered(run_unit, units), 1):
                rows += unit_rows
                r = unit_rows[0]
                print(
                    f"[{i}/{len(units)}] pi {r['pi']:g} sigma {r['sigma']:g} seed {r['seed']} "
                    f"done ({time.time() - t0:.0f} s)",
                    flush=True,
                )
        wall = time.time() - t0
    if not rows:
        print("no finished runs in", out)
        return 1
    rows.sort(key=lambda r: (r["pi"], r["sigma"], r["seed"], -r["lambda"]))
    report(out, rows, wall)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
