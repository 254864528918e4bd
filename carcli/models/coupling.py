"""The region coupling head: does a pair of F's separate uncertain regions answer together?

Beyond the paper. G draws whole maps from one noise vector, so it tends to tie every
ambiguous region of an image to every other; the labels say which regions really go
together (two instances of one flipped class) and which do not (two unrelated nodules).
This small network reads the image and F's probabilities and predicts, for each pair of F's
separate uncertain regions, the probability that their answers co-vary. Sampling
(:mod:`carcli.sampling.regions`) keeps G's joint within each group of coupled regions and
draws the groups independently.

Features: a dilated conv stack over [image, F's probabilities] (receptive field 31 px);
each region's features are their mean over the region; a pair is described symmetrically
(sum, product, absolute difference of the two regions' features), with the mean features
along the segment between the regions' centroids and the centroids' distance, so a cue on
the objects, around them or between them can be read.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as nnf

PATH_POINTS = 9


class RegionCoupling(nn.Module):
    """Pair logits for F's uncertain regions (module docstring)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.config = {
            "arch": "conv",
            "in_channels": in_channels,
            "num_classes": num_classes,
            "width": width,
        }
        layers: list[nn.Module] = []
        c = in_channels + num_classes
        for dilation in (1, 2, 4, 8):
            layers += [nn.Conv2d(c, width, 3, padding=dilation, dilation=dilation), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*layers)
        self.pair = nn.Sequential(
            nn.Linear(4 * width + 1, 2 * width), nn.ReLU(), nn.Linear(2 * width, 1)
        )

    def forward(self, x: Tensor, p: Tensor, ids: Tensor, pairs: Tensor) -> Tensor:
        """Logits [P] for ``pairs`` [P, 3] (image, region r, region s) of region ids
        ``ids`` [B, H, W] (int64; ids >= R mean no region, R = ids' largest region + 1)."""
        feats = self.features(torch.cat([x, p.to(x.dtype)], 1))  # [B, W, H, Wd]
        b, w, h, wd = feats.shape
        r_count = int(pairs[:, 1:].max()) + 1 if len(pairs) else 1
        onehot = nnf.one_hot(ids.clamp(max=r_count), r_count + 1)[..., :r_count].to(feats.dtype)
        onehot = onehot.flatten(1, 2)  # [B, H*W, R]
        area = onehot.sum(1).clamp(min=1.0)  # [B, R]
        pooled = torch.einsum("bnr,bcn->brc", onehot, feats.flatten(2)) / area[..., None]
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=feats.dtype), torch.arange(wd, dtype=feats.dtype), indexing="ij"
        )
        cy = torch.einsum("bnr,n->br", onehot, ys.reshape(-1)) / area
        cx = torch.einsum("bnr,n->br", onehot, xs.reshape(-1)) / area
        i, r, s = pairs[:, 0], pairs[:, 1], pairs[:, 2]
        fr, fs = pooled[i, r], pooled[i, s]
        path = self._path(feats, i, (cy[i, r], cx[i, r]), (cy[i, s], cx[i, s]))
        dist = torch.hypot(cy[i, r] - cy[i, s], cx[i, r] - cx[i, s]) / max(h, wd)
        z = torch.cat([fr + fs, fr * fs, (fr - fs).abs(), path, dist[:, None]], 1)
        return self.pair(z).squeeze(1)

    @staticmethod
    def _path(
        feats: Tensor, image: Tensor, a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]
    ) -> Tensor:
        """Mean features [P, W] at PATH_POINTS points on each segment a -> b (pixel coords)."""
        h, w = feats.shape[-2:]
        t = torch.linspace(0.0, 1.0, PATH_POINTS, dtype=feats.dtype)
        y = a[0][:, None] + (b[0] - a[0])[:, None] * t  # [P, T]
        x = a[1][:, None] + (b[1] - a[1])[:, None] * t
        grid = torch.stack([(x + 0.5) / w * 2 - 1, (y + 0.5) / h * 2 - 1], -1)  # [P, T, 2]
        sampled = nnf.grid_sample(
            feats[image], grid[:, None], mode="bilinear", align_corners=False
        )  # [P, W, 1, T]
        return sampled.mean((2, 3))
