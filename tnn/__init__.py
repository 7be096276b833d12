"""TNN: runtime-throttleable neural networks (arXiv 2011.02836) whose compute is set per call by u.

``model(x, u=0.25)`` runs a genuinely smaller network (sliced weights), and ``model.flops(u)``
says exactly what it spent. Needs only torch and numpy.
"""

from tnn import data
from tnn.checkpoint import CheckpointError, accuracy_at, load_checkpoint, save_checkpoint
from tnn.layers import DEFAULT_NUM_LEVELS, STRATEGIES, CostCounter
from tnn.models import ThrottleNet, create_model, list_models, register_model

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_NUM_LEVELS",
    "STRATEGIES",
    "CheckpointError",
    "CostCounter",
    "ThrottleNet",
    "accuracy_at",
    "create_model",
    "data",
    "list_models",
    "load_checkpoint",
    "register_model",
    "save_checkpoint",
]
