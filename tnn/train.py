"""Pretraining a throttleable network: the sandwich rule with in-place distillation.

Each step trains the full level on the labels and, from the *same* batch, the lowest level and
``random_levels`` random ones on the full level's soft predictions (Yu & Huang's sandwich rule
and in-place distillation, here with BatchNorm kept per level). All levels of a step run inside
one forward call of :class:`Sandwich`, so the step is one forward and one backward — which is
what DistributedDataParallel needs when the run spans processes (``torchrun``).

The same code runs on a GPU (data held on the device, bf16 autocast, channels-last, no per-step
host synchronisation) and on a CPU (seeded and deterministic). Every epoch ends with an atomic
checkpoint (``last.pt``, resumable with ``resume=True``); the run directory also holds
``config.json``, ``command.txt``, ``metrics.json`` and the final model checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tnn import data as tdata
from tnn.checkpoint import (
    CheckpointError,
    atomic_write,
    describe_error,
    model_from_payload,
    read_checkpoint,
    resolve_checkpoint_path,
    save_checkpoint,
)
from tnn.models import ThrottleNet, create_model, list_models
from tnn.runtime import cpu_bf16_warning, resolve_device, set_threads

__all__ = ["PretrainConfig", "PretrainResult", "Sandwich", "evaluate", "evaluate_checkpoint", "pretrain"]

STATE_VERSION = 1


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on; saved as ``config.json`` beside its outputs."""

    arch: str = "resnet20"
    """registered model name (``tnn models``)"""
    dataset: str = "cifar10"
    """cifar10 | fashion_mnist | gestures"""
    variant: str = "tnn"
    """tnn: sandwich rule over all levels; vanilla: trained at u=1 only (levels=(1.0,))"""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    """extra create_model arguments, e.g. {"widths": [8, 16, 32]} for a standalone half-width net"""
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    """peak learning rate (SGD, Nesterov momentum 0.9), cosine-annealed to 0 after a linear warm-up"""
    warmup_epochs: float = 1.0
    weight_decay: float = 5e-4
    """applied to conv/linear weights only, never to BatchNorm parameters or biases"""
    label_smoothing: float = 0.0
    random_levels: int = 2
    """random levels per step besides the full and the lowest"""
    distill: bool = True
    """lower levels learn from the full level's soft predictions (else from the labels)"""
    full_weight: float = 1.0
    """the full level's loss counts this many times each other level's (1: the plain sandwich sum; > 1
    favours u=1, as anytime networks balance their exits); the weights are scaled to sum to the number
    of levels in the step, so the gradient keeps its size (no effect with one level: --variant vanilla)"""
    augment: str = "auto"
    """crop+flip | crop | none | auto (crop+flip for images, none for gesture clips)"""
    seed: int = 0
    device: str = "auto"
    """auto | cpu | cuda"""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)"""
    channels_last: bool = True
    """channels-last memory format on CUDA (ignored on CPU)"""
    compile: bool = False
    """torch.compile each level's forward and backward (on CUDA in mode "reduce-overhead": CUDA
    graphs, for networks too small to keep the GPU busy between kernel launches); the first step at
    each level pays the compilation"""
    cpu_bf16: bool = False
    """bf16 autocast and channels-last on CPU too: faster on CPUs with AVX-512 BF16 or AMX (resnet20 on
    2 AMD EPYC cores: 1.4x the sandwich step's images/s, `tnn bench train`), much slower on AVX2-only
    CPUs (0.11x there; the run warns); off by default: float32"""
    data_root: str | None = None
    half: bool = True
    """store the final checkpoint in float16 (smaller; evaluation is done on what is stored)"""
    eval_batch_size: int = 1000
    threads: int = 0
    """CPU threads for torch (0: torch's default)"""
    limit: int = 0
    """train on only the first N training samples (0: all), for smoke runs"""
    bn_recalibration: int = 20
    """batches (of batch_size training images) that re-estimate every level's BatchNorm statistics
    after training (0: keep the statistics as the last epoch left them — with val_recalibration > 0 its
    re-estimate before validation, else the running averages)"""
    val_recalibration: int = 5
    """batches per level that re-estimate the BatchNorm statistics before each epoch's validation, so
    that the per-level accuracy it shows is what the weights give (0: the running averages, which lag
    for levels drawn on few steps); training itself is unaffected (it normalises with batch statistics)"""


@dataclass
class PretrainResult:
    """What a run produced: the trained model (float32, as trained), its checkpoint and history."""

    model: ThrottleNet
    checkpoint: Path
    history: list[dict]
    test_accuracy: dict[float, float]


class Sandwich(nn.Module):
    """Runs one batch at several levels in a single forward call (one graph for DDP).

    ``compiled``: ``model``'s levels through ``torch.compile`` (:func:`compile_levels`, a plain
    function of ``(x, u)``) to call instead; the parameters stay ``model``'s, registered here once.
    """

    def __init__(
        self, model: ThrottleNet, compiled: Callable[[torch.Tensor, float], torch.Tensor] | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.compiled = compiled

    def forward(self, x: torch.Tensor, us: Sequence[float]) -> list[torch.Tensor]:
        fn = self.compiled or self.model
        return [fn(x, u) for u in us]


def compile_levels(model: ThrottleNet, device: torch.device) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """``model(x, u)`` through one ``torch.compile``d graph per level, compiled at the level's first call.

    ``u`` is snapped and ``x`` checked eagerly; the rest (:meth:`ThrottleNet.forward_index`) is traced
    whole. On CUDA the mode is "reduce-overhead" (CUDA graphs: one replay per level instead of a
    launch per kernel), elsewhere the default mode.
    """
    import torch._dynamo.config as dynamo_config

    # the levels share one code object, so each is a recompilation of it, and so is every level of
    # every other model compiled in this process (and each precision): room for all of this one's
    for name in ("recompile_limit", "cache_size_limit"):  # the limit's name differs across torch versions
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, getattr(dynamo_config, name) + 2 * len(model.levels))
    mode = "reduce-overhead" if device.type == "cuda" else None
    graphs: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}

    def run(x: torch.Tensor, u: float) -> torch.Tensor:
        level = model.level_index(u)
        model.check_input(x)
        if level not in graphs:
            graphs[level] = torch.compile(lambda x, _level=level: model.forward_index(x, _level), mode=mode)
        return graphs[level](x)

    return run


def sandwich_loss(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    *,
    distill: bool,
    label_smoothing: float,
    full_weight: float = 1.0,
) -> torch.Tensor:
    """Full level (first) on the labels; the others on its detached soft predictions.

    The full level's term counts ``full_weight`` times each other's, the weights scaled to sum to
    ``len(logits)`` (so ``full_weight=1`` is the plain sum of the sandwich rule)."""
    n = len(logits)
    scale = n / (full_weight + n - 1)
    loss = F.cross_entropy(logits[0].float(), labels, label_smoothing=label_smoothing) * (full_weight * scale)
    if n > 1:
        teacher = logits[0].detach().float().softmax(1)
        others = logits[0].new_zeros((), dtype=torch.float32)
        for student in logits[1:]:
            if distill:
                others = others + torch.sum(-teacher * F.log_softmax(student.float(), 1), 1).mean()
            else:
                others = others + F.cross_entropy(student.float(), labels, label_smoothing=label_smoothing)
        loss = loss + others * scale
    return loss


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crops and horizontal flips, vectorised on ``x``'s device."""
    if mode == "none" or x.dim() != 4:
        return x
    n, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (4, 4, 4, 4))
    oy = torch.randint(0, 9, (n,), generator=generator, device=dev)
    ox = torch.randint(0, 9, (n,), generator=generator, device=dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None].expand(n, x.shape[1], h, w + 8)
    x = padded.gather(2, rows)
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :].expand(n, x.shape[1], h, w)
    x = x.gather(3, cols)
    if mode == "crop+flip":
        flip = torch.rand(n, generator=generator, device=dev) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


