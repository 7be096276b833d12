"""Versioned checkpoints: the state dict plus the model card, safe to load.

A checkpoint is a plain dict of tensors and primitives, so it loads with
``torch.load(weights_only=True)`` — never with an unrestricted unpickler — and it is written
atomically (temporary file, fsync, rename), so an interrupted save never leaves a broken file.

Layout (format version 1)::

    {"format": "tnn-checkpoint", "version": 1,
     "arch": "resnet20", "model_kwargs": {...},      # rebuilds the model via create_model
     "state_dict": {...}, "dtype": "float32" | "float16",
     "card": {"arch", "levels", "strategy", "params", "flops", ... user meta:
              "dataset", "variant", "accuracy" {u: top-1 %}, "made" {command, seed, ...}}}

Level keys ("params", "flops", "accuracy") are strings: a float ``u`` is stored as ``f"{u:g}"``
(six significant digits: 0.125 -> "0.125", 1.0 -> "1", 1/3 -> "0.333333"); :func:`accuracy_at`
looks a level up by its float value.
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tnn.models import ThrottleNet, create_model

__all__ = [
    "COMPUTED_FIELDS",
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "accuracy_at",
    "atomic_write",
    "check_writable",
    "describe_error",
    "load_checkpoint",
    "model_from_payload",
    "read_checkpoint",
    "resolve_checkpoint_path",
    "save_checkpoint",
]

FORMAT = "tnn-checkpoint"
VERSION = 1
#: card fields save_checkpoint computes from the model; meta keyword arguments may not replace them
COMPUTED_FIELDS = ("arch", "model_kwargs", "levels", "strategy", "input_shape", "num_classes", "params", "flops")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def describe_error(err: BaseException) -> str:
    """``"Type: first line of the message"``: what a loader's failure says, short enough for a one-line error
    (terminal colour codes, which torch puts in some messages, removed)."""
    lines = _ANSI.sub("", str(err)).strip().splitlines()
    return f"{type(err).__name__}: {lines[0].strip()}" if lines else type(err).__name__


def _unpickling_detail(err: BaseException) -> str:
    """What a refused ``weights_only`` load found: the class it would have had to import, where torch names it."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    return f"it pickles {found.group(1)}" if found else describe_error(err)


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6
_PICKLE_PROTO = b"\x80"  # the legacy format starts with a pickle (protocol >= 2)

_UMASK = os.umask(0o022)
os.umask(_UMASK)


