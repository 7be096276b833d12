"""A timm-style model registry: ``@register_model`` factories, ``create_model``, ``list_models``."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from tnn.models._base import ThrottleNet

__all__ = ["create_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., ThrottleNet]] = {}
F = TypeVar("F", bound=Callable[..., ThrottleNet])


def register_model(fn: F) -> F:
    """Register a factory under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> ThrottleNet:
    """Build a registered model; the arguments are recorded so a checkpoint can rebuild it."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    fn = _MODELS[name]
    kwargs = {"num_classes": num_classes, "in_channels": in_channels, **kwargs}
    params = inspect.signature(fn).parameters
    accepted = [p for p, v in params.items() if v.kind is not inspect.Parameter.VAR_KEYWORD]
    if len(accepted) == len(params):  # explicit signature: check before building
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(f"create_model({name!r}) got unknown arguments {unknown}; it accepts: {accepted}")
    try:
        model = fn(**kwargs)
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        raise ValueError(f"create_model({name!r}): {err}") from None
    model.arch, model.model_kwargs = name, kwargs
    return model
