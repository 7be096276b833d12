"""A timm-style model registry: ``@register_model`` factories, ``create_model``, ``list_models``.

Models of your own join it from their own module: decorate a factory with ``@tnn.register_model``
and have the module imported. Every command (``tnn pretrain --arch``, ``tnn evaluate``, the env
loading a checkpoint) finds it when the module is named in ``$TNN_MODEL_MODULES`` (comma-separated
module names, importable from ``sys.path``) or is an installed package's ``tnn.models`` entry point
(``[project.entry-points."tnn.models"] mynet = "mypkg.models"`` in its ``pyproject.toml``). They are
imported once, the first time a name is looked up or listed.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from tnn.models._base import ThrottleNet

__all__ = [
    "MODEL_MODULES_ENV",
    "PLUGIN_GROUP",
    "PluginError",
    "create_model",
    "list_models",
    "load_plugins",
    "register_model",
]

MODEL_MODULES_ENV = "TNN_MODEL_MODULES"
"""Environment variable: comma-separated modules to import for the models they register."""
PLUGIN_GROUP = "tnn.models"
"""Entry-point group of installed packages whose import registers models."""

_MODELS: dict[str, Callable[..., ThrottleNet]] = {}
_PLUGINS: list[str] | None = None  # the modules imported by load_plugins, once it ran
F = TypeVar("F", bound=Callable[..., ThrottleNet])
_HOW = (
    f"write @tnn.register_model factories in a module and name it in ${MODEL_MODULES_ENV} or in a "
    f'"{PLUGIN_GROUP}" entry point'
)


class PluginError(ValueError):
    """A model module named in ``$TNN_MODEL_MODULES`` or an entry point failed to import."""


def load_plugins() -> list[str]:
    """Import the model modules of ``$TNN_MODEL_MODULES`` and of ``tnn.models`` entry points (once per
    process); the modules imported. One that fails to import is a :class:`PluginError` naming where
    it was listed and why."""
    global _PLUGINS
    if _PLUGINS is not None:
        return list(_PLUGINS)
    _PLUGINS = []
    sources = [
        (name.strip(), f"${MODEL_MODULES_ENV}")
        for name in os.environ.get(MODEL_MODULES_ENV, "").split(",")
        if name.strip()
    ]
    for ep in entry_points(group=PLUGIN_GROUP):
        dist = getattr(ep.dist, "name", None)
        sources.append((ep.value, f'the "{PLUGIN_GROUP}" entry point {ep.name!r}' + (f" of {dist}" if dist else "")))
    for module, where in sources:
        try:
            importlib.import_module(module.split(":")[0])
        except Exception as err:  # a plugin's own bug: say whose it is, not a bare traceback
            _PLUGINS = None  # try again (after the fix) on the next lookup
            raise PluginError(
                f"model module {module!r} (listed in {where}) failed to import: {type(err).__name__}: {err}; "
                "fix it, put it on PYTHONPATH, or remove it from that list"
            ) from err
        _PLUGINS.append(module)
    return list(_PLUGINS)


def register_model(fn: F) -> F:
    """Register a factory under its function name."""
    name = fn.__name__
    if name in _MODELS:
        where = getattr(_MODELS[name], "__module__", "?")
        raise ValueError(f"model {name!r} is already registered (by {where}); give the factory another name")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names (plugins' included) matching a shell-style ``pattern``, sorted."""
    load_plugins()
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


_CHANNEL_COUNTS = ("widths", "stem_width", "base_width", "cardinality", "growth")  # where a model has them


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> ThrottleNet:
    """Build a registered model; the arguments are recorded so a checkpoint can rebuild it."""
    if name not in _MODELS:
        load_plugins()
    if name not in _MODELS:
        known = ", ".join(list_models())
        raise ValueError(f"unknown model {name!r}; known models: {known} (a model of your own: {_HOW})")
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
    if not isinstance(model, ThrottleNet):
        raise ValueError(
            f"create_model({name!r}): its factory returned a {type(model).__name__}, not a tnn ThrottleNet "
            "(subclass tnn.ThrottleNet and implement forward_level)"
        )
    model.arch, model.model_kwargs = name, kwargs
    return model
