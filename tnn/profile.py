"""Measured cost profiles: FLOPs, latency and energy of every level of a TNN on one device.

The controller trades accuracy against *measured* cost, so a :class:`CostProfile` holds, per level,
exact FLOPs and active parameters (from the model), the latency of one forward call at the
profile's batch size (median, p10, p90 of many interleaved repetitions) and the energy per input,
with where that energy came from:

- ``nvml``: NVIDIA's total-energy counter (``nvidia-ml-py``), read over windows of >= 1 s of
  back-to-back calls, window edges aligned to the counter's ~100 ms updates; the GPU's idle power
  is measured too, so both the total (idle share included) and the above-idle energy are recorded;
- ``rapl``: the same windows on Intel/AMD RAPL package counters (``/sys/class/powercap``);
- ``model``: nothing was measured — energy = an assumed active power × measured latency / batch
  (or, in :meth:`CostProfile.from_flops`, FLOPs × an assumed energy per FLOP). The profile's
  ``energy_model`` field states the assumption; never mistake it for a measurement.

Format (``version`` 1; readers refuse newer versions): a JSON object with ``model``,
``input_shape``, ``num_classes``, ``in_channels``, ``batch_size``, ``device`` {``kind``: cpu | cuda,
``name``: the GPU's name, or the CPU's model name and the instruction set torch dispatched to, e.g.
``AMD EPYC, AVX2``; profiles made before 2026-11-28 lack the latter}, the torch version, the date,
and ``levels``: one entry per level with ``u``, ``flops``,
``params``, ``latency_ms`` {median, p10, p90} of one forward call at that batch size, ``energy_mj``
{median, p10, p90, ``source``} per input including the idle share, and ``energy_dynamic_mj``, the
same above idle (:meth:`CostProfile.to_dict` writes it). Optional fields record how it was
measured (threads, repeats, ``cuda_graphs``, ...), among them ``memory_format``, the layout of the
timed input: ``contiguous_format`` (NCHW, the default; what a file without the field means),
``channels_last`` (NHWC images) or ``channels_last_3d`` (NDHWC clips). Adding an optional field
keeps the version: older readers keep keys they do not know.
``tnn profile`` measures and writes a profile; ``tnn profile-plot`` draws them. Needs only
torch and numpy; ``pynvml`` (from ``nvidia-ml-py``) and matplotlib are imported when used.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from tnn.bench import channels_last_format, check_channels_last, time_interleaved, to_channels_last
from tnn.checkpoint import atomic_write, check_writable
from tnn.layers import snap_level
from tnn.models import ThrottleNet

__all__ = [
    "DEFAULT_CPU_WATTS_PER_THREAD",
    "DEFAULT_FLOPS_PER_S",
    "DEFAULT_JOULES_PER_FLOP",
    "ENERGY_SOURCES",
    "MEMORY_FORMATS",
    "METRICS",
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "CostProfile",
    "EnergyCounter",
    "EnergyMeasurement",
    "LevelCost",
    "NvmlCounter",
    "ProfileError",
    "RaplCounter",
    "add_cli",
    "format_table",
    "measure_energy",
    "plot_profiles",
    "profile_model",
]

PROFILE_FORMAT = "tnn-cost-profile"
PROFILE_VERSION = 1
ENERGY_SOURCES = ("nvml", "rapl", "model")
METRICS = ("energy", "energy_dynamic", "latency", "flops")
DEVICE_KINDS = ("cpu", "cuda")
#: Memory formats of the timed input, by torch's names; the channels-last ones by input rank (4-D, 5-D).
MEMORY_FORMATS = ("contiguous_format", "channels_last", "channels_last_3d")
_CHANNELS_LAST_RANK = {"channels_last": 4, "channels_last_3d": 5}

#: Energy model for CPUs without readable RAPL: the package power attributed to the network while it
#: runs, in W per torch thread (about what one busy core of a current server CPU draws), so the
#: default active power is 5 W × threads.
DEFAULT_CPU_WATTS_PER_THREAD = 5.0
#: :meth:`CostProfile.from_flops`: sustained throughput (FLOP/s) and energy per FLOP (J); together
#: they mean 10 W, two busy cores' worth.
DEFAULT_FLOPS_PER_S = 1e10
DEFAULT_JOULES_PER_FLOP = 1e-9

_QUANTILES = ("median", "p10", "p90")


class ProfileError(ValueError):
    """A cost profile that is malformed, of a newer version, or does not fit the model; or a failed measurement."""


# --------------------------------------------------------------------------------------------- format


@dataclass(frozen=True)
class LevelCost:
    """Cost of one level: FLOPs and parameters per input, latency of one call, energy per input."""

    u: float
    flops: int
    params: int
    latency_ms: dict  # {"median", "p10", "p90"} of ONE forward call at the profile's batch size
    energy_mj: dict  # {"median", "p10", "p90", "source"} per input, idle share included
    energy_dynamic_mj: dict | None = None  # the same above idle power; None where unknown

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_TOP_FIELDS = (
    "model",
    "input_shape",
    "num_classes",
    "in_channels",
    "batch_size",
    "device",
    "torch",
    "date",
    "levels",
)


@dataclass
class CostProfile:
    """Per-level cost of one model on one device at one batch size; query it by u.

    Validated on construction and on :meth:`load`; any inconsistency is a :class:`ProfileError`.
    """

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    in_channels: int
    batch_size: int
    device: dict  # {"kind": "cpu" | "cuda", "name": str}
    torch: str
    date: str
    levels: list[LevelCost]
    version: int = PROFILE_VERSION
    latency_source: str = "measured"  # "measured" | "model" (from_flops)
    energy_model: str | None = None  # what was assumed, where any energy source is "model"
    idle_power_w: float | None = None  # measured idle power (nvml / rapl)
    threads: int | None = None
    repeats: int | None = None
    warmup: int | None = None
    cuda_graphs: bool = False
    memory_format: str = "contiguous_format"  # of the timed input: one of MEMORY_FORMATS (NCHW, NHWC, NDHWC)
    window_s: float | None = None
    windows: int | None = None
    checkpoint: dict | None = None  # {"path", "sha256", "dataset"} when profiled from a checkpoint
    load_avg: list | None = None  # the machine's 1/5/15-min load average at the start: was it quiet?
    command: str | None = None
    extra: dict = field(default_factory=dict)  # unknown keys of a file, kept for the round trip

    def __post_init__(self) -> None:
        self.input_shape = tuple(self.input_shape) if isinstance(self.input_shape, list) else self.input_shape
        if not isinstance(self.levels, list) or not all(isinstance(lv, LevelCost) for lv in self.levels):
            raise ProfileError("CostProfile.levels must be a list of LevelCost")
        _validate(self.to_dict(), "CostProfile")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        out: dict[str, Any] = {"format": PROFILE_FORMAT, "version": self.version}
        for f in dataclasses.fields(self):
            if f.name in ("version", "extra", "levels"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out.update(self.extra)
        out["levels"] = [lv.to_dict() for lv in self.levels]
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "profile") -> CostProfile:
        _validate(data, where)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "levels"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k not in ("format", "levels")}
        levels = [LevelCost(**{k: lv.get(k) for k in _LEVEL_KEYS}) for lv in data["levels"]]
        return cls(**kwargs, levels=levels, extra=extra)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CostProfile:
        """Read and validate a profile JSON; ProfileError if malformed or newer, FileNotFoundError if absent."""
        path = Path(path)
        if path.is_dir():
            found = ", ".join(p.name for p in sorted(path.glob("*.json"))[:4])
            raise IsADirectoryError(
                f"{path} is a directory; name a cost profile JSON file" + (f" in it ({found}, ...)" if found else "")
            )
        if not path.is_file():
            raise FileNotFoundError(f"no cost profile at {path}; make one with `tnn profile CKPT --out {path}`")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ProfileError(f"{path} is not JSON ({err}); regenerate it with `tnn profile`") from None
        return cls.from_dict(data, str(path))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the profile as JSON, atomically."""
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n"
        return atomic_write(path, lambda fh: fh.write(text.encode()))

    # ------------------------------------------------------------------ queries
    @property
    def levels_u(self) -> tuple[float, ...]:
        """The levels' u, ascending."""
        return tuple(lv.u for lv in self.levels)

    def level_index(self, u: object) -> int:
        """Index of the level ``u`` runs: snapped up, like the model; ValueError outside (0, 1]."""
        return snap_level(u, self.levels_u)

    def at(self, u: object) -> LevelCost:
        """The cost of the level that ``u`` runs."""
        return self.levels[self.level_index(u)]

    def cost(self, u: object, metric: str) -> float:
        """Median energy (mJ per input), median latency (ms per call) or FLOPs per input at ``u``."""
        lv = self.at(u)
        if metric == "energy":
            return float(lv.energy_mj["median"])
        if metric == "energy_dynamic":
            if lv.energy_dynamic_mj is None:
                raise ProfileError(
                    f"profile of {self.model} on {self.device['name']} has no above-idle energy; "
                    "use metric 'energy', or re-profile where idle power can be measured (nvml / rapl)"
                )
            return float(lv.energy_dynamic_mj["median"])
        if metric == "latency":
            return float(lv.latency_ms["median"])
        if metric == "flops":
            return float(lv.flops)
        raise ValueError(f"unknown cost metric {metric!r}; choose one of {list(METRICS)}")

    def check_levels(self, levels: Sequence[float]) -> None:
        """ProfileError unless ``levels`` (e.g. ``model.levels``) are this profile's levels."""
        mine = self.levels_u
        theirs = tuple(float(v) for v in levels)
        if len(mine) != len(theirs) or any(abs(a - b) > 1e-9 for a, b in zip(mine, theirs, strict=False)):
            raise ProfileError(
                f"the cost profile of {self.model} has levels {list(mine)} but the model has {list(theirs)}; "
                "profile this model (`tnn profile CKPT`) or pass the profile made for it"
            )

    def check_model(
        self, model: ThrottleNet, *, profile_name: str | None = None, checkpoint: str | os.PathLike | None = None
    ) -> None:
        """ProfileError unless this profile was measured for ``model``'s architecture.

        A profile's costs belong to an architecture at an input shape, not to particular weights (the
        shipped ResNet-20 profiles were measured with random weights), so what must agree is the model
        name, input shape, classes, levels and FLOPs per level — not a checkpoint's hash.
        ``profile_name`` (the profile's file) and ``checkpoint`` (the model's) go into the message.
        """
        problems = []
        if self.model != model.arch:
            problems.append(f"model {self.model} ≠ {model.arch}")
        if tuple(self.input_shape) != tuple(model.input_shape):
            problems.append(f"input {_shape(self.input_shape)} ≠ {_shape(model.input_shape)}")
        if self.num_classes != model.num_classes:
            problems.append(f"classes {self.num_classes} ≠ {model.num_classes}")
        mine, theirs = self.levels_u, tuple(float(v) for v in model.levels)
        if len(mine) != len(theirs) or any(abs(a - b) > 1e-9 for a, b in zip(mine, theirs, strict=False)):
            problems.append(f"levels {list(mine)} ≠ {list(theirs)}")
        elif not problems:  # the same name and shape can still be another width (model_kwargs): compare FLOPs
            for lv in self.levels:
                flops = model.flops(lv.u)
                if lv.flops != flops:
                    problems.append(f"FLOPs at u={lv.u:g} {lv.flops:,d} ≠ {flops:,d}")
                    break
        if not problems:
            return
        where = f"cost profile {profile_name}" if profile_name else "the cost profile"
        target = f"{model.arch} in {checkpoint}" if checkpoint else f"the model {model.arch}"
        command = f"tnn profile {checkpoint or 'CKPT'} --out PROFILE.json"
        raise ProfileError(
            f"{where} was measured for {self.model} ({_shape(self.input_shape)}), not for {target} "
            f"({_shape(model.input_shape)}): {'; '.join(problems)} (profile ≠ model), so its costs do not apply. "
            f"Profile this model with `{command}` and pass that profile (or profile=None for FLOPs estimates)"
        )

    @property
    def energy_source(self) -> str:
        """The source of the energy figures (``nvml``, ``rapl`` or ``model``); mixed sources read ``mixed``."""
        sources = {lv.energy_mj["source"] for lv in self.levels}
        return sources.pop() if len(sources) == 1 else "mixed"

    # ------------------------------------------------------------------ FLOPs fallback
    @classmethod
    def from_flops(
        cls,
        model: ThrottleNet,
        *,
        name: str | None = None,
        batch_size: int = 1,
        flops_per_s: float = DEFAULT_FLOPS_PER_S,
        joules_per_flop: float = DEFAULT_JOULES_PER_FLOP,
    ) -> CostProfile:
        """A profile computed from FLOPs alone, for when nothing is measured; labelled ``model`` throughout.

        latency of one call = batch_size × FLOPs / ``flops_per_s``; energy per input = FLOPs ×
        ``joules_per_flop``; no idle power is assumed, so the above-idle energy equals the total.
        Real savings are smaller than FLOPs ratios (fixed per-call overheads): measure where you can.
        """
        if not (flops_per_s > 0 and joules_per_flop > 0 and isinstance(batch_size, int) and batch_size > 0):
            raise ValueError("from_flops needs flops_per_s > 0, joules_per_flop > 0 and a positive integer batch_size")
        levels = []
        for u in model.levels:
            flops = model.flops(u)
            lat = batch_size * flops / flops_per_s * 1e3
            mj = flops * joules_per_flop * 1e3
            energy = {"median": mj, "p10": mj, "p90": mj, "source": "model"}
            levels.append(
                LevelCost(u, flops, model.params(u), {"median": lat, "p10": lat, "p90": lat}, energy, dict(energy))
            )
        return cls(
            model=name or model.arch,
            input_shape=tuple(model.input_shape),
            num_classes=model.num_classes,
            in_channels=model.input_shape[0],
            batch_size=batch_size,
            device={"kind": "cpu", "name": "none: FLOPs model, nothing measured"},
            torch=torch.__version__,
            date=_now(),
            levels=levels,
            latency_source="model",
            energy_model=(
                f"FLOPs model: latency = batch × FLOPs / {flops_per_s:.3g} FLOP/s; "
                f"energy per input = FLOPs × {joules_per_flop:.3g} J/FLOP; no idle power"
            ),
        )


