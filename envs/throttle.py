"""``tnn/Throttle-v0``: a pretrained throttleable network inside Gymnasium; the action is its utilization."""

from __future__ import annotations

import bisect
import inspect
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.load import make_load
from envs.rewards import RewardError, make_reward

__all__ = [
    "DEFAULT_PATHS",
    "OBSERVATIONS",
    "ThrottleDiscreteEnv",
    "ThrottleEnv",
    "charges",
    "draw_episode",
    "in_results",
    "resolve_checkpoint",
    "results_dir",
]

# The shipped defaults, relative to the results directory ($TNN_RESULTS or <repo>/results).
DEFAULT_PATHS = {
    "checkpoint": "models/fashion_mnist-vgg11-tnn/model.pt",
    "profile": "profiles/fashion_mnist-vgg11-cpu-b1.json",
}
OBSERVATIONS = ("features", "pixels", "none")
ACTION_MAPS = ("snap", "bins")
MODES = ("table", "live")
COST_METRICS = ("energy", "latency", "flops")
CONTEXT = ("budget_left", "steps_left", "load", "episode_parameter", "previous_u")
FEATURE_BOUND = 8.0  # asinh-squashed features are clipped to ±8 (asinh(1490) = 8)
_SNAP_EPS = 1e-6  # u within this of a level runs that level (float32 actions)


