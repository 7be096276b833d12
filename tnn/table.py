"""Response tables: what a TNN answers for every sample of a split at every level, computed once.

A controller trained by RL takes millions of steps; running the network at each one would make a
step cost milliseconds. The table stores, per sample × level, the prediction, the confidence
(softmax max) and whether it is right, plus the *preview* the environment shows before a level is
chosen (the network at its lowest level: the input of its last :class:`~tnn.layers.ThrottleLinear`,
then softmax max, margin and entropy), so that a step becomes an array lookup. The preview is
stored for *every* level, so an environment may preview at any level (``preview_level``).

File format (``.npz``, ``TABLE_FORMAT`` version ``TABLE_VERSION``; a reader refuses newer versions)::

    format, version          "tnn-response-table", 2
    labels     (N,)   int64      levels (L,) float64
    preds      (N, L) int64      confidence (N, L) float32      correct (N, L) bool
    features   (N, F) float32    the preview of every level, level 0 first: its pooled features, then
                                 confidence, margin, entropy
    feature_offsets (L+1,) int64 level i's preview is features[:, feature_offsets[i]:feature_offsets[i+1]]
    pixels     (N, P) float32    the input average-pooled to 8×8 (clips: 4×8×8), values in [0, 1]
    meta       JSON string       checkpoint, checkpoint_sha256, dataset, split, arch, date, version, build_seconds

Version 1 files (the preview at the lowest level only, no ``feature_offsets``) are still read;
asking them for another level's preview is a TableError that says to rebuild.

``cached_table(checkpoint, split)`` builds a table once and reuses it from ``$TNN_CACHE`` (default
``~/.cache/tnn``), keyed by the checkpoint's sha256, the split and the format version.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tnn.checkpoint import atomic_write
from tnn.layers import ThrottleLinear

__all__ = [
    "PIXELS_SIZE",
    "TABLE_FORMAT",
    "TABLE_VERSION",
    "ResponseTable",
    "TableError",
    "add_cli",
    "build_table",
    "cache_dir",
    "cached_table",
    "file_sha256",
    "preview",
    "respond",
]

TABLE_FORMAT = "tnn-response-table"
TABLE_VERSION = 2
PIXELS_SIZE = 8  # the `pixels` observation: the input average-pooled to 8×8 (clips also to 4 frames)
PREVIEW_STATS = ("confidence", "margin", "entropy")  # appended to the pooled features, in this order

_ARRAYS = ("labels", "levels", "preds", "confidence", "correct", "features", "pixels")
_OPTIONAL = ("feature_offsets",)  # absent from version 1 files


class TableError(ValueError):
    """A file that is not a response table this library can read."""


@dataclass
class ResponseTable:
    """Per sample × level responses of one model on one split, plus the preview features.

    ``features`` holds the preview of the levels ``feature_offsets`` delimits (all of them in tables
    this version builds; None: ``features`` is the lowest level's preview alone).
    """

    labels: np.ndarray
    levels: np.ndarray
    preds: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray
    features: np.ndarray
    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    feature_offsets: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels, self.levels = np.asarray(self.labels), np.asarray(self.levels)
        if self.labels.ndim != 1:
            raise TableError(f"response table: labels has shape {self.labels.shape}, expected one per sample (N,)")
        levels = self.levels
        if (
            levels.ndim != 1
            or len(levels) == 0
            or not (np.issubdtype(levels.dtype, np.floating) or np.issubdtype(levels.dtype, np.integer))
            or not np.isfinite(levels).all()
            or (np.diff(levels) <= 0).any()
        ):
            raise TableError(
                f"response table: levels {levels.tolist()} are not a 1-D, strictly ascending list of numbers; "
                "rebuild the table with tnn cache"
            )
        n, lv = len(self.labels), len(self.levels)
        shapes = {
            "preds": (n, lv),
            "confidence": (n, lv),
            "correct": (n, lv),
        }
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise TableError(f"response table: {name} has shape {getattr(self, name).shape}, expected {shape}")
        for name in ("features", "pixels"):
            arr = getattr(self, name)
            if arr.ndim != 2 or len(arr) != n:
                raise TableError(f"response table: {name} has shape {arr.shape}, expected ({n}, ·)")
        if self.feature_offsets is None:
            self.feature_offsets = np.array([0, self.features.shape[1]], np.int64)
        raw = np.asarray(self.feature_offsets)
        if not np.issubdtype(raw.dtype, np.integer):
            raise TableError(
                f"response table: feature_offsets must be integers (column indices), got dtype {raw.dtype}; "
                "rebuild the table with tnn cache"
            )
        off = raw.astype(np.int64)
        if (
            off.ndim != 1
            or not 2 <= len(off) <= lv + 1
            or off[0] != 0
            or off[-1] != self.features.shape[1]
            or (np.diff(off) <= 0).any()
        ):
            raise TableError(
                f"response table: feature_offsets {off.tolist()} do not split {self.features.shape[1]} feature "
                f"columns into at most {lv} increasing level blocks"
            )
        self.feature_offsets = off

    @property
    def preview_levels(self) -> int:
        """How many levels (from the lowest) have their preview stored."""
        return len(self.feature_offsets) - 1

    def preview_features(self, level: int = 0) -> np.ndarray:
        """(N, F_level) preview of ``level``: pooled features there, then confidence, margin, entropy."""
        if not 0 <= level < self.num_levels:
            raise ValueError(f"level must be in [0, {self.num_levels}), got {level}")
        if level >= self.preview_levels:
            raise TableError(
                f"this response table (format v{self.meta.get('version', '?')}) stores the preview of levels "
                f"0..{self.preview_levels - 1} only, not of level {level}; rebuild it with this tnn "
                "(`tnn cache CHECKPOINT`)"
            )
        lo, hi = self.feature_offsets[level], self.feature_offsets[level + 1]
        return self.features[:, lo:hi]

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def take(self, rows: np.ndarray) -> ResponseTable:
        """The table of the samples ``rows`` (indices into this table, in their order)."""
        rows = np.asarray(rows, np.int64)
        per_sample = ("labels", "preds", "confidence", "correct", "features", "pixels")
        return ResponseTable(
            **{name: getattr(self, name)[rows] for name in per_sample},
            levels=self.levels,
            meta={**self.meta, "rows_taken": len(rows)},
            feature_offsets=self.feature_offsets,
        )

    def accuracy(self) -> dict[float, float]:
        """Top-1 % per level, as the model card reports it."""
        return {float(u): 100.0 * float(c) for u, c in zip(self.levels, self.correct.mean(axis=0), strict=True)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table atomically (np.savez into a temporary file, then rename)."""
        meta = dict(self.meta, format=TABLE_FORMAT, version=TABLE_VERSION)
        arrays = {name: getattr(self, name) for name in (*_ARRAYS, *_OPTIONAL)}

        def write(fh: Any) -> None:
            header = {"format": np.array(TABLE_FORMAT), "version": np.array(TABLE_VERSION)}
            np.savez(fh, **header, meta=np.array(json.dumps(meta)), **arrays)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ResponseTable:
        """Read a table; TableError for a foreign, corrupt or newer file, naming what to do."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no response table at {path}; build one with `tnn cache CHECKPOINT --split val`")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            why = f"{type(err).__name__}: {err}"
            raise TableError(f"{path} is corrupt or not a .npz file ({why}); rebuild it with tnn cache") from None
        if "format" not in data or str(data["format"]) != TABLE_FORMAT:
            raise TableError(f"{path} is not a TNN response table (format {TABLE_FORMAT!r}); build one with tnn cache")
        raw_version = data.get("version")
        if raw_version is None or raw_version.ndim != 0 or not np.issubdtype(raw_version.dtype, np.integer):
            shown = "none" if raw_version is None else f"{raw_version.dtype} array of shape {raw_version.shape}"
            raise TableError(
                f"{path}: invalid response-table version ({shown}, expected an integer); rebuild it with tnn cache"
            )
        version = int(raw_version)
        if version > TABLE_VERSION:
            raise TableError(
                f"{path} is response-table format v{version}, newer than this tnn reads (v{TABLE_VERSION}); upgrade tnn"
            )
        if version < 1:
            raise TableError(f"{path}: invalid response-table version {version}; rebuild it with tnn cache")
        missing = [name for name in (*_ARRAYS, "meta") if name not in data]
        if missing:
            raise TableError(f"{path}: response table lacks {missing}; rebuild it with tnn cache")
        try:
            meta = json.loads(str(data["meta"]))
        except json.JSONDecodeError as err:
            raise TableError(f"{path}: unreadable metadata ({err}); rebuild it with tnn cache") from None
        if not isinstance(meta, dict):
            raise TableError(
                f"{path}: metadata is a JSON {type(meta).__name__}, not an object; rebuild it with tnn cache"
            )
        optional = {name: data[name] for name in _OPTIONAL if name in data}
        if version >= 2 and "feature_offsets" not in optional:
            raise TableError(f"{path}: response table v{version} lacks feature_offsets; rebuild it with tnn cache")
        meta.setdefault("version", version)
        return cls(**{name: data[name] for name in _ARRAYS}, meta=meta, **optional)


def _last_linear(model: torch.nn.Module) -> ThrottleLinear:
    linears = [m for m in model.modules() if isinstance(m, ThrottleLinear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no ThrottleLinear classifier; the preview needs one")
    return linears[-1]


def _stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prediction, softmax max, top-1 minus top-2 probability, entropy (nats) of each row."""
    prob = torch.softmax(logits.float(), dim=1)
    top = prob.topk(min(2, prob.shape[1]), dim=1).values
    margin = top[:, 0] - top[:, 1] if top.shape[1] > 1 else top[:, 0]
    entropy = -(prob * torch.log(prob.clamp_min(1e-12))).sum(dim=1)
    return prob.argmax(dim=1), top[:, 0], margin, entropy


def _as_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(images)
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def _respond_and_preview(
    model: torch.nn.Module, x: torch.Tensor, u: float
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Predictions, confidences and preview features of ``x`` at ``u``, from one forward call."""
    captured: list[torch.Tensor] = []
    hook = _last_linear(model).register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    try:
        logits = model(x, u)
    finally:
        hook.remove()
    pred, conf, margin, entropy = _stats(logits)
    pooled = captured[-1].flatten(1).float()
    feats = torch.cat([pooled, conf[:, None], margin[:, None], entropy[:, None]], dim=1)
    return pred, conf, feats.numpy().astype(np.float32)


@torch.inference_mode()
def preview(model: torch.nn.Module, images: np.ndarray | torch.Tensor, level: int = 0) -> np.ndarray:
    """The preview features of a batch: the model at level ``level`` (default its lowest), as the
    environment shows them.

    Pooled features (the input of the last ThrottleLinear, captured by a forward pre-hook, so any
    model family works) followed by softmax max, margin and entropy; float32 (N, F).
    """
    levels = tuple(model.levels)
    if not 0 <= level < len(levels):
        raise ValueError(f"preview level must be in [0, {len(levels)}), got {level}")
    return _respond_and_preview(model, _as_float(images), levels[level])[2]


@torch.inference_mode()
def respond(model: torch.nn.Module, images: np.ndarray | torch.Tensor, u: float) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (int64) and confidences (float32) of the model at ``u``."""
    pred, conf, _, _ = _stats(model(_as_float(images), u))
    return pred.numpy().astype(np.int64), conf.numpy().astype(np.float32)


def pixels_of(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """The `pixels` observation: images pooled to 8×8 (clips to 4×8×8), flattened, in [0, 1]."""
    x = _as_float(images)
    if x.dim() == 4:
        pooled = F.adaptive_avg_pool2d(x, PIXELS_SIZE)
    elif x.dim() == 5:
        pooled = F.adaptive_avg_pool3d(x, (PIXELS_SIZE // 2, PIXELS_SIZE, PIXELS_SIZE))
    else:
        raise ValueError(f"expected images N×C×H×W or clips N×C×T×H×W, got shape {tuple(x.shape)}")
    return pooled.flatten(1).clamp(0, 1).numpy().astype(np.float32)


def build_table(
    model: torch.nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 1000,
    meta: dict[str, Any] | None = None,
) -> ResponseTable:
    """Run ``model`` (eval mode) over ``images`` at every level and collect the responses.

    ``images`` are uint8 (or float in [0, 1]) as :func:`tnn.data.load` returns them. Large
    batches matter on CPU: 1,000 images per call run the small models ~2.5× faster than 250.
    """
    if len(images) != len(labels) or len(labels) == 0:
        raise ValueError(f"need as many images as labels (> 0), got {len(images)} and {len(labels)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    model.eval()
    levels = tuple(model.levels)
    n = len(labels)
    preds = np.empty((n, len(levels)), np.int64)
    confidence = np.empty((n, len(levels)), np.float32)
    features: list[list[np.ndarray]] = [[] for _ in levels]
    pixels = []
    with torch.inference_mode():
        for lo in range(0, n, batch_size):
            batch = images[lo : lo + batch_size]
            x = _as_float(batch)
            pixels.append(pixels_of(x))
            for j, u in enumerate(levels):
                pred, conf, feats = _respond_and_preview(model, x, u)
                preds[lo : lo + len(batch), j] = pred.numpy()
                confidence[lo : lo + len(batch), j] = conf.numpy()
                features[j].append(feats)
    per_level = [np.concatenate(f) for f in features]
    offsets = np.cumsum([0] + [f.shape[1] for f in per_level]).astype(np.int64)
    labels = np.asarray(labels, np.int64)
    info = {
        "arch": getattr(model, "arch", type(model).__name__),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": TABLE_VERSION,
        "build_seconds": round(time.perf_counter() - start, 2),
        "preview_stats": list(PREVIEW_STATS),
        "num_classes": int(getattr(model, "num_classes", int(preds.max()) + 1)),
    }
    info.update(meta or {})
    return ResponseTable(
        labels=labels,
        levels=np.asarray(levels, np.float64),
        preds=preds,
        confidence=confidence,
        correct=preds == labels[:, None],
        features=np.concatenate(per_level, axis=1),
        pixels=np.concatenate(pixels),
        meta=info,
        feature_offsets=offsets,
    )


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """Where tables live: ``cache``, else ``$TNN_CACHE``, else ``~/.cache/tnn``."""
    if cache is not None:
        return Path(cache)
    return Path(os.environ.get("TNN_CACHE") or Path.home() / ".cache" / "tnn")


def table_path(checkpoint: str | os.PathLike, split: str, cache: str | os.PathLike | None = None) -> Path:
    """The cache file of (checkpoint contents, split, format version)."""
    return cache_dir(cache) / f"table-{file_sha256(checkpoint)[:20]}-{split}-v{TABLE_VERSION}.npz"


def cached_table(
    checkpoint: str | os.PathLike,
    split: str,
    *,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
) -> ResponseTable:
    """The response table of ``checkpoint`` on ``split``: read from the cache, else built and cached.

    The dataset comes from the checkpoint's card; ``data_root`` is passed to :func:`tnn.data.load`.
    ``out`` writes (and reads) that file instead of the cache entry.
    """
    from tnn import data
    from tnn.checkpoint import load_checkpoint, resolve_checkpoint_path

    if split not in data.SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(data.SPLITS)}")
    checkpoint = resolve_checkpoint_path(checkpoint)
    sha = file_sha256(checkpoint)
    path = Path(out) if out is not None else table_path(checkpoint, split, cache_dir)
    for parent in (path.parent, *path.parent.parents):  # refuse a place it cannot write before the work
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot write the table under {path.parent}: {parent} is a file; give a directory")
            break
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give the table a file name")
    if path.is_file():
        try:
            table = ResponseTable.load(path)
            complete = table.preview_levels == table.num_levels  # a v1 file lacks the deeper previews
            if table.meta.get("checkpoint_sha256") == sha and table.meta.get("split") == split and complete:
                return table
        except TableError:
            pass  # a stale or broken cache entry is rebuilt below
    model, card = load_checkpoint(checkpoint)
    dataset = card.get("dataset")
    if dataset not in data.DATASETS:
        raise ValueError(f"{checkpoint}: its card names no known dataset ({dataset!r}); known: {data.DATASETS}")
    images, labels = data.load(dataset, split, root=data_root)
    table = build_table(
        model,
        images,
        labels,
        meta={
            "checkpoint": str(checkpoint.resolve()),
            "checkpoint_sha256": sha,
            "dataset": dataset,
            "split": split,
        },
    )
    table.save(path)
    return table


def _cmd_cache(args: argparse.Namespace) -> int:
    from tnn.runtime import set_threads

    set_threads(args.threads)
    start = time.perf_counter()
    table = cached_table(args.checkpoint, args.split, data_root=args.data_root, cache_dir=args.cache_dir, out=args.out)
    where = args.out or table_path(args.checkpoint, args.split, args.cache_dir)
    acc = ", ".join(f"{u:g}: {a:.2f}" for u, a in table.accuracy().items())
    print(f"{table.num_samples} samples × {table.num_levels} levels in {time.perf_counter() - start:.1f} s -> {where}")
    print(f"accuracy % per level ({args.split}): {acc}")
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    """``tnn cache CKPT --split val|test``: build (or find) the response table."""
    p = sub.add_parser("cache", help="build the response table (per sample × level) that the environment reads")
    p.add_argument("checkpoint", help="a TNN checkpoint (.pt)")
    p.add_argument(
        "--split", default="val", choices=["train", "val", "test"], help="val trains controllers, test evaluates them"
    )
    p.add_argument("--data-root", default=None, help="data directory (else $TNN_DATA / the defaults)")
    p.add_argument("--cache-dir", default=None, help="cache directory (else $TNN_CACHE or ~/.cache/tnn)")
    p.add_argument("--out", default=None, help="write the table to this file instead of the cache")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=_cmd_cache)