_LEVEL_KEYS = tuple(f.name for f in dataclasses.fields(LevelCost))


def _shape(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_stats(stats: Any, where: str, *, energy: bool) -> None:
    if not isinstance(stats, dict):
        raise ProfileError(f"{where} must be an object with median, p10, p90, got {type(stats).__name__}")
    for q in _QUANTILES:
        if not _is_num(stats.get(q)) or stats[q] < 0:
            raise ProfileError(f"{where}.{q} must be a finite number >= 0, got {stats.get(q)!r}")
    if not stats["p10"] <= stats["median"] <= stats["p90"]:
        raise ProfileError(
            f"{where}: expected p10 <= median <= p90, got {stats['p10']}, {stats['median']}, {stats['p90']}"
        )
    if energy and stats.get("source") not in ENERGY_SOURCES:
        raise ProfileError(f"{where}.source must be one of {list(ENERGY_SOURCES)}, got {stats.get('source')!r}")


def _validate(data: Any, where: str) -> None:
    """Check a profile dict against the format; ProfileError naming the first problem and the fix."""
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: a cost profile is a JSON object, got {type(data).__name__}")
    if "format" in data and data["format"] != PROFILE_FORMAT:
        raise ProfileError(f"{where}: format is {data['format']!r}, not {PROFILE_FORMAT!r}: not a TNN cost profile")
    version = data.get("version")
    if not _is_int(version) or version < 1:
        raise ProfileError(f"{where}: missing or invalid 'version' ({version!r}); regenerate it with `tnn profile`")
    if version > PROFILE_VERSION:
        raise ProfileError(
            f"{where} is cost-profile format v{version}, newer than this tnn reads (v{PROFILE_VERSION}); upgrade tnn"
        )
    missing = [k for k in _TOP_FIELDS if k not in data]
    if missing:
        raise ProfileError(f"{where}: missing {missing}; regenerate it with `tnn profile`")
    if not isinstance(data["model"], str) or not data["model"]:
        raise ProfileError(f"{where}: 'model' must be a non-empty string")
    shape = data["input_shape"]
    if not isinstance(shape, (list, tuple)) or not shape or not all(_is_int(d) and d > 0 for d in shape):
        raise ProfileError(f"{where}: 'input_shape' must be a list of positive integers, got {shape!r}")
    for key in ("num_classes", "in_channels", "batch_size"):
        if not _is_int(data[key]) or data[key] < 1:
            raise ProfileError(f"{where}: {key!r} must be a positive integer, got {data[key]!r}")
    if data["in_channels"] != shape[0]:
        raise ProfileError(f"{where}: in_channels {data['in_channels']} does not match input_shape {list(shape)}")
    dev = data["device"]
    if not isinstance(dev, dict) or dev.get("kind") not in DEVICE_KINDS or not isinstance(dev.get("name"), str):
        raise ProfileError(f"{where}: 'device' must be {{'kind': 'cpu' | 'cuda', 'name': str}}, got {dev!r}")
    for key in ("torch", "date"):
        if not isinstance(data[key], str):
            raise ProfileError(f"{where}: {key!r} must be a string, got {data[key]!r}")
    levels = data["levels"]
    if not isinstance(levels, list) or not levels:
        raise ProfileError(f"{where}: 'levels' must be a non-empty list")
    prev = 0.0
    for i, lv in enumerate(levels):
        at = f"{where}: levels[{i}]"
        if not isinstance(lv, dict):
            raise ProfileError(f"{at} must be an object, got {type(lv).__name__}")
        unknown = set(lv) - set(_LEVEL_KEYS)
        if unknown:
            raise ProfileError(f"{at} has unknown keys {sorted(unknown)}")
        u = lv.get("u")
        if not _is_num(u) or not prev < u <= 1.0:
            raise ProfileError(f"{at}.u must be in (0, 1] and above the previous level, got {u!r}")
        prev = u
        for key in ("flops", "params"):
            if not _is_int(lv.get(key)) or lv[key] < 0:
                raise ProfileError(f"{at}.{key} must be an integer >= 0, got {lv.get(key)!r}")
        _check_stats(lv.get("latency_ms"), f"{at}.latency_ms", energy=False)
        _check_stats(lv.get("energy_mj"), f"{at}.energy_mj", energy=True)
        if lv.get("energy_dynamic_mj") is not None:
            _check_stats(lv["energy_dynamic_mj"], f"{at}.energy_dynamic_mj", energy=True)
            if lv["energy_dynamic_mj"]["median"] > lv["energy_mj"]["median"] * (1 + 1e-9):
                raise ProfileError(f"{at}: energy above idle exceeds the total energy")
    if prev != 1.0:
        raise ProfileError(f"{where}: the last level must be u=1.0, got {prev}")
    if data.get("latency_source", "measured") not in ("measured", "model"):
        raise ProfileError(f"{where}: 'latency_source' must be 'measured' or 'model', got {data['latency_source']!r}")
    if any(lv["energy_mj"]["source"] == "model" for lv in levels) and not isinstance(data.get("energy_model"), str):
        raise ProfileError(f"{where}: energy from a model needs an 'energy_model' string saying what was assumed")
    optional = {
        "idle_power_w": (_is_num, "a number"),
        "window_s": (_is_num, "a number"),
        "threads": (_is_int, "an integer"),
        "repeats": (_is_int, "an integer"),
        "warmup": (_is_int, "an integer"),
        "windows": (_is_int, "an integer"),
        "energy_model": (lambda v: isinstance(v, str), "a string"),
        "command": (lambda v: isinstance(v, str), "a string"),
        "checkpoint": (lambda v: isinstance(v, dict), "an object"),
        "load_avg": (lambda v: isinstance(v, list) and all(_is_num(x) for x in v), "a list of numbers"),
    }
    for key, (ok, what) in optional.items():
        if data.get(key) is not None and not ok(data[key]):
            raise ProfileError(f"{where}: {key!r} must be {what} or null, got {data[key]!r}")
    if not isinstance(data.get("cuda_graphs", False), bool):
        raise ProfileError(f"{where}: 'cuda_graphs' must be true or false, got {data['cuda_graphs']!r}")
    fmt = data.get("memory_format", "contiguous_format")  # absent: written before the field, so NCHW
    if fmt not in MEMORY_FORMATS:
        raise ProfileError(f"{where}: 'memory_format' must be one of {list(MEMORY_FORMATS)}, got {fmt!r}")
    if fmt in _CHANNELS_LAST_RANK and _CHANNELS_LAST_RANK[fmt] != 1 + len(shape):
        raise ProfileError(
            f"{where}: 'memory_format' {fmt} is for {_CHANNELS_LAST_RANK[fmt]}-D inputs, but input_shape "
            f"{list(shape)} makes {1 + len(shape)}-D ones"
        )


# --------------------------------------------------------------------------------------------- energy


class EnergyCounter(Protocol):
    """A cumulative energy counter (NVML, RAPL, or a fake one in tests)."""

    source: str  # "nvml" | "rapl"

    def read_mj(self) -> float:
        """Energy consumed since some fixed origin, in millijoules; it only ever grows."""
        ...


class _CtypesNvml:
    """The four NVML calls this module needs, straight from the driver's ``libnvidia-ml.so.1``.

    A fallback for GPU boxes without ``nvidia-ml-py``; names and errors mirror ``pynvml``'s.
    """

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        import ctypes

        self._c = ctypes
        names = ("libnvidia-ml.so.1", "libnvidia-ml.so", "nvml.dll")
        for name in names:
            try:
                self._lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise ImportError(f"none of {names} can be loaded")
        self._lib.nvmlErrorString.restype = ctypes.c_char_p

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise self.NVMLError(self._lib.nvmlErrorString(rc).decode(errors="replace"))

    def nvmlInit(self) -> None:
        self._check(self._lib.nvmlInit_v2())

    def nvmlShutdown(self) -> None:
        self._check(self._lib.nvmlShutdown())

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Any:
        handle = self._c.c_void_p()
        self._check(self._lib.nvmlDeviceGetHandleByUUID(self._c.c_char_p(uuid.encode()), self._c.byref(handle)))
        return handle

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        handle = self._c.c_void_p()
        self._check(self._lib.nvmlDeviceGetHandleByIndex_v2(self._c.c_uint(index), self._c.byref(handle)))
        return handle

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        mj = self._c.c_ulonglong()
        self._check(self._lib.nvmlDeviceGetTotalEnergyConsumption(handle, self._c.byref(mj)))
        return mj.value


class NvmlCounter:
    """NVML's total-energy counter of one NVIDIA GPU (``nvmlDeviceGetTotalEnergyConsumption``, mJ).

    Uses ``pynvml`` (from ``nvidia-ml-py``) where installed, else the driver's library directly.
    """

    source = "nvml"

    def __init__(self, device: int | torch.device = 0) -> None:
        try:
            import pynvml
        except ImportError:
            try:
                pynvml = _CtypesNvml()
            except ImportError as err:
                raise ProfileError(
                    f"NVML energy needs nvidia-ml-py (`pip install nvidia-ml-py`) or the NVIDIA driver's "
                    f"libnvidia-ml ({err}); or pass --energy model"
                ) from None
        self._nvml = pynvml
        index = device if isinstance(device, int) else (torch.device(device).index or 0)
        try:
            pynvml.nvmlInit()
            self.handle = self._handle(index)
            self.read_mj()
        except pynvml.NVMLError as err:
            raise ProfileError(
                f"NVML cannot read GPU {index}'s energy counter ({err}); this GPU or driver lacks it: "
                "pass --energy model"
            ) from None

    def _handle(self, index: int) -> Any:
        """Match torch's device to NVML's by UUID (CUDA_VISIBLE_DEVICES may renumber them)."""
        nv = self._nvml
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None) if torch.cuda.is_available() else None
        if uuid is not None:
            try:
                return nv.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
            except nv.NVMLError:
                pass
        return nv.nvmlDeviceGetHandleByIndex(index)

    def read_mj(self) -> float:
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class RaplCounter:
    """Sum of the RAPL package counters (``intel-rapl:N/energy_uj``), unwrapped with ``max_energy_range_uj``."""

    source = "rapl"

    def __init__(self, root: str | os.PathLike = "/sys/class/powercap") -> None:
        self.domains = sorted(p for p in Path(root).glob("intel-rapl:*") if p.name.count(":") == 1)
        if not self.domains:
            raise ProfileError(f"no RAPL package domains under {root}; pass --energy model")
        try:
            self._range = [int((d / "max_energy_range_uj").read_text()) for d in self.domains]
            self._last = [self._raw(d) for d in self.domains]
        except (OSError, ValueError) as err:
            raise ProfileError(
                f"RAPL counters under {root} are not readable ({err}); run as root, or pass --energy model"
            ) from None
        self._total_uj = 0

    @staticmethod
    def _raw(domain: Path) -> int:
        return int((domain / "energy_uj").read_text())

    @classmethod
    def available(cls, root: str | os.PathLike = "/sys/class/powercap") -> bool:
        try:
            cls(root)
        except ProfileError:
            return False
        return True

    def read_mj(self) -> float:
        for i, d in enumerate(self.domains):
            raw = self._raw(d)
            delta = raw - self._last[i]
            self._total_uj += delta if delta >= 0 else delta + self._range[i]  # wrapped past max_energy_range_uj
            self._last[i] = raw
        return self._total_uj / 1e3


