"""Pretraining: the recipe's pieces, learning, resumption, determinism, torchrun/DDP, evaluate."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_data import write_idx

import tnn
from tnn.train import PretrainConfig, augment_batch, evaluate_checkpoint, pretrain, sandwich_loss


def write_learnable_fmnist(d: Path, n_train: int = 400, n_test: int = 100) -> Path:
    """Fashion-MNIST-format files whose class is a stripe texture: orientation and period (noisy)."""
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    grid = np.arange(28)
    for part, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        period = 2 + labels % 5
        phase = rng.integers(0, 6, n)
        coord = np.where((labels < 5)[:, None, None], grid[None, :, None], grid[None, None, :])
        stripes = ((coord + phase[:, None, None]) // np.maximum(1, period[:, None, None] // 2 + 1)) % 2
        images = np.clip(60 + 140 * stripes + rng.normal(0, 25, (n, 28, 28)), 0, 255).astype(np.uint8)
        write_idx(d / f"{part}-images-idx3-ubyte.gz", images)
        write_idx(d / f"{part}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return d


def small_config(root: Path, **kw) -> PretrainConfig:
    base = dict(
        arch="resnet8", dataset="fashion_mnist", epochs=3, batch_size=32, lr=0.1, warmup_epochs=0.5,
        augment="none", data_root=str(root), eval_batch_size=256, half=True,
    )  # fmt: skip
    return PretrainConfig(**{**base, **kw})


def quiet(*args, **kwargs):
    pass


def test_augment_crops_are_shifts_and_flips_of_the_input():
    x = torch.rand(16, 3, 32, 32)
    n = len(x)

    def windows(i):  # (offset, window) of the 4-pixel-padded image at every offset in [0, 8]²
        padded = F.pad(x[i], (4, 4, 4, 4))
        return [((a, b), padded[:, a : a + 32, b : b + 32]) for a in range(9) for b in range(9)]

    gen = torch.Generator().manual_seed(0)
    y = augment_batch(x, "crop", gen)
    assert y.shape == x.shape
    offsets = set()
    for i in range(n):  # each crop equals the padded image at some offset, unflipped
        match = [off for off, win in windows(i) if torch.equal(y[i], win)]
        assert match, "crop is not a shifted window of the padded image"
        offsets.add(match[0])
    assert len(offsets) > 1, f"every crop took the same offset {offsets}"
    z = augment_batch(x, "crop+flip", torch.Generator().manual_seed(1))
    assert z.shape == x.shape
    flipped, offsets = 0, set()
    for i in range(n):  # each image is a window of the padded input or its horizontal flip
        plain = [off for off, win in windows(i) if torch.equal(z[i], win)]
        mirrored = [off for off, win in windows(i) if torch.equal(z[i], win.flip(2))]
        assert plain or mirrored, "crop+flip is neither a window of the padded image nor its mirror"
        flipped += bool(mirrored)
        offsets.add((plain or mirrored)[0])
    assert 0 < flipped < n, f"{flipped} of {n} images flipped"
    assert len(offsets) > 1, f"every crop took the same offset {offsets}"
    torch.testing.assert_close(augment_batch(x, "crop+flip", torch.Generator().manual_seed(1)), z)
    assert augment_batch(x, "none", gen) is x


def test_sandwich_loss_full_level_on_labels_others_on_its_soft_predictions():
    torch.manual_seed(0)
    full, low = torch.randn(8, 10, requires_grad=True), torch.randn(8, 10, requires_grad=True)
    y = torch.randint(0, 10, (8,))
    loss = sandwich_loss([full, low], y, distill=True, label_smoothing=0.0)
    teacher = full.detach().softmax(1)
    expected = F.cross_entropy(full, y) + (-(teacher * low.log_softmax(1)).sum(1)).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()  # the teacher is detached: the full level's gradient is the label loss alone
    ref = full.detach().clone().requires_grad_(True)
    F.cross_entropy(ref, y).backward()
    torch.testing.assert_close(full.grad, ref.grad)
    plain = sandwich_loss([full, low], y, distill=False, label_smoothing=0.0)
    torch.testing.assert_close(plain, F.cross_entropy(full, y) + F.cross_entropy(low, y))


def test_sandwich_loss_full_weight_shifts_the_share_but_keeps_the_total_weight():
    torch.manual_seed(1)
    full, a, b = (torch.randn(8, 10) for _ in range(3))
    y = torch.randint(0, 10, (8,))
    teacher = full.softmax(1)
    ce = F.cross_entropy(full, y)
    kd = [(-(teacher * s.log_softmax(1)).sum(1)).mean() for s in (a, b)]
    weighted = sandwich_loss([full, a, b], y, distill=True, label_smoothing=0.0, full_weight=2.0)
    torch.testing.assert_close(weighted, 1.5 * ce + 0.75 * (kd[0] + kd[1]))  # 2:1:1 scaled to sum to 3
    torch.testing.assert_close(
        sandwich_loss([full, a, b], y, distill=True, label_smoothing=0.0, full_weight=1.0), ce + kd[0] + kd[1]
    )
    alone = sandwich_loss([full], y, distill=True, label_smoothing=0.0, full_weight=3.0)
    torch.testing.assert_close(alone, ce)  # one level (vanilla): the weight changes nothing


def test_pretrain_passes_full_weight_to_the_sandwich_loss(tmp_path, monkeypatch):
    import tnn.train as train

    seen = []

    def spy(logits, labels, **kw):
        seen.append((len(logits), kw["full_weight"]))
        return sandwich_loss(logits, labels, **kw)

    monkeypatch.setattr(train, "sandwich_loss", spy)
    root = write_learnable_fmnist(tmp_path / "fm")
    pretrain(small_config(root, epochs=1, limit=64, full_weight=2.5), tmp_path / "run", log=quiet)
    assert seen and all(weight == 2.5 and n > 1 for n, weight in seen)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["full_weight"] == 2.5


def test_pretrain_learns_writes_run_files_and_an_honest_card(tmp_path):
    root = write_learnable_fmnist(tmp_path / "fm")
    result = pretrain(small_config(root), tmp_path / "run", log=quiet)
    run = tmp_path / "run"
    for name in ("config.json", "command.txt", "metrics.json", "model.pt", "last.pt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["history"]) == 3
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    assert result.test_accuracy[1.0] >= 40.0, result.test_accuracy  # chance is 10 %; 36 steps only
    _model, card = tnn.load_checkpoint(result.checkpoint)
    assert card["dataset"] == "fashion_mnist" and card["variant"] == "tnn"
    assert card["made"]["epochs"] == 3 and card["made"]["device"] == "cpu"
    again = evaluate_checkpoint(result.checkpoint, data_root=str(root), write=False, log=quiet)
    assert card["accuracy"] == {f"{u:g}": round(a, 2) for u, a in again.items()}
    assert json.loads((run / "config.json").read_text())["arch"] == "resnet8"


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    root = write_learnable_fmnist(tmp_path / "fm", n_train=200, n_test=40)
    cfg = small_config(root, epochs=2)
    straight = pretrain(cfg, tmp_path / "a", log=quiet).model

    class Stop(Exception):
        pass

    def stop_after_first_epoch(msg, *a, **k):
        if msg.startswith("epoch 1/"):
            raise Stop

    with pytest.raises(Stop):
        pretrain(cfg, tmp_path / "b", log=stop_after_first_epoch)
    assert not (tmp_path / "b" / "model.pt").exists() and (tmp_path / "b" / "last.pt").exists()
    # how fast it runs and where the data lies may change on resume (here: the evaluation batch)
    resumed = pretrain(dataclasses.replace(cfg, eval_batch_size=7), tmp_path / "b", resume=True, log=quiet).model
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    with pytest.raises(tnn.CheckpointError, match=r"different config \(epochs: 2 → 3\)"):
        pretrain(small_config(root, epochs=3), tmp_path / "b", resume=True, log=quiet)
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    torch.save({**state, "version": 999}, tmp_path / "b" / "last.pt")
    with pytest.raises(tnn.CheckpointError, match="run-state version 999"):
        pretrain(cfg, tmp_path / "b", resume=True, log=quiet)


def test_per_epoch_validation_recalibrates_batchnorm_without_changing_training(tmp_path):
    """Validation re-estimates each level's BatchNorm statistics first; the weights trained are the
    same as without it (training-mode BatchNorm uses batch statistics), only what validation shows
    differs."""
    root = write_learnable_fmnist(tmp_path / "fm", n_train=200, n_test=40)
    plain = pretrain(small_config(root, epochs=2, val_recalibration=0, bn_recalibration=0), tmp_path / "a", log=quiet)
    recal = pretrain(small_config(root, epochs=2, val_recalibration=2, bn_recalibration=0), tmp_path / "b", log=quiet)
    for (name, a), b in zip(plain.model.state_dict().items(), recal.model.state_dict().values(), strict=True):
        if "running_" not in name and "num_batches" not in name:
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    stats = [n for n in plain.model.state_dict() if n.endswith("running_mean")]
    assert any(not torch.equal(plain.model.state_dict()[n], recal.model.state_dict()[n]) for n in stats)
    assert [r["loss"] for r in plain.history] == [r["loss"] for r in recal.history]


def test_runs_saved_before_a_config_field_existed_still_resume(tmp_path):
    from tnn.train import _with_new_defaults

    current = dataclasses.asdict(PretrainConfig())
    older = {k: v for k, v in current.items() if k != "val_recalibration"}
    assert _with_new_defaults(older) == current
    assert _with_new_defaults({**older, "epochs": 7}) != current  # a real difference still refuses


def test_cpu_bf16_learns_and_is_deterministic(tmp_path, monkeypatch):
    import tnn.train

    root = write_learnable_fmnist(tmp_path / "fm")
    # two levels: bf16 runs on slow fallback kernels on AVX2-only hosts, so fewer shapes keep this short there
    cfg = small_config(root, cpu_bf16=True, bn_recalibration=2, model_kwargs={"levels": [0.5, 1.0]}, random_levels=0)
    autocasts = []  # (device type, dtype, enabled) of every autocast the training enters
    real = torch.autocast

    def recording(device_type, dtype=None, enabled=True, **kwargs):
        autocasts.append((device_type, dtype, enabled))
        return real(device_type, dtype=dtype, enabled=enabled, **kwargs)

    monkeypatch.setattr(tnn.train.torch, "autocast", recording)
    a = pretrain(cfg, tmp_path / "a", log=quiet)
    assert ("cpu", torch.bfloat16, True) in autocasts, set(autocasts)  # bf16 was on, on the CPU
    b = pretrain(cfg, tmp_path / "b", log=quiet)
    assert a.test_accuracy[1.0] >= 40.0, a.test_accuracy  # chance is 10 %
    assert a.test_accuracy == b.test_accuracy
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_cpu_bf16_warns_where_the_cpu_has_no_fast_bf16(tmp_path, monkeypatch):
    """On an AVX2-only CPU bf16 autocast runs on fallback kernels (0.11x float32 measured): say so."""
    import tnn.runtime

    assert isinstance(tnn.runtime.cpu_bf16_native(), bool)
    root = write_learnable_fmnist(tmp_path / "fm", n_train=64, n_test=20)
    for native, bf16, warned in ((False, True, True), (True, True, False), (False, False, False)):
        monkeypatch.setattr(tnn.runtime, "cpu_bf16_native", lambda native=native: native)
        messages: list[str] = []
        cfg = small_config(root, epochs=1, cpu_bf16=bf16, model_kwargs={"levels": [0.5, 1.0]}, random_levels=0)
        pretrain(cfg, tmp_path / f"run-{native}-{bf16}", log=messages.append)
        hits = [m for m in messages if "--cpu-bf16" in m]
        assert bool(hits) == warned, (native, bf16, messages)
        if warned:
            assert "no fast bfloat16 kernels" in hits[0] and "float32" in hits[0]


def test_vanilla_variant_trains_only_full_width(tmp_path):
    root = write_learnable_fmnist(tmp_path / "fm", n_train=200, n_test=40)
    result = pretrain(small_config(root, epochs=1, variant="vanilla"), tmp_path / "v", log=quiet)
    assert result.model.levels == (1.0,)
    assert list(result.test_accuracy) == [1.0]


def test_bad_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="variant"):
        pretrain(PretrainConfig(variant="slim"), tmp_path, log=quiet)
    with pytest.raises(ValueError, match="unknown dataset"):
        pretrain(PretrainConfig(dataset="mnist"), tmp_path, log=quiet)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_one_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no CUDA"):
        pretrain(PretrainConfig(device="cuda", dataset="fashion_mnist"), tmp_path, log=quiet)


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    root = write_learnable_fmnist(tmp_path / "fm", n_train=256, n_test=40)
    script = tmp_path / "ddp.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, torch
        from tnn.train import PretrainConfig, pretrain
        cfg = PretrainConfig(arch="resnet8", dataset="fashion_mnist", epochs=2, batch_size=32, lr=0.05,
                             augment="crop+flip", data_root={str(root)!r}, device="cpu")
        result = pretrain(cfg, {str(tmp_path / "run")!r}, log=lambda *a, **k: None)
        torch.save(result.model.state_dict(), {str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.pt")
        """)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    assert (tmp_path / "run" / "model.pt").is_file()
    card = tnn.load_checkpoint(tmp_path / "run" / "model.pt")[1]
    assert card["made"]["processes"] == 2


