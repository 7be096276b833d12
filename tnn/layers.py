"""Throttleable building blocks: layers that *slice* their weights to the active channels.

A throttled network never multiplies inactive channels by zero: at a lower level its convolutions
run with fewer output (and input) channels, so the narrow network really is smaller. Every layer
takes the active level explicitly through a :class:`Setting` passed down the forward call; there
is no global or module-level width state.

The level → channel-count rule (:func:`active_channels`), used by every width-throttled layer:

* a layer with ``total`` channels and ``n`` levels rounds its count *up* to a multiple ``m``, the
  largest of 8, 4, 2, 1 with ``total >= m * n`` — wide layers get hardware-friendly multiples of 8,
  narrow ones a finer grain so that every level still gets its own count;
* count(u) = clamp(ceil(u * total / m) * m, m, total), after ``u`` has been snapped up to a level.

Channels are always a prefix (the first ``count`` channels), so a lower level's channels are a
subset of a higher level's (nested), and the count never decreases with ``u`` (monotone).

``masked=True`` in a :class:`Setting` runs the *reference* execution that the paper's public code
uses: everything computed at full width, inactive channels zeroed. It exists to prove that slicing
computes exactly the throttled function (the tests compare the two) and to show in the benchmark
that masking saves nothing. Never use it for real work.

Inference fast path. In eval mode without autograd (``Setting.fast``), :func:`conv_bn` runs a
convolution and the BatchNorm after it as *one* convolution whose weights have the norm folded in
(``w·γ/σ``, ``β − μ·γ/σ``), sliced and made contiguous once per level and cached on the
convolution; a family may also flatten a whole level into one function over such weights
(``ThrottleNet.build_plan``). At batch 1 a narrow level is a few hundred microseconds of
arithmetic, so per-layer Python overhead decides its latency. Results equal the layer-by-layer
path up to float rounding. A :class:`Watch` rebuilds a cached entry when any module or tensor it
came from is replaced, changed in place (``_version``: optimizer steps, ``load_state_dict``,
training-mode BatchNorm forwards through ``num_batches_tracked``), moved (``.to``: storage
address) or switched between train and eval, and steps aside while a forward hook is registered
on a module it would skip. In-place writes through ``.data`` bypass version counters: call
``ThrottleNet.clear_inference_cache`` after those. Caches are plain attributes: never in the
state dict, never copied or pickled.
"""

from __future__ import annotations

import itertools
import math
import numbers
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_NUM_LEVELS",
    "STRATEGIES",
    "CostCounter",
    "LevelBatchNorm",
    "Setting",
    "ThrottleConv",
    "ThrottleLinear",
    "Watch",
    "active_channels",
    "active_components",
    "channel_multiple",
    "conv_bn",
    "fold_conv_bn",
    "make_levels",
    "snap_level",
]

DEFAULT_NUM_LEVELS = 8
STRATEGIES = ("width", "depth", "width+depth")


def make_levels(num_levels: int = DEFAULT_NUM_LEVELS) -> tuple[float, ...]:
    """Evenly spaced levels 1/n, 2/n, ..., 1 (ascending, last is exactly 1.0)."""
    if not isinstance(num_levels, int) or isinstance(num_levels, bool) or num_levels < 1:
        raise ValueError(f"num_levels must be a positive integer, got {num_levels!r}")
    return tuple((i + 1) / num_levels for i in range(num_levels))


def check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """Validate user-given levels: strictly ascending, in (0, 1], ending at 1.0."""
    out = tuple(float(v) for v in levels)
    if not out or out[-1] != 1.0 or any(not (0.0 < v <= 1.0) for v in out):
        raise ValueError(f"levels must lie in (0, 1] and end with 1.0, got {list(levels)}")
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ValueError(f"levels must be strictly ascending, got {list(levels)}")
    return out


def snap_level(u: object, levels: Sequence[float]) -> int:
    """Index of the smallest level >= u. ``u`` must be a real number in (0, 1]."""
    if isinstance(u, torch.Tensor):
        if u.numel() != 1:
            raise ValueError(f"u must be a scalar, got a tensor of shape {tuple(u.shape)}")
        u = u.item()
    if isinstance(u, bool) or not isinstance(u, numbers.Real):
        raise ValueError(f"u must be a real number in (0, 1], got {u!r}")
    value = float(u)
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"u must be in (0, 1], got {value!r}")
    for i, level in enumerate(levels):
        if value <= level + 1e-9:
            return i
    return len(levels) - 1  # unreachable: levels end at 1.0


def channel_multiple(total: int, num_levels: int) -> int:
    """The rounding grain for a layer of ``total`` channels (see the module docstring)."""
    for m in (8, 4, 2):
        if total >= m * num_levels:
            return m
    return 1