def results_dir() -> Path:
    """``$TNN_RESULTS``, else the ``results/`` folder of the repository this package sits in."""
    env = os.environ.get("TNN_RESULTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "results"


def shipped_checkpoints() -> dict[str, Path]:
    """Shipped models by name (their folder under results/models)."""
    root = results_dir() / "models"
    return {p.parent.name: p for p in sorted(root.glob("*/model.pt"))} if root.is_dir() else {}


def in_results(path: str | os.PathLike) -> Path:
    """``path``; a relative ``results/...`` path that is not there from the working directory is looked
    up in :func:`results_dir` instead, so the files the repository ships (run configs, ``eval_env.json``
    of shipped controllers) name their checkpoints and profiles the same way from anywhere."""
    path = Path(path)
    if path.exists() or path.is_absolute() or not path.parts or path.parts[0] != "results":
        return path
    inside = results_dir().joinpath(*path.parts[1:])
    return inside if inside.exists() else path


def resolve_checkpoint(checkpoint: str | os.PathLike | None) -> Path:
    """A checkpoint path from None (the default), a shipped model's name, or a path."""
    if checkpoint is None:
        path = results_dir() / DEFAULT_PATHS["checkpoint"]
        if not path.is_file():
            raise FileNotFoundError(f"the default checkpoint {path} is missing; set $TNN_RESULTS or pass checkpoint=")
        return path
    shipped = shipped_checkpoints()
    if str(checkpoint) in shipped:
        return shipped[str(checkpoint)]
    path = in_results(checkpoint)
    if path.is_file():
        return path
    if path.is_dir() and (path / "model.pt").is_file():  # a run directory stands for its model.pt
        return path / "model.pt"
    names = ", ".join(shipped) or "none found"
    raise ValueError(f"unknown checkpoint {str(checkpoint)!r}: not a file nor a shipped model ({names})")


def draw_episode(rng: np.random.Generator, num_samples: int, length: int, load: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices (with replacement) and load factors of one random episode, from ``rng``.

    The single and the vectorized env both call this, in this order, so equal seeds give equal episodes.
    """
    order = rng.integers(0, num_samples, size=length)
    factors = load.path(rng, length + 1) if load is not None else np.ones(length + 1)
    return order, factors


def charges(raw: np.ndarray, preview_level: int | None) -> np.ndarray:
    """What each level costs an input when the preview runs at ``preview_level`` (None: no preview).

    The preview is charged to every level above it; a level at or below it answers with the
    preview itself (it already is at least as good an answer), so it costs the preview alone.
    """
    raw = np.asarray(raw, np.float64)
    if preview_level is None:
        return raw.copy()
    idx = np.arange(len(raw))
    return np.where(idx > preview_level, raw + raw[preview_level], raw[preview_level])


def squash_features(features: np.ndarray, num_classes: int) -> np.ndarray:
    """Preview features → observation: asinh on pooled features (scale-free, split-independent),
    confidence and margin as they are, entropy / log(classes); all clipped to ±FEATURE_BOUND."""
    out = np.arcsinh(features.astype(np.float64))
    out[..., -3:-1] = features[..., -3:-1]
    out[..., -1] = features[..., -1] / math.log(max(num_classes, 2))
    return np.clip(out, -FEATURE_BOUND, FEATURE_BOUND).astype(np.float32)


def _describe_profile(profile: Any, path: Path) -> str:
    """Where a profile's costs come from, e.g. "latency measured, energy model: <path>"."""
    latency = "measured" if profile.latency_source == "measured" else "FLOPs model"
    return f"latency {latency}, energy {profile.energy_source}: {path}"


def _reward_name(reward: Any) -> str:
    return getattr(reward, "__qualname__", None) or repr(reward)


class ThrottleEnv(gym.Env):
    """A pretrained runtime-throttleable network (TNN) whose utilization a controller sets per input.

    ## Description
    Each step shows one input of a data split (its *preview*: the network run at its lowest
    level, or at ``preview_level``) and the resource context; the agent picks the utilization
    ``u``, the network answers at that level, and the step is charged the level's measured cost (from a
    :class:`tnn.profile.CostProfile`), scaled by background load. The reward weighs correctness
    against cost through a pluggable reward/budget object. In table mode (default) answers come
    from a precomputed :class:`tnn.table.ResponseTable`, so a step costs microseconds; live mode
    runs the network for real and gives the same rewards.

    ## Action Space
    ``Box(-1, 1, (1,), float32)``. ``action_map="snap"`` (the default): u = u_min + (a + 1)/2 · (1 − u_min),
    snapped up to a level (u_min defaults to the preview level's u), so the lowest reachable level is
    run only at a = −1 itself and every other level owns an equal share of (−1, 1]. ``action_map="bins"``:
    [−1, 1] is cut into equal bins, one per level from u_min up, the lowest included — what a
    squashed (tanh) policy such as SAC's needs to reach the cheapest level.
    Finite values outside [-1, 1] are clipped; NaN, inf or another shape raise ValueError.
    ``tnn/ThrottleDiscrete-v0``: ``Discrete(L)``, action i runs level i.
    ``env.unwrapped.action_for_level(i)`` gives an action that runs exactly level i.

    ## Observation Space
    ``Dict`` of float32 Boxes:

    | key | shape | bounds | content |
    |---|---|---|---|
    | features | (F,) | ±8 | asinh(pooled features at the preview level); softmax max, margin, entropy/log(C) |
    | pixels | (P,) | [0, 1] | the input average-pooled to 8×8 (clips 4×8×8), flattened |
    | context | (5,) | [0, 1] | budget left, steps left, load/max load, λ or budget rate, previous u |

    With observation="none" only ``context`` is shown. With observation="features" the preview's
    cost (its level's, the lowest by default) is charged on top of every level above the preview
    level; a level at or below it answers with the preview itself (``info["level"]`` is then the
    preview level) and costs the preview alone.

    ## Rewards
    ``reward`` is a name — ``linear`` (correct − λ·cost), ``budget`` (hard episode budget with an
    overspend penalty or termination), ``deadline`` (per-input latency deadline), ``paper``
    (the TNN paper's reward), ``conditioned`` / ``budget_conditioned`` (λ or the budget drawn per
    episode and shown in the context) — or any callable ``f(info) -> float``; see
    :mod:`envs.rewards` for the optional hooks (``reset``, ``context_value``, ``budget_left``,
    ``terminated``). ``cost`` is the chosen metric as a fraction of its u=1 cost.

    ## Starting State
    A random episode of ``episode_length`` samples drawn with replacement (``sequential=True``:
    the next consecutive chunk of the split), a load path, and the reward's episode parameter,
    all from ``self.np_random``.

    ## Episode End
    Truncated after ``episode_length`` steps (or at the end of the split in sequential mode);
    terminated when the reward says so (e.g. ``budget`` with ``overspend="terminate"``).

    ## Info
    u, level, correct, confidence, pred, label, index, energy_mj, latency_ms, flops (the step's
    charge, preview and load included), cost, cost_energy, cost_latency, cost_flops (fractions of
    the u=1 cost), load, budget_left, step, episode_length. ``energy_mj`` and ``flops`` are per
    input (a call's energy divided by the profile's batch size); ``latency_ms`` is the response
    time of the whole forward call the input is part of, at the profile's batch size (what a
    deadline constrains), not divided by the batch size. In live mode ``env.unwrapped.wall_ms``
    holds the measured wall time of the last step's forward call (kept out of ``info``, which must be
    deterministic for a seed).

    ## Arguments
    - ``checkpoint``: path or shipped model name (default: the shipped Fashion-MNIST VGG-11 TNN).
    - ``profile``: CostProfile or its JSON path (default: the shipped profile for the default
      checkpoint; otherwise, or if missing, ``CostProfile.from_flops``, noted in ``cost_source``).
      It must be measured for this checkpoint's architecture (model, input shape, classes, levels
      and FLOPs per level), else :class:`tnn.profile.ProfileError`.
    - ``split``: "val" (default, for training) or "test" (for evaluation).
    - ``sequential``: walk the split in order, each sample once per pass (evaluation).
    - ``subset``: ``(lo, hi)``, fractions of the split: only its samples ``[lo·N, hi·N)`` are used
      (e.g. controllers learn on ``(0, 0.8)`` of val and are chosen on ``(0.8, 1)``).
    - ``episode_length``: steps per episode (64; None with sequential: the whole split).
    - ``observation``: "features" (default), "pixels" or "none".
    - ``preview_level``: the level (index, default 0: the lowest) the features preview runs at; a
      deeper preview costs more and tells the controller more (observation="features" only).
    - ``reward``, ``reward_kwargs``: a reward name (or your own as ``"module:attr"``) and its arguments, or a callable.
    - ``budget``: shorthand for ``reward_kwargs["rate"]`` of the budget rewards (float or (low, high)).
    - ``cost_metric``: "energy" (default), "latency" or "flops" — what ``cost`` measures.
    - ``u_min``: smallest u the continuous action reaches (default: the lowest level).
    - ``load``: None, "markov", a dict of :class:`envs.load.MarkovLoad` arguments, or one.
    - ``mode``: "table" (default) or "live".
    - ``data_root``, ``cache_dir``: where data and response tables are found.

    ## Version History
    - v0: initial release.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        *,
        profile: Any = None,
        split: str = "val",
        sequential: bool = False,
        episode_length: int | None = 64,
        observation: str = "features",
        reward: str | Callable[[dict], float] = "linear",
        reward_kwargs: dict | None = None,
        budget: float | tuple[float, float] | None = None,
        cost_metric: str = "energy",
        u_min: float | None = None,
        load: Any = None,
        mode: str = "table",
        data_root: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        discrete: bool = False,
        render_mode: str | None = None,
        preview_level: int = 0,
        subset: tuple[float, float] | None = None,
        action_map: str = "snap",
    ) -> None:
        from tnn import data
        from tnn.checkpoint import load_checkpoint

        if split not in ("val", "test"):
            raise ValueError(f"unknown split {split!r}; choose 'val' (training controllers) or 'test' (evaluation)")
        if observation not in OBSERVATIONS:
            raise ValueError(f"unknown observation {observation!r}; choose one of {', '.join(OBSERVATIONS)}")
        if action_map not in ACTION_MAPS:
            raise ValueError(f"unknown action_map {action_map!r}; choose one of {', '.join(ACTION_MAPS)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if cost_metric not in COST_METRICS:
            raise ValueError(f"unknown cost_metric {cost_metric!r}; choose one of {', '.join(COST_METRICS)}")
        if episode_length is None and not sequential:
            raise ValueError("episode_length=None (the whole split) needs sequential=True")
        if episode_length is not None and (not isinstance(episode_length, int) or episode_length < 1):
            raise ValueError(f"episode_length must be a positive integer, got {episode_length!r}")
        if subset is not None:
            try:
                lo, hi = (float(v) for v in subset)
            except (TypeError, ValueError):
                raise ValueError(f"subset must be (lo, hi) fractions of the split, got {subset!r}") from None
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError(f"subset must satisfy 0 <= lo < hi <= 1 (fractions of the split), got {subset!r}")
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r} is not supported (none)")
        self.render_mode = None
        self.checkpoint = resolve_checkpoint(checkpoint)
        self.model, self.card = load_checkpoint(self.checkpoint)
        self.levels: tuple[float, ...] = tuple(self.model.levels)
        self.split, self.sequential, self.mode, self.observation = split, sequential, mode, observation
        self.cost_metric, self.discrete = cost_metric, discrete
        default = results_dir() / DEFAULT_PATHS["checkpoint"]
        is_default = default.is_file() and self.checkpoint.resolve() == default.resolve()
        self.profile, self.cost_source = self._resolve_profile(profile, is_default)

        lv = len(self.levels)
        if isinstance(preview_level, bool) or not isinstance(preview_level, (int, np.integer)):
            raise ValueError(f"preview_level must be a level index (int), got {preview_level!r}")
        if not 0 <= preview_level < lv:
            raise ValueError(f"preview_level must be in [0, {lv}) for this model's {lv} levels, got {preview_level}")
        if preview_level and observation != "features":
            raise ValueError(
                f"preview_level={preview_level} needs observation='features' (the preview is what it shows); "
                f"got observation={observation!r}"
            )
        self.preview_level = int(preview_level)
        self._floor = self.preview_level if observation == "features" else 0  # lower levels answer with the preview
        try:
            self.u_min = self.levels[self._floor] if u_min is None else float(u_min)
        except (TypeError, ValueError):
            self.u_min = float("nan")
        if isinstance(u_min, str | bool) or not 0.0 < self.u_min <= 1.0:
            raise ValueError(f"u_min must be in (0, 1], got {u_min!r}")
        self._snap = [u + _SNAP_EPS for u in self.levels]  # level i runs every u <= levels[i] (+ float slack)
        self._first_level = bisect.bisect_left(self._snap, self.u_min)
        self.action_map = action_map
        # the levels a continuous action can run, lowest first (one bin each with action_map="bins")
        self._reachable = np.arange(max(self._floor, self._first_level), len(self.levels))

        # per-level charges (preview included where it runs), and the u=1 references
        energy = np.array([self.profile.cost(u, "energy") for u in self.levels])
        latency = np.array([self.profile.cost(u, "latency") for u in self.levels])
        flops = np.array([self.profile.cost(u, "flops") for u in self.levels])
        p = self.preview_level if observation == "features" else None
        self._energy, self._latency, self._flops = (charges(a, p) for a in (energy, latency, flops))
        self._full = {"energy": float(energy[-1]), "latency": float(latency[-1]), "flops": float(flops[-1])}
        self._energy_l, self._latency_l, self._flops_l = (
            a.tolist() for a in (self._energy, self._latency, self._flops)
        )

        # the data: the response table (table mode) or the images (live mode)
        dataset = self.card.get("dataset")
        self.num_classes = int(self.model.num_classes)
        if mode == "table":
            from tnn.table import cached_table

            self.table = cached_table(self.checkpoint, split, data_root=data_root, cache_dir=cache_dir)
            if subset is not None:
                self.table = self.table.take(self._subset_rows(self.table.num_samples, subset))
            if tuple(self.table.levels.tolist()) != self.levels:
                raise ValueError(
                    f"table levels {self.table.levels.tolist()} differ from the model's {list(self.levels)}"
                )
            self.labels = self.table.labels
            self.images = None
            self._correct, self._conf, self._pred = self.table.correct, self.table.confidence, self.table.preds
            self._features = self._observe_all()
        else:
            self.table = None
            self.images, self.labels = data.load(dataset, split, root=data_root)
            if subset is not None:
                rows = self._subset_rows(len(self.labels), subset)
                self.images, self.labels = self.images[rows], self.labels[rows]
        self.num_samples = len(self.labels)
        if episode_length is None:
            episode_length = self.num_samples
        self.episode_length = int(episode_length)

        self.load = make_load(load)
        self._max_load = self.load.max_factor if self.load is not None else 1.0
        reward_kwargs = dict(reward_kwargs or {})
        if budget is not None:
            if reward not in ("budget", "budget_conditioned"):
                raise RewardError(f"budget= applies to the rewards 'budget' and 'budget_conditioned', not {reward!r}")
            reward_kwargs["rate"] = budget
        self.reward_fn = make_reward(reward, **reward_kwargs)
        self._reward_label = reward if isinstance(reward, str) else _reward_name(reward)
        self._reset_hook = self._reset_caller(self.reward_fn)
        self._context_hook = getattr(self.reward_fn, "context_value", None)
        self._budget_hook = getattr(self.reward_fn, "budget_left", None)

        if discrete:
            self.action_space = spaces.Discrete(lv)
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        obs: dict[str, spaces.Space] = {}
        if observation == "features":
            width = self._features.shape[1] if mode == "table" else self._observe(0).shape[0]
            obs["features"] = spaces.Box(-FEATURE_BOUND, FEATURE_BOUND, (width,), np.float32)
        elif observation == "pixels":
            width = self.table.pixels.shape[1] if mode == "table" else self._observe(0).shape[0]
            obs["pixels"] = spaces.Box(0.0, 1.0, (width,), np.float32)
        obs["context"] = spaces.Box(0.0, 1.0, (len(CONTEXT),), np.float32)
        self.observation_space = spaces.Dict(obs)

        self._order: np.ndarray | None = None
        self._loads = np.ones(1)
        self._t = self._length = 0
        self.wall_ms = float("nan")
        self._cursor = 0
        self._prev_u = 0.0
        self.index = -1

    # ------------------------------------------------------------------ construction helpers

    @staticmethod
    def _subset_rows(n: int, subset: tuple[float, float]) -> np.ndarray:
        lo, hi = (round(float(v) * n) for v in subset)
        if hi <= lo:
            raise ValueError(f"subset {tuple(subset)} of a split of {n} samples holds none")
        return np.arange(lo, hi)

    def _resolve_profile(self, profile: Any, default_checkpoint: bool) -> tuple[Any, str]:
        """The cost profile and where it comes from; a profile measured for another model is a ProfileError."""
        from tnn.profile import CostProfile

        if isinstance(profile, CostProfile):
            profile.check_model(self.model, checkpoint=self.checkpoint)
            return profile, "given CostProfile"
        if profile is not None:
            if not isinstance(profile, (str, os.PathLike)):
                raise TypeError(
                    f"profile must be a CostProfile or the path of a profile JSON (or None for the default), "
                    f"got {type(profile).__name__}"
                )
            path = in_results(profile)
            if not path.is_file():
                raise FileNotFoundError(f"no cost profile at {path}; make one with `tnn profile` or pass profile=None")
            loaded = CostProfile.load(path)
            loaded.check_model(self.model, profile_name=str(path), checkpoint=self.checkpoint)
            return loaded, _describe_profile(loaded, path)
        path = results_dir() / DEFAULT_PATHS["profile"]
        if default_checkpoint and path.is_file():
            loaded = CostProfile.load(path)
            loaded.check_model(self.model, profile_name=str(path), checkpoint=self.checkpoint)
            return loaded, _describe_profile(loaded, path)
        why = f"{path} is missing" if default_checkpoint else "no profile given for this checkpoint"
        return CostProfile.from_flops(self.model, batch_size=1), f"FLOPs model ({why}): latency and energy estimated"

    @staticmethod
    def _reset_caller(reward: Any) -> Callable[[np.random.Generator], None] | None:
        reset = getattr(reward, "reset", None)
        if not callable(reset):
            return None
        try:
            params = inspect.signature(reset).parameters
        except (TypeError, ValueError):
            return lambda rng: reset()
        if "rng" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return lambda rng: reset(rng=rng)
        return lambda rng: reset()

    def _observe_all(self) -> np.ndarray:
        if self.observation == "pixels":
            return self.table.pixels.astype(np.float32)
        return squash_features(self.table.preview_features(self.preview_level), self.num_classes)

    def _observe(self, index: int) -> np.ndarray:
        """The features/pixels observation of one sample (live mode computes it)."""
        if self.mode == "table":
            return self._features[index].copy()  # callers keep observations: never hand out a view
        from tnn.table import pixels_of, preview

        image = self.images[index : index + 1]
        if self.observation == "pixels":
            return pixels_of(image)[0]
        return squash_features(preview(self.model, image, self.preview_level), self.num_classes)[0]

    # ------------------------------------------------------------------ actions

    def level_of(self, action: Any) -> int:
        """The level an action runs (validates it)."""
        if self.discrete:
            a = np.asarray(action)
            if (
                a.shape not in ((), (1,))
                or a.dtype.kind not in "iu"
                or not 0 <= int(a.reshape(-1)[0]) < len(self.levels)
            ):
                raise ValueError(f"action must be an integer in [0, {len(self.levels)}), got {action!r}")
            return max(self._floor, int(a.reshape(-1)[0]))
        if type(action) is np.ndarray and action.shape == (1,):
            a = float(action[0])
        else:
            arr = np.asarray(action, dtype=np.float64) if not isinstance(action, str | type(None)) else None
            if arr is None or arr.shape not in ((), (1,)):
                raise ValueError(f"action must be a float array of shape (1,), got {action!r}")
            a = float(arr.reshape(-1)[0])
        if not math.isfinite(a):
            raise ValueError(f"action must be finite, got {a!r}")
        a = min(1.0, max(-1.0, a))
        if self.action_map == "bins":
            n = len(self._reachable)
            return int(self._reachable[min(n - 1, int((a + 1.0) * 0.5 * n))])
        u = self.u_min + (a + 1.0) * 0.5 * (1.0 - self.u_min)
        return max(self._floor, min(bisect.bisect_left(self._snap, u), len(self.levels) - 1))

    def action_for_level(self, level: int) -> np.ndarray:
        """An action that runs exactly level ``level`` (ValueError when u_min puts it out of reach);
        a level below the preview level gives the preview level's action (its answer is the preview's)."""
        if not 0 <= level < len(self.levels):
            raise ValueError(f"level must be in [0, {len(self.levels)}), got {level}")
        if self.discrete:
            return np.int64(level)
        level = max(level, self._floor)
        if level < self._first_level:
            raise ValueError(f"level {level} (u={self.levels[level]}) is below u_min={self.u_min}")
        if self.action_map == "bins":  # the middle of the level's bin
            k, n = level - int(self._reachable[0]), len(self._reachable)
            return np.array([-1.0 + (2 * k + 1) / n], np.float32)
        if self.u_min >= 1.0:
            return np.ones(1, np.float32)
        action = np.array([2.0 * (self.levels[level] - self.u_min) / (1.0 - self.u_min) - 1.0], np.float32)
        return np.clip(action, -1.0, 1.0)

    # ------------------------------------------------------------------ gymnasium API

    def _context(self) -> np.ndarray:
        budget = min(1.0, max(0.0, float(self._budget_hook()))) if self._budget_hook is not None else 1.0
        param = min(1.0, max(0.0, float(self._context_hook()))) if self._context_hook is not None else 0.0
        load = float(self._loads[self._t]) / self._max_load
        steps_left = (self._length - self._t) / self._length
        return np.array([budget, steps_left, load, param, self._prev_u], np.float32)

    def _obs(self) -> dict[str, np.ndarray]:
        self.index = int(self._order[min(self._t, self._length - 1)])
        if self.observation == "none":
            return {"context": self._context()}
        key = "features" if self.observation == "features" else "pixels"
        return {key: self._observe(self.index), "context": self._context()}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        if self.sequential:
            if seed is not None:
                self._cursor = 0
            stop = min(self._cursor + self.episode_length, self.num_samples)
            self._order = np.arange(self._cursor, stop)
            self._cursor = stop % self.num_samples
            n = len(self._order) + 1
            self._loads = self.load.path(rng, n) if self.load is not None else np.ones(n)
        else:
            self._order, self._loads = draw_episode(rng, self.num_samples, self.episode_length, self.load)
        if self._reset_hook is not None:
            self._reset_hook(rng)
        self._t = 0
        self._length = len(self._order)
        self._prev_u = 0.0
        obs = self._obs()
        info = {"index": self.index, "episode_length": len(self._order), "cost_source": self.cost_source}
        return obs, info

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if self._order is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self._t >= self._length:
            raise gym.error.ResetNeeded("the episode has ended; call reset()")
        level = self.level_of(action)
        i, f = self.index, float(self._loads[self._t])
        energy, latency, flops = self._energy_l[level] * f, self._latency_l[level] * f, self._flops_l[level]
        u = self.levels[level]
        info = {
            "u": u,
            "level": level,
            "label": int(self.labels[i]),
            "index": i,
            "energy_mj": energy,
            "latency_ms": latency,
            "flops": flops,
            "cost_energy": energy / self._full["energy"],
            "cost_latency": latency / self._full["latency"],
            "cost_flops": flops / self._full["flops"],
            "load": f,
            "step": self._t,
            "episode_length": self._length,
        }
        info["cost"] = info["cost_" + self.cost_metric]
        if self.mode == "table":
            info["pred"] = int(self._pred[i, level])
            info["correct"] = bool(self._correct[i, level])
            info["confidence"] = float(self._conf[i, level])
        else:
            from tnn.table import respond

            start = time.perf_counter()
            pred, conf = respond(self.model, self.images[i : i + 1], u)
            self.wall_ms = (time.perf_counter() - start) * 1e3  # not in info: it would break determinism
            info["pred"], info["confidence"] = int(pred[0]), float(conf[0])
            info["correct"] = info["pred"] == info["label"]
        reward = self.reward_fn(info)
        try:
            reward = float(reward)
        except (TypeError, ValueError):
            raise RewardError(f"reward {self._reward_label} returned {reward!r}, not a number") from None
        if not math.isfinite(reward):
            raise RewardError(f"reward {self._reward_label} returned {reward!r} (not finite) at step {self._t}")
        terminated = bool(getattr(self.reward_fn, "terminated", False))
        self._t += 1
        self._prev_u = u
        truncated = self._t >= self._length
        info["budget_left"] = float(self._budget_hook()) if self._budget_hook is not None else 1.0
        obs = self._obs()
        if terminated or truncated:
            self._t = self._length
        return obs, reward, terminated, truncated, info


class ThrottleDiscreteEnv(ThrottleEnv):
    """``tnn/ThrottleDiscrete-v0``: :class:`ThrottleEnv` with ``Discrete(L)`` actions (action i runs level i)."""

    def __init__(self, checkpoint: str | os.PathLike | None = None, **kwargs: Any) -> None:
        kwargs.pop("discrete", None)
        super().__init__(checkpoint, discrete=True, **kwargs)
