"""Cost profiles: the format and its validation, snapping, measuring on CPU, energy windows, the CLI."""

import copy
import json
import math
import time
from pathlib import Path

import pytest
import torch

import tnn
from tnn.cli import main
from tnn.profile import (
    DEFAULT_CPU_WATTS_PER_THREAD,
    PROFILE_VERSION,
    CostProfile,
    LevelCost,
    NvmlCounter,
    ProfileError,
    RaplCounter,
    format_table,
    measure_energy,
    profile_model,
)


@pytest.fixture(scope="module")
def tiny():
    return tnn.create_model("resnet8", num_classes=10)


@pytest.fixture(scope="module")
def measured(tiny):
    """A real (short) CPU measurement of resnet8 at batch 2, energy from the power model."""
    return profile_model(tiny, device="cpu", batch_size=2, repeats=3, warmup=1, energy="model", watts=12.0)


@pytest.fixture(scope="module")
def flops_profile(tiny):
    return CostProfile.from_flops(tiny)


@pytest.fixture
def profile_dict(flops_profile):
    return copy.deepcopy(flops_profile.to_dict())


def _write(tmp_path, data, name="p.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------------------------- format


def test_round_trip_keeps_every_field(measured, tmp_path):
    measured.extra["note"] = "kept"
    path = measured.save(tmp_path / "sub" / "p.json")
    loaded = CostProfile.load(path)
    assert loaded == measured
    assert loaded.to_dict() == measured.to_dict()
    data = json.loads(path.read_text())
    assert data["version"] == PROFILE_VERSION and data["note"] == "kept"
    assert set(data["levels"][0]) == {"u", "flops", "params", "latency_ms", "energy_mj", "energy_dynamic_mj"}
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary behind


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=PROFILE_VERSION + 1), "newer than this tnn reads"),
        (lambda d: d.pop("version"), "version"),
        (lambda d: d.update(version="1"), "version"),
        (lambda d: d.update(format="something-else"), "not a TNN cost profile"),
        (lambda d: d.pop("levels"), "missing ['levels']"),
        (lambda d: d.update(batch_size="1"), "batch_size"),
        (lambda d: d.update(batch_size=True), "batch_size"),
        (lambda d: d.update(in_channels=1), "in_channels"),
        (lambda d: d.update(device={"kind": "tpu", "name": "x"}), "device"),
        (lambda d: d.update(levels=[]), "non-empty"),
        (lambda d: d["levels"].reverse(), "above the previous level"),
        (lambda d: d["levels"].pop(), "last level must be u=1.0"),
        (lambda d: d["levels"][0].update(flops=1.5), "flops"),
        (lambda d: d["levels"][0].update(latency_ms="fast"), "latency_ms"),
        (lambda d: d["levels"][0]["latency_ms"].update(median=float("nan")), "finite"),
        (lambda d: d["levels"][0]["latency_ms"].update(p10=1e9), "p10 <= median <= p90"),
        (lambda d: d["levels"][0]["energy_mj"].update(source="guess"), "source"),
        (lambda d: d["levels"][0].update(surprise=1), "unknown keys"),
        (lambda d: d.pop("energy_model"), "energy_model"),
        (lambda d: d.update(threads="2"), "threads"),
        (lambda d: d.update(cuda_graphs="yes"), "cuda_graphs"),
        (lambda d: d.update(memory_format="nhwc"), "'memory_format' must be one of"),
        (lambda d: d.update(memory_format="channels_last_3d"), "channels_last_3d is for 5-D inputs"),
        (lambda d: d["levels"][0]["energy_dynamic_mj"].update(median=1e9, p90=1e9), "exceeds the total"),
    ],
)
def test_malformed_newer_or_wrongly_typed_profiles_are_refused(profile_dict, tmp_path, edit, message):
    edit(profile_dict)
    with pytest.raises(ProfileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        CostProfile.load(_write(tmp_path, profile_dict))


def test_memory_format_round_trips_and_an_old_profile_without_it_reads_as_nchw(profile_dict, tmp_path, capsys):
    assert profile_dict["memory_format"] == "contiguous_format"  # written by every new profile
    old = dict(profile_dict)
    del old["memory_format"]  # as written before the field existed: the same version, no bump
    loaded = CostProfile.load(_write(tmp_path, old, "old.json"))
    assert loaded.version == PROFILE_VERSION == 1
    assert loaded.memory_format == "contiguous_format" and "memory_format" not in loaded.extra
    shipped = Path(__file__).resolve().parents[1] / "results" / "profiles" / "cifar10-resnet20-cpu-b64.json"
    assert "memory_format" not in json.loads(shipped.read_text())  # a real file from before the field
    assert CostProfile.load(shipped).memory_format == "contiguous_format"
    cl = CostProfile.from_dict({**profile_dict, "memory_format": "channels_last"})
    again = CostProfile.load(cl.save(tmp_path / "cl.json"))
    assert again == cl and again.memory_format == "channels_last"
    assert json.loads((tmp_path / "cl.json").read_text())["memory_format"] == "channels_last"
    assert main(["profile-show", str(tmp_path / "old.json"), str(tmp_path / "cl.json")]) == 0
    old_text, cl_text = capsys.readouterr().out.split(f"{tmp_path / 'cl.json'}: ")
    assert "channels-last" not in old_text and "channels-last (NHWC) input;" in cl_text.splitlines()[0]


def test_non_json_non_object_and_missing_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ProfileError, match="not JSON"):
        CostProfile.load(tmp_path / "bad.json")
    with pytest.raises(ProfileError, match="JSON object"):
        CostProfile.load(_write(tmp_path, [1, 2]))
    with pytest.raises(FileNotFoundError, match="tnn profile"):
        CostProfile.load(tmp_path / "absent.json")
    assert issubclass(ProfileError, ValueError)  # so `tnn` turns it into a one-line error


