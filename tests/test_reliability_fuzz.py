"""Property-based tests (hypothesis): the recipe loader and override parser, and the dataset
and bank validators on mutated files. Nothing may crash with anything but a CarsegError,
and whatever is accepted must pass an independent check written here from the dataset format
of docs/guide.md."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import h5py
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reliability import REPO

from carcli.data.dataset import Classes, DatasetFile, read_info, write_dataset
from carcli.data.dataset_check import validate_dataset
from carcli.errors import CarsegError
from carcli.recipe.load import load_recipe, parse_override
from carcli.recipe.schema import Recipe
from carcli.sampling.bank import Bank, create_bank

TOY = REPO / "recipes" / "toy.yaml"
FUZZ = settings(  # CARSEG_FUZZ_EXAMPLES=2000 for a longer hunt
    max_examples=int(os.environ.get("CARSEG_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_count = itertools.count()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _fresh(work: Path, suffix: str) -> Path:
    return work / f"{next(_count)}{suffix}"


# ---------------------------------------------------------------------------------- recipes


def _sections() -> dict[str, list[str]]:
    hints = typing.get_type_hints(Recipe)
    out = {"": list(hints)}
    for name, tp in hints.items():
        if dataclasses.is_dataclass(tp):
            out[name] = [f.name for f in dataclasses.fields(tp)]
    return out


SECTIONS = _sections()
DOTTED = [f"{s}.{k}" if s else k for s, keys in SECTIONS.items() for k in keys]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["kl", "ce", "none", "stop", "skip", "test", "unet", "auto", "cpu"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
keys = st.one_of(
    st.sampled_from([k for keys in SECTIONS.values() for k in keys]), st.text(max_size=8)
)


@st.composite
def recipe_docs(draw: st.DrawFn) -> Any:
    doc: dict[Any, Any] = {}
    for _ in range(draw(st.integers(0, 5))):
        section = draw(st.sampled_from(list(SECTIONS)))
        if section:
            body = draw(
                st.one_of(
                    st.dictionaries(
                        st.one_of(st.sampled_from(SECTIONS[section]), keys), values, max_size=4
                    ),
                    values,
                )
            )
            doc[section] = body
        else:
            doc[draw(keys)] = draw(values)
    return doc


def _conforms(value: Any, tp: Any) -> bool:
    """Is `value` of the schema type `tp` (finite floats only)?"""
    origin = get_origin(tp)
    if origin is Literal:
        return value in get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp)
        return isinstance(value, list) and all(_conforms(v, inner) for v in value)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return isinstance(value, tp) and all(
            _conforms(getattr(value, f.name), hints[f.name]) for f in dataclasses.fields(tp)
        )
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, float) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    raise AssertionError(f"type {tp} not handled")


def _load(path: Path, overrides: list[str]) -> Recipe | None:
    try:
        recipe = load_recipe(path, overrides)
    except CarsegError as exc:
        assert str(exc).strip()
        return None
    assert _conforms(recipe, Recipe), recipe
    return recipe


@FUZZ
@given(doc=recipe_docs())
def test_fuzz_recipe_loader(work: Path, doc: Any) -> None:
    path = _fresh(work, ".yaml")
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _load(path, [])


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_fuzz_recipe_loader_raw_text(work: Path, text: str | bytes) -> None:
    path = _fresh(work, ".yaml")
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    _load(path, [])


def test_recipe_rejects_non_finite_and_huge_numbers(work: Path) -> None:
    """Found by the fuzzing above: NaN / infinite floats passed the range checks, and an
    integer of over 4300 digits crashed the YAML parser."""
    items = ["calibrator.lr=.nan", "refiner.w_cal=.inf", "discriminator.max_accuracy=-.inf"]
    with pytest.raises(CarsegError) as info:
        load_recipe(TOY, items)
    assert len(str(info.value).splitlines()) == 3 and "expected a finite number" in str(info.value)
    path = _fresh(work, ".yaml")
    path.write_text("seed: " + "9" * 5000 + "\n")
    with pytest.raises(CarsegError, match="malformed YAML"):
        load_recipe(path)
    with pytest.raises(CarsegError, match="seed -> expected int"):
        load_recipe(TOY, ["seed=" + "9" * 5000])


overrides = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda k, v: f"{k}={v}",
        st.one_of(st.sampled_from(DOTTED), st.text(max_size=15)),
        st.one_of(
            st.text(max_size=15),
            st.sampled_from(
                ["1", "-3", "1e-3", ".nan", ".inf", "[1, 2]", "null", "true", "{a: 1}"]
            ),
            st.sampled_from(["!!python/object/apply:os.system ['true']", "[1, 2", "'x"]),
        ),
    ),
)


@FUZZ
@given(items=st.lists(overrides, max_size=4))
def test_fuzz_override_parser(items: list[str]) -> None:
    recipe = _load(TOY, items)
    if recipe is None:
        return
    last = {}
    for item in items:  # an accepted override took its value (the last one of its key wins)
        key, value = parse_override(item)
        last[key] = value
    for key, value in last.items():
        node: Any = recipe
        for part in key.split("."):
            node = getattr(node, part)
        assert node == value, (key, node, value)


# ---------------------------------------------------------------------- mutated HDF5 files

N, A, K, C, S = 4, 2, 3, 3, 8


def _valid_dataset(path: Path) -> Path:
    rng = np.random.default_rng(0)
    label = rng.integers(0, K, (N, A, S, S), dtype=np.uint8)
    label[0, 0, 0, 0] = 255
    w = rng.random((N, A)) + 0.1
    return write_dataset(
        path,
        image=rng.standard_normal((N, C, S, S)).astype(np.float32),
        label=label,
        label_weight=(w / w.sum(1, keepdims=True)).astype(np.float32),
        classes=Classes(K, class_names=["a", "b", "c"], eval_classes=[1, 2]),
    )


attr_values = st.one_of(
    st.integers(-300, 300),
    st.text(max_size=10),
    st.floats(allow_nan=True),
    st.lists(st.integers(-3, 5), max_size=4).map(json.dumps),
    st.lists(st.text(max_size=3), max_size=4).map(json.dumps),
    st.sampled_from(["carseg.dataset/1", "carseg.samples/1", "segmentation", "regression"]),
    st.lists(st.integers(0, 4), min_size=1, max_size=3).map(np.array),
)
dtypes = st.sampled_from(["float32", "float16", "float64", "uint8", "int8", "int64", "bool"])
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple)
specials = st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 0.5, 3.0, 7.0, 254.0, 255.0, 1e30])


@st.composite
def mutations(draw: st.DrawFn, names: list[str], attrs: list[str]) -> list[tuple]:
    """A short list of mutations of an HDF5 file (applied in order)."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                ["attr", "del_attr", "dtype", "shape", "del", "value", "bytes", "truncate"]
            )
        )
        if kind == "attr":
            out.append((kind, draw(st.sampled_from(attrs)), draw(attr_values)))
        elif kind == "del_attr":
            out.append((kind, draw(st.sampled_from(attrs))))
        elif kind in ("dtype", "del"):
            out.append((kind, draw(st.sampled_from(names)), draw(dtypes)))
        elif kind == "shape":
            out.append((kind, draw(st.sampled_from(names)), draw(shapes)))
        elif kind == "value":
            out.append(
                (kind, draw(st.sampled_from(names)), draw(st.integers(0, 10**6)), draw(specials))
            )
        elif kind == "bytes":
            out.append(
                (
                    kind,
                    draw(
                        st.lists(
                            st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8
                        )
                    ),
                )
            )
        else:
            out.append((kind, draw(st.floats(0, 1))))
    # Damage the bytes last: writing into an already corrupt file through the HDF5 library
    # can crash it (a hazard of this test's mutator; the validators only read).
    return sorted(out, key=lambda m: m[0] in ("bytes", "truncate"))


