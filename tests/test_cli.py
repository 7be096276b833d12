"""The tnn command, in process and as a subprocess."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

import tnn
from tnn.cli import main


def test_models_lists_params_and_flops_per_level(capsys):
    assert main(["models", "resnet2*"]) == 0
    out = capsys.readouterr().out
    model = tnn.create_model("resnet20")
    assert "resnet20" in out and "resnet32" not in out
    assert f"{model.params(1.0):,d}" in out and f"{model.flops(0.125) / 1e6:.2f}" in out
    assert len([line for line in out.splitlines() if line.startswith("  0.")]) == len(model.levels) - 1  # u < 1


def test_models_count_flops_at_the_input_shape_the_model_is_built_for(capsys):
    """One channel means Fashion-MNIST, whose images are 28×28 (as `tnn pretrain` builds them)."""
    assert main(["models", "vgg11", "--in-channels", "1"]) == 0
    out = capsys.readouterr().out
    fmnist = tnn.create_model("vgg11", in_channels=1, input_size=28)
    assert "vgg11  input 1×28×28 (fashion_mnist)" in out
    assert f"{fmnist.flops(1.0) / 1e6:.2f}" in out and f"{fmnist.flops(0.125) / 1e6:.2f}" in out
    assert main(["models", "resnet8", "--input-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "resnet8  input 3×64×64  " in out
    assert f"{tnn.create_model('resnet8', input_size=64).flops(1.0) / 1e6:.2f}" in out
    assert main(["models", "c3d_small", "--input-size", "8", "24"]) == 2
    assert "takes 1 or 3 values" in capsys.readouterr().err


def test_models_with_unknown_pattern_fails(capsys):
    assert main(["models", "alexnet"]) == 2
    assert "known: " in capsys.readouterr().err


def test_info_prints_the_card(tmp_path, capsys):
    path = tmp_path / "m.pt"
    tnn.save_checkpoint(tnn.create_model("resnet20"), path, dataset="cifar10", variant="tnn")
    assert main(["info", str(path)]) == 0
    card = capsys.readouterr().out
    assert '"dataset": "cifar10"' in card and "tnn-checkpoint v1" in card


def test_info_on_a_foreign_file_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "sd.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not a TNN checkpoint" in err and "Traceback" not in err


def test_bench_latency_prints_and_writes_ratios(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    args = ["bench", "latency", "--models", "resnet20", "--batch-sizes", "1", "--repeats", "2", "--warmup", "1"]
    assert main([*args, "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "| resnet20 | 1 | 0.125 |" in out and "masked ratio" in out
    rows = json.loads(out_json.read_text())["rows"]
    assert [r["u"] for r in rows] == list(tnn.create_model("resnet20").levels) and rows[-1]["ratio"] == 1.0
    assert all(r["median_ms"] > 0 and r["masked_median_ms"] > 0 for r in rows)
    full = rows[-1]["median_ms"]  # every ratio is against the sliced u=1 median, the masked one too
    for r in rows:
        assert r["ratio"] == pytest.approx(r["median_ms"] / full, rel=1e-12)
        assert r["masked_ratio"] == pytest.approx(r["masked_median_ms"] / full, rel=1e-12)


def test_bench_latency_compares_thread_counts_side_by_side(tmp_path, capsys):
    before = torch.get_num_threads()
    out_json = tmp_path / "bench.json"
    args = ["bench", "latency", "--models", "resnet8", "--batch-sizes", "1", "--repeats", "3", "--warmup", "0"]
    assert main([*args, "--threads", "1", "2", "--no-masked", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "1, 2 threads" in out and "| threads | u |" in out and "ms vs 1 thread |" in out
    rows = json.loads(out_json.read_text())["rows"]
    n = len(tnn.create_model("resnet8").levels)
    assert [r["threads"] for r in rows] == [1] * n + [2] * n
    assert all(r["thread_ratio"] == 1.0 for r in rows[:n])  # the first count is the reference
    for one, two in zip(rows[:n], rows[n:], strict=True):
        assert one["u"] == two["u"] and two["thread_ratio"] == two["median_ms"] / one["median_ms"]
    for block in (rows[:n], rows[n:]):  # each count's ratios are against its own u=1 median
        assert block[-1]["u"] == 1.0 and block[-1]["ratio"] == 1.0
        for r in block:
            assert r["ratio"] == pytest.approx(r["median_ms"] / block[-1]["median_ms"], rel=1e-12)
    assert json.loads(out_json.read_text())["threads"] == [1, 2]
    assert torch.get_num_threads() == before  # restored
    assert main([*args, "--threads", "1", "--no-masked", "--json", str(out_json)]) == 0  # one count: no ratio column
    assert "| threads |" not in (out := capsys.readouterr().out) and ", 1 threads," in out
    single = json.loads(out_json.read_text())
    assert single["threads"] == [1] and {r["threads"] for r in single["rows"]} == {1}
    assert all(r["thread_ratio"] is None for r in single["rows"]) and torch.get_num_threads() == before
    assert main([*args, "--threads", "0", "2"]) == 2
    assert "thread counts must be >= 1" in capsys.readouterr().err


def test_bench_latency_channels_last_side_by_side(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    args = ["bench", "latency", "--models", "resnet8", "--batch-sizes", "2", "--repeats", "2", "--warmup", "1"]
    assert main([*args, "--channels-last", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "channels-last: the same input in channels-last memory format" in out
    assert "| masked ratio | channels-last ms | channels-last p10–p90 ms | channels-last ratio |" in out
    rows = json.loads(out_json.read_text())["rows"]
    assert [r["u"] for r in rows] == list(tnn.create_model("resnet8").levels)
    full = rows[-1]  # each layout's ratio is against its own u=1 median
    assert full["u"] == 1.0 and full["ratio"] == full["channels_last_ratio"] == 1.0
    for r in rows:
        assert f"| resnet8 | 2 | {r['u']:.3f} |" in out and f" {r['channels_last_speedup']:.2f}× |" in out
        assert r["channels_last_ratio"] == pytest.approx(
            r["channels_last_median_ms"] / full["channels_last_median_ms"], rel=1e-12
        )
        assert r["channels_last_speedup"] == pytest.approx(r["median_ms"] / r["channels_last_median_ms"], rel=1e-12)
        assert r["channels_last_p10_ms"] <= r["channels_last_median_ms"] <= r["channels_last_p90_ms"]
        assert r["ratio"] == pytest.approx(r["median_ms"] / full["median_ms"], rel=1e-12)
    assert main([*args, "--no-masked", "--json", str(out_json)]) == 0  # without the flag: no columns, null fields
    assert "channels-last" not in capsys.readouterr().out
    assert all(r["channels_last_median_ms"] is None for r in json.loads(out_json.read_text())["rows"])


def test_bench_latency_channels_last_refuses_an_input_without_that_layout(monkeypatch, capsys):
    import tnn.bench
    import tnn.cli

    def one_d(name, **kw):  # a model taking (N, C, L) signals
        model = tnn.create_model("resnet8")
        model.input_shape, model.arch = (3, 32), name
        return model

    monkeypatch.setattr(tnn.bench, "create_model", one_d)
    monkeypatch.setattr(tnn.bench, "time_levels", lambda *a, **k: pytest.fail("timed before refusing"))
    assert main(["bench", "latency", "--models", "sig1d", "--channels-last"]) == 2
    err = capsys.readouterr().err
    assert "sig1d takes 3-D input" in err and "drop --channels-last for sig1d" in err and "Traceback" not in err


def test_bench_unknown_model_is_a_clear_error(monkeypatch, capsys):
    import tnn.bench

    monkeypatch.setattr(tnn.bench, "time_levels", lambda *a, **k: pytest.fail("timed before refusing"))
    assert main(["bench", "latency", "--models", "resnet8", "resnet21"]) == 2
    assert "known models" in capsys.readouterr().err


def test_console_entry_point_runs_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "tnn.cli", "models", "c3d_small"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "c3d_small  input 3×16×32×32" in proc.stdout


def test_pretrain_evaluate_and_report_from_the_command_line(tmp_path, capsys):
    from test_train import write_learnable_fmnist

    root = write_learnable_fmnist(tmp_path / "fm", n_train=160, n_test=40)
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"arch": "resnet8", "dataset": "fashion_mnist", "batch_size": 32}))
    run = tmp_path / "models" / "fm-resnet8-tnn"
    args = ["pretrain", "--config", str(config), "--epochs", "1", "--augment", "none", "--no-half"]
    assert main([*args, "--data-root", str(root), "--out", str(run)]) == 0
    card = tnn.load_checkpoint(run / "model.pt")[1]
    assert json.loads((run / "config.json").read_text())["epochs"] == 1  # the flag overrides the file
    assert (run / "command.txt").read_text().startswith("tnn pretrain --config ")
    assert card["made"]["command"].startswith("tnn pretrain --config ")
    assert main(["evaluate", str(run / "model.pt"), "--data-root", str(root)]) == 0
    assert "fashion_mnist/test" in capsys.readouterr().out
    assert tnn.load_checkpoint(run / "model.pt")[1]["accuracy"] == card["accuracy"]  # same weights, same numbers
    readme = tmp_path / "README.md"
    readme.write_text("# Models\n\nintro\n")
    assert main(["report", str(tmp_path / "models"), "--out", str(readme)]) == 0
    assert main(["report", str(tmp_path / "models"), "--out", str(readme)]) == 0  # rewrites, never duplicates
    text = readme.read_text()
    assert text.startswith("# Models\n\nintro") and text.count("| `fm-resnet8-tnn` | resnet8 | fashion_mnist |") == 1
    assert f"{card['accuracy']['1']:.2f}" in text
    assert "- `fm-resnet8-tnn`: `tnn pretrain --config" in text


def test_pretrain_rejects_unknown_config_keys(tmp_path, capsys):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"arch": "resnet8", "learning_rate": 0.1}))
    assert main(["pretrain", "--config", str(config)]) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_bench_train_reports_throughput(capsys):
    args = ["bench", "train", "--models", "resnet8", "--batch-size", "8", "--steps", "1", "--in-channels", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for variant, levels in (("tnn", 4), ("vanilla", 1)):  # fp32 and bf16 side by side on CPU
        assert f"| resnet8 | {variant} | fp32 | 8 | {levels} |" in out
        assert f"| resnet8 | {variant} | bf16 | 8 | {levels} |" in out
    from tnn.runtime import cpu_bf16_native

    assert f"oneDNN bf16 kernels: {'yes' if cpu_bf16_native() else 'no'}" in out  # says which CPU case it timed


@pytest.mark.slow
def test_bench_train_times_the_compiled_step_beside_the_eager_one(capsys):
    args = ["bench", "train", "--models", "resnet8", "--batch-size", "4", "--steps", "1", "--precisions", "fp32"]
    assert main([*args, "--compile"]) == 0
    out = capsys.readouterr().out
    assert "| compiled | images/s |" in out and "× eager |" in out
    for variant, levels in (("tnn", 4), ("vanilla", 1)):
        assert f"| resnet8 | {variant} | fp32 | 4 | {levels} | no |" in out
        assert f"| resnet8 | {variant} | fp32 | 4 | {levels} | yes |" in out


def test_report_pairs_tnn_levels_with_standalone_networks_of_equal_cost(tmp_path):
    from tnn.report import accuracy_table, baseline_comparison

    kw = {"num_classes": 10, "in_channels": 1, "input_size": 28}
    tnn_model = tnn.create_model("resnet8", **kw)
    twin = tnn.create_model("resnet8", levels=[1.0], **kw)
    half = tnn.create_model("resnet8", levels=[1.0], widths=[8, 16, 32], **kw)
    other = tnn.create_model("resnet8", levels=[1.0], widths=[9, 18, 36], **kw)  # no TNN level costs this
    paths = {}
    for name, model, variant, acc in [
        ("t", tnn_model, "tnn", {f"{u:g}": 50.0 + 40 * u for u in tnn_model.levels}),
        ("twin", twin, "vanilla", {"1": 91.0}),
        ("half", half, "vanilla", {"1": 68.5}),
        ("other", other, "vanilla", {"1": 80.0}),
        ("longer", twin, "vanilla", {"1": 93.0}),  # the twin's cost, but a longer schedule: not paired
    ]:
        paths[name] = tmp_path / name / "model.pt"
        paths[name].parent.mkdir()
        made = {"epochs": 30 if name == "longer" else 10}
        tnn.save_checkpoint(model, paths[name], dataset="fashion_mnist", variant=variant, accuracy=acc, made=made)
    table = baseline_comparison(list(paths.values()))
    rows = [line for line in table.splitlines() if line.startswith("| `t`")]
    assert len(rows) == 2, table  # the twin (u=1) and the half-width net (u=0.5); "other" matches no level,
    # and "longer" was trained three times as long
    assert rows[0].startswith("| `t` at u=0.5 | 70.00 | `half` (vanilla) | 68.50 |") and rows[0].endswith("| +1.50 |")
    assert rows[1].startswith("| `t` at u=1 | 90.00 | `twin` (vanilla) | 91.00 |") and rows[1].endswith("| -1.00 |")
    assert tnn_model.flops(0.5) == half.flops(1.0)  # the pairing is by cost, and these cost the same
    assert table in accuracy_table(list(paths.values()))
    assert baseline_comparison([paths["t"], paths["other"]]) == ""  # nothing to pair: no section


def test_report_compares_recipes_by_their_mean_over_seeds(tmp_path):
    from tnn.report import baseline_comparison

    kw = {"num_classes": 10, "in_channels": 1, "input_size": 28}
    tnn_model = tnn.create_model("resnet8", **kw)
    half = tnn.create_model("resnet8", levels=[1.0], widths=[8, 16, 32], **kw)
    twin = tnn.create_model("resnet8", levels=[1.0], **kw)
    recipe = {"arch": "resnet8", "epochs": 10, "lr": 0.1}
    paths = {}
    for name, model, variant, seed, acc in [
        ("t0", tnn_model, "tnn", 0, {"0.5": 70.0, "1": 90.0}),
        ("t1", tnn_model, "tnn", 1, {"0.5": 72.0, "1": 89.0}),
        ("h0", half, "vanilla", 0, {"1": 73.0}),
        ("h1", half, "vanilla", 1, {"1": 74.0}),
        ("twin", twin, "vanilla", 0, {"1": 91.0}),  # one seed, but the TNN recipe has two: compared by recipe too
    ]:
        paths[name] = tmp_path / name / "model.pt"
        paths[name].parent.mkdir()
        variant_recipe = {**recipe, "variant": variant, "widths": [8, 16, 32] if name[0] == "h" else None}
        made = {"epochs": 10, "device": "cpu", "config": {**variant_recipe, "seed": seed}}
        tnn.save_checkpoint(model, paths[name], dataset="fashion_mnist", variant=variant, accuracy=acc, made=made)
    pairs, means = baseline_comparison(list(paths.values())).split("The same pairings by recipe")
    assert len([line for line in pairs.splitlines() if line.startswith("| `t")]) == 6  # 2 TNNs × (2 halves + twin)
    means = means.splitlines()
    assert len([line for line in means if line.startswith("| `t")]) == 2
    assert "| `t0`, `t1` at u=0.5 | 2 | 71.00 | `h0`, `h1` | 2 | 73.50 | -2.50 | -4.00 … -1.00 |" in means
    assert "| `t0`, `t1` at u=1 | 2 | 89.50 | `twin` | 1 | 91.00 | -1.50 | -2.00 … -1.00 |" in means
    # one seed on both sides: the single pair says it all, so no recipe table
    assert "The same pairings by recipe" not in baseline_comparison([paths["t0"], paths["h0"]])
    # a second checkpoint of the same seed is not a second seed: it neither makes a recipe table nor counts as one
    paths["h0copy"] = tmp_path / "h0copy" / "model.pt"
    paths["h0copy"].parent.mkdir()
    shutil.copy(paths["h0"], paths["h0copy"])
    assert "The same pairings by recipe" not in baseline_comparison([paths["t0"], paths["h0"], paths["h0copy"]])
    means = baseline_comparison([paths[n] for n in ("t0", "t1", "h0", "h0copy")]).splitlines()
    assert "| `t0`, `t1` at u=0.5 | 2 | 71.00 | `h0`, `h0copy` | 1 | 73.00 | -2.00 | -3.00 … -1.00 |" in means


def test_report_shows_the_spread_of_networks_that_differ_only_in_their_seed(tmp_path):
    from tnn.report import accuracy_table, seed_spread

    model = tnn.create_model("resnet8", num_levels=2, num_classes=10, in_channels=1, input_size=28)
    recipe = {"arch": "resnet8", "epochs": 10, "lr": 0.1, "random_levels": 1, "val_recalibration": 5}
    paths = {}
    for name, config, acc in [
        ("a", {**recipe, "seed": 0, "threads": 2}, {"0.5": 70.0, "1": 90.0}),
        ("b", {**recipe, "seed": 1, "threads": 0}, {"0.5": 72.5, "1": 89.0}),  # threads: not part of the recipe
        ("c", {**recipe, "seed": 2, "threads": 2, "label_smoothing": 0.0}, {"0.5": 71.0, "1": 91.0}),  # the default,
        # which a run saved before the field existed trained with
        ("lr", {**recipe, "seed": 1, "lr": 0.05}, {"0.5": 60.0, "1": 80.0}),  # another recipe: alone in its group
        ("ls", {**recipe, "seed": 3, "label_smoothing": 0.1}, {"0.5": 61.0, "1": 81.0}),  # another recipe too
        ("none", None, {"0.5": 10.0, "1": 20.0}),  # no recorded config: left out
    ]:
        paths[name] = tmp_path / name / "model.pt"
        paths[name].parent.mkdir()
        made = {"epochs": 10, "device": "cpu"} | ({"config": config} if config else {})
        tnn.save_checkpoint(model, paths[name], dataset="fashion_mnist", variant="tnn", accuracy=acc, made=made)
    table = seed_spread(list(paths.values()))
    lines = table.splitlines()
    assert lines[0] == "`a`, `b`, `c`: one recipe, 3 seeds. Test accuracy (%):"
    assert lines[2:] == [
        "| checkpoint | seed | u=0.5 | u=1 |",
        "|---|---:|---:|---:|",
        "| `a` | 0 | 70.00 | 90.00 |",
        "| `b` | 1 | 72.50 | 89.00 |",
        "| `c` | 2 | 71.00 | 91.00 |",
        "| mean | | 71.17 | 90.00 |",
        "| range (max − min) | | 2.50 | 2.00 |",
    ]
    assert table in accuracy_table(list(paths.values()))
    assert seed_spread([paths["a"], paths["lr"], paths["none"]]) == ""  # no recipe with two seeds: no section


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pretrain", "--label-smoothing", "2"], "label_smoothing must be in [0, 1)"),
        (["pretrain", "--eval-batch-size", "0"], "eval_batch_size must be positive"),
        (["pretrain", "--weight-decay", "-1"], "weight_decay must be a finite number >= 0"),
        (["pretrain", "--limit", "-1"], "limit must be a finite number >= 0"),
        (["pretrain", "--threads", "-1"], "threads must be a finite number >= 0"),
        (["pretrain", "--device", "tpu"], "unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
        (["evaluate", "--device", "tpu", "CKPT"], "unknown device 'tpu'"),
        (["bench", "latency", "--models", "resnet8", "--batch-sizes", "0"], "--batch-sizes must be positive"),
        (["bench", "train", "--models", "resnet8", "--threads", "-1"], "threads must be a positive integer"),
        (["bench", "train", "--models", "resnet8", "--device", "tpu"], "unknown device 'tpu'"),
        (["models", "vgg11", "--in-channels", "0"], "--in-channels must be positive"),
        (["report", "CKPT", "--out", "DIR"], "is a directory; give a file path"),
    ],
)
def test_bad_arguments_are_one_line_errors_before_any_work(tmp_path, capsys, argv, message):
    """Each is refused up front (exit 2, the problem named, no traceback); a run directory stays empty."""
    path = tmp_path / "m.pt"
    tnn.save_checkpoint(tnn.create_model("resnet8", num_classes=10, in_channels=1), path, dataset="fashion_mnist")
    (tmp_path / "dir").mkdir()
    argv = [{"CKPT": str(path), "DIR": str(tmp_path / "dir")}.get(a, a) for a in argv]
    if argv[0] == "pretrain":
        argv += ["--arch", "resnet8", "--dataset", "fashion_mnist", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_pretrain_config_file_is_checked_and_named(tmp_path, capsys):
    config = tmp_path / "cfg.json"
    config.write_text('{"arch": "resnet8",\n')
    assert main(["pretrain", "--config", str(config)]) == 2
    assert f"{config} is not valid JSON" in capsys.readouterr().err
    config.write_text(json.dumps({"arch": "resnet8", "epochs": "three"}))
    assert main(["pretrain", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "config 'epochs' must be int, got 'three'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_report_names_a_checkpoint_whose_card_is_damaged(tmp_path, capsys):
    path = tmp_path / "m.pt"
    tnn.save_checkpoint(tnn.create_model("resnet8"), path, dataset="cifar10", accuracy={1.0: 80.0})
    payload = torch.load(path, weights_only=True)
    payload["card"]["accuracy"] = {"1": "x"}
    torch.save(payload, path)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: its card's accuracy has a bad entry '1': 'x'" in err
    del payload["card"]["arch"]
    torch.save(payload, path)
    assert main(["report", str(path)]) == 2 and "its card names no architecture" in capsys.readouterr().err


def test_cache_refuses_an_unwritable_place_before_building(tmp_path, capsys):
    path = tmp_path / "m.pt"
    tnn.save_checkpoint(tnn.create_model("resnet8", in_channels=1), path, dataset="fashion_mnist")
    assert main(["cache", str(path), "--cache-dir", str(path)]) == 2  # a file where the directory should be
    err = capsys.readouterr().err
    assert f"{path} is a file; give a directory" in err and "Traceback" not in err


def _run_dir(root, name, model, variant, history, **made):
    path = root / name / "model.pt"
    path.parent.mkdir(parents=True)
    tnn.save_checkpoint(model, path, dataset="fashion_mnist", variant=variant, made={"device": "cpu", **made})
    (path.parent / "metrics.json").write_text(json.dumps({"history": history}))
    return path


def test_time_to_accuracy_reads_each_runs_history(tmp_path, capsys):
    from tnn.report import time_to_accuracy_table

    kw = {"num_classes": 10, "in_channels": 1, "input_size": 28}
    model = tnn.create_model("resnet8", **kw)
    rising = [  # epoch k: val at u=1 of 70, 80, 90 %; at u=0.5 10 pt lower; 60 s an epoch, one slow epoch
        {"epoch": k, "loss": 1.0, "val_accuracy": {"0.5": 60.0 + 10 * k, "1": 70.0 + 10 * (k - 1)}, "seconds": s}
        for k, s in [(1, 60.0), (2, 120.0), (3, 300.0)]
    ]
    tnn_run = _run_dir(tmp_path, "t", model, "tnn", rising, config={"batch_size": 64})
    flat = [{"epoch": 1, "loss": 1.0, "val_accuracy": {"1": 75.0}, "seconds": 30.0}]
    _run_dir(tmp_path, "v", tnn.create_model("resnet8", levels=[1.0], **kw), "vanilla", flat)
    table = time_to_accuracy_table(sorted(tmp_path.rglob("model.pt")), [75, 85, 95])
    rows = table.splitlines()
    assert rows[0].endswith("| val ≥ 75 % | val ≥ 85 % | val ≥ 95 % | best val % at u=1 |") and len(rows) == 4
    assert rows[2] == (
        "| `t` | tnn | cpu | 64 | 3 | 60.0 | 5.0 min | 2.0 min (epoch 2) | 5.0 min (epoch 3) | — | 90.00 |"
    )
    assert rows[3] == "| `v` | vanilla | cpu | ? | 1 | 30.0 | 0.5 min | 0.5 min (epoch 1) | — | — | 75.00 |"
    half = time_to_accuracy_table([tnn_run, tmp_path / "v" / "model.pt"], [80], level=0.5)
    assert "| `t` |" in half and "| `v` |" not in half and "80.0 min" not in half  # the vanilla run has no u=0.5
    assert "2.0 min (epoch 2)" in half and half.splitlines()[0].endswith("best val % at u=0.5 |")
    with pytest.raises(ValueError, match="targets"):
        time_to_accuracy_table([tnn_run], [0])
    with pytest.raises(ValueError, match=r"no training history at u=0\.25"):
        time_to_accuracy_table([tmp_path / "v" / "model.pt"], [50], level=0.25)
    (tmp_path / "v" / "metrics.json").write_text('{"history": [{"epoch": 1}]}')
    with pytest.raises(ValueError, match="per-epoch history"):
        time_to_accuracy_table([tmp_path / "v" / "model.pt"], [50])
    (tmp_path / "v" / "metrics.json").unlink()
    with pytest.raises(ValueError, match=r"no metrics\.json beside it"):
        time_to_accuracy_table([tmp_path / "v" / "model.pt"], [50])
    assert main(["bench", "time-to-accuracy", str(tmp_path / "t"), "--targets", "75,85"]) == 0
    assert "| `t` | tnn | cpu | 64 |" in capsys.readouterr().out
    assert main(["bench", "time-to-accuracy", str(tmp_path / "v")]) == 2
    assert "no metrics.json beside it" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "time-to-accuracy", str(tmp_path / "t"), "--targets", "a,b"])
    assert "comma-separated numbers" in capsys.readouterr().err


def test_pretrain_turns_sigterm_into_a_clean_exit(monkeypatch, tmp_path):
    """A stop (SIGTERM) that lands while a checkpoint is being written exits with 143 and leaves no
    half-written temporary file beside the run (a job stopped by scripts/gpu_budget.py)."""
    import os
    import signal
    import time

    import tnn.train
    from tnn.checkpoint import atomic_write

    def stopped_mid_save(cfg, out, *, resume, command):
        def write(fh):
            fh.write(b"half a checkpoint")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal is handled here, mid-save

        atomic_write(os.path.join(out, "last.pt"), write)

    monkeypatch.setattr(tnn.train, "pretrain", stopped_mid_save)
    before = signal.getsignal(signal.SIGTERM)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        main(["pretrain", "--arch", "resnet8", "--dataset", "fashion_mnist", "--out", str(run)])
    assert stop.value.code == 143
    assert list(run.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config", "nope.json"], "--config nope.json: cannot read it (No such file or directory)"),
        (["--lr", "nan"], "--lr nan: lr must be a finite number > 0"),
        (["--epochs", "0", "--lr", "-1"], "--epochs 0: epochs must be positive (>= 1); --lr -1.0: lr must be"),
        (["--dataset", "gestures", "--arch", "resnet8"], "pass --arch one of c3d, c3d_small"),
        (
            ["--model-kwargs", '{"in_channels": 3}'],
            "--model-kwargs in_channels=3 conflicts with --dataset fashion_mnist",
        ),
    ],
)
def test_pretrain_bad_input_names_the_flag(tmp_path, capsys, monkeypatch, argv, message):
    import tnn.data

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tnn.data, "load", lambda *a, **k: pytest.fail("data loaded before the bad input was refused"))
    base = ["pretrain", "--arch", "resnet8", "--dataset", "fashion_mnist", "--out", str(tmp_path / "run")]
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "invalid loads value" not in err
    assert not (tmp_path / "run").exists()


def test_pretrain_refuses_an_existing_run_without_resume(tmp_path, capsys, monkeypatch):
    import tnn.data

    monkeypatch.setattr(tnn.data, "load", lambda *a, **k: pytest.fail("data loaded before the bad input was refused"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"trained")
    assert main(["pretrain", "--arch", "resnet8", "--dataset", "fashion_mnist", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"--out {run} already holds a finished run" in err and "pass --resume" in err and "another --out" in err
    assert (run / "model.pt").read_bytes() == b"trained"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{bad", "argument --model-kwargs: not JSON (Expecting property name enclosed in double quotes)"),
        ("[1]", "argument --model-kwargs: expected a JSON object, got '[1]'"),
    ],
)
def test_pretrain_json_flags_name_the_flag_and_give_an_example(tmp_path, capsys, value, message):
    with pytest.raises(SystemExit) as stop:  # argparse refuses it while parsing, before any work
        main(["pretrain", "--arch", "resnet8", "--model-kwargs", value, "--out", str(tmp_path / "run")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and """e.g. '{"widths": [8, 16, 32]}'""" in err and "invalid loads value" not in err
    assert not (tmp_path / "run").exists()