def test_constructing_an_inconsistent_profile_fails(measured):
    import dataclasses

    with pytest.raises(ProfileError, match="levels"):
        dataclasses.replace(measured, levels=[lv.to_dict() for lv in measured.levels])
    with pytest.raises(ProfileError, match="last level"):
        dataclasses.replace(measured, levels=measured.levels[:-1])


# --------------------------------------------------------------------------------------------- queries


def test_snapping_follows_the_model(measured, tiny):
    for u in (1e-6, 0.125, 0.126, 0.3, 0.5, 0.51, 0.99, 1.0):
        assert measured.level_index(u) == tiny.level_index(u)
        assert measured.at(u).u == tiny.snap(u)
    for bad in (0.0, -0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError):
            measured.level_index(bad)


def test_cost_metrics_read_the_snapped_level(measured):
    lv = measured.levels[1]
    assert measured.cost(0.2, "energy") == lv.energy_mj["median"]
    assert measured.cost(0.2, "energy_dynamic") == lv.energy_dynamic_mj["median"]
    assert measured.cost(0.2, "latency") == lv.latency_ms["median"]
    assert measured.cost(0.2, "flops") == lv.flops
    with pytest.raises(ValueError, match="unknown cost metric"):
        measured.cost(0.2, "carbon")


def test_energy_dynamic_missing_is_a_clear_error(profile_dict, tmp_path):
    for lv in profile_dict["levels"]:
        lv["energy_dynamic_mj"] = None
    profile = CostProfile.load(_write(tmp_path, profile_dict))
    assert profile.cost(1.0, "energy") > 0
    with pytest.raises(ProfileError, match="above-idle"):
        profile.cost(1.0, "energy_dynamic")


def test_check_levels_names_both_lists(measured, tiny):
    measured.check_levels(tiny.levels)
    other = tnn.create_model("resnet8", num_levels=4)
    with pytest.raises(ProfileError) as err:
        measured.check_levels(other.levels)
    assert str(list(other.levels)) in str(err.value) and str(list(measured.levels_u)) in str(err.value)


def test_from_flops_is_labelled_a_model_and_follows_flops(tiny):
    profile = CostProfile.from_flops(tiny, batch_size=4, flops_per_s=2e9, joules_per_flop=3e-10)
    assert profile.latency_source == "model" and profile.energy_source == "model"
    assert "FLOPs model" in profile.energy_model and "nothing measured" in profile.device["name"]
    for lv in profile.levels:
        assert lv.flops == tiny.flops(lv.u) and lv.params == tiny.params(lv.u)
        assert lv.latency_ms["median"] == pytest.approx(4 * lv.flops / 2e9 * 1e3)
        assert lv.energy_mj["median"] == pytest.approx(lv.flops * 3e-10 * 1e3)
    assert profile.cost(0.1, "energy") / profile.cost(1, "energy") == pytest.approx(tiny.flops(0.125) / tiny.flops(1.0))


# --------------------------------------------------------------------------------------------- measuring


