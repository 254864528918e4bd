"""Small building blocks shared by the network families (conv blocks, MLPs, shape checks)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn


def constructor_config(arch: str) -> dict[str, Any]:
    """A model's ``config``: ``arch``, then the arguments of the constructor that calls this
    (``self`` left out), in the order of its signature and as bound, defaults included. Call
    it before the constructor reassigns any of its arguments."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    caller = frame.f_back
    code = caller.f_code
    names = code.co_varnames[1 : code.co_argcount + code.co_kwonlyargcount]
    return {"arch": arch, **{name: caller.f_locals[name] for name in names}}


class MLPNet(nn.Module):
    """Base of the regression task's MLP networks (F, G and D): the constructor's checks and
    ``config``, ``in_channels`` (D_in), ``num_classes`` (D_out) and ``net``, an MLP of
    ``in_features`` -> ``out_features``. ``config`` is the subclass constructor's
    :func:`constructor_config`; each of its arguments but ``slope`` must be > 0."""

    arch = "mlp"

    def __init__(self, config: dict[str, Any], in_features: int, out_features: int) -> None:
        super().__init__()
        check_positive(**{k: v for k, v in config.items() if k not in ("arch", "slope")})
        self.config = config
        self.in_channels, self.num_classes = config["in_channels"], config["num_classes"]
        self.net = mlp(
            in_features, out_features, config["hidden"], config["num_layers"], config["slope"]
        )


class PlainMLP(MLPNet):
    """An :class:`MLPNet` whose constructor takes the MLP's hyper-parameters only (the
    regression task's F and D); :meth:`sizes` maps (D_in, D_out) to the MLP's in and out
    features."""

    @staticmethod
    def sizes(in_channels: int, num_classes: int) -> tuple[int, int]:
        return in_channels, num_classes

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden: int = 64,
        num_layers: int = 4,
        slope: float = 0.01,
    ) -> None:
        super().__init__(constructor_config(self.arch), *self.sizes(in_channels, num_classes))


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    *,
    act: str = "leaky_relu",
    dropout: float = 0.0,
    kernel_size: int = 3,
    channel_dropout: bool = False,
) -> nn.Sequential:
    """A ``kernel_size`` conv (no bias: BN follows) + BatchNorm + activation (+ dropout).

    ``act`` is ``"relu"`` or ``"leaky_relu"`` (slope 0.2); both run in place, which is safe
    because BN's backward needs its input, not its output. Dropout is element-wise
    (``nn.Dropout``), or channel-wise (``nn.Dropout2d``) with ``channel_dropout``; it is left
    out when ``dropout == 0``.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        activation(act),
    ]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout) if channel_dropout else nn.Dropout(dropout))
    return nn.Sequential(*layers)


def activation(act: str) -> nn.Module:
    """The in-place activation named ``act`` (``relu`` or ``leaky_relu`` with slope 0.2)."""
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "leaky_relu":
        return nn.LeakyReLU(0.2, inplace=True)
    raise ValueError(f"unknown activation {act!r}; valid: leaky_relu, relu")


def mlp(
    in_features: int, out_features: int, hidden: int, num_layers: int, slope: float = 0.01
) -> nn.Sequential:
    """``num_layers`` hidden linear layers of ``hidden`` units, each followed by
    LeakyReLU(slope), then a linear output layer (the paper's "4-layer MLP (64 units)" is
    num_layers = 4, as in the authors' toy code). The 1D toy uses slope 0.01 (PyTorch's
    default and the authors' code): at 0.2 the adversarial runs oscillated far more."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden), nn.LeakyReLU(slope, inplace=True)]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def check_positive(**values: float) -> None:
    """Raise ``ValueError`` naming the first argument that is not > 0."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def check_dropout(dropout: float) -> None:
    """Raise ``ValueError`` unless ``0 <= dropout < 1``."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def check_divisible(name: str, x: Tensor, factor: int, what: str) -> None:
    """Raise ``ValueError`` unless H and W of ``x`` [N, C, H, W] are divisible by ``factor``."""
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a [N, C, H, W] input, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(
            f"{name}: input size {h}x{w} is not divisible by {factor} ({what}); "
            f"crop or pad H and W to multiples of {factor}"
        )


def check_channels(name: str, x: Tensor, expected: int, what: str) -> None:
    """Raise ``ValueError`` unless dim 1 of ``x`` has ``expected`` entries."""
    if x.dim() < 2 or x.shape[1] != expected:
        raise ValueError(f"{name}: expected {expected} {what} in dim 1, got shape {tuple(x.shape)}")


def channels_last(module: nn.Module) -> None:
    """Store the 4D conv weights of ``module`` channels-last (NHWC), in place.

    With channels-last weights, CPU (oneDNN) convolutions run in NHWC whatever the input's
    layout, and every activation stays NHWC: about 1.5x faster forward+backward than NCHW on
    these networks. Outputs handed to callers are made contiguous again. To undo (e.g. for a
    GPU where NCHW is faster), call ``module.to(memory_format=torch.contiguous_format)``.
    """
    module.to(memory_format=torch.channels_last)
