"""Hyperparameters as YAML keyed by env id (RL Baselines3 Zoo style), checked against the algorithm.

``hyperparams/<algo>.yml`` maps env ids to keyword arguments; ``default`` serves any id not listed.
A few meta keys steer the run rather than the algorithm (``policy``, ``n_envs``, ``n_timesteps``,
``normalize``, ``normalize_kwargs``); every other key must be an argument of the algorithm's
constructor, so a typo fails before training instead of being silently ignored. Values are checked
for their type and, where SB3 would take a nonsensical one without a word (``gamma: 2``), their range.
``lin_X`` strings become linear schedules. ``policy`` is ``MultiInputPolicy`` (the observation is a
dict). ``policy_kwargs`` is a plain mapping (never an ``eval``'d string) checked against the policy's
constructor the same way; its ``net_arch`` is layer sizes, and a class is given by name from an
allow-list: ``activation_fn`` one of :data:`ACTIVATIONS` (``nn.Tanh``, ``tanh``), ``optimizer_class``
one of :data:`OPTIMIZERS` (``optim.AdamW``). ``features_extractor_class`` is an extractor of your own
by import spec (``my_extractors:SplitMLP``, a ``BaseFeaturesExtractor`` over the dict observation);
:mod:`agents.safe_load` then resolves that one class, the one the run's ``config.yml`` names
(:func:`extractor_of_run`), besides its allow-list.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ACTIVATIONS",
    "ALGOS",
    "META_KEYS",
    "OPTIMIZERS",
    "HyperparamError",
    "algo_class",
    "extractor_of_run",
    "linear_schedule",
    "load_hyperparams",
]

HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"
ALGOS = ("ppo", "a2c", "sac", "dqn")
META_KEYS = ("policy", "n_envs", "n_timesteps", "normalize", "normalize_kwargs")
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")
_RESERVED = ("self", "env", "policy", "seed", "verbose", "tensorboard_log", "device", "_init_setup_model")


ACTIVATIONS = ("ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid")
"""``torch.nn`` activations ``policy_kwargs.activation_fn`` may name: the ones a run's ``model.zip``
may hold and :mod:`agents.safe_load` unpickles (anything else would train and then never load)."""

OPTIMIZERS = ("Adam", "AdamW", "RMSprop", "SGD")
"""``torch.optim`` optimizers ``policy_kwargs.optimizer_class`` may name (those :mod:`agents.safe_load`
unpickles)."""
# class-valued policy kwargs a hyperparameter file may name: the torch module and the allowed names
_CLASS_KEYS = {"activation_fn": ("nn", ACTIVATIONS), "optimizer_class": ("optim", OPTIMIZERS)}

# value ranges SB3 does not check itself (a key the algorithm does not take is refused before this)
_UNIT = ("in [0, 1]", lambda v: 0.0 <= v <= 1.0)
_POSITIVE = ("> 0", lambda v: v > 0)
_NON_NEGATIVE = (">= 0", lambda v: v >= 0)
_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    **dict.fromkeys(("gamma", "gae_lambda", "tau", "exploration_fraction"), _UNIT),
    **dict.fromkeys(("exploration_initial_eps", "exploration_final_eps"), _UNIT),
    **dict.fromkeys(("learning_rate", "clip_range", "clip_range_vf", "target_kl", "max_grad_norm"), _POSITIVE),
    **dict.fromkeys(("n_steps", "batch_size", "n_epochs", "buffer_size", "train_freq"), _POSITIVE),
    **dict.fromkeys(("target_update_interval", "n_envs", "n_timesteps"), _POSITIVE),
    **dict.fromkeys(("ent_coef", "vf_coef", "learning_starts"), _NON_NEGATIVE),
    **dict.fromkeys(("n_critics", "clip_mean"), _POSITIVE),  # policy_kwargs (SAC)
}
# a policy's constructor arguments the algorithm fills in itself
_POLICY_SET_BY_ALGO = {"self", "observation_space", "action_space", "lr_schedule"}
# the actor/critic keys of a net_arch mapping, per algorithm (DQN takes a list only)
_NET_ARCH_KEYS = {"ppo": ("pi", "vf"), "a2c": ("pi", "vf"), "sac": ("pi", "qf")}

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
        _check_range(where, key, raw[key], value)
    _check_normalize_kwargs(where, raw.get("normalize_kwargs"))
    policy = raw.setdefault("policy", "MultiInputPolicy")
    if policy != "MultiInputPolicy":
        raise HyperparamError(
            f"{where}: policy must be MultiInputPolicy (every TNN env observes a dict of features and "
            f"resource context, which {algo.upper()}'s other policies cannot read), got {policy!r}"
        )
    if isinstance(raw.get("policy_kwargs"), Mapping):
        raw["policy_kwargs"] = _check_policy_kwargs(where, algo, cls.policy_aliases[policy], raw["policy_kwargs"])
    meta = {
        "policy": raw.pop("policy"),
        "n_envs": int(raw.pop("n_envs", 1)),
        "n_timesteps": int(raw.pop("n_timesteps", 100_000)),
        "normalize": bool(raw.pop("normalize", False)),
        "normalize_kwargs": dict(raw.pop("normalize_kwargs", None) or {}),
    }
    kwargs = {k: _parse_value(k, v) for k, v in raw.items()}
    return meta, kwargs


def _check_range(where: str, key: str, given: Any, value: Any) -> None:
    """HyperparamError when a number (or a ``lin_X`` schedule's X) lies outside ``key``'s range in :data:`_RANGES`."""
    if key not in _RANGES:
        return
    number = getattr(value, "initial", value)  # a lin_X schedule starts at X
    if isinstance(number, bool) or not isinstance(number, int | float):
        return  # None, SAC's ent_coef "auto", train_freq (4, "step"): nothing to range-check
    text, fits = _RANGES[key]
    if not fits(number):
        raise HyperparamError(f"{where}: {key} must be {text}, got {given!r}")


def _layer_sizes(value: Any) -> list[int] | None:
    """``value`` as a list of positive layer sizes; None if it is not one."""
    if not isinstance(value, list | tuple):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return None
    return list(value)


def _check_policy_kwargs(where: str, algo: str, policy_class: type, policy_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``policy_kwargs`` checked against ``policy_class``'s constructor: every key one it takes, every
    value of its type (a class only from Python, never a string), ``net_arch`` layer sizes, and
    ``activation_fn`` resolved to its ``torch.nn`` class.

    SB3 would fail on a bad one deep inside torch (``empty(): argument 'size' ...``, ``'str' object is
    not callable``, ``unexpected keyword argument``), after the run directory was written.
    """
    owner = f"{algo.upper()}'s {policy_class.__name__}"
    params = _keywords_of(f"{where}: policy_kwargs", owner, policy_class, policy_kwargs, _POLICY_SET_BY_ALGO)
    out = dict(policy_kwargs)
    for key, value in policy_kwargs.items():
        annotation = params[key].annotation
        if key == "net_arch":
            continue  # checked below, with its own message
        if key == "features_extractor_class":
            out[key] = _extractor_class(where, value)
            continue
        if typing.get_origin(annotation) is type:  # a class: named from its allow-list, or refused
            out[key] = _named_class(where, key, value)
            continue
        expected = _type_mismatch(value, annotation)
        if expected:
            raise HyperparamError(
                f"{where}: policy_kwargs.{key} must be {expected}, got {value!r} ({type(value).__name__})"
            )
        _check_range(f"{where}: policy_kwargs", key, value, value)
    if "net_arch" in out:
        arch, keys = out["net_arch"], _NET_ARCH_KEYS.get(algo)
        checked: Any = _layer_sizes(arch)
        if checked is None and keys and isinstance(arch, Mapping) and set(arch) == set(keys):
            parts = {k: _layer_sizes(arch[k]) for k in keys}
            checked = parts if all(v is not None for v in parts.values()) else None
        if checked is None:
            mapping = f", or a mapping {{{keys[0]}: [...], {keys[1]}: [...]}} (actor and critic)" if keys else ""
            raise HyperparamError(
                f"{where}: policy_kwargs.net_arch must be a list of positive layer sizes, e.g. [64, 64]{mapping}; "
                f"got {arch!r}"
            )
        out["net_arch"] = checked
    _check_kwargs_of(where, "optimizer_kwargs", out, out.get("optimizer_class") or params["optimizer_class"].default)
    extractor = out.get("features_extractor_class") or params["features_extractor_class"].default
    _check_kwargs_of(where, "features_extractor_kwargs", out, extractor)
    return out


def _extractor_class(where: str, value: Any) -> type:
    """The features extractor ``policy_kwargs.features_extractor_class`` names: SB3's ``CombinedExtractor``
    (the default) or a ``BaseFeaturesExtractor`` subclass of your own by import spec ``module:Class``."""
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor

    from envs.rewards import import_spec

    key = "policy_kwargs.features_extractor_class"
    if value in ("CombinedExtractor", CombinedExtractor):
        return CombinedExtractor
    if isinstance(value, type):
        target, spec = value, extractor_spec(value)
    elif isinstance(value, str):
        spec = value
        target = import_spec(spec, f"{where}: {key}", HyperparamError)
    else:
        raise HyperparamError(
            f"{where}: {key} must be an import spec 'module:Class' of a BaseFeaturesExtractor subclass "
            f"(e.g. 'my_extractors:SplitMLP') or 'CombinedExtractor' (the default), got {value!r}"
        )
    if not (isinstance(target, type) and issubclass(target, BaseFeaturesExtractor)):
        raise HyperparamError(
            f"{where}: {key} {spec!r} is not a features extractor: it must be a subclass of "
            f"stable_baselines3.common.torch_layers.BaseFeaturesExtractor taking the dict observation space"
        )
    if target.__module__ == "__main__" or "<locals>" in target.__qualname__:
        raise HyperparamError(
            f"{where}: {key} {spec!r} is defined in a script or a function, where a saved run cannot find it "
            f"again; move it to a module on the Python path and name it 'module:Class'"
        )
    return target


def extractor_spec(cls: type) -> str:
    """How ``config.yml`` names a features extractor class: ``module:Class`` (``CombinedExtractor`` for SB3's)."""
    from stable_baselines3.common.torch_layers import CombinedExtractor

    return "CombinedExtractor" if cls is CombinedExtractor else f"{cls.__module__}:{cls.__qualname__}"


def extractor_of_run(run_config: Mapping[str, Any], where: str) -> type | None:
    """The features extractor of your own that a run's ``config.yml`` names (``hyperparams.policy_kwargs``),
    imported; None for SB3's default. :mod:`agents.safe_load` resolves this one class besides its
    allow-list when it unpickles the run's ``model.zip``."""
    hyperparams = run_config.get("hyperparams")
    policy_kwargs = hyperparams.get("policy_kwargs") if isinstance(hyperparams, Mapping) else None
    value = policy_kwargs.get("features_extractor_class") if isinstance(policy_kwargs, Mapping) else None
    return None if value in (None, "CombinedExtractor") else _extractor_class(where, value)


def _check_kwargs_of(where: str, key: str, policy_kwargs: Mapping[str, Any], target: type) -> None:
    """``policy_kwargs[key]`` must hold keywords ``target`` takes (less those SB3 passes itself), with
    finite numbers; otherwise the optimizer or extractor fails deep inside its constructor."""
    kwargs = policy_kwargs.get(key)
    if not kwargs:
        return
    hint = " (the learning rate is the learning_rate hyperparameter)" if "lr" in kwargs else ""
    drop = {"self", "params", "lr", "observation_space", "args", "kwargs"}
    _keywords_of(f"{where}: policy_kwargs.{key}", target.__name__, target, kwargs, drop, hint)
    for name, value in kwargs.items():
        numbers = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise HyperparamError(f"{where}: policy_kwargs.{key}.{name} must be finite, got {value!r}")


def _named_class(where: str, key: str, value: Any) -> type:
    """The class a class-valued policy kwarg names, from its allow-list in :data:`_CLASS_KEYS`.

    ``activation_fn: "nn.Tanh"`` (or ``torch.nn.Tanh``, ``Tanh``, ``tanh``, or the class itself).
    """
    import torch

    if key not in _CLASS_KEYS:
        raise HyperparamError(
            f"{where}: policy_kwargs.{key} cannot be set: a controller's model.zip may only hold classes "
            f"agents.safe_load unpickles, and this one has no allowed choice but its default; drop the key"
        )
    module_name, names = _CLASS_KEYS[key]
    module = getattr(torch, module_name)
    if isinstance(value, str):
        name = value.removeprefix("torch.").removeprefix(f"{module_name}.")
        match = [a for a in names if a.lower() == name.lower()]
        if match:
            return getattr(module, match[0])
    elif isinstance(value, type) and value in tuple(getattr(module, a) for a in names):
        return value
    raise HyperparamError(
        f"{where}: policy_kwargs.{key} must name one of {', '.join(f'{module_name}.{a}' for a in names)} "
        f'(e.g. "{module_name}.{names[1]}" or "{names[1].lower()}"), got {value!r}'
    )


def _keywords_of(
    where: str, owner: str, target: type, kwargs: Mapping[str, Any], drop: set[str], hint: str = ""
) -> Mapping[str, inspect.Parameter]:
    """``target``'s constructor parameters; HyperparamError naming every key of ``kwargs`` it does not
    take (``drop``: those it takes but that are not the user's to set)."""
    params = inspect.signature(target.__init__).parameters
    accepted = set(params) - drop
    unknown = sorted(str(k) for k in kwargs if k not in accepted)
    if unknown:
        raise HyperparamError(
            f"{where}: {owner} does not take {', '.join(map(repr, unknown))}{hint}; "
            f"valid keys: {', '.join(sorted(accepted))}"
        )
    return params


def _check_normalize_kwargs(where: str, kwargs: Any) -> None:
    """``normalize_kwargs`` must be keywords ``VecNormalize`` takes (not ``venv``), with finite numbers."""
    from stable_baselines3.common.vec_env import VecNormalize

    if not kwargs:
        return
    params = _keywords_of(f"{where}: normalize_kwargs", "VecNormalize", VecNormalize, kwargs, {"self", "venv"})
    for key, value in kwargs.items():
        expected = _type_mismatch(value, params[key].annotation)
        if expected:
            raise HyperparamError(
                f"{where}: normalize_kwargs.{key} must be {expected}, got {value!r} ({type(value).__name__})"
            )


def to_yaml_ready(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The kwargs with schedules written back as ``lin_X`` and an activation class as its name
    (``nn.Tanh``), for ``config.yml``."""
    out = {}
    for k, v in kwargs.items():
        out[k] = f"lin_{v.initial}" if callable(v) and hasattr(v, "initial") else v
        if k == "policy_kwargs" and isinstance(v, Mapping):
            named = {c: f"{_CLASS_KEYS[c][0]}.{v[c].__name__}" for c in _CLASS_KEYS if isinstance(v.get(c), type)}
            if isinstance(v.get("features_extractor_class"), type):
                named["features_extractor_class"] = extractor_spec(v["features_extractor_class"])
            out[k] = {**v, **named}
    return out
