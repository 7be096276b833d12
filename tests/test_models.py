"""Every registered model: shapes, exact FLOPs, real slicing (== masked reference), gradients, fast path."""

import copy
import inspect
import itertools
import math
import pickle
import re
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import tnn
from tnn.layers import CostCounter, LevelBatchNorm, ThrottleConv, ThrottleLinear, active_channels

# the deepest or widest member of a family runs the same code as a smaller one in the default suite;
# sweeping all its levels is minutes on a 2-core AVX2 host, so those parametrizations run with the slow tests
HEAVY = frozenset({"c3d", "densenet_bc_100", "resnet56", "resnet110", "resnext29_8x32d"})


def _marks(name: str) -> tuple:
    return (pytest.mark.slow,) if name in HEAVY else ()


def _configs():
    for name in tnn.list_models():
        strategies = tnn.create_model(name).strategies if name in ("resnet20", "resnext29_8x16d") else ("width",)
        for strategy in strategies:
            yield pytest.param(name, strategy, id=f"{name}-{strategy}", marks=_marks(name))


CONFIGS = list(_configs())
MODELS = [pytest.param(name, id=name, marks=_marks(name)) for name in tnn.list_models()]
_CACHE: dict = {}


def build(name: str, strategy: str = "width", **kwargs) -> tnn.ThrottleNet:
    key = (name, strategy, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        torch.manual_seed(0)
        _CACHE[key] = tnn.create_model(name, strategy=strategy, **kwargs)
    return _CACHE[key]


def batch(model: tnn.ThrottleNet, n: int = 2) -> torch.Tensor:
    return torch.rand(n, *model.input_shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name, strategy", CONFIGS)
def test_every_level_runs_with_finite_outputs_and_exact_flops(name, strategy):
    model = build(name, strategy).eval()
    x = batch(model, 1)
    flops = []
    with torch.no_grad():
        for u in model.levels:
            with FlopCounterMode(display=False) as counter:
                y = model(x, u)
            assert y.shape == (1, model.num_classes) and torch.isfinite(y).all()
            assert model.flops(u) == counter.get_total_flops()  # batch 1: total == per sample
            flops.append(model.flops(u))
    assert all(a < b for a, b in itertools.pairwise(flops)), f"FLOPs not strictly increasing: {flops}"
    assert model.levels[-1] == 1.0 and len(model.levels) == 8


@pytest.mark.parametrize("name, strategy", CONFIGS)
def test_sliced_forward_equals_masked_full_width_reference(name, strategy):
    model = build(name, strategy).train()  # batch statistics keep untrained activations O(1)
    x = batch(model, 2)
    with torch.no_grad():
        for u in model.levels:
            sliced, masked = model(x, u), model(x, u, masked=True)
            torch.testing.assert_close(sliced, masked, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, strategy", CONFIGS)
def test_active_subnetwork_and_only_it_gets_gradients(name, strategy):
    model = build(name, strategy).train()
    x = batch(model, 4)
    for u in (model.levels[0], model.levels[len(model.levels) // 2]):
        model.zero_grad(set_to_none=True)
        counter = CostCounter()
        out = model(x, u, counter=counter)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        (out * weights).sum().backward()
        level = model.level_index(u)
        for module in model.modules():
            if isinstance(module, LevelBatchNorm):
                for i, norm in enumerate(module.norms):  # no other level's norm is touched
                    ran = i == level and id(module) in counter.modules
                    assert (norm.weight.grad is not None) == ran
            elif isinstance(module, (ThrottleConv, ThrottleLinear)):
                assert (module.weight.grad is not None) == (id(module) in counter.modules)
        nonzero = sum(int((p.grad != 0).sum()) for p in model.parameters() if p.grad is not None)
        active = model.params(u)
        assert counter.params == active
        assert nonzero <= active, "gradient reached parameters outside the active sub-network"
        # a few units can be dead for a tiny batch of random inputs (no gradient), not many
        assert nonzero >= 0.9 * active, f"only {nonzero} of {active} active parameters got a gradient"


@pytest.mark.parametrize("name", MODELS)
def test_u_between_levels_runs_the_level_above(name):
    model = build(name).eval()
    x = batch(model, 1)
    levels = model.levels
    with torch.no_grad():
        for lo, hi in zip((0.0, *levels), levels, strict=False):
            mid = (lo + hi) / 2
            assert model.snap(mid) == hi
            torch.testing.assert_close(model(x, mid), model(x, hi), rtol=0, atol=0)
        assert model.flops(0.3) == model.flops(0.375)


@pytest.mark.parametrize("u", [0, -0.5, 1.5, float("nan"), float("inf"), None, "1"])
def test_invalid_u_raises_value_error(u):
    model = build("resnet20")
    with pytest.raises(ValueError, match="u must be"):
        model(batch(model, 1), u)
    with pytest.raises(ValueError, match="u must be"):
        model.flops(u)


def test_wrong_input_shape_names_the_expected_shape():
    model = build("resnet20")
    with pytest.raises(ValueError, match=r"N×3×32×32"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"N×3×32×32"):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="float images"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    clip = build("c3d_small", in_channels=1)
    with pytest.raises(ValueError, match=r"N×1×16×32×32"):
        clip(torch.rand(2, 1, 8, 32, 32))
    with pytest.raises(ValueError, match=r"weights are torch.float32, its input is torch.float64: pass x.to"):
        model(torch.rand(2, 3, 32, 32, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast runs float32 weights on bf16 input
        assert model(torch.rand(2, 3, 32, 32).bfloat16()).shape == (2, 10)


def test_pixels_on_the_0_255_scale_are_warned_about_once():
    import warnings

    model = tnn.create_model("resnet8").eval()
    with pytest.warns(UserWarning, match=r"resnet8 got input values up to 255: .* divide 0-255 pixels by 255") as seen:
        model(torch.full((2, 3, 32, 32), 255.0))
        model(torch.full((2, 3, 32, 32), 255.0))  # once per model: later calls are not looked at
    assert len([w for w in seen if "0-255" in str(w.message)]) == 1
    assert seen[0].filename == __file__  # the warning points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # images in [0, 1], even standardised noise, pass silently
        tnn.create_model("resnet8").eval()(torch.rand(2, 3, 32, 32))
        tnn.create_model("resnet8").eval()(torch.randn(64, 3, 32, 32))


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("resnet20", {"in_channels": 0}, "in_channels must be a positive int"),
        ("resnet20", {"num_classes": -1}, "num_classes must be a positive int"),
        ("resnet20", {"input_size": 0}, "input_size must be a positive int"),
        ("resnet20", {"depth": 21}, "got multiple values for argument 'depth'"),
        ("resnet20", {"num_levels": 0}, "num_levels must be a positive integer, got 0"),
        (
            "resnet20",
            {"widths": [0, 16, 32]},
            "widths must be a list of positive ints (channels per stage), got [0, 16",
        ),
        ("resnet20", {"widths": []}, "widths must be a list of positive ints"),
        ("resnext29_8x16d", {"cardinality": 0}, "cardinality must be a positive int, got 0"),
        ("densenet_bc_52", {"growth": 1.5}, "growth must be a positive int, got 1.5"),
        ("c3d_small", {"input_size": 16}, "input_size of a clip model must be (frames, height, width)"),
    ],
)
def test_create_model_names_the_bad_argument(name, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tnn.create_model(name, **kwargs)


@pytest.mark.parametrize("name", [n for n in tnn.list_models() if not n.startswith("c3d")])
def test_image_models_take_fashion_mnist_input(name):
    model = build(name, in_channels=1, input_size=28).eval()
    with torch.no_grad():
        for u in (model.levels[0], 1.0):
            y = model(torch.rand(2, 1, 28, 28), u)
            assert y.shape == (2, 10) and torch.isfinite(y).all()


def test_resnet20_width_cuts_flops_quadratically():
    model = build("resnet20")
    assert model.flops(0.5) / model.flops(1.0) <= 0.30
    assert model.flops(model.levels[0]) / model.flops(1.0) <= 0.05


def test_depth_strategy_skips_blocks_but_keeps_width():
    model = build("resnet20", "depth")
    full = model.flops(1.0)
    # every block of ResNet-20 costs the same, so FLOPs grow in whole-block steps (nine blocks)
    ratios = [model.flops(u) / full for u in model.levels]
    assert ratios[0] < 0.3 and ratios[-1] == 1.0
    assert model.params(model.levels[0]) < model.params(1.0)
    assert all(c.out_counts[0] == c.out_channels for c in model.modules() if isinstance(c, tnn.layers.ThrottleConv))


def test_params_at_full_width_counts_all_but_other_levels_norms():
    model = build("resnet20")
    total = sum(p.numel() for p in model.parameters())
    other_norms = sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, LevelBatchNorm)
        for norm in m.norms[:-1]
        for p in norm.parameters()
    )
    assert model.params(1.0) == total - other_norms


def test_strategy_and_registry_errors_are_clear():
    with pytest.raises(ValueError, match=r"known models: .*resnet20"):
        tnn.create_model("resnet21")
    with pytest.raises(ValueError, match="supports strategies"):
        tnn.create_model("vgg11", strategy="depth")
    with pytest.raises(ValueError, match="strategies"):
        tnn.create_model("resnet20", strategy="height")
    with pytest.raises(ValueError, match="unexpected keyword argument 'colour'"):
        tnn.create_model("resnet20", colour="red")
    with pytest.raises(ValueError, match="6n\\+2"):
        tnn.models.resnet.CifarResNet(21)
    assert tnn.list_models("resnet*") == ["resnet110", "resnet20", "resnet32", "resnet56", "resnet8"]


def test_custom_levels():
    model = tnn.create_model("resnet20", levels=(0.25, 0.5, 1.0))
    assert model.levels == (0.25, 0.5, 1.0)
    assert model.snap(0.3) == 0.5
    with pytest.raises(ValueError, match=r"end with 1\.0"):
        tnn.create_model("resnet20", levels=(0.25, 0.5))
    with pytest.raises(ValueError, match="ascending"):
        tnn.create_model("resnet20", levels=(0.5, 0.25, 1.0))


def test_no_global_state_between_models_and_calls():
    a, b = tnn.create_model("resnet20").eval(), tnn.create_model("resnet20").eval()
    b.load_state_dict(a.state_dict())
    x = batch(a, 1)
    with torch.no_grad():
        ref = a(x, 1.0)
        b(x, 0.125)  # a call on another model at another level changes nothing here
        torch.testing.assert_close(a(x, 1.0), ref, rtol=0, atol=0)
    assert not math.isclose(a.flops(0.125), a.flops(1.0))


# --- eval-mode inference fast path: BN folded into cached weights, a flat plan per level ---


def randomized_norms(model: tnn.ThrottleNet, seed: int = 3) -> tnn.ThrottleNet:
    """Give every norm non-trivial statistics and affine parameters, so that folding them matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def fast_and_reference(model: tnn.ThrottleNet, x: torch.Tensor, u: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast path (no autograd) and the layer-by-layer reference (autograd on) at ``u``."""
    with torch.no_grad():
        fast = model(x, u)
    return fast, model(x, u).detach()


def cache_entries(model: tnn.ThrottleNet) -> int:
    return len(model._plans) + sum(len(m._folded) for m in model.modules() if isinstance(m, ThrottleConv))


@pytest.mark.parametrize("name, strategy", CONFIGS)
def test_fast_path_equals_reference_at_every_level(name, strategy):
    torch.manual_seed(0)
    model = randomized_norms(tnn.create_model(name, strategy=strategy))
    x = batch(model, 2)
    for u in model.levels:
        fast, ref = fast_and_reference(model, x, u)
        torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    assert cache_entries(model) > 0 or name.startswith("densenet")  # DenseNet has no conv→BN pair to fold


def test_fast_path_is_used_and_skips_the_norms():
    torch.manual_seed(0)
    model = randomized_norms(tnn.create_model("resnet20"))
    calls = []
    model.blocks[0].bn1.norms[0].register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(batch(model, 1), 1.0)  # level 7: no hook on its norms
    assert not calls and len(model._plans) == 1
    with torch.no_grad():
        model(batch(model, 1), 0.125)  # the hooked norm must run, so no fold there
    assert calls


def test_no_cache_in_training_mode_or_under_autograd():
    torch.manual_seed(0)
    model = tnn.create_model("resnet8")
    x = batch(model, 2)
    model.train()
    with torch.no_grad():
        model(x, 0.5)
    model.eval()
    out = model(x, 0.5)  # grad enabled: the reference path, differentiable through the norms
    out.sum().backward()
    assert cache_entries(model) == 0
    assert model.stem_bn.norms[model.level_index(0.5)].weight.grad is not None
    with torch.no_grad():
        model(x, 0.5, masked=True)
        model(x, 0.5, counter=tnn.CostCounter())
    assert cache_entries(model) == 0


def test_cache_follows_optimizer_steps_and_running_statistics():
    torch.manual_seed(0)
    model = randomized_norms(tnn.create_model("resnet8"))
    x = batch(model, 4)
    before, _ = fast_and_reference(model, x, 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x, 0.5).square().sum().backward()  # eval mode, autograd on: weights move, statistics do not
    opt.step()
    fast, ref = fast_and_reference(model, x, 0.5)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(fast, before, rtol=1e-3, atol=1e-3)
    model.train()  # a training-mode forward moves running statistics without bumping _version
    with torch.no_grad():
        model(x * 3, 0.5)
    model.eval()
    fast, ref = fast_and_reference(model, x, 0.5)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    for norms in (m.norms for m in model.modules() if isinstance(m, LevelBatchNorm)):
        norms[3].training = True  # switched without train(): still never folded
    fast, ref = fast_and_reference(model, x, 0.5)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)


def test_cache_follows_load_state_dict_dtype_and_replaced_parameters():
    torch.manual_seed(0)
    model = randomized_norms(tnn.create_model("resnet8"))
    other = randomized_norms(tnn.create_model("resnet8"), seed=5)
    x = batch(model, 2)
    fast_and_reference(model, x, 1.0)
    keys = set(model.state_dict())
    model.load_state_dict(other.state_dict())
    assert set(model.state_dict()) == keys  # no cache in the state dict
    fast, ref = fast_and_reference(model, x, 1.0)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(fast, other(x, 1.0), rtol=1e-4, atol=1e-4)
    model.double()
    fast, ref = fast_and_reference(model, x.double(), 1.0)
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, ref)
    model.float()
    fast_and_reference(model, x, 1.0)
    model.stem.weight.data = torch.randn_like(model.stem.weight)  # same tensor and version, new storage
    fast, ref = fast_and_reference(model, x, 1.0)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    model.blocks[0].conv1.weight = torch.nn.Parameter(torch.randn_like(model.blocks[0].conv1.weight))
    model.fc.bias = torch.nn.Parameter(torch.randn_like(model.fc.bias))
    fast, ref = fast_and_reference(model, x, 1.0)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    model.blocks[1] = copy.deepcopy(model.blocks[1])  # a replaced module: its copy holds no cache
    with torch.no_grad():
        model.blocks[1].conv2.weight.mul_(-1)
    fast, ref = fast_and_reference(model, x, 1.0)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    assert sum(len(m._folded) for m in pickle.loads(pickle.dumps(model)).modules() if hasattr(m, "_folded")) == 0


def test_fast_path_keeps_hooks_and_functional_call_semantics():
    torch.manual_seed(0)
    model = randomized_norms(tnn.create_model("resnet8"))
    x = batch(model, 2)
    fast_and_reference(model, x, 0.25)  # builds the caches
    seen = []
    handle = model.fc.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    fast, ref = fast_and_reference(model, x, 0.25)
    handle.remove()
    width = model.blocks[-1].conv2.out_counts[model.level_index(0.25)]
    assert len(seen) == 2 and seen[0].shape == seen[1].shape == (2, width)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    other = randomized_norms(tnn.create_model("resnet8"), seed=7)
    state = dict(other.named_parameters()) | dict(other.named_buffers())
    with torch.no_grad():
        swapped = torch.func.functional_call(model, state, (x,), {"u": 0.25})
        torch.testing.assert_close(swapped, other(x, 0.25), rtol=1e-4, atol=1e-4)
    with torch.inference_mode():  # a model built in inference mode has no version counters: no cache
        frozen = tnn.create_model("resnet8").eval()
        frozen(x, 0.25)
    assert cache_entries(frozen) == 0


@pytest.mark.parametrize("name", MODELS)
def test_flops_at_another_input_shape_equal_the_model_built_for_it(name):
    model = build(name)
    size = 24 if len(model.input_shape) == 3 else (8, 24, 24)
    other = build(name, input_size=size)
    assert other.input_shape != model.input_shape and model.flops(1.0, model.input_shape) == model.flops(1.0)
    for u in (model.levels[0], 1.0):
        assert model.flops(u, other.input_shape) == other.flops(u)
    assert model.flops(1.0, other.input_shape) < model.flops(1.0)  # fewer pixels, fewer FLOPs
    with pytest.raises(ValueError, match=r"starting with .* channels"):
        model.flops(1.0, (model.input_shape[0] + 1, *model.input_shape[1:]))
    with pytest.raises(ValueError, match="input_shape must be"):
        model.flops(1.0, model.input_shape[1:])
    with pytest.raises(ValueError, match=r"expects input of shape"):  # the forward pass stays strict
        model(torch.rand(1, *other.input_shape))


@pytest.mark.parametrize("name", ["resnet8", "resnext29_8x16d"])
@pytest.mark.parametrize("kind", ["forward", "pre"])
def test_hooks_on_depth_skipped_blocks_run_in_the_fast_path(name, kind):
    """A skipped block still runs (it passes its shortcut through), so a hook on it fires as in the reference."""
    torch.manual_seed(0)
    model = randomized_norms(tnn.create_model(name, strategy="depth"))
    x, u = batch(model, 1), model.levels[0]
    skipped = next(b for b in model.blocks if not b.active[0])
    fast_and_reference(model, x, u)  # builds the plan (where the family has one) without the hook
    calls = []
    register = skipped.register_forward_hook if kind == "forward" else skipped.register_forward_pre_hook
    handle = register(lambda *a: calls.append(1))
    fast, ref = fast_and_reference(model, x, u)
    handle.remove()
    assert len(calls) == 2  # the fast call and the reference call
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("widths", [(32, 16, 16), (16, 32, 16), (16, 16, 8)])
def test_resnet_widths_must_not_decrease(widths):
    with pytest.raises(ValueError, match=r"widths must be non-decreasing \(the parameter-free option-A shortcut"):
        tnn.create_model("resnet8", widths=widths)
    with pytest.raises(ValueError, match="non-decreasing"):
        tnn.models.resnet.CifarResNet(8, widths=widths)
    with pytest.raises(ValueError, match="positive ints"):
        tnn.models.resnet.CifarResNet(8, widths=(16, 0, 32))
    model = tnn.create_model("resnet8", widths=(16, 16, 32)).eval()  # equal neighbours are fine
    with torch.no_grad():
        assert model(batch(model, 1), 0.25).shape == (1, 10)


@pytest.mark.parametrize(
    "stats", [{"mean": (float("nan"),) * 3}, {"std": (0.2, float("nan"), 0.2)}, {"std": (float("inf"),) * 3}]
)
def test_non_finite_normalisation_is_refused(stats):
    with pytest.raises(ValueError, match=r"mean/std need 3 finite numbers each \(std > 0\)"):
        tnn.create_model("resnet8", **stats)


@pytest.mark.parametrize("compression", [0.0, -0.5, 1.5, float("nan"), 1e-4])
def test_densenet_compression_must_keep_channels(compression):
    with pytest.raises(ValueError, match="compression"):
        tnn.create_model("densenet_bc_52", compression=compression)


def test_densenet_compression_one_keeps_every_channel():
    model = tnn.create_model("densenet_bc_52", compression=1.0)
    assert model.stages[2].out_channels == model.stages[2].in_channels


def test_resnext_paths_follow_the_documented_rule_with_custom_levels():
    model = tnn.create_model("resnext29_8x16d", levels=(0.3, 1.0))
    assert model.blocks[0].conv2.active_groups == (4, 8)  # not ceil(0.3 * 8) = 3
    assert model.blocks[0].conv2.active_groups[0] == active_channels(0.3, 8, 2)
    doc = tnn.models.resnext.__doc__
    assert "active_channels(u, C, L)" in doc and "level 0.3 runs 4 paths" in doc


@pytest.mark.parametrize("name", ["vgg11", "vgg16", "resnet20", "densenet_bc_100"])
def test_documented_parameter_counts_match_the_model(name):
    from tnn.models._registry import _MODELS

    shown = re.search(r"\(([\d.]+) M parameters", _MODELS[name].__doc__).group(1)
    digits = len(shown.split(".")[1])
    assert float(shown) == round(tnn.create_model(name).params(1.0) / 1e6, digits)


def test_declared_torch_floor_has_device_type_autocast_queries():
    """ThrottleNet.check_input calls torch.is_autocast_enabled(device_type), new in torch 2.4."""
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    major, minor = map(int, re.search(r'"torch>=(\d+)\.(\d+)', pyproject).groups())
    assert (major, minor) >= (2, 4)
    assert "is_autocast_enabled(x.device.type)" in inspect.getsource(tnn.ThrottleNet.check_input)
