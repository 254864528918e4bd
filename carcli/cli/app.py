"""The `carseg` command line: thin commands over the `run_<stage>` functions.

Torch and the stage modules are imported inside the command bodies, so `carseg --help`
answers at once. A CarsegError becomes one line on stderr and exit status 1; usage errors
(UsageError, and click's own) exit 2; a traceback is shown only with CARSEG_DEBUG=1
(:mod:`carcli.cli.errors`). The pipeline stages' commands are built from a table
(:func:`carcli.cli.stage_command.stage_command`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from carcli.cli.errors import debug, handle_errors
from carcli.cli.help import PlainCommand
from carcli.cli.stage_command import (
    OverridesArg,
    OverwriteOpt,
    QuietOpt,
    RecipeArg,
    load,
    stage_command,
)

app = typer.Typer(
    name="carseg",
    help="Calibrated adversarial refinement for stochastic semantic segmentation.\n\n"
    "Every stage reads a YAML recipe: carseg STAGE RECIPE key=value ...",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "terminal_width": 100},
)


# The pipeline stages' run functions, each imported when its command runs (so `carseg --help`
# answers at once).
def _prepare() -> Callable[..., Any]:
    from carcli.stages.prepare import run_prepare

    return run_prepare


def _train_calibrator() -> Callable[..., Any]:
    from carcli.training.calibrator import run_train_calibrator

    return run_train_calibrator


def _train_refiner() -> Callable[..., Any]:
    from carcli.training.refiner import run_train_refiner

    return run_train_refiner


def _sample() -> Callable[..., Any]:
    from carcli.stages.sample import run_sample

    return run_sample


def _evaluate() -> Callable[..., Any]:
    from carcli.stages.evaluate import run_evaluate

    return run_evaluate


def _plot_reliability() -> Callable[..., Any]:
    from carcli.stages.plot_reliability import run_plot_reliability

    return run_plot_reliability


def _export() -> Callable[..., Any]:
    from carcli.stages.export import export_command

    return export_command


FailIfOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--fail-if",
        metavar="CONDITION",
        help='exit 1 when true, e.g. "ged.16>0.30" (repeatable)',
    ),
]
ConventionOpt = Annotated[
    str | None,
    typer.Option(
        "--convention",
        metavar="NAME[,NAME]",
        help="rules of carseg, car, mose, phiseg, ccdm, flowssn, or all (sets evaluate.convention)",
    ),
]
BundleOutOpt = Annotated[
    str | None, typer.Option("--out", help="bundle folder (default run_dir/bundle)")
]
PreprocessOpt = Annotated[
    str | None,
    typer.Option("--preprocess", help="preprocessing spec of image files, JSON list"),
]
_WRITES = ("overwrite", "allow_stale", "quiet")

for _name, _run, _doc, _flags, _options in (
    ("prepare", _prepare,
     "Build the dataset files (train/val/test.h5) in data.dir from data.source.",
     ("overwrite", "quiet"), ()),
    ("train-calibrator", _train_calibrator,
     "Train F, the calibration network, with the cross-entropy.",
     ("resume", "overwrite", "quiet"), ()),
    ("train-refiner", _train_refiner,
     "Train G (and D) against the frozen F: adversarial plus calibration loss.",
     ("resume", *_WRITES), ()),
    ("sample", _sample,
     "Draw sample.num_samples segmentations per image into a sample bank.", _WRITES, ()),
    ("evaluate", _evaluate,
     "Compute the metrics of a sample bank against the dataset split.", _WRITES,
     (("fail_if", FailIfOpt), ("convention", ConventionOpt))),
    ("plot-reliability", _plot_reliability,
     "Reliability diagram, per-class calibration and sample grids (PNG + CSV).", _WRITES, ()),
):  # fmt: skip
    stage_command(app, _name, _run, _doc, _flags, _options)


@app.command(cls=PlainCommand)
@handle_errors
def validate(recipe: RecipeArg, overrides: OverridesArg = None) -> None:
    """Check a recipe and its inputs without running anything."""
    from carcli.cli.validate_command import run_validate

    run_validate(recipe, overrides or [])


@app.command(cls=PlainCommand)
@handle_errors
def show(recipe: RecipeArg, overrides: OverridesArg = None) -> None:
    """Print the fully resolved recipe (defaults and overrides applied) as YAML."""
    from carcli.recipe.load import recipe_to_yaml

    typer.echo(recipe_to_yaml(load(recipe, overrides)), nl=False)


stage_command(
    app,
    "export",
    _export,
    "Write a model bundle: F, G, model.json and a generated model card.",
    _WRITES,
    (("out", BundleOutOpt), ("preprocess", PreprocessOpt)),
)


@app.command(cls=PlainCommand)
@handle_errors
def predict(
    model: Annotated[str, typer.Argument(help="bundle folder (carseg export) or recipe")],
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="image files, .npy arrays, folders or an HDF5 split; with a recipe MODEL "
            "also its key=value overrides",
        ),
    ],
    out: Annotated[str, typer.Option("--out", help="output folder")] = "predictions",
    num_samples: Annotated[int, typer.Option("--num-samples", help="samples per image")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="noise seed")] = 0,
    blackbox: Annotated[
        str | None, typer.Option("--blackbox", help="folder of black-box predictions")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per forward")] = 8,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, mps or auto")] = "cpu",
    recursive: Annotated[bool, typer.Option("--recursive", help="read subfolders too")] = False,
    speed: Annotated[
        list[str] | None,
        typer.Option(
            "--speed",
            help="KEY=VALUE over the model's speed options (fold_bn, cpu_bf16, channels_last, "
            "amp, compile), e.g. cpu_bf16=false",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Samples, uncertainty and label proposals for new images (one folder per input)."""
    from carcli.cli.hints import split_overrides
    from carcli.predict.engine import PredictOptions
    from carcli.stages.predict import ModelSource, parse_speed, run_predict

    inputs, overrides = split_overrides(inputs)
    run_predict(
        ModelSource(model, device, parse_speed(speed), overrides),
        inputs,
        out=out,
        opts=PredictOptions(num_samples, seed, batch_size),
        blackbox=blackbox,
        recursive=recursive,
        overwrite=overwrite,
        quiet=quiet,
    )


