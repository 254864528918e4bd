"""Shared by the tests/test_reliability_*.py files: tiny recipes, subprocess helpers, and
the reliability table of docs/reliability.md.

Every fault and bad input the suite tries is a row of `ROWS` (or of `BAD_INPUTS`, one per
case of tests/test_reliability_inputs.py). docs/reliability.md holds
`markdown_table()` verbatim; tests/test_reliability_table.py fails when the two differ, when a
row names a test that does not exist, or when a bad-input case has no row.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

# A recipe small enough that a subprocess run is a few seconds, of which ~2 s is importing
# torch; threads=1 and device=cpu make runs bitwise reproducible.
TINY: dict[str, Any] = {
    "name": "reliability",
    "seed": 7,
    "threads": 1,
    "device": "cpu",
    "data": {
        "source": "synthetic",
        "synthetic": {"num_train": 24, "num_val": 8, "num_test": 48, "size": 16},
    },
    "calibrator": {
        "width": 4,
        "depth": 2,
        "steps": 4,
        "batch_size": 4,
        "val_every": 2,
        "val_size": 4,
        "checkpoint_every": 2,
    },
    "refiner": {
        "width": 4,
        "depth": 2,
        "steps": 4,
        "batch_size": 2,
        "num_samples": 3,
        "val_every": 2,
        "val_size": 4,
        "checkpoint_every": 2,
    },
    "discriminator": {"width": 4, "n_on": 2, "n_off": 1},
    "sample": {"num_samples": 5, "chunk_size": 8, "batch_size": 4},
    "evaluate": {"ged_counts": [2, 5], "hm_iou_samples": 4},
}


def write_recipe(path: Path, run_dir: Path, data_dir: Path, **sections: dict[str, Any]) -> Path:
    """TINY with `run_dir`, `data.dir` and the given section updates, written as YAML."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    raw["run_dir"] = str(run_dir)
    raw["data"]["dir"] = str(data_dir)
    for key, update in sections.items():
        raw.setdefault(key, {}).update(update)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def carseg_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CARSEG_DEBUG"}
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    return env


def carseg_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "carcli", *map(str, args)]


