"""The method against the paper's controls, from each run's eval/<split>/metrics.json.

python scripts/controls_table.py runs/toy-method runs/toy-none runs/toy-ce runs/toy-m1 \
    [--json docs/results/controls.json --command CMD]

Prints a Markdown table (the first run is the method; the others' GED16 - oracle is also
shown as a multiple of the method's); with --json, the same rows go to a docs result file
(scripts/docs_tables.py's format) with the commit of this checkout.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_tables import write_result  # noqa: E402

LABELS = {
    "calibration_loss=none": "`calibration_loss=none` (λ = 0)",
    "calibration_loss=ce": "`calibration_loss=ce`",
    "num_samples=1": "`num_samples=1` (M = 1)",
}


def metrics(run: Path, split: str) -> dict:
    return json.loads((run / "eval" / split / "metrics.json").read_text())


def worst_g_offset(m: dict) -> float:
    classes = m["class_calibration"]["classes"].values()
    return max(abs(c["refiner_offset"]) for c in classes if c.get("n_pixels"))


def columns(method: dict) -> list[str]:
    dep = method["factor_dependence"]["oracle"]
    return [
        "run",
        f"GED16 (oracle {method['oracle_ged']['16']:.3f})",
        "GED16 − oracle (× method's)",
        f"mode TV (oracle {method['modes']['oracle_tv']:.3f})",
        "within 0.8",
        "worst class offset of G",
        "diversity",
        "factor dependence" + (f" (oracle {dep:.3f})" if dep is not None else ""),
    ]


def cells(label: str, m: dict, method_gap: float | None) -> list[str]:
    gap = m["ged"]["16"] - m["oracle_ged"]["16"]
    gap_cell = f"{gap:.3f}"
    if method_gap is not None:
        # a ratio to a gap below the figures' last digit would only show noise
        ok = method_gap >= 0.001
        gap_cell += f" ({gap / method_gap:.1f}×)" if ok else " (the method's: below 0.001)"
    dep = m["factor_dependence"]["g"]
    return [
        label,
        f"{m['ged']['16']:.3f}",
        gap_cell,
        f"{m['modes']['tv']:.3f}",
        f"{m['modes']['within_0.8']:.3f}",
        f"{worst_g_offset(m):.3f}",
        f"{m['diversity']:.3f}",
        "n/a (no pair)" if dep is None else f"{dep:.3f}",
    ]


def label_of(run: Path, first: bool) -> str:
    if first:
        return "method (the toy recipe)"
    recipe = (run / "refiner" / "recipe.yaml").read_text()
    for key, label in LABELS.items():
        name, value = key.split("=")
        if re.search(rf"^\s*{name}: {re.escape(value)}\s*$", recipe, re.M):
            return label
    return run.name


def table(runs: list[Path], split: str) -> tuple[list[str], list[list[str]]]:
    ms = [metrics(r, split) for r in runs]
    method_gap = ms[0]["ged"]["16"] - ms[0]["oracle_ged"]["16"]
    rows = [cells(label_of(runs[0], True), ms[0], None)]
    rows += [
        cells(label_of(r, False), m, method_gap) for r, m in zip(runs[1:], ms[1:], strict=True)
    ]
    return columns(ms[0]), rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="the method's run first, then controls")
    ap.add_argument("--split", default="test")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--command", default="make controls")
    args = ap.parse_args()
    cols, rows = table(args.runs, args.split)
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if args.json:
        machine = f"{platform.machine()}, the development machine's CPU"
        write_result(args.json, args.command, machine, cols, rows)


if __name__ == "__main__":
    main()
