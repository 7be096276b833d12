"""Reward budgets for the throttle environment: small objects that turn a step's ``info`` into a reward.

Any callable ``f(info) -> float`` is a reward. These optional hooks let one also act as a budget:

=========================  ==================================================================
``reset(rng=None)``        called at every episode start; ``rng`` (the env's ``np_random``) is
                           passed when the signature takes it, so per-episode draws are seeded
``context_value()``        float in [0, 1] shown in ``obs["context"][3]`` (λ or budget rate)
``budget_left()``          fraction in [0, 1] shown in ``obs["context"][0]`` and ``info``
``terminated``             attribute read after each call; True ends the episode
=========================  ==================================================================

The built-ins below work on scalars (one env) and on arrays (:class:`envs.vec.ThrottleVecEnv`,
through ``batch(n)`` and ``reset_envs(ids, rngs)``), with the same arithmetic, so both give the
same rewards. ``info`` keys they read: ``correct``, ``confidence``, ``cost`` (the env's cost
metric as a fraction of its u=1 cost), ``cost_energy``, ``cost_latency``, ``cost_flops`` and
``episode_length``.

A parameter given as ``(low, high)`` is drawn uniformly per episode from the env's ``np_random``
and shown in the context, so that one policy can learn to serve every value (budget-conditioned).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "REWARDS",
    "Deadline",
    "HardBudget",
    "LinearTradeoff",
    "PaperReward",
    "RewardError",
    "make_reward",
]

METRIC_KEYS = {None: "cost", "energy": "cost_energy", "latency": "cost_latency", "flops": "cost_flops"}


class RewardError(ValueError):
    """A reward name, parameter or value the environment cannot use."""


def _param_range(value: float | Sequence[float], name: str, low: float = 0.0) -> tuple[float, float]:
    bad = RewardError(
        f"{name} must be a finite number >= {low:g} or a range (low, high) with low <= high, got {value!r}"
    )
    try:
        lo, hi = (value, value) if np.isscalar(value) else tuple(value)
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        raise bad from None
    if isinstance(value, str) or not (np.isfinite(lo) and np.isfinite(hi) and low <= lo <= hi):
        raise bad
    return lo, hi


def _metric_key(metric: str | None) -> str:
    if metric not in METRIC_KEYS:
        raise RewardError(f"unknown cost metric {metric!r}; choose one of {[m for m in METRIC_KEYS if m]} or None")
    return METRIC_KEYS[metric]


class _Builtin:
    """Shared machinery: one episode parameter (fixed or drawn per episode), scalar or per-env state."""

    param_name = "value"

    def __init__(self, value: float | Sequence[float], metric: str | None, low: float = 0.0) -> None:
        self.low, self.high = _param_range(value, getattr(self, "param_label", self.param_name), low)
        self.key = _metric_key(metric)
        self.metric = metric
        self.value: Any = self.low
        self.terminated: Any = False
        self.vector = False  # True in a batch(n) copy: state and info values are arrays

    def _draw(self, rng: np.random.Generator | None) -> float:
        if self.high == self.low:
            return self.low
        if rng is None:
            raise RewardError(f"{type(self).__name__} draws {self.param_name} per episode: reset it with rng=")
        return float(rng.uniform(self.low, self.high))

    def _clear(self, ids: Any, n: int | None = None) -> None:
        """Reset per-episode state: scalar when ids is None, fresh arrays when n is given, else at ids."""

    def reset(self, rng: np.random.Generator | None = None) -> None:
        self.value = self._draw(rng)
        self.terminated = False
        self._clear(None)

    def batch(self, n: int) -> _Builtin:
        """A copy holding the state of ``n`` environments in arrays (for the vectorized env)."""
        out = copy.copy(self)
        out.vector = True
        out.value = np.full(n, self.low)
        out.terminated = np.zeros(n, bool)
        out._clear(slice(None), n)
        return out

    def reset_envs(self, ids: Sequence[int], rngs: Sequence[np.random.Generator]) -> None:
        for i in ids:
            self.value[i] = self._draw(rngs[i])
        self.terminated[ids] = False
        self._clear(ids)

    def context_value(self) -> Any:
        """The episode parameter scaled into [0, 1] (by max(high, 1))."""
        return self.value / max(self.high, 1.0)

    def budget_left(self) -> Any:
        return 1.0

    def __repr__(self) -> str:
        value = self.low if self.low == self.high else (self.low, self.high)
        return f"{type(self).__name__}({self.param_name}={value!r}, metric={self.metric!r})"


class LinearTradeoff(_Builtin):
    """``correct − λ · cost``: accuracy against the cost fraction (1 = the u=1 cost), weight λ."""

    param_name = "lam"

    def __init__(self, lam: float | Sequence[float] = 0.5, metric: str | None = None) -> None:
        super().__init__(lam, metric)

    def __call__(self, info: dict) -> Any:
        return info["correct"] - self.value * info[self.key]


class HardBudget(_Builtin):
    """A per-episode budget of ``rate × episode_length`` u=1 costs; +1 per correct answer.

    Spending past the budget either costs ``penalty`` per unit of overspend (``overspend="penalty"``)
    or ends the episode with reward ``-penalty`` (``overspend="terminate"``).
    """

    param_name = "rate"
    param_label = "the budget rate (env kwarg budget=, or reward_kwargs rate)"

    def __init__(
        self,
        rate: float | Sequence[float] = 0.5,
        overspend: str = "terminate",
        penalty: float = 1.0,
        metric: str | None = None,
    ) -> None:
        if overspend not in ("penalty", "terminate"):
            raise RewardError(f"overspend must be 'penalty' or 'terminate', got {overspend!r}")
        if not np.isfinite(penalty) or penalty < 0:
            raise RewardError(f"penalty must be finite and >= 0, got {penalty!r}")
        super().__init__(rate, metric)
        if self.low <= 0:
            raise RewardError(
                f"the budget rate (env kwarg budget=, or reward_kwargs rate) must be > 0: a fraction of the u=1 "
                f"cost per step, e.g. 0.5; got {rate!r}"
            )
        self.overspend, self.penalty = overspend, float(penalty)
        self._clear(None)

    def _clear(self, ids: Any, n: int | None = None) -> None:
        if ids is None:
            self.spent, self.total = 0.0, np.inf
        elif n is not None:
            self.spent, self.total = np.zeros(n), np.full(n, np.inf)
        else:
            self.spent[ids], self.total[ids] = 0.0, np.inf

    def __call__(self, info: dict) -> Any:
        before = self.spent
        self.spent = before + info[self.key]
        self.total = self.value * info["episode_length"]
        if self.vector:
            if self.overspend == "terminate":
                self.terminated = self.spent > self.total
                return np.where(self.terminated, -self.penalty, info["correct"] * 1.0)
            return info["correct"] - self.penalty * np.maximum(0.0, self.spent - np.maximum(before, self.total))
        if self.overspend == "terminate":
            self.terminated = self.spent > self.total
            return -self.penalty if self.terminated else float(info["correct"])
        return info["correct"] - self.penalty * max(0.0, self.spent - max(before, self.total))

    def budget_left(self) -> Any:
        if self.vector:
            return np.clip(1.0 - self.spent / self.total, 0.0, 1.0)
        return min(1.0, max(0.0, 1.0 - self.spent / self.total))


class Deadline(_Builtin):
    """Per-input deadline: +1 for a correct answer in time, 0 if wrong, ``-penalty`` if late.

    ``deadline`` is a latency fraction of the u=1 call (load included), so it carries across devices.
    """

    param_name = "deadline"

    def __init__(self, deadline: float | Sequence[float] = 0.6, penalty: float = 1.0) -> None:
        super().__init__(deadline, "latency")
        if self.low <= 0:
            raise RewardError(f"deadline must be > 0, got {deadline!r}")
        self.penalty = float(penalty)

    def __call__(self, info: dict) -> Any:
        if self.vector:
            return np.where(info[self.key] <= self.value, info["correct"] * 1.0, -self.penalty)
        return float(info["correct"]) if info[self.key] <= self.value else -self.penalty


class PaperReward(_Builtin):
    """The TNN paper's reward: correct e^(1−ρ)·(2−ρ)², wrong −(confidence + 0.5)·(ρ + 1.5); ρ the cost."""

    def __init__(self, metric: str | None = None) -> None:
        super().__init__(0.0, metric)

    def __call__(self, info: dict) -> Any:
        rho = info[self.key]
        if self.vector:
            right = np.exp(1.0 - rho) * (2.0 - rho) ** 2
            return np.where(info["correct"], right, -(info["confidence"] + 0.5) * (rho + 1.5))
        if info["correct"]:
            return math.exp(1.0 - rho) * (2.0 - rho) ** 2
        return -(info["confidence"] + 0.5) * (rho + 1.5)

    def __repr__(self) -> str:
        return f"PaperReward(metric={self.metric!r})"


