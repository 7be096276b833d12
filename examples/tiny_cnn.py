"""A throttleable network of your own, in one module: a three-block CNN whose width follows u.

Import this module (or name it in ``$TNN_MODEL_MODULES``) and ``tinycnn`` is a model like the
shipped ones: ``tnn models tinycnn``, ``tnn pretrain --arch tinycnn --dataset fashion_mnist``, and a
checkpoint of it loads in ``tnn evaluate`` and in the env. See "A network of your own" in the README.

    TNN_MODEL_MODULES=tiny_cnn PYTHONPATH=examples tnn models tinycnn
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

import tnn
from tnn.layers import LevelBatchNorm, Setting, ThrottleConv, ThrottleLinear, conv_bn


class TinyCNN(tnn.ThrottleNet):
    """Three conv+BN+ReLU blocks (each followed by 2×2 max pooling) and a linear classifier.

    Every layer's channels are sliced to the level's share of its width (``self.width_levels``); the
    classifier's outputs are not throttled. The last layer is a :class:`ThrottleLinear`: the env's
    preview reads its input (the pooled features).
    """

    strategies = ("width",)

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        width: int = 32,
        num_levels: int | None = None,
        levels: Sequence[float] | None = None,
        strategy: str = "width",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__(
            input_shape=(in_channels, input_size, input_size),
            num_classes=num_classes,
            num_levels=num_levels,
            levels=levels,
            strategy=strategy,
            mean=mean,
            std=std,
        )
        layers: list[nn.Module] = []
        c = in_channels
        for out in (width, 2 * width, 4 * width):
            conv = ThrottleConv(2, c, out, 3, self.width_levels, padding=1)
            layers += [conv, LevelBatchNorm(conv.out_counts)]  # BatchNorm statistics per level
            c = out
        self.blocks = nn.ModuleList(layers)
        self.fc = ThrottleLinear(c, num_classes, self.width_levels, throttle=False)

    def forward_level(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        for i in range(0, len(self.blocks), 2):
            x = F.max_pool2d(conv_bn(self.blocks[i], self.blocks[i + 1], x, s, relu=True), 2, ceil_mode=True)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), s)


@tnn.register_model
def tinycnn(**kwargs) -> TinyCNN:
    """A three-block CNN, 32-64-128 channels at u=1 (``width=`` scales them)."""
    return TinyCNN(**kwargs)
