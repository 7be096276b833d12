"""Load the Stable-Baselines3 files of a controller run without running code they may carry.

SB3 keeps a run's state in three pickle-bearing places: ``model.zip`` (its ``data`` JSON holds
cloudpickled spaces, schedules, buffer classes, …), ``vecnormalize.pkl`` and, for SAC and DQN, the
replay buffer. A plain ``pickle.load`` runs whatever a foreign or tampered file asks for. Here every
pickle goes through an unpickler that resolves only an allow-list of globals (numpy arrays and
random generators, gymnasium spaces, SB3's buffer, schedule and policy classes, torch optimiser
classes): data, not code. SB3's schedules that are closures (``lin_`` learning rates) are pickled as
code; they are never unpickled but taken from the run's own hyperparameters (``overrides``) or, when
a model is only loaded to predict, replaced by a constant (SB3 rebuilds ``lr_schedule`` from
``learning_rate`` on load, and no prediction reads either). The weights themselves SB3 loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agents.config import ACTIVATIONS, OPTIMIZERS, SCHEDULE_KEYS
from tnn.checkpoint import describe_error
from tnn.data import NUMPY_ARRAY_GLOBALS

__all__ = ["RunFileError", "UnsafePickleError", "load_model", "load_pickle", "restricted_loads"]

_NUMPY = {
    *NUMPY_ARRAY_GLOBALS,
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._pcg64", "PCG64DXSM"),
    ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._philox", "Philox"),
    ("numpy.random._sfc64", "SFC64"),
}
_SPACES = {
    (f"gymnasium.spaces.{module}", name)
    for module, name in (
        ("box", "Box"),
        ("dict", "Dict"),
        ("discrete", "Discrete"),
        ("multi_discrete", "MultiDiscrete"),
        ("multi_binary", "MultiBinary"),
        ("tuple", "Tuple"),
    )
}
_SB3 = {
    ("stable_baselines3.common.utils", "ConstantSchedule"),
    ("stable_baselines3.common.utils", "FloatSchedule"),
    ("stable_baselines3.common.utils", "LinearSchedule"),
    ("stable_baselines3.common.type_aliases", "TrainFreq"),
    ("stable_baselines3.common.type_aliases", "TrainFrequencyUnit"),
    *(
        ("stable_baselines3.common.buffers", name)
        for name in ("ReplayBuffer", "DictReplayBuffer", "RolloutBuffer", "DictRolloutBuffer")
    ),
    *(
        ("stable_baselines3.common.policies", name)
        for name in ("ActorCriticPolicy", "ActorCriticCnnPolicy", "MultiInputActorCriticPolicy")
    ),
    *(
        (f"stable_baselines3.{algo}.policies", name)
        for algo, base in (("dqn", "DQNPolicy"), ("sac", "SACPolicy"))
        for name in (base, "MlpPolicy", "CnnPolicy", "MultiInputPolicy")
    ),
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
}
_TORCH = {
    ("torch", "device"),
    *((f"torch.optim.{name.lower()}", name) for name in OPTIMIZERS),
    *(("torch.nn.modules.activation", name) for name in ACTIVATIONS),
}
_COLLECTIONS = {("collections", "deque"), ("collections", "OrderedDict")}
ALLOWED_GLOBALS = frozenset(_NUMPY | _SPACES | _SB3 | _TORCH | _COLLECTIONS)

# model.zip entries that may be pickled closures (``lin_`` schedules): SB3 rebuilds these on load ...
_REBUILT = ("lr_schedule", "exploration_schedule")
# ... and SCHEDULE_KEYS (the ones a lin_ schedule may set) come from the run's hyperparameters (or
# are unused when the model only predicts)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list (it could run code)."""


class RunFileError(ValueError):
    """A run's file is corrupt, foreign, or carries code; the message names the file and the fix."""


class _Restricted(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, extra: frozenset[tuple[str, str]]) -> None:
        super().__init__(file)
        self._extra = extra

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS and (module, name) not in self._extra:
            raise UnsafePickleError(f"{module}.{name}")
        return super().find_class(module, name)


