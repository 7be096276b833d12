"""CIFAR DenseNet-BC (Huang et al., 2017): bottleneck dense layers, compression 0.5 in transitions.

The throttled components are the dense layers: at level u the first ceil(u·L) layers of every
dense block run. A dense block's output is the concatenation [input, layer 1, ..., layer L], so
the active layers form a channel *prefix*; transitions and the classifier slice their input
weights to it. Fewer layers means a block both shallower and narrower, so this is the family's
single strategy, ``width``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tnn.layers import LevelBatchNorm, Setting, ThrottleConv, ThrottleLinear, active_components
from tnn.models._base import ThrottleNet
from tnn.models._registry import register_model

__all__ = ["CifarDenseNet", "DenseBlock"]


class DenseLayer(nn.Module):
    """BN-ReLU-1×1 conv (4k) - BN-ReLU-3×3 conv (k): k new channels from all earlier ones."""

    def __init__(self, in_channels: int, growth: int, levels: Sequence[float]) -> None:
        super().__init__()
        n = len(levels)
        self.bn1 = LevelBatchNorm((in_channels,) * n)
        self.conv1 = ThrottleConv(2, in_channels, 4 * growth, 1, levels, throttle=False)
        self.bn2 = LevelBatchNorm(self.conv1.out_counts)
        self.conv2 = ThrottleConv(2, 4 * growth, growth, 3, levels, padding=1, throttle=False)

    def forward(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x, s)), s)
        return self.conv2(F.relu(self.bn2(out, s)), s)


class DenseBlock(nn.Module):
    """L dense layers; the first ceil(u·L) run at level u."""

    def __init__(self, in_channels: int, num_layers: int, growth: int, levels: Sequence[float]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_channels + i * growth, growth, levels) for i in range(num_layers))
        self.gates = active_components(levels, num_layers)
        self.out_counts = tuple(in_channels + growth * sum(g[i] for g in self.gates) for i in range(len(levels)))

    def forward(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        features = [x]
        for layer, gate in zip(self.layers, self.gates, strict=True):
            if not gate[s.level] and not s.masked:
                break  # the active layers are a prefix: none after this one runs either
            new = layer(torch.cat(features, 1) if len(features) > 1 else x, s)
            features.append(new if gate[s.level] else new * 0)
        return torch.cat(features, 1) if len(features) > 1 else x


class CifarDenseNet(ThrottleNet):
    """DenseNet-BC-(6L+4) with growth rate ``growth``."""

    strategies = ("width",)

    def __init__(
        self,
        depth: int = 100,
        *,
        growth: int = 12,
        compression: float = 0.5,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        num_levels: int | None = None,
        levels: Sequence[float] | None = None,
        strategy: str = "width",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"DenseNet-BC depth must be 6L+4 (40, 52, 100, ...), got {depth}")
        if isinstance(compression, bool) or not isinstance(compression, numbers.Real) or not 0 < compression <= 1:
            raise ValueError(
                f"DenseNet-BC compression must be in (0, 1] (the share of channels a transition keeps; 0.5 in "
                f"the paper), got {compression!r}"
            )
        super().__init__(
            input_shape=(in_channels, input_size, input_size),
            num_classes=num_classes,
            num_levels=num_levels,
            levels=levels,
            strategy=strategy,
            mean=mean,
            std=std,
        )
        num_layers, levels_ = (depth - 4) // 6, self.width_levels
        c = 2 * growth
        self.stem = ThrottleConv(2, in_channels, c, 3, levels_, padding=1, throttle=False)
        stages: list[nn.Module] = []
        for i in range(3):
            block = DenseBlock(c, num_layers, growth, levels_)
            stages.append(block)
            c += num_layers * growth
            if i < 2:
                out = int(c * compression)
                if out < 1:
                    raise ValueError(
                        f"DenseNet-BC compression {compression} leaves a transition of {c} channels with none; "
                        f"use at least {1 / c:.3g}"
                    )
                stages += [LevelBatchNorm(block.out_counts), ThrottleConv(2, c, out, 1, levels_, throttle=False)]
                c = out
        self.stages = nn.ModuleList(stages)
        self.final_bn = LevelBatchNorm(block.out_counts)
        self.fc = ThrottleLinear(c, num_classes, levels_, throttle=False)

    def forward_level(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        x = self.stem(x, s)
        for stage in self.stages:
            if isinstance(stage, LevelBatchNorm):
                x = F.relu(stage(x, s))
            elif isinstance(stage, ThrottleConv):  # transition: 1×1 conv then 2×2 average pooling
                x = F.avg_pool2d(stage(x, s), 2)
            else:
                x = stage(x, s)
        x = F.relu(self.final_bn(x, s))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), s)


@register_model
def densenet_bc_100(**kwargs) -> CifarDenseNet:
    """DenseNet-BC-100, growth 12 (0.8 M parameters), 16 layers per block."""
    return CifarDenseNet(100, **{"growth": 12, **kwargs})


@register_model
def densenet_bc_52(**kwargs) -> CifarDenseNet:
    """DenseNet-BC-52, growth 12, 8 layers per block (one per level at 8 levels): quicker to train."""
    return CifarDenseNet(52, **{"growth": 12, **kwargs})
