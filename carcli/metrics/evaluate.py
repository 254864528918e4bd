"""`evaluate`: stream a sample bank against its dataset split; write metrics.json + per_case.csv.

`--fail-if "ged.16>0.30"` turns a metric into a CI gate: a dotted path into metrics.json,
an operator (<, <=, >, >=, ==, !=) and a number; exit status 1 when any condition holds.
Every number in metrics.json has a path (``conventions.mose.hm_iou``, ``dice.best_match``,
``factor_dependence.g``, ``modes.within_0.8``: a key may itself hold a dot).

`evaluate.convention` (or `--convention`) picks the rule sets (``metrics.conventions``); a
requested sample count above the bank's M is an error before anything is computed. A bank
whose ``calibration`` is not F's (``import-samples`` without probabilities: attribute
``calibration_source`` = ``none``) reports the figures of F as not available (null).
"""

from __future__ import annotations

import csv
import io
import operator
import re
from pathlib import Path
from typing import Any

from carcli.artefacts.run import (
    Manifest,
    RunLayout,
    check_not_finished,
    ensure_dir,
    write_json_atomic,
    write_text_atomic,
)
from carcli.data.dataset import DatasetFile, split_path
from carcli.errors import CarsegError
from carcli.metrics.accumulate import EvalAccumulator
from carcli.metrics.conventions import CONVENTIONS, parse_conventions
from carcli.recipe.load import recipe_to_dict
from carcli.recipe.schema import Recipe
from carcli.sampling.bank import Bank
from carcli.ui import Reporter

METRICS_SCHEMA = "carseg.metrics/1"
_OPS = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_EXPR = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*(<=|>=|==|!=|<|>)\s*([-+0-9.eE]+)\s*$")


def parse_condition(text: str) -> tuple[str, str, float]:
    m = _EXPR.match(text)
    if not m:
        raise CarsegError(f"--fail-if {text!r}: expected PATH OP NUMBER, e.g. 'ged.16>0.30'")
    try:
        return m.group(1), m.group(2), float(m.group(3))
    except ValueError:
        raise CarsegError(f"--fail-if {text!r}: {m.group(3)!r} is not a number") from None


def _find(node: Any, parts: list[str]) -> Any:
    """The value at ``parts`` (keys may contain dots: the longest key that matches wins)."""
    if not parts:
        return node
    if not isinstance(node, dict):
        raise KeyError
    for k in range(len(parts), 0, -1):
        key = ".".join(parts[:k])
        if key in node:
            try:
                return _find(node[key], parts[k:])
            except KeyError:
                continue
    raise KeyError


def lookup(metrics: dict[str, Any], path: str) -> float:
    try:
        node = _find(metrics, path.split("."))
    except KeyError:
        raise CarsegError(
            f"--fail-if: metrics.json has no {path!r}",
            hint="see the keys of metrics.json, e.g. ged.16, hm_iou, ece, dice.best_match, "
            "conventions.mose.hm_iou, factor_dependence.g",
        ) from None
    if not isinstance(node, (int, float)) or isinstance(node, bool):
        raise CarsegError(f"--fail-if: {path!r} is not a number ({node!r})")
    return float(node)


def check_conditions(metrics: dict[str, Any], conditions: list[str]) -> list[str]:
    """The conditions that hold (each a failure), as readable lines."""
    failed = []
    for text in conditions:
        path, op, bound = parse_condition(text)
        value = lookup(metrics, path)
        if _OPS[op](value, bound):
            failed.append(f"{path} = {value:.6g} {op} {bound:g}")
    return failed


def evaluate_bank(
    data_path: Path, bank_path: Path, recipe: Recipe, rep: Reporter
) -> tuple[dict, list[dict], list[str]]:
    """Metrics summary, per-image rows and CSV columns of a bank against its split."""
    e = recipe.evaluate
    with DatasetFile(data_path, validate=True) as ds, Bank(bank_path, ds.info) as bank:
        info = ds.info
        if info.task == "regression":
            from carcli.metrics.regression import evaluate_regression

            figures, rows, columns = evaluate_regression(ds, bank, e.chunk_size, rep)
            summary = {
                "schema": METRICS_SCHEMA,
                "task": "regression",
                "split": e.split,
                "dataset": str(data_path),
                "bank": str(bank_path),
                "n_images": bank.n,
                "num_samples": bank.num_samples,
                **figures,
            }
            return summary, rows, columns
        check_sample_counts(bank.num_samples, e.ged_counts, e.hm_iou_samples, bank_path)
        names = conventions_of(e.convention)
        has_f = calibration_source(bank) != "none"
        acc = EvalAccumulator(
            info.num_classes,
            info.ignore_index,
            info.eval_classes,
            ged_counts=e.ged_counts,
            hm_iou_n=e.hm_iou_samples,
            with_modes=info.has_weights,
            oracle_seed=recipe.seed,
            conventions=names,
        )
        with rep.progress(bank.n, f"evaluate {e.split}") as bar:
            for a in range(0, bank.n, e.chunk_size):
                b = min(bank.n, a + e.chunk_size)
                rows = bank.index[a:b]
                samples = bank.read("samples", slice(a, b))
                calib = bank.read("calibration", slice(a, b)).astype("float32") if has_f else None
                labels = ds.read_rows("label", rows)
                weights = ds.weights(rows)
                for i, row in enumerate(rows):
                    p = None if calib is None else calib[i]
                    acc.update(int(row), samples[i], labels[i], weights[i], p)
                bar.advance(b - a)
        summary = acc.result()
        summary = {
            "schema": METRICS_SCHEMA,
            "split": e.split,
            "dataset": str(data_path),
            "bank": str(bank_path),
            "n_images": bank.n,
            "num_samples": bank.num_samples,
            "num_classes": info.num_classes,
            "class_names": info.class_names,
            "eval_classes": info.eval_classes,
            "known_distribution": info.has_weights,
            "calibration_source": calibration_source(bank),
            **summary,
        }
        return summary, acc.rows(), acc.columns()


