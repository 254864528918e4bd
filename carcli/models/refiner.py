"""Refinement networks G: (x, F's output, noise) -> M samples.

* ``unet`` — U-Net over the image concatenated with F's probabilities; noise enters every up
  block through an AdaIN-like per-channel modulation h * (1 + gamma(eps)) + beta(eps). With
  ``noise="posterior"`` (the paper's latent-code variant, appendix B.2.3) a probabilistic head
  on the encoder's bottleneck gives a Gaussian q(z | x, p) and the modulation is driven by the
  reparameterised code z = mu + sigma * eps instead of eps itself.
* ``mlp``  — 4-layer MLP for the 1D regression task: (x, F(x), eps) -> y
  (:mod:`carcli.models.refiner_mlp`); ``car`` — the authors' per-level layout
  (:mod:`carcli.models.refiner_car`).

Both share the call ``forward(x, calib, num_samples=1, noise=None, generator=None)`` and return
the M samples along a new dim 1: logits [B, M, K, H, W] (unet) or values [B, M, D_out] (mlp).
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from carcli.models.blocks import (
    channels_last,
    check_channels,
    check_divisible,
    check_dropout,
    check_positive,
    constructor_config,
    conv_bn_act,
)
from carcli.models.noise import (
    GRID_CHANNELS,
    NOISE_SOURCES,
    draw_noise,
    region_field,
    uncertain_regions,
)

LOG_EPS = 1e-8
"""Probabilities are clamped to at least this before the log of the residual path."""

LOG_SIGMA_RANGE = (-7.0, 3.0)
"""The posterior head's log standard deviation is clamped to this range (sigma ~1e-3..20)."""


class _Encoder(nn.Module):
    """U-Net encoder: a full-resolution block, then ``depth`` (max-pool, block) levels."""

    def __init__(self, in_channels: int, chans: list[int], dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            conv_bn_act(
                in_channels if i == 0 else chans[i - 1], c, dropout=dropout, channel_dropout=True
            )
            for i, c in enumerate(chans)
        )

    def forward(self, z: Tensor) -> list[Tensor]:
        """Features of every level, finest first; the last one is the bottleneck."""
        feats = []
        for i, block in enumerate(self.blocks):
            z = block(z if i == 0 else nnf.max_pool2d(z, 2))
            feats.append(z)
        return feats


def modulated(block: nn.Module, u: Tensor, noise: Tensor, rows: int) -> Tensor:
    """An up block's tail: ``block.norm`` (BN), the noise's modulation u * (1 + gamma(eps)) +
    beta(eps) over ``rows`` sample rows (with ``block.dropout`` of both while training), then
    LeakyReLU(0.2) in place."""
    u = block.norm(u)
    scale = 1.0 + block.gamma(noise)
    shift = block.beta(noise)
    if block.training and block.dropout > 0:
        keep = torch.empty_like(scale).bernoulli_(1.0 - block.dropout) / (1.0 - block.dropout)
        scale, shift = scale * keep, shift * keep
    shape = (rows, -1, 1, 1)
    out = torch.addcmul(shift.view(shape), u, scale.view(shape))
    return nnf.leaky_relu_(out, 0.2)


