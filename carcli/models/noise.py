"""The refiners' noise: drawing eps, its layout (global code, grid, region codes) and the
region noise's maps over F's uncertain regions."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as nnf
from scipy import ndimage
from torch import Tensor, nn

NOISE_SOURCES = ("gaussian", "posterior")
"""What drives the decoder's modulation: eps itself, or a code drawn from q(z | x, p)."""

GRID_CHANNELS = 2
"""``noise_grid`` g > 0: eps also holds GRID_CHANNELS x g x g independent numbers, a coarse
noise map over the image (nearest-upsampled to the bottleneck, a 1x1 conv, added to every
sample's bottleneck features), so separate regions can draw their answers independently."""


def eps_size(config: dict) -> int:
    """The length of one sample's eps for a refiner ``config`` (a checkpoint's): the global
    code (``noise_dim``), the grid's GRID_CHANNELS x g x g and the region codes."""
    grid = int(config.get("noise_grid", 0))
    regions = int(config.get("noise_regions", 0)) * int(config.get("region_dim", 4))
    return int(config.get("noise_dim", 0)) + GRID_CHANNELS * grid**2 + regions


def uncertain_regions(calib: Tensor, threshold: float, max_regions: int) -> Tensor:
    """Region ids [B, H, W] (int64) of F's probabilities ``calib`` [B, K, H, W]: the 8-connected
    regions where F's top class probability is below ``threshold`` are numbered in raster
    order of their first pixel, 0, 1, ..., and region r gets id r mod ``max_regions``;
    certain pixels get ``max_regions`` (no region). Computed on the CPU (scipy), once per image."""
    uncertain = (calib.detach().float().amax(1) < threshold).cpu().numpy()
    return torch.from_numpy(region_ids(uncertain, max_regions)).to(calib.device)


def region_ids(uncertain: np.ndarray, max_regions: int, link: int = 0) -> np.ndarray:
    """Region ids [B, H, W] (int64) of boolean masks [B, H, W]: each mask grown by ``link``
    pixels (8-connected dilation) where > 0, its 8-connected regions numbered in raster order
    of their first pixel, region r getting id r mod ``max_regions``; other pixels get
    ``max_regions``."""
    eight = np.ones((3, 3), dtype=bool)
    ids = np.full(uncertain.shape, max_regions, dtype=np.int64)
    for b, mask in enumerate(uncertain):
        if link > 0 and mask.any():
            mask = ndimage.binary_dilation(mask, structure=eight, iterations=link)
        labels, count = ndimage.label(mask, structure=eight)
        if count:
            ids[b][mask] = (labels[mask] - 1) % max_regions
    return ids


def region_field(codes: Tensor, ids: Tensor, proj: nn.Conv2d, size: tuple[int, int]) -> Tensor:
    """``proj`` (a 1x1 conv) of the region noise map area-averaged to ``size``, [B*M, C, h, w]
    (channels-last strides), computed without the map: the conv is linear, so each region's
    code is projected once ([B, M, R + 1, C]; id R, no region, gives the bias) and laid out by
    the regions' share of each cell (at full resolution: a gather). Equal, to float
    rounding, to ``proj(adaptive_avg_pool2d(m, size))`` of the per-pixel map m [B*M, r, H, W]
    that holds each region's code over the region and 0 elsewhere."""
    b, m, r = codes.shape[:3]
    weight = proj.weight[:, :, 0, 0].to(codes.dtype)
    bias = proj.bias.to(codes.dtype)
    q = torch.cat([codes @ weight.T + bias, bias.expand(b, m, 1, -1)], dim=2)  # [B, M, R+1, C]
    c = q.shape[-1]
    if tuple(size) == tuple(ids.shape[-2:]):
        field = q.gather(2, ids.reshape(b, 1, -1, 1).expand(b, m, -1, c))  # [B, M, H*W, C]
    else:
        share = nnf.one_hot(ids, r + 1).permute(0, 3, 1, 2).to(codes.dtype)  # [B, R+1, H, W]
        share = nnf.adaptive_avg_pool2d(share, size).flatten(2)  # [B, R+1, h*w]
        field = torch.einsum("brs,bmrc->bmsc", share, q)
    return field.reshape(b * m, *size, c).permute(0, 3, 1, 2)


def draw_noise(
    x: Tensor,
    num_samples: int,
    noise_dim: int,
    noise: Tensor | None,
    generator: torch.Generator | None,
) -> Tensor:
    """Return the noise [B, M, d] to use: ``noise`` checked, or drawn from N(0, I)."""
    batch = x.shape[0]
    if noise is None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        return torch.randn(
            (batch, num_samples, noise_dim), generator=generator, device=x.device, dtype=x.dtype
        )
    if noise.dim() != 3 or noise.shape[0] != batch or noise.shape[2] != noise_dim:
        raise ValueError(
            f"noise must have shape [B={batch}, M, d={noise_dim}], got {tuple(noise.shape)}"
        )
    if num_samples not in (1, noise.shape[1]):
        raise ValueError(
            f"num_samples={num_samples} disagrees with the given noise ({noise.shape[1]} samples)"
        )
    return noise.to(device=x.device, dtype=x.dtype)


__all__ = [
    "GRID_CHANNELS",
    "NOISE_SOURCES",
    "draw_noise",
    "eps_size",
    "region_field",
    "region_ids",
    "uncertain_regions",
]
