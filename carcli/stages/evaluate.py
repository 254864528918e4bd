"""`carseg evaluate`: the metrics of a sample bank against its dataset split.

Writes ``eval/<split>/metrics.json`` and ``per_case.csv`` (computed by
:func:`carcli.metrics.evaluate.evaluate_samples` over the bank), prints the table, applies
``--fail-if``.
"""

from __future__ import annotations

from collections.abc import Callable
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
from carcli.metrics.conventions import CONVENTIONS
from carcli.metrics.evaluate import (
    EvalSettings,
    check_conditions,
    check_paths,
    conventions_of,
    evaluate_samples,
    metrics_skeleton,
    parse_condition,
)
from carcli.plots.files import to_csv
from carcli.recipe.load import recipe_to_dict
from carcli.recipe.schema import Recipe
from carcli.runtime.staleness import require_fresh
from carcli.sampling.bank import Bank
from carcli.ui import Reporter


def evaluate_bank(
    data_path: Path,
    bank_path: Path,
    e: EvalSettings,
    rep: Reporter,
    check: Callable[[], None] | None = None,
) -> tuple[dict, list[dict], list[str]]:
    """Metrics summary, per-image rows and CSV columns of a bank against its split;
    `check` runs once both files are open and valid (the staleness check)."""
    with DatasetFile(data_path, validate=True) as ds, Bank(bank_path, ds.info) as bank:
        if check is not None:
            check()
        return evaluate_samples(ds, bank, e, rep, calibration_source(bank))


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
    allow_stale: bool = False,
) -> dict[str, Any]:
    """Evaluate the bank of ``evaluate.split``; ``convention`` overrides evaluate.convention.
    A bank drawn from weights that have changed since is refused unless ``allow_stale``."""
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
    if conditions:  # a --fail-if figure the evaluation will not write fails before any work
        _check_fail_if(data_path, EvalSettings.from_recipe(recipe), conditions)
    check_not_finished(out_dir / "metrics.json", f"{split} metrics", overwrite)
    manifest = Manifest("evaluate", recipe_to_dict(recipe), recipe.seed)
    stale: list[str] = []
    summary, rows, columns = evaluate_bank(
        data_path,
        bank_path,
        EvalSettings.from_recipe(recipe),
        rep,
        check=lambda: stale.extend(require_fresh(recipe, "evaluate", allow_stale)),
    )
    manifest.staleness(allow_stale, stale)
    ensure_dir(out_dir)
    write_text_atomic(out_dir / "per_case.csv", to_csv(rows, columns))
    write_json_atomic(out_dir / "metrics.json", summary)
    manifest.add_input(data_path, f"data.{split}")
    manifest.add_input(bank_path, "bank")
    manifest.write(out_dir, ["metrics.json", "per_case.csv"])
    if not quiet:
        print_table(summary, rep)
    rep.line(f"metrics written: {out_dir / 'metrics.json'} (per image: {out_dir / 'per_case.csv'})")
    failed = check_conditions(summary, conditions)
    if failed:
        raise CarsegError(
            "metric threshold crossed: " + "; ".join(failed), hint=f"see {out_dir / 'metrics.json'}"
        )
    return summary


