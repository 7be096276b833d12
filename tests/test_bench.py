"""The latency benchmark's channels-last variant: what it times, its refusals, its equality check."""

import pytest
import torch

import tnn
from tnn import bench


def _is_channels_last(x: torch.Tensor) -> bool:
    """Channels-last strides (NHWC / NDHWC) and not also NCHW ones (which a C=1 or 1×1 input has both)."""
    fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
    return x.is_contiguous(memory_format=fmt) and not x.is_contiguous()


def _spy(model, calls, *, wrong_channels_last=False):
    """Wrap ``model.forward`` to record (u, masked, channels-last input?) of every call."""
    forward = model.forward

    def spy(x, u=1.0, **kwargs):
        cl = _is_channels_last(x)
        calls.append((u, kwargs.get("masked", False), cl))
        out = forward(x, u, **kwargs)
        return out + 1.0 if cl and wrong_channels_last else out

    model.forward = spy
    return model


def _patch_models(monkeypatch, calls, **spy_kwargs):
    real = bench.create_model
    monkeypatch.setattr(bench, "create_model", lambda name, **kw: _spy(real(name, **kw), calls, **spy_kwargs))


@pytest.mark.parametrize("name", ["resnet8", "c3d_small"])  # 4-D images (NHWC) and 5-D clips (NDHWC)
def test_channels_last_timings_come_from_channels_last_calls(monkeypatch, name):
    calls: list = []
    _patch_models(monkeypatch, calls)

    def fake_ms(fn):  # a clock that reads 5 ms for a channels-last call, 1 ms for an NCHW one
        fn()
        return 5.0 if calls[-1][2] else 1.0

    monkeypatch.setattr(bench, "_wall_ms", fake_ms)
    repeats, warmup = 2, 1
    rows = bench.bench_latency([name], [2], repeats=repeats, warmup=warmup, masked=False, channels_last=True)
    levels = tnn.create_model(name).levels
    for u in levels:  # one equality check (both layouts), then warm-up and timed calls of each variant
        assert sum(1 for c in calls if c == (u, False, True)) == 1 + warmup + repeats
        assert sum(1 for c in calls if c == (u, False, False)) == 1 + warmup + repeats
    assert [r.u for r in rows] == list(levels)
    for r in rows:  # the channels-last columns hold the channels-last calls' times, the NCHW ones not
        assert r.channels_last_p10_ms == r.channels_last_median_ms == r.channels_last_p90_ms == 5.0
        assert r.median_ms == 1.0
        assert r.channels_last_speedup == pytest.approx(0.2)


def test_channels_last_columns_are_ratios_of_the_medians():
    rows = bench.bench_latency(["resnet8"], [2], repeats=3, warmup=0, masked=True, channels_last=True)
    cl_full = next(r.channels_last_median_ms for r in rows if r.u == 1.0)
    full = next(r.median_ms for r in rows if r.u == 1.0)
    for r in rows:
        assert r.channels_last_p10_ms <= r.channels_last_median_ms <= r.channels_last_p90_ms
        assert r.channels_last_ratio == pytest.approx(r.channels_last_median_ms / cl_full, rel=1e-12)
        assert r.channels_last_speedup == pytest.approx(r.median_ms / r.channels_last_median_ms, rel=1e-12)
        assert r.ratio == pytest.approx(r.median_ms / full, rel=1e-12)  # the NCHW ratio is unchanged
        assert r.masked_median_ms > 0
    table = bench.format_table(rows)
    assert "| channels-last ms | channels-last p10–p90 ms | channels-last ratio | channels-last speed-up |" in table
    for r, line in zip(rows, table.splitlines()[2:], strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[-4:] == [
            f"{r.channels_last_median_ms:.3f}",
            f"{r.channels_last_p10_ms:.3f}–{r.channels_last_p90_ms:.3f}",
            f"{r.channels_last_ratio:.3f}",
            f"{r.channels_last_speedup:.2f}×",
        ]


def test_without_channels_last_nothing_is_measured_or_shown(monkeypatch):
    calls: list = []
    _patch_models(monkeypatch, calls)
    rows = bench.bench_latency(["resnet8"], [2], repeats=1, warmup=0, masked=False)
    assert calls and not any(cl for _, _, cl in calls)
    assert all(
        r.channels_last_median_ms is r.channels_last_ratio is r.channels_last_speedup is r.channels_last_p10_ms is None
        for r in rows
    )
    assert "channels-last" not in bench.format_table(rows)
    assert '"channels_last_ratio": null' in bench.rows_to_json(rows)


def test_channels_last_refuses_other_inputs_before_timing(monkeypatch):
    with pytest.raises(ValueError, match=r"sig1d takes 3-D input.*drop --channels-last for sig1d"):
        bench.to_channels_last(torch.rand(2, 3, 8), "sig1d")
    assert bench.channels_last_format(4) is torch.channels_last
    assert bench.channels_last_format(5) is torch.channels_last_3d

    def build(name, **kw):  # resnet8 as it is; "sig1d" a model taking (N, C, L) signals
        model = tnn.create_model("resnet8")
        if name == "sig1d":
            model.input_shape, model.arch = (3, 32), name
        return model

    monkeypatch.setattr(bench, "create_model", build)
    monkeypatch.setattr(bench, "time_levels", lambda *a, **k: pytest.fail("timed before refusing"))
    with pytest.raises(ValueError, match="sig1d takes 3-D input"):  # before timing the valid model first
        bench.bench_latency(["resnet8", "sig1d"], [2], repeats=1, warmup=0, channels_last=True)


def test_a_channels_last_output_that_differs_fails_loudly_before_timing(monkeypatch):
    calls: list = []
    _patch_models(monkeypatch, calls, wrong_channels_last=True)
    monkeypatch.setattr(bench, "time_levels", lambda *a, **k: pytest.fail("timed a layout with another answer"))
    with pytest.raises(RuntimeError, match=r"resnet8 at u=0.125: the output for a channels-last input differs"):
        bench.bench_latency(["resnet8"], [2], repeats=1, warmup=0, channels_last=True)
    model = tnn.create_model("resnet8").eval()
    x = torch.rand(2, *model.input_shape)
    bench.check_channels_last(model, x, bench.to_channels_last(x, model.arch))  # the real model agrees