@dataclass
class EnergyMeasurement:
    """Counter windows per level: energy per input in each window, total and above idle."""

    idle_power_w: float
    total_mj: dict[Hashable, list[float]]  # per input, one value per window
    dynamic_mj: dict[Hashable, list[float]]
    calls: dict[Hashable, list[int]]  # calls in each window
    seconds: dict[Hashable, list[float]]  # length of each window


def _until_tick(
    counter: EnergyCounter, step: Callable[[], object], clock: Callable[[], float], timeout_s: float
) -> tuple[float, float, int]:
    """Call ``step`` until the counter moves; return (new reading, time, calls made)."""
    e0, start, n = counter.read_mj(), clock(), 0
    while True:
        step()
        n += 1
        e = counter.read_mj()
        if e != e0:
            return e, clock(), n
        if clock() - start > timeout_s:
            raise ProfileError(
                f"the {counter.source} energy counter did not move in {timeout_s:g} s; it cannot measure this "
                "device: pass --energy model"
            )


def measure_energy(
    runs: Mapping[Hashable, Callable[[], object]],
    counter: EnergyCounter,
    *,
    batch_size: int,
    window_s: float = 1.0,
    windows: int = 5,
    idle_s: float = 2.0,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], object] = time.sleep,
    poll_s: float = 0.002,
    tick_timeout_s: float = 5.0,
) -> EnergyMeasurement:
    """Energy per input of each run (one forward call that synchronises), from a cumulative counter.

    Counters such as NVML's move only every ~100 ms, so every window starts and ends on a counter
    update observed while the workload runs (or, for idle power, while the device sleeps): a
    window is >= ``window_s`` of back-to-back calls, and its energy / (calls × batch) is the energy
    per input. Idle power comes from one sleep window of >= ``idle_s``. Windows are interleaved
    across runs, ``windows`` rounds in a rotating order, so drift hits all levels alike.
    """
    if window_s <= 0 or idle_s <= 0 or windows < 1 or batch_size < 1:
        raise ValueError("window_s and idle_s must be > 0, windows and batch_size >= 1")
    e0, t0, _ = _until_tick(counter, lambda: sleep(poll_s), clock, tick_timeout_s)
    while clock() - t0 < idle_s:
        sleep(poll_s)
    e1, t1, _ = _until_tick(counter, lambda: sleep(poll_s), clock, tick_timeout_s)
    idle_w = (e1 - e0) / (t1 - t0) / 1e3  # mJ/s = mW
    keys = list(runs)
    out = EnergyMeasurement(
        idle_w, {k: [] for k in keys}, {k: [] for k in keys}, {k: [] for k in keys}, {k: [] for k in keys}
    )
    for r in range(windows):
        i = r % len(keys)
        for k in keys[i:] + keys[:i]:
            run = runs[k]
            e0, t0, _ = _until_tick(counter, run, clock, tick_timeout_s)  # aligned, device busy
            calls = 0
            while clock() - t0 < window_s:
                run()
                calls += 1
            e1, t1, n = _until_tick(counter, run, clock, tick_timeout_s)
            calls += n
            energy, seconds = e1 - e0, t1 - t0
            inputs = calls * batch_size
            out.total_mj[k].append(energy / inputs)
            out.dynamic_mj[k].append(max(energy - idle_w * seconds * 1e3, 0.0) / inputs)
            out.calls[k].append(calls)
            out.seconds[k].append(seconds)
    return out