@torch.no_grad()
def evaluate(
    model: ThrottleNet, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 1000, levels=None
) -> dict[float, float]:
    """Top-1 accuracy (%) per level on uint8 ``images`` (moved to the model's device per batch)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = {u: 0 for u in levels or model.levels}
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device, non_blocking=True).float().div_(255)
        y = labels[i : i + batch_size].to(device, non_blocking=True)
        for u in correct:
            correct[u] += int((model(x, u).argmax(1) == y).sum())
    model.train(was_training)
    return {u: 100.0 * c / len(images) for u, c in correct.items()}


@torch.no_grad()
def recalibrate_batchnorm(
    model: ThrottleNet,
    images: torch.Tensor,
    *,
    batches: int,
    batch_size: int,
    generator: torch.Generator,
    augment: str = "none",
    bf16: bool = False,
) -> None:
    """Replace each level's BatchNorm running statistics by exact averages over training batches.

    A level's statistics only move on the steps that sample it, so its running averages lag
    behind the final weights; re-estimating them (as slimmable networks do) costs a few forward
    passes per level. Each level owns its norms, so levels do not disturb each other. The batches
    are drawn as training drew them (``augment``, bf16 autocast): statistics of un-augmented images
    do not match what the weights were trained under (on CIFAR-10 they cost ResNet-20 2.7 points at u=1).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    idx = torch.randperm(len(images), generator=generator)[: batches * batch_size].to(images.device)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    aug_gen = torch.Generator(device=images.device)
    for u in model.levels:
        aug_gen.manual_seed(seed)  # every level sees the same batches
        for i in range(0, len(idx), batch_size):
            x = augment_batch(images[idx[i : i + batch_size]].float().div_(255), augment, aug_gen)
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
                model(x, u)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def _with_new_defaults(saved: Any) -> Any:
    """A saved run's config with the fields added to PretrainConfig since then set to their defaults,
    so that a run started by an older version resumes (only if those defaults are what it asks for)."""
    if not isinstance(saved, dict):
        return saved
    defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                for f in dataclasses.fields(PretrainConfig)}  # fmt: skip
    return {**{k: v for k, v in defaults.items() if k not in saved}, **saved}


