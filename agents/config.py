"""Hyperparameters as YAML keyed by env id (RL Baselines3 Zoo style), checked against the algorithm.

``hyperparams/<algo>.yml`` maps env ids to keyword arguments; ``default`` serves any id not listed.
A few meta keys steer the run rather than the algorithm (``policy``, ``n_envs``, ``n_timesteps``,
``normalize``, ``normalize_kwargs``); every other key must be an argument of the algorithm's
constructor, so a typo fails before training instead of being silently ignored. ``lin_X`` strings
become linear schedules; ``policy_kwargs`` is a plain mapping (never an ``eval``'d string).
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ALGOS", "META_KEYS", "HyperparamError", "algo_class", "linear_schedule", "load_hyperparams"]

HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
ALGOS = ("ppo", "a2c", "sac", "dqn")
META_KEYS = ("policy", "n_envs", "n_timesteps", "normalize", "normalize_kwargs")
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")
_RESERVED = ("self", "env", "policy", "seed", "verbose", "tensorboard_log", "device", "_init_setup_model")


_RESERVED_HOW = "the env, seed and device come from the run's own options, verbose and tensorboard_log are fixed"
_META_TYPES: dict[str, Any] = {
    "policy": str,
    "n_envs": int,
    "n_timesteps": int,
    "normalize": bool,
    "normalize_kwargs": dict,
}


class HyperparamError(ValueError):
    """A hyperparameter file or override the algorithm cannot take."""


def algo_class(algo: str) -> type:
    """The SB3 class for ``algo`` (lazy import: SB3 is heavy)."""
    import stable_baselines3 as sb3

    if algo not in ALGOS:
        raise HyperparamError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGOS)}")
    return getattr(sb3, algo.upper())


def linear_schedule(initial: float) -> Callable[[float], float]:
    """``progress_remaining`` (1 → 0) times ``initial``, the RL Zoo ``lin_`` schedule."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial

    schedule.initial = initial  # type: ignore[attr-defined]  # kept for config.yml round trips
    return schedule


def _parse_value(key: str, value: Any) -> Any:
    if isinstance(value, str) and value.startswith("lin_"):
        if key not in SCHEDULE_KEYS:
            raise HyperparamError(f"{key}: a lin_ schedule only works for {', '.join(SCHEDULE_KEYS)}")
        try:
            return linear_schedule(float(value[4:]))
        except ValueError:
            raise HyperparamError(f"{key}: {value!r} is not lin_<number>, e.g. lin_3e-4") from None
    return value


def _type_mismatch(value: Any, annotation: Any) -> str:
    """What ``value`` should be when it does not fit ``annotation``; empty when it fits (or when the
    annotation is beyond this check).

    Covers what YAML and JSON can hold (numbers, bools, strings, mappings, None) and schedules, so a
    value the algorithm would only trip over deep inside its constructor fails here, naming its key.
    """
    union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    members = typing.get_args(annotation) if union else (annotation,)
    names = []
    for member in members:
        origin = typing.get_origin(member) or member
        if origin is type(None):
            ok, name = value is None, "None"
        elif origin is bool:
            ok, name = isinstance(value, bool), "true/false"
        elif origin is int:
            ok, name = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif origin is float:
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok, name = number and math.isfinite(value), "a finite number"
        elif origin is str:
            ok, name = isinstance(value, str), "a string"
        elif origin is dict:
            ok, name = isinstance(value, Mapping), "a mapping"
        elif origin is tuple:
            ok, name = isinstance(value, tuple), "a tuple"
        elif origin is Callable:
            ok, name = callable(value), "a lin_X schedule"
        else:  # a class, a device, ...: nothing YAML writes, and nothing to check here
            return ""
        if ok:
            return ""
        names.append(name)
    return " or ".join(names)