class CheckpointError(ValueError):
    """A file that is not a readable TNN checkpoint of a version this library knows."""


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """``path`` as a Path if a file can be written there (parents are created as needed); a clear OSError if not.

    Commands call it on their output paths before computing anything, so a bad ``--out`` costs no work.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory; give a file path, e.g. {path / 'out.json'}")
    for parent in path.parents:  # the nearest existing ancestor must be a directory we can write into
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"cannot write {what} {path}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(f"cannot write {what} {path}: no write permission in {parent}")
            break
    return path


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it into place.

    A path that cannot be written (a directory, a path under a file, no permission) raises an OSError
    that names ``path``, before ``write`` runs.
    """
    path = check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise type(err)(f"cannot write {path}: {err.strerror or err}") from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _check_primitive(value: Any, where: str) -> Any:
    """Meta must survive ``weights_only`` loading: primitives, lists, tuples, str-keyed dicts."""
    if value is None:
        return value
    for kind in (bool, int, float, str):  # plain types only: subclasses (TorchVersion, numpy) don't unpickle
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, Mapping):  # float keys become f"{k:g}" strings; str and int keys stay as they are
        out = {}
        for k, v in value.items():
            key = f"{float(k):g}" if isinstance(k, float) else k
            if not isinstance(key, (str, int)):
                raise ValueError(f"checkpoint meta {where}: keys must be str, int or float, got {k!r}")
            out[key] = _check_primitive(v, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_check_primitive(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return _check_primitive(value.item(), where)
    raise ValueError(
        f"checkpoint meta {where}: {type(value).__name__} is not storable; use numbers, strings, lists, dicts"
    )


def _check_accuracy(accuracy: Any, levels: tuple[float, ...]) -> dict[str, float]:
    """``{u: top-1 %}`` with every ``u`` one of ``levels`` and every % a finite number in [0, 100]."""
    if not isinstance(accuracy, Mapping):
        raise ValueError(f"save_checkpoint: accuracy must be a dict {{u: top-1 %}}, got {type(accuracy).__name__}")
    known = {f"{u:g}" for u in levels}
    out = {}
    for u, acc in accuracy.items():
        try:
            key = f"{float(u):g}"
        except (TypeError, ValueError):
            key = None
        if key not in known:
            raise ValueError(
                f"save_checkpoint: accuracy key {u!r} is not one of the model's levels ({', '.join(sorted(known))})"
            )
        if isinstance(acc, bool) or not isinstance(acc, numbers.Real) or not 0.0 <= float(acc) <= 100.0:
            raise ValueError(f"save_checkpoint: accuracy at u={key} must be a top-1 % in [0, 100], got {acc!r}")
        out[key] = float(acc)
    return out


def save_checkpoint(model: ThrottleNet, path: str | os.PathLike, *, half: bool = False, **meta: Any) -> Path:
    """Write ``model`` and its card to ``path`` atomically; ``half`` stores float weights as fp16.

    The card always holds arch, model_kwargs, levels, strategy, parameter and FLOP counts; the
    keyword arguments add the rest (dataset, variant, accuracy {u: %}, made {command, seed, ...}); they
    may not replace the computed fields (ValueError). A float key ``u`` (as in ``accuracy``) is stored
    as the string ``f"{u:g}"`` (0.125 -> "0.125", 1.0 -> "1"); str and int keys are kept as given.
    Read a level's accuracy back with :func:`accuracy_at`.
    """
    if not isinstance(model, ThrottleNet) or not model.model_kwargs:
        raise ValueError("save_checkpoint needs a model built by tnn.create_model (it records how to rebuild it)")
    clash = sorted(set(meta) & set(COMPUTED_FIELDS))
    if clash:
        raise ValueError(
            f"save_checkpoint: {', '.join(clash)} {'is' if len(clash) == 1 else 'are'} computed from the model and "
            f"cannot be given as meta; drop {'it' if len(clash) == 1 else 'them'} (build the model with the "
            "arch/levels you want instead)"
        )
    if meta.get("accuracy") is not None:  # checked before the FLOP counts, which take a while on large models
        meta = {**meta, "accuracy": _check_accuracy(meta["accuracy"], model.levels)}
    card = {
        "arch": model.arch,
        "model_kwargs": _check_primitive(model.model_kwargs, "model_kwargs"),
        "levels": list(model.levels),
        "strategy": model.strategy,
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "params": {f"{u:g}": model.params(u) for u in model.levels},
        "flops": {f"{u:g}": model.flops(u) for u in model.levels},
    }
    card.update(_check_primitive(meta, "meta"))
    state = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        state[name] = t.half() if half and t.is_floating_point() else t.clone()
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": model.arch,
        "model_kwargs": card["model_kwargs"],
        "dtype": "float16" if half else "float32",
        "state_dict": state,
        "card": card,
    }
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: itself, or ``path/model.pt`` for a run directory; clear errors else."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected a checkpoint path (str or os.PathLike), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        if (path / "model.pt").is_file():
            return path / "model.pt"
        found = list(itertools.islice(path.rglob("model.pt"), 3))
        hint = f" (it holds {', '.join(map(str, found))})" if found else ""
        raise FileNotFoundError(f"{path} is a directory without a model.pt; name a checkpoint file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate the raw payload (weights_only); CheckpointError on anything foreign.

    A run directory (one holding ``model.pt``, as ``tnn pretrain --out`` writes) stands for its ``model.pt``.
    """
    path = resolve_checkpoint_path(path)
    with path.open("rb") as fh:
        head = fh.read(4)
    if not head:
        raise CheckpointError(
            f"{path} is empty, not a PyTorch checkpoint; point to a model.pt written by tnn.save_checkpoint"
        )
    if not head.startswith(_ZIP_MAGIC) and not head.startswith(_PICKLE_PROTO):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint: it is neither a zip archive (torch.save) nor a pickle "
            f"(it starts with {head!r}); point to a model.pt written by tnn.save_checkpoint"
        )
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; we refuse them anyway
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds objects other than tensors and primitives, which are never unpickled "
            f"(weights_only=True): not a TNN checkpoint, or a tampered one ({_unpickling_detail(err)})"
        ) from None
    except Exception as err:  # the loader's failures on garbage are many and unspecified; name the file
        raise CheckpointError(f"{path} is corrupt or not a PyTorch file ({describe_error(err)})") from None
    if isinstance(payload, dict) and {"epoch", "optimizer", "model", "config"} <= set(payload):
        raise CheckpointError(
            f"{path} is a tnn pretrain run state (what --resume continues from), not a model checkpoint; "
            "use the model.pt beside it"
        )
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a TNN checkpoint (no 'format': {FORMAT!r}); "
            "write checkpoints with tnn.save_checkpoint"
        )
    version = payload.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: invalid checkpoint version {version!r}")
    if version > VERSION:
        raise CheckpointError(
            f"{path} is checkpoint format v{version}, newer than this tnn reads (v{VERSION}); upgrade tnn"
        )
    for key in ("arch", "model_kwargs", "state_dict", "card"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint is missing {key!r}")
    for key, kind in (("arch", str), ("model_kwargs", dict), ("state_dict", dict), ("card", dict)):
        if not isinstance(payload[key], kind):
            raise CheckpointError(
                f"{path}: checkpoint {key!r} is of type {type(payload[key]).__name__}, not {kind.__name__}: "
                "the file is damaged or was not written by tnn.save_checkpoint"
            )
    bad_kwargs = [k for k in payload["model_kwargs"] if not isinstance(k, str) or k == "name"]
    if bad_kwargs:
        raise CheckpointError(
            f"{path}: checkpoint model_kwargs has keys {', '.join(map(repr, bad_kwargs[:3]))} that are not "
            "create_model arguments (they must be strings other than 'name'): the file is damaged or was not "
            "written by tnn.save_checkpoint"
        )
    bad = [k for k, v in payload["state_dict"].items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(
            f"{path}: checkpoint state_dict holds entries that are not named tensors ({', '.join(map(repr, bad[:3]))}"
            f"{', ...' if len(bad) > 3 else ''}): the file is damaged or was not written by tnn.save_checkpoint"
        )
    return payload


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[ThrottleNet, dict]:
    """Rebuild the model (float32, eval mode) and return it with its card."""
    from tnn.runtime import resolve_device

    map_location = resolve_device(map_location)
    payload = read_checkpoint(path)
    return model_from_payload(payload, path).to(map_location).eval(), payload["card"]


def model_from_payload(payload: dict, path: str | os.PathLike) -> ThrottleNet:
    """The float32 model a validated payload (from :func:`read_checkpoint`) describes."""
    try:
        model = create_model(payload["arch"], **payload["model_kwargs"])
    except (ValueError, TypeError) as err:  # TypeError: keys that are not keyword arguments
        raise CheckpointError(f"{path}: cannot rebuild the model: {err}") from None
    own = model.state_dict()
    mismatched = [
        f"{k} is {v.dtype} where the model has {own[k].dtype}"
        for k, v in payload["state_dict"].items()
        if k in own and v.is_floating_point() != own[k].is_floating_point()
    ]
    if mismatched:
        raise CheckpointError(
            f"{path}: stored tensors of the wrong kind (floating vs integer): {', '.join(mismatched[:3])}"
            f"{', ...' if len(mismatched) > 3 else ''}; the file is damaged or was not written by tnn.save_checkpoint"
        )
    levels = payload["card"].get("levels")
    if levels is not None and not (
        isinstance(levels, list)
        and all(isinstance(u, numbers.Real) for u in levels)
        and [f"{float(u):g}" for u in levels] == [f"{u:g}" for u in model.levels]
    ):
        raise CheckpointError(
            f"{path}: the card's levels {levels} are not the levels of the model its arch and model_kwargs build "
            f"({list(model.levels)}); the file is damaged or was edited by hand"
        )
    dtype = payload.get("dtype")
    if dtype is not None and dtype not in ("float32", "float16"):
        raise CheckpointError(f"{path}: unknown weight dtype {dtype!r} (float32 or float16); the file is damaged")
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit {payload['arch']}: {err}") from None
    if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in state.values()):
        raise CheckpointError(f"{path}: weights contain NaN or inf")
    return model


def accuracy_at(card: Mapping[str, Any], u: float) -> float | None:
    """The top-1 accuracy (%) a checkpoint card records at level ``u``; None if it records none there.

    Keys are looked up as :func:`save_checkpoint` stores them (``f"{u:g}"``), so ``accuracy_at(card, 0.125)``
    finds ``"0.125"`` and ``accuracy_at(card, 1.0)`` finds ``"1"``; int keys and other spellings of the same
    number ("0.50") match too.
    """
    if isinstance(u, bool) or not isinstance(u, numbers.Real) or not math.isfinite(float(u)):
        raise ValueError(f"accuracy_at: u must be a finite real number (a level such as 0.125), got {u!r}")
    if not isinstance(card, Mapping):
        raise ValueError(f"accuracy_at: expected a checkpoint card (a dict), got {type(card).__name__}")
    table = card.get("accuracy")
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ValueError(f"accuracy_at: the card's 'accuracy' is a {type(table).__name__}, not a dict {{u: %}}")
    key = f"{float(u):g}"
    if key in table:
        return float(table[key])
    for k, value in table.items():
        try:
            if f"{float(k):g}" == key:
                return float(value)
        except (TypeError, ValueError):
            continue
    return None
