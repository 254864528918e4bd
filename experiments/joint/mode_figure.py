"""Before and after: true mode probabilities beside two runs' sample frequencies.

python experiments/joint/mode_figure.py BEFORE_RUN AFTER_RUN OUT.png [--split test]
    [--labels "before" "after"]
Reads each run's plots/<split>/mode_frequencies.csv (written by `carseg plot-reliability`;
both runs on the same dataset split, so the panels show the same images) and writes OUT.png
with OUT.csv beside it.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from carcli.plots.figures import C_F, C_G
from carcli.plots.files import save_figure, to_csv
from carcli.plots.modes import MODE_COLUMNS, mode_frequency_figure


def read(run: Path, split: str) -> list[dict]:
    path = run / "plots" / split / "mode_frequencies.csv"
    if not path.exists():
        raise SystemExit(f"{path}: missing; run `carseg plot-reliability` for {run} first")
    with path.open() as fh:
        return [
            {k: (float(v) if k in ("true_weight", "g_frequency") else int(v)) for k, v in r.items()}
            for r in csv.DictReader(fh)
        ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--labels", nargs=2, default=["before", "after"])
    args = ap.parse_args()
    before, after = read(args.before, args.split), read(args.after, args.split)
    key = lambda r: (r["dataset_row"], r["mode_rank"])  # noqa: E731
    after_by = {key(r): r["g_frequency"] for r in after}
    if {r["dataset_row"] for r in before} != {r["dataset_row"] for r in after}:
        raise SystemExit("the two runs show different images: same dataset split and seed?")
    rows = [{**r, "after": after_by[key(r)]} for r in before]
    fig = mode_frequency_figure(
        rows,
        [
            ("g_frequency", C_F, f"G {args.labels[0]}"),
            ("after", C_G, f"G {args.labels[1]}"),
        ],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, args.out)
    args.out.with_suffix(".csv").write_text(to_csv(rows, [*MODE_COLUMNS, "after"]))
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
