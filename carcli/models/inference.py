"""Inference-only rewrites of a trained network (sampling and prediction, never training).

* :func:`fold_batchnorm` returns a copy of an eval-mode network whose BatchNorm layers are
  folded into the convolutions before them (conv + BN -> one conv with a bias; in the
  refiners' up blocks BN is folded into the up-sampling convs). Mathematically the same
  network; floating-point results differ in the last bits, so it is an opt-in
  (``speed.fold_bn``), and the samples' argmax agreement is what the tests check.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from carcli.models.refiner import _UpBlock


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A folded copy of ``net`` (which is left unchanged), in eval mode; see the module
    docstring. BN layers without running statistics are left as they are."""
    was_nhwc = any(
        m.weight.is_contiguous(memory_format=torch.channels_last) and m.weight.dim() == 4
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.weight.shape[-1] > 1
    )
    out = copy.deepcopy(net).eval()
    with torch.no_grad():
        for module in out.modules():
            if hasattr(module, "fold_norm"):
                module.fold_norm()
            elif isinstance(module, _UpBlock):
                _fold_unet_up(module)
            elif isinstance(module, nn.Sequential):
                _fold_sequential(module)
    if was_nhwc:
        out.to(memory_format=torch.channels_last)
    return out


def _has_stats(bn: nn.Module) -> bool:
    return isinstance(bn, nn.BatchNorm2d) and bn.running_var is not None


def _fold_sequential(seq: nn.Sequential) -> None:
    """conv, BN pairs inside one Sequential: the conv takes BN's affine map, BN -> Identity."""
    names = list(seq._modules)
    for a, b in zip(names, names[1:], strict=False):
        conv, bn = seq._modules[a], seq._modules[b]
        if isinstance(conv, nn.Conv2d) and _has_stats(bn):
            seq._modules[a] = fuse_conv_bn_eval(conv, bn)
            seq._modules[b] = nn.Identity()


def _fold_unet_up(block: _UpBlock) -> None:
    """The U-Net up block: BN (no affine) after conv_up(...) + conv_skip(skip) goes into both
    convs; the per-image skip conv takes the shift."""
    bn = block.norm
    if not _has_stats(bn):
        return
    scale = (bn.running_var + bn.eps).rsqrt()
    shift = -bn.running_mean * scale
    block.conv_up.weight.mul_(scale.view(-1, 1, 1, 1))
    block.conv_skip.weight.mul_(scale.view(-1, 1, 1, 1))
    block.conv_skip.bias = nn.Parameter(shift.to(block.conv_skip.weight.dtype), requires_grad=False)
    block.norm = nn.Identity()


__all__ = ["fold_batchnorm"]
