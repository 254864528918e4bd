"""The `carseg` command line: thin commands over the `run_<stage>` functions.

Torch and the stage modules are imported inside the command bodies, so `carseg --help`
answers at once. A CarsegError becomes one line on stderr and exit status 1; usage errors
(UsageError, and click's own) exit 2; a traceback is shown only with CARSEG_DEBUG=1.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from carcli.cli.help import PlainCommand, name_recipe
from carcli.errors import CarsegError, Interrupted

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

CommandFn = TypeVar("CommandFn", bound=Callable[..., Any])

RecipeArg = Annotated[
    str, typer.Argument(metavar="RECIPE", help="YAML recipe, e.g. recipes/toy.yaml")
]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="KEY=VALUE",
        help="recipe overrides, e.g. refiner.steps=200",
        show_default=False,
    ),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="replace finished outputs")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars; plain lines")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint")]
AllowStaleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-stale",
        help="run even if the weights or bank read were made from inputs that have changed "
        "since (recorded in the manifest); see carseg status",
    ),
]


def debug() -> bool:
    return os.environ.get("CARSEG_DEBUG", "") not in ("", "0")


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"carseg: error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(fn: CommandFn) -> CommandFn:
    """Turn CarsegError (and other failures) into one line and an exit status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except CarsegError as exc:
            if debug():
                raise
            text = name_recipe(str(exc), *_recipe_args(kwargs))
            lines = text.splitlines() or ["failed"]
            for line in lines:
                typer.echo(f"carseg: error: {line}", err=True)
            raise typer.Exit(exc.exit_status) from None
        except Interrupted as exc:  # stopped by SIGINT / SIGTERM after keeping its work
            if exc.message:
                text = name_recipe(exc.message, *_recipe_args(kwargs))
                typer.echo(f"carseg: {text}", err=True)
            raise typer.Exit(exc.exit_status) from None
        except KeyboardInterrupt:
            typer.echo("carseg: interrupted; finished artefacts are kept", err=True)
            raise typer.Exit(130) from None
        except MemoryError:
            if debug():
                raise
            fail("out of memory; lower the batch or chunk sizes in the recipe")
        except OSError as exc:
            if debug():
                raise
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            fail(f"{exc.strerror or exc}{where}; check the path, permissions and free disk space")
        except Exception as exc:  # an unexpected failure: still one line, unless debugging
            if debug():
                raise
            fail(
                f"internal error: {type(exc).__name__}: {exc} "
                "(rerun with CARSEG_DEBUG=1 for the traceback and report it)"
            )

    return wrapper  # type: ignore[return-value]


def _recipe_args(kwargs: dict[str, Any]) -> tuple[str | None, list[str]]:
    """The recipe and overrides a command was given (predict: a recipe MODEL, its overrides
    among the INPUT arguments), for the commands its messages suggest."""
    if "recipe" in kwargs:
        return kwargs["recipe"], kwargs.get("overrides") or []
    model = kwargs.get("model")
    if model and str(model).endswith((".yaml", ".yml")):
        from carcli.cli.hints import split_overrides

        return model, split_overrides(kwargs.get("inputs") or [])[1]
    return None, []


def _recipe(path: str, overrides: list[str] | None) -> Any:
    from carcli.recipe.load import load_recipe

    return load_recipe(path, overrides or [])


_FLAGS: dict[str, Any] = {
    "resume": ResumeOpt,
    "overwrite": OverwriteOpt,
    "allow_stale": AllowStaleOpt,
    "quiet": QuietOpt,
}
"""The flags a pipeline stage may take, as its command lists them (in its own order)."""