def test_cpu_profile_of_a_tiny_model_has_the_right_structure(measured, tiny):
    assert measured.model == "resnet8" and measured.device["kind"] == "cpu" and measured.batch_size == 2
    assert measured.device["name"].endswith(f", {torch.backends.cpu.get_cpu_capability()}")  # AVX2 vs AVX512 kernels
    assert measured.levels_u == tiny.levels and measured.input_shape == (3, 32, 32)
    assert measured.threads == torch.get_num_threads() and measured.repeats == 3
    flops = [lv.flops for lv in measured.levels]
    params = [lv.params for lv in measured.levels]
    assert flops == sorted(set(flops)) and params == sorted(set(params))  # strictly increasing
    assert flops == [tiny.flops(u) for u in tiny.levels]
    for lv in measured.levels:
        lat = lv.latency_ms
        assert 0 < lat["p10"] <= lat["median"] <= lat["p90"]
        # the power model, exactly as documented: W × ms / batch = mJ per input, labelled "model"
        assert lv.energy_mj["source"] == "model" and lv.energy_dynamic_mj["source"] == "model"
        assert lv.energy_mj["median"] == pytest.approx(12.0 * lat["median"] / 2)
    assert "12 W" in measured.energy_model and "assumed" in measured.energy_model
    assert measured.idle_power_w is None and len(measured.load_avg) == 3


@pytest.mark.parametrize(("name", "fmt"), [("resnet8", "channels_last"), ("c3d_small", "channels_last_3d")])
def test_channels_last_profile_times_channels_last_inputs_and_records_it(name, fmt):
    model = tnn.create_model(name)
    forward, calls = model.forward, []

    def spy(x, u=1.0, **kwargs):
        calls.append((u, x.is_contiguous(memory_format=getattr(torch, fmt)) and not x.is_contiguous()))
        return forward(x, u, **kwargs)

    model.forward = spy
    repeats, warmup = 2, 1
    profile = profile_model(model, batch_size=2, repeats=repeats, warmup=warmup, energy="model", channels_last=True)
    assert profile.memory_format == fmt and profile.to_dict()["memory_format"] == fmt
    for u in model.levels:  # the NCHW call only in the one equality check; every timed call channels-last
        assert calls.count((u, False)) == 1 and calls.count((u, True)) == 1 + warmup + repeats
    plain = profile_model(tnn.create_model(name), batch_size=2, repeats=1, warmup=0, energy="model")
    assert plain.memory_format == "contiguous_format"


def test_channels_last_profile_refuses_an_input_without_that_layout():
    model = tnn.create_model("resnet8")
    model.input_shape, model.arch = (3, 32), "sig1d"  # as if it took (N, C, L) signals
    with pytest.raises(ValueError, match=r"sig1d takes 3-D input.*drop --channels-last"):
        profile_model(model, repeats=1, warmup=0, energy="model", channels_last=True)


def test_default_power_model_scales_with_threads(tiny):
    profile = profile_model(tiny, repeats=1, warmup=0, energy="model", idle_watts=1.0)
    watts = DEFAULT_CPU_WATTS_PER_THREAD * torch.get_num_threads()
    lv = profile.levels[0]
    assert lv.energy_mj["median"] == pytest.approx(watts * lv.latency_ms["median"])
    assert lv.energy_dynamic_mj["median"] == pytest.approx((watts - 1.0) * lv.latency_ms["median"])
    assert "per thread" in profile.energy_model


def test_impossible_requests_are_clear_errors(tiny):
    with pytest.raises(ProfileError, match="NVML measures NVIDIA GPUs"):
        profile_model(tiny, energy="nvml", repeats=1)
    with pytest.raises(ValueError, match="CUDA graphs need"):
        profile_model(tiny, cuda_graphs=True, repeats=1)
    with pytest.raises(ValueError, match="batch_size"):
        profile_model(tiny, batch_size=0, repeats=1)
    with pytest.raises(ValueError, match="watts"):
        profile_model(tiny, energy="model", watts=5.0, idle_watts=6.0, repeats=1)
    with pytest.raises(ValueError, match="repeats"):
        profile_model(tiny, energy="model", repeats=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is absent")
def test_cuda_without_a_gpu_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="no CUDA GPU"):
        profile_model(tiny, device="cuda", repeats=1)


@pytest.mark.skipif(RaplCounter.available(), reason="this machine has readable RAPL")
def test_rapl_demanded_where_unreadable_is_a_clear_error(tiny):
    with pytest.raises(ProfileError, match="--energy model"):
        profile_model(tiny, energy="rapl", repeats=1)


