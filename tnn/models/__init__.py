"""Throttleable model families; importing this package registers them all."""

from tnn.models import c3d, densenet, resnet, resnext, vgg  # noqa: F401  (registration side effects)
from tnn.models._base import ThrottleNet
from tnn.models._registry import PluginError, create_model, list_models, load_plugins, register_model

__all__ = ["PluginError", "ThrottleNet", "create_model", "list_models", "load_plugins", "register_model"]