def _stage_command(
    name: str, run: Callable[[], Callable[..., Any]], doc: str, flags: tuple[str, ...]
) -> None:
    """Register ``carseg NAME RECIPE [KEY=VALUE ...] [flags]``: the recipe loaded with its
    overrides and handed, with the flags as keywords, to the stage's run function, which
    ``run()`` imports when the command runs. The command's signature (what typer reads) is
    built from ``flags``, in that order."""

    def command(recipe: str, overrides: list[str] | None = None, **options: bool) -> None:
        run()(_recipe(recipe, overrides), **options)

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("recipe", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=RecipeArg),
        inspect.Parameter(
            "overrides", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
            annotation=OverridesArg,
        ),
        *(inspect.Parameter(f, kw, default=False, annotation=_FLAGS[f]) for f in flags),
    ]  # fmt: skip
    command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__doc__ = doc
    command.__name__ = command.__qualname__ = name.replace("-", "_")
    app.command(name, cls=PlainCommand)(handle_errors(command))


# The pipeline stages that take a recipe and flags only; each run function is imported when
# its command runs (so `carseg --help` answers at once).
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


def _plot_reliability() -> Callable[..., Any]:
    from carcli.stages.plot_reliability import run_plot_reliability

    return run_plot_reliability


_stage_command(
    "prepare",
    _prepare,
    "Build the dataset files (train/val/test.h5) in data.dir from data.source.",
    ("overwrite", "quiet"),
)
_stage_command(
    "train-calibrator",
    _train_calibrator,
    "Train F, the calibration network, with the cross-entropy.",
    ("resume", "overwrite", "quiet"),
)
_stage_command(
    "train-refiner",
    _train_refiner,
    "Train G (and D) against the frozen F: adversarial plus calibration loss.",
    ("resume", "overwrite", "allow_stale", "quiet"),
)
_stage_command(
    "sample",
    _sample,
    "Draw sample.num_samples segmentations per image into a sample bank.",
    ("overwrite", "allow_stale", "quiet"),
)


@app.command(cls=PlainCommand)
@handle_errors
def evaluate(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    fail_if: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-if",
            metavar="CONDITION",
            help='exit 1 when true, e.g. "ged.16>0.30" (repeatable)',
        ),
    ] = None,
    convention: Annotated[
        str | None,
        typer.Option(
            "--convention",
            metavar="NAME[,NAME]",
            help="rules of carseg, car, mose, phiseg, ccdm, flowssn, or all (sets "
            "evaluate.convention)",
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    allow_stale: AllowStaleOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compute the metrics of a sample bank against the dataset split."""
    from carcli.stages.evaluate import run_evaluate

    run_evaluate(
        _recipe(recipe, overrides),
        fail_if=fail_if or [],
        overwrite=overwrite,
        quiet=quiet,
        convention=convention,
        allow_stale=allow_stale,
    )


_stage_command(
    "plot-reliability",
    _plot_reliability,
    "Reliability diagram, per-class calibration and sample grids (PNG + CSV).",
    ("overwrite", "allow_stale", "quiet"),
)


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

    typer.echo(recipe_to_yaml(_recipe(recipe, overrides)), nl=False)


@app.command(cls=PlainCommand)
@handle_errors
def export(
    recipe: RecipeArg,
    overrides: OverridesArg = None,
    out: Annotated[
        str | None, typer.Option("--out", help="bundle folder (default run_dir/bundle)")
    ] = None,
    preprocess: Annotated[
        str | None,
        typer.Option("--preprocess", help="preprocessing spec of image files, JSON list"),
    ] = None,
    overwrite: OverwriteOpt = False,
    allow_stale: AllowStaleOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a model bundle: F, G, model.json and a generated model card."""
    from carcli.stages.export import export_command

    export_command(_recipe(recipe, overrides), out, preprocess, overwrite, quiet, allow_stale)


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
    from carcli.stages.predict import parse_speed, run_predict

    inputs, overrides = split_overrides(inputs)
    run_predict(
        model,
        inputs,
        overrides=overrides,
        out=out,
        num_samples=num_samples,
        seed=seed,
        blackbox=blackbox,
        batch_size=batch_size,
        device=device,
        overwrite=overwrite,
        quiet=quiet,
        recursive=recursive,
        speed=parse_speed(speed),
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
        _recipe(recipe, overrides),
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
