"""Check ``gymnasium.make`` kwargs against the env's constructor before any env is built.

A typo in ``--env-kwargs`` would otherwise surface as a ``TypeError`` deep inside the vectorised env
(after the run directory was written); here it is a ``ValueError`` that names the key and lists the
valid ones. The ``load`` kwarg's mapping form is checked against :class:`envs.load.MarkovLoad`, and an
id that is not a TNN environment at all is named as such.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

__all__ = ["check_env_kwargs", "constructor_args", "tnn_env_ids"]


def constructor_args(entry: Any) -> set[str] | None:
    """The keyword arguments ``entry`` (a class or function) takes; None if it takes any (``**kwargs``).

    A class whose ``__init__`` forwards ``**kwargs`` adds its base classes' arguments (e.g.
    ``ThrottleDiscreteEnv`` → ``ThrottleEnv``).
    """
    names: set[str] = set()
    for owner in inspect.getmro(entry) if inspect.isclass(entry) else (entry,):
        fn = owner.__init__ if inspect.isclass(owner) else owner
        if inspect.isclass(owner) and "__init__" not in vars(owner):
            continue
        if fn is object.__init__:
            return None
        params = inspect.signature(fn).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def _entry_point(env_id: str) -> Any:
    import gymnasium

    import envs  # noqa: F401  (registers the tnn ids)

    try:
        entry = gymnasium.spec(env_id).entry_point
    except gymnasium.error.Error as err:  # an unknown id, with gymnasium's guess at the one meant
        raise ValueError(f"unknown env id {env_id!r}: {err}") from None
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        return getattr(importlib.import_module(module), attr)
    return entry


def tnn_env_ids() -> list[str]:
    """The registered ``tnn/*`` env ids (the shipped ones, and any a user registered under tnn/)."""
    import gymnasium

    import envs  # noqa: F401  (registers the tnn ids)

    return sorted(i for i in gymnasium.registry if i.startswith("tnn/"))


def check_env_kwargs(env_id: str, kwargs: Mapping[str, Any]) -> None:
    """Raise ValueError naming any key of ``kwargs`` (or of its ``load`` mapping) the env does not take.

    An env whose entry point is a class other than :class:`envs.throttle.ThrottleEnv` (or a subclass)
    is refused first: the tools pass it kwargs of their own (reward, split, sequential) and read the
    network inside it, so e.g. CartPole-v1 is named as not a TNN environment, not for those kwargs.
    """
    from envs.throttle import ThrottleEnv

    entry = _entry_point(env_id)
    if inspect.isclass(entry) and not issubclass(entry, ThrottleEnv):
        raise ValueError(
            f"{env_id} is not a TNN environment (one holding a pretrained throttleable network, "
            f"envs.throttle.ThrottleEnv); use --env-id {' or '.join(tnn_env_ids())}"
        )
    accepted = constructor_args(entry)
    if accepted is not None:
        unknown = sorted(k for k in kwargs if k not in accepted)
        if unknown:
            raise ValueError(
                f"{env_id} does not take the env kwarg(s) {', '.join(map(repr, unknown))}; "
                f"valid keys: {', '.join(sorted(accepted))}"
            )
    load = kwargs.get("load")
    if isinstance(load, Mapping):
        from envs.load import MarkovLoad

        accepted = constructor_args(MarkovLoad) or set()
        unknown = sorted(k for k in load if k not in accepted)
        if unknown:
            raise ValueError(
                f"env kwarg load: MarkovLoad does not take {', '.join(map(repr, unknown))}; "
                f'valid keys: {", ".join(sorted(accepted))} (or load: "markov" for the default chain)'
            )
