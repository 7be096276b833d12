"""CIFAR VGG with BatchNorm (Simonyan & Zisserman, 2015) and a small classifier head.

Only width can be throttled: a plain stack has no component that can be skipped. Max pooling
uses ``ceil_mode`` so that both 32×32 and 28×28 inputs reach 1×1 after five pools.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tnn.layers import LevelBatchNorm, Setting, ThrottleConv, ThrottleLinear, conv_bn
from tnn.models._base import ThrottleNet
from tnn.models._registry import register_model

__all__ = ["CifarVGG"]

CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class CifarVGG(ThrottleNet):
    """VGG-11/13/16 with BN; ``width_mult`` scales every layer (e.g. 0.5 for a slim variant)."""

    strategies = ("width",)

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        width_mult: float = 1.0,
        num_levels: int | None = None,
        levels: Sequence[float] | None = None,
        strategy: str = "width",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if depth not in CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(CONFIGS)}, got {depth}")
        if not 0 < width_mult <= 4:
            raise ValueError(f"width_mult must be in (0, 4], got {width_mult}")
        super().__init__(
            input_shape=(in_channels, input_size, input_size),
            num_classes=num_classes,
            num_levels=num_levels,
            levels=levels,
            strategy=strategy,
            mean=mean,
            std=std,
        )
        wl = self.width_levels
        layers: list[nn.Module] = []
        c = in_channels
        for item in CONFIGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            width = max(8, round(int(item) * width_mult / 8) * 8)
            conv = ThrottleConv(2, c, width, 3, wl, padding=1)
            layers += [conv, LevelBatchNorm(conv.out_counts)]
            c = width
        self.features = nn.ModuleList(layers)
        self.fc1 = ThrottleLinear(c, c, wl)
        self.fc2 = ThrottleLinear(c, num_classes, wl, throttle=False)

    def forward_level(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        layers = iter(self.features)
        for layer in layers:  # every conv is followed by its norm
            x = conv_bn(layer, next(layers), x, s, relu=True) if isinstance(layer, ThrottleConv) else layer(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc2(F.relu(self.fc1(x, s)), s)


@register_model
def vgg11(**kwargs) -> CifarVGG:
    """VGG-11 with BN (9.5 M parameters at u=1 and width_mult=1)."""
    return CifarVGG(11, **kwargs)


@register_model
def vgg16(**kwargs) -> CifarVGG:
    """VGG-16 with BN (15.0 M parameters at u=1 and width_mult=1)."""
    return CifarVGG(16, **kwargs)
