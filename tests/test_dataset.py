"""The `carseg.dataset/1` reader, writer and validator (carcli.data.dataset)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from carcli.data.dataset import (
    SCHEMA,
    Classes,
    DatasetFile,
    read_info,
    split_path,
    write_dataset,
)
from carcli.data.dataset_check import validate_dataset
from carcli.errors import CarsegError


def _replace(h5: h5py.File, name: str, arr: np.ndarray) -> None:
    del h5[name]
    h5.create_dataset(name, data=arr)


def _edit(path: Path, fn: Callable[[h5py.File], None]) -> None:
    with h5py.File(path, "a") as h5:
        fn(h5)


def _errors(path: Path) -> list[str]:
    """The lines of the CarsegError validate_dataset raises; each must name the file."""
    with pytest.raises(CarsegError) as info:
        validate_dataset(path)
    lines = str(info.value).splitlines()
    assert lines
    for line in lines:
        assert line.startswith(f"{path}: "), line
    return lines


def _one_error(path: Path, *needles: str) -> str:
    lines = _errors(path)
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------- valid files


def test_valid_split_and_its_info(tiny_dataset: Path) -> None:
    info = validate_dataset(tiny_dataset)
    assert info.path == tiny_dataset
    assert info.task == "segmentation"
    assert (info.n, info.num_annotations, info.num_classes) == (4, 2, 3)
    assert info.image_shape == (3, 16, 16) and info.label_shape == (16, 16)
    assert info.in_channels == 3 and info.calibrator_in_channels == 3
    assert info.ignore_index == 255
    assert info.class_names == ["class_0", "class_1", "class_2"]
    assert info.eval_classes == [1, 2]
    assert info.has_weights and info.blackbox_channels == 0


def test_write_then_read_back(make_arrays, tmp_path: Path, write_split) -> None:
    arrays = make_arrays()
    path = write_split(tmp_path / "a.h5", **arrays)
    with DatasetFile(path, validate=True) as ds:
        assert len(ds) == 4
        np.testing.assert_array_equal(ds.read_rows("image", slice(None)), arrays["image"])
        np.testing.assert_array_equal(ds.read_rows("label", slice(1, 3)), arrays["label"][1:3])
        np.testing.assert_array_equal(ds.weights(slice(None)), arrays["label_weight"])
    with h5py.File(path) as h5:
        assert h5.attrs["schema"] == SCHEMA
        assert h5["label"].dtype == np.uint8 and h5["label_weight"].dtype == np.float32


def test_defaults_for_optional_attributes(make_arrays, tmp_path: Path) -> None:
    """No eval_classes: all but class 0; ignore_index written as 255."""
    a = make_arrays(num_classes=4)
    path = write_dataset(tmp_path / "a.h5", image=a["image"], label=a["label"], classes=Classes(4))
    info = validate_dataset(path)
    assert info.eval_classes == [1, 2, 3]
    assert info.class_names == ["0", "1", "2", "3"]
    assert not info.has_weights


def test_absent_label_weight_reads_uniform(tmp_path: Path, write_split) -> None:
    path = write_split(tmp_path / "a.h5", annotations=4, weights=False)
    with DatasetFile(path) as ds:
        assert not ds.info.has_weights
        w = ds.weights(np.array([2, 0, 2]))
        assert w.shape == (3, 4) and w.dtype == np.float32
        np.testing.assert_allclose(w, 0.25)
        assert ds.weights(slice(1, 4)).shape == (3, 4)
        assert ds.weights(slice(None)).shape == (4, 4)


def test_read_rows_keeps_requested_order(make_arrays, tmp_path: Path, write_split) -> None:
    arrays = make_arrays(n=6)
    path = write_split(tmp_path / "a.h5", n=6, **arrays)
    rows = np.array([5, 0, 3, 3, 1, 5])
    with DatasetFile(path) as ds:
        for name in ("image", "label", "label_weight"):
            got = ds.read_rows(name, rows)
            np.testing.assert_array_equal(got, arrays[name][rows])
            assert got.dtype == arrays[name].dtype
        np.testing.assert_array_equal(ds.read_rows("label", [4]), arrays["label"][[4]])
        empty = ds.read_rows("image", np.array([], dtype=np.int64))
        assert empty.shape == (0, 3, 16, 16)
        np.testing.assert_array_equal(ds.weights(rows), arrays["label_weight"][rows])


def test_other_size_channels_and_classes(tmp_path: Path, write_split) -> None:
    path = write_split(
        tmp_path / "a.h5",
        n=3,
        annotations=3,
        channels=1,
        height=48,
        width=64,
        num_classes=5,
        eval_classes=[1, 3],
    )
    info = validate_dataset(path)
    assert info.in_channels == 1 and info.num_classes == 5 and info.num_annotations == 3
    assert info.image_shape == (1, 48, 64) and info.label_shape == (48, 64)
    assert info.eval_classes == [1, 3]
    with h5py.File(path) as h5:
        assert read_info(h5, path) == info


def test_float16_images_are_allowed(make_arrays, tmp_path: Path, write_split) -> None:
    image = make_arrays()["image"].astype(np.float16)
    path = write_split(tmp_path / "a.h5", image=image)
    validate_dataset(path)
    with h5py.File(path) as h5:
        assert h5["image"].dtype == np.float16


def test_blackbox_class_ids(tmp_path: Path, write_split) -> None:
    bb = np.random.default_rng(1).integers(0, 3, (4, 16, 16), dtype=np.uint8)
    bb[0, 0, 0] = 255
    info = validate_dataset(write_split(tmp_path / "a.h5", blackbox=bb))
    assert info.blackbox_is_ids and info.blackbox_channels == 3
    assert info.calibrator_in_channels == 3 + 3


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_blackbox_probabilities(tmp_path: Path, write_split, dtype) -> None:
    p = np.random.default_rng(1).random((4, 2, 16, 16)).astype(dtype)
    info = validate_dataset(write_split(tmp_path / "a.h5", blackbox=p))
    assert not info.blackbox_is_ids and info.blackbox_channels == 2
    assert info.calibrator_in_channels == 5


@pytest.mark.parametrize(
    ("blackbox", "needle"),
    [
        (np.full((4, 16, 16), 7, np.uint8), "blackbox rows 0..3 hold class ids >= 3"),
        (np.zeros((4, 16, 16), np.int32), "blackbox class ids must be uint8"),
        (np.zeros((4, 16, 8), np.uint8), "blackbox class ids must be uint8"),
        (np.zeros((3, 2, 16, 16), np.float32), "blackbox probabilities must be float"),
        (np.zeros((4, 2, 16, 16), np.float64), "blackbox probabilities must be float"),
        (np.full((4, 2, 16, 16), np.nan, np.float32), "blackbox holds NaN"),
        (np.zeros((4, 16), np.float32), "blackbox has shape"),
    ],
)
def test_bad_blackbox(tmp_path: Path, write_split, blackbox: np.ndarray, needle: str) -> None:
    _one_error(write_split(tmp_path / "a.h5", blackbox=blackbox), needle)


def test_regression_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.standard_normal((5, 2)).astype(np.float32)
    label = rng.standard_normal((5, 2, 3)).astype(np.float32)
    weight = np.array([[0.9, 0.1]] * 5, np.float32)
    path = write_dataset(tmp_path / "r.h5", image=image, label=label, label_weight=weight)
    info = validate_dataset(path)
    assert info.task == "regression"
    assert (info.n, info.num_annotations) == (5, 2)
    assert info.image_shape == (2,) and info.label_shape == (3,) and info.in_channels == 2
    with DatasetFile(path) as ds:
        np.testing.assert_array_equal(ds.read_rows("label", [4, 1]), label[[4, 1]])


@pytest.mark.parametrize(
    ("image", "label", "needle"),
    [
        (np.zeros((5, 2), np.float32), np.zeros((5, 2, 3), np.uint8), "expected float32"),
        (np.zeros((5, 2), np.float32), np.full((5, 2, 3), np.nan, np.float32), "label holds NaN"),
        (np.zeros((5, 2), np.float32), np.zeros((5, 3), np.float32), "expected 3 dimensions"),
        (np.zeros((5, 2, 1), np.float32), np.zeros((5, 2, 3), np.float32), "expected 2 dimensions"),
        (np.zeros((4, 2), np.float32), np.zeros((5, 2, 3), np.float32), "5 rows but image has 4"),
    ],
)
def test_bad_regression_files(tmp_path: Path, image, label, needle: str) -> None:
    path = write_dataset(tmp_path / "r.h5", image=image, label=label)
    _one_error(path, needle)


# ------------------------------------------------------------------------- rejected files


def test_missing_label_dataset(tiny_dataset: Path) -> None:
    _edit(tiny_dataset, lambda h5: h5.__delitem__("label"))
    _one_error(tiny_dataset, "'label'", "missing")


def test_missing_image_dataset(tiny_dataset: Path) -> None:
    _edit(tiny_dataset, lambda h5: h5.__delitem__("image"))
    _one_error(tiny_dataset, "'image'", "missing")


def test_label_wrong_dtype(tiny_dataset: Path) -> None:
    _edit(tiny_dataset, lambda h5: _replace(h5, "label", h5["label"][()].astype(np.int32)))
    _one_error(tiny_dataset, "label has dtype int32", "uint8")


def test_image_wrong_dtype(tiny_dataset: Path) -> None:
    _edit(tiny_dataset, lambda h5: _replace(h5, "image", h5["image"][()].astype(np.float64)))
    _one_error(tiny_dataset, "image has dtype float64")


def test_label_weight_wrong_dtype(tiny_dataset: Path) -> None:
    _edit(
        tiny_dataset,
        lambda h5: _replace(h5, "label_weight", h5["label_weight"][()].astype(np.float64)),
    )
    _one_error(tiny_dataset, "label_weight has dtype float64")


def test_class_id_out_of_range(make_arrays, tmp_path: Path, write_split) -> None:
    label = make_arrays()["label"]
    label[2, 1, 5, 7] = 3  # num_classes is 3
    _one_error(
        write_split(tmp_path / "a.h5", label=label), "label row 2", "class id 3", "num_classes 3"
    )


def test_non_default_ignore_index(make_arrays, tmp_path: Path, write_split) -> None:
    label = make_arrays()["label"]
    label[label == 255] = 0
    label[1, 0, 0, 0] = 9
    validate_dataset(write_split(tmp_path / "a.h5", label=label, ignore_index=9))
    _one_error(write_split(tmp_path / "b.h5", label=label), "class id 9")


def test_label_weights_must_sum_to_one(make_arrays, tmp_path: Path, write_split) -> None:
    w = make_arrays()["label_weight"]
    w[2] = [0.5, 0.4]
    _one_error(write_split(tmp_path / "a.h5", label_weight=w), "label_weight row 2", "sums to")
    w[2] = [0.5, 0.5 + 5e-6]  # within the tolerance of 1e-5
    validate_dataset(write_split(tmp_path / "b.h5", label_weight=w))


def test_label_weights_must_be_non_negative(make_arrays, tmp_path: Path, write_split) -> None:
    w = make_arrays()["label_weight"]
    w[1] = [1.5, -0.5]  # sums to 1
    _one_error(write_split(tmp_path / "a.h5", label_weight=w), "label_weight", "negative")


def test_label_weight_shape(tiny_dataset: Path) -> None:
    _edit(tiny_dataset, lambda h5: _replace(h5, "label_weight", np.full((4, 3), 1 / 3, np.float32)))
    _one_error(tiny_dataset, "label_weight has shape (4, 3)", "(4, 2)")


def test_shape_mismatch_rows(tiny_dataset: Path) -> None:
    _edit(tiny_dataset, lambda h5: _replace(h5, "label", h5["label"][:3]))
    lines = _errors(tiny_dataset)
    assert any("label has 3 rows but image has 4" in line for line in lines)


def test_shape_mismatch_height_width(tiny_dataset: Path) -> None:
    _edit(tiny_dataset, lambda h5: _replace(h5, "label", h5["label"][:, :, :, :8]))
    _one_error(tiny_dataset, "label maps are (16, 8) but images are (16, 16)")


def test_wrong_rank(tiny_dataset: Path) -> None:
    _edit(tiny_dataset, lambda h5: _replace(h5, "label", h5["label"][:, 0]))
    _one_error(tiny_dataset, "label has shape (4, 16, 16)", "expected 4 dimensions")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_image(make_arrays, tmp_path: Path, write_split, value: float) -> None:
    image = make_arrays()["image"]
    image[2, 1, 3, 3] = value
    _one_error(write_split(tmp_path / "a.h5", image=image), "image row 2", "NaN or infinite")


@pytest.mark.parametrize(
    ("attr", "value", "needle"),
    [
        ("schema", "carseg.dataset/0", "attribute schema is 'carseg.dataset/0'"),
        ("task", "classification", "attribute task is 'classification'"),
        ("class_names", json.dumps(["a", "b"]), "class_names must list 3 names"),
        ("class_names", "not json [", "class_names must be a JSON list"),
        ("eval_classes", "[1,", "eval_classes must be a JSON list"),
        ("eval_classes", json.dumps([1, 3]), "eval_classes must be a non-empty list"),
        ("eval_classes", json.dumps([]), "eval_classes must be a non-empty list"),
    ],
)
def test_bad_attributes(tiny_dataset: Path, attr: str, value: object, needle: str) -> None:
    _edit(tiny_dataset, lambda h5: h5.attrs.__setitem__(attr, value))
    _one_error(tiny_dataset, needle)


@pytest.mark.parametrize("k", [1, 300])
def test_num_classes_out_of_range(tiny_dataset: Path, k: int) -> None:
    _edit(tiny_dataset, lambda h5: h5.attrs.__setitem__("num_classes", k))
    lines = _errors(tiny_dataset)
    assert f"attribute num_classes is {k}, expected 2..255" in lines[0]


@pytest.mark.parametrize("attr", ["schema", "task", "num_classes", "class_names"])
def test_missing_attributes(tiny_dataset: Path, attr: str) -> None:
    _edit(tiny_dataset, lambda h5: h5.attrs.__delitem__(attr))
    _one_error(tiny_dataset, attr)


def test_several_structural_problems_are_all_reported(tiny_dataset: Path) -> None:
    def edit(h5: h5py.File) -> None:
        _replace(h5, "label", h5["label"][()].astype(np.int32))
        _replace(h5, "image", h5["image"][()].astype(np.float64))
        h5.attrs["class_names"] = json.dumps(["only one"])

    _edit(tiny_dataset, edit)
    text = "\n".join(lines := _errors(tiny_dataset))
    assert len(lines) == 3
    for needle in ("image has dtype float64", "label has dtype int32", "class_names"):
        assert needle in text


def test_several_value_problems_are_all_reported(make_arrays, tmp_path: Path, write_split) -> None:
    a = make_arrays(n=6)
    a["image"][4, 0, 0, 0] = np.nan
    a["label"][3, 0, 1, 1] = 200
    a["label_weight"][5] = [0.2, 0.2]
    lines = _errors(write_split(tmp_path / "a.h5", n=6, **a))
    assert len(lines) == 3
    text = "\n".join(lines)
    assert "image row 4" in text and "label row 3" in text and "label_weight row 5" in text


def test_problems_found_in_later_chunks(make_arrays, tmp_path: Path, write_split) -> None:
    a = make_arrays(n=7)
    a["label"][6, 1, 2, 2] = 4
    path = write_split(tmp_path / "a.h5", n=7, **a)
    with pytest.raises(CarsegError, match="label row 6"):
        validate_dataset(path, chunk=2)


def test_missing_file_hints_prepare(tmp_path: Path) -> None:
    path = split_path(tmp_path, "val")
    with pytest.raises(CarsegError) as info:
        validate_dataset(path)
    assert str(path) in str(info.value)
    assert info.value.hint and "carseg prepare" in info.value.hint
    with pytest.raises(CarsegError):
        DatasetFile(path)


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "train.h5"
    path.write_bytes(b"this is not HDF5 at all " * 40)
    with pytest.raises(CarsegError) as info:
        validate_dataset(path)
    assert str(info.value).startswith(f"{path}: not a readable HDF5 file")
    assert "carseg prepare" in str(info.value)


@pytest.mark.parametrize("keep", [0.0, 0.05, 0.5, 0.95])
def test_truncated_file(tiny_dataset: Path, keep: float) -> None:
    data = tiny_dataset.read_bytes()
    tiny_dataset.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CarsegError) as info:
        validate_dataset(tiny_dataset)
    assert str(tiny_dataset) in str(info.value)
    assert "corrupt" in str(info.value) and "carseg prepare" in str(info.value)


@pytest.mark.parametrize("name", ["image", "label"])
def test_corrupt_chunk_data(tiny_dataset: Path, name: str) -> None:
    """The HDF5 header is fine but a compressed chunk is damaged: still one clear error."""
    with h5py.File(tiny_dataset) as h5:
        chunk = h5[name].id.get_chunk_info(1)
    data = bytearray(tiny_dataset.read_bytes())
    data[chunk.byte_offset : chunk.byte_offset + chunk.size] = b"\xab" * chunk.size
    tiny_dataset.write_bytes(bytes(data))
    with pytest.raises(CarsegError) as info:
        validate_dataset(tiny_dataset)
    msg = str(info.value)
    assert msg.startswith(f"{tiny_dataset}: ") and f"'{name}'" in msg
    assert "carseg prepare" in msg


def test_write_is_atomic_and_leaves_no_temp(tmp_path: Path, write_split) -> None:
    path = write_split(tmp_path / "a.h5")
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever h5py raises for an object array
        write_split(path, image=np.array([object()] * 4))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]
