"""Models of your own: registered from a module named in $TNN_MODEL_MODULES or an entry point, and
then trained, evaluated and loaded by every command like the shipped ones (examples/tiny_cnn.py)."""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tnn
from tnn.models import _registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_tnn(args, tmp_path, modules="tiny_cnn"):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    env.pop("TNN_MODEL_MODULES", None)
    if modules is not None:
        env["TNN_MODEL_MODULES"] = modules
    code = "import sys; from tnn.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry whose plugins load again, and whose additions are dropped afterwards."""
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    monkeypatch.setattr(_registry, "_PLUGINS", None)
    monkeypatch.delenv("TNN_MODEL_MODULES", raising=False)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    sys.modules.pop("tiny_cnn", None)
    yield
    sys.modules.pop("tiny_cnn", None)


def test_the_example_model_is_throttleable_and_its_flops_are_exact(fresh_registry, monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    monkeypatch.setenv("TNN_MODEL_MODULES", "tiny_cnn")
    assert "tinycnn" in tnn.list_models("tiny*")
    model = tnn.create_model("tinycnn", in_channels=1, input_size=28).eval()
    assert model.arch == "tinycnn" and len(model.levels) == 8
    flops = [model.flops(u) for u in model.levels]
    assert flops == sorted(flops) and flops[0] < 0.05 * flops[-1]  # width slicing: about u² of the compute
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        for u in (0.25, 1.0):
            with FlopCounterMode(display=False) as counter:
                model(x[:1], u)
            assert counter.get_total_flops() == model.flops(u)
            torch.testing.assert_close(model(x, u), model(x, u, masked=True), atol=1e-5, rtol=1e-4)


def test_an_entry_point_registers_its_models(fresh_registry, monkeypatch):
    point = importlib.metadata.EntryPoint(name="tiny", value="tiny_cnn", group=_registry.PLUGIN_GROUP)
    monkeypatch.setattr(_registry, "entry_points", lambda group: [point] if group == _registry.PLUGIN_GROUP else [])
    model = tnn.create_model("tinycnn")  # the lookup imports the plugins first
    assert type(model).__name__ == "TinyCNN"
    assert _registry.load_plugins() == ["tiny_cnn"]


def test_a_plugin_that_does_not_import_is_named_with_where_it_was_listed(fresh_registry, monkeypatch):
    monkeypatch.setenv("TNN_MODEL_MODULES", "tiny_cnn, no_such_models_module")
    with pytest.raises(_registry.PluginError, match=r"'no_such_models_module' \(listed in \$TNN_MODEL_MODULES\)"):
        tnn.list_models()
    monkeypatch.setenv("TNN_MODEL_MODULES", "tiny_cnn")  # fixed: the next lookup tries again
    assert "tinycnn" in tnn.list_models()


def test_a_factory_must_return_a_throttlenet_and_names_must_not_collide(fresh_registry):
    def not_a_tnn(**kwargs):
        return torch.nn.Linear(2, 2)

    tnn.register_model(not_a_tnn)
    with pytest.raises(ValueError, match="returned a Linear, not a tnn ThrottleNet"):
        tnn.create_model("not_a_tnn")

    def resnet20(**kwargs):
        return None

    with pytest.raises(ValueError, match=r"'resnet20' is already registered \(by tnn.models.resnet\)"):
        tnn.register_model(resnet20)
    with pytest.raises(ValueError, match=r"unknown model 'tinycnn'.*TNN_MODEL_MODULES"):
        tnn.create_model("tinycnn")


def test_a_plugin_model_trains_evaluates_and_loads_through_the_cli(tmp_path):
    from test_train import write_learnable_fmnist

    root = write_learnable_fmnist(tmp_path / "fm", n_train=320, n_test=100)
    run = tmp_path / "run"
    args = ["pretrain", "--arch", "tinycnn", "--dataset", "fashion_mnist", "--epochs", "3", "--batch-size", "32"]
    args += ["--augment", "none", "--threads", "1", "--data-root", str(root), "--out", str(run)]
    proc = run_tnn(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_tnn(["evaluate", str(run), "--data-root", str(root), "--no-write"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "fashion_mnist/test" in proc.stdout
    env_kwargs = f'{{"checkpoint": "{run / "model.pt"}", "data_root": "{root}", "cache_dir": "{tmp_path / "cache"}"}}'
    proc = run_tnn(["evaluate-controller", "static", "--no-progress", "--env-kwargs", env_kwargs], tmp_path)
    assert proc.returncode == 0, proc.stderr  # the env builds its response table with the plugin's model
    assert "static 1: accuracy" in proc.stdout
    card = tnn.checkpoint.read_checkpoint(run / "model.pt")["card"]
    assert card["accuracy"]["1"] > 30.0  # 10 stripe classes: chance is 10 %
    proc = run_tnn(["evaluate", str(run), "--data-root", str(root)], tmp_path, modules=None)  # not named: say how
    assert proc.returncode != 0
    assert "unknown model 'tinycnn'" in proc.stderr and "TNN_MODEL_MODULES" in proc.stderr
    assert "Traceback" not in proc.stderr