def check_sample_counts(m: int, ged_counts: list[int], hm_iou_n: int, bank_path: Path) -> None:
    """Every requested sample count must fit the bank's M (else: an error naming M and the
    overrides that would fit)."""
    too_many = sorted({int(n) for n in ged_counts if n > m})
    problems = []
    if too_many:
        fit = [int(n) for n in ged_counts if n <= m] or [m]
        problems.append(
            f"evaluate.ged_counts asks for {too_many} samples per image "
            f"(use evaluate.ged_counts=[{','.join(map(str, sorted(set(fit))))}])"
        )
    if hm_iou_n > m:
        problems.append(
            f"evaluate.hm_iou_samples={hm_iou_n} (use evaluate.hm_iou_samples={min(16, m)})"
        )
    if problems:
        raise CarsegError(
            f"{bank_path}: the bank holds M = {m} samples per image, but " + "; ".join(problems),
            hint="or sample more with `carseg sample RECIPE sample.num_samples=N --overwrite`",
        )


def conventions_of(spec: str) -> list[str]:
    """The conventions named by evaluate.convention (a CarsegError for an unknown one)."""
    try:
        return parse_conventions(spec)
    except ValueError as exc:
        raise CarsegError(f"evaluate.convention -> {exc}") from None


def calibration_source(bank: Bank) -> str:
    """Where the bank's ``calibration`` came from: ``calibrator`` (F) unless it says ``none``."""
    value = bank.h5.attrs.get("calibration_source", "calibrator")
    return value.decode() if isinstance(value, bytes) else str(value)