def test_batchnorm_recalibration_sets_each_levels_exact_statistics():
    from tnn.train import recalibrate_batchnorm

    torch.manual_seed(0)
    model = tnn.create_model("resnet8", in_channels=1, input_size=28)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(3)
    recalibrate_batchnorm(model, images, batches=2, batch_size=32, generator=gen)
    idx = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    assert model.training  # mode restored
    for level in range(len(model.levels)):
        means = []
        for i in (0, 32):
            x = images[idx[i : i + 32]].float() / 255
            x = (x - model.mean) / model.std
            stem = model.stem(x, tnn.layers.Setting(level))
            means.append(stem.mean(dim=(0, 2, 3)))
        norm = model.stem_bn.norms[level]
        torch.testing.assert_close(norm.running_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
        assert norm.momentum == 0.1 and int(norm.num_batches_tracked) == 2


def test_batchnorm_recalibration_draws_batches_as_training_did():
    """With augment=, each level's statistics are those of the augmented batches, the same for every level."""
    from tnn.train import recalibrate_batchnorm

    torch.manual_seed(0)
    model = tnn.create_model("resnet8")
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    recalibrate_batchnorm(
        model, images, batches=2, batch_size=32, generator=torch.Generator().manual_seed(3), augment="crop+flip"
    )
    gen = torch.Generator().manual_seed(3)
    idx = torch.randperm(64, generator=gen)
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    for level in range(len(model.levels)):
        aug = torch.Generator().manual_seed(seed)
        means, plain = [], []
        for i in (0, 32):
            x = images[idx[i : i + 32]].float() / 255
            for out, batch in ((means, augment_batch(x, "crop+flip", aug)), (plain, x)):
                out.append(model.stem((batch - model.mean) / model.std, tnn.layers.Setting(level)).mean(dim=(0, 2, 3)))
        norm = model.stem_bn.norms[level]
        torch.testing.assert_close(norm.running_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(norm.running_mean, torch.stack(plain).mean(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PK\x03\x04 truncated", "corrupt or not a tnn run state"),
        (b"hello", "corrupt or not a tnn run state"),
        ([1, 2, 3], r"not a tnn run state \(it holds a list\)"),
        ({"version": 1, "epoch": 1}, r"not a tnn run state \(missing \['config', 'model'"),
    ],
)
def test_unreadable_run_state_is_a_clear_error(tmp_path, content, message):
    root = write_learnable_fmnist(tmp_path / "fm", n_train=64, n_test=20)
    run = tmp_path / "run"
    run.mkdir()
    if isinstance(content, bytes):
        (run / "last.pt").write_bytes(content)
    else:
        torch.save(content, run / "last.pt")
    with pytest.raises(tnn.CheckpointError, match=f"last.pt (is|has) .*{message}.*delete .*last.pt") as info:
        pretrain(small_config(root, epochs=1), run, resume=True, log=quiet)
    assert "another --out" in str(info.value)


def test_resume_without_a_run_state_says_it_starts_from_scratch(tmp_path):
    root = write_learnable_fmnist(tmp_path / "fm", n_train=64, n_test=20)
    lines = []
    pretrain(small_config(root, epochs=1, bn_recalibration=0), tmp_path / "run", resume=True, log=lines.append)
    assert lines[0] == f"resume: no {tmp_path / 'run' / 'last.pt'} found, so the run starts from epoch 0"


@pytest.mark.slow
def test_compiled_levels_compute_what_the_eager_model_computes():
    """--compile: one compiled graph per level, same logits and gradients as the eager sandwich (up to
    float reassociation), and no recompilation when the levels come round again."""
    from tnn.train import Sandwich, compile_levels

    torch.manual_seed(0)
    model = tnn.create_model("resnet8", num_levels=3).train()
    x = torch.rand(8, *model.input_shape)
    y = torch.randint(0, 10, (8,))
    eager, compiled = Sandwich(model), Sandwich(model, compile_levels(model, torch.device("cpu")))
    assert [n for n, _ in compiled.named_parameters()] == [n for n, _ in eager.named_parameters()]
    from torch._dynamo.utils import counters

    grads, graphs = [], []
    for net in (eager, compiled, compiled):  # the second compiled pass reuses the graphs
        torch.manual_seed(1)
        model.zero_grad(set_to_none=True)
        logits = net(x, [1.0, *model.levels[:-1]])
        sandwich_loss(logits, y, distill=True, label_smoothing=0.0).backward()
        graphs.append(counters["stats"]["unique_graphs"])
        grads.append(([t.detach() for t in logits], [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert graphs[2] == graphs[1] > graphs[0]  # compiled once per level, then reused
    (ref_logits, ref_grads), *runs = grads
    for logits, g in runs:
        for a, b in zip(logits, ref_logits, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        assert len(g) == len(ref_grads)
        for a, b in zip(g, ref_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@pytest.fixture
def no_data(monkeypatch):
    """Loading any data fails the test: what is refused must be refused before any data is read."""
    import tnn.data

    def load(*args, **kwargs):
        raise AssertionError("data loaded before the bad input was refused")

    monkeypatch.setattr(tnn.data, "load", load)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"lr": float("nan")}, "--lr nan: lr must be a finite number > 0"),
        ({"lr": float("inf")}, "--lr inf: lr must be a finite number > 0"),
        ({"lr": -1.0}, "--lr -1.0: lr must be a finite number > 0"),
        ({"weight_decay": float("inf")}, "--weight-decay inf: weight_decay must be a finite number >= 0"),
        ({"warmup_epochs": float("nan")}, "--warmup-epochs nan: warmup_epochs must be a finite number >= 0"),
        ({"label_smoothing": float("nan")}, "--label-smoothing nan: label_smoothing must be in [0, 1)"),
        ({"epochs": 0}, "--epochs 0: epochs must be positive (>= 1)"),
        ({"batch_size": -2}, "--batch-size -2: batch_size must be positive (>= 1)"),
        ({"random_levels": -1}, "--random-levels -1: random_levels must be a finite number >= 0"),
        ({"full_weight": 0.0}, "--full-weight 0.0: full_weight must be a finite number > 0"),
    ],
)
def test_each_bad_number_is_named_by_its_flag_value_and_range(tmp_path, no_data, kw, message):
    with pytest.raises(ValueError) as info:
        pretrain(PretrainConfig(dataset="fashion_mnist", **kw), tmp_path / "run", log=quiet)
    assert message in str(info.value)
    assert not (tmp_path / "run").exists()


def test_several_bad_numbers_are_all_named(tmp_path, no_data):
    with pytest.raises(ValueError) as info:
        pretrain(PretrainConfig(epochs=0, lr=-1, random_levels=-1), tmp_path / "run", log=quiet)
    assert str(info.value) == (
        "--epochs 0: epochs must be positive (>= 1); --lr -1: lr must be a finite number > 0; "
        "--random-levels -1: random_levels must be a finite number >= 0"
    )


@pytest.mark.parametrize("existing", ["model.pt", "last.pt"])
def test_a_run_directory_that_holds_a_run_is_refused_without_resume(tmp_path, no_data, existing):
    run = tmp_path / "run"
    run.mkdir()
    (run / existing).write_bytes(b"the work of a previous run")
    with pytest.raises(ValueError, match=r"already holds an? (finished|unfinished) run") as info:
        pretrain(PretrainConfig(dataset="fashion_mnist"), run, log=quiet)
    assert "--resume" in str(info.value) and "another --out" in str(info.value)
    assert (run / existing).read_bytes() == b"the work of a previous run"
    assert sorted(p.name for p in run.iterdir()) == [existing]  # nothing written beside it


def test_resume_refuses_a_finished_model_without_its_run_state(tmp_path, no_data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"finished")
    with pytest.raises(ValueError, match=r"no run state .* --resume would retrain it from scratch"):
        pretrain(PretrainConfig(dataset="fashion_mnist"), run, resume=True, log=quiet)
    assert (run / "model.pt").read_bytes() == b"finished"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"arch": "resnet20", "dataset": "gestures"}, "holds 3-D clips .* pass --arch one of c3d, c3d_small "),
        (
            {"arch": "c3d_small", "dataset": "cifar10"},
            "--arch c3d_small is a clip model .* pass --arch one of .*resnet20",
        ),
        (
            {"arch": "resnet8", "dataset": "cifar10", "model_kwargs": {"in_channels": 1}},
            "--model-kwargs in_channels=1 conflicts with --dataset cifar10, which has 3 channels",
        ),
        (
            {"arch": "resnet8", "dataset": "fashion_mnist", "model_kwargs": {"num_classes": 5}},
            "--model-kwargs num_classes=5 conflicts with --dataset fashion_mnist, which has 10 classes",
        ),
        (
            {"arch": "c3d_small", "dataset": "gestures", "model_kwargs": {"input_size": [8, 32, 32]}},
            r"--model-kwargs input_size=\[8, 32, 32\] conflicts with --dataset gestures",
        ),
    ],
)
def test_a_model_that_does_not_fit_the_dataset_is_refused_before_training(tmp_path, no_data, kw, message):
    with pytest.raises(ValueError, match=message):
        pretrain(PretrainConfig(**kw), tmp_path / "run", log=quiet)
    assert not (tmp_path / "run").exists()
