"""Response tables: contents, file format, cache and CLI, on a tiny model and tiny IDX data."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import tnn
from tnn.cli import main as cli_main
from tnn.table import (
    TABLE_VERSION,
    ResponseTable,
    TableError,
    build_table,
    cached_table,
    preview,
    table_path,
)

FMNIST = Path("/usr/share/datasets/fashion-mnist")
SHIPPED = Path(__file__).resolve().parents[1] / "results/models/fashion_mnist-vgg11-tnn/model.pt"


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def make_tiny_data(root: Path, n_train: int = 120, n_test: int = 40, seed: int = 0) -> Path:
    """Fashion-MNIST-shaped IDX files whose classes differ in brightness, so a model can tell them apart."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28)) + labels[:, None, None] * 19
        _write_idx(root / f"{part}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(root / f"{part}-labels-idx1-ubyte.gz", labels, 2049)
    return root


def make_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = tnn.create_model("vgg11", in_channels=1, input_size=28, width_mult=0.05)
    return tnn.save_checkpoint(model.eval(), path, dataset="fashion_mnist", variant="tnn")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    data = make_tiny_data(root / "data")
    ckpt = make_tiny_checkpoint(root / "tiny.pt")
    model, _ = tnn.load_checkpoint(ckpt)
    images, labels = tnn.data.load("fashion_mnist", "test", root=data)
    return {"root": root, "data": data, "ckpt": ckpt, "model": model, "images": images, "labels": labels}


def test_build_table_contents(tiny):
    model, images, labels = tiny["model"], tiny["images"], tiny["labels"]
    table = build_table(model, images, labels, batch_size=16)
    n, lv = len(labels), len(model.levels)
    assert table.preds.shape == table.confidence.shape == table.correct.shape == (n, lv)
    assert table.levels.tolist() == list(model.levels)
    assert np.array_equal(table.correct, table.preds == labels[:, None])
    assert ((table.confidence > 0) & (table.confidence <= 1)).all()
    # batch size does not change the answers (each level checked against a direct call)
    x = torch.from_numpy(images).float() / 255
    with torch.no_grad():
        for j, u in enumerate(model.levels):
            prob = torch.softmax(model(x, u), 1)
            assert np.array_equal(table.preds[:, j], prob.argmax(1).numpy())
            np.testing.assert_allclose(table.confidence[:, j], prob.max(1).values.numpy(), rtol=1e-5)
    # preview of every level = fc2's input there (captured by the hook) + confidence, margin, entropy
    widths = model.fc1.out_counts
    assert table.preview_levels == lv and table.features.dtype == np.float32
    assert table.feature_offsets.tolist() == np.cumsum([0] + [w + 3 for w in widths]).tolist()
    for j, u in enumerate(model.levels):
        feats = table.preview_features(j)
        assert feats.shape == (n, widths[j] + 3)
        captured: list[torch.Tensor] = []
        with torch.no_grad():
            h = model.fc2.register_forward_pre_hook(lambda _m, a, out=captured: out.append(a[0]))
            model(x, u)
            h.remove()
        np.testing.assert_allclose(feats[:, : widths[j]], captured[-1].numpy(), rtol=1e-5, atol=1e-6)
        conf, margin, entropy = feats[:, -3], feats[:, -2], feats[:, -1]
        np.testing.assert_allclose(conf, table.confidence[:, j], rtol=1e-6)
        assert (margin >= 0).all() and (margin <= conf + 1e-6).all()
        assert (entropy >= -1e-6).all() and (entropy <= math.log(10) + 1e-5).all()
        np.testing.assert_allclose(preview(model, images, level=j), feats, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="level must be"):
        table.preview_features(lv)
    assert table.pixels.shape == (n, 64) and table.pixels.min() >= 0 and table.pixels.max() <= 1
    pooled = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1).numpy()
    np.testing.assert_allclose(table.pixels, pooled, rtol=1e-6)
    accuracy = table.accuracy()
    assert list(accuracy) == list(model.levels)
    for j, u in enumerate(model.levels):
        assert accuracy[u] == pytest.approx(100.0 * table.correct[:, j].mean())


