"""The recipe's `speed` section and `distributed.sync_batchnorm`, applied to one network.

`accelerate(net, ...)` returns the module to CALL for forward passes; the network passed in
stays the one whose weights are saved (same parameters, no wrapper prefixes):
* channels-last: the 4-D weights (and 4-D inputs) in NHWC order, which tensor cores prefer;
* SyncBatchNorm: batch-norm statistics over all ranks (CUDA and several ranks only);
* torch.compile: the forward compiled by inductor (not D: R1 differentiates through it twice,
  and the shared D forward is back-propagated twice with retain_graph, which compiled
  graphs with donated buffers refuse);
* bf16 autocast (speed.amp: CUDA only; speed.train_bf16: training on CUDA or on a CPU with
  native bf16): the forward runs under `torch.autocast(bfloat16)` and floating
  outputs come back as float32, so the losses, the backward calls and the optimiser steps
  stay outside autocast, as the autocast documentation recommends.
On CPU, bf16 and SyncBatchNorm are ignored with a note (`notes`); channels-last and compile
work on CPU too, so they apply wherever they are switched on. For sampling and prediction
(`accelerate(..., inference=True)`) two opt-in options more: `speed.fold_bn` (a BN-folded
copy of the network is called) and `speed.cpu_bf16` (bf16 autocast on a CPU with native
bf16, oneDNN's AMX or AVX512-BF16).
"""

from __future__ import annotations

from typing import Any

import torch

from carcli.recipe.schema import Recipe


def settings(
    recipe: Recipe, device: torch.device, world: int, inference: bool = False
) -> dict[str, Any]:
    """What actually applies on this device (recorded in the manifest); ``inference``: for
    sampling or prediction (where ``fold_bn`` and ``cpu_bf16`` apply), else training (where
    ``train_bf16`` and ``optimizer`` apply)."""
    s, cuda = recipe.speed, device.type == "cuda"
    amp = s.amp if cuda else "off"
    if inference and s.cpu_bf16 and device.type == "cpu" and cpu_has_native_bf16():
        amp = "bf16"
    if not inference and s.train_bf16 and has_native_bf16(device):
        amp = "bf16"
    out = {
        "amp": amp,
        "channels_last": s.channels_last,
        "compile": s.compile,
        "sync_batchnorm": recipe.distributed.sync_batchnorm and cuda and world > 1,
    }
    if inference:
        out["fold_bn"] = s.fold_bn
        out["sample_chunk"] = s.sample_chunk
    else:
        out["optimizer"] = s.optimizer
    return out


def has_native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs natively on ``device``: a CUDA device that supports it, or a CPU
    whose oneDNN has AMX or AVX512-BF16."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and cpu_has_native_bf16()


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AMX or AVX512-BF16), not emulated."""
    mkldnn = torch.backends.mkldnn
    if not mkldnn.is_available():
        return False
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def notes(recipe: Recipe, device: torch.device) -> list[str]:
    """One line for each requested option that does not apply on this device."""
    out = []
    if recipe.speed.train_bf16 and not has_native_bf16(device):
        out.append(f"speed.train_bf16: {device} has no native bf16; training in float32")
    if device.type != "cuda":
        if recipe.speed.amp != "off":
            out.append(f"speed.amp={recipe.speed.amp} is for CUDA; ignored on {device}")
        if recipe.speed.cpu_bf16 and not cpu_has_native_bf16():
            out.append("speed.cpu_bf16: this CPU has no native bf16 (AMX/AVX512-BF16); ignored")
    elif recipe.speed.cpu_bf16:
        out.append(f"speed.cpu_bf16 is for CPU sampling; ignored on {device}")
        if recipe.distributed.sync_batchnorm:
            out.append(f"distributed.sync_batchnorm is for CUDA; ignored on {device}")
    return out


def _floats(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, tuple):
        return tuple(_floats(o) for o in out)
    if isinstance(out, list):
        return [_floats(o) for o in out]
    if isinstance(out, dict):
        return {k: _floats(v) for k, v in out.items()}
    return out


def _nhwc(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point():
        return x.contiguous(memory_format=torch.channels_last)
    return x


class Accelerated(torch.nn.Module):
    """Calls `net` with channels-last inputs and/or under bf16 autocast; outputs float32.
    Other attributes (e.g. `noise_dim`) are looked up on the wrapped network."""

    def __init__(self, net: torch.nn.Module, amp: str, channels_last: bool, device_type: str):
        super().__init__()
        self.net, self.amp, self.nhwc, self.device_type = net, amp, channels_last, device_type

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(self.net, *args, **kwargs)

    def run(self, fn: Any, *args: Any, floats: bool = True, **kwargs: Any) -> Any:
        """Call ``fn`` (the network, or one of its methods such as a refiner's ``encode``)
        the way ``forward`` calls the network; ``floats=False`` keeps bf16 outputs as they
        are (features handed to a later call)."""
        if self.nhwc:
            args = tuple(_nhwc(a) for a in args)
        if self.amp == "bf16":
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                out = fn(*args, **kwargs)
                return _floats(out) if floats else out
        return fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.net, name)


def accelerate(
    net: torch.nn.Module,
    recipe: Recipe,
    device: torch.device,
    world: int = 1,
    compile_ok: bool = True,
    ddp: bool = False,
    inference: bool = False,
    train_bf16: bool = True,
) -> torch.nn.Module:
    """Apply the speed options to `net` (in place where they change its layout) and return
    the module to call. With every option off (and one process), `net` itself. With `ddp`
    and several ranks the call goes through DistributedDataParallel (compiled after the DDP
    wrapping, the order torch.compile's DDP support expects). ``inference`` (sampling and
    prediction, `net` in eval mode): ``speed.fold_bn`` calls a BN-folded copy of `net` (the
    weights saved and hashed stay `net`'s), ``speed.cpu_bf16`` adds bf16 autocast on CPU.
    ``train_bf16=False``: this network's forward stays out of speed.train_bf16 (the frozen F
    whose probabilities are L_cal's target)."""
    opts = settings(recipe, device, world, inference)
    if not train_bf16 and not inference and recipe.speed.amp == "off":
        opts["amp"] = "off"
    if opts.get("fold_bn"):
        from carcli.models.inference import fold_batchnorm

        net = fold_batchnorm(net)
    if opts["sync_batchnorm"]:
        net = _sync_batchnorm_in_place(net)
    if opts["channels_last"]:
        net.to(memory_format=torch.channels_last)
    call: torch.nn.Module = net
    if ddp and world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        call = DistributedDataParallel(net, device_ids=ids)
    if opts["compile"] and compile_ok:
        call = torch.compile(net)  # type: ignore[assignment]
    if opts["amp"] != "off" or opts["channels_last"]:
        call = Accelerated(call, opts["amp"], opts["channels_last"], device.type)
    return call


def _sync_batchnorm_in_place(net: torch.nn.Module) -> torch.nn.Module:
    """Swap every BatchNorm of `net`'s children for SyncBatchNorm, keeping `net` the same
    object (so the caller's reference, optimiser and checkpoints still see it)."""
    for name, child in net.named_children():
        setattr(net, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return net