REWARDS: dict[str, Callable[..., Any]] = {
    "linear": LinearTradeoff,
    "budget": HardBudget,
    "deadline": Deadline,
    "paper": PaperReward,
    "conditioned": functools.partial(LinearTradeoff, lam=(0.0, 1.0)),
    "budget_conditioned": functools.partial(HardBudget, rate=(0.2, 1.0)),
}


def make_reward(reward: str | Callable[[dict], float], **kwargs: Any) -> Callable[[dict], float]:
    """A reward object from a registered name (with its keyword arguments), an import spec, or a callable as is.

    An import spec ``"module:attr"`` (as gymnasium's entry points) names your own reward, so that it
    works wherever a name does — ``tnn train-controller --reward`` and the ``eval_env.json`` a
    controller is evaluated with: a class there is instantiated with the keyword arguments
    (``reward_kwargs``), any other callable is the reward itself.
    """
    if isinstance(reward, str):
        if ":" in reward:
            return _imported_reward(reward, kwargs)
        if reward not in REWARDS:
            raise RewardError(
                f"unknown reward {reward!r}; choose one of {', '.join(REWARDS)}, "
                "name your own as 'module:attr', or pass a callable"
            )
        try:
            return REWARDS[reward](**kwargs)
        except TypeError as err:
            raise RewardError(f"reward {reward!r}: {err}") from None
    if not callable(reward):
        raise RewardError(
            f"reward must be a name ({', '.join(REWARDS)}), 'module:attr' or a callable f(info) -> float, "
            f"got {reward!r}"
        )
    if kwargs:
        raise RewardError("reward_kwargs apply to a named reward; configure your callable yourself")
    return reward


