"""Recipes: loading, every error at once, typed overrides, ranges, and the YAML round trip."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from carcli.errors import CarsegError
from carcli.recipe import schema, schema_training
from carcli.recipe.load import (
    RecipeError,
    load_recipe,
    parse_override,
    recipe_from_yaml_text,
    recipe_to_dict,
    recipe_to_yaml,
)
from carcli.recipe.schema import Recipe

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "recipes" / "toy.yaml"
RECIPES = sorted([*REPO.glob("recipes/*.yaml"), *REPO.glob("recipes/*.yml")])


def _write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _problems(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return info.value.problems


# ------------------------------------------------------------------------- every recipe loads


def test_recipes_folder_is_not_empty() -> None:
    assert TOY in RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_loads(path: Path) -> None:
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    # and survives the resolved-YAML round trip stored in manifests and banks
    assert recipe_from_yaml_text(recipe_to_yaml(recipe)) == recipe


def test_toy_recipe_values() -> None:
    r = load_recipe(TOY)
    assert (r.name, r.data.source, r.data.dir) == ("toy", "synthetic", "data/toy")
    assert r.refiner.calibration_loss == "kl"
    assert isinstance(r.refiner.lr, float) and r.refiner.lr == pytest.approx(5e-4)
    assert r.evaluate.ged_counts == [16, 50, 100]


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_recipe(_write(tmp_path, "# nothing but a comment\n")) == Recipe()


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(CarsegError) as info:
        load_recipe(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)
    assert info.value.hint and "recipes/toy.yaml" in info.value.hint


def test_every_schema_field_has_a_docstring() -> None:
    classes = [
        n
        for module in (schema, schema_training)
        for n in ast.parse(Path(module.__file__).read_text(encoding="utf-8")).body
        if isinstance(n, ast.ClassDef)
    ]
    assert {c.name for c in classes} >= {"Recipe", "DataConfig", "RefinerConfig"}
    missing = []
    for cls in classes:
        body = cls.body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign):
                nxt = body[i + 1] if i + 1 < len(body) else None
                ok = (
                    isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)
                    and nxt.value.value.strip()
                )
                if not ok:
                    missing.append(f"{cls.name}.{node.target.id}")  # type: ignore[attr-defined]
    assert not missing


# --------------------------------------------------------------------- errors, all at once


def test_three_wrong_fields_are_all_reported(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "seed: 1.5\nrefiner:\n  lr: fast\n  steps: many\n", "recipes/x.yaml")
    with pytest.raises(RecipeError) as info:
        load_recipe("recipes/x.yaml")
    lines = str(info.value).splitlines()
    assert len(info.value.problems) == 3 and len(lines) == 3
    assert "recipes/x.yaml: refiner.lr -> expected float, got 'fast'" in lines
    assert "recipes/x.yaml: refiner.steps -> expected int, got 'many'" in lines
    assert "recipes/x.yaml: seed -> expected int, got 1.5" in lines


def test_type_and_range_errors_are_reported_together(tmp_path: Path) -> None:
    path = _write(tmp_path, "refiner:\n  lr: fast\n  steps: 0\ndata:\n  synthetic:\n    size: 20\n")
    problems = _problems(path)
    assert any(p.startswith("refiner.lr -> expected float") for p in problems)
    assert "refiner.steps -> must be > 0, got 0" in problems
    assert "data.synthetic.size -> must be a multiple of 16, got 20" in problems


def test_unknown_keys_name_close_matches(tmp_path: Path) -> None:
    path = _write(tmp_path, "refinr:\n  steps: 3\nrefiner:\n  stepz: 3\nsed: 1\n")
    problems = _problems(path)
    assert len(problems) == 3
    assert any("refinr" in p and "did you mean refiner" in p for p in problems)
    assert any("refiner.stepz" in p and "did you mean refiner.steps" in p for p in problems)
    assert any("sed" in p and "did you mean seed" in p for p in problems)


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path: Path) -> None:
    (problem,) = _problems(_write(tmp_path, "sample:\n  zzzzzz: 1\n"))
    assert "sample.zzzzzz -> unknown key" in problem
    assert "num_samples" in problem and "split" in problem


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: toy\nrefiner:\n  steps: [1, 2\n  lr: 3\n")
    with pytest.raises(CarsegError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    assert str(path) in msg and "malformed YAML" in msg and "line 4" in msg


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    (problem,) = _problems(_write(tmp_path, text))
    assert "expected a mapping" in problem


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    (problem,) = _problems(_write(tmp_path, "data: 5\n"))
    assert problem == "data -> expected a mapping (section), got 5"
    # an override inside it does not hide the broken section
    (problem,) = _problems(_write(tmp_path, "data: 5\n"), ["data.dir=x"])
    assert problem.startswith("data -> expected a mapping")


def test_non_text_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(CarsegError):
        load_recipe(path)


# ----------------------------------------------------------------------------- type checks


@pytest.mark.parametrize("choice", ["kl", "kl_forward", "ce", "none"])
def test_calibration_loss_choices(choice: str) -> None:
    r = load_recipe(TOY, [f"refiner.calibration_loss={choice}"])
    assert r.refiner.calibration_loss == choice


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("refiner.calibration_loss=mse", "refiner.calibration_loss"),
        ("refiner.calibration_loss=null", "refiner.calibration_loss"),
        ("refiner.noise=uniform", "refiner.noise"),
        ("data.source=imagenet", "data.source"),
        ("sample.split=validation", "sample.split"),
    ],
)
def test_literal_choices_are_enforced(override: str, key: str) -> None:
    (problem,) = _problems(TOY, [override])
    assert problem.startswith(f"{key} -> expected one of")


def test_literal_error_lists_the_choices() -> None:
    (problem,) = _problems(TOY, ["refiner.calibration_loss=mse"])
    assert problem == (
        "refiner.calibration_loss -> expected one of kl, kl_forward, ce, none, got 'mse'"
    )


# ------------------------------------------------------------------------------- overrides


def test_override_int_for_float_becomes_float() -> None:
    r = load_recipe(TOY, ["refiner.lr=1", "refiner.w_cal=0"])
    assert r.refiner.lr == 1.0 and isinstance(r.refiner.lr, float)
    assert r.refiner.w_cal == 0.0 and isinstance(r.refiner.w_cal, float)


@pytest.mark.parametrize("text", ["1e-3", "1E-3", "1.0e-3", "0.001", "+1e-3"])
def test_override_float_spellings(text: str) -> None:
    r = load_recipe(TOY, [f"refiner.lr={text}"])
    assert r.refiner.lr == pytest.approx(1e-3) and isinstance(r.refiner.lr, float)


def test_recipe_file_float_without_dot(tmp_path: Path) -> None:
    r = load_recipe(_write(tmp_path, "refiner:\n  lr: 1e-4\n  w_adv: 2e1\n"))
    assert r.refiner.lr == pytest.approx(1e-4) and r.refiner.w_adv == 20.0


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("refiner.steps=true", "refiner.steps -> expected int, got True"),
        ("refiner.steps=7.0", "refiner.steps -> expected int, got 7.0"),
        ("refiner.steps=ten", "refiner.steps -> expected int, got 'ten'"),
        ("refiner.lr=fast", "refiner.lr -> expected float, got 'fast'"),
        ("refiner.lr=false", "refiner.lr -> expected float, got False"),
        ("data.flip=1", "data.flip -> expected bool, got 1"),
        ("name=2024", "name -> expected str, got 2024"),
        ("seed=null", "seed -> expected int, got None"),
        ("seed=", "seed -> expected int, got None"),
    ],
)
def test_override_types_are_checked(override: str, expected: str) -> None:
    assert _problems(TOY, [override]) == [expected]


def test_override_lists_use_yaml_flow() -> None:
    r = load_recipe(
        TOY,
        ["evaluate.ged_counts=[1,2]", "refiner.betas=[0.9, 0.999]", "calibrator.lr_milestones=[]"],
    )
    assert r.evaluate.ged_counts == [1, 2]
    assert r.refiner.betas == [0.9, 0.999]
    assert r.calibrator.lr_milestones == []


def test_override_list_elements_are_checked() -> None:
    (problem,) = _problems(TOY, ["evaluate.ged_counts=[1,x]"])
    assert problem == "evaluate.ged_counts[1] -> expected int, got 'x'"
    (problem,) = _problems(TOY, ["evaluate.ged_counts=16"])
    assert problem.startswith("evaluate.ged_counts -> expected list of int")


def test_override_null_for_optional() -> None:
    r = load_recipe(
        TOY, ["calibrator.width=null", "discriminator.max_accuracy=~", "data.raw=/some/where"]
    )
    assert r.calibrator.width is None
    assert r.discriminator.max_accuracy is None
    assert r.data.raw == "/some/where"
    r = load_recipe(TOY, ["calibrator.width=24"])
    assert r.calibrator.width == 24


def test_override_unknown_key_names_close_matches() -> None:
    (problem,) = _problems(TOY, ["refiner.stepz=3"])
    assert problem == "refiner.stepz -> unknown key; did you mean refiner.steps?"
    (problem,) = _problems(TOY, ["refinr.steps=3"])
    assert "did you mean refiner" in problem


def test_override_of_a_section_is_refused() -> None:
    (problem,) = _problems(TOY, ["refiner=3"])
    assert "refiner" in problem and "section" in problem
    (problem,) = _problems(TOY, ["seed.x=3"])
    assert "seed is not a section" in problem


def test_override_without_equals_sign() -> None:
    from carcli.errors import UsageError

    with pytest.raises(UsageError) as info:  # a usage error: exit status 2
        load_recipe(TOY, ["refiner.steps"])
    assert "key=value" in str(info.value) and str(info.value).startswith("command line: ")


def test_override_errors_all_reported_and_blamed_on_the_command_line(tmp_path: Path) -> None:
    """Problems of keys the overrides set name the command line, not the recipe file; a
    problem in the file still names the file."""
    with pytest.raises(RecipeError) as info:
        load_recipe(TOY, ["refiner.stepz=3", "refiner.lr=fast", "seed=x"])
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert all(line.startswith("command line: ") for line in lines)
    bad = _write(tmp_path, "name: a\nrefiner:\n  steps: many\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(bad, ["calibrator.lr=fast"])
    assert str(info.value).splitlines() == [
        f"{bad}: refiner.steps -> expected int, got 'many'",
        "command line: calibrator.lr -> expected float, got 'fast'",
    ]


def test_overrides_apply_in_order_and_create_sections(tmp_path: Path) -> None:
    r = load_recipe(
        _write(tmp_path, "name: a\n"), ["refiner.steps=5", "refiner.steps=6", "sample.batch_size=3"]
    )
    assert r.refiner.steps == 6 and r.sample.batch_size == 3
    # sibling keys of the file keep their values
    r = load_recipe(TOY, ["refiner.steps=7"])
    assert r.refiner.steps == 7 and r.refiner.batch_size == 16 and r.refiner.width == 16


def test_override_value_keeps_equals_signs() -> None:
    assert parse_override("name=a=b") == ("name", "a=b")
    assert parse_override(" seed =3") == ("seed", 3)


def test_override_of_data_dir_and_run_dir(tmp_path: Path) -> None:
    r = load_recipe(TOY, [f"data.dir={tmp_path / 'd'}", f"run_dir={tmp_path / 'r'}"])
    assert r.data.dir == str(tmp_path / "d") and r.run_dir == str(tmp_path / "r")


# ---------------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("refiner.steps=0", "refiner.steps -> must be > 0, got 0"),
        ("calibrator.steps=-3", "calibrator.steps -> must be > 0, got -3"),
        ("refiner.batch_size=0", "refiner.batch_size -> must be > 0, got 0"),
        ("refiner.num_samples=0", "refiner.num_samples -> must be > 0, got 0"),
        ("refiner.lr=0", "refiner.lr -> must be > 0, got 0.0"),
        ("data.synthetic.size=20", "data.synthetic.size -> must be a multiple of 16, got 20"),
        (
            "data.synthetic.num_classes=2",
            "data.synthetic.num_classes -> synthetic data needs >= 3, got 2",
        ),
        ("data.regression.pi=1.5", "data.regression.pi -> must be in [0, 1], got 1.5"),
        ("threads=-1", "threads -> must be >= 0, got -1"),
        ("refiner.val_every=-1", "refiner.val_every -> must be >= 0, got -1"),
        ("refiner.w_entropy=-1", "refiner.w_entropy -> must be >= 0, got -1.0"),
    ],
)
def test_range_checks(override: str, expected: str) -> None:
    assert _problems(TOY, [override]) == [expected]


@pytest.mark.parametrize(
    "override",
    [
        "refiner.betas=[0.5]",
        "refiner.betas=[0.5, 1.0]",
        "calibrator.lr_milestones=[10, 5]",
        "evaluate.ged_counts=[16, 0]",
    ],
)
def test_list_range_checks(override: str) -> None:
    (problem,) = _problems(TOY, [override])
    assert problem.startswith(override.split("=")[0])


def test_valid_edge_values() -> None:
    r = load_recipe(
        TOY, ["data.synthetic.size=48", "refiner.val_every=0", "threads=0", "data.regression.pi=0"]
    )
    got = (r.data.synthetic.size, r.refiner.val_every, r.threads, r.data.regression.pi)
    assert got == (48, 0, 0, 0.0)


# ------------------------------------------------------------- deprecated flat data.* keys

OLD_SYNTHETIC = "data:\n  source: synthetic\n  size: 64\n  num_train: 7\n  num_classes: 4\n"


def test_old_flat_keys_in_a_file_are_read_with_a_warning(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, OLD_SYNTHETIC)
    r = load_recipe(path)
    syn = r.data.synthetic
    assert (syn.size, syn.num_train, syn.num_classes) == (64, 7, 4)
    err = capsys.readouterr().err.splitlines()
    assert (
        f"{path}: data.size is deprecated: use data.synthetic.size (read for this version, "
        "removed in the next)"
    ) in err
    assert sum("data.num_train is deprecated: use data.synthetic.num_train" in e for e in err) == 1
    assert len(err) == 3
    new = _write(tmp_path, "data:\n  synthetic:\n    size: 64\n    num_train: 7\n", "n.yaml")
    assert load_recipe(new).data.synthetic == dataclasses.replace(syn, num_classes=3)
    assert capsys.readouterr().err == ""


def test_old_flat_keys_as_overrides_are_read_with_a_warning(capsys) -> None:
    r = load_recipe(TOY, ["data.size=48", "data.pi=0.5", "data.sigma=0.1"])
    assert (r.data.synthetic.size, r.data.regression.pi, r.data.regression.sigma) == (48, 0.5, 0.1)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"override: data.{k} is deprecated: use data.{g}.{k} (read for this version, "
        "removed in the next)"
        for k, g in (("size", "synthetic"), ("pi", "regression"), ("sigma", "regression"))
    ]
    assert load_recipe(TOY, ["data.synthetic.size=48"]) == load_recipe(TOY, ["data.size=48"])


def test_old_split_sizes_go_to_the_group_of_the_source(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, "data:\n  source: regression\n  num_test: 9\n  pi: 0.7\n")
    r = load_recipe(path, ["data.num_val=5"])
    assert (r.data.regression.num_test, r.data.regression.num_val) == (9, 5)
    assert r.data.synthetic == schema.SyntheticConfig()
    assert "use data.regression.num_val" in capsys.readouterr().err
    r = load_recipe(path, ["data.source=synthetic"])
    assert (r.data.synthetic.num_test, r.data.regression.pi) == (9, 0.7)


def test_old_and_new_key_with_different_values_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "data:\n  size: 32\n  synthetic:\n    size: 64\n")
    assert _problems(path) == [
        "data.size -> set to 32 and data.synthetic.size to 64; keep only data.synthetic.size"
    ]
    assert _problems(TOY, ["data.synthetic.size=64", "data.size=48"]) == [
        "data.size -> set to 48 and data.synthetic.size to 64; keep only data.synthetic.size"
    ]
    # the same value twice is no conflict; an override replaces the file's value as always
    same = _write(tmp_path, "data:\n  size: 64\n  synthetic:\n    size: 64\n", "same.yaml")
    assert load_recipe(same).data.synthetic.size == 64
    assert (
        load_recipe(
            _write(tmp_path, OLD_SYNTHETIC, "o.yaml"), ["data.synthetic.size=16"]
        ).data.synthetic.size
        == 16
    )


def test_stored_old_resolved_recipe_still_reads() -> None:
    old = recipe_to_dict(load_recipe(TOY))
    data = old["data"]
    data.update(data.pop("synthetic"))
    data.update({k: v for k, v in data.pop("regression").items() if k in ("pi", "sigma")})
    assert recipe_from_yaml_text(yaml.safe_dump(old)) == load_recipe(TOY)


# ------------------------------------------------------------------------------- round trip


def test_yaml_round_trip_with_overrides() -> None:
    r = load_recipe(
        TOY,
        [
            "calibrator.width=null",
            "refiner.lr=1e-5",
            "evaluate.ged_counts=[3]",
            "data.raw=/x y/z",
            "name='run: 1'",
            "discriminator.max_accuracy=null",
        ],
    )
    text = recipe_to_yaml(r)
    back = recipe_from_yaml_text(text)
    assert back == r
    assert yaml.safe_load(text) == recipe_to_dict(r)
    assert recipe_to_dict(back) == dataclasses.asdict(r)


def test_recipe_from_yaml_text_rejects_bad_text() -> None:
    with pytest.raises(RecipeError) as info:
        recipe_from_yaml_text("refiner:\n  stepz: 3\n", source="manifest.json")
    assert str(info.value).startswith("manifest.json: refiner.stepz -> unknown key")
    with pytest.raises(CarsegError):
        recipe_from_yaml_text("- 1\n- 2\n")
    with pytest.raises(CarsegError):
        recipe_from_yaml_text("a: [1\n")
    assert recipe_from_yaml_text("") == Recipe()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("speed.sample_chunk=-1", "speed.sample_chunk -> must be >= 0"),
        ("sample.region_link=-2", "sample.region_link -> must be >= 0"),
        ("sample.region_threshold=1.5", "sample.region_threshold -> must be in (0, 1]"),
    ],
)
def test_sampling_options_are_checked(override: str, message: str) -> None:
    with pytest.raises(RecipeError) as err:
        load_recipe("recipes/toy.yaml", [override])
    assert message in str(err.value)


def test_pool_target_needs_a_pool_and_is_one_of_two() -> None:
    toy = REPO / "recipes" / "toy.yaml"
    problems = _problems(
        toy, ["sample.region_pool=1", "sample.pool_critic=0", "sample.pool_target=calibrator"]
    )
    assert any(p.startswith("sample.pool_target -> tilts the picks from a pool") for p in problems)
    problems = _problems(toy, ["sample.pool_target=labels"])
    assert any(p.startswith("sample.pool_target") and "calibrator" in p for p in problems)