RUNTIME_FIELDS = ("threads", "data_root", "eval_batch_size", "compile")
"""Config fields a resumed run may change: where the data lies and how fast it runs, not what it learns."""


_UNSET = "(not set)"


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    """The fields of two configs that differ, as "name: old → new" (nested keys dotted, e.g.
    ``model_kwargs.widths``); a field named in ``ignore`` (top-level or dotted) is skipped with all below it."""

    def kept(key: str) -> bool:
        return not any(key == i or key.startswith(i + ".") for i in ignore)

    old, new = _flatten(saved), _flatten(current)
    return [
        f"{k}: {old.get(k, _UNSET)!r} → {new.get(k, _UNSET)!r}"
        for k in sorted(old.keys() | new.keys())
        if kept(k) and old.get(k, _UNSET) != new.get(k, _UNSET)
    ]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() > 1 and not name.endswith("bias") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, progress)))


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda fh: fh.write((json.dumps(obj, indent=2) + "\n").encode()))


def _check_types(cfg: PretrainConfig) -> None:
    """Every field has its default's type (an int where a float is due is fine); ValueError naming it."""
    defaults = PretrainConfig()
    for f in dataclasses.fields(cfg):
        value, default = getattr(cfg, f.name), getattr(defaults, f.name)
        if default is None:
            ok = value is None or isinstance(value, str | os.PathLike)
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default)) and not isinstance(value, bool)  # bool is an int, not a count
        if not ok:
            raise ValueError(
                f"config {f.name!r} must be {type(default).__name__ if default is not None else 'a path'}, "
                f"got {value!r} ({_flag(f.name)})"
            )


def _flag(name: str) -> str:
    """The ``tnn pretrain`` flag of a config field (every field has one)."""
    return "--" + name.replace("_", "-")