# --------------------------------------------------------------------------------------------- measuring


def _stats(xs: Sequence[float]) -> dict[str, float]:
    p10, med, p90 = np.percentile(np.asarray(xs, dtype=float), [10, 50, 90])
    return {"median": float(med), "p10": float(p10), "p90": float(p90)}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _device_name(dev: torch.device) -> str:
    """The GPU's name; a CPU's model name and the instruction set torch dispatches to there (its
    kernels, and so the latency ratios between levels, differ between AVX2 and AVX-512 machines
    that report the same model name)."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    name = platform.processor() or platform.machine() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}"


def _runners(model: ThrottleNet, x: torch.Tensor, cuda_graphs: bool) -> dict[float, Callable[[], object]]:
    """One callable per level (not synchronising): a plain forward, or the replay of a captured CUDA graph."""
    runs: dict[float, Callable[[], object]] = {}
    for u in model.levels:
        if not cuda_graphs:
            runs[u] = lambda u=u: model(x, u)
            continue
        side = torch.cuda.Stream()  # warm-up on a side stream before capture, as torch.cuda.graphs asks
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                model(x, u)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x, u)
        runs[u] = graph.replay
    return runs


def _cuda_event_ms(fn: Callable[[], object]) -> float:
    """GPU time of one call between CUDA events, starting from an idle queue."""
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def _energy_counter(kind: str, energy: str, dev: torch.device) -> EnergyCounter | None:
    """The counter for ``energy`` ('auto' picks NVML on CUDA, RAPL on CPU where readable), or None for the model."""
    if energy == "model":
        return None
    if energy == "nvml" or (energy == "auto" and kind == "cuda"):
        if kind != "cuda":
            raise ProfileError("NVML measures NVIDIA GPUs: use --device cuda, or --energy rapl/model on a CPU")
        return NvmlCounter(dev)
    if energy == "rapl" or energy == "auto":
        if kind != "cpu":
            raise ProfileError("RAPL measures CPU packages: use --device cpu, or --energy nvml on a GPU")
        if energy == "auto" and not RaplCounter.available():
            return None
        return RaplCounter()
    raise ValueError(f"unknown energy source {energy!r}; choose auto, nvml, rapl or model")


def profile_model(
    model: ThrottleNet,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    repeats: int = 50,
    warmup: int = 5,
    cuda_graphs: bool = False,
    channels_last: bool = False,
    energy: str = "auto",
    counter: EnergyCounter | None = None,
    window_s: float = 1.0,
    windows: int = 5,
    idle_s: float = 2.0,
    watts: float | None = None,
    idle_watts: float = 0.0,
    name: str | None = None,
    seed: int = 0,
) -> CostProfile:
    """Measure every level of ``model`` on ``device`` at ``batch_size``: FLOPs, params, latency, energy.

    Latency: ``repeats`` rounds, each timing one forward call per level in a rotating order after
    ``warmup`` untimed calls; CPU by wall clock, CUDA by events from an idle queue, optionally
    replaying one captured CUDA graph per level (``cuda_graphs``) to strip launch overhead.
    ``channels_last``: the input is in channels-last memory format (NHWC; NDHWC for 5-D clips;
    ValueError for other inputs), once checked to give NCHW's logits (RuntimeError if not); the
    profile's ``memory_format`` records it.
    Energy (``energy``): 'auto' = NVML on CUDA, RAPL on CPU where readable (the whole package:
    keep the machine otherwise quiet), else the model; 'nvml' / 'rapl' demand that counter;
    'model' = ``watts`` × latency / batch, above idle with ``idle_watts`` (``watts`` defaults on
    CPU to :data:`DEFAULT_CPU_WATTS_PER_THREAD` × torch threads; on CUDA it is required). A given
    ``counter`` (e.g. a fake one) is used as is. The model is moved to ``device`` and left in eval mode.
    """
    from tnn.runtime import resolve_device

    dev = resolve_device(device)
    kind = dev.type
    if kind not in DEVICE_KINDS:
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if cuda_graphs and kind != "cuda":
        raise ValueError("CUDA graphs need --device cuda")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    own_counter = counter is None
    if counter is None:
        counter = _energy_counter(kind, energy, dev)
    if counter is None:
        if watts is None and kind == "cuda":
            raise ValueError("energy model on CUDA needs the GPU's active power: pass --watts W (or use NVML)")
        watts_note = "given"
        if watts is None:
            threads = torch.get_num_threads()
            per = f"{DEFAULT_CPU_WATTS_PER_THREAD:g} W per thread"
            watts_note = f"default {per} × {threads} thread{'s' * (threads != 1)}"
            watts = DEFAULT_CPU_WATTS_PER_THREAD * threads
        watts = float(watts)
        if not (watts > 0 and 0 <= idle_watts < watts):
            raise ValueError(f"energy model needs watts > idle_watts >= 0, got {watts} and {idle_watts}")

    load_avg = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    model = model.to(dev).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, *model.input_shape, generator=gen).to(dev)
    memory_format = "contiguous_format"
    if channels_last:
        x_cl = to_channels_last(x, model.arch)
        check_channels_last(model, x, x_cl)
        x, memory_format = x_cl, str(channels_last_format(x.dim())).removeprefix("torch.")
    sync = torch.cuda.synchronize if kind == "cuda" else (lambda: None)
    measured = None
    try:
        with torch.inference_mode():
            runs = _runners(model, x, cuda_graphs)
            times = time_interleaved(
                runs, repeats=repeats, warmup=warmup, time_call=_cuda_event_ms if kind == "cuda" else None
            )
            if counter is not None:  # energy windows count finished calls: synchronise after each
                synced = {u: (lambda f=f: (f(), sync())) for u, f in runs.items()}
                measured = measure_energy(
                    synced, counter, batch_size=batch_size, window_s=window_s, windows=windows, idle_s=idle_s
                )
    finally:
        if own_counter and hasattr(counter, "close"):
            counter.close()

    levels = []
    for u in model.levels:
        lat = _stats(times[u])
        if measured is not None:
            e_total = {**_stats(measured.total_mj[u]), "source": counter.source}
            e_dyn = {**_stats(measured.dynamic_mj[u]), "source": counter.source}
        else:  # the documented model: power × latency / inputs (W × ms = mJ)
            e_total = {q: watts * lat[q] / batch_size for q in _QUANTILES} | {"source": "model"}
            e_dyn = {q: (watts - idle_watts) * lat[q] / batch_size for q in _QUANTILES} | {"source": "model"}
        levels.append(LevelCost(u, model.flops(u), model.params(u), lat, e_total, e_dyn))
    energy_model = None
    if measured is None:
        energy_model = (
            f"no energy counter: energy per input = {watts:g} W (assumed active power, {watts_note}) "
            f"× measured latency / batch {batch_size}; above idle: ({watts:g} − {idle_watts:g}) W × latency / batch"
        )
    return CostProfile(
        model=name or model.arch,
        input_shape=tuple(model.input_shape),
        num_classes=model.num_classes,
        in_channels=model.input_shape[0],
        batch_size=batch_size,
        device={"kind": kind, "name": _device_name(dev)},
        torch=torch.__version__,
        date=_now(),
        levels=levels,
        energy_model=energy_model,
        idle_power_w=measured.idle_power_w if measured is not None else None,
        threads=torch.get_num_threads(),
        repeats=repeats,
        warmup=warmup,
        cuda_graphs=cuda_graphs,
        memory_format=memory_format,
        window_s=window_s if measured is not None else None,
        windows=windows if measured is not None else None,
        load_avg=load_avg,
    )


# --------------------------------------------------------------------------------------------- output


def format_table(profile: CostProfile) -> str:
    """A markdown table of the profile: u, FLOPs, latency and energy with ratios to u=1, source."""
    full = profile.levels[-1]
    lines = [
        "| u | MFLOPs | params | latency ms (p10–p90) | latency ratio | energy mJ/input (p10–p90) | energy ratio "
        "| above idle mJ | source |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for lv in profile.levels:
        lat, en, dyn = lv.latency_ms, lv.energy_mj, lv.energy_dynamic_mj
        dyn_text = "—" if dyn is None else f"{dyn['median']:.4g}"
        lines.append(
            f"| {lv.u:.3f} | {lv.flops / 1e6:.2f} | {lv.params:,d} | {lat['median']:.3f} ({lat['p10']:.3f}–"
            f"{lat['p90']:.3f}) | **{lat['median'] / full.latency_ms['median']:.3f}** | {en['median']:.4g} "
            f"({en['p10']:.4g}–{en['p90']:.4g}) | **{en['median'] / full.energy_mj['median']:.3f}** | "
            f"{dyn_text} | {en['source']} |"
        )
    return "\n".join(lines)


_LAYOUTS = {"channels_last": "channels-last (NHWC)", "channels_last_3d": "channels-last (NDHWC)"}


def _describe(profile: CostProfile) -> str:
    lat = "latency from a FLOPs model" if profile.latency_source == "model" else "latency measured"
    graphs = ", CUDA graphs" if profile.cuda_graphs else ""
    if profile.memory_format != "contiguous_format":
        graphs += f", {_LAYOUTS[profile.memory_format]} input"
    idle = f", idle {profile.idle_power_w:.1f} W" if profile.idle_power_w is not None else ""
    text = (
        f"{profile.model} on {profile.device['kind']} ({profile.device['name']}), batch {profile.batch_size}, "
        f"torch {profile.torch}, {profile.threads} thread{'s' * (profile.threads != 1)}{graphs}; {lat} "
        f"({profile.repeats} interleaved repetitions); energy: {profile.energy_source}{idle}"
    )
    if profile.load_avg:
        text += f"; load average {profile.load_avg[0]:g} at the start"
    if profile.energy_model:
        text += f"\nenergy model: {profile.energy_model}"
    return text


def plot_profiles(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> list[Path]:
    """One PNG per profile (latency and energy against u, absolute and as ratio to u=1); an overlay per device kind."""
    try:
        import matplotlib
    except ImportError:
        raise ProfileError("profile-plot needs matplotlib: `pip install matplotlib` (or tnn[agents])") from None
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    profiles = [(Path(p), CostProfile.load(p)) for p in paths]
    if not profiles:
        raise ValueError("profile-plot needs at least one profile JSON")
    out_dir = Path(out_dir)

    def label(path: Path, pr: CostProfile) -> str:
        n = pr.threads if pr.device["kind"] == "cpu" else None
        how = f" · {n} thread{'s' * (n != 1)}" if n else ""
        how += "" if pr.memory_format == "contiguous_format" else " · channels-last"
        return f"{pr.model} · {pr.device['kind']} · b{pr.batch_size}{how} · energy {pr.energy_source} ({path.stem})"

    def panels(axes: Any, path: Path, pr: CostProfile, single: bool) -> None:
        u = np.array(pr.levels_u)
        full = pr.levels[-1]
        lat = np.array([[lv.latency_ms[q] for q in _QUANTILES] for lv in pr.levels])
        en = np.array([[lv.energy_mj[q] for q in _QUANTILES] for lv in pr.levels])
        src = pr.energy_source
        lat_src = "measured" if pr.latency_source == "measured" else "FLOPs model"
        en_src = {"nvml": "measured (NVML)", "rapl": "measured (RAPL)", "model": "power model, not measured"}
        series = (
            ("latency", lat, full.latency_ms["median"], "ms per call (median, p10–p90)", lat_src),
            (
                f"energy ({src})" if single else "energy",
                en,
                full.energy_mj["median"],
                "mJ per input (median, p10–p90)",
                en_src.get(src, src),
            ),
        )
        for row, (what, arr, ref, unit, how) in enumerate(series):
            ax_abs, ax_ratio = axes[row]
            lbl = how if single else label(path, pr)
            line = ax_abs.plot(u, arr[:, 0], marker="o", label=lbl)[0]
            ax_abs.fill_between(u, arr[:, 1], arr[:, 2], alpha=0.2, color=line.get_color())
            ax_ratio.plot(u, arr[:, 0] / ref, marker="o", label=lbl, color=line.get_color())
            if single:
                flops = np.array([lv.flops for lv in pr.levels], dtype=float)
                ax_ratio.plot(u, flops / flops[-1], ls="--", color="gray", label="FLOPs ratio")
            ax_abs.set(title=f"{what}", xlabel="u", ylabel=unit)
            ax_ratio.set(title=f"{what} / u=1", xlabel="u", ylabel="ratio")
            # from 0, and tall enough for every profile drawn on these axes (a level can cost more than u=1)
            ax_ratio.set_ylim(0, max(ax_ratio.get_ylim()[1], 1.05 * float(np.max(arr[:, 0] / ref))))
            for ax in (ax_abs, ax_ratio):
                ax.grid(alpha=0.3)
            if single:
                ax_ratio.legend(fontsize=7)

    def write(fig: Any, path: Path) -> Path:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        return atomic_write(path, lambda fh: fh.write(buf.getvalue()))

    written = []
    for path, pr in profiles:
        fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
        panels(axes, path, pr, single=True)
        fig.suptitle(f"{label(path, pr)}\n{pr.device['name']}", fontsize=9)
        written.append(write(fig, out_dir / f"{path.stem}.png"))
    for kind in DEVICE_KINDS:  # one overlay per kind of device, where it has several profiles
        group = [(path, pr) for path, pr in profiles if pr.device["kind"] == kind]
        if len(group) < 2:
            continue
        fig, axes = plt.subplots(2, 2, figsize=(11, 8 + 0.18 * len(group)), constrained_layout=True)
        for path, pr in group:
            panels(axes, path, pr, single=False)
        # one legend under the panels: with many profiles a legend inside an axes hides the curves
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", fontsize=8)
        names = sorted({pr.device["name"] for _, pr in group})
        fig.suptitle(f"cost against u, {kind} profiles ({'; '.join(names)})", fontsize=9)
        written.append(write(fig, out_dir / f"profiles-{kind}.png"))
    return written


# --------------------------------------------------------------------------------------------- CLI


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cmd_profile(args: argparse.Namespace) -> int:
    import shlex

    from tnn.checkpoint import load_checkpoint
    from tnn.models import create_model, list_models
    from tnn.runtime import set_threads

    set_threads(args.threads)
    if args.in_channels is not None and args.in_channels < 1:
        raise ValueError(f"--in-channels must be positive, got {args.in_channels}")
    if args.out is not None:  # a bad --out fails now, not after the measurement
        check_writable(args.out, "--out")
    source = Path(args.target)
    if source.is_dir() and (source / "model.pt").is_file():  # a run directory stands for its model.pt
        source = source / "model.pt"
    checkpoint = None
    if source.is_file():
        given = (("--in-channels", args.in_channels), ("--num-classes", args.num_classes))
        ignored = [flag for flag, value in given if value is not None]
        if ignored:
            raise ValueError(
                f"{' and '.join(ignored)} {'apply' if len(ignored) > 1 else 'applies'} to a MODEL name only: the "
                f"checkpoint {source} fixes its input and classes; drop {'them' if len(ignored) > 1 else 'it'}"
            )
        model, card = load_checkpoint(source)
        checkpoint = {"path": str(source), "sha256": _sha256(source), "dataset": card.get("dataset")}
    elif args.target in list_models():
        kwargs = {
            "num_classes": 10 if args.num_classes is None else args.num_classes,
            "in_channels": 3 if args.in_channels is None else args.in_channels,
        }
        model = create_model(args.target, **kwargs)
    else:
        raise FileNotFoundError(
            f"{args.target!r} is neither a checkpoint file nor a registered model; models: {', '.join(list_models())}"
        )
    profile = profile_model(
        model,
        device=args.device,
        batch_size=args.batch_size,
        repeats=args.repeats,
        warmup=args.warmup,
        cuda_graphs=args.cuda_graphs,
        channels_last=args.channels_last,
        energy=args.energy,
        window_s=args.window_s,
        windows=args.windows,
        idle_s=args.idle_s,
        watts=args.watts,
        idle_watts=args.idle_watts,
    )
    profile.checkpoint = checkpoint
    profile.command = shlex.join(["tnn", *getattr(args, "argv", [])])
    cores = os.cpu_count() or 1
    if profile.device["kind"] == "cpu" and profile.load_avg and profile.load_avg[0] > cores - 0.5:
        print(
            f"warning: load average {profile.load_avg[0]} on {cores} cores: other processes compete, so these "
            "CPU timings are inflated and noisy; profile on a quiet machine",
            file=sys.stderr,
        )
    print(_describe(profile))
    print(format_table(profile))
    if args.out:
        profile.save(args.out)
        print(f"wrote {args.out}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    for i, path in enumerate(args.profiles):
        profile = CostProfile.load(path)
        print(("\n" if i else "") + f"{path}: {_describe(profile)}")
        print(format_table(profile))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    for path in plot_profiles(args.profiles, args.out):
        print(f"wrote {path}")
    return 0


def add_cli(sub: Any) -> None:
    """``tnn profile``, ``tnn profile-show`` and ``tnn profile-plot``."""
    p = sub.add_parser("profile", help="measure FLOPs, latency and energy of every level on one device")
    p.add_argument(
        "target", metavar="CKPT|MODEL", help="a checkpoint file, or a registered model name (random weights)"
    )
    p.add_argument("--device", default="cpu", choices=list(DEVICE_KINDS))
    p.add_argument("--batch-size", type=int, default=1, help="inputs per forward call (default: 1)")
    p.add_argument("--out", default=None, help="write the profile JSON here (atomically)")
    p.add_argument("--repeats", type=int, default=50, help="timed rounds, each one call per level (default: 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls per level first (default: 5)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--cuda-graphs", action="store_true", help="replay one captured CUDA graph per level")
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="time a channels-last input (NHWC; NDHWC for 5-D clips) instead of NCHW; recorded in the profile",
    )
    p.add_argument(
        "--energy",
        default="auto",
        choices=["auto", "nvml", "rapl", "model"],
        help="energy source; auto: NVML on CUDA, RAPL on CPU where readable, else the power model (default: auto)",
    )
    p.add_argument("--window-s", type=float, default=1.0, help="energy window of back-to-back calls, s (default: 1)")
    p.add_argument("--windows", type=int, default=5, help="energy windows per level (default: 5)")
    p.add_argument("--idle-s", type=float, default=2.0, help="idle-power window, s (default: 2)")
    p.add_argument(
        "--watts",
        "--cpu-watts",
        type=float,
        default=None,
        help=f"power model: assumed active power in W (default on CPU: {DEFAULT_CPU_WATTS_PER_THREAD:g} W × threads; "
        "required on CUDA)",
    )
    p.add_argument("--idle-watts", type=float, default=0.0, help="power model: assumed idle power in W (default: 0)")
    p.add_argument("--in-channels", type=int, default=None, help="MODEL only: input channels (1 for Fashion-MNIST)")
    p.add_argument("--num-classes", type=int, default=None, help="MODEL only: classes (default: 10)")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("profile-show", help="print cost profiles as markdown tables")
    p.add_argument("profiles", nargs="+", metavar="FILE.json")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("profile-plot", help="figures of latency and energy against u from profile JSONs")
    p.add_argument("profiles", nargs="+", metavar="FILE.json")
    p.add_argument("--out", default="results/figures", help="output folder (default: results/figures)")
    p.set_defaults(func=_cmd_plot)
