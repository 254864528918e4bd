"""Networks saved to and loaded back from safetensors checkpoints.

Checkpoint metadata records what is needed to rebuild each network (registry role,
architecture and its config) and to refuse a dataset it does not fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from carcli import distributed
from carcli.artefacts.checkpoint import decode_meta, load_weights, save_weights
from carcli.artefacts.run import COUPLING, DISCRIMINATOR  # noqa: F401 (the refiner's files)
from carcli.data.preprocess import checkpoint_extras
from carcli.data.schema import DatasetInfo
from carcli.errors import CarsegError
from carcli.models.registry import build_model


def dataset_meta(info: DatasetInfo) -> dict[str, Any]:
    return {
        "task": info.task,
        "in_channels": info.in_channels,
        "calibrator_in_channels": info.calibrator_in_channels,
        "num_classes": info.num_classes,
        "label_shape": list(info.label_shape),
    }


def save_network(
    path: Path,
    model: torch.nn.Module,
    stage: str,
    role: str,
    arch: str,
    info: DatasetInfo,
    step: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a network's weights; under torchrun only rank 0 writes (others return)."""
    if not distributed.current().main:
        return
    save_weights(
        path,
        model,
        {
            "stage": stage,
            "role": role,
            "arch": arch,
            "config": getattr(model, "config", {}),
            "dataset": dataset_meta(info),
            **checkpoint_extras(info),  # preprocessing and classes, for export / predict
            "step": step,
            **(extra or {}),
        },
    )


JOINT_CALIBRATOR = "calibrator.safetensors"
"""refiner/calibrator.safetensors: F as trained jointly with G (refiner.joint_calibrator)."""


def refiner_calibrator(g_path: Path, default: Path) -> Path:
    """The F that the refiner at `g_path` was trained with: the file named by its metadata
    key `calibrator` (beside it; written by joint training), else `default`."""
    try:
        from safetensors import safe_open

        with safe_open(str(g_path), framework="pt") as fh:
            meta = decode_meta(dict(fh.metadata() or {}))
    except Exception:  # unreadable or missing: loading G itself reports it clearly
        return default
    name = meta.get("calibrator")
    if not isinstance(name, str) or not name or Path(name).name != name:
        return default  # only a file beside the refiner
    return g_path.parent / name


def load_network(
    path: Path, stage: str, role: str, info: DatasetInfo, make_cmd: str
) -> torch.nn.Module:
    """Rebuild a network from its checkpoint and check it fits the dataset `info`."""
    tensors, meta = load_weights(path, stage=stage, make_cmd=make_cmd)
    if meta.get("role") != role:
        raise CarsegError(
            f"{path}: holds a {meta.get('role')!r}, expected {role!r}",
            hint=f"make it with `{make_cmd}`",
        )
    want, have = dataset_meta(info), meta.get("dataset", {})
    for key in (
        "task",
        "num_classes",
        "calibrator_in_channels" if role == "calibrator" else "in_channels",
    ):
        if have.get(key) != want[key]:
            raise CarsegError(
                f"{path}: was trained on data with {key} = {have.get(key)}, but {info.path} has "
                f"{want[key]}",
                hint=f"retrain with `{make_cmd}` on this dataset",
            )
    try:
        model = build_model(role, dict(meta.get("config") or {}))
        model.load_state_dict(tensors, strict=True)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise CarsegError(
            f"{path}: cannot rebuild the {role} ({str(exc).splitlines()[0]})",
            hint=f"make it again with `{make_cmd}`",
        ) from None
    return model


def load_coupling(
    path: Path, info: DatasetInfo, make_cmd: str
) -> tuple[torch.nn.Module, float, int]:
    """The region coupling head at ``path`` in eval mode, with the region threshold and link
    it was trained with (sampling finds F's regions the same way)."""
    from safetensors import safe_open

    head = load_network(path, "refiner", "coupling", info, make_cmd)  # checks the whole file
    with safe_open(str(path), framework="pt") as fh:  # the header only, not the tensors again
        meta = decode_meta(dict(fh.metadata() or {}))
    return head.eval(), float(meta.get("region_threshold", 0.9)), int(meta.get("region_link", 1))