_POSITIVE, _NON_NEGATIVE = "positive (>= 1)", "a finite number >= 0"
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "epochs": (lambda v: v >= 1, _POSITIVE),
    "batch_size": (lambda v: v >= 1, _POSITIVE),
    "eval_batch_size": (lambda v: v >= 1, _POSITIVE),
    "lr": (lambda v: v > 0, "a finite number > 0"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "warmup_epochs": (lambda v: v >= 0, _NON_NEGATIVE),
    "weight_decay": (lambda v: v >= 0, _NON_NEGATIVE),
    "random_levels": (lambda v: v >= 0, _NON_NEGATIVE),
    "full_weight": (lambda v: v > 0, "a finite number > 0"),
    "limit": (lambda v: v >= 0, _NON_NEGATIVE),
    "threads": (lambda v: v >= 0, _NON_NEGATIVE),
    "bn_recalibration": (lambda v: v >= 0, _NON_NEGATIVE),
    "val_recalibration": (lambda v: v >= 0, _NON_NEGATIVE),
}
"""The allowed range of each numeric config field (all of them finite: NaN and inf compare False)."""


def _check_config(cfg: PretrainConfig) -> None:
    """ValueError naming each bad field by its flag, with its value and what is allowed."""
    _check_types(cfg)
    if cfg.variant not in ("tnn", "vanilla"):
        raise ValueError(f"--variant {cfg.variant!r}: variant must be 'tnn' or 'vanilla'")
    if cfg.augment not in ("auto", "crop+flip", "crop", "none"):
        raise ValueError(f"--augment {cfg.augment!r}: augment must be auto, crop+flip, crop or none")
    if cfg.dataset not in tdata.DATASETS:
        raise ValueError(f"--dataset {cfg.dataset!r}: unknown dataset; known: {', '.join(tdata.DATASETS)}")
    defaults = PretrainConfig()
    floats = [f.name for f in dataclasses.fields(cfg) if isinstance(getattr(defaults, f.name), float)]
    checked = [f.name for f in dataclasses.fields(cfg) if f.name in _RANGES or f.name in floats]  # no float unchecked
    bad = [
        f"{_flag(name)} {value!r}: {name} must be {rule}"
        for name in checked
        for ok, rule in [_RANGES.get(name, (math.isfinite, "a finite number"))]
        if not (math.isfinite(value := getattr(cfg, name)) and ok(value))
    ]
    if bad:
        raise ValueError("; ".join(bad))
    resolve_device(cfg.device)


def _check_out(out: Path, resume: bool) -> None:
    """Refuse to train over a run (finished or not) unless resuming it: its work would be lost."""
    model, state = out / "model.pt", out / "last.pt"
    if not resume and (model.exists() or state.exists()):
        what = f"a finished run ({model})" if model.exists() else f"an unfinished run ({state})"
        raise ValueError(
            f"--out {out} already holds {what}; pass --resume to continue it, or choose another --out "
            f"for a new run (or delete {out} to retrain there from scratch)"
        )
    if resume and model.exists() and not state.exists():
        raise ValueError(
            f"--out {out} holds a finished model ({model}) but no run state ({state}) to continue it from, so "
            f"--resume would retrain it from scratch; choose another --out (or delete {model} to retrain there)"
        )


def _describe_shape(shape: Sequence[int]) -> str:
    kind = "3-D clips (channels×frames×height×width)" if len(shape) == 4 else "images (channels×height×width)"
    return f"{kind} of {'×'.join(map(str, shape))}"


def _models_of_rank(rank: int) -> list[str]:
    """Registered models whose input has ``rank`` dimensions per sample (builds each at its defaults)."""
    return [name for name in list_models() if len(create_model(name).input_shape) == rank]


def _check_model_fits(cfg: PretrainConfig, shape: Sequence[int]) -> None:
    """ValueError if ``cfg.arch`` takes inputs of another rank than ``cfg.dataset``'s samples (images or clips)."""
    rank = len(create_model(cfg.arch).input_shape)
    if rank != len(shape):
        kind = "a clip model (3-D input)" if rank == 4 else "an image model (2-D input)"
        fits = ", ".join(_models_of_rank(len(shape)))
        raise ValueError(
            f"--arch {cfg.arch} is {kind}, but --dataset {cfg.dataset} holds {_describe_shape(shape)}; "
            f"pass --arch one of {fits} (or another --dataset)"
        )


