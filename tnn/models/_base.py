"""The base class every throttleable model derives from: u validation, input checks, exact cost."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from itertools import chain

import torch
from torch import nn

from tnn.layers import (
    DEFAULT_NUM_LEVELS,
    STRATEGIES,
    CostCounter,
    Setting,
    ThrottleConv,
    Watch,
    check_levels,
    make_levels,
    snap_level,
)

__all__ = ["ThrottleNet", "default_normalization"]

_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_FASHION_MEAN, _FASHION_STD = (0.2860,), (0.3530,)


def default_normalization(in_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """CIFAR-10 statistics for RGB, Fashion-MNIST for grayscale, 0.5 ± 0.25 otherwise."""
    if in_channels == 3:
        return _CIFAR10_MEAN, _CIFAR10_STD
    if in_channels == 1:
        return _FASHION_MEAN, _FASHION_STD
    return (0.5,) * in_channels, (0.25,) * in_channels


class ThrottleNet(nn.Module):
    """A network whose compute is set per call by the utilization ``u`` in (0, 1].

    ``u`` is snapped *up* to the nearest level; the level selects the active channels (width),
    the active residual/dense components (depth) or both, as chosen by ``strategy``. Subclasses
    build their layers from :attr:`width_levels` and :attr:`depth_levels` and implement
    :meth:`forward_level`.
    """

    #: strategies a family supports; subclasses narrow this
    strategies: tuple[str, ...] = STRATEGIES

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        num_levels: int | None,
        levels: Sequence[float] | None,
        strategy: str,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
    ) -> None:
        super().__init__()
        if strategy not in self.strategies:
            raise ValueError(f"{type(self).__name__} supports strategies {list(self.strategies)}, got {strategy!r}")
        if levels is not None and num_levels is not None:
            raise ValueError("give either levels or num_levels, not both")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self._levels = (
            check_levels(levels)
            if levels is not None
            else make_levels(DEFAULT_NUM_LEVELS if num_levels is None else num_levels)
        )
        self.strategy = strategy
        self.num_classes = num_classes
        self.input_shape = tuple(int(d) for d in input_shape)
        n = len(self._levels)
        self.width_levels = self._levels if "width" in strategy else (1.0,) * n
        self.depth_levels = self._levels if "depth" in strategy else (1.0,) * n
        c = self.input_shape[0]
        default_mean, default_std = default_normalization(c)
        mean, std = tuple(mean or default_mean), tuple(std or default_std)
        try:
            values = [float(v) for v in mean + std if not isinstance(v, bool)]
        except (TypeError, ValueError):
            values = []
        if (
            len(mean) != c
            or len(std) != c
            or len(values) != 2 * c
            or not all(map(math.isfinite, values))
            or min(values[c:]) <= 0
        ):
            raise ValueError(f"mean/std need {c} finite numbers each (std > 0), got mean={mean}, std={std}")
        stats_shape = (1, c) + (1,) * (len(self.input_shape) - 1)
        self.register_buffer("mean", torch.tensor(values[:c]).reshape(stats_shape), persistent=False)
        self.register_buffer("std", torch.tensor(values[c:]).reshape(stats_shape), persistent=False)
        # set by tnn.create_model so that a checkpoint can rebuild the model
        self.arch: str = type(self).__name__
        self.model_kwargs: dict = {}
        self._range_checked = False  # the first forward call looks at the input's scale (see check_input)
        self._plans: dict[int, tuple[Watch, Callable[[torch.Tensor], torch.Tensor]]] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_plans": {}}  # caches are rebuilt, never copied or pickled

    @property
    def levels(self) -> tuple[float, ...]:
        """The operating points, ascending; the last is 1.0."""
        return self._levels

    def level_index(self, u: object) -> int:
        """Index of the level that ``u`` runs (snapped up); ValueError for u outside (0, 1]."""
        return snap_level(u, self._levels)

    def snap(self, u: object) -> float:
        """The level that ``u`` runs."""
        return self._levels[self.level_index(u)]

    def check_input(self, x: object) -> None:
        """Refuse anything but a float batch of the shape this model was built for."""
        weights = next(self.parameters(), None)
        if isinstance(x, torch.Tensor) and x.shape[1:] == self.input_shape and x.is_floating_point():
            if not self._range_checked:
                self._check_scale(x)
            if weights is None or x.dtype == weights.dtype or torch.is_autocast_enabled(x.device.type):
                return
            raise ValueError(
                f"{self.arch}'s weights are {weights.dtype}, its input is {x.dtype}: pass x.to({weights.dtype}) "
                f"(or convert the model, e.g. model.to({x.dtype}))"
            )
        shape = "×".join(str(d) for d in self.input_shape)
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{self.arch} expects a float tensor of shape N×{shape}, got {type(x).__name__}")
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"{self.arch} expects input of shape N×{shape}, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(
                f"{self.arch} expects float images in [0, 1], got dtype {x.dtype} (use x.float() / 255 for uint8)"
            )

    def _check_scale(self, x: torch.Tensor) -> None:
        """Warn once per model if its first input looks like 0-255 pixels, not [0, 1] (a device sync, once)."""
        if torch.compiler.is_compiling() or x.numel() == 0:
            return
        if x.is_cuda and torch.cuda.is_current_stream_capturing():  # no sync inside a CUDA graph capture
            return
        self._range_checked = True
        top = float(x.detach().abs().amax())
        if top > 10.0:  # [0, 1] images, even standardised ones, stay far below; 0-255 pixels do not
            warnings.warn(
                f"{self.arch} got input values up to {top:g}: it expects float images in [0, 1] and normalises "
                "them itself; divide 0-255 pixels by 255 (x.float() / 255)",
                UserWarning,
                stacklevel=6,  # the caller of model(x): _check_scale, check_input, forward, two nn.Module frames
            )

    def forward(
        self, x: torch.Tensor, u: float = 1.0, *, masked: bool = False, counter: CostCounter | None = None
    ) -> torch.Tensor:
        """Logits of ``x`` (float in [0, 1]) at utilization ``u``.

        ``masked=True`` runs the full-width reference with inactive channels zeroed (same result,
        no saving; for tests and benchmarks). ``counter`` records the FLOPs and parameters used.
        """
        level = self.level_index(u)
        self.check_input(x)
        return self.forward_index(x, level, masked=masked, counter=counter)

    def forward_index(
        self, x: torch.Tensor, level: int, *, masked: bool = False, counter: CostCounter | None = None
    ) -> torch.Tensor:
        """:meth:`forward` at level number ``level`` (an index into :attr:`levels`), ``x`` unchecked:
        the part of a call that ``torch.compile`` can trace whole, one graph per level."""
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        fast = not (masked or counter is not None or self.training or torch.is_grad_enabled())
        if fast:
            plan = self._plan(level)
            if plan is not None:
                return plan(x)
        return self.forward_level(x, Setting(level, masked, counter, fast))

    def build_plan(self, level: int) -> tuple[Callable[[torch.Tensor], torch.Tensor], Sequence[nn.Module]] | None:
        """Optional: the whole network at ``level`` as one function of normalised input, for eval-mode
        inference without autograd, and the modules whose tensors it captured (they are watched).

        It must compute what :meth:`forward_level` computes (up to float rounding). At batch 1 a
        narrow level is mostly Python overhead, so a flat function over folded weights is the
        difference between a real and a nominal speed-up. ``None``: run :meth:`forward_level`.
        """
        return None

    def _plan(self, level: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The cached plan for ``level``, rebuilt when anything it captured changed; None if unusable."""
        cached = self._plans.get(level)
        if cached is None or cached[0].changed():
            built = self.build_plan(level)
            if built is None:
                return None
            run, modules = built
            try:
                cached = self._plans[level] = (Watch.over(self, modules), run)
            except RuntimeError:  # inference tensors keep no version counter: never cache them
                return None
        return None if cached[0].hooked() else cached[1]

    def clear_inference_cache(self) -> None:
        """Drop the weights cached for eval-mode inference (to free memory, or after writing weights
        through ``.data``, which bypasses the version counters the cache checks)."""
        self._plans.clear()
        for module in self.modules():
            if isinstance(module, ThrottleConv):
                module.clear_cache()

    def forward_level(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        raise NotImplementedError

    def _count_shape(self, input_shape: Sequence[int] | None) -> tuple[int, ...]:
        """``input_shape`` checked: the model's channels and rank, any positive spatial size."""
        if input_shape is None:
            return self.input_shape
        shape = tuple(input_shape)
        own = "×".join(map(str, self.input_shape))
        if (
            len(shape) != len(self.input_shape)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
            or shape[0] != self.input_shape[0]
        ):
            raise ValueError(
                f"{self.arch}: input_shape must be {len(own.split('×'))} positive integers starting with "
                f"{self.input_shape[0]} channels (like {own}), got {input_shape!r}"
            )
        return shape

    def _count(self, u: float, input_shape: Sequence[int] | None) -> CostCounter:
        """Run the sliced forward on meta tensors (no compute, no side effects) and count.

        The network runs through :class:`_AnyShape`, so the count can be taken at an input shape
        other than the one :meth:`forward` accepts: every family ends in a global pool.
        """
        level = self.level_index(u)
        shape = self._count_shape(input_shape)
        meta = {
            f"net.{name}": torch.empty_like(t, device="meta")
            for name, t in chain(self.named_parameters(), self.named_buffers())
        }
        counter = CostCounter()
        x = torch.empty((2, *shape), device="meta")  # batch 2: BatchNorm refuses one value per channel
        try:
            with torch.no_grad():
                torch.func.functional_call(_AnyShape(self), meta, (x, level, counter))
        except RuntimeError as err:
            if shape == self.input_shape:
                raise
            size = "×".join(map(str, shape))
            raise ValueError(f"{self.arch} cannot run at input {size}: {err}") from None
        return counter

    def flops(self, u: float = 1.0, input_shape: Sequence[int] | None = None) -> int:
        """FLOPs per sample of ``self(x, u)`` (multiply-add = 2), as FlopCounterMode counts them.

        ``input_shape`` (default: :attr:`input_shape`) counts them at another spatial (or temporal)
        size with the same channels — what the same layers cost on, e.g., 28×28 instead of 32×32.
        """
        return self._count(u, input_shape).flops

    def params(self, u: float = 1.0) -> int:
        """Parameters the network uses at ``u`` (sliced weights and that level's norms only)."""
        return self._count(u, None).params


class _AnyShape(nn.Module):
    """``net`` without its input-shape check, for counting cost at another input size (on meta tensors)."""

    def __init__(self, net: ThrottleNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, level: int, counter: CostCounter) -> torch.Tensor:
        x = (x - self.net.mean) / self.net.std
        return self.net.forward_level(x, Setting(level, counter=counter))
