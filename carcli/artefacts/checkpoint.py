"""Checkpoints in safetensors only: weights with string metadata, and resumable training state.

- ``model.safetensors``: one network's weights; metadata holds the schema, stage,
  architecture, its constructor config (JSON), what the dataset looked like, and the step.
- ``last.safetensors``: everything needed to resume (every network, every optimiser's
  tensors, torch RNG states) in one file, with the JSON side (step, optimiser hyper-parameters,
  numpy RNG state, best score) in the metadata; one file so a kill can never leave the
  weights and the optimiser from different steps.
Nothing is unpickled: loading parses a JSON header and raw tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

from carcli._version import __version__
from carcli.artefacts.run import atomic_path
from carcli.errors import CarsegError

SCHEMA = "carseg.checkpoint/1"
STATE_SCHEMA = "carseg.training-state/1"
RAW_KEYS = ("schema", "carseg_version", "format")


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def canonical_bytes(data: bytes) -> bytes:
    """A safetensors file with its JSON header in a fixed order (metadata first, keys sorted).

    safetensors writes the header from a hash map, so the order of the metadata keys (and
    hence the file's sha256) changes from process to process; the tensor bytes do not. With
    the order fixed, the same tensors and metadata always give the same file.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    ordered: dict[str, Any] = {}
    if "__metadata__" in header:
        ordered["__metadata__"] = dict(sorted(header.pop("__metadata__").items()))
    ordered.update(sorted(header.items()))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data section stays 8-byte aligned
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def save_file(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
    """safetensors' save_file, with the header in a fixed order (see canonical_bytes)."""
    data = canonical_bytes(save_bytes(tensors, metadata=metadata))
    with open(path, "wb") as fh:
        fh.write(data)


def save_weights(path: str | Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """Atomically write a model's state_dict; metadata values are JSON-encoded (strings too,
    so they come back with their type), except the plain-text `schema` and `carseg_version`."""
    md = {"schema": SCHEMA, "carseg_version": __version__}
    md.update({k: json.dumps(v) for k, v in meta.items() if k not in RAW_KEYS})
    with atomic_path(path) as tmp:
        save_file(_contiguous(model.state_dict()), str(tmp), metadata=md)


def read_safetensors(
    path: Path, what: str, make_cmd: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, with clear errors for missing/corrupt files."""
    if not path.is_file():
        raise CarsegError(f"no {what} at {path}", hint=f"run `{make_cmd}` to make it")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CarsegError(
            f"{path}: not a readable safetensors file ({exc})",
            hint=f"it is truncated or corrupt; make it again with `{make_cmd}`",
        ) from None
    return tensors, meta


def decode_meta(meta: dict[str, str]) -> dict[str, Any]:
    """Metadata values as written by save_weights (plain-text keys stay strings)."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if k in RAW_KEYS:
            out[k] = v
            continue
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def load_weights(
    path: str | Path, *, stage: str, make_cmd: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and decoded metadata of a `stage` checkpoint; refuses other schemas/stages."""
    path = Path(path)
    tensors, raw = read_safetensors(path, f"{stage} checkpoint", make_cmd)
    meta = decode_meta(raw)
    if meta.get("schema") != SCHEMA:
        raise CarsegError(
            f"{path}: schema is {meta.get('schema')!r}, expected {SCHEMA!r}",
            hint=f"make it again with `{make_cmd}`",
        )
    if meta.get("stage") != stage:
        raise CarsegError(
            f"{path}: is a {meta.get('stage')!r} checkpoint, expected {stage!r}",
            hint=f"make it with `{make_cmd}`",
        )
    return tensors, meta


# ---------------------------------------------------------------- resumable training state


def _flatten_optimizer(
    name: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    sd = opt.state_dict()
    for pid, st in sd["state"].items():
        for key, value in st.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{name}.{pid}.{key}"] = t
    return {"param_groups": sd["param_groups"]}


def _restore_optimizer(
    name: str, opt: torch.optim.Optimizer, side: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, field = key[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[field] = value
    opt.load_state_dict({"state": state, "param_groups": side["param_groups"]})


def save_training_state(
    path: str | Path,
    *,
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
    info: dict[str, Any],
) -> None:
    """Write one resumable file: networks, optimisers, RNG states, and JSON `info`."""
    tensors: dict[str, torch.Tensor] = {}
    for name, model in models.items():
        for k, v in model.state_dict().items():
            tensors[f"model.{name}.{k}"] = v
    side: dict[str, Any] = {"optimizers": {}}
    for name, opt in optimizers.items():
        side["optimizers"][name] = _flatten_optimizer(name, opt, tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    for name, gen in generators.items():
        tensors[f"rng.gen.{name}"] = gen.get_state()
    if torch.cuda.is_available():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = st
    md = {
        "schema": STATE_SCHEMA,
        "carseg_version": __version__,
        "side": json.dumps(side),
        "info": json.dumps(info),
    }
    with atomic_path(path) as tmp:
        save_file(_contiguous(tensors), str(tmp), metadata=md)


def load_training_state(
    path: str | Path,
    *,
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
    make_cmd: str,
) -> dict[str, Any]:
    """Restore what save_training_state wrote; returns its `info`."""
    path = Path(path)
    tensors, raw = read_safetensors(path, "training state", make_cmd)
    if raw.get("schema") != STATE_SCHEMA:
        raise CarsegError(f"{path}: schema is {raw.get('schema')!r}, expected {STATE_SCHEMA!r}")
    side, info = json.loads(raw["side"]), json.loads(raw["info"])
    try:
        for name, model in models.items():
            prefix = f"model.{name}."
            sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            model.load_state_dict(sd, strict=True)
        for name, opt in optimizers.items():
            _restore_optimizer(name, opt, side["optimizers"][name], tensors)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CarsegError(
            f"{path}: does not fit the networks of this recipe ({str(exc).splitlines()[0]})",
            hint="resume with the recipe that started the run, or pass --overwrite",
        ) from None
    torch.set_rng_state(tensors["rng.torch"])
    for name, gen in generators.items():
        gen.set_state(tensors[f"rng.gen.{name}"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    return info
