"""CIFAR ResNets (He et al., 2016, section 4.2): 6n+2 layers, widths 16/32/64, option-A shortcuts.

Width throttles every convolution's channels (the classifier's inputs follow). Depth skips whole
basic blocks: a skipped block passes its (parameter-free, option-A) shortcut through, so even the
first block of a stage can be skipped. Blocks are ranked for skipping round-robin across stages
from the back (the first block of every stage is the last to go).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tnn.layers import (
    LevelBatchNorm,
    Setting,
    ThrottleConv,
    ThrottleLinear,
    active_components,
    conv_bn,
    fold_conv_bn,
)
from tnn.models._base import ThrottleNet
from tnn.models._registry import register_model

__all__ = ["BasicBlock", "CifarResNet"]


def option_a_shortcut(x: torch.Tensor, stride: int, channels: int) -> torch.Tensor:
    """Subsample by ``stride`` and zero-pad the channels at the end up to ``channels``."""
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    if channels > x.shape[1]:
        x = F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1]))
    return x


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus an option-A shortcut; skippable per level."""

    def __init__(self, in_planes: int, planes: int, stride: int, width_levels: Sequence[float], active: Sequence[bool]):
        super().__init__()
        self.stride, self.active = stride, tuple(active)
        self.conv1 = ThrottleConv(2, in_planes, planes, 3, width_levels, stride=stride, padding=1)
        self.bn1 = LevelBatchNorm(self.conv1.out_counts)
        self.conv2 = ThrottleConv(2, planes, planes, 3, width_levels, padding=1)
        self.bn2 = LevelBatchNorm(self.conv2.out_counts)

    def forward(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        channels = self.conv2.out_channels if s.masked else self.conv2.out_counts[s.level]
        shortcut = option_a_shortcut(x, self.stride, channels)
        if not self.active[s.level] and not s.masked:
            return shortcut  # x >= 0 (a ReLU output), so relu(0 + shortcut) == shortcut
        out = conv_bn(self.conv1, self.bn1, x, s, relu=True)
        out = conv_bn(self.conv2, self.bn2, out, s)
        if not self.active[s.level]:
            out = out * 0  # masked reference: compute the block, then discard it
        return F.relu(out + shortcut)


class CifarResNet(ThrottleNet):
    """ResNet-(6n+2) for 32×32 (or 28×28) images."""

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        widths: Sequence[int] = (16, 32, 64),
        num_levels: int | None = None,
        levels: Sequence[float] | None = None,
        strategy: str = "width",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        widths = tuple(widths)
        if not widths or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
            raise ValueError(f"CIFAR ResNet widths must be positive ints (channels per stage), got {list(widths)}")
        if any(b < a for a, b in itertools.pairwise(widths)):
            raise ValueError(
                f"CIFAR ResNet widths must be non-decreasing (the parameter-free option-A shortcut can pad "
                f"channels but not drop them), got {list(widths)}; e.g. (16, 32, 64)"
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
        n = (depth - 2) // 6
        wl = self.width_levels
        self.stem = ThrottleConv(2, in_channels, widths[0], 3, wl, padding=1)
        self.stem_bn = LevelBatchNorm(self.stem.out_counts)
        # importance rank of block b of stage st: b * stages + st (rank 0 runs at every level)
        gates = active_components(self.depth_levels, n * len(widths))
        blocks, in_planes = [], widths[0]
        for st, planes in enumerate(widths):
            for b in range(n):
                stride = 2 if st > 0 and b == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, wl, gates[b * len(widths) + st]))
                in_planes = planes
        self.blocks = nn.ModuleList(blocks)
        self.fc = ThrottleLinear(in_planes, num_classes, wl, throttle=False)

    def forward_level(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        x = conv_bn(self.stem, self.stem_bn, x, s, relu=True)
        for block in self.blocks:
            x = block(x, s)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), s)

    def build_plan(self, level: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[nn.Module]] | None:
        """``forward_level`` at ``level`` as one loop over folded convolutions (see ThrottleNet.build_plan)."""
        stem = fold_conv_bn(self.stem, self.stem_bn, level, self.input_shape[0])
        if stem is None:
            return None
        modules: list[nn.Module] = [self.stem, self.stem_bn.norms[level], self.fc]
        steps = []  # (stride, output channels, conv1, conv2), convs None for a skipped block
        channels = self.stem.out_counts[level]
        for block in self.blocks:
            out = block.conv2.out_counts[level]
            conv1 = conv2 = None
            if not block.active[level]:
                modules.append(block)  # skipped, but a hook on it must still see it run: watch its hooks
            else:
                conv1 = fold_conv_bn(block.conv1, block.bn1, level, channels)
                conv2 = fold_conv_bn(block.conv2, block.bn2, level, block.conv1.out_counts[level])
                if conv1 is None or conv2 is None:
                    return None
                modules += [block.conv1, block.bn1.norms[level], block.conv2, block.bn2.norms[level]]
            steps.append((block.stride, out, conv1, conv2))
            channels = out
        fc_weight = self.fc.weight[: self.fc.out_counts[level], :channels].contiguous()
        fc_bias = self.fc.bias[: self.fc.out_counts[level]]

        def run(x: torch.Tensor) -> torch.Tensor:
            x = stem.fn(x, *stem.args).relu_()
            for stride, out, conv1, conv2 in steps:
                shortcut = option_a_shortcut(x, stride, out)
                if conv1 is None:
                    x = shortcut
                    continue
                y = conv1.fn(x, *conv1.args).relu_()
                x = conv2.fn(y, *conv2.args).add_(shortcut).relu_()
            return F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), fc_weight, fc_bias)

        return run, modules


def _resnet(depth: int, **kwargs) -> CifarResNet:
    return CifarResNet(depth, **kwargs)


@register_model
def resnet8(**kwargs) -> CifarResNet:
    """ResNet-8 (0.08 M parameters): one block per stage; small enough to train on 2 CPU cores."""
    return _resnet(8, **kwargs)


@register_model
def resnet20(**kwargs) -> CifarResNet:
    """ResNet-20 (0.27 M parameters)."""
    return _resnet(20, **kwargs)


@register_model
def resnet32(**kwargs) -> CifarResNet:
    """ResNet-32 (0.46 M parameters)."""
    return _resnet(32, **kwargs)


@register_model
def resnet56(**kwargs) -> CifarResNet:
    """ResNet-56 (0.85 M parameters)."""
    return _resnet(56, **kwargs)


@register_model
def resnet110(**kwargs) -> CifarResNet:
    """ResNet-110 (1.7 M parameters)."""
    return _resnet(110, **kwargs)