@pytest.mark.parametrize(("arch", "classifier"), [("resnet8", "fc"), ("c3d_small", "fc2")])
def test_preview_hook_works_for_other_families(arch, classifier):
    """The preview is the input of each family's last ThrottleLinear at the lowest level + its confidence."""
    torch.manual_seed(0)
    model = tnn.create_model(arch)
    model.eval()
    x = torch.rand(3, *model.input_shape)
    feats = preview(model, x)
    captured: list[torch.Tensor] = []
    with torch.no_grad():
        h = getattr(model, classifier).register_forward_pre_hook(lambda _m, a: captured.append(a[0]))
        logits = model(x, model.levels[0])
        h.remove()
    width = captured[-1].flatten(1).shape[1]
    assert feats.shape == (3, width + 3) and np.isfinite(feats).all()
    np.testing.assert_allclose(feats[:, :width], captured[-1].flatten(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[:, -3], torch.softmax(logits, 1).max(1).values.numpy(), rtol=1e-5)


def test_save_load_round_trip_is_atomic(tiny, tmp_path):
    table = build_table(tiny["model"], tiny["images"], tiny["labels"], meta={"split": "test"})
    path = table.save(tmp_path / "t.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # no temporary file left behind
    back = ResponseTable.load(path)
    for name in ("labels", "levels", "preds", "confidence", "correct", "features", "pixels", "feature_offsets"):
        assert np.array_equal(getattr(back, name), getattr(table, name)), name
        assert getattr(back, name).dtype == getattr(table, name).dtype
    assert back.meta["split"] == "test" and back.meta["version"] == TABLE_VERSION


def test_reader_refuses_newer_foreign_corrupt_and_missing(tiny, tmp_path):
    table = build_table(tiny["model"], tiny["images"][:8], tiny["labels"][:8])
    path = table.save(tmp_path / "t.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    newer = tmp_path / "newer.npz"
    np.savez(newer, **{**arrays, "version": np.array(TABLE_VERSION + 1)})
    with pytest.raises(TableError, match="newer than this tnn reads"):
        ResponseTable.load(newer)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, labels=np.zeros(3))
    with pytest.raises(TableError, match="not a TNN response table"):
        ResponseTable.load(foreign)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(TableError, match="corrupt"):
        ResponseTable.load(corrupt)
    with pytest.raises(FileNotFoundError, match="tnn cache"):
        ResponseTable.load(tmp_path / "absent.npz")
    no_offsets = tmp_path / "no_offsets.npz"
    np.savez(no_offsets, **{k: v for k, v in arrays.items() if k != "feature_offsets"})
    with pytest.raises(TableError, match="lacks feature_offsets"):
        ResponseTable.load(no_offsets)
    assert issubclass(TableError, ValueError)


def test_version_1_table_reads_with_the_lowest_preview_only(tiny, tmp_path):
    """A v1 file (the lowest level's preview alone, no offsets) loads; another level's preview says to rebuild."""
    table = build_table(tiny["model"], tiny["images"][:8], tiny["labels"][:8])
    with np.load(table.save(tmp_path / "t.npz")) as z:
        arrays = {k: z[k] for k in z.files if k != "feature_offsets"}
    arrays["features"] = table.preview_features(0)
    meta = {**json.loads(str(arrays["meta"])), "version": 1}
    v1 = tmp_path / "v1.npz"
    np.savez(v1, **{**arrays, "version": np.array(1), "meta": np.array(json.dumps(meta))})
    back = ResponseTable.load(v1)
    assert back.preview_levels == 1
    np.testing.assert_array_equal(back.preview_features(0), table.preview_features(0))
    with pytest.raises(TableError, match=r"levels 0\.\.0 only, not of level 1; rebuild it"):
        back.preview_features(1)


def test_table_refuses_offsets_that_do_not_split_the_features(tiny):
    table = build_table(tiny["model"], tiny["images"][:8], tiny["labels"][:8])
    names = ("labels", "levels", "preds", "confidence", "correct", "features", "pixels")
    fields = {k: getattr(table, k) for k in names}
    bad = table.feature_offsets.copy()
    bad[-1] += 1
    with pytest.raises(TableError, match="feature_offsets"):
        ResponseTable(**fields, feature_offsets=bad)


def test_cached_table_builds_once_and_is_keyed_by_checkpoint_and_split(tiny, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    t1 = cached_table(tiny["ckpt"], "val", data_root=tiny["data"], cache_dir=cache)
    assert t1.num_samples == 12  # val = a tenth of the 120 training images
    assert t1.meta["checkpoint_sha256"] and t1.meta["split"] == "val" and t1.meta["dataset"] == "fashion_mnist"
    path = table_path(tiny["ckpt"], "val", cache)
    assert path.is_file()

    def no_rebuild(*a, **k):
        raise AssertionError("rebuilt a cached table")

    monkeypatch.setattr("tnn.table.build_table", no_rebuild)
    t2 = cached_table(tiny["ckpt"], "val", data_root=tiny["data"], cache_dir=cache)
    assert np.array_equal(t1.preds, t2.preds)
    monkeypatch.undo()
    t3 = cached_table(tiny["ckpt"], "test", data_root=tiny["data"], cache_dir=cache)
    assert t3.num_samples == 40 and table_path(tiny["ckpt"], "test", cache) != path
    other = make_tiny_checkpoint(tmp_path / "other.pt", seed=1)
    assert table_path(other, "val", cache) != path
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        cached_table(tiny["ckpt"], "dev", cache_dir=cache)
    monkeypatch.setenv("TNN_CACHE", str(tmp_path / "env-cache"))
    assert table_path(tiny["ckpt"], "val").parent == tmp_path / "env-cache"
    # a file holding only the lowest level's preview (as format v1 did) is rebuilt, not returned
    partial = ResponseTable(
        **{k: getattr(t1, k) for k in ("labels", "levels", "preds", "confidence", "correct", "pixels")},
        features=t1.preview_features(0),
        meta=t1.meta,
    )
    partial.save(tmp_path / "partial.npz")
    again = cached_table(tiny["ckpt"], "val", data_root=tiny["data"], out=tmp_path / "partial.npz")
    levels = len(tiny["model"].levels)
    assert again.preview_levels == again.num_levels == levels
    assert ResponseTable.load(tmp_path / "partial.npz").preview_levels == levels


def test_cli_cache(tiny, tmp_path, capsys):
    out = tmp_path / "val.npz"
    code = cli_main(["cache", str(tiny["ckpt"]), "--split", "val", "--data-root", str(tiny["data"]), "--out", str(out)])
    assert code == 0 and out.is_file()
    assert f"12 samples × {len(tiny['model'].levels)} levels" in capsys.readouterr().out
    code = cli_main(["cache", str(tmp_path / "missing.pt"), "--split", "val"])
    assert code == 2 and "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["cache", str(tiny["ckpt"]), "--split", "dev"])


@pytest.mark.slow
@pytest.mark.skipif(not (FMNIST.is_dir() and SHIPPED.is_file()), reason="needs Fashion-MNIST and the shipped model")
def test_shipped_model_val_table_matches_training_metrics(tmp_path):
    # its build time (goal: ≤ 1 min on CPU) is printed by bench/bench_env.py, not asserted here
    table = cached_table(SHIPPED, "val", cache_dir=tmp_path)
    metrics = json.loads((SHIPPED.parent / "metrics.json").read_text())["val_accuracy_after_bn_recalibration"]
    for u, acc in table.accuracy().items():
        assert acc == pytest.approx(metrics[f"{u:g}"], abs=0.1)  # the trainer's own evaluation, 6 images of slack


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": np.array("two")}, r"invalid response-table version \(<U3 array"),
        ({"version": np.array([2, 2])}, r"invalid response-table version \(int64 array of shape \(2,\)"),
        ({"version": np.array(2.0)}, "expected an integer"),
        ({"meta": np.array("[1, 2]")}, "metadata is a JSON list, not an object"),
        ({"levels": np.array([1.0, 0.5] + [0.25] * 6)}, "strictly ascending"),
        ({"labels": np.zeros((8, 1), np.int64)}, r"labels has shape \(8, 1\)"),
        ({"feature_offsets": "float"}, "feature_offsets must be integers"),
    ],
)
def test_damaged_table_files_raise_table_error_and_the_cache_rebuilds_them(tiny, tmp_path, change, message):
    table = build_table(tiny["model"], tiny["images"][:8], tiny["labels"][:8])
    with np.load(table.save(tmp_path / "t.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    if change.get("feature_offsets") == "float":
        change = {"feature_offsets": arrays["feature_offsets"].astype(np.float64) + 0.5}
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{**arrays, **change})
    with pytest.raises(TableError, match=message):
        ResponseTable.load(bad)
    # a cache entry damaged this way is rebuilt, as `tnn cache` promises, not a crash
    cached = tmp_path / "cached.npz"
    cached.write_bytes(bad.read_bytes())
    rebuilt = cached_table(tiny["ckpt"], "val", data_root=tiny["data"], out=cached)
    assert rebuilt.num_samples == 12 and ResponseTable.load(cached).meta["split"] == "val"
