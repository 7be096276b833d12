"""Background load: a Markov-modulated factor that scales latency and energy, so context matters.

The chain stays in its state with probability ``1 - switch`` and otherwise jumps to a uniformly
drawn state (possibly the same), i.e. transition matrix ``(1 - switch)·I + switch/K``. That form
lets a whole episode's path be drawn with array operations (a jump's state holds until the next
jump), which the vectorized env needs, and it is still a proper Markov chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["MarkovLoad", "make_load"]


class MarkovLoad:
    """Load factors (>= 1: 1 is an idle device) visited by a Markov chain; one state per step."""

    def __init__(self, factors: Sequence[float] = (1.0, 1.5, 2.5), switch: float = 0.05) -> None:
        self.factors = np.asarray(factors, np.float64)
        if self.factors.ndim != 1 or len(self.factors) == 0 or not np.all(np.isfinite(self.factors)):
            raise ValueError(f"load factors must be a non-empty list of finite numbers, got {factors!r}")
        if np.any(self.factors <= 0):
            raise ValueError(f"load factors must be > 0, got {factors!r}")
        if not 0.0 <= switch <= 1.0:
            raise ValueError(f"switch probability must be in [0, 1], got {switch!r}")
        self.switch = float(switch)

    @property
    def max_factor(self) -> float:
        return float(self.factors.max())

    def path(self, rng: np.random.Generator, length: int) -> np.ndarray:
        """Factors for ``length`` consecutive steps, starting from a uniformly drawn state (one draw call)."""
        k = len(self.factors)
        draws = rng.random(2 * length + 1)
        states = np.minimum((draws[length:] * k).astype(np.intp), k - 1)  # [start, new state at each step]
        jumps = draws[:length] < self.switch
        last = np.where(jumps, np.arange(1, length + 1), 0)  # 0 points at the start state
        np.maximum.accumulate(last, out=last)
        return self.factors[states[last]]

    def __repr__(self) -> str:
        return f"MarkovLoad(factors={self.factors.tolist()}, switch={self.switch})"


def make_load(load: Any) -> MarkovLoad | None:
    """None (no load), "markov" (the default chain), a dict of MarkovLoad kwargs, or a MarkovLoad."""
    if load is None or isinstance(load, MarkovLoad):
        return load
    if load == "markov":
        return MarkovLoad()
    if isinstance(load, dict):
        unknown = sorted(set(load) - {"factors", "switch"})
        if unknown:
            raise ValueError(f"load takes the MarkovLoad arguments factors and switch, not {', '.join(unknown)}")
        return MarkovLoad(**load)
    if hasattr(load, "path") and hasattr(load, "max_factor"):
        return load
    raise ValueError(f"load must be None, 'markov', a dict of MarkovLoad arguments or a MarkovLoad, got {load!r}")