def test_nvml_without_nvidia_ml_py_or_driver_is_a_clear_error():
    import ctypes.util

    try:
        import pynvml  # noqa: F401
    except ImportError:
        if ctypes.util.find_library("nvidia-ml"):
            pytest.skip("the NVIDIA driver's NVML library is here")
        with pytest.raises(ProfileError, match="nvidia-ml-py"):
            NvmlCounter(0)
    else:
        pytest.skip("nvidia-ml-py is installed here")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_profile_with_graphs_and_nvml():
    model = tnn.create_model("resnet8")
    profile = profile_model(
        model, device="cuda", batch_size=8, repeats=5, warmup=2, cuda_graphs=True, window_s=1.0, windows=1, idle_s=1.0
    )
    assert profile.device["kind"] == "cuda" and profile.cuda_graphs and profile.energy_source == "nvml"
    assert profile.idle_power_w > 0
    for lv in profile.levels:
        assert lv.latency_ms["median"] > 0 and lv.energy_mj["median"] >= lv.energy_dynamic_mj["median"] >= 0


# --------------------------------------------------------------------------------------------- energy windows


class FakeDevice:
    """A fake clock and power draw with an energy counter (mJ) that moves only every ``tick`` s, like NVML's."""

    source = "nvml"

    def __init__(self, tick: float = 0.125, idle_w: float = 40.0):
        self.t = self.exact_mj = self.counter_mj = 0.0
        self.tick, self.next_tick, self.idle_w = tick, tick, idle_w
        self.log: list[object] = []

    def advance(self, dt: float, watts: float) -> None:
        while dt > 0 and self.t + dt >= self.next_tick:
            part = self.next_tick - self.t
            self.exact_mj += watts * part * 1e3
            self.t, dt = self.next_tick, dt - part
            self.counter_mj = self.exact_mj
            self.next_tick += self.tick
        self.exact_mj += watts * dt * 1e3
        self.t += dt

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.advance(s, self.idle_w)

    def read_mj(self) -> float:
        return self.counter_mj

    def run(self, key: object, dt: float, watts: float):
        def call() -> None:
            self.log.append(key)
            self.advance(dt, watts)

        return call


def test_energy_windows_and_idle_subtraction_are_exact_on_aligned_ticks():
    dev = FakeDevice(tick=0.125, idle_w=40.0)
    # level -> (seconds per call, watts while running); binary fractions keep the arithmetic exact
    spec = {0.25: (1 / 64, 90.0), 0.5: (1 / 32, 150.0), 1.0: (1 / 16, 250.0)}
    runs = {u: dev.run(u, dt, w) for u, (dt, w) in spec.items()}
    m = measure_energy(
        runs, dev, batch_size=4, window_s=0.5, windows=3, idle_s=1.0, clock=dev.clock, sleep=dev.sleep, poll_s=1 / 128
    )
    assert m.idle_power_w == pytest.approx(40.0, rel=1e-12)
    for u, (dt, w) in spec.items():
        assert len(m.total_mj[u]) == 3
        assert m.total_mj[u] == pytest.approx([w * dt * 1e3 / 4] * 3, rel=1e-12)
        assert m.dynamic_mj[u] == pytest.approx([(w - 40.0) * dt * 1e3 / 4] * 3, rel=1e-12)
        assert all(s >= 0.5 for s in m.seconds[u])  # windows are at least window_s long
        assert all(c * dt == pytest.approx(s) for c, s in zip(m.calls[u], m.seconds[u], strict=True))


def test_energy_windows_tolerate_unaligned_ticks_and_rotate_levels():
    dev = FakeDevice(tick=0.1, idle_w=30.0)
    spec = {"a": (0.013, 80.0), "b": (0.021, 120.0), "c": (0.034, 200.0)}
    runs = {k: dev.run(k, dt, w) for k, (dt, w) in spec.items()}
    m = measure_energy(runs, dev, batch_size=1, window_s=1.0, windows=3, idle_s=1.0, clock=dev.clock, sleep=dev.sleep)
    assert m.idle_power_w == pytest.approx(30.0, rel=0.02)
    for k, (dt, w) in spec.items():
        # a window may be off by at most one call at each edge: dt / window of the energy
        assert m.total_mj[k] == pytest.approx([w * dt * 1e3] * 3, rel=2 * dt / 1.0)
        assert m.dynamic_mj[k] == pytest.approx([(w - 30.0) * dt * 1e3] * 3, rel=2 * dt * w / (w - 30) + 0.02)
    order = [k for i, k in enumerate(dev.log) if i == 0 or dev.log[i - 1] != k]
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # interleaved, rotating each round


