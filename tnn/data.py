"""Datasets as plain uint8 arrays: CIFAR-10, Fashion-MNIST and synthetic gesture clips.

``load(name, split)`` returns ``(images, labels)``: images uint8 N×C×H×W (clips N×C×T×H×W),
labels int64 N. Arrays rather than a ``Dataset`` class because every consumer (pretraining, the
response table, the environment) wants random access to whole splits that fit in memory, and
numpy keeps this module importable without torch.

Where the files come from (nothing is downloaded; the user points at data they have):

- ``cifar10``: the canonical python release ``cifar-10-batches-py`` (the layout torchvision reads),
  found at ``root`` or ``$TNN_DATA``, either the folder itself or a folder containing it.
- ``fashion_mnist``: the original IDX files (gzipped or not) at ``root`` (or ``root/fashion-mnist``),
  else ``$TNN_DATA/fashion-mnist`` when it holds them, else ``/usr/share/datasets/fashion-mnist``
  (Debian package ``dataset-fashion-mnist``).
- ``gestures``: SYNTHETIC motion clips (1×16×32×32), a stand-in for 20BN-Jester, which no
  package ships; report results on it as synthetic. Ten classes (``GESTURE_CLASSES``): a textured
  object moves left/right/up/down by 6-14 px, rotates cw/ccw by 50-120°, zooms in/out by ×1.6-2.4,
  shakes (2-4 px, 1.5-2.5 cycles) or stays still, over a static scene of 3-7 look-alike
  distractor shapes, with camera pan, nuisance drift, noise, flicker and random contrast; see
  ``_render_gestures`` for why single frames carry no label. ``load`` takes ``n_train`` (6000),
  ``n_test`` (1500) and ``seed`` (0); labels are balanced and train/test use independent streams.
  Generating the defaults takes about 15 s on two cores; the result is cached as ``.npz`` under
  ``root`` or ``$TNN_DATA/gestures`` when one of them is given (keyed by ``GESTURES_VERSION``,
  seed, split and size; bump the version whenever the generator's output changes).

Splits. ``test`` is the data set's own test set, untouched. ``val`` is carved from the official
training set so that controllers can be trained on data the network was not fitted to without
touching ``test``: a permutation of the training indices drawn with ``VAL_SEED`` (0) puts the first
``n // 10`` into ``val`` and the rest into ``train``; both keep the original
order. Sizes: cifar10 45,000 / 5,000 / 10,000; fashion_mnist 54,000 / 6,000 / 10,000;
gestures (defaults) 5,400 / 600 / 1,500. ``train`` and ``val`` are disjoint and together are
exactly the original training set, whatever the call order.
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "GESTURE_CLASSES",
    "NUMPY_ARRAY_GLOBALS",
    "SPLITS",
    "VAL_SEED",
    "DataNotFoundError",
    "class_names",
    "generate_gestures",
    "input_shape",
    "load",
    "num_classes",
    "val_indices",
]

DATASETS = ("cifar10", "fashion_mnist", "gestures")
SPLITS = ("train", "val", "test")
VAL_SEED = 0

ENV_VAR = "TNN_DATA"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Screen directions: image rows grow downwards, so "up" is decreasing row index, and "clockwise"
# is clockwise as displayed.
GESTURE_CLASSES = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_cw",
    "rotate_ccw",
    "zoom_in",
    "zoom_out",
    "shake",
    "still",
)

_SHAPES = {
    "cifar10": (3, 32, 32),
    "fashion_mnist": (1, 28, 28),
    "gestures": (1, 16, 32, 32),
}
_CLASSES = {"cifar10": CIFAR10_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES, "gestures": GESTURE_CLASSES}


class DataNotFoundError(FileNotFoundError):
    """The data set's files are not where we looked; the message says where and how to get them."""


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return name


def num_classes(name: str) -> int:
    """Number of classes, so a model can be built without loading any data."""
    return len(_CLASSES[_check_name(name)])


def input_shape(name: str) -> tuple[int, ...]:
    """Shape of one sample: (C, H, W) for images, (C, T, H, W) for clips."""
    return _SHAPES[_check_name(name)]


def class_names(name: str) -> list[str]:
    """Human-readable class names, indexed by label."""
    return list(_CLASSES[_check_name(name)])


