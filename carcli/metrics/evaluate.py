"""`evaluate`: stream samples against their dataset split (metrics.json + per_case.csv rows).

The samples come as a `carcli.metrics.samples.SampleSource` (the stage passes the sample bank).

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

import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carcli.data.dataset import DatasetFile
from carcli.errors import CarsegError, UsageError
from carcli.metrics.accumulate import EvalAccumulator
from carcli.metrics.conventions import SampleCounts, parse_conventions
from carcli.metrics.samples import SampleSource
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
        raise UsageError(f"--fail-if {text!r}: expected PATH OP NUMBER, e.g. 'ged.16>0.30'")
    try:
        return m.group(1), m.group(2), float(m.group(3))
    except ValueError:
        raise UsageError(f"--fail-if {text!r}: {m.group(3)!r} is not a number") from None


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
            f"--fail-if: metrics.json has no {path!r}", hint=_path_hint(metrics, path)
        ) from None
    if not isinstance(node, (int, float)) or isinstance(node, bool):
        raise CarsegError(f"--fail-if: {path!r} is not a number ({node!r})")
    return float(node)


def _leaves(node: Any, prefix: str = "") -> list[str]:
    """The dotted paths of every number (or null) in a metrics dict, but the rules texts."""
    if not isinstance(node, dict):
        return [prefix] if node is None or isinstance(node, (int, float)) else []
    out = []
    for k, v in node.items():
        if k != "rules":
            out += _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    return out


EXAMPLES = (
    "ged.16",
    "hm_iou",
    "ece",
    "dice.best_match",
    "modes.within_0.8",
    "factor_dependence.g",
    "diversity",
)


def _path_hint(metrics: dict[str, Any], path: str) -> str:
    """Close matches among the paths `metrics` has, else a few it has."""
    import difflib

    leaves = _leaves(metrics)
    close = difflib.get_close_matches(path, leaves, n=3, cutoff=0.6)
    if close:
        return f"did you mean {', '.join(close)}?"
    have = [p for p in EXAMPLES if p in leaves] or leaves[:5]
    return f"metrics.json holds e.g. {', '.join(have)} (all: carseg evaluate's metrics.json)"


def _accumulator(info: Any, e: EvalSettings) -> EvalAccumulator:
    """The accumulator that evaluating `info`'s split with `e` fills."""
    return EvalAccumulator(
        info.num_classes,
        info.ignore_index,
        info.eval_classes,
        counts=SampleCounts(list(e.ged_counts), e.hm_iou_samples),
        with_modes=info.has_weights,
        oracle_seed=e.oracle_seed,
        conventions=conventions_of(e.convention),
    )


def metrics_skeleton(info: Any, e: EvalSettings) -> dict[str, Any] | None:
    """The metrics.json that evaluating `info`'s split with `e` will write, every figure null
    (every GED count present): what --fail-if paths are checked against before any work.
    None for regression datasets (their figures depend on the data; checked afterwards)."""
    if info.task != "segmentation":
        return None
    acc = _accumulator(info, e)
    out = acc.result()
    counts = {str(n): None for n in e.ged_counts}
    out["ged"] = dict(counts)
    if out.get("oracle_ged") is not None:
        out["oracle_ged"] = dict(counts)
    for block in out["conventions"].values():
        block["ged"] = dict(counts)
    return {"n_images": 0, "num_samples": 0, "num_classes": info.num_classes, **out}


def check_paths(skeleton: dict[str, Any], conditions: list[str]) -> None:
    """Every --fail-if path names a figure the evaluation will write (UsageError if not)."""
    for text in conditions:
        path, _, _ = parse_condition(text)
        try:
            node = _find(skeleton, path.split("."))
        except KeyError:
            raise UsageError(
                f"--fail-if {text!r}: metrics.json will have no {path!r} (checked before "
                "evaluating)",
                hint=_path_hint(skeleton, path),
            ) from None
        if isinstance(node, dict):
            inner = [f"{path}.{p}" for p in _leaves(node)][:4]
            raise UsageError(
                f"--fail-if {text!r}: {path!r} is a group of figures, not one",
                hint=f"name one of them, e.g. {', '.join(inner)}",
            )


def check_conditions(metrics: dict[str, Any], conditions: list[str]) -> list[str]:
    """The conditions that hold (each a failure), as readable lines."""
    failed = []
    for text in conditions:
        path, op, bound = parse_condition(text)
        value = lookup(metrics, path)
        if _OPS[op](value, bound):
            failed.append(f"{path} = {value:.6g} {op} {bound:g}")
    return failed


