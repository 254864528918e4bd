"""`evaluate`: stream a sample bank against its dataset split; write metrics.json + per_case.csv.

`--fail-if "ged.16>0.30"` turns a metric into a CI gate: a dotted path into metrics.json,
an operator (<, <=, >, >=, ==, !=) and a number; exit status 1 when any condition holds.
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


def lookup(metrics: dict[str, Any], path: str) -> float:
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise CarsegError(
                f"--fail-if: metrics.json has no {path!r}",
                hint="see the keys of metrics.json, e.g. ged.16, hm_iou, ece",
            )
        node = node[part]
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
        acc = EvalAccumulator(
            info.num_classes,
            info.ignore_index,
            info.eval_classes,
            ged_counts=e.ged_counts,
            hm_iou_n=e.hm_iou_samples,
            with_modes=info.has_weights,
            oracle_seed=recipe.seed,
        )
        with rep.progress(bank.n, f"evaluate {e.split}") as bar:
            for a in range(0, bank.n, e.chunk_size):
                b = min(bank.n, a + e.chunk_size)
                rows = bank.index[a:b]
                samples = bank.read("samples", slice(a, b))
                calib = bank.read("calibration", slice(a, b)).astype("float32")
                labels = ds.read_rows("label", rows)
                weights = ds.weights(rows)
                for i, row in enumerate(rows):
                    acc.update(int(row), samples[i], labels[i], weights[i], calib[i])
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
            **summary,
        }
        return summary, acc.rows(), acc.columns()


def run_evaluate(
    recipe: Recipe, fail_if: list[str] | None = None, overwrite: bool = False, quiet: bool = False
) -> dict[str, Any]:
    rep = Reporter(quiet)
    conditions = list(fail_if or [])
    for text in conditions:
        parse_condition(text)  # reject a malformed condition before any work
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
    table = Table(
        title=f"carseg evaluate: {summary['split']} ({summary['n_images']} images, "
        f"{summary['num_samples']} samples)"
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
