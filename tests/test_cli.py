"""The tnn command, in process and as a subprocess."""

import json
import subprocess
import sys

import torch

import tnn
from tnn.cli import main


def test_models_lists_params_and_flops_per_level(capsys):
    assert main(["models", "resnet2*"]) == 0
    out = capsys.readouterr().out
    model = tnn.create_model("resnet20")
    assert "resnet20" in out and "resnet32" not in out
    assert f"{model.params(1.0):,d}" in out and f"{model.flops(0.125) / 1e6:.2f}" in out
    assert len([line for line in out.splitlines() if line.startswith("  0.")]) == 7


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
    assert len(rows) == 8 and rows[-1]["u"] == 1.0 and rows[-1]["ratio"] == 1.0
    assert all(r["median_ms"] > 0 and r["masked_median_ms"] > 0 for r in rows)


def test_bench_unknown_model_is_a_clear_error(capsys):
    assert main(["bench", "latency", "--models", "resnet21"]) == 2
    assert "known models" in capsys.readouterr().err


def test_console_entry_point_runs_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "tnn.cli", "models", "c3d_small"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "c3d_small  input 3×16×32×32" in proc.stdout
