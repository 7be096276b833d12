"""A small C3D (Tran et al., 2015) for short clips: 3×3×3 convolutions, width-throttled.

Input N×C×T×H×W (default 16×32×32). Four conv-BN-ReLU stages with 3-D max pooling (the first
pools space only, so early motion cues survive), global average pooling, a small head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tnn.layers import LevelBatchNorm, Setting, ThrottleConv, ThrottleLinear, conv_bn
from tnn.models._base import ThrottleNet
from tnn.models._registry import register_model

__all__ = ["C3D"]


class C3D(ThrottleNet):
    """Conv3d stages of ``widths`` channels, each followed by max pooling."""

    strategies = ("width",)

    def __init__(
        self,
        *,
        widths: Sequence[int] = (16, 32, 64, 128),
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: Sequence[int] = (16, 32, 32),
        num_levels: int | None = None,
        levels: Sequence[float] | None = None,
        strategy: str = "width",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if not isinstance(input_size, Sequence) or len(input_size) != 3:
            raise ValueError(
                f"input_size of a clip model must be (frames, height, width), e.g. (16, 32, 32); got {input_size!r}"
            )
        super().__init__(
            input_shape=(in_channels, *input_size),
            num_classes=num_classes,
            num_levels=num_levels,
            levels=levels,
            strategy=strategy,
            mean=mean if mean is not None else (0.5,) * in_channels,
            std=std if std is not None else (0.25,) * in_channels,
        )
        wl, c = self.width_levels, in_channels
        convs, norms = [], []
        for width in widths:
            convs.append(ThrottleConv(3, c, width, 3, wl, padding=1))
            norms.append(LevelBatchNorm(convs[-1].out_counts, dim=3))
            c = width
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        self.fc1 = ThrottleLinear(c, c, wl)
        self.fc2 = ThrottleLinear(c, num_classes, wl, throttle=False)

    def forward_level(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = conv_bn(conv, norm, x, s, relu=True)
            kernel = (1, 2, 2) if i == 0 else 2
            x = F.max_pool3d(x, kernel, ceil_mode=True)
        x = torch.flatten(F.adaptive_avg_pool3d(x, 1), 1)
        return self.fc2(F.relu(self.fc1(x, s)), s)


@register_model
def c3d_small(**kwargs) -> C3D:
    """C3D with widths 16/32/64/128: trains on 2 CPU cores on 16×32×32 clips."""
    return C3D(**kwargs)


@register_model
def c3d(**kwargs) -> C3D:
    """C3D with widths 32/64/128/256."""
    return C3D(**{"widths": (32, 64, 128, 256), **kwargs})