@dataclass(frozen=True)
class EvalSettings:
    """What `evaluate_samples` needs (the recipe's evaluate.* keys and the seed)."""

    split: str = "test"
    ged_counts: tuple[int, ...] = (16, 50, 100)
    hm_iou_samples: int = 16
    chunk_size: int = 64
    convention: str = "carseg"
    oracle_seed: int = 0

    @classmethod
    def from_recipe(cls, recipe: Any) -> EvalSettings:
        e = recipe.evaluate
        return cls(
            e.split,
            tuple(e.ged_counts),
            e.hm_iou_samples,
            e.chunk_size,
            e.convention,
            recipe.seed,
        )


def evaluate_samples(
    ds: DatasetFile,
    bank: SampleSource,
    e: EvalSettings,
    rep: Reporter,
    calibration_source: str = "calibrator",
) -> tuple[dict, list[dict], list[str]]:
    """Metrics summary, per-image rows and CSV columns of samples against their split;
    ``calibration_source`` ``none``: the samples' ``calibration`` is not F's (figures of F
    reported as null)."""
    data_path, bank_path = ds.path, bank.path
    info = ds.info
    if info.task == "regression":
        return _evaluate_regression(ds, bank, e, rep)
    check_sample_counts(
        bank.num_samples,
        e.ged_counts,
        e.hm_iou_samples,
        bank_path,
        getattr(bank, "imported_from", None),
    )
    has_f = calibration_source != "none"
    acc = _accumulator(info, e)
    with rep.progress(bank.n, f"evaluate {e.split}") as bar:
        for a in range(0, bank.n, e.chunk_size):
            b = min(bank.n, a + e.chunk_size)
            rows = bank.index[a:b]
            samples = bank.read("samples", slice(a, b))
            calib = bank.read("calibration", slice(a, b)).astype("float32") if has_f else None
            labels = ds.read_rows("label", rows)
            weights = ds.weights(rows)
            for i, row in enumerate(rows):
                calib_i = None if calib is None else calib[i]
                acc.update(int(row), samples[i], labels[i], weights[i], calib_i)
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
        "calibration_source": calibration_source,
        **summary,
    }
    return summary, acc.rows(), acc.columns()


def _evaluate_regression(
    ds: DatasetFile, bank: SampleSource, e: EvalSettings, rep: Reporter
) -> tuple[dict, list[dict], list[str]]:
    from carcli.metrics.regression import evaluate_regression

    figures, rows, columns = evaluate_regression(ds, bank, e.chunk_size, rep)
    summary = {
        "schema": METRICS_SCHEMA,
        "task": "regression",
        "split": e.split,
        "dataset": str(ds.path),
        "bank": str(bank.path),
        "n_images": bank.n,
        "num_samples": bank.num_samples,
        **figures,
    }
    return summary, rows, columns


def check_sample_counts(
    m: int,
    ged_counts: list[int],
    hm_iou_n: int,
    bank_path: Path,
    imported_from: str | None = None,
) -> None:
    """Every requested sample count must fit the bank's M (else: an error naming M, the
    `carseg evaluate` overrides that fit, and how to make a bank with enough samples: draw
    more, or for a bank imported from another method's samples, import more)."""
    too_many = sorted({int(n) for n in ged_counts if n > m})
    problems, fits = [], []
    if too_many:
        fit = ",".join(map(str, sorted({int(n) for n in ged_counts if n <= m} or {m})))
        problems.append(f"evaluate.ged_counts asks for {too_many} samples per image")
        fits.append(f"evaluate.ged_counts=[{fit}]")
    if hm_iou_n > m:
        problems.append(f"evaluate.hm_iou_samples={hm_iou_n}")
        fits.append(f"evaluate.hm_iou_samples={min(16, m)}")
    if problems:
        need = max([*too_many, hm_iou_n])
        if not imported_from:
            more = f"draw more with `carseg sample RECIPE sample.num_samples={need} --overwrite`"
        else:  # an imported bank: another method's samples; import more of them
            more = (
                f"import a source with at least {need} samples per image with "
                f"carseg import-samples --overwrite (this bank was imported from {imported_from})"
            )
        raise CarsegError(
            f"{bank_path}: the bank holds M = {m} samples per image, but " + "; ".join(problems),
            hint=f"evaluate what it holds with `carseg evaluate RECIPE {' '.join(fits)}`, or "
            + more,
        )


def conventions_of(spec: str) -> list[str]:
    """The conventions named by evaluate.convention (a CarsegError for an unknown one)."""
    try:
        return parse_conventions(spec)
    except ValueError as exc:
        raise CarsegError(f"evaluate.convention -> {exc}") from None