def import_spec(spec: str, what: str, error: type[ValueError] = ValueError) -> Any:
    """The object an import spec ``"module:attr"`` names (``attr`` may be dotted), imported; ``error``
    (a ValueError) saying what is wrong — a malformed spec, a module not on the path, no such
    attribute — prefixed with ``what`` (e.g. ``"reward"``). Shared by rewards and the controllers'
    features extractors of your own."""
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or ":" in attr:
        raise error(f"{what} {spec!r}: an import spec is 'module:attr', e.g. 'my_rewards:EnergyBudget'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise error(
            f"{what} {spec!r}: cannot import {module_name!r} ({err}); put it on the Python path "
            f"(e.g. PYTHONPATH=. when {module_name.replace('.', '/')}.py is in this directory)"
        ) from None
    try:
        for part in attr.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise error(f"{what} {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    return target


def _imported_reward(spec: str, kwargs: dict[str, Any]) -> Callable[[dict], float]:
    """The reward an import spec ``"module:attr"`` names; RewardError saying what is wrong if none."""
    import inspect

    target = import_spec(spec, "reward", RewardError)
    if inspect.isclass(target):
        try:
            target = target(**kwargs)
        except TypeError as err:
            raise RewardError(f"reward {spec!r}: {err}") from None
    elif kwargs:
        raise RewardError(
            f"reward {spec!r} is a function, not a class: reward_kwargs {sorted(kwargs)} cannot configure it"
        )
    if not callable(target):
        raise RewardError(
            f"reward {spec!r} is not callable (a reward is f(info) -> float); got {type(target).__name__}"
        )
    return target
