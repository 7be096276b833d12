"""The level → width/depth rules every throttled layer shares."""

import math

import pytest
import torch

from tnn.layers import (
    CostCounter,
    LevelBatchNorm,
    Setting,
    ThrottleConv,
    active_channels,
    active_components,
    channel_multiple,
    conv_bn,
    fold_conv_bn,
    make_levels,
    snap_level,
)


@pytest.mark.parametrize("total", [1, 3, 8, 10, 16, 24, 32, 64, 100, 512])
@pytest.mark.parametrize("num_levels", [1, 4, 8, 10])
def test_channel_counts_nested_monotone_and_full_at_one(total, num_levels):
    levels = make_levels(num_levels)
    counts = [active_channels(u, total, num_levels) for u in levels]
    assert counts[-1] == total
    assert all(1 <= c <= total for c in counts)
    assert counts == sorted(counts)  # monotone; prefixes of a sorted list are nested
    m = channel_multiple(total, num_levels)
    assert all(c % m == 0 or c == total for c in counts)
    assert all(c >= math.ceil(u * total) for u, c in zip(levels, counts, strict=False))  # never below u·total
    if total >= num_levels:
        assert len(set(counts)) == num_levels  # every level its own width


def test_wide_layers_round_to_multiples_of_eight():
    assert channel_multiple(64, 8) == 8
    assert [active_channels(u, 64, 8) for u in make_levels(8)] == [8, 16, 24, 32, 40, 48, 56, 64]
    assert [active_channels(u, 16, 8) for u in make_levels(8)] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert active_channels(0.5, 100, 8) == 56  # 50 rounded up to a multiple of 8


@pytest.mark.parametrize("u, index", [(1e-6, 0), (0.125, 0), (0.126, 1), (0.3, 2), (0.5, 3), (0.99, 7), (1, 7)])
def test_snap_level_rounds_up(u, index):
    assert snap_level(u, make_levels(8)) == index


@pytest.mark.parametrize("u", [0, -0.1, 1.0001, float("nan"), float("inf"), True, "0.5", None, torch.ones(2)])
def test_snap_level_rejects_invalid_u(u):
    with pytest.raises(ValueError, match="u must be"):
        snap_level(u, make_levels(8))


def test_snap_level_accepts_numpy_and_tensor_scalars():
    import numpy as np

    assert snap_level(np.float32(0.5), make_levels(8)) == 3
    assert snap_level(torch.tensor(0.25), make_levels(8)) == 1


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_make_levels_rejects_bad_counts(bad):
    with pytest.raises(ValueError):
        make_levels(bad)


def test_active_components_nested_and_distinct():
    levels = make_levels(8)
    gates = active_components(levels, 9)
    per_level = [sum(g[i] for g in gates) for i in range(8)]
    assert per_level == sorted(per_level) and len(set(per_level)) == 8 and per_level[-1] == 9
    for i in range(7):  # nested: whatever runs at a level runs at every higher level
        assert all(g[i + 1] for g in gates if g[i])
    assert all(g[0] for g in gates[:1])  # the first component always runs


def test_conv_slices_weights_and_counts_flops():
    conv = ThrottleConv(2, 16, 32, 3, make_levels(4), padding=1)
    x = torch.rand(2, 8, 5, 5)  # 8 active input channels
    counter = CostCounter()
    y = conv(x, Setting(level=1, counter=counter))
    assert y.shape == (2, 16, 5, 5)
    ref = torch.nn.functional.conv2d(x, conv.weight[:16, :8], padding=1)
    torch.testing.assert_close(y, ref)
    assert counter.flops == 2 * 16 * 25 * 8 * 9
    assert counter.params == 16 * 8 * 9


def test_conv_rejects_too_many_input_channels():
    conv = ThrottleConv(2, 4, 8, 3, make_levels(2))
    with pytest.raises(ValueError, match="input channels"):
        conv(torch.rand(1, 5, 4, 4), Setting(level=1))


def test_level_batchnorm_keeps_separate_statistics():
    bn = LevelBatchNorm((4, 8))
    bn.train()
    bn(torch.randn(16, 4, 3, 3) * 5 + 3, Setting(level=0))
    assert not torch.allclose(bn.norms[0].running_mean, torch.zeros(4))
    torch.testing.assert_close(bn.norms[1].running_mean, torch.zeros(8))  # level 1 untouched
    with pytest.raises(ValueError, match="expected 8"):
        bn(torch.randn(2, 4, 3, 3), Setting(level=1))


@pytest.mark.parametrize("dim, groups, bias", [(2, 1, False), (2, 4, True), (3, 1, True)])
def test_conv_bn_fast_path_folds_the_norm_and_equals_the_two_layers(dim, groups, bias):
    torch.manual_seed(0)
    levels = make_levels(4)
    conv = ThrottleConv(dim, 8, 16, 3, levels, padding=1, groups=groups, bias=bias)
    bn = LevelBatchNorm(conv.out_counts, dim=dim).eval()
    with torch.no_grad():
        for norm in bn.norms:
            norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2)
            norm.weight.uniform_(0.5, 2), norm.bias.uniform_(-1, 1)
    for level in range(4):
        in_ch = 8 if groups == 1 else conv.active_groups[level] * 2
        x = torch.rand(2, in_ch, *(5,) * dim)
        ref = torch.relu(bn(conv(x, Setting(level)), Setting(level)))
        with torch.no_grad():
            fast = conv_bn(conv, bn, x, Setting(level, fast=True), relu=True)
        torch.testing.assert_close(fast, ref.detach(), rtol=1e-5, atol=1e-5)
        entry = fold_conv_bn(conv, bn, level, in_ch)
        assert entry is conv._folded[(level, in_ch)] and entry.args[0].is_contiguous()
        assert entry.args[0].shape[0] == conv.out_counts[level]
    bn.train()  # batch statistics cannot be folded
    assert fold_conv_bn(conv, bn, 3, x.shape[1]) is None
