"""CIFAR ResNeXt-29 (Xie et al., 2017): bottleneck blocks whose grouped 3×3 convolution has C paths.

Width throttles the cardinality: at level u (one of L levels) the first
``active_channels(u, C, L)`` paths of every block run — ceil(u·C) rounded up to a multiple of the
grain m (the largest of 8, 4, 2, 1 with C >= m·L), at least m and at most C; for the default C = 8
and 8 levels that is ceil(u·C), but with ``levels=(0.3, 1.0)`` (m = 4) level 0.3 runs 4 paths, not 3.
The 1×1 convolutions around them shrink with them; stem, projections and block outputs keep their
width. Depth skips whole blocks (the shortcut passes through), ranked as in the CIFAR ResNets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tnn.layers import LevelBatchNorm, Setting, ThrottleConv, ThrottleLinear, active_components, conv_bn
from tnn.models._base import ThrottleNet
from tnn.models._registry import register_model

__all__ = ["CifarResNeXt", "ResNeXtBlock"]


class ResNeXtBlock(nn.Module):
    """1×1 → grouped 3×3 (C paths of ``group_width``) → 1×1, plus identity or projection shortcut."""

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        cardinality: int,
        group_width: int,
        stride: int,
        width_levels: Sequence[float],
        active: Sequence[bool],
    ) -> None:
        super().__init__()
        inner = cardinality * group_width
        self.active = tuple(active)
        self.conv2 = ThrottleConv(2, inner, inner, 3, width_levels, stride=stride, padding=1, groups=cardinality)
        self.conv1 = ThrottleConv(2, in_planes, inner, 1, width_levels, out_counts=self.conv2.out_counts)
        self.bn1 = LevelBatchNorm(self.conv1.out_counts)
        self.bn2 = LevelBatchNorm(self.conv2.out_counts)
        self.conv3 = ThrottleConv(2, inner, out_planes, 1, width_levels, throttle=False)
        self.bn3 = LevelBatchNorm(self.conv3.out_counts)
        self.proj: ThrottleConv | None = None
        if stride != 1 or in_planes != out_planes:
            self.proj = ThrottleConv(2, in_planes, out_planes, 1, width_levels, stride=stride, throttle=False)
            self.proj_bn = LevelBatchNorm(self.proj.out_counts)

    def forward(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        shortcut = x if self.proj is None else conv_bn(self.proj, self.proj_bn, x, s)
        if not self.active[s.level] and not s.masked:
            return shortcut if self.proj is None else F.relu(shortcut)
        out = conv_bn(self.conv1, self.bn1, x, s, relu=True)
        out = conv_bn(self.conv2, self.bn2, out, s, relu=True)
        out = conv_bn(self.conv3, self.bn3, out, s)
        if not self.active[s.level]:
            out = out * 0  # masked reference: compute the block, then discard it
        return F.relu(out + shortcut)


class CifarResNeXt(ThrottleNet):
    """ResNeXt-(9n+2) with ``cardinality`` paths of ``base_width`` channels (doubling per stage)."""

    def __init__(
        self,
        depth: int = 29,
        *,
        cardinality: int = 8,
        base_width: int = 16,
        widths: Sequence[int] = (128, 256, 512),
        stem_width: int = 64,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        num_levels: int | None = None,
        levels: Sequence[float] | None = None,
        strategy: str = "width",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if (depth - 2) % 9 or depth < 11:
            raise ValueError(f"CIFAR ResNeXt depth must be 9n+2 (11, 20, 29, ...), got {depth}")
        super().__init__(
            input_shape=(in_channels, input_size, input_size),
            num_classes=num_classes,
            num_levels=num_levels,
            levels=levels,
            strategy=strategy,
            mean=mean,
            std=std,
        )
        n, wl = (depth - 2) // 9, self.width_levels
        self.stem = ThrottleConv(2, in_channels, stem_width, 3, wl, padding=1, throttle=False)
        self.stem_bn = LevelBatchNorm(self.stem.out_counts)
        gates = active_components(self.depth_levels, n * len(widths))
        blocks, in_planes = [], stem_width
        for st, planes in enumerate(widths):
            for b in range(n):
                stride = 2 if st > 0 and b == 0 else 1
                gate = gates[b * len(widths) + st]
                blocks.append(ResNeXtBlock(in_planes, planes, cardinality, base_width * 2**st, stride, wl, gate))
                in_planes = planes
        self.blocks = nn.ModuleList(blocks)
        self.fc = ThrottleLinear(in_planes, num_classes, wl, throttle=False)

    def forward_level(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        x = conv_bn(self.stem, self.stem_bn, x, s, relu=True)
        for block in self.blocks:
            x = block(x, s)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), s)


@register_model
def resnext29_8x16d(**kwargs) -> CifarResNeXt:
    """ResNeXt-29, 8 paths of 16 channels (32, 64 in later stages), outputs 128/256/512."""
    return CifarResNeXt(29, **{"cardinality": 8, "base_width": 16, **kwargs})


@register_model
def resnext29_8x32d(**kwargs) -> CifarResNeXt:
    """ResNeXt-29, 8 paths of 32 channels, outputs 256/512/1024 (closer to the paper's size)."""
    return CifarResNeXt(29, **{"cardinality": 8, "base_width": 32, "widths": (256, 512, 1024), **kwargs})
