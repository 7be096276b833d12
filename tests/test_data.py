"""tnn.data: loaders on small files written in the canonical formats, the real Fashion-MNIST when
installed, and the synthetic gesture generator."""

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

from tnn import data

ROOT = Path(__file__).resolve().parents[1]

FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------------ fixtures


def write_cifar(d: Path, per_batch: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A fake cifar-10-batches-py with distinct random images; returns train/test in NCHW."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        raw = pickle.dumps({b"batch_label": name.encode(), b"labels": y, b"data": x}, protocol=2)
        # The official release was pickled by an old numpy, whose arrays name numpy.core.
        (d / name).write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
        xs.append(x)
        ys.append(y)
    with open(d / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in data.CIFAR10_CLASSES]}, fh)
    x_all = np.concatenate(xs).reshape(-1, 3, 32, 32)
    y_all = np.concatenate(ys).astype(np.int64)
    n = 5 * per_batch
    return x_all[:n], y_all[:n], x_all[n:], y_all[n:]


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    magic = magic if magic is not None else 0x0800 + array.ndim
    raw = magic.to_bytes(4, "big") + b"".join(s.to_bytes(4, "big") for s in array.shape) + array.tobytes()
    if path.suffix == ".gz":
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def write_fmnist(d: Path, n_train: int = 30, n_test: int = 12, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, a in arrays.items():
        write_idx(d / (name + (".gz" if gz else "")), a)
    return arrays


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TNN_DATA", raising=False)


# ----------------------------------------------------------------------------------- metadata


def test_metadata() -> None:
    assert data.DATASETS == ("cifar10", "fashion_mnist", "gestures")
    assert data.SPLITS == ("train", "val", "test")
    assert data.input_shape("cifar10") == (3, 32, 32)
    assert data.input_shape("fashion_mnist") == (1, 28, 28)
    assert data.input_shape("gestures") == (1, 16, 32, 32)
    for name in data.DATASETS:
        assert len(data.class_names(name)) == data.num_classes(name)
    assert data.num_classes("gestures") >= 8
    assert data.class_names("cifar10")[0] == "airplane"
    assert data.class_names("fashion_mnist")[9] == "Ankle boot"


def test_unknown_name_and_split() -> None:
    with pytest.raises(ValueError, match="cifar10, fashion_mnist, gestures"):
        data.load("mnist", "train")
    with pytest.raises(ValueError, match="train, val, test"):
        data.load("cifar10", "validation")
    with pytest.raises(ValueError, match="gestures"):
        data.num_classes("imagenet")
    with pytest.raises(TypeError):
        data.load("gestures", "test", n_tset=10)


def test_val_indices_rule() -> None:
    assert len(data.val_indices(50000)) == 5000
    assert len(data.val_indices(60000)) == 6000
    assert len(data.val_indices(6000)) == 600
    np.testing.assert_array_equal(data.val_indices(100), data.val_indices(100))
    assert len(data.val_indices(5)) == 0


# ------------------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("nested", [True, False])
def test_cifar10_round_trip(tmp_path: Path, no_env: None, nested: bool) -> None:
    x_tr, y_tr, x_te, y_te = write_cifar(tmp_path / "cifar-10-batches-py")
    root = tmp_path if nested else tmp_path / "cifar-10-batches-py"
    x, y = data.load("cifar10", "test", root=root)
    assert x.dtype == np.uint8 and y.dtype == np.int64 and x.shape == (20, 3, 32, 32)
    np.testing.assert_array_equal(x, x_te)
    np.testing.assert_array_equal(y, y_te)
    # CHW order: the first 1024 bytes of a row are the red plane, row-major.
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    assert x[3, 0, 1, 2] == raw[b"data"][3, 32 + 2] and x[3, 2, 31, 31] == raw[b"data"][3, 3071]

    xt, yt = data.load("cifar10", "train", root=root)
    xv, yv = data.load("cifar10", "val", root=root)
    assert len(xt) == 90 and len(xv) == 10
    val = data.val_indices(100)
    np.testing.assert_array_equal(xv, x_tr[val])
    np.testing.assert_array_equal(yv, y_tr[val])
    np.testing.assert_array_equal(xt, np.delete(x_tr, val, axis=0))
    np.testing.assert_array_equal(yt, np.delete(y_tr, val))


def test_cifar10_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, x_te, _ = write_cifar(tmp_path / "cifar-10-batches-py")
    monkeypatch.setenv("TNN_DATA", str(tmp_path))
    np.testing.assert_array_equal(data.load("cifar10", "test")[0], x_te)


def test_cifar10_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env: None) -> None:
    with pytest.raises(data.DataNotFoundError, match="TNN_DATA") as e:
        data.load("cifar10", "train")
    assert "cs.toronto.edu" in str(e.value) and "prepare_cifar10.py" in str(e.value)
    with pytest.raises(data.DataNotFoundError) as e:
        data.load("cifar10", "test", root=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in str(e.value)
    monkeypatch.setenv("TNN_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        data.load("cifar10", "val")


def test_cifar10_corrupt(tmp_path: Path, no_env: None) -> None:
    d = tmp_path / "cifar-10-batches-py"
    write_cifar(d)
    with open(d / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((4, 784), np.uint8), b"labels": [0] * 4}, fh)
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        data.load("cifar10", "test", root=tmp_path)
    (d / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a CIFAR-10"):
        data.load("cifar10", "test", root=tmp_path)
    with open(d / "test_batch", "wb") as fh:  # a pickle that would run code must be refused
        pickle.dump({b"data": Path("x")}, fh)
    with pytest.raises(ValueError, match="refusing"):
        data.load("cifar10", "test", root=tmp_path)


# -------------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_round_trip(tmp_path: Path, no_env: None, gz: bool) -> None:
    arrays = write_fmnist(tmp_path, gz=gz)
    x, y = data.load("fashion_mnist", "test", root=tmp_path)
    assert x.shape == (12, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y, arrays["t10k-labels-idx1-ubyte"])
    xt, yt = data.load("fashion_mnist", "train", root=tmp_path)
    xv, _ = data.load("fashion_mnist", "val", root=tmp_path)
    assert (len(xt), len(xv)) == (27, 3)
    val = data.val_indices(30)
    np.testing.assert_array_equal(xv[:, 0], arrays["train-images-idx3-ubyte"][val])
    np.testing.assert_array_equal(yt, np.delete(arrays["train-labels-idx1-ubyte"], val))


def test_fashion_mnist_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_fmnist(tmp_path / "fashion-mnist", gz=False)
    monkeypatch.setenv("TNN_DATA", str(tmp_path))
    np.testing.assert_array_equal(data.load("fashion_mnist", "test")[1], arrays["t10k-labels-idx1-ubyte"])


def test_fashion_mnist_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env: None) -> None:
    with pytest.raises(data.DataNotFoundError, match="dataset-fashion-mnist") as e:
        data.load("fashion_mnist", "train", root=tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte") in str(e.value)
    monkeypatch.setenv("TNN_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(data.DataNotFoundError) as e:
        data.load("fashion_mnist", "test")
    assert str(tmp_path / "env" / "fashion-mnist") in str(e.value) and str(tmp_path / "system") in str(e.value)


def test_fashion_mnist_bad_magic(tmp_path: Path, no_env: None) -> None:
    arrays = write_fmnist(tmp_path, gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", arrays["t10k-labels-idx1-ubyte"], magic=2051)
    with pytest.raises(ValueError, match=r"bad IDX magic number 2051.*expected 2049"):
        data.load("fashion_mnist", "test", root=tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="cannot read"):  # not gzip at all
        data.load("fashion_mnist", "test", root=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", arrays["t10k-labels-idx1-ubyte"][:5])
    with pytest.raises(ValueError, match="N labels"):  # counts disagree
        data.load("fashion_mnist", "test", root=tmp_path)


@pytest.mark.skipif(not (FMNIST_SYSTEM / "t10k-labels-idx1-ubyte.gz").exists(), reason="dataset-fashion-mnist absent")
def test_fashion_mnist_real(no_env: None) -> None:
    x, y = data.load("fashion_mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [1000] * 10)
    xt, yt = data.load("fashion_mnist", "train")
    xv, yv = data.load("fashion_mnist", "val")
    assert (len(xt), len(xv)) == (54000, 6000)
    assert set(np.unique(yt)) == set(range(10)) == set(np.unique(yv))
    assert x.max() == 255 and x.min() == 0


# ------------------------------------------------------------------------------------- gestures

GESTURES_SMALL = {"n_train": 120, "n_test": 60}


def test_gestures_shapes_and_balance(no_env: None) -> None:
    x, y = data.load("gestures", "test", **GESTURES_SMALL)
    assert x.shape == (60, 1, 16, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    k = data.num_classes("gestures")
    np.testing.assert_array_equal(np.bincount(y, minlength=k), [60 // k] * k)
    assert 20 < x.mean() < 235 and x.std() > 20
    xt, _ = data.load("gestures", "train", **GESTURES_SMALL)
    xv, _ = data.load("gestures", "val", **GESTURES_SMALL)
    assert (len(xt), len(xv)) == (108, 12)
    full, _ = data.generate_gestures(120, seed=0, part="train")
    val = data.val_indices(120)
    np.testing.assert_array_equal(xv, full[val])
    np.testing.assert_array_equal(xt, np.delete(full, val, axis=0))


def test_gestures_deterministic(no_env: None) -> None:
    a, ya = data.load("gestures", "test", n_test=30, seed=3)
    b, yb = data.load("gestures", "test", n_test=30, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    c, _ = data.load("gestures", "test", n_test=30, seed=4)
    assert not np.array_equal(a, c)
    tr, _ = data.generate_gestures(30, seed=3, part="train")
    assert not np.array_equal(a, tr)  # train and test come from different streams


def test_gestures_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TNN_DATA", str(tmp_path))
    a, ya = data.load("gestures", "test", n_test=20, seed=1)
    files = list((tmp_path / "gestures").iterdir())
    assert [f.suffix for f in files] == [".npz"] and "seed1" in files[0].name
    b, yb = data.load("gestures", "test", n_test=20, seed=1)  # from the cache
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    files[0].write_bytes(b"garbage")  # a broken cache is regenerated, not trusted
    c, _ = data.load("gestures", "test", n_test=20, seed=1)
    np.testing.assert_array_equal(a, c)
    d, _ = data.load("gestures", "test", n_test=20, seed=1, root=tmp_path / "explicit")
    np.testing.assert_array_equal(a, d)
    assert len(list((tmp_path / "explicit").glob("*.npz"))) == 1


def _nearest_mean_accuracy(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray) -> float:
    mu, sd = f_train.mean(0), f_train.std(0) + 1e-6
    f_train, f_test = (f_train - mu) / sd, (f_test - mu) / sd
    means = np.stack([f_train[y_train == c].mean(0) for c in range(int(y_train.max()) + 1)])
    pred = ((f_test[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    return float((pred == y_test).mean())


def _affine_flow(x: np.ndarray) -> np.ndarray:
    """Least-squares affine optical flow over the whole clip: translation, divergence, curl."""
    x = x[:, 0].astype(np.float32) / 255
    n, _, h, w = x.shape
    it = x[:, 1:] - x[:, :-1]
    mid = (x[:, 1:] + x[:, :-1]) / 2
    ix, iy = np.gradient(mid, axis=3), np.gradient(mid, axis=2)
    yy, xx = np.meshgrid(
        np.arange(h, dtype=np.float32) - (h - 1) / 2,
        np.arange(w, dtype=np.float32) - (w - 1) / 2,
        indexing="ij",
    )
    a = np.stack([ix, ix * xx, ix * yy, iy, iy * xx, iy * yy], 1).reshape(n, 6, -1)
    m = a @ a.transpose(0, 2, 1) + 1e-3 * np.eye(6, dtype=np.float32)
    p = np.linalg.solve(m, a @ -it.reshape(n, -1, 1))[..., 0]
    return np.stack([p[:, 0], p[:, 3], p[:, 1] + p[:, 5], p[:, 4] - p[:, 2], np.abs(it).mean((1, 2, 3))], 1)


def test_gestures_need_motion(no_env: None) -> None:
    """The time-averaged frame says nothing about the class; even crude motion features do."""
    x, y = data.generate_gestures(300, seed=0, part="train")
    xt, yt = data.generate_gestures(200, seed=0, part="test")

    def mean_frame(a: np.ndarray) -> np.ndarray:
        return a[:, 0].mean(1).reshape(len(a), -1)

    static = _nearest_mean_accuracy(mean_frame(x), y, mean_frame(xt), yt)
    motion = _nearest_mean_accuracy(_affine_flow(x), y, _affine_flow(xt), yt)
    chance = 1 / data.num_classes("gestures")
    assert static < 2 * chance, static
    assert motion > 2.5 * chance, motion


def test_cifar_jpeg_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/cifar_jpeg_info.py recovers the quality and subsampling Pillow encoded with."""
    import importlib.util
    import io
    import tarfile

    image_mod = pytest.importorskip("PIL.Image")
    spec = importlib.util.spec_from_file_location("cifar_jpeg_info", ROOT / "scripts" / "cifar_jpeg_info.py")
    info = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(info)
    rng = np.random.default_rng(0)
    archive = tmp_path / "jpegs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for k, (quality, subsampling) in enumerate([(75, 2), (75, 2), (90, 0)]):
            buf = io.BytesIO()
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            image_mod.fromarray(pixels).save(buf, "JPEG", quality=quality, subsampling=subsampling)
            member = tarfile.TarInfo(f"train/cat/{k}.jpg")
            member.size = len(buf.getvalue())
            tar.addfile(member, io.BytesIO(buf.getvalue()))
    assert info.main([str(archive)]) == 0
    out = capsys.readouterr().out
    assert "images: 3" in out
    assert "IJG quality: 75 (2), 90 (1)" in out
    assert "chroma subsampling: 4:2:0 (2), 4:4:4 (1)" in out
    assert info.main([str(tmp_path / "missing.tar.gz")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_gestures_cache_is_written_like_any_file_and_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import stat

    import tnn.checkpoint

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    data.load("gestures", "test", n_test=10, seed=2, root=tmp_path)
    (cache,) = tmp_path.glob("*.npz")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o666 & ~tnn.checkpoint._UMASK  # not mkstemp's 0600
    assert synced  # flushed to disk before the rename
    assert [p.name for p in tmp_path.iterdir()] == [cache.name]  # no temporary file left behind
    blocked = tmp_path / "file"
    blocked.write_text("")
    x, _ = data.load("gestures", "test", n_test=10, seed=2, root=blocked / "sub")  # unwritable: no cache, no error
    assert len(x) == 10
