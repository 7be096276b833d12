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


_CHANNEL_COUNTS = ("widths", "stem_width", "base_width", "cardinality", "growth")  # where a model has them


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> ThrottleNet:
    """Build a registered model; the arguments are recorded so a checkpoint can rebuild it."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    fn = _MODELS[name]
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"create_model({name!r}): {key} must be a positive int, got {value!r}")
    size = kwargs.get("input_size")
    sizes = size if isinstance(size, list | tuple) else [size]
    if size is not None and not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
        raise ValueError(f"create_model({name!r}): input_size must be a positive int or a list of them, got {size!r}")
    for key in _CHANNEL_COUNTS:
        if key in kwargs:
            value = kwargs[key]
            counts = value if isinstance(value, list | tuple) and key == "widths" else [value]
            if not counts or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts):
                what = "a list of positive ints (channels per stage)" if key == "widths" else "a positive int"
                raise ValueError(f"create_model({name!r}): {key} must be {what}, got {value!r}")
    kwargs = {"num_classes": num_classes, "in_channels": in_channels, **kwargs}
    params = inspect.signature(fn).parameters
    accepted = [p for p, v in params.items() if v.kind is not inspect.Parameter.VAR_KEYWORD]
    if len(accepted) == len(params):  # explicit signature: check before building
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(f"create_model({name!r}) got unknown arguments {unknown}; it accepts: {accepted}")
    try:
        model = fn(**kwargs)
    except TypeError as err:  # a duplicated or mistyped argument: name the model and what went wrong
        raise ValueError(f"create_model({name!r}, {kwargs}): {err}") from None
    model.arch, model.model_kwargs = name, kwargs
    return model
