"""The 1D regression task's refiner G: an MLP of (x, F(x), eps) -> y, one pass per sample."""

from __future__ import annotations

import torch
from torch import Tensor

from carcli.models.blocks import MLPNet, check_channels, constructor_config
from carcli.models.refiner import draw_noise


class MLPRefiner(MLPNet):
    """MLP refiner for the 1D regression task: (x [B, D_in], F(x) [B, D_out], eps) -> y.

    ``in_channels`` is D_in and ``num_classes`` is D_out (registry naming); ``noise_dim`` is 1
    in the paper. Each of the M samples is one pass of the MLP on [x, F(x), eps_m].
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        noise_dim: int = 1,
        hidden: int = 64,
        num_layers: int = 4,
        slope: float = 0.01,
    ) -> None:
        config = constructor_config(self.arch)
        super().__init__(config, in_channels + num_classes + noise_dim, num_classes)
        self.noise_dim = noise_dim

    def forward(
        self,
        x: Tensor,
        calib: Tensor,
        num_samples: int = 1,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Samples [B, M, D_out] for x [B, D_in] and F's mean ``calib`` [B, D_out]."""
        check_channels("mlp refiner", x, self.in_channels, "input features")
        check_channels("mlp refiner", calib, self.num_classes, "output features")
        eps = draw_noise(x, num_samples, self.noise_dim, noise, generator)
        samples = eps.shape[1]
        cond = torch.cat([x, calib.to(x.dtype)], dim=1).unsqueeze(1).expand(-1, samples, -1)
        return self.net(torch.cat([cond, eps], dim=2))


__all__ = ["MLPRefiner"]
