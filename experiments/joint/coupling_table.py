"""One Markdown row per run with issue 25's figures, from each run's eval/<split>/metrics.json.

python experiments/joint/coupling_table.py RUN [RUN ...] [--split test]
    [--json docs/results/NAME.json --labels "set, sampling" ... --command CMD]
With --json, the same rows go to a docs result file (scripts/docs_tables.py's format), each
labelled by the matching --labels entry (its cells split at ", "; their headers
--label-columns, "set, sampling" unless given).
Columns: coupled pairs' joint TV (oracle; ratio), coupled pairs' agreement, independent
pairs' joint TV (oracle; ratio), mode TV - oracle, GED16 - oracle, within IoU 0.8, worst class
offset of F and of G. The goal: both ratios <= 1.5, agreement >= 0.97, mode TV - oracle <=
0.025, GED16 - oracle <= 0.01, within-0.8 >= 0.93, offsets <= 0.03.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _f(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pair(block: dict) -> str:
    g, o = block.get("joint_tv_g"), block.get("joint_tv_oracle")
    if g is None:
        return "n/a (no pair) |"
    return f"{g:.3f} ({o:.3f}; {g / o:.2f}x) |"


def cells(run: Path, split: str) -> list[str]:
    """The figures of one run as table cells (after the run's name)."""
    return [c.strip() for c in row(run, split).strip("|").split("|")[1:]]


def row(run: Path, split: str) -> str:
    m = json.loads((run / "eval" / split / "metrics.json").read_text())
    rp = m.get("region_pairs") or {"coupled": {}, "independent": {}}
    classes = [v for v in m["class_calibration"]["classes"].values() if v.get("n_pixels")]
    f_off = max(abs(v["calibrator_offset"]) for v in classes)
    g_off = max(abs(v["refiner_offset"]) for v in classes)
    modes = m["modes"]
    return (
        f"| {run.name} | {_pair(rp['coupled'])} {_f(rp['coupled'].get('agree_g'))} "
        f"| {_pair(rp['independent'])} {modes['tv'] - modes['oracle_tv']:.3f} "
        f"| {m['ged']['16'] - m['oracle_ged']['16']:.4f} | {modes['within_0.8']:.3f} "
        f"| {f_off:.3f} | {g_off:.3f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--split", default="test")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--labels", nargs="*", default=[])
    ap.add_argument("--command", default="not recorded")
    ap.add_argument("--note")
    ap.add_argument("--label-columns", default="set, sampling", help="the labels' headers")
    args = ap.parse_args()
    if args.json:
        write_json(args)
        return
    print(
        "| run | coupled pairs: joint TV (oracle; ratio) | coupled agree "
        "| independent pairs: joint TV (oracle; ratio) | mode TV - oracle | GED16 - oracle "
        "| within 0.8 | worst F offset | worst G offset |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        print(row(run, args.split))


HEADER = [
    "coupled pairs: joint TV (oracle; ratio)",
    "coupled agree",
    "independent pairs: joint TV (oracle; ratio)",
    "mode TV − oracle",
    "GED16 − oracle",
    "within 0.8",
    "worst F offset",
    "worst G offset",
]


def write_json(args: argparse.Namespace) -> None:
    import platform

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from docs_tables import write_result

    heads = args.label_columns.split(", ")
    labels = [lab.split(", ", len(heads) - 1) for lab in args.labels]
    if len(labels) != len(args.runs):
        raise SystemExit("--labels: one per run")
    if any(len(lab) != len(heads) for lab in labels):
        raise SystemExit(
            f"--labels: each needs {len(heads)} cells split at ', ' ({args.label_columns})"
        )
    rows = [lab + cells(run, args.split) for lab, run in zip(labels, args.runs, strict=True)]
    machine = f"{platform.machine()}, 2 CPU cores (shared with other jobs)"
    extra = {"note": args.note} if args.note else {}
    write_result(args.json, args.command, machine, [*heads, *HEADER], rows, **extra)


if __name__ == "__main__":
    main()