class _UpBlock(nn.Module):
    """Up block: upsample, conv3x3 over [upsampled, skip], BN, noise modulation, LeakyReLU(0.2),
    channel dropout.

    * Upsampling is a 1x1 conv (c_in -> c_out) at the coarse resolution followed by nearest
      x2 upsampling (cheaper than a transposed conv, whose CPU backward is slow).
    * The conv over the concatenation is split into its two halves (conv is linear), so the
      skip half runs once per input image and is broadcast over the M samples; the result is
      identical to convolving the concatenated, sample-expanded tensor.
    * BN has no affine parameters of its own: the modulation h * (1 + gamma(eps)) + beta(eps)
      (two linear maps of eps, with biases) is the affine, as in AdaIN.
    * Dropout zeroes whole channels (as ``nn.Dropout2d``); since LeakyReLU is positively
      homogeneous, the mask folds into the modulation's scale and shift at no cost.
    """

    def __init__(self, c_in: int, c_skip: int, c_out: int, noise_dim: int, dropout: float):
        super().__init__()
        self.reduce = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.conv_up = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.conv_skip = nn.Conv2d(c_skip, c_out, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(c_out, affine=False)
        self.gamma = nn.Linear(noise_dim, c_out)
        self.beta = nn.Linear(noise_dim, c_out)
        self.dropout = dropout

    def forward(self, h: Tensor, skip: Tensor, noise: Tensor, expand: bool) -> Tensor:
        """``h`` [B*M, ...] ([B, ...] if ``expand``), ``skip`` [B, ...], ``noise`` [B*M, d]."""
        batch, samples = skip.shape[0], noise.shape[0] // skip.shape[0]
        u = self.conv_up(nnf.interpolate(self.reduce(h), scale_factor=2.0, mode="nearest"))
        s = self.conv_skip(skip)
        if expand:  # h is still per image: add the skip, then fan out to the samples
            u = u + s
            fmt = (
                torch.channels_last
                if u.is_contiguous(memory_format=torch.channels_last)
                else torch.contiguous_format
            )
            u = u.repeat_interleave(samples, dim=0).contiguous(memory_format=fmt)
        else:
            u = (u.view(batch, samples, *u.shape[1:]) + s.unsqueeze(1)).view(u.shape)
        return modulated(self, u, noise, noise.shape[0])


class ConvRefiner(nn.Module):
    """What the convolutional refiners (``unet``, ``car``) share: the recipe-facing options
    and their checks, the noise layout (a global code, then the optional grid), the heads
    (logits, noise grid, posterior), the codes of the latent-code variant, the residual
    logits and ``forward``, and the constructor: its arguments are the registry's
    hyper-parameters (recipe keys ``refiner.*``, recorded in ``config``). A subclass builds its
    encoder and decoder in :meth:`_layers` and defines ``encode`` and ``decode``.

    ``noise_regions``, ``region_dim``, ``region_threshold``, ``region_levels``: the region
    noise, see :meth:`_add_region`."""

    arch = ""

    def __init__(  # noqa: PLR0913 (the registry's hyper-parameters, recipe keys refiner.*)
        self,
        in_channels: int,
        num_classes: int,
        noise_dim: int,
        width: int = 32,
        depth: int = 4,
        dropout: float = 0.1,
        residual_logits: bool = True,
        noise: str = "gaussian",
        noise_grid: int = 0,
        noise_regions: int = 0,
        region_dim: int = 4,
        region_threshold: float = 0.9,
        region_levels: int = 0,
    ) -> None:
        super().__init__()
        config = constructor_config(self.arch)
        check_positive(
            in_channels=in_channels,
            num_classes=num_classes,
            noise_dim=noise_dim,
            width=width,
            depth=depth,
        )
        check_dropout(dropout)
        if noise not in NOISE_SOURCES:
            raise ValueError(f"unknown noise source {noise!r}; valid: {', '.join(NOISE_SOURCES)}")
        if noise_grid < 0 or (noise_grid and noise != "gaussian"):
            raise ValueError(f"noise_grid needs gaussian noise and >= 0, got {noise_grid}")
        # the options that are off are left out of config, so checkpoints of earlier versions
        # (which never had them) load unchanged
        if not noise_grid:
            del config["noise_grid"]
        if not noise_regions:
            for key in ("noise_regions", "region_dim", "region_threshold"):
                del config[key]
        if not (noise_regions and region_levels):
            del config["region_levels"]
        self.config = config
        self.noise_regions, self.region_dim = noise_regions, region_dim
        self.region_threshold, self.region_levels = region_threshold, region_levels
        if noise_regions < 0 or region_dim < 1 or not 0 < region_threshold <= 1:
            regions = (noise_regions, region_dim, region_threshold, region_levels)
            raise ValueError(f"noise regions need R >= 0, dim >= 1, 0 < threshold <= 1: {regions}")
        if self.noise_regions and noise != "gaussian":
            raise ValueError("noise_regions needs gaussian noise")
        self.in_channels, self.num_classes = in_channels, num_classes
        # eps = [global code (noise_dim) | spatial grid (GRID_CHANNELS x g x g) | region
        # codes (noise_regions x region_dim)]
        self.code_dim, self.noise_grid = noise_dim, noise_grid
        self.grid_dim = GRID_CHANNELS * noise_grid**2
        self.noise_dim = noise_dim + self.grid_dim + self.noise_regions * self.region_dim
        self.depth, self.residual_logits, self.noise = depth, residual_logits, noise
        self._heads(*self._layers(in_channels, num_classes, noise_dim, width, depth, dropout))

    def _layers(
        self, in_channels: int, num_classes: int, noise_dim: int, width: int, depth: int,
        dropout: float,
    ) -> tuple[int, int]:  # fmt: skip
        """Build the encoder and decoder (subclasses); return the channels of the decoder's
        output and of the bottleneck, for :meth:`_heads`."""
        raise NotImplementedError

    def _heads(self, c_out: int, c_bottleneck: int) -> None:
        """The 1x1 logits head, the noise grid's projection and the posterior head (in this
        order: module creation draws the initial weights)."""
        self.head = nn.Conv2d(c_out, self.num_classes, 1)
        if self.noise_grid:  # per-location noise, added to the bottleneck of every sample
            self.grid_proj = nn.Conv2d(GRID_CHANNELS, c_bottleneck, 1)
        if self.noise == "posterior":  # split output: mean and log standard deviation
            self.posterior_head = nn.Linear(c_bottleneck, 2 * self.code_dim)
            nn.init.zeros_(self.posterior_head.weight)
            nn.init.zeros_(self.posterior_head.bias)
        if self.noise_regions:  # one 1x1 conv per decoder level: region codes -> features
            self.region_proj = nn.ModuleList(
                nn.Conv2d(self.region_dim, c, 1)
                for c in self._decoder_channels()[: self.region_levels or None]
            )
        channels_last(self)

    def _decoder_channels(self) -> list[int]:
        """Output channels of each decoder level, coarsest first (subclasses)."""
        raise NotImplementedError

    def _add_region(self, h: Tensor, level: int, regions: tuple[Tensor, Tensor] | None) -> Tensor:
        """h plus the projection of the region noise map, area-averaged to h's resolution
        (``noise_regions``; otherwise h unchanged; see :func:`region_field`). Each uncertain
        region of F carries a code of its own, constant over the region, so G can decide
        separate ambiguous regions independently and each one as a whole."""
        if regions is None or level >= len(self.region_proj):
            return h
        codes, ids = regions
        return h + region_field(codes, ids, self.region_proj[level], h.shape[-2:]).to(h.dtype)

    def _check_inputs(self, x: Tensor, calib: Tensor) -> None:
        name = f"{self.arch} refiner"
        check_channels(name, x, self.in_channels, "image channels")
        check_channels(name, calib, self.num_classes, "class probabilities")
        if calib.shape[0] != x.shape[0] or calib.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"{name}: p {tuple(calib.shape)} does not match x {tuple(x.shape)}")
        check_divisible(name, x, 2**self.depth, f"depth {self.depth}")

    def posterior(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Mean and log standard deviation [B, d] of q(z | x, p) (``noise="posterior"``)."""
        if self.noise != "posterior":
            raise ValueError("posterior() needs a refiner built with noise='posterior'")
        pooled = feats[-1].float().mean(dim=(2, 3))
        mu, log_sigma = self.posterior_head(pooled).chunk(2, dim=1)
        return mu, log_sigma.clamp(*LOG_SIGMA_RANGE)

    def codes(self, feats: list[Tensor], noise: Tensor) -> Tensor:
        """What drives the decoder for eps [B, M, d]: eps itself (gaussian), or the
        reparameterised codes z = mu + sigma * eps of q(z | x, p) (posterior)."""
        if self.noise != "posterior":
            return noise
        mu, log_sigma = self.posterior(feats)
        z = mu.unsqueeze(1) + log_sigma.exp().unsqueeze(1) * noise.float()
        return z.to(noise.dtype)

    def _decoder_input(
        self, feats: list[Tensor], noise: Tensor, calib: Tensor
    ) -> tuple[Tensor, Tensor, bool, int, tuple[Tensor, Tensor] | None]:
        """(bottleneck h, the decoder's codes [B*M, d], whether h is still per image, M, the
        region codes [B, M, R, region_dim] and F's uncertain regions [B, H, W] of p, or
        None): the noise checked, turned into codes, the grid (if any) added to h."""
        batch = feats[0].shape[0]
        if noise.dim() != 3 or noise.shape[0] != batch or noise.shape[2] != self.noise_dim:
            raise ValueError(
                f"noise must have shape [B={batch}, M, d={self.noise_dim}], "
                f"got {tuple(noise.shape)}"
            )
        samples = noise.shape[1]
        eps = self.codes(feats, noise).reshape(batch * samples, -1)
        h, expand, regions = feats[-1], True, None
        if self.noise_regions:
            start = self.code_dim + self.grid_dim
            codes = eps[:, start:].reshape(batch, samples, self.noise_regions, self.region_dim)
            regions = (codes, uncertain_regions(calib, self.region_threshold, self.noise_regions))
        if self.noise_grid:
            g = self.noise_grid
            grid = eps[:, self.code_dim : self.code_dim + self.grid_dim]
            grid = nnf.interpolate(grid.reshape(-1, GRID_CHANNELS, g, g), size=h.shape[-2:])
            h = h.repeat_interleave(samples, dim=0) + self.grid_proj(grid)
            expand = False
        return h, eps[:, : self.code_dim], expand, samples, regions

    def _logits(self, h: Tensor, calib: Tensor, samples: int) -> Tensor:
        """The head's logits [B, M, K, H, W], plus log p with ``residual_logits``."""
        logits = self.head(h)
        logits = logits.contiguous().view(-1, samples, *logits.shape[1:])
        if self.residual_logits:
            log_calib = calib.float().clamp_min(LOG_EPS).log()  # float32: 1e-8 underflows in fp16
            logits = logits + log_calib.to(logits.dtype).unsqueeze(1)
        return logits

    def forward(
        self,
        x: Tensor,
        calib: Tensor,
        num_samples: int = 1,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        return_posterior: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """M sample logits [B, M, K, H, W] for x [B, C, H, W] and F's probabilities ``calib``
        (the paper's p).

        ``noise`` [B, M, d] fixes the samples (then M = noise.shape[1]); otherwise
        ``num_samples`` noise vectors per image are drawn from N(0, I) with ``generator``.
        ``return_posterior`` (``noise="posterior"`` only): also return q's mean and log
        standard deviation [B, d], for the KL term of training (one call, so wrappers such as
        torch.compile or autocast see the whole forward).
        """
        eps = draw_noise(x, num_samples, self.noise_dim, noise, generator)
        feats = self.encode(x, calib)
        logits = self.decode(feats, calib, eps)
        if return_posterior:
            return (logits, *self.posterior(feats))
        return logits


class UNetRefiner(ConvRefiner):
    """U-Net refiner G(x, p, eps) with noise injected in every up block.

    Input: image x [B, C, H, W] concatenated with F's probabilities ``calib`` (the paper's p) [B, K,
    H, W]. Encoder: a full-resolution block then ``depth`` levels (max-pool 2, block), channels
    ``width * 2**i``; each block is conv3x3 + BN + LeakyReLU(0.2) + channel dropout. Decoder:
    ``depth`` up blocks (see :class:`_UpBlock`), each modulated by the noise: h * (1 + gamma(eps)) +
    beta(eps) after BN, with gamma, beta linear maps of eps. A 1x1 conv gives K logits per sample.

    The encoder runs once on the B inputs; the decoder runs on B*M rows, image-major (row
    b*M + m is sample m of image b); ``encode`` and ``decode`` are public so a sampler can
    draw many chunks of samples from one encoding. With ``residual_logits`` (default; a
    deviation from the paper, see docs/method.md, "Deviations") log(clamp(p, 1e-8)) is added to
    the output logits, so a zeroed head makes softmax(G) equal p. H and W must be divisible
    by ``2**depth``.

    ``noise="posterior"``: a linear head on the globally averaged bottleneck features gives
    the mean and log standard deviation of q(z | x, p) = N(mu, diag sigma^2) over a
    ``noise_dim``-dimensional code (:meth:`posterior`); ``decode`` turns the given eps into
    codes z = mu + sigma * eps (reparameterised, so per-image seeded eps still fixes every
    sample). The head starts at zero, i.e. q = N(0, I): training starts from the gaussian
    refiner.
    """

    arch = "unet"

    def _layers(
        self, in_channels: int, num_classes: int, noise_dim: int, width: int, depth: int,
        dropout: float,
    ) -> tuple[int, int]:  # fmt: skip
        chans = [width * 2**i for i in range(depth + 1)]
        self.encoder = _Encoder(in_channels + num_classes, chans, dropout)
        self.decoder = nn.ModuleList(
            _UpBlock(chans[i], chans[i - 1], chans[i - 1], noise_dim, dropout)
            for i in range(depth, 0, -1)
        )
        return chans[0], chans[-1]

    def encode(self, x: Tensor, calib: Tensor) -> list[Tensor]:
        """Encoder features of (x, calib), finest first (run once per input image)."""
        self._check_inputs(x, calib)
        return self.encoder(torch.cat([x, calib.to(x.dtype)], dim=1))

    def decode(self, feats: list[Tensor], calib: Tensor, noise: Tensor) -> Tensor:
        """Logits [B, M, K, H, W] from encoder features and noise eps [B, M, d] (turned into
        codes first by :meth:`codes` when ``noise="posterior"``)."""
        h, eps, expand, samples, regions = self._decoder_input(feats, noise, calib)
        for i, block in enumerate(self.decoder):
            h = block(h, feats[-2 - i], eps, expand=expand and i == 0)
            h = self._add_region(h, i, regions)
        return self._logits(h, calib, samples)

    def _decoder_channels(self) -> list[int]:
        return [block.norm.num_features for block in self.decoder]


__all__ = [
    "GRID_CHANNELS",
    "LOG_EPS",
    "LOG_SIGMA_RANGE",
    "NOISE_SOURCES",
    "ConvRefiner",
    "UNetRefiner",
    "draw_noise",
]