def active_channels(u: float, total: int, num_levels: int) -> int:
    """Active channel count of a ``total``-channel layer at level ``u`` (already snapped)."""
    m = channel_multiple(total, num_levels)
    count = math.ceil(u * total / m - 1e-9) * m
    return max(m, min(total, count))


def active_components(levels: Sequence[float], num_components: int) -> list[tuple[bool, ...]]:
    """Depth gating: for each component (in priority order) whether it runs at each level.

    At level u the first ceil(u * B) of B components run (at least one), so the active set is
    nested and grows with u; with B >= len(levels) every level runs a different number.
    """
    counts = [max(1, math.ceil(u * num_components - 1e-9)) for u in levels]
    return [tuple(rank < c for c in counts) for rank in range(num_components)]


@dataclass
class CostCounter:
    """Accumulates the FLOPs (multiply-add = 2) and parameters that one forward call used."""

    flops: int = 0
    params: int = 0
    modules: set[int] = field(default_factory=set, repr=False)  # ids of the modules that ran

    def add(self, flops: int, params: Sequence[torch.Tensor | None], owner: nn.Module) -> None:
        self.flops += int(flops)
        if id(owner) not in self.modules:  # a module reused within one call counts its weights once
            self.modules.add(id(owner))
            self.params += sum(p.numel() for p in params if p is not None)


@dataclass
class Setting:
    """What one forward call runs: the level index, the execution mode, an optional counter."""

    level: int
    masked: bool = False
    counter: CostCounter | None = None
    fast: bool = False  # eval-mode inference without autograd: cached, BN-folded weights allowed


def _channel_mask(x: torch.Tensor, count: int) -> torch.Tensor:
    """Zero every channel of ``x`` (dim 1) from ``count`` on — the masked reference only."""
    if count >= x.shape[1]:
        return x
    shape = [1] * x.dim()
    shape[1] = x.shape[1]
    mask = torch.zeros(shape, dtype=x.dtype, device=x.device)
    mask[:, :count] = 1
    return x * mask