def val_indices(n_train: int) -> np.ndarray:
    """Sorted indices of the official training set that form ``val`` (the rest is ``train``)."""
    perm = np.random.default_rng(VAL_SEED).permutation(n_train)
    return np.sort(perm[: n_train // 10])


def load(name: str, split: str, root: str | os.PathLike | None = None, **kwargs: int) -> tuple[np.ndarray, np.ndarray]:
    """Load one split as ``(images uint8 N×C×H×W or N×C×T×H×W, labels int64 N)``.

    ``root`` overrides where files are looked for (or, for ``gestures``, cached). Only
    ``gestures`` takes keyword arguments: ``n_train`` (6000), ``n_test`` (1500) and ``seed`` (0).
    """
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if name != "gestures" and kwargs:
        raise TypeError(f"{name} takes no extra arguments, got {', '.join(sorted(kwargs))}")
    part = "test" if split == "test" else "train"
    if name == "cifar10":
        x, y = _load_cifar10(part, root)
    elif name == "fashion_mnist":
        x, y = _load_fashion_mnist(part, root)
    else:
        x, y = _load_gestures(part, root, **kwargs)
    if split == "test":
        return x, y
    mask = np.zeros(len(y), bool)
    mask[val_indices(len(y))] = True
    if split == "train":
        mask = ~mask
    return np.ascontiguousarray(x[mask]), y[mask]


# --------------------------------------------------------------------------------------- CIFAR-10

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_CIFAR_HOWTO = (
    "Get the official python release from https://www.cs.toronto.edu/~kriz/cifar.html "
    "(cifar-10-python.tar.gz) and pass root=DIR or set TNN_DATA=DIR, where DIR contains "
    "cifar-10-batches-py; on this project's dev machines run "
    "`python3 ../shared/data/prepare_cifar10.py DIR/cifar-10-batches-py` then `TNN_DATA=DIR`."
)


# The globals a pickled numpy array needs (numpy 1.x and 2.x module names): data, not code. The
# controller runs' unpickler (agents.safe_load) starts from the same set.
NUMPY_ARRAY_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
        *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    }
)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays and builtin containers: a data file must not run code."""

    _ALLOWED = NUMPY_ARRAY_GLOBALS | {("_codecs", "encode")}  # CIFAR's batches are protocol-2 pickles

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _roots(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root).expanduser()]
    env = os.environ.get(ENV_VAR)
    return [Path(env).expanduser()] if env else []


def _load_cifar10(part: str, root: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    files = _CIFAR_FILES[part]
    tried = []
    for base in _roots(root):
        for d in (base / _CIFAR_DIR, base):
            tried.append(d)
            if all((d / f).is_file() for f in files):
                xs, ys = zip(*(_read_cifar_batch(d / f) for f in files), strict=True)
                return np.concatenate(xs), np.concatenate(ys)
    where = "looked in " + ", ".join(str(p) for p in tried) if tried else f"no root given and ${ENV_VAR} is not set"
    raise DataNotFoundError(f"CIFAR-10 ({', '.join(files)}) not found: {where}. {_CIFAR_HOWTO}")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = _ArrayUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise ValueError(f"{path} is not a CIFAR-10 python batch file: {e}") from e
    if not isinstance(batch, dict):
        batch = {}  # reported below as missing data
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: expected b'data' as a uint8 array of shape (N, 3072), got {desc}")
    y = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if y.shape != (len(data),) or (y.size and (y.min() < 0 or y.max() >= len(CIFAR10_CLASSES))):
        raise ValueError(f"{path}: expected {len(data)} labels in 0..9 under b'labels'")
    return data.reshape(-1, 3, 32, 32), y


# ---------------------------------------------------------------------------------- Fashion-MNIST

_FMNIST_DIR = "fashion-mnist"
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_IMAGES, _IDX_LABELS = 2051, 2049
_FMNIST_HOWTO = (
    "Install it with `apt-get install -y dataset-fashion-mnist` (files land in "
    f"{FASHION_MNIST_SYSTEM_DIR}) or download the four IDX files from the Zalando release "
    "(https://github.com/zalandoresearch/fashion-mnist) into DIR and pass root=DIR or set "
    f"TNN_DATA so that $TNN_DATA/{_FMNIST_DIR} holds them."
)


def _fashion_mnist_dirs(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        base = Path(root).expanduser()
        return [base, base / _FMNIST_DIR]
    env = os.environ.get(ENV_VAR)
    return ([Path(env).expanduser() / _FMNIST_DIR] if env else []) + [FASHION_MNIST_SYSTEM_DIR]


def _find_idx(d: Path, stem: str) -> Path | None:
    for p in (d / stem, d / f"{stem}.gz"):
        if p.is_file():
            return p
    return None


def _load_fashion_mnist(part: str, root: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    img_stem, lbl_stem = _FMNIST_FILES[part]
    dirs = _fashion_mnist_dirs(root)
    for d in dirs:
        img, lbl = _find_idx(d, img_stem), _find_idx(d, lbl_stem)
        if img and lbl:
            x = _read_idx(img, _IDX_IMAGES)
            y = _read_idx(lbl, _IDX_LABELS).astype(np.int64)
            if x.shape[1:] != (28, 28) or len(x) != len(y):
                raise ValueError(f"{img}, {lbl}: expected N×28×28 images and N labels, got {x.shape}, {y.shape}")
            if y.size and y.max() >= len(FASHION_MNIST_CLASSES):
                raise ValueError(f"{lbl}: labels must be in 0..9, found {y.max()}")
            return x[:, None], y
    tried = ", ".join(f"{d / s}[.gz]" for d in dirs for s in (img_stem, lbl_stem))
    raise DataNotFoundError(f"Fashion-MNIST not found: looked for {tried}. {_FMNIST_HOWTO}")


def _read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzipped if its name ends in .gz), checking its header."""
    path = Path(path)
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read IDX file: {e}") from e
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file")
    found = int.from_bytes(raw[:4], "big")
    ndim = raw[3]
    if raw[:2] != b"\0\0" or raw[2] != 0x08 or ndim == 0 or (magic is not None and found != magic):
        want = f"{magic} (0x{magic:08x})" if magic is not None else "an unsigned-byte IDX header"
        raise ValueError(f"{path}: bad IDX magic number {found} (0x{found:08x}), expected {want}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise ValueError(f"{path}: header says {dims} = {size} bytes of data, file has {len(raw) - header}")
    return np.frombuffer(raw, np.uint8, count=size, offset=header).reshape(dims).copy()


# --------------------------------------------------------------------------------------- gestures

GESTURES_VERSION = 1
_GESTURE_DEFAULTS = {"n_train": 6000, "n_test": 1500, "seed": 0}
_CHUNK = 100  # clips rendered together; fixed, so the output never depends on threading
_MARGIN = 4  # background is rendered this much larger on every side, so the camera can pan


def _load_gestures(part: str, root: str | os.PathLike | None, **kwargs: int) -> tuple[np.ndarray, np.ndarray]:
    unknown = set(kwargs) - set(_GESTURE_DEFAULTS)
    if unknown:
        raise TypeError(f"gestures got unexpected arguments {sorted(unknown)}; it takes {list(_GESTURE_DEFAULTS)}")
    opts = {**_GESTURE_DEFAULTS, **kwargs}
    n, seed = int(opts[f"n_{part}"]), int(opts["seed"])
    if n < 0 or seed < 0:
        raise ValueError(f"gestures needs n_{part} >= 0 and seed >= 0, got {n}, {seed}")
    cache = _gesture_cache_path(root, part, n, seed)
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as f:
                x, y = f["images"], f["labels"]
            if x.shape == (n, *_SHAPES["gestures"]) and x.dtype == np.uint8 and y.shape == (n,):
                return x, y.astype(np.int64)
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: regenerate and overwrite it
    x, y = generate_gestures(n, seed=seed, part=part)
    if cache is not None:
        _save_atomic(cache, images=x, labels=y)
    return x, y


def _gesture_cache_path(root: str | os.PathLike | None, part: str, n: int, seed: int) -> Path | None:
    if root is not None:
        d = Path(root).expanduser()
    elif os.environ.get(ENV_VAR):
        d = Path(os.environ[ENV_VAR]).expanduser() / "gestures"
    else:
        return None
    return d / f"gestures-v{GESTURES_VERSION}-seed{seed}-{part}-n{n}.npz"


def _save_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write through :func:`tnn.checkpoint.atomic_write` (temporary file, fsync, rename; the permissions
    ``open`` would give), so readers never see a half-written cache."""
    from tnn.checkpoint import atomic_write  # imported here: tnn.checkpoint pulls in torch and the models

    try:
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
    except OSError:
        return  # the cache is a convenience; an unwritable directory (or a full disk) is not an error


def generate_gestures(n: int, seed: int = 0, part: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` synthetic gesture clips (uint8 n×1×16×32×32) and balanced labels.

    ``part`` ("train" or "test") selects an independent random stream, so the two never share
    clips. Output depends only on (GESTURES_VERSION, seed, part, n).
    """
    part_id = {"train": 0, "test": 1}[part]
    base = [GESTURES_VERSION, seed, part_id]
    k = len(GESTURE_CLASSES)
    labels = np.random.default_rng(base).permutation(np.arange(n) % k).astype(np.int64)
    t, h, w = _SHAPES["gestures"][1:]
    out = np.empty((n, 1, t, h, w), np.uint8)

    def work(c: int) -> None:
        sl = slice(c * _CHUNK, min(n, (c + 1) * _CHUNK))
        rng = np.random.default_rng([*base, 1 + c])
        out[sl, 0] = _render_gestures(labels[sl], rng, t, h, w)

    chunks = range((n + _CHUNK - 1) // _CHUNK)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(work, chunks))  # numpy releases the GIL in the heavy ufuncs
    return out, labels


def _u(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return rng.uniform(lo, hi, n).astype(np.float32)


def _shape_pixels(u: np.ndarray, v: np.ndarray, scale: np.ndarray | float, p: dict) -> tuple[np.ndarray, np.ndarray]:
    """Coverage in [0, 1] and texture in [-1, 1] of textured shapes.

    ``u, v`` (m, F, P) are pixel offsets in each shape's own (rotated, scaled) frame, so the
    texture turns and zooms with the shape; ``scale`` (m, F, 1) converts back to pixels for a
    one-pixel anti-aliased edge; parameters are (m,) arrays, one per shape.
    """
    q = {k: [a[:, None, None] for a in x] if isinstance(x, list) else x[:, None, None] for k, x in p.items()}
    # Outline as a radial "distance" that equals the radius on the edge, evaluated per kind on
    # its own shapes only (this is where generation spends its time): ellipse, regular polygon
    # (largest projection on a side normal), smooth blob (radius modulated by 2nd/3rd harmonics).
    dist = np.empty_like(u)
    for kind in range(3):
        i = np.flatnonzero(p["kind"] == kind)
        if i.size == 0:
            continue
        a, b = u[i], v[i]
        if kind == 0:
            dist[i] = np.sqrt((a / q["aspect"][i]) ** 2 + b * b)
        elif kind == 1:
            d = a * q["nx"][0][i] + b * q["ny"][0][i]
            for nx, ny in zip(q["nx"][1:], q["ny"][1:], strict=True):
                d = np.maximum(d, a * nx[i] + b * ny[i])
            dist[i] = d
        else:
            aa, bb = a * a, b * b
            r2 = aa + bb + 1e-6
            rho = np.sqrt(r2)
            c1, s1 = a / rho, b / rho
            c2, s2 = (aa - bb) / r2, 2 * a * b / r2
            c3, s3 = c1 * (4 * c1 * c1 - 3), s1 * (3 - 4 * s1 * s1)
            dist[i] = rho / (1 + q["b2c"][i] * c2 + q["b2s"][i] * s2 + q["b3c"][i] * c3 + q["b3s"][i] * s3)
    cover = np.clip((q["radius"] - dist) * scale + 0.5, 0.0, 1.0)
    # Texture: stripes at angle alpha, or a checkerboard; a clipped sine limits aliasing.
    stripes = np.sin(q["freq"] * (u * q["ca"] + v * q["sa"]) + q["ph"])
    checker = stripes * np.sin(q["freq"] * (v * q["ca"] - u * q["sa"]))
    tex = np.clip(np.where(q["checker"], 4.0 * checker, 2.0 * stripes), -1.0, 1.0)
    return cover, tex


def _random_shapes(rng: np.random.Generator, n: int, rmin: float, rmax: float) -> dict[str, np.ndarray]:
    """Per-shape outline and texture parameters (flat arrays of length n, or lists of them)."""
    alpha = _u(rng, 0, np.pi, n)
    sides = rng.integers(3, 7, n)
    turn = _u(rng, 0, 2 * np.pi, n)
    # Side normals of a regular polygon scaled so the inscribed circle is cos(pi/sides); unused
    # slots repeat the first normal.
    normals = [turn + 2 * np.pi * np.where(j < sides, j, 0) / sides for j in range(6)]
    inv = (1 / np.cos(np.pi / sides)).astype(np.float32)
    h2, g2 = _u(rng, 0.15, 0.35, n), _u(rng, 0, 2 * np.pi, n)
    h3, g3 = _u(rng, 0.0, 0.2, n), _u(rng, 0, 2 * np.pi, n)
    return {
        "kind": rng.integers(0, 3, n),
        "aspect": _u(rng, 0.45, 0.75, n),
        "nx": [(np.cos(a) * inv).astype(np.float32) for a in normals],
        "ny": [(np.sin(a) * inv).astype(np.float32) for a in normals],
        "b2c": h2 * np.cos(g2),
        "b2s": -h2 * np.sin(g2),
        "b3c": h3 * np.cos(g3),
        "b3s": -h3 * np.sin(g3),
        "radius": _u(rng, rmin, rmax, n),
        "ca": np.cos(alpha),
        "sa": np.sin(alpha),
        "freq": (2 * np.pi / _u(rng, 3.5, 6.5, n)).astype(np.float32),  # stripe period in pixels
        "ph": _u(rng, 0, 2 * np.pi, n),
        "checker": rng.random(n) < 0.5,
        "mean": _u(rng, 0.2, 0.8, n),
        "amp": _u(rng, 0.12, 0.35, n),
    }


def _rotate(dx: np.ndarray, dy: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets expressed in a frame turned by theta (screen-clockwise, as rows grow downwards)."""
    c, s = np.cos(theta), np.sin(theta)
    return dx * c + dy * s, dy * c - dx * s


def _render_gestures(labels: np.ndarray, rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    """Render clips: a textured object moving per its label over a cluttered, panning scene.

    Why it is hard: the object is drawn from the same shape/texture distribution as the static
    distractors, so one frame does not say which shape is the actor; every class has the same
    distribution of positions, sizes and orientations averaged over time (paired classes are
    time reversals of each other), so the label is only in the change across frames; the
    camera pans a little and every clip gets small nuisance drift, turn and scale change,
    noise, flicker and random contrast, so motion must be judged relative to the scene.
    """
    n = len(labels)
    f32 = np.float32
    tau = (np.arange(t, dtype=f32) / (t - 1) - 0.5)[None]  # (1, T) in [-0.5, 0.5]

    # Camera pan (moves scene and object alike) and nuisance motion of the object (all classes).
    pan_x, pan_y = (_u(rng, -0.25, 0.25, n)[:, None] * (t - 1) * tau for _ in range(2))
    cx = 15.5 + _u(rng, -5, 5, n)[:, None] + _u(rng, -0.12, 0.12, n)[:, None] * (t - 1) * tau + pan_x
    cy = 15.5 + _u(rng, -5, 5, n)[:, None] + _u(rng, -0.12, 0.12, n)[:, None] * (t - 1) * tau + pan_y
    theta = _u(rng, 0, 2 * np.pi, n)[:, None] + np.radians(_u(rng, -10, 10, n))[:, None] * tau
    log_scale = _u(rng, -0.1, 0.1, n)[:, None] * tau + np.zeros_like(tau)

    # The gesture itself, with a random magnitude per clip.
    dist = _u(rng, 6, 14, n)[:, None] * tau  # total displacement 6..14 px
    turn = np.radians(_u(rng, 50, 120, n))[:, None] * tau  # total rotation 50..120 degrees
    zoom = np.log(_u(rng, 1.6, 2.4, n))[:, None] * tau  # total size change x1.6..2.4
    axis = _u(rng, 0, np.pi, n)[:, None]
    wobble = _u(rng, 2, 4, n)[:, None] * np.sin(
        2 * np.pi * _u(rng, 1.5, 2.5, n)[:, None] * np.arange(t, dtype=f32)[None] / t
        + _u(rng, 0, 2 * np.pi, n)[:, None]
    )
    lab = labels[:, None]
    cx = cx + np.select([lab == 0, lab == 1, lab == 8], [-dist, dist, wobble * np.cos(axis)], 0)
    cy = cy + np.select([lab == 2, lab == 3, lab == 8], [-dist, dist, wobble * np.sin(axis)], 0)
    theta = theta + np.select([lab == 4, lab == 5], [turn, -turn], 0)
    log_scale = log_scale + np.select([lab == 6, lab == 7], [zoom, -zoom], 0)

    # Static scene, rendered with a margin: smooth shading plus 3..7 distractor shapes.
    hb, wb = h + 2 * _MARGIN, w + 2 * _MARGIN
    yy, xx = np.meshgrid(np.arange(hb, dtype=f32), np.arange(wb, dtype=f32), indexing="ij")
    freq = _u(rng, 0.05, 0.25, 2 * n).reshape(n, 2, 1, 1)
    ang = _u(rng, 0, np.pi, 2 * n).reshape(n, 2, 1, 1)
    shading = np.sin(freq * (xx * np.cos(ang) + yy * np.sin(ang)) + _u(rng, 0, 6.3, 2 * n).reshape(n, 2, 1, 1))
    scene = _u(rng, 0.3, 0.7, n)[:, None, None] + (_u(rng, 0.05, 0.2, 2 * n).reshape(n, 2, 1, 1) * shading).sum(1)
    k = 7
    d = _random_shapes(rng, n * k, 3.0, 7.5)
    present = (np.arange(k)[None] < rng.integers(3, k + 1, n)[:, None]).reshape(n, k, 1, 1)
    dx = xx.reshape(1, 1, -1) - _u(rng, 0, wb, n * k)[:, None, None]
    dy = yy.reshape(1, 1, -1) - _u(rng, 0, hb, n * k)[:, None, None]
    u, v = _rotate(dx, dy, _u(rng, 0, 2 * np.pi, n * k)[:, None, None])
    cover, tex = _shape_pixels(u, v, 1.0, d)
    cover = cover.reshape(n, k, hb, wb) * present
    value = (d["mean"][:, None, None] + d["amp"][:, None, None] * tex).reshape(n, k, hb, wb)
    for j in range(k):  # later shapes occlude earlier ones
        scene = scene * (1 - cover[:, j]) + value[:, j] * cover[:, j]

    # Each frame views the scene shifted by the pan (bilinear, for sub-pixel motion).
    ox, oy = _MARGIN - pan_x, _MARGIN - pan_y  # (n, T)
    ix, iy = np.floor(ox).astype(np.intp), np.floor(oy).astype(np.intp)
    fx, fy = (ox - ix)[..., None, None], (oy - iy)[..., None, None]
    rows = iy[..., None] + np.arange(h)  # (n, T, H)
    cols = ix[..., None] + np.arange(w)  # (n, T, W)
    nidx = np.arange(n)[:, None, None, None]

    def at(dr: int, dc: int) -> np.ndarray:
        return scene[nidx, rows[..., :, None] + dr, cols[..., None, :] + dc]

    frames = (1 - fy) * ((1 - fx) * at(0, 0) + fx * at(0, 1)) + fy * ((1 - fx) * at(1, 0) + fx * at(1, 1))

    # The actor, rendered at its pose in every frame, drawn over the scene.
    o = _random_shapes(rng, n, 4.5, 7.5)
    py, px = np.meshgrid(np.arange(h, dtype=f32), np.arange(w, dtype=f32), indexing="ij")
    scale = np.exp(log_scale)[..., None]  # (n, T, 1)
    u, v = _rotate(px.reshape(1, 1, -1) - cx[..., None], py.reshape(1, 1, -1) - cy[..., None], theta[..., None])
    cover, tex = _shape_pixels(u / scale, v / scale, scale, o)
    value = o["mean"][:, None, None] + o["amp"][:, None, None] * tex
    frames = frames * (1 - cover.reshape(n, t, h, w)) + (value * cover).reshape(n, t, h, w)

    # Camera: random contrast and brightness, per-frame flicker, per-pixel noise.
    gain = _u(rng, 0.6, 1.2, n)[:, None, None, None]
    bias = _u(rng, -0.1, 0.1, n)[:, None, None, None] + rng.normal(0, 0.02, (n, t, 1, 1)).astype(f32)
    noise = _u(rng, 0.02, 0.1, n)[:, None, None, None] * rng.standard_normal((n, t, h, w), dtype=f32)
    frames = (frames - 0.5) * gain + 0.5 + bias + noise
    return np.clip(np.rint(frames * 255), 0, 255).astype(np.uint8)
