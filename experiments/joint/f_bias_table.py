"""docs/results/calibrator_bias.json: F's worst class offset as trained and with its class
biases refitted on the validation split (`calibrator.recalibrate: class_bias`), per dev set.

    python experiments/joint/f_bias_table.py refit   # make runs/fb/NAME from each trained F
    python experiments/joint/f_bias_table.py         # the table (docs/results/calibrator_bias.json)
    python experiments/joint/f_bias_table.py regularisation
        # F variants on dev set C4 (4 raters) and A: docs/results/calibrator_raters.json

`refit` copies calibrator/ of each trained run (the toy recipe's F, whole cascades of
experiments/joint/every_set_table.sh) to runs/fb/NAME and runs
`carseg train-calibrator recipes/toy.yaml ... calibrator.recalibrate=class_bias --resume`
there: no training step (the copy is finished at its step count), only the stage's refit, as
a fresh run of the recipe does after its last step. Offsets: experiments/joint/f_offsets.py
(carseg's F loader and `evaluate`'s per-class calibration) on the test split, for both Fs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "experiments" / "joint"))

# set | seed | trained run (runs/...) | data dir | data.source
ROWS = [
    ("A (objects independent)", 0, "devA-now", "data/devA", "prepared"),
    ("A", 1, "devA-now-s1", "data/devA", "prepared"),
    ("C (outline cue)", 0, "devC-now", "data/devC", "prepared"),
    ("E (class flips)", 0, "devE-now", "data/devE", "prepared"),
    ("F (shape cue, 64x64)", 0, "devF-now", "data/devF", "prepared"),
    ("G (link cue)", 0, "devG-now", "data/devG", "prepared"),
    ("G", 1, "devG-now-s1", "data/devG", "prepared"),
    ("toy", 0, "toy-now", "data/toy", "synthetic"),
    ("unseen (64x64)", 0, "unseen-now", "data/unseen", "prepared"),
]
OUT = REPO / "docs" / "results" / "calibrator_bias.json"
# `... f_bias_table.py regularisation`: F variants of the toy recipe (with the refit) on dev
# set C4 (C's objects, 4 raters per training image) and A, trained by
#   carseg train-calibrator recipes/toy.yaml data.dir=DATA data.source=prepared
#     run_dir=runs/x/NAME threads=1 OVERRIDES --overwrite
# set | F variant | run (runs/...) | data dir
REGULARISATION = [
    ("C4 (4 raters)", "the toy recipe (no dropout, no weight decay)", "rc/devC4", "data/devC4"),
    (
        "C4",
        "best validation checkpoint (step 1250) instead of the last (not refitted)",
        "x/c4best",
        "data/devC4",
    ),
    ("C4", "data.flip=true", "x/c4-flip", "data/devC4"),
    ("C4", "dropout 0.1", "x/c4-d1", "data/devC4"),
    ("C4", "weight decay 5e-5", "x/c4-wd5", "data/devC4"),
    ("C4", "AdamW (decoupled) weight decay 0.1 (adamw_calibrator.py)", "x/c4-aw1", "data/devC4"),
    ("C4", "AdamW (decoupled) weight decay 1.0 (adamw_calibrator.py)", "x/c4-aw10", "data/devC4"),
    ("C4", "dropout 0.1, weight decay 5e-4 (the schema's defaults)", "x/c4-reg", "data/devC4"),
    ("C4", "weight decay 5e-4", "x/c4-wd50", "data/devC4"),
    ("C4", "dropout 0.1, weight decay 2e-4", "x/c4-d1wd20", "data/devC4"),
    (
        "G4 (4 raters, val too)",
        "the toy recipe (no dropout, no weight decay)",
        "x/g4-plain",
        "data/devG4",
    ),
    ("G4", "dropout 0.1, weight decay 5e-4 (the schema's defaults)", "x/g4-reg", "data/devG4"),
    ("G4", "dropout 0.1, weight decay 2e-4", "x/g4-d1wd20", "data/devG4"),
    ("A (exact modes)", "the toy recipe (no dropout, no weight decay)", "fb/devA-now", "data/devA"),
    ("A", "dropout 0.1", "x/a-d1", "data/devA"),
    ("A", "weight decay 5e-5", "x/a-wd5", "data/devA"),
    ("A", "AdamW (decoupled) weight decay 0.1 (adamw_calibrator.py)", "x/a-aw1", "data/devA"),
    ("A", "AdamW (decoupled) weight decay 1.0 (adamw_calibrator.py)", "x/a-aw10", "data/devA"),
    ("A", "dropout 0.1, weight decay 5e-4 (the schema's defaults)", "x/a-reg", "data/devA"),
    ("A", "dropout 0.1, weight decay 2e-4", "x/a-d1wd20", "data/devA"),
]
OUT_REG = REPO / "docs" / "results" / "calibrator_raters.json"
COMMAND = (
    "python experiments/joint/f_bias_table.py refit (per trained run: calibrator/ copied to "
    "runs/fb/NAME, then carseg train-calibrator recipes/toy.yaml data.dir=DATA "
    "data.source=SOURCE seed=S run_dir=runs/fb/NAME calibrator.recalibrate=class_bias "
    "--resume: the stage's refit, no training step), then python "
    "experiments/joint/f_bias_table.py (experiments/joint/f_offsets.py on both Fs, test split)"
)


def refit() -> None:
    for _, seed, run, data, source in ROWS:
        src, dst = REPO / "runs" / run, REPO / "runs" / "fb" / run
        if not (src / "calibrator" / "last.safetensors").exists():
            print(f"skip {run}: no trained F", file=sys.stderr)
            continue
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        shutil.copytree(src / "calibrator", dst / "calibrator")
        subprocess.run(
            [
                str(REPO / ".venv" / "bin" / "carseg"),
                "train-calibrator",
                "recipes/toy.yaml",
                f"data.dir={data}",
                f"data.source={source}",
                f"seed={seed}",
                f"run_dir={dst}",
                "threads=1",
                "calibrator.recalibrate=class_bias",
                "--resume",
                "--quiet",
            ],
            cwd=REPO,
            check=True,
        )


def _per_class(res: dict) -> str:
    return ", ".join(
        f"{k}: {c['calibrator_offset']:.3f} ({c['true']:.3f} / {c['calibrator']:.3f})"
        for k, c in res["classes"].items()
        if c["n_pixels"]
    )


def table() -> None:
    from docs_tables import write_result
    from f_offsets import split_offsets

    rows = []
    for name, seed, run, data, _ in ROWS:
        before, after = REPO / "runs" / run, REPO / "runs" / "fb" / run
        if not (after / "calibrator" / "model.safetensors").exists():
            print(f"skip {run}: not refitted", file=sys.stderr)
            continue
        t0 = split_offsets(before, REPO / data, "test")
        t1 = split_offsets(after, REPO / data, "test")
        man = json.loads((after / "calibrator" / "manifest.json").read_text())
        rec = man["recalibration"]
        rows.append(
            [
                name,
                f"seed {seed}",
                run,
                f"{t0['max_calibrator_offset']:.3f}",
                f"{t1['max_calibrator_offset']:.3f}",
                _per_class(t1),
                "[" + ", ".join(f"{b:+.3f}" for b in rec["class_bias"]) + "]",
                f"{t0['kl_ambiguous']:.4f} / {t1['kl_ambiguous']:.4f}",
            ]
        )
    write_result(
        OUT,
        COMMAND,
        "x86_64, 2 CPU cores, threads=1",
        [
            "set",
            "seed",
            "trained run",
            "worst F offset, as trained (test)",
            "worst F offset, class biases refitted (test)",
            "per class after the refit: offset (true / F) over its ambiguous test pixels",
            "class biases (fitted on the 200 validation images)",
            "KL(q || F) on ambiguous test pixels, before / after",
        ],
        rows,
        note="Each trained run is the F of a whole cascade of the toy recipe (2500 steps, "
        "no dropout or weight decay); the refit fits one logit bias per class on the whole "
        "validation split by F's soft cross-entropy and adds it to F's last layer "
        "(carcli/training/recalibration.py). Bar: worst offset at most 0.03.",
    )
    print(f"wrote {OUT}")


def regularisation_table() -> None:
    from docs_tables import write_result
    from f_offsets import split_offsets

    rows = []
    for name, variant, run, data in REGULARISATION:
        path = REPO / "runs" / run
        if not (path / "calibrator" / "model.safetensors").exists():
            print(f"skip {run}: not trained", file=sys.stderr)
            continue
        t = split_offsets(path, REPO / data, "test")
        man_path = path / "calibrator" / "manifest.json"  # c4best: a bare checkpoint copy
        man = json.loads(man_path.read_text()) if man_path.exists() else {}
        rec = man.get("recalibration") or {}
        rows.append(
            [
                name,
                variant,
                run,
                f"{t['max_calibrator_offset']:.3f}",
                _per_class(t),
                f"{t['kl_ambiguous']:.4f}",
                f"{rec['val_ce_after']:.5f}" if rec else "-",
            ]
        )
    write_result(
        OUT_REG,
        "carseg train-calibrator recipes/toy.yaml data.dir=DATA data.source=prepared "
        "run_dir=runs/x/NAME threads=1 OVERRIDES (the recipe's refit included; rows 'the toy "
        "recipe': the F of runs/rc/devC4, a whole cascade, and of runs/fb/devA-now), then "
        "experiments/joint/f_offsets.py RUN DATA --split test; table: python "
        "experiments/joint/f_bias_table.py regularisation",
        "x86_64, 2 CPU cores (shared by 2-6 jobs), threads=1",
        [
            "set",
            "F variant (overrides of the toy recipe, class biases refitted)",
            "run",
            "worst F offset (test)",
            "per class: offset (true / F) over its ambiguous test pixels",
            "KL(q || F) on ambiguous test pixels",
            "val CE (whole split, after the refit)",
        ],
        rows,
        note="C4's training split has 4 annotations per image drawn from the true answers "
        "(as LIDC's raters); its validation and test splits hold the exact answers with their "
        "probabilities. G4 is dev set G's family with 4 raters in the training and validation "
        "splits (its val CE is against the raters; test exact). KL(q || F) on the ambiguous "
        "test pixels measures F's per-pixel calibration (C's F, trained on exact answers: "
        "0.0049). val CE: the whole validation split's cross-entropy after the refit (the "
        "manifest's recalibration.val_ce_after), the figure that would pick between Fs.",
    )
    print(f"wrote {OUT_REG}")


if __name__ == "__main__":
    {"refit": refit, "regularisation": regularisation_table}.get((sys.argv[1:] or [""])[0], table)()
