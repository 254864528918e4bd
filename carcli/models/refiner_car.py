"""``car`` refiner: the authors' light per-level G layout (docs/method.md, "Architectures").

Same call and sampling contract as :class:`carcli.models.refiner.UNetRefiner` (``forward``,
``encode``, ``decode``, ``noise_dim``, ``residual_logits``, ``noise``, ``noise_grid``,
``config``), but each level has ONE convolution and nothing but the last up-sampling and the
1x1 head runs at full resolution:

* encoder: ``depth`` levels of strided conv3x3 (stride 2) + BN + LeakyReLU(0.2) + channel
  dropout, channels ``width * 2**i`` (32, 64, 128, 256 by default); run once per image;
* decoder: ``depth`` levels of a 2x2 transposed conv (stride 2) over [h, skip] + BN +
  AdaIN-like noise modulation h * (1 + gamma(eps)) + beta(eps) + LeakyReLU(0.2) + channel
  dropout; run on the B*M sample rows (image-major, row b*M + m is sample m of image b).

As in the U-Net, the transposed conv over the concatenation is split into its two halves
(it is linear): the skip half runs once per image and is broadcast over the samples, and the
first level (the bottleneck, no skip) runs per image before fanning out to the samples. So an
extra sample costs only the three finer up levels and the head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from carcli.models.refiner import ConvRefiner, modulated


def _down(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    """Strided conv3x3 (halves H and W, no bias: BN follows) + BN + LeakyReLU(0.2) + Dropout2d."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.2, inplace=True),
    ]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


def _same_format(ref: Tensor, x: Tensor) -> Tensor:
    fmt = (
        torch.channels_last
        if ref.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )
    return x.contiguous(memory_format=fmt)


class _Up(nn.Module):
    """Up level: 2x2 transposed conv (stride 2) over [h, skip], BN, noise modulation,
    LeakyReLU(0.2), channel dropout (folded into the modulation, as in the U-Net's up block).

    ``skip`` channels 0 means no skip input (the first level, fed by the bottleneck).
    """

    def __init__(self, c_in: int, c_skip: int, c_out: int, noise_dim: int, dropout: float):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2, bias=False)
        self.up_skip = (
            nn.ConvTranspose2d(c_skip, c_out, 2, stride=2, bias=False) if c_skip else None
        )
        self.norm: nn.Module = nn.BatchNorm2d(c_out, affine=False)
        self.gamma = nn.Linear(noise_dim, c_out)
        self.beta = nn.Linear(noise_dim, c_out)
        self.dropout = dropout

    def forward(self, h: Tensor, skip: Tensor | None, noise: Tensor, expand: bool) -> Tensor:
        """``h`` [B*M, ...] ([B, ...] if ``expand``), ``skip`` [B, ...] or None, ``noise``
        [B*M, d]; ``batch`` B is the skip's (or, without a skip, h's when ``expand``)."""
        u = self.up(h)
        rows = noise.shape[0]
        s = self.up_skip(skip) if self.up_skip is not None else None
        if expand:  # u is still per image: add the skip, then fan out to the samples
            if s is not None:
                u = u + s
            u = _same_format(u, u.repeat_interleave(rows // u.shape[0], dim=0))
        elif s is not None:
            batch = s.shape[0]
            u = (u.view(batch, rows // batch, *u.shape[1:]) + s.unsqueeze(1)).view(u.shape)
        return modulated(self, u, noise, rows)

    @torch.no_grad()
    def fold_norm(self) -> bool:
        """Fold the eval-mode BN (running statistics) into the transposed convs, in place;
        the per-image skip half (or, without one, the main half) takes the shift. Returns
        False (and changes nothing) where BN has no running statistics."""
        bn = self.norm
        if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
            return False
        scale = (bn.running_var + bn.eps).rsqrt()
        shift = -bn.running_mean * scale
        self.up.weight.mul_(scale.view(1, -1, 1, 1))
        target = self.up
        if self.up_skip is not None:
            self.up_skip.weight.mul_(scale.view(1, -1, 1, 1))
            target = self.up_skip
        target.bias = nn.Parameter(shift.to(target.weight.dtype), requires_grad=False)
        self.norm = nn.Identity()
        return True


class CARRefiner(ConvRefiner):
    """The authors' per-level refiner G(x, p, eps) (see the module docstring).

    Input: image x [B, C, H, W] concatenated with F's probabilities ``calib`` (the paper's p) [B, K,
    H, W]; output: logits [B, M, K, H, W]. ``residual_logits`` adds log(clamp(p, 1e-8)) to the
    logits (the toolkit's option, see docs/method.md, "Deviations"). ``noise="posterior"`` (appendix
    B.2.3): a linear head on the averaged bottleneck gives q(z | x, p), and the modulation is driven
    by z = mu + sigma * eps. ``noise_grid`` g > 0: eps also holds GRID_CHANNELS x g x g numbers, a
    coarse noise map added (1x1 conv) to every sample's bottleneck, as in ``unet``. H and W must be
    divisible by ``2**depth``."""

    arch = "car"

    def _layers(
        self, in_channels: int, num_classes: int, noise_dim: int, width: int, depth: int,
        dropout: float,
    ) -> tuple[int, int]:  # fmt: skip
        chans = [width * 2**i for i in range(depth)]
        ins = [in_channels + num_classes, *chans[:-1]]
        self.encoder = nn.ModuleList(
            _down(c_in, c, dropout) for c_in, c in zip(ins, chans, strict=True)
        )
        # level j of the decoder takes h (and, for j >= 1, the encoder feature of the same
        # resolution) to the next finer resolution; the last level ends at full resolution
        outs = [chans[i] for i in range(depth - 2, -1, -1)] + [chans[0]]
        self.decoder = nn.ModuleList()
        c_h = chans[-1]
        for j, c_out in enumerate(outs):
            c_skip = chans[depth - 1 - j] if j else 0
            self.decoder.append(_Up(c_h, c_skip, c_out, noise_dim, dropout))
            c_h = c_out
        return chans[0], chans[-1]

    def encode(self, x: Tensor, calib: Tensor) -> list[Tensor]:
        """Encoder features of (x, calib) at 1/2 .. 1/2**depth resolution, finest first (run
        once per input image); the last one is the bottleneck."""
        self._check_inputs(x, calib)
        z = torch.cat([x, calib.to(x.dtype)], dim=1)
        feats = []
        for block in self.encoder:
            z = block(z)
            feats.append(z)
        return feats

    def decode(self, feats: list[Tensor], calib: Tensor, noise: Tensor) -> Tensor:
        """Logits [B, M, K, H, W] from encoder features and noise eps [B, M, d]."""
        h, eps, expand, samples, regions = self._decoder_input(feats, noise, calib)
        for j, block in enumerate(self.decoder):
            skip = feats[self.depth - 1 - j] if j else None
            h = block(h, skip, eps, expand=expand and j == 0)
            h = self._add_region(h, j, regions)
        return self._logits(h, calib, samples)

    def _decoder_channels(self) -> list[int]:
        return [block.up.out_channels for block in self.decoder]


__all__ = ["CARRefiner"]