def _apply(path: Path, muts: list[tuple]) -> None:
    for mut in muts:
        kind = mut[0]
        if kind == "bytes":
            data = bytearray(path.read_bytes())
            if not data:
                continue
            for where, byte in mut[1]:
                data[min(len(data) - 1, int(where * len(data)))] = byte
            path.write_bytes(bytes(data))
            continue
        if kind == "truncate":
            data = path.read_bytes()
            path.write_bytes(data[: int(mut[1] * len(data))])
            continue
        try:
            h5 = h5py.File(path, "r+")
        except OSError:
            continue  # already broken by an earlier mutation
        try:
            if kind == "attr":
                h5.attrs[mut[1]] = mut[2]
            elif kind == "del_attr":
                if mut[1] in h5.attrs:
                    del h5.attrs[mut[1]]
            elif mut[1] not in h5:
                continue
            elif kind == "del":
                del h5[mut[1]]
            elif kind == "dtype":
                arr = h5[mut[1]][...]
                del h5[mut[1]]
                with np.errstate(all="ignore"):
                    h5.create_dataset(mut[1], data=arr.astype(mut[2]))
            elif kind == "shape":
                arr = h5[mut[1]][...]
                del h5[mut[1]]
                h5.create_dataset(mut[1], data=np.resize(arr, mut[2]).astype(arr.dtype))
            elif kind == "value":
                arr = h5[mut[1]][...]
                if arr.size:
                    flat = arr.reshape(-1)
                    with np.errstate(all="ignore"):
                        flat[mut[2] % arr.size] = mut[3]
                    del h5[mut[1]]
                    h5.create_dataset(mut[1], data=flat.reshape(arr.shape))
        except (OSError, ValueError, TypeError, KeyError, RuntimeError, OverflowError):
            pass  # h5py refused this mutation of an already-broken file
        finally:
            h5.close()


def _json_list(h5: h5py.File, name: str) -> Any:
    raw = h5.attrs[name]
    raw = raw.decode() if isinstance(raw, bytes) else raw
    return json.loads(raw) if isinstance(raw, str) else [x.item() for x in raw]