def restricted_loads(data: bytes, allow: Iterable[type] = ()) -> Any:
    """``pickle.loads`` that resolves only :data:`ALLOWED_GLOBALS` and the classes in ``allow`` (ones the
    caller has imported itself, such as the features extractor a run's ``config.yml`` names); anything
    else is an :class:`UnsafePickleError` naming the global."""
    extra = frozenset((cls.__module__, cls.__qualname__) for cls in allow)
    return _Restricted(io.BytesIO(data), extra).load()


def load_pickle(path: str | Path, expected: type, what: str, fix: str) -> Any:
    """The ``expected`` object pickled at ``path`` (a ``vecnormalize.pkl``, a replay buffer).

    A truncated, foreign or code-carrying file is a ValueError naming it and ``fix``.
    """
    try:
        obj = restricted_loads(Path(path).read_bytes())
    except UnsafePickleError as err:
        raise RunFileError(f"{path} is not {what}: it asks to load {err}, which tnn never unpickles; {fix}") from None
    except Exception as err:  # truncated or foreign: unpickling errors are many and unspecified
        raise RunFileError(f"{path} is corrupt or not {what} ({describe_error(err)}); {fix}") from None
    if not isinstance(obj, expected):
        raise RunFileError(f"{path} holds a {type(obj).__name__}, not {what}; {fix}")
    return obj


def _zip_objects(
    path: Path, overrides: Mapping[str, Any], predict_only: bool, fix: str, allow: Iterable[type] = ()
) -> dict[str, Any]:
    """Every serialised entry of ``model.zip``'s ``data``, decoded safely, as SB3 ``custom_objects``."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as err:
        raise RunFileError(f"{path} is not an SB3 model archive ({describe_error(err)}); {fix}") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{path}: its 'data' entry is not a JSON object; {fix}")
    objects: dict[str, Any] = {}
    for key, item in data.items():
        if key in overrides:
            objects[key] = overrides[key]
            continue
        if not (isinstance(item, dict) and ":serialized:" in item):
            continue
        try:
            objects[key] = restricted_loads(base64.b64decode(item[":serialized:"]), allow)
        except UnsafePickleError as err:
            if key in _REBUILT or (key in SCHEDULE_KEYS and predict_only):
                objects[key] = 0.0  # rebuilt by SB3's _setup_model, or unused when the model only predicts
                continue
            raise RunFileError(
                f"{path}: its '{key}' is pickled code ({err}), which tnn never unpickles"
                + (" (a schedule: pass it from the run's hyperparameters)" if key in SCHEDULE_KEYS else "")
                + (
                    " (a features extractor of your own loads only when the run's config.yml names it as "
                    "policy_kwargs.features_extractor_class)"
                    if key == "policy_kwargs"
                    else ""
                )
                + f"; {fix}"
            ) from None
        except Exception as err:
            raise RunFileError(f"{path}: its '{key}' entry is corrupt ({describe_error(err)}); {fix}") from None
    return objects


def load_model(
    cls: type,
    path: str | Path,
    *,
    env: Any = None,
    device: str = "auto",
    overrides: Mapping[str, Any] | None = None,
    predict_only: bool = False,
    fix: str = "check the run's files or retrain it",
    allow: Iterable[type] = (),
) -> Any:
    """``cls.load(path)`` for an SB3 algorithm class, without unpickling code.

    ``overrides`` replace entries of the archive (the run's ``learning_rate``/``clip_range`` schedules
    when training resumes); with ``predict_only`` the schedules may be left out. ``allow``: classes the
    archive may name besides the allow-list (the features extractor the run's ``config.yml`` names,
    imported by the caller: :func:`agents.config.extractor_of_run`).
    """
    path = Path(path)
    objects = _zip_objects(path, overrides or {}, predict_only, fix, tuple(allow))
    return cls.load(path, env=env, device=device, custom_objects=objects)