def build_model(cfg: PretrainConfig) -> ThrottleNet:
    """The model a config describes: the data set fixes classes and input shape.

    ValueError, before anything is trained, if the architecture or ``cfg.model_kwargs`` does not fit the
    data set (an image model for clips, or a kwarg that contradicts the data set's channels, size or classes).
    """
    if cfg.arch not in list_models():
        raise ValueError(f"--arch {cfg.arch!r}: unknown model; known: {', '.join(list_models())} (tnn models)")
    shape = tdata.input_shape(cfg.dataset)
    fixed: dict[str, Any] = {"num_classes": tdata.num_classes(cfg.dataset), "in_channels": shape[0]}
    fixed["input_size"] = shape[1] if len(shape) == 3 else list(shape[1:])
    what = {
        "num_classes": f"{fixed['num_classes']} classes",
        "in_channels": f"{shape[0]} channel{'s' if shape[0] != 1 else ''}",
        "input_size": _describe_shape(shape),
    }
    for key, value in fixed.items():
        given = cfg.model_kwargs.get(key, value)
        if (list(given) if isinstance(given, list | tuple) else given) != value:
            raise ValueError(
                f"--model-kwargs {key}={given!r} conflicts with --dataset {cfg.dataset}, which has {what[key]} "
                f"({key}={value!r}); drop {key!r} from --model-kwargs: the dataset sets it"
            )
    kwargs = dict(fixed)
    if cfg.variant == "vanilla":
        kwargs["levels"] = [1.0]
    kwargs.update(cfg.model_kwargs)
    try:
        model = create_model(cfg.arch, **kwargs)
    except ValueError:
        _check_model_fits(cfg, shape)  # an image model for clips (or the reverse) is the likelier cause: say so
        raise
    if model.input_shape != tuple(shape):
        _check_model_fits(cfg, shape)
        raise ValueError(
            f"--arch {cfg.arch} built for inputs of {'×'.join(map(str, model.input_shape))}, but --dataset "
            f"{cfg.dataset} holds {_describe_shape(shape)}; check --model-kwargs"
        )
    return model


_STATE_KEYS = ("version", "config", "epoch", "model", "optimizer", "history")


def _read_run_state(path: Path) -> dict:
    """The run state in ``last.pt`` (weights_only); CheckpointError naming the file if it is not one."""
    fix = f"delete {path} to restart the run from epoch 0, or start a new run (another --out)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign or tampered: torch's errors are many and unspecified
        raise CheckpointError(f"{path} is corrupt or not a tnn run state ({describe_error(err)}); {fix}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a tnn run state (it holds a {type(state).__name__}); {fix}")
    if "version" in state and state["version"] != STATE_VERSION:
        raise CheckpointError(
            f"{path} has run-state version {state['version']!r}, this tnn writes {STATE_VERSION}; "
            "start a new run (another --out) or resume with the tnn version that wrote it"
        )
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a tnn run state (missing {missing}); {fix}")
    return state


def _log(message: str) -> None:
    print(message, flush=True)