def _check_fail_if(data_path: Path, e: EvalSettings, conditions: list[str]) -> None:
    """--fail-if paths against the metrics.json this evaluation will write (its keys follow
    from the dataset's header and the evaluate settings); an unreadable dataset is left to
    the evaluation to report."""
    try:
        with DatasetFile(data_path) as ds:
            info = ds.info
    except CarsegError:
        return
    skeleton = metrics_skeleton(info, e)
    if skeleton is not None:
        check_paths(skeleton, conditions)


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
    block = (summary.get("conventions") or {}).get(primary) or {}
    counts = (block.get("n_images") or {}).get("ged") or {}
    for n in counts or (summary.get("ged") or {}):  # every requested count, defined or not
        v = (summary.get("ged") or {}).get(n)
        table.add_row(
            f"GED ({n} samples)",
            _fmt(v) if v is not None else _undefined("GED", primary, counts.get(n)),
            _fmt(oracle_ged.get(n)),
        )
    hm = summary.get("hm_iou")
    table.add_row(
        f"HM-IoU ({summary.get('hm_iou_samples', 16)})",
        _fmt(hm)
        if hm is not None
        else _undefined("HM-IoU", primary, (block.get("n_images") or {}).get("hm_iou")),
        "",
    )
    ece = summary.get("ece")
    no_f = "n/a (the bank holds no probabilities of F)"
    table.add_row("ECE of F", _fmt(ece) if ece is not None else no_f, "")
    _add_answer_rows(table, summary)
    _add_pixel_rows(table, summary)
    rep.console.print(table)
    blocks = summary.get("conventions") or {}
    if len(blocks) > 1:
        print_conventions_table(summary, rep)


def _add_answer_rows(table: Any, summary: dict[str, Any]) -> None:
    """Rows of whole answers against the modes: mode figures and factor dependence."""
    modes = summary.get("modes") or {}
    factors = summary.get("factor_dependence") or {}
    coupled = (summary.get("region_pairs") or {}).get("coupled") or {}
    # (block, shown when, [(row label, G's key, the oracle's key)])
    groups = [
        (modes, bool(modes), [
            ("mode TV", "tv", "oracle_tv"),
            ("samples within IoU 0.8 of mode", "within_0.8", "oracle_within_0.8"),
            ("mode coverage (p >= 0.05, 16 samples)", "coverage", "oracle_coverage"),
        ]),
        (factors, bool(factors.get("n_pairs")), [
            (f"factor dependence ({factors.get('n_pairs')} pairs)", "g", "oracle"),
            ("factor joint TV", "joint_tv_g", "joint_tv_oracle"),
        ]),
        (coupled, bool(coupled.get("n_pairs")), [
            (f"coupled pairs: joint TV ({coupled.get('n_pairs')} pairs)", "joint_tv_g",
             "joint_tv_oracle"),
            ("coupled pairs: answers the truth can show", "agree_g", "agree_oracle"),
        ]),
    ]  # fmt: skip
    for block, shown, rows in groups:
        for label, key, oracle in rows if shown else []:
            table.add_row(label, _fmt(block.get(key)), _fmt(block.get(oracle)))


def _add_pixel_rows(table: Any, summary: dict[str, Any]) -> None:
    """Rows of per-pixel figures: class calibration, diversity, entropy, NCC, Dice, QUBIQ."""
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


def print_conventions_table(summary: dict[str, Any], rep: Reporter) -> None:
    """GED, HM-IoU and diversity under each requested convention, side by side."""
    from rich.table import Table

    blocks = summary["conventions"]
    table = Table(title="the same samples under each convention")
    table.add_column("metric")
    for name in blocks:
        table.add_column(name, justify="right")
    every = {n for b in blocks.values() for n in (*b["ged"], *b["n_images"]["ged"])}
    counts = sorted(every, key=int)  # every requested count, defined or not
    for n in counts:
        table.add_row(
            f"GED ({n})",
            *[_fmt(b["ged"][n]) if b["ged"].get(n) is not None else "n/a" for b in blocks.values()],
        )
    hm_n = summary.get("hm_iou_samples", 16)
    table.add_row(
        f"HM-IoU ({hm_n})",
        *[_fmt(b["hm_iou"]) if b["hm_iou"] is not None else "n/a" for b in blocks.values()],
    )
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


def _undefined(metric: str, convention: str, scored: Any) -> str:
    """The table's text for a figure the evaluation left undefined, with the reason."""
    if scored == 0:
        rule = CONVENTIONS[convention].empty_pair if convention in CONVENTIONS else ""
        why = (
            f"no image scored: the {convention} convention leaves {metric} undefined for a "
            "pair of maps without a scored class"
            if rule == "nan"
            else f"no image scored under the {convention} convention"
        )
        return f"n/a ({why})"
    return "n/a (undefined)"


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