def run_carseg(*args: str | Path, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        carseg_cmd(*args),
        cwd=REPO,
        env=carseg_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    """Every regular file under `root`: relative path -> (size, mtime_ns)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


# ------------------------------------------------------------------ the table of the docs


@dataclass(frozen=True)
class Row:
    fault: str
    outcome: str
    test: str  # "test_file.py::test_function" (a parametrized test: its function name)


# One row per case of tests/test_reliability_inputs.py (keyed by the case id).
BAD_INPUTS: dict[str, tuple[str, str]] = {
    "malformed-yaml": ("malformed YAML recipe", "names the recipe, line and column"),
    "wrong-type": ("wrong type of a recipe value", "names the key and the expected type"),
    "bad-choice": ("a value outside a key's choices", "names the key and lists the choices"),
    "unknown-key": ("unknown recipe key (typo)", "names the key and the close match"),
    "missing-dataset": ("missing dataset split", "names the file and `carseg prepare`"),
    "missing-checkpoint": (
        "missing calibrator checkpoint (train-refiner)",
        "names the file and `carseg train-calibrator`",
    ),
    "missing-refiner": ("missing refiner checkpoint (sample)", "names `carseg train-refiner`"),
    "missing-bank": ("missing sample bank (evaluate)", "names the file and `carseg sample`"),
    "nothing-to-resume": ("`--resume` with nothing to resume", "says so and how to start"),
    "truncated-hdf5": ("truncated dataset HDF5", "names the file: truncated or corrupt"),
    "corrupt-hdf5": ("corrupt bytes inside a dataset's compressed data", "names the file"),
    "truncated-safetensors": ("truncated checkpoint", "names the file: truncated or corrupt"),
    "corrupt-safetensors": ("checkpoint with a garbage header", "names the file"),
    "truncated-bank": ("truncated sample bank", "names the file: truncated or corrupt"),
    "dataset-schema": ("dataset of another schema version", "names the file and both schemas"),
    "checkpoint-schema": ("checkpoint of another schema version", "names both schemas"),
    "bank-schema": ("sample bank of another schema version", "names both schemas"),
    "checkpoint-stage": ("calibrator checkpoint where the refiner's belongs", "names both"),
    "checkpoint-role": ("discriminator weights where G's belong", "names both roles"),
    "resume-other-arch": (
        "`--resume` with another architecture than the checkpoint's",
        "refuses; recipe.yaml of the run untouched",
    ),
    "class-count": ("dataset with other class count than the checkpoint", "names both counts"),
    "channel-count": ("dataset with other channel count than the checkpoint", "names both"),
    "nan-image": ("NaN image value", "names the file and the row"),
    "inf-image": ("infinite image value", "names the file and the row"),
    "label-out-of-range": ("label id >= num_classes", "names the row, the id and num_classes"),
    "weights-sum": ("label weights that do not sum to 1", "names the row and the sum"),
    "bank-index": ("bank `index` not matching the dataset", "names the bank, `--overwrite`"),
    "bank-class-ids": ("bank samples with class ids >= num_classes", "names the bank"),
    "overwrite-bad-input": (
        "`--overwrite` of a finished stage with a broken input",
        "refuses before deleting anything",
    ),
    "pickle-no-opt-in": (
        "a pickle input (`lidc-pickle`) without `data.allow_pickle`",
        "refuses before unpickling (a pickle that would create a file creates none)",
    ),
    "unwritable-run-dir": ("output directory that cannot be created", "names the directory"),
    "disk-full-checkpoint": (
        "full disk while writing a checkpoint (injected ENOSPC)",
        "names the file and 'No space left on device'; no temp file left",
    ),
    "disk-full-bank": (
        "full disk while writing a sample bank chunk (injected ENOSPC)",
        "names the file; finished chunks kept for the rerun",
    ),
    "disk-full-metrics": (
        "full disk while writing evaluate's outputs (injected ENOSPC)",
        "names the file; the previous outputs stay",
    ),
}

# One row per case of tests/test_predict_inputs.py (`carseg predict`; keyed by the case id).
PREDICT_BAD_INPUTS: dict[str, tuple[str, str]] = {
    "predict-truncated-image": ("`predict`: a truncated image file", "names the file"),
    "predict-text-as-png": ("`predict`: a text file named `.png`", "names the file"),
    "predict-empty-folder": ("`predict`: an empty input folder", "names the folder"),
    "predict-grey-into-rgb": (
        "`predict`: a grey image among RGB ones for an RGB model",
        "names the file and both channel counts",
    ),
    "predict-npy-channels": ("`predict`: a `.npy` with the wrong channel count", "names both"),
    "predict-npy-nan": ("`predict`: NaN in a `.npy` input", "names the file"),
    "predict-bundle-missing-file": ("`predict`: a bundle missing a weights file", "names it"),
    "predict-bundle-tampered": (
        "`predict`: a bundle file that does not match its sha256",
        "names the file; export again",
    ),
    "predict-bundle-schema": ("`predict`: a bundle of another schema version", "names both"),
    "predict-blackbox-missing": (
        "`predict --blackbox`: a folder missing one input's prediction",
        "names the input",
    ),
    "predict-no-preprocessing": (
        "`predict`: an image file for a model whose dataset declared no preprocessing",
        "names the file and how to declare the steps",
    ),
    "predict-out-inside-input": (
        "`predict`: `--out` inside an input folder being read",
        "names both folders",
    ),
    "predict-out-unwritable": ("`predict`: a non-writable `--out`", "names `--out`"),
}

ROWS: list[Row] = [
    Row(
        "SIGKILL of `train-calibrator` at a random step, then `--resume`",
        "finishes at the requested step; every artefact loads; weights, best checkpoint and "
        "metrics.jsonl equal an uninterrupted run's",
        "test_reliability_resume.py::test_kill_and_resume_training",
    ),
    Row(
        "SIGKILL of `train-refiner` at a random step, then `--resume`",
        "the same, for G and D",
        "test_reliability_resume.py::test_kill_and_resume_training",
    ),
    Row(
        "SIGKILL of `sample` at a random chunk, then the same command",
        "finished chunks reused, not recomputed (counted in manifest.json); bank equals an "
        "uninterrupted one",
        "test_reliability_resume.py::test_kill_and_resume_sample",
    ),
    Row(
        "two runs at once in different run_dirs",
        "no interference: both equal a run made alone",
        "test_reliability_resume.py::test_kill_and_resume_training",
    ),
    Row(
        "a second process on the same run_dir and stage",
        "exit 1: names the process holding the lock",
        "test_reliability_resume.py::test_second_process_is_refused_then_stale_lock_cleared",
    ),
    Row(
        "lock (and temp files) left by a killed process",
        "recognised as stale and removed; the run proceeds",
        "test_reliability_resume.py::test_second_process_is_refused_then_stale_lock_cleared",
    ),
    Row(
        "metrics.jsonl line torn by a kill",
        "dropped on `--resume`",
        "test_reliability_faults.py::test_torn_metrics_line_is_dropped_on_resume",
    ),
    Row(
        "non-finite loss, `on_nonfinite: stop` (default)",
        "exit 1 naming the step and the last good checkpoint; `--resume` continues from it",
        "test_reliability_faults.py::test_nonfinite_loss_stops",
    ),
    Row(
        "non-finite loss or gradients, `on_nonfinite: skip`",
        "update dropped (weights unchanged), step marked `skipped` in metrics.jsonl and "
        "counted in `skipped_steps`",
        "test_reliability_faults.py::test_nonfinite_loss_skip",
    ),
    Row(
        "non-finite gradients with a finite loss",
        "update dropped; `stop` ends the stage, so no checkpoint holds a NaN weight",
        "test_reliability_faults.py::test_nonfinite_gradients_never_reach_the_weights",
    ),
    Row(
        "file size limit hit mid-run (real write failure, `RLIMIT_FSIZE`)",
        "exit 1 naming the file; no temp file left",
        "test_reliability_faults.py::test_real_write_failure_in_a_subprocess",
    ),
    Row(
        "random recipes, raw bytes and `key=value` overrides (hypothesis)",
        "a recipe of the schema's types (floats finite), or a recipe error; nothing else",
        "test_reliability_fuzz.py::test_fuzz_recipe_loader",
    ),
    Row(
        "mutated dataset files: attributes, dtypes, shapes, NaN, truncation, random bytes",
        "rejected with an error naming the file, or accepted only when an independent "
        "check finds them valid",
        "test_reliability_fuzz.py::test_fuzz_dataset_validator",
    ),
    Row(
        "mutated sample banks: the same mutations",
        "the same",
        "test_reliability_fuzz.py::test_fuzz_bank_validator",
    ),
    Row(
        "code from data: pickle, `torch.load` without `weights_only=True`, `yaml.load`, "
        "`eval`/`exec`, `np.load(allow_pickle=True)`, `shell=True`",
        "none in carcli/, scripts/, bench/ or experiments/ (an AST scan; the only exception "
        "allowed is the opted-in pickle reader carcli/data/lidc.py)",
        "test_reliability_no_code.py::test_no_code_from_data",
    ),
    Row(
        "the refiner trained further (`--resume`) after its bank was drawn",
        "exit 1 from `evaluate`, `plot-reliability` and `export`: one line naming the bank, the "
        "refiner's old and new sha256 and steps, and `carseg sample RECIPE ... --overwrite`; "
        "`sample` says the bank is stale; `--allow-stale` proceeds and is recorded (manifest, "
        'model.json; the model card then says "not evaluated")',
        "test_provenance.py::test_resumed_refiner_makes_every_reader_refuse_until_refreshed",
    ),
    Row(
        "the dataset made again (other contents) after F and G were trained",
        "exit 1 from `train-refiner` (F is stale) and `sample` (G is stale), naming the split "
        "and the command that retrains; `carseg status` marks every later stage stale",
        "test_provenance.py::test_every_edge_is_recorded_and_a_new_dataset_makes_the_weights_stale",
    ),
    Row(
        "a run made before provenance records (sha256 by path only)",
        "still checked: the same refusals and `status` rows",
        "test_provenance.py::test_runs_made_before_provenance_are_still_checked",
    ),
    Row(
        "a stage's lock held by a live process; a training run killed before it finished",
        "`carseg status` says `running` (who holds it; no later command is suggested, a "
        "`waiting:` line instead) / `partial` with the `--resume` command; exit 1",
        "test_provenance.py::test_status_marks_running_and_interrupted_stages",
    ),
    Row(
        "the same recipe trained twice",
        "the same checkpoint files, byte for byte (safetensors metadata written in sorted order)",
        "test_provenance.py::test_two_identical_runs_write_identical_checkpoints",
    ),
    Row(
        "SIGINT (Ctrl-C) of `train-calibrator` / `train-refiner` at a random step before the first periodic checkpoint",  # noqa: E501
        "the step finishes, `last.safetensors` is written, one line names the `--resume` command, exit 130; that command reaches the final step with weights, optimiser and RNG states, best checkpoint and metrics.jsonl equal to an uninterrupted run's",  # noqa: E501
        "test_interrupt.py::test_signal_checkpoints_and_the_resume_line_resumes",
    ),
    Row(
        "SIGTERM (a cluster's time limit or preemption) of a training stage",
        "the same, exit 143",
        "test_interrupt.py::test_signal_checkpoints_and_the_resume_line_resumes",
    ),
    Row(
        "a second SIGINT / SIGTERM",
        "aborts at once",
        "test_interrupt.py::test_a_second_signal_aborts_at_once",
    ),
    Row(
        "SIGTERM reaching one rank under `torchrun`",
        "every rank stops at the same step; rank 0 writes the checkpoint and the line; one process resumes it",  # noqa: E501
        "test_interrupt.py::test_torchrun_ranks_agree_on_the_stop_step",
    ),
    Row(
        "a long run between step checkpoints",
        "`last.safetensors` also every `checkpoint_minutes` (default 30)",
        "test_interrupt.py::test_time_based_checkpoint",
    ),
    Row(
        "SIGTERM of `sample`",
        "exit 143; names the kept chunk folder and the command that continues from them",
        "test_interrupt.py::test_sample_sigterm_keeps_chunks_and_says_how_to_continue",
    ),
    Row(
        "Ctrl-C of `predict`",
        "exit 130; finished input folders kept; the same command predicts only the others",
        "test_predict.py::test_interrupt_keeps_finished_inputs_and_says_so",
    ),
    Row(
        "every command an error suggests",
        "run in the same situation (41 situations): each succeeds; a hint names no placeholder, only the overrides its stage reads",  # noqa: E501
        "test_hints.py::test_every_suggested_command_works",
    ),
    Row(
        "malformed `--fail-if`",
        "exit 2",
        "test_cli_usage.py::test_malformed_fail_if_is_a_usage_error",
    ),
    Row(
        "an override without `=`",
        "exit 2; blamed on the command line",
        "test_cli_usage.py::test_override_without_equals_is_a_usage_error",
    ),
    Row(
        "a `--fail-if` metric the evaluation will not write",
        "exit 2 before evaluating; close matches that exist",
        "test_cli_usage.py::test_unknown_fail_if_path_is_refused_before_evaluating",
    ),
    Row(
        "`predict`: an image with transparent pixels",
        "exit 1; names the pixel count and how to flatten it",
        "test_predict_usability.py::test_transparent_pixels_are_refused_with_how_to_flatten",
    ),
    Row(
        "`predict`: a file in an input folder that is not an input",
        "listed in one line (even with `-q`)",
        "test_predict_usability.py::test_a_file_that_is_not_an_input_is_reported",
    ),
    Row(
        "`sample.region_coupling: learned` with a refiner trained without the coupling head",
        "exit 1 naming the missing `refiner/coupling.safetensors` and the command that trains it; a bundle whose `coupling.safetensors` was changed is refused by its sha256, one without the `discriminator.safetensors` its pool is weighted by (`sample.pool_critic`) names the missing file",  # noqa: E501
        "test_region_coupling.py::test_cascade_trains_samples_exports_and_predicts_with_the_head",
    ),
]


def all_rows() -> list[Row]:
    bad = [
        Row(fault, f"exit 1; {detail}", "test_reliability_inputs.py::test_bad_input")
        for fault, detail in BAD_INPUTS.values()
    ]
    bad += [
        Row(
            fault,
            f"exit 1; {detail}; nothing written",
            "test_predict_inputs.py::test_bad_predict_input",
        )
        for fault, detail in PREDICT_BAD_INPUTS.values()
    ]
    return bad + ROWS


def markdown_table() -> str:
    lines = ["| fault or bad input | outcome | test |", "|---|---|---|"]
    for row in all_rows():
        lines.append(f"| {row.fault} | {row.outcome} | `{row.test}` |")
    return "\n".join(lines) + "\n"