class ThrottleConv(nn.Module):
    """Conv2d/Conv3d whose weight is sliced to the active channels.

    The input channel count is read from the incoming tensor (it is the previous layer's active
    width); the output count per level is fixed at construction. With ``groups > 1`` and
    ``throttle_groups=True`` the throttled unit is a whole group (a ResNeXt cardinality path):
    the first g groups run, each with its full per-group width.
    """

    def __init__(
        self,
        dim: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        levels: Sequence[float],
        *,
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] = 0,
        groups: int = 1,
        bias: bool = False,
        throttle: bool = True,
        out_counts: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels}, {out_channels}) must be divisible by groups={groups}")
        ks = (kernel_size,) * dim if isinstance(kernel_size, int) else tuple(kernel_size)
        self.dim, self.stride, self.padding, self.groups = dim, stride, padding, groups
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *ks))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        n = len(levels)
        if groups > 1 and throttle:
            self.active_groups = tuple(active_channels(u, groups, n) for u in levels)
            self.out_counts = tuple(g * (out_channels // groups) for g in self.active_groups)
        else:
            self.active_groups = (groups,) * n
            self.out_counts = tuple(active_channels(u, out_channels, n) if throttle else out_channels for u in levels)
        if out_counts is not None:  # a layer feeding a grouped conv follows its group boundaries
            if groups > 1 or len(out_counts) != n or any(not 0 < c <= out_channels for c in out_counts):
                raise ValueError(f"out_counts {out_counts} do not fit {out_channels} channels and {n} levels")
            self.out_counts = tuple(out_counts)
        self._folded: dict[tuple[int, int], _Folded] = {}  # (level, input channels) -> conv with BN folded in

    def sliced(self, level: int, in_ch: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """Weight and bias views for ``in_ch`` input channels at ``level``, and the active groups."""
        groups, out_ch = self.active_groups[level], self.out_counts[level]
        if in_ch > self.in_channels or (self.groups > 1 and in_ch != groups * (self.in_channels // self.groups)):
            raise ValueError(f"{type(self).__name__}: got {in_ch} input channels at level {level}")
        bias = None if self.bias is None else self.bias[:out_ch]
        return self.weight[:out_ch, : in_ch // groups], bias, groups

    def clear_cache(self) -> None:
        """Drop the cached BN-folded weights (they are rebuilt on the next fast call)."""
        self._folded.clear()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_folded": {}}  # caches are rebuilt, never copied or pickled

    def forward(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        conv = F.conv2d if self.dim == 2 else F.conv3d
        if s.masked:
            out = conv(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
            return _channel_mask(out, self.out_counts[s.level])
        weight, bias, groups = self.sliced(s.level, x.shape[1])
        out = conv(x, weight, bias, self.stride, self.padding, 1, groups)
        if s.counter is not None:
            per_sample = out.numel() // out.shape[0]
            s.counter.add(2 * per_sample * weight[0].numel(), (weight, bias), self)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel={tuple(self.weight.shape[2:])}, "
            f"stride={self.stride}, groups={self.groups}, out_counts={self.out_counts}"
        )


class ThrottleLinear(nn.Module):
    """Linear layer sliced to the active input features and (optionally) output features."""

    def __init__(self, in_features: int, out_features: int, levels: Sequence[float], *, throttle: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        lin = nn.Linear(in_features, out_features)  # PyTorch's default initialisation
        self.weight, self.bias = lin.weight, lin.bias
        n = len(levels)
        self.out_counts = tuple(active_channels(u, out_features, n) if throttle else out_features for u in levels)

    def forward(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        if s.masked:
            return _channel_mask(F.linear(x, self.weight, self.bias), self.out_counts[s.level])
        out_f, in_f = self.out_counts[s.level], x.shape[1]
        if in_f > self.in_features:
            raise ValueError(f"{type(self).__name__}: got {in_f} input features, at most {self.in_features}")
        weight, bias = self.weight[:out_f, :in_f], self.bias[:out_f]
        out = F.linear(x, weight, bias)
        if s.counter is not None:
            s.counter.add(2 * out_f * in_f, (weight, bias), self)
        return out

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, out_counts={self.out_counts}"


class LevelBatchNorm(nn.Module):
    """BatchNorm with its own statistics and affine parameters for each level.

    A narrower (or shallower) network sees different activation statistics, so sharing one set
    across levels hurts every level but one. Level i's norm has exactly ``counts[i]`` channels.
    """

    def __init__(self, counts: Sequence[int], dim: int = 2) -> None:
        super().__init__()
        norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dim]
        self.counts = tuple(counts)
        self.norms = nn.ModuleList(norm(c) for c in self.counts)

    def forward(self, x: torch.Tensor, s: Setting) -> torch.Tensor:
        norm, count = self.norms[s.level], self.counts[s.level]
        if s.masked:
            if count >= x.shape[1]:
                return norm(x)
            return torch.cat([norm(x[:, :count]), torch.zeros_like(x[:, count:])], dim=1)
        if x.shape[1] != count:
            raise ValueError(f"{type(self).__name__}: got {x.shape[1]} channels at level {s.level}, expected {count}")
        if s.counter is not None:
            s.counter.add(0, (norm.weight, norm.bias), self)
        return norm(x)


_version_of = operator.attrgetter("_version")
_training_of = operator.attrgetter("training")


def _global_hooks() -> tuple[dict, ...]:
    hooks = ("_global_forward_hooks", "_global_forward_pre_hooks")
    return tuple(getattr(nn.modules.module, name, {}) for name in hooks)


class Watch:
    """A snapshot of registered modules and tensors that cached inference weights were built from.

    ``slots`` are ``(registry, name, object)`` triples read straight from modules' ``_modules``,
    ``_parameters`` and ``_buffers`` dicts; for every tensor among them the version counter and
    storage address are recorded too, and for every one of ``modules`` its training flag and (for
    :meth:`hooked`) its forward hooks. The checks run as C-level ``map`` calls on every cached
    call: ``nn.Module.__getattr__`` alone costs about a microsecond, as much as a narrow
    convolution's arithmetic at batch 1.
    """

    def __init__(
        self,
        slots: Sequence[tuple[dict, str, object]],
        modules: Sequence[nn.Module] = (),
    ) -> None:
        self._dicts, self._names, self._objects = (list(col) for col in zip(*slots, strict=True))
        self._tensors = [obj for obj in self._objects if isinstance(obj, torch.Tensor)]
        self._versions = list(map(_version_of, self._tensors))  # RuntimeError for inference tensors
        self._addresses = list(map(torch.Tensor.data_ptr, self._tensors))
        self._modules = list(modules)
        self._modes = list(map(_training_of, self._modules))
        self._hooks = [d for m in modules for d in (m._forward_hooks, m._forward_pre_hooks)] + list(_global_hooks())

    @classmethod
    def over(cls, root: nn.Module, modules: Sequence[nn.Module]) -> Watch:
        """Watch ``modules`` (their own tensors, modes and hooks) and every link from ``root`` down to them."""
        parent = {id(child): (m, name) for m in root.modules() for name, child in m._modules.items()}
        slots, seen, chain = [], set(), []
        for module in modules:
            slots += [(reg, name, t) for reg in (module._parameters, module._buffers) for name, t in reg.items()]
            node = module
            while id(node) in parent and id(node) not in seen:
                seen.add(id(node))
                chain.append(node)
                up, name = parent[id(node)]
                slots.append((up._modules, name, node))
                node = up
        return cls(slots, chain)

    def changed(self) -> bool:
        """Whether any watched object was replaced, written in place or switched between train and eval.

        A training-mode BatchNorm forward updates the running statistics without bumping their
        ``_version``, but it does bump ``num_batches_tracked``'s, which is watched with them."""
        try:
            return not (
                all(map(operator.is_, map(dict.get, self._dicts, self._names), self._objects))
                and list(map(_version_of, self._tensors)) == self._versions
                and list(map(torch.Tensor.data_ptr, self._tensors)) == self._addresses
                and list(map(_training_of, self._modules)) == self._modes
            )
        except RuntimeError:
            return True

    def hooked(self) -> bool:
        """Whether a forward hook would expect to see one of the watched modules run."""
        return any(map(len, self._hooks))


class _Folded(NamedTuple):
    """A convolution with the BatchNorm after it folded in: ``fn(x, *args)`` runs it."""

    fn: Callable[..., torch.Tensor]
    args: tuple  # weight, bias, stride, padding, dilation, groups
    watch: Watch


def fold_conv_bn(conv: ThrottleConv, bn: LevelBatchNorm, level: int, in_ch: int) -> _Folded | None:
    """``bn(conv(x))`` at ``level`` for ``in_ch`` input channels as one convolution with the norm folded
    in, cached on ``conv`` and rebuilt when stale; None where it does not apply (training-mode or
    statistics-free norm, parametrized or inference-mode weights, a forward hook, a CUDA graph capture)."""
    entry = conv._folded.get((level, in_ch))
    if entry is not None and not entry.watch.changed():
        return None if entry.watch.hooked() else entry
    norms = bn.norms
    norm = norms[level]
    if norm.training or norm.running_mean is None or norm.running_var is None:
        return None  # batch statistics: nothing to fold
    sources = (conv.weight, conv.bias, norm.weight, norm.bias)
    if any(a is not b for a, b in zip(sources, _registered(conv) + _registered(norm), strict=True)):
        return None  # a parametrization computes the weights: nothing fixed to cache
    if conv.weight.is_cuda and torch.cuda.is_current_stream_capturing():
        return None  # a graph capture records kernels without running them: build outside it
    slots = [(bn._modules, "norms", norms), (norms._modules, str(level), norm)]
    slots += [(reg, name, t) for m in (conv, norm) for reg in (m._parameters, m._buffers) for name, t in reg.items()]
    try:
        watch = Watch(slots, [conv, bn, norm])
    except RuntimeError:  # inference tensors keep no version counter: never cache them
        return None
    weight, bias, groups = conv.sliced(level, in_ch)
    dtype = torch.promote_types(weight.dtype, torch.float32)  # fold half-precision weights in float32
    with torch.no_grad():
        scale = torch.rsqrt(norm.running_var.to(dtype) + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight.to(dtype)
        mean = norm.running_mean.to(dtype)
        shift = (-mean if bias is None else bias.to(dtype) - mean) * scale
        if norm.bias is not None:
            shift = shift + norm.bias.to(dtype)
        view = (-1,) + (1,) * (weight.dim() - 1)
        folded_weight = (weight.to(dtype) * scale.reshape(view)).to(weight.dtype).contiguous()
        folded_bias = shift.to(weight.dtype).contiguous()
    fn = F.conv2d if conv.dim == 2 else F.conv3d
    entry = _Folded(fn, (folded_weight, folded_bias, conv.stride, conv.padding, 1, groups), watch)
    conv._folded[(level, in_ch)] = entry
    return None if watch.hooked() else entry


def _registered(module: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    return module._parameters.get("weight"), module._parameters.get("bias")


def conv_bn(conv: ThrottleConv, bn: LevelBatchNorm, x: torch.Tensor, s: Setting, *, relu: bool = False) -> torch.Tensor:
    """``bn(conv(x))``, then ReLU if asked: the conv-BN(-ReLU) unit every width-throttled family uses.

    With ``s.fast`` (eval mode, no autograd, neither masked nor counted) it is one convolution with
    the norm folded into cached weights (see the module docstring); otherwise exactly the two layers.
    """
    if s.fast:
        entry = fold_conv_bn(conv, bn, s.level, x.shape[1])
        if entry is not None:
            out = entry.fn(x, *entry.args)
            return out.relu_() if relu else out
    out = bn(conv(x, s), s)
    return F.relu(out) if relu else out
