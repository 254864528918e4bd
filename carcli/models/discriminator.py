"""Discriminators D(x, y) -> raw logits [N] (no sigmoid: the losses take logits).

* ``dcgan`` — strided 4x4 convs without batch norm (the paper's description).
* ``pixel`` — the authors' heavier design: three full-resolution 3x3 convs, then 4x4 convs.
* ``mlp``   — 4-layer MLP on (x, y) for the 1D regression task.

The image discriminators see the image x [N, C, H, W] concatenated with a label map
[N, K, H, W] (one-hot for real labels, G's softmax for fakes), end with global average
pooling and a linear layer, and so accept any H, W that is a multiple of 16.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from carcli.models.blocks import (
    PlainMLP,
    channels_last,
    check_channels,
    check_positive,
    constructor_config,
)


def pair_inputs(name: str, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Match the rows of x to those of y.

    y may have B*M rows for B images (e.g. G's [B, M, ...] output flattened, samples of one
    image adjacent); x is then repeated M times along dim 0. Any other mismatch raises.
    """
    n_x, n_y = x.shape[0], y.shape[0]
    if n_x == n_y:
        return x, y
    if n_x == 0 or n_y % n_x:
        raise ValueError(f"{name}: {n_y} label rows cannot be paired with {n_x} inputs")
    return x.repeat_interleave(n_y // n_x, dim=0), y


class _ConvDiscriminator(nn.Module):
    """Shared forward of the image discriminators: concat, features, global average pool."""

    arch = ""
    min_factor = 16

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        check_positive(in_channels=in_channels, num_classes=num_classes)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.features: nn.Module = nn.Identity()
        self.linear: nn.Module = nn.Identity()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Logits [N] for images x [N or B, C, H, W] and label maps y [N, K, H, W]."""
        name = f"{self.arch} discriminator"
        check_channels(name, x, self.in_channels, "image channels")
        check_channels(name, y, self.num_classes, "label channels")
        if x.dim() != 4 or y.dim() != 4 or x.shape[-2:] != y.shape[-2:]:
            raise ValueError(
                f"{name}: x {tuple(x.shape)} and y {tuple(y.shape)} must be [N, *, H, W] "
                "with the same H, W"
            )
        h, w = x.shape[-2:]
        if h % self.min_factor or w % self.min_factor:
            raise ValueError(f"{name}: input size {h}x{w} must be a multiple of {self.min_factor}")
        x, y = pair_inputs(name, x, y)
        z = torch.cat([x, y.to(x.dtype)], dim=1)
        feats = self.features(z)
        return self.linear(feats.mean(dim=(2, 3))).squeeze(1)


class DCGANDiscriminator(_ConvDiscriminator):
    """DC-GAN discriminator without batch norm: ``depth`` 4x4 convs (stride 2, padding 1) with
    ``min(width * 2**i, 512)`` channels and LeakyReLU(0.2), global average pool, linear to 1.
    """

    arch = "dcgan"

    def __init__(self, in_channels: int, num_classes: int, width: int = 64, depth: int = 4) -> None:
        super().__init__(in_channels, num_classes)
        check_positive(width=width, depth=depth)
        self.config = constructor_config(self.arch)
        self.min_factor = 2**depth
        layers: list[nn.Module] = []
        prev = in_channels + num_classes
        for i in range(depth):
            c = min(width * 2**i, 512)
            layers += [nn.Conv2d(prev, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            prev = c
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(prev, 1)
        channels_last(self)


class PixelDiscriminator(_ConvDiscriminator):
    """The authors' "pixel" discriminator, made size-agnostic.

    Three full-resolution conv3x3 layers of ``width`` (64) channels; 4x4 stride-2 convs to
    64, 128, 256 (1/8 resolution); a 4x4 stride-2 conv to 512 (1/16); a 4x4 stride-1 conv to
    64 with asymmetric zero padding (1 before, 2 after) that keeps the 1/16 size; global
    average pool; linear to 1. LeakyReLU(0.2) after every conv, no normalisation.

    Differences from the official code, for speed and any input size: the 512-channel conv has
    stride 2 (official: stride 1 at 1/8 resolution, about 4x the cost of this whole tail), the
    64-channel conv keeps the size (official: shrinks it by 1), zero padding instead of
    reflection padding in the 3x3 layers, and global average pooling instead of a flatten +
    linear tied to the image size. Works for every H, W that is a multiple of 16 (16x16 gives
    a 1x1 map; 32x32 2x2; 128x128 8x8; 256x512 16x32).
    """

    arch = "pixel"

    def __init__(self, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__(in_channels, num_classes)
        check_positive(width=width)
        self.config = constructor_config(self.arch)

        def act() -> nn.Module:
            return nn.LeakyReLU(0.2, inplace=True)

        c0 = in_channels + num_classes
        self.features = nn.Sequential(
            nn.Conv2d(c0, width, 3, padding=1), act(),
            nn.Conv2d(width, width, 3, padding=1), act(),
            nn.Conv2d(width, width, 3, padding=1), act(),
            nn.Conv2d(width, width, 4, stride=2, padding=1), act(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), act(),
            nn.Conv2d(2 * width, 4 * width, 4, stride=2, padding=1), act(),
            nn.Conv2d(4 * width, 8 * width, 4, stride=2, padding=1), act(),
            nn.ZeroPad2d((1, 2, 1, 2)),
            nn.Conv2d(8 * width, width, 4), act(),
        )  # fmt: skip
        self.linear = nn.Linear(width, 1)
        channels_last(self)


class MLPDiscriminator(PlainMLP):
    """MLP discriminator for the 1D regression task: (x [N, D_in], y [N, D_out]) -> logits [N].

    ``in_channels`` is D_in and ``num_classes`` is D_out (registry naming). y may also have
    B*M rows for B inputs (see :func:`pair_inputs`).
    """

    @staticmethod
    def sizes(in_channels: int, num_classes: int) -> tuple[int, int]:
        return in_channels + num_classes, 1

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Logits [N] for inputs x [N or B, D_in] and targets y [N, D_out]."""
        check_channels("mlp discriminator", x, self.in_channels, "input features")
        check_channels("mlp discriminator", y, self.num_classes, "target features")
        x, y = pair_inputs("mlp discriminator", x, y)
        return self.net(torch.cat([x, y.to(x.dtype)], dim=1)).squeeze(1)