def _dataset_is_valid(path: Path) -> bool:
    """The dataset schema (docs/guide.md), checked independently of carcli (segmentation)."""
    with h5py.File(path, "r") as h5:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
        assert attrs.get("schema") == "carseg.dataset/1"
        assert attrs.get("task") == "segmentation"  # (the base file is a segmentation split)
        image, label = h5["image"][...], h5["label"][...]
        assert image.dtype in (np.float32, np.float16) and image.ndim == 4
        assert np.isfinite(image).all()
        assert label.dtype == np.uint8 and label.ndim == 4 and label.shape[1] >= 1
        assert label.shape[0] == image.shape[0] and label.shape[2:] == image.shape[2:]
        k, ignore = int(attrs["num_classes"]), int(attrs.get("ignore_index", 255))
        assert 2 <= k <= 255 and ((label < k) | (label == ignore)).all()
        names = _json_list(h5, "class_names")
        assert isinstance(names, list) and len(names) == k
        if "eval_classes" in attrs:
            ev = _json_list(h5, "eval_classes")
            assert ev and all(isinstance(c, int) and 0 <= c < k for c in ev)
        if "label_weight" in h5:
            w = h5["label_weight"][...]
            assert w.dtype == np.float32 and w.shape == label.shape[:2]
            assert np.isfinite(w).all() and (w >= 0).all()
            assert np.allclose(w.astype(np.float64).sum(1), 1, atol=1e-5, rtol=0)
        assert "blackbox" not in h5
    return True


@pytest.fixture(scope="module")
def valid_dataset(work: Path) -> Path:
    return _valid_dataset(work / "valid.h5")


@FUZZ
@given(
    muts=mutations(
        ["image", "label", "label_weight"],
        ["schema", "task", "num_classes", "ignore_index", "class_names", "eval_classes"],
    )
)
def test_fuzz_dataset_validator(work: Path, valid_dataset: Path, muts: list[tuple]) -> None:
    path = _fresh(work, ".h5")
    shutil.copyfile(valid_dataset, path)
    _apply(path, muts)
    try:
        info = validate_dataset(path)
    except CarsegError as exc:
        assert str(path) in str(exc)
        return
    assert _dataset_is_valid(path), muts
    with DatasetFile(path) as ds:  # what the stages do next
        assert read_info(ds.h5, path) == info
        ds.read_rows("image", np.arange(info.n))
        ds.weights(np.arange(info.n))


def test_fuzz_dataset_base_is_valid(valid_dataset: Path, work: Path) -> None:
    path = _fresh(work, ".h5")
    shutil.copyfile(valid_dataset, path)
    validate_dataset(path)
    assert _dataset_is_valid(path)


M = 3


@pytest.fixture(scope="module")
def bank_setup(work: Path) -> tuple[Any, Path]:
    info = validate_dataset(_valid_dataset(work / "bank-data.h5"))
    path = work / "valid-bank.h5"
    h5 = create_bank(path, info, N, M, {"split": "test", "num_samples": M})
    rng = np.random.default_rng(1)
    h5["samples"][...] = rng.integers(0, K, (N, M, S, S), dtype=np.uint8)
    p = rng.random((N, K, S, S))
    h5["calibration"][...] = (p / p.sum(1, keepdims=True)).astype(np.float16)
    h5["index"][...] = np.arange(N)
    h5.close()
    return info, path


def _bank_is_valid(path: Path, info: Any) -> bool:
    with h5py.File(path, "r") as h5:
        schema = h5.attrs["schema"]
        assert (schema.decode() if isinstance(schema, bytes) else schema) == "carseg.samples/1"
        s, c, idx = h5["samples"][...], h5["calibration"][...], h5["index"][...]
        n = s.shape[0]
        assert s.dtype == np.uint8 and s.ndim == 4 and s.shape[1] >= 1 and s.shape[2:] == (S, S)
        assert (s < K).all()
        assert c.dtype.kind == "f" and c.shape == (n, K, S, S) and np.isfinite(c).all()
        assert idx.shape == (n,) and idx.dtype.kind in "iu"
        assert len(np.unique(idx)) == n and ((idx >= 0) & (idx < info.n)).all()
    return True


@FUZZ
@given(muts=mutations(["samples", "calibration", "index"], ["schema"]))
# found on a fresh clone: a byte of the root group's header; reading the attributes raised
# h5py's KeyError before the bank's checks
@example(muts=[("bytes", [(0.007206236330296269, 1)])])
def test_fuzz_bank_validator(work: Path, bank_setup: tuple[Any, Path], muts: list[tuple]) -> None:
    info, data = bank_setup
    path = _fresh(work, ".h5")
    shutil.copyfile(data, path)
    _apply(path, muts)
    try:
        with Bank(path, info) as bank:
            bank.read("samples", slice(0, bank.n))
            bank.read("calibration", slice(0, bank.n))
    except CarsegError as exc:
        assert str(path) in str(exc)
        return
    assert _bank_is_valid(path, info), muts


def test_fuzz_bank_base_is_valid(bank_setup: tuple[Any, Path], work: Path) -> None:
    info, data = bank_setup
    path = _fresh(work, ".h5")
    shutil.copyfile(data, path)
    with Bank(path, info) as bank:
        assert bank.read("samples", slice(0, N)).shape == (N, M, S, S)
    assert _bank_is_valid(path, info)
