"""Calibration networks F: input -> per-pixel class logits (softmax gives p_theta).

* ``segnet``  — SegNet-style encoder-decoder (LIDC), trained from scratch.
* ``convnet`` — 5 full-resolution conv blocks (the paper's Cityscapes calibrator).
* ``unet``    — U-Net encoder-decoder with skip connections (sharp boundaries at any size).
* ``mlp``     — 4-layer MLP for the 1D regression task (F(x) is the Gaussian mean).
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from carcli.models.blocks import (
    PlainMLP,
    channels_last,
    check_channels,
    check_divisible,
    check_dropout,
    check_positive,
    constructor_config,
    conv_bn_act,
)


def _level(c_in: int, c: int, c_out: int, convs: int, dropout: float) -> nn.Sequential:
    """``convs`` conv3x3 + BN + ReLU layers (c_in -> c -> ... -> c_out), then element-wise
    dropout: one level of the encoder-decoder calibrators."""
    layers: list[nn.Module] = [
        conv_bn_act(c_in if j == 0 else c, c_out if j == convs - 1 else c, act="relu")
        for j in range(convs)
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class _EncoderDecoderCalibrator(nn.Module):
    """Checks and config shared by the encoder-decoder calibrators (segnet, unet)."""

    arch = ""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int,
        depth: int,
        convs_per_level: int,
        dropout: float,
    ) -> None:
        super().__init__()
        check_positive(
            in_channels=in_channels,
            num_classes=num_classes,
            width=width,
            depth=depth,
            convs_per_level=convs_per_level,
        )
        check_dropout(dropout)
        self.config = constructor_config(self.arch)
        self.in_channels = in_channels
        self.depth = depth

    def _check_input(self, x: Tensor) -> None:
        name = f"{self.arch} calibrator"
        check_channels(name, x, self.in_channels, "input channels")
        check_divisible(name, x, 2**self.depth, f"depth {self.depth}")


class SegNetCalibrator(_EncoderDecoderCalibrator):
    """SegNet-style encoder-decoder: max-pool with indices going down, max-unpool going up.

    Level ``i`` (0-based) has ``min(width * 2**i, 512)`` channels and ``convs_per_level``
    conv3x3 + BN + ReLU layers; each level (encoder and decoder) ends with element-wise
    dropout. The decoder mirrors the encoder: unpool with the stored indices, then convs whose
    last one maps to the channel count of the level above; a 1x1 conv gives the K logits.
    H and W must be divisible by ``2**depth``.

    Output: logits [B, num_classes, H, W].
    """

    arch = "segnet"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 64,
        depth: int = 4,
        convs_per_level: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(in_channels, num_classes, width, depth, convs_per_level, dropout)
        chans = [min(width * 2**i, 512) for i in range(depth)]
        ins = [in_channels, *chans[:-1]]
        self.down = nn.ModuleList(
            _level(c_in, c, c, convs_per_level, dropout) for c_in, c in zip(ins, chans, strict=True)
        )
        self.up = nn.ModuleList(
            _level(chans[i], chans[i], chans[max(i - 1, 0)], convs_per_level, dropout)
            for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        channels_last(self)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, K, H, W] for an input [B, C, H, W]."""
        self._check_input(x)
        indices: list[Tensor] = []
        for block in self.down:
            x = block(x)
            x, idx = nnf.max_pool2d(x, 2, 2, return_indices=True)
            indices.append(idx)
        for block, idx in zip(self.up, reversed(indices), strict=True):
            x = nnf.max_unpool2d(x, idx, 2, 2)
            x = block(x)
        return self.head(x).contiguous()


class ConvNetCalibrator(nn.Module):
    """``num_blocks`` full-resolution blocks of conv3x3 + BN + LeakyReLU(0.2) + dropout, then a
    1x1 conv to K logits (the paper's Cityscapes calibrator; the input is typically the image
    concatenated with a black-box model's one-hot prediction).

    Output: logits [B, num_classes, H, W]; any H, W.
    """

    arch = "convnet"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 64,
        num_blocks: int = 5,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        check_positive(
            in_channels=in_channels, num_classes=num_classes, width=width, num_blocks=num_blocks
        )
        check_dropout(dropout)
        self.config = constructor_config(self.arch)
        self.in_channels = in_channels
        self.body = nn.Sequential(
            *[
                conv_bn_act(in_channels if i == 0 else width, width, dropout=dropout)
                for i in range(num_blocks)
            ]
        )
        self.head = nn.Conv2d(width, num_classes, 1)
        channels_last(self)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, K, H, W] for an input [B, C, H, W]."""
        check_channels("convnet calibrator", x, self.in_channels, "input channels")
        return self.head(self.body(x)).contiguous()


class UNetCalibrator(_EncoderDecoderCalibrator):
    """U-Net encoder-decoder with concatenated skip connections.

    Encoder: a full-resolution level then ``depth`` levels (max-pool 2, then the level's
    blocks), ``min(width * 2**i, 512)`` channels; every level has ``convs_per_level`` conv3x3
    + BN + ReLU layers and ends with element-wise dropout. Decoder: per level, nearest x2
    upsampling, a 1x1 conv to the skip's channel count, concatenation with the encoder's
    features at that resolution, then ``convs_per_level`` conv layers (+ dropout). A 1x1 conv
    gives the K logits. Unlike SegNet's max-unpooling, the full-resolution skip keeps each
    pixel's own appearance, so thin ambiguous bands (e.g. a faint rim) keep sharp edges.
    H and W must be divisible by ``2**depth``.

    Output: logits [B, num_classes, H, W].
    """

    arch = "unet"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 32,
        depth: int = 3,
        convs_per_level: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(in_channels, num_classes, width, depth, convs_per_level, dropout)
        chans = [min(width * 2**i, 512) for i in range(depth + 1)]
        ins = [in_channels, *chans[:-1]]
        self.down = nn.ModuleList(
            _level(c_in, c, c, convs_per_level, dropout) for c_in, c in zip(ins, chans, strict=True)
        )
        self.reduce = nn.ModuleList(
            nn.Conv2d(chans[i + 1], chans[i], 1, bias=False) for i in reversed(range(depth))
        )
        self.up = nn.ModuleList(
            _level(2 * chans[i], chans[i], chans[i], convs_per_level, dropout)
            for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        channels_last(self)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, K, H, W] for an input [B, C, H, W]."""
        self._check_input(x)
        skips: list[Tensor] = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nnf.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for reduce, block in zip(self.reduce, self.up, strict=True):
            x = nnf.interpolate(reduce(x), scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skips.pop()], dim=1))
        return self.head(x).contiguous()


class MLPCalibrator(PlainMLP):
    """MLP for the 1D regression task: x [B, D_in] -> F(x) [B, D_out] (the Gaussian mean).

    ``in_channels`` is D_in and ``num_classes`` is D_out (registry naming).
    """

    def forward(self, x: Tensor) -> Tensor:
        """F(x) [B, D_out] for x [B, D_in]."""
        check_channels("mlp calibrator", x, self.in_channels, "input features")
        return self.net(x)
