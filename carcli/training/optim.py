"""The optimiser both training stages use and its step schedule of the learning rate."""

from __future__ import annotations

from typing import Any

import torch


def lr_at(base: float, milestones: list[int], gamma: float, step: int) -> float:
    """Step schedule: base * gamma^(number of milestones already passed)."""
    return base * gamma ** sum(step >= m for m in milestones)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def adam(
    params: Any, lr: float, betas: list[float], weight_decay: float, impl: str = "default"
) -> torch.optim.Adam:
    """The paper's optimiser: Adam with coupled L2 weight decay; ``impl`` (speed.optimizer):
    torch's default, ``foreach`` (multi-tensor, bit-identical) or ``fused`` (one kernel)."""
    kw = {"foreach": True} if impl == "foreach" else {"fused": True} if impl == "fused" else {}
    return torch.optim.Adam(
        params, lr=lr, betas=(betas[0], betas[1]), weight_decay=weight_decay, **kw
    )
