"""Tabulate the metrics.json of several runs side by side (Markdown), for notes and papers.

python scripts/compare_runs.py runs/toy runs/toy-none runs/toy-ce runs/toy-m1 [--split test]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def figures(run: Path, split: str) -> dict[str, str]:
    m = json.loads((run / "eval" / split / "metrics.json").read_text())
    out = {"run": run.name}
    oracle = m.get("oracle_ged") or {}
    for n, v in (m.get("ged") or {}).items():
        out[f"GED{n}"] = f"{v:.3f}" + (f" (oracle {oracle[n]:.3f})" if n in oracle else "")
    if "16" in (m.get("ged") or {}) and "16" in oracle:
        out["GED16 - oracle"] = f"{m['ged']['16'] - oracle['16']:.3f}"
    out["HM-IoU"] = f"{m['hm_iou']:.3f}" if m.get("hm_iou") is not None else ""
    out["ECE(F)"] = f"{m['ece']:.4f}" if m.get("ece") is not None else ""
    modes = m.get("modes") or {}
    if modes:
        out["mode TV"] = f"{modes['tv']:.3f} (oracle {modes['oracle_tv']:.3f})"
        out["within 0.8"] = f"{modes['within_0.8']:.3f}"
    cc = (m.get("class_calibration") or {}).get("classes") or {}
    worst_f = max(
        (c["calibrator_offset"] for c in cc.values() if c.get("calibrator_offset") is not None),
        default=None,
    )
    worst_g = max(
        (c["refiner_offset"] for c in cc.values() if c.get("refiner_offset") is not None),
        default=None,
    )
    if worst_f is not None:
        out["max class offset F"] = f"{worst_f:.3f}"
    if worst_g is not None:
        out["max class offset G"] = f"{worst_g:.3f}"
    out["diversity"] = f"{m['diversity']:.3f}" if m.get("diversity") is not None else ""
    out.update(training_figures(run / "refiner"))
    return out


def training_figures(refiner: Path, last: int = 100) -> dict[str, str]:
    """G's training wall time and, for the latent-code variant, KL(q || N(0, I)) averaged over
    the last `last` logged steps (how far the encoded codes are from the prior)."""
    out: dict[str, str] = {}
    manifest = refiner / "manifest.json"
    if manifest.is_file():
        wall = json.loads(manifest.read_text()).get("wall_time_s")
        if wall is not None:
            out["G train s"] = f"{wall:.0f}"
    log = refiner / "metrics.jsonl"
    if log.is_file():
        kls = [
            rec["loss_kl"]
            for rec in map(json.loads, log.read_text().splitlines()[-last:])
            if rec.get("loss_kl") is not None
        ]
        if kls:
            out["KL(q)"] = f"{sum(kls) / len(kls):.3f}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    rows = [figures(r, args.split) for r in args.runs]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(r.get(c, "") for c in cols) + " |")


if __name__ == "__main__":
    main()