def test_a_counter_that_never_moves_is_an_error():
    dev = FakeDevice()
    dev.read_mj = lambda: 0.0
    with pytest.raises(ProfileError, match="did not move"):
        measure_energy({1.0: dev.run(1.0, 0.01, 50)}, dev, batch_size=1, clock=dev.clock, sleep=dev.sleep)


class RealClockCounter:
    """Constant power on the real clock, counter updated every 10 ms: for the profile_model path."""

    source = "rapl"

    def __init__(self, watts: float = 50.0):
        self.watts, self.start = watts, time.perf_counter()

    def read_mj(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.watts * math.floor(elapsed / 0.01) * 0.01 * 1e3


def test_profile_model_uses_a_given_counter_and_records_the_windows(tiny):
    profile = profile_model(
        tiny, repeats=2, warmup=1, counter=RealClockCounter(50.0), window_s=0.03, windows=1, idle_s=0.03
    )
    assert profile.energy_source == "rapl" and profile.energy_model is None
    # exactness of the windows is checked on the fake clock above; on the real clock a busy machine
    # may delay the polling, so only the plumbing is checked here
    assert profile.idle_power_w > 0 and profile.idle_power_w == profile.to_dict()["idle_power_w"]
    assert profile.window_s == 0.03 and profile.windows == 1
    for lv in profile.levels:
        assert lv.energy_mj["median"] > 0 and lv.energy_dynamic_mj["source"] == "rapl"


def test_rapl_counter_sums_packages_and_unwraps(tmp_path):
    def domain(name, uj, max_uj=1000):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        (d / "energy_uj").write_text(f"{uj}\n")
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")

    domain("intel-rapl:0", 900)
    domain("intel-rapl:1", 100)
    domain("intel-rapl:0:0", 5)  # a sub-domain (core), already inside package 0: ignored
    counter = RaplCounter(tmp_path)
    assert counter.read_mj() == 0.0
    domain("intel-rapl:0", 50)  # wrapped: 900 -> 1000 -> 0 -> 50 = 150 uJ
    domain("intel-rapl:1", 300)  # +200 uJ
    domain("intel-rapl:0:0", 999)
    assert counter.read_mj() == pytest.approx(0.35)
    assert RaplCounter.available(tmp_path) and not RaplCounter.available(tmp_path / "none")
    (tmp_path / "intel-rapl:1" / "energy_uj").unlink()
    with pytest.raises(ProfileError, match="not readable"):
        RaplCounter(tmp_path)


# --------------------------------------------------------------------------------------------- CLI, table, plot


def test_format_table_has_ratios_and_source(measured):
    table = format_table(measured)
    rows = [line for line in table.splitlines() if line.startswith("| 0.") or line.startswith("| 1.")]
    assert len(rows) == len(measured.levels) and "| **1.000** |" in rows[-1] and rows[0].endswith("| model |")
    full = measured.levels[-1]
    for row, lv in zip(rows, measured.levels, strict=True):  # each ratio is the level's median over u=1's
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == f"{lv.u:.3f}"
        assert cells[4] == f"**{lv.latency_ms['median'] / full.latency_ms['median']:.3f}**"
        assert cells[6] == f"**{lv.energy_mj['median'] / full.energy_mj['median']:.3f}**"


def test_cli_profiles_a_registry_model_end_to_end(tmp_path, capsys):
    out = tmp_path / "r8.json"
    args = ["profile", "resnet8", "--batch-size", "2", "--repeats", "2", "--warmup", "1", "--energy", "model"]
    assert main([*args, "--cpu-watts", "7", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| 0.125 |" in text and "energy model:" in text and f"wrote {out}" in text
    profile = CostProfile.load(out)
    assert profile.batch_size == 2 and profile.checkpoint is None and "--cpu-watts 7" in profile.command
    assert "7 W" in profile.energy_model


def test_cli_profiles_with_channels_last_inputs(tmp_path, capsys):
    out = tmp_path / "cl.json"
    args = ["profile", "resnet8", "--batch-size", "2", "--repeats", "2", "--warmup", "1", "--energy", "model"]
    assert main([*args, "--channels-last", "--out", str(out)]) == 0
    assert "channels-last (NHWC) input;" in capsys.readouterr().out
    profile = CostProfile.load(out)
    assert profile.memory_format == "channels_last" and "--channels-last" in profile.command
    assert main(["profile-show", str(out)]) == 0
    assert "channels-last (NHWC) input" in capsys.readouterr().out


def test_cli_profiles_a_checkpoint_and_records_its_hash(tmp_path, capsys):
    import hashlib

    ckpt = tmp_path / "m.pt"
    tnn.save_checkpoint(tnn.create_model("resnet8", in_channels=1), ckpt, dataset="fashion_mnist")
    out = tmp_path / "p.json"
    assert main(["profile", str(ckpt), "--repeats", "1", "--warmup", "0", "--energy", "model", "--out", str(out)]) == 0
    profile = CostProfile.load(out)
    assert profile.in_channels == 1 and profile.input_shape == (1, 32, 32)
    assert profile.checkpoint == {
        "path": str(ckpt),
        "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
        "dataset": "fashion_mnist",
    }


def test_cli_show_prints_the_table_of_a_saved_profile(measured, tmp_path, capsys):
    path = measured.save(tmp_path / "p.json")
    assert main(["profile-show", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: resnet8 on cpu") and format_table(measured) in out
    (tmp_path / "bad.json").write_text("[]")
    assert main(["profile-show", str(tmp_path / "bad.json")]) == 2
    assert "JSON object" in capsys.readouterr().err


def test_cli_unknown_target_is_a_one_line_error(capsys):
    assert main(["profile", "resnet9000", "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert "neither a checkpoint file nor a registered model" in err and "Traceback" not in err


def test_profile_plot_writes_pngs(measured, flops_profile, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    a = measured.save(tmp_path / "a.json")
    b = flops_profile.save(tmp_path / "b.json")
    assert main(["profile-plot", str(a), str(b), "--out", str(tmp_path / "figs")]) == 0
    pngs = sorted((tmp_path / "figs").glob("*.png"))
    assert [p.name for p in pngs] == ["a.png", "b.png", "profiles-cpu.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "wrote" in capsys.readouterr().out


def test_level_cost_is_frozen():
    lv = LevelCost(1.0, 1, 1, {"median": 1.0, "p10": 1.0, "p90": 1.0}, {"median": 1, "p10": 1, "p90": 1})
    with pytest.raises(AttributeError):
        lv.u = 0.5


def test_check_model_refuses_a_profile_of_another_model(tiny):
    CostProfile.from_flops(tiny).check_model(tiny)
    for other, what in (
        (tnn.create_model("vgg11", width_mult=0.05), "model vgg11 ≠ resnet8"),
        (tnn.create_model("resnet8", in_channels=1, input_size=28), "input 1×28×28 ≠ 3×32×32"),
        (tnn.create_model("resnet8", num_classes=7), "classes 7 ≠ 10"),
        (tnn.create_model("resnet8", num_levels=4), r"levels \[0.25, 0.5, 0.75, 1.0\] ≠ \[0.125"),
    ):
        with pytest.raises(ProfileError, match=what):
            CostProfile.from_flops(other).check_model(tiny)
    wider = CostProfile.from_flops(tnn.create_model("resnet8", widths=(16, 32, 128)))  # same name, shape, levels
    with pytest.raises(ProfileError, match=r"p.json was measured .* m.pt .*FLOPs at u=0.125 .*`tnn profile m.pt"):
        wider.check_model(tiny, profile_name="p.json", checkpoint="m.pt")


def test_profile_plot_ratio_axes_show_levels_that_cost_more_than_u1(profile_dict, tmp_path, monkeypatch):
    """A measured level can cost more than u=1 (cuDNN on odd widths): the ratio axes must reach it, also
    when it belongs to the second profile drawn on shared axes."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    slow = copy.deepcopy(profile_dict)
    top = slow["levels"][-1]["latency_ms"]["median"]
    for q in ("median", "p10", "p90"):
        slow["levels"][-2]["latency_ms"][q] = 1.5 * top  # the level below u=1 takes 1.5× its time
    a, b = _write(tmp_path, profile_dict, "a.json"), _write(tmp_path, slow, "b.json")
    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    assert main(["profile-plot", str(a), str(b), "--out", str(tmp_path / "figs")]) == 0
    combined = figures[-1]  # the figure of every profile together is written last
    latency_ratio = combined.axes[1]
    assert latency_ratio.get_ylim()[0] == 0 and latency_ratio.get_ylim()[1] >= 1.5