def run_evaluate(
    recipe: Recipe,
    fail_if: list[str] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    convention: str | None = None,
) -> dict[str, Any]:
    """Evaluate the bank of ``evaluate.split``; ``convention`` overrides evaluate.convention."""
    import dataclasses

    rep = Reporter(quiet)
    conditions = list(fail_if or [])
    for text in conditions:
        parse_condition(text)  # reject a malformed condition before any work
    if convention is not None:
        recipe = dataclasses.replace(
            recipe, evaluate=dataclasses.replace(recipe.evaluate, convention=convention)
        )
    conventions_of(recipe.evaluate.convention)  # an unknown name fails before any work
    layout = RunLayout(Path(recipe.run_dir))
    split = recipe.evaluate.split
    out_dir = layout.eval_dir(split)
    data_path, bank_path = split_path(recipe.data.dir, split), layout.bank(split)
    check_not_finished(out_dir / "metrics.json", f"{split} metrics", overwrite)
    manifest = Manifest("evaluate", recipe_to_dict(recipe), recipe.seed)
    summary, rows, columns = evaluate_bank(data_path, bank_path, recipe, rep)
    ensure_dir(out_dir)
    write_text_atomic(out_dir / "per_case.csv", _csv(rows, columns))
    write_json_atomic(out_dir / "metrics.json", summary)
    for p in (data_path, bank_path):
        manifest.add_input(p)
    manifest.write(out_dir, ["metrics.json", "per_case.csv"])
    if not quiet:
        print_table(summary, rep)
    failed = check_conditions(summary, conditions)
    if failed:
        raise CarsegError(
            "metric threshold crossed: " + "; ".join(failed), hint=f"see {out_dir / 'metrics.json'}"
        )
    return summary


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def print_table(summary: dict[str, Any], rep: Reporter) -> None:
    from rich.table import Table

    if summary.get("task") == "regression":
        print_regression_table(summary, rep)
        return
    primary = summary.get("convention", "carseg")
    table = Table(
        title=f"carseg evaluate: {summary['split']} ({summary['n_images']} images, "
        f"{summary['num_samples']} samples; convention {primary})"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("oracle", justify="right")
    oracle_ged = summary.get("oracle_ged") or {}
    for n, v in (summary.get("ged") or {}).items():
        table.add_row(f"GED ({n} samples)", _fmt(v), _fmt(oracle_ged.get(n)))
    table.add_row(f"HM-IoU ({summary.get('hm_iou_samples', 16)})", _fmt(summary.get("hm_iou")), "")
    table.add_row("ECE of F", _fmt(summary.get("ece")), "")
    modes = summary.get("modes") or {}
    if modes:
        table.add_row("mode TV", _fmt(modes.get("tv")), _fmt(modes.get("oracle_tv")))
        table.add_row(
            "samples within IoU 0.8 of mode",
            _fmt(modes.get("within_0.8")),
            _fmt(modes.get("oracle_within_0.8")),
        )
        table.add_row(
            "mode coverage (p >= 0.05, 16 samples)",
            _fmt(modes.get("coverage")),
            _fmt(modes.get("oracle_coverage")),
        )
    factors = summary.get("factor_dependence") or {}
    if factors.get("n_pairs"):
        table.add_row(
            f"factor dependence ({factors['n_pairs']} pairs)",
            _fmt(factors.get("g")),
            _fmt(factors.get("oracle")),
        )
        table.add_row(
            "factor joint TV", _fmt(factors.get("joint_tv_g")), _fmt(factors.get("joint_tv_oracle"))
        )
    names = summary.get("class_names") or {}
    per_class = (summary.get("class_calibration") or {}).get("classes") or {}
    for k, c in per_class.items():
        if c.get("true") is not None:
            name = names[int(k)] if int(k) < len(names) else k
            table.add_row(
                f"{name}: p true / F / G",
                f"{c['true']:.3f} / {_fmt(c.get('calibrator'))} / {_fmt(c.get('refiner'))}",
                "",
            )
    table.add_row("diversity", _fmt(summary.get("diversity")), "")
    table.add_row("entropy of F (nats)", _fmt(summary.get("entropy")), "")
    table.add_row("NCC (PHiSeg)", _fmt(summary.get("ncc")), "")
    dice = summary.get("dice") or {}
    table.add_row("Dice: expected", _fmt(dice.get("expected")), "")
    table.add_row("Dice: mean prediction", _fmt(dice.get("mean_prediction")), "")
    table.add_row("Dice: best match per label", _fmt(dice.get("best_match")), "")
    qubiq = summary.get("qubiq") or {}
    table.add_row(
        "QUBIQ: G / F", f"{_fmt(qubiq.get('samples'))} / {_fmt(qubiq.get('calibrator'))}", ""
    )
    rep.console.print(table)
    blocks = summary.get("conventions") or {}
    if len(blocks) > 1:
        print_conventions_table(summary, rep)


def print_conventions_table(summary: dict[str, Any], rep: Reporter) -> None:
    """GED, HM-IoU and diversity under each requested convention, side by side."""
    from rich.table import Table

    blocks = summary["conventions"]
    table = Table(title="the same samples under each convention")
    table.add_column("metric")
    for name in blocks:
        table.add_column(name, justify="right")
    counts = sorted({n for b in blocks.values() for n in b["ged"]}, key=int)
    for n in counts:
        table.add_row(f"GED ({n})", *[_fmt(b["ged"].get(n)) for b in blocks.values()])
    hm_n = summary.get("hm_iou_samples", 16)
    table.add_row(f"HM-IoU ({hm_n})", *[_fmt(b["hm_iou"]) for b in blocks.values()])
    table.add_row("diversity", *[_fmt(b["diversity"]) for b in blocks.values()])
    if counts:
        top = counts[-1]
        table.add_row(
            f"images scored (GED {top})",
            *[str(b["n_images"]["ged"].get(top, "")) for b in blocks.values()],
        )
    table.add_row("HM-IoU matching", *[CONVENTIONS[n].hm_iou for n in blocks])
    rep.console.print(table)


def print_regression_table(summary: dict[str, Any], rep: Reporter) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"carseg evaluate: {summary['split']} ({summary['n_images']} inputs, "
        f"{summary['num_samples']} samples)"
    )
    for col in ("metric", "samples", "real data", "truth"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    ll = summary.get("log_likelihood") or {}
    if ll:
        table.add_row(
            "log-likelihood (1 sample / x)", _fmt(ll.get("samples")), _fmt(ll["real"]), ""
        )
    for r in (summary.get("upper_share") or {}).values():
        lo, hi = r["range"]
        flag = " (collapsed)" if r.get("collapsed") else ""
        table.add_row(
            escape(f"share y > 0, x in [{lo:g}, {hi:g}){flag}"),
            _fmt(r.get("samples")),
            _fmt(r.get("real")),
            _fmt(r.get("true")),
        )
    table.add_row("|mean of samples - F(x)|", _fmt(summary.get("mean_vs_calibrator")), "", "")
    if "mean_vs_truth" in summary:
        table.add_row(escape("|mean of samples - E[y|x]|"), _fmt(summary["mean_vs_truth"]), "", "")
        table.add_row(escape("|F(x) - E[y|x]|"), _fmt(summary["calibrator_vs_truth"]), "", "")
    rep.console.print(table)


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