def load_hyperparams(
    algo: str,
    env_id: str,
    overrides: Mapping[str, Any] | None = None,
    path: str | Path | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(meta, algo_kwargs)`` for ``algo`` on ``env_id``: YAML entry (or ``default``) + ``overrides``.

    ``algo_kwargs`` are ready for the algorithm's constructor (schedules parsed); ``meta`` holds the
    run's ``policy``, ``n_envs``, ``n_timesteps``, ``normalize`` and ``normalize_kwargs``.
    """
    import yaml

    cls = algo_class(algo)
    path = Path(path) if path else HYPERPARAMS_DIR / f"{algo}.yml"
    table = yaml.safe_load(path.read_text()) or {}
    if not isinstance(table, Mapping):
        raise HyperparamError(f"{path}: expected a mapping of env id -> hyperparameters")
    if env_id in table:
        raw = dict(table[env_id] or {})
    elif "default" in table:
        raw = dict(table["default"] or {})
    else:
        raise HyperparamError(f"{path}: no entry for {env_id!r} and no 'default'; add one of them")
    raw.update(overrides or {})

    where = f"{path.name} [{env_id}]" + (f" + {dict(overrides)}" if overrides else "")
    params = inspect.signature(cls.__init__).parameters
    reserved = sorted(k for k in raw if k in _RESERVED and k not in META_KEYS)
    if reserved:
        raise HyperparamError(
            f"{where}: {', '.join(map(repr, reserved))} is set by tnn, not by hyperparameters "
            f"({_RESERVED_HOW}); drop it"
        )
    accepted = set(params) - set(_RESERVED)
    unknown = sorted(k for k in raw if k not in accepted and k not in META_KEYS)
    if unknown:
        raise HyperparamError(
            f"{where}: {algo.upper()} does not take {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(sorted(accepted | set(META_KEYS)))}"
        )
    for key, value in raw.items():
        annotation = _META_TYPES[key] if key in META_KEYS else params[key].annotation
        value = _parse_value(key, value) if key in SCHEDULE_KEYS else value
        expected = _type_mismatch(value, annotation)
        if expected:
            raise HyperparamError(f"{where}: {key} must be {expected}, got {value!r} ({type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):  # an int | str annotation lets NaN through
            raise HyperparamError(f"{where}: {key} must be a finite number, got {value!r}")
    _check_normalize_kwargs(where, raw.get("normalize_kwargs"))
    meta = {
        "policy": raw.pop("policy", "MultiInputPolicy"),
        "n_envs": int(raw.pop("n_envs", 1)),
        "n_timesteps": int(raw.pop("n_timesteps", 100_000)),
        "normalize": bool(raw.pop("normalize", False)),
        "normalize_kwargs": dict(raw.pop("normalize_kwargs", None) or {}),
    }
    kwargs = {k: _parse_value(k, v) for k, v in raw.items()}
    return meta, kwargs


def _check_normalize_kwargs(where: str, kwargs: Any) -> None:
    """``normalize_kwargs`` must be keywords ``VecNormalize`` takes (not ``venv``), with finite numbers."""
    from stable_baselines3.common.vec_env import VecNormalize

    if not kwargs:
        return
    params = inspect.signature(VecNormalize.__init__).parameters
    accepted = set(params) - {"self", "venv"}
    unknown = sorted(str(k) for k in kwargs if k not in accepted)
    if unknown:
        raise HyperparamError(
            f"{where}: normalize_kwargs: VecNormalize does not take {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(sorted(accepted))}"
        )
    for key, value in kwargs.items():
        expected = _type_mismatch(value, params[key].annotation)
        if expected:
            raise HyperparamError(
                f"{where}: normalize_kwargs.{key} must be {expected}, got {value!r} ({type(value).__name__})"
            )


def to_yaml_ready(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The kwargs with schedules written back as ``lin_X`` (for ``config.yml``)."""
    out = {}
    for k, v in kwargs.items():
        out[k] = f"lin_{v.initial}" if callable(v) and hasattr(v, "initial") else v
    return out