@app.command("import-samples", cls=PlainCommand)
@handle_errors
def import_samples(
    recipe: RecipeArg,
    source: Annotated[str, typer.Argument(help="folder of sample PNGs, or .npy / .npz array")],
    overrides: OverridesArg = None,
    split: Annotated[str | None, typer.Option("--split", help="default evaluate.split")] = None,
    out: Annotated[str | None, typer.Option("--out", help="bank path")] = None,
    calibration: Annotated[
        str | None, typer.Option("--calibration", help=".npy of probabilities [N, K, H, W]")
    ] = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Turn another method's samples into a sample bank that evaluate can score."""
    from carcli.stages.import_samples import run_import_samples

    run_import_samples(
        load(recipe, overrides),
        source,
        split=split,
        out=out,
        calibration=calibration,
        overwrite=overwrite,
        quiet=quiet,
    )


@app.command(cls=PlainCommand)
@handle_errors
def status(recipe: RecipeArg, overrides: OverridesArg = None) -> None:
    """Each stage's artefact: done, stale (and why), missing, partial or running, with the
    command to run next; exit 0 when all is up to date, 1 otherwise."""
    from carcli.cli.status import print_status

    raise typer.Exit(print_status(recipe, overrides or []))


@app.command(cls=PlainCommand)
def version() -> None:
    """Print the carseg version."""
    from carcli._version import __version__

    typer.echo(__version__)


def _print_version(value: bool) -> None:
    if value:
        from carcli._version import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Calibrated adversarial refinement for stochastic semantic segmentation."""


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # pragma: no cover - last resort outside a command
        if debug():
            raise
        print(f"carseg: error: {exc}", file=sys.stderr)
        sys.exit(1)
