"""A native vectorized ``tnn/Throttle-v0`` for Stable-Baselines3: all envs step as array operations.

``ThrottleVecEnv(num_envs, **kwargs)`` takes the kwargs of :class:`envs.throttle.ThrottleEnv`
(table mode only) and equals ``num_envs`` single envs seeded ``seed, seed + 1, ...`` (SB3's
``VecEnv.seed`` convention): same episodes, observations, rewards and auto-resets, because both
draw each episode with :func:`envs.throttle.draw_episode` from per-env generators. A step is a
handful of numpy gathers over the response table — no Python loop over envs, except to reset
the envs whose episode ended (once per episode) and to build SB3's list of info dicts.

Built-in rewards run vectorized (``batch(n)``); any other callable is called once per env and
step on a deep copy per env — correct, but slow. Per-step details (u, level, correct, costs, …)
of every env are in ``vec_env.step_info`` as arrays; ``infos[i]`` holds only SB3's
``terminal_observation`` and ``TimeLimit.truncated`` unless ``full_info=True``, and is a shared
read-only empty mapping for envs whose episode goes on.

Imports stable-baselines3, so :mod:`envs` does not import this module.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.rewards import RewardError
from envs.throttle import CONTEXT, ThrottleEnv, draw_episode

__all__ = ["ThrottleVecEnv"]

# infos of envs whose episode goes on: one shared read-only empty mapping (building 1,024 dicts per
# step would cost more than the step); envs that finished get their own dict, which SB3 may edit.
_NO_INFO = types.MappingProxyType({})


class ThrottleVecEnv(VecEnv):
    """``num_envs`` copies of :class:`~envs.throttle.ThrottleEnv` over one response table."""

    def __init__(self, num_envs: int, *, full_info: bool = False, **kwargs: Any) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if kwargs.get("mode", "table") != "table":
            raise ValueError("ThrottleVecEnv runs in table mode only; use gymnasium's vector envs for mode='live'")
        env = ThrottleEnv(**kwargs)
        self.env = env  # the template: spaces, costs, table, reward prototype
        super().__init__(num_envs, env.observation_space, env.action_space)
        n, self.full_info = num_envs, full_info
        self.levels, self.table, self.profile = env.levels, env.table, env.profile
        self._levels = np.asarray(env.levels)
        self._snap = np.asarray(env._snap)
        self._energy, self._latency, self._flops = env._energy, env._latency, env._flops
        self._full = env._full
        self._key = "features" if env.observation == "features" else "pixels"
        self._obs_table = env._features if env.observation != "none" else None
        reward = env.reward_fn
        if hasattr(reward, "batch") and hasattr(reward, "reset_envs"):
            self._reward, self._rewards = reward.batch(n), None
        else:  # an arbitrary callable: one deep copy per env, called in a loop
            self._reward, self._rewards = None, [copy.deepcopy(reward) for _ in range(n)]
        self._label = env._reward_label
        width = env.episode_length
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._order = np.zeros((n, width), np.int64)
        self._loads = np.ones((n, width + 1))
        self._length = np.full(n, width, np.int64)
        self._cursor = np.zeros(n, np.int64)
        self._t = np.zeros(n, np.int64)
        self._prev_u = np.zeros(n)
        self._rows = np.arange(n)
        self._row_start, self._load_start = self._rows * width, self._rows * (width + 1)  # flat indexing
        self._flat = {k: getattr(env.table, k).ravel() for k in ("preds", "correct", "confidence")}
        self._actions: np.ndarray | None = None
        self._started = False
        self.index = np.zeros(n, np.int64)
        self.step_info: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ episodes

    def _draw(self, i: int, seed: int | None) -> None:
        env = self.env
        if seed is not None or self._rngs[i] is None:
            self._rngs[i], _ = seeding.np_random(seed)
        rng = self._rngs[i]
        if env.sequential:
            if seed is not None:
                self._cursor[i] = 0
            start = int(self._cursor[i])
            stop = min(start + env.episode_length, env.num_samples)
            order = np.arange(start, stop)
            self._cursor[i] = stop % env.num_samples
            loads = env.load.path(rng, len(order) + 1) if env.load is not None else np.ones(len(order) + 1)
        else:
            order, loads = draw_episode(rng, env.num_samples, env.episode_length, env.load)
        self._order[i, : len(order)] = order
        self._loads[i, : len(order) + 1] = loads
        self._length[i] = len(order)
        self._t[i] = 0
        self._prev_u[i] = 0.0

    def _reset_envs(self, ids: Sequence[int], seeds: Sequence[int | None]) -> None:
        for i, seed in zip(ids, seeds, strict=True):
            self._draw(i, seed)
        if self._reward is not None:
            self._reward.reset_envs(list(ids), self._rngs)
        else:
            for i in ids:
                hook = ThrottleEnv._reset_caller(self._rewards[i])
                if hook is not None:
                    hook(self._rngs[i])

    # ------------------------------------------------------------------ observations

    def _hook_values(self, name: str, default: float) -> np.ndarray:
        if self._reward is not None:
            hook = getattr(self._reward, name, None)
            values = hook() if hook is not None else default
            return np.broadcast_to(np.asarray(values, np.float64), (self.num_envs,)).copy()
        out = np.full(self.num_envs, default)
        for i, r in enumerate(self._rewards):
            hook = getattr(r, name, None)
            if hook is not None:
                out[i] = float(hook())
        return out

    def _observe(self) -> dict[str, np.ndarray]:
        t = self._t
        self.index = self._order.ravel().take(self._row_start + np.minimum(t, self._length - 1))
        context = np.empty((self.num_envs, len(CONTEXT)), np.float32)
        context[:, 0] = np.clip(self._hook_values("budget_left", 1.0), 0.0, 1.0)
        context[:, 1] = (self._length - t) / self._length
        context[:, 2] = self._loads.ravel().take(self._load_start + t) / self.env._max_load
        context[:, 3] = np.clip(self._hook_values("context_value", 0.0), 0.0, 1.0)
        context[:, 4] = self._prev_u
        if self._obs_table is None:
            return {"context": context}
        return {self._key: self._obs_table.take(self.index, axis=0), "context": context}

    # ------------------------------------------------------------------ VecEnv API

    def reset(self) -> VecEnvObs:
        ids = list(range(self.num_envs))
        self._reset_envs(ids, self._seeds)
        self._reset_seeds()
        self._reset_options()
        self._started = True
        obs = self._observe()
        for i in ids:
            self.reset_infos[i] = {"index": int(self.index[i]), "episode_length": int(self._length[i])}
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def _levels_of(self, actions: Any) -> np.ndarray:
        n, env = self.num_envs, self.env
        a = np.asarray(actions)
        if env.discrete:
            if a.size != n or a.dtype.kind not in "iu" or a.min() < 0 or a.max() >= len(self.levels):
                raise ValueError(f"actions must be {n} integers in [0, {len(self.levels)}), got {a.reshape(-1)[:8]!r}")
            return np.maximum(a.reshape(n).astype(np.int64), env._floor)
        if a.shape not in ((n, 1), (n,)):
            raise ValueError(f"actions must have shape ({n}, 1), got {a.shape}")
        a = a.reshape(n).astype(np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f"actions must be finite, got {a[~np.isfinite(a)][:3]} among them")
        if env.action_map == "bins":
            reachable = env._reachable
            k = ((np.clip(a, -1.0, 1.0) + 1.0) * 0.5 * len(reachable)).astype(np.int64)
            return reachable[np.minimum(k, len(reachable) - 1)]
        u = env.u_min + (np.clip(a, -1.0, 1.0) + 1.0) * 0.5 * (1.0 - env.u_min)
        return np.maximum(np.minimum(np.searchsorted(self._snap, u, side="left"), len(self.levels) - 1), env._floor)

    def _rewards_of(self, info: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self._reward is not None:
            reward = np.asarray(self._reward(info), np.float64)
            terminated = np.asarray(getattr(self._reward, "terminated", False), bool)
            return np.broadcast_to(reward, (self.num_envs,)), np.broadcast_to(terminated, (self.num_envs,)).copy()
        reward, terminated = np.empty(self.num_envs), np.zeros(self.num_envs, bool)
        for i, fn in enumerate(self._rewards):
            reward[i] = float(fn({k: v[i].item() for k, v in info.items()}))
            terminated[i] = bool(getattr(fn, "terminated", False))
        return reward, terminated

    def step_wait(self) -> VecEnvStepReturn:
        if not self._started or self._actions is None:
            raise RuntimeError("call reset() before step()")
        level = self._levels_of(self._actions)
        t = self._t
        idx = self._order.ravel().take(self._row_start + t)
        load = self._loads.ravel().take(self._load_start + t)
        cell = idx * len(self.levels) + level
        energy, latency, flops = self._energy[level] * load, self._latency[level] * load, self._flops[level]
        u = self._levels[level]
        info = {
            "u": u,
            "level": level,
            "label": self.table.labels[idx],
            "index": idx,
            "energy_mj": energy,
            "latency_ms": latency,
            "flops": flops,
            "cost_energy": energy / self._full["energy"],
            "cost_latency": latency / self._full["latency"],
            "cost_flops": flops / self._full["flops"],
            "load": load,
            "step": t.copy(),
            "episode_length": self._length.copy(),
            "pred": self._flat["preds"].take(cell),
            "correct": self._flat["correct"].take(cell),
            "confidence": self._flat["confidence"].take(cell).astype(np.float64),
        }
        info["cost"] = info["cost_" + self.env.cost_metric]
        reward, terminated = self._rewards_of(info)
        if not np.isfinite(reward).all():
            bad = np.flatnonzero(~np.isfinite(reward))
            raise RewardError(f"reward {self._label} returned {reward[bad[0]]!r} (not finite) in env {bad[0]}")
        self._t = t + 1
        self._prev_u = u
        truncated = self._t >= self._length
        info["budget_left"] = np.clip(self._hook_values("budget_left", 1.0), 0.0, 1.0)
        self.step_info = info
        dones = terminated | truncated
        obs = self._observe()
        if self.full_info:
            infos: list[Any] = [{k: v[i].item() for k, v in info.items()} for i in range(self.num_envs)]
        else:
            infos = [_NO_INFO] * self.num_envs
        done_ids = np.flatnonzero(dones).tolist()
        if done_ids:
            for i in done_ids:
                infos[i] = dict(infos[i])
                infos[i]["terminal_observation"] = {k: v[i].copy() for k, v in obs.items()}
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            self._reset_envs(done_ids, [None] * len(done_ids))
            fresh = self._observe()
            for k in obs:
                obs[k][done_ids] = fresh[k][done_ids]
            for i in done_ids:
                self.reset_infos[i] = {"index": int(self.index[i]), "episode_length": int(self._length[i])}
        return obs, reward.astype(np.float32), dones, infos

    def action_for_level(self, level: int) -> np.ndarray:
        """Actions (one row per env) that run exactly level ``level``."""
        a = np.asarray(self.env.action_for_level(level))
        return np.repeat(a[None], self.num_envs, axis=0) if a.ndim else np.full(self.num_envs, int(a))

    def close(self) -> None:
        pass

    def _indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.env, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"ThrottleVecEnv shares one configuration across envs; cannot set {attr_name!r}")

    def env_method(self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list[Any]:
        return [getattr(self.env, method_name)(*args, **kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]