def pretrain(
    cfg: PretrainConfig, out_dir: str | os.PathLike, *, resume: bool = False, log=_log, command: str | None = None
) -> PretrainResult:
    """Train per ``cfg`` into ``out_dir``; the final checkpoint is ``out_dir/model.pt``.

    Its card's accuracy is measured on the test split from the checkpoint as stored (fp16 when
    ``cfg.half``), by the same :func:`evaluate_checkpoint` that ``tnn evaluate`` runs.
    """
    _check_config(cfg)
    out = Path(out_dir)
    _check_out(out, resume)
    command = command or shlex.join(sys.argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(cfg.device)
    if distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    set_threads(cfg.threads)
    log = log if rank == 0 else (lambda *a, **k: None)

    torch.manual_seed(cfg.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:  # fixed shapes (a few levels, one batch size): let cuDNN pick each convolution's fastest kernel
        torch.backends.cudnn.benchmark = True
    model = build_model(cfg).to(device)
    augment = cfg.augment if cfg.augment != "auto" else ("none" if cfg.dataset == "gestures" else "crop+flip")

    images, labels = tdata.load(cfg.dataset, "train", root=cfg.data_root)
    if cfg.limit:
        images, labels = images[: cfg.limit], labels[: cfg.limit]
    val_images, val_labels = tdata.load(cfg.dataset, "val", root=cfg.data_root)
    x_train = torch.from_numpy(images).to(device)  # uint8 on the device: the whole split fits
    y_train = torch.from_numpy(labels).to(device)
    x_val, y_val = torch.from_numpy(val_images), torch.from_numpy(val_labels)

    steps_per_epoch = len(x_train) // (cfg.batch_size * world)
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {cfg.batch_size} × {world} processes exceeds the {len(x_train)} training samples")
    total_steps = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    optimizer = torch.optim.SGD(_param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=0.9, nesterov=True)
    gen = torch.Generator(device=device)  # augmentation; reseeded every epoch, so a resume needs no RNG state
    start_epoch, history = 0, []

    state_path = out / "last.pt"
    if resume and not state_path.is_file():
        log(f"resume: no {state_path} found, so the run starts from epoch 0")
    elif resume:
        state = _read_run_state(state_path)
        saved = state["config"]
        changed = config_changes(_with_new_defaults(saved), dataclasses.asdict(cfg), RUNTIME_FIELDS)
        if not isinstance(saved, dict) or changed:
            why = ", ".join(changed) if isinstance(saved, dict) else "no config saved"
            raise CheckpointError(
                f"{state_path} was written by a different config ({why}); resume with the same flags "
                f"(its config.json) or start a new run (another --out)"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"], state["history"]
        log(f"resumed from {state_path} at epoch {start_epoch}")

    channels_last = x_train.dim() == 4 and (cfg.channels_last if device.type == "cuda" else cfg.cpu_bf16)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # before DDP builds its gradient buckets
    net: nn.Module = Sandwich(model, compile_levels(model, device) if cfg.compile else None)
    if distributed:  # levels not drawn this step leave their norms unused: find_unused_parameters
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    use_amp = cfg.amp if device.type == "cuda" else cfg.cpu_bf16
    levels = model.levels
    if device.type == "cpu" and cfg.cpu_bf16 and rank == 0 and (warning := cpu_bf16_warning()):
        log(warning)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", dataclasses.asdict(cfg))
        atomic_write(out / "command.txt", lambda fh: fh.write((command + "\n").encode()))

    t0, progress = time.time(), rank == 0 and sys.stderr.isatty()
    seconds_before = history[-1]["seconds"] if history else 0.0
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        # every random draw of an epoch comes from (seed, epoch[, rank]): resumed runs repeat them
        gen.manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + rank)
        level_rng = np.random.default_rng([cfg.seed, epoch])  # the same levels on every rank
        order_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(x_train), generator=order_gen).to(device)
        perm = perm[: steps_per_epoch * cfg.batch_size * world].view(steps_per_epoch, world, cfg.batch_size)[:, rank]
        loss_sum = torch.zeros((), device=device)
        for step in range(steps_per_epoch):
            lr = _lr_at(epoch * steps_per_epoch + step, total_steps, warmup, cfg.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = perm[step]
            x = augment_batch(x_train[idx].float().div_(255), augment, gen)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            us = [1.0]
            if len(levels) > 1:
                us.append(levels[0])
                middle = levels[1:-1]
                k = min(cfg.random_levels, len(middle))
                if middle:
                    us += [middle[i] for i in level_rng.choice(len(middle), size=k, replace=False)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = net(x, us)
            loss = sandwich_loss(
                logits,
                y_train[idx],
                distill=cfg.distill,
                label_smoothing=cfg.label_smoothing,
                full_weight=cfg.full_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            if progress:
                print(f"\repoch {epoch + 1}/{cfg.epochs} step {step + 1}/{steps_per_epoch}", end="", file=sys.stderr)
        if progress:
            print("\r\033[K", end="", file=sys.stderr, flush=True)  # clear the progress line
        if cfg.val_recalibration:  # its own generator: the training draws stay as they were
            recalibrate_batchnorm(
                model,
                x_train,
                batches=cfg.val_recalibration,
                batch_size=cfg.batch_size,
                generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch + 77),
                augment=augment,
                bf16=use_amp,
            )
        val = evaluate(model, x_val, y_val, batch_size=cfg.eval_batch_size)
        row = {
            "epoch": epoch + 1,
            "loss": float(loss_sum) / steps_per_epoch,
            "val_accuracy": {f"{u:g}": round(a, 2) for u, a in val.items()},
            "seconds": round(seconds_before + time.time() - t0, 1),  # training time across resumes
        }
        history.append(row)
        if rank == 0:
            state = {
                "version": STATE_VERSION,
                "config": dataclasses.asdict(cfg),
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": history,
            }
            atomic_write(state_path, lambda fh, s=state: torch.save(s, fh))
        accs = " ".join(f"{u:g}:{a:.1f}" for u, a in val.items())
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {row['loss']:.3f} val% {accs} ({row['seconds']:.0f}s)")

    final, test_accuracy, recalibrated_val = out / "model.pt", {}, None
    if cfg.bn_recalibration:  # same batches on every rank: identical statistics everywhere
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        recalibrate_batchnorm(
            model,
            x_train,
            batches=cfg.bn_recalibration,
            batch_size=cfg.batch_size,
            generator=gen,
            augment=augment,
            bf16=use_amp,
        )
        val = evaluate(model, x_val, y_val, batch_size=cfg.eval_batch_size)
        recalibrated_val = {f"{u:g}": round(a, 2) for u, a in val.items()}
        log("after BatchNorm recalibration: val% " + " ".join(f"{u:g}:{a:.1f}" for u, a in val.items()))
    if rank == 0:
        model = model.to(memory_format=torch.contiguous_format)
        made = {
            "command": command,
            "config": dataclasses.asdict(cfg),
            "seed": cfg.seed,
            "epochs": cfg.epochs,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "processes": world,
            "train_seconds": history[-1]["seconds"] if history else 0.0,
            "torch": torch.__version__,
        }
        save_checkpoint(model, final, half=cfg.half, dataset=cfg.dataset, variant=cfg.variant, made=made)
        test_accuracy = evaluate_checkpoint(final, data_root=cfg.data_root, device=device, log=log)
        metrics = {
            "history": history,
            "val_accuracy_after_bn_recalibration": recalibrated_val,
            "test_accuracy": {f"{u:g}": a for u, a in test_accuracy.items()},
        }
        _write_json(out / "metrics.json", metrics)
    if distributed:
        dist.barrier()
    return PretrainResult(model, final, history, test_accuracy)


def evaluate_checkpoint(
    path: str | os.PathLike,
    *,
    split: str = "test",
    data_root: str | None = None,
    device: str | torch.device = "cpu",
    write: bool = True,
    batch_size: int | None = None,
    log=_log,
) -> dict[float, float]:
    """Accuracy per level of a checkpoint on ``split``; on ``test`` (and ``write``) store it in the card.

    ``batch_size`` None: 1000 on CUDA, 128 on CPU (where large batches run slower: on the 2-core
    development machine DenseNet-BC-52 takes 3.5× as long per image at 1000 as at 128, resnet20 1.8×).
    """
    path = resolve_checkpoint_path(path)  # a run directory stands for its model.pt
    device = resolve_device(device)
    batch_size = batch_size or (1000 if device.type == "cuda" else 128)
    payload = read_checkpoint(path)
    model, card = model_from_payload(payload, path).to(device).eval(), payload["card"]
    dataset = card.get("dataset")
    if dataset not in tdata.DATASETS:
        raise CheckpointError(f"{path}: the card names no known dataset ({dataset!r}); cannot evaluate")
    images, labels = tdata.load(dataset, split, root=data_root)
    acc = evaluate(model, torch.from_numpy(images), torch.from_numpy(labels), batch_size=batch_size)
    log(f"{path} on {dataset}/{split}: " + " ".join(f"{u:g}:{a:.2f}%" for u, a in acc.items()))
    if write and split == "test":
        payload["card"]["accuracy"] = {f"{u:g}": round(a, 2) for u, a in acc.items()}
        payload["card"]["accuracy_split"] = f"{dataset}/test ({len(labels)} samples), measured by tnn evaluate"
        atomic_write(path, lambda fh: torch.save(payload, fh))
    return acc
