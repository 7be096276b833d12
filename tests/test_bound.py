"""agents.bound: the best confidence cascade within a budget, against exhaustive search."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from agents.bound import Cascade, Router, _grids, _route, _scores, best_cascade, best_router, cascade_bounds, markdown


def _table(n: int, levels: int, seed: int) -> SimpleNamespace:
    """Inputs of random difficulty: level j is right iff difficulty < its threshold; confidence falls with
    difficulty, noisily (so thresholds matter and no cascade is perfect)."""
    rng = np.random.default_rng(seed)
    d = rng.random(n)
    correct = d[:, None] < np.linspace(0.4, 0.95, levels)[None, :]
    conf = np.clip(1.0 - d[:, None] + 0.3 * rng.standard_normal((n, levels)), 0.0, 1.0)
    return SimpleNamespace(num_samples=n, confidence=conf, correct=correct, levels=np.linspace(0.25, 1.0, levels))


COSTS = np.array([0.1, 0.3, 0.6, 1.0])


def test_broadcast_scores_equal_running_each_cascade():
    table = _table(200, 4, 0)
    for stages in [(0,), (1, 3), (0, 2, 3), (0, 1, 2, 3)]:
        grids = _grids(table, stages, 6)
        acc, cost = _scores(table, COSTS, stages, grids)
        for idx in itertools.product(*(range(len(g)) for g in grids)):
            taus = tuple(float(g[i]) for g, i in zip(grids, idx, strict=True))
            right, spent = Cascade(stages, taus).run(table, COSTS)
            assert acc[idx] == pytest.approx(right.mean()) and cost[idx] == pytest.approx(spent.mean())


@pytest.mark.parametrize("budget", [0.1, 0.35, 0.5, 0.8, 1.0, 2.0])
def test_best_cascade_is_the_exhaustive_optimum(budget):
    table = _table(60, 4, 1)
    best = (-1.0, 0.0)
    for k in (1, 2, 3):
        for stages in itertools.combinations(range(4), k):
            grids = _grids(table, stages, 5)
            for taus in itertools.product(*grids):
                right, spent = Cascade(stages, tuple(map(float, taus))).run(table, COSTS)
                if spent.mean() <= budget + 1e-12:
                    best = max(best, (right.mean(), -spent.mean()))
    found = best_cascade(table, COSTS, budget, max_stages=3, grid=5)
    right, spent = found.run(table, COSTS)
    assert spent.mean() <= budget + 1e-12
    assert (right.mean(), -spent.mean()) == pytest.approx(best)
    assert len(found.stages) <= 3


def test_no_cascade_below_the_cheapest_level_and_bad_arguments():
    table = _table(50, 4, 2)
    assert best_cascade(table, COSTS, 0.05) is None
    with pytest.raises(ValueError, match="max_stages"):
        best_cascade(table, COSTS, 0.5, max_stages=0)
    with pytest.raises(ValueError, match="increasing"):
        Cascade((2, 1), (0.5,))
    with pytest.raises(ValueError, match="thresholds"):
        Cascade((0, 1), ())


@pytest.mark.parametrize("costs", [COSTS, np.array([0.0, 0.0, 0.53, 1.0])], ids=["rising", "free-levels"])
@pytest.mark.parametrize("budget", [0.15, 0.3, 0.5, 0.75, 1.2])
def test_router_greedy_and_lp_bracket_the_exhaustive_optimum(budget, costs):
    """Per preview level: greedy ≤ best deterministic band assignment ≤ LP value, all within budget —
    also where a level above the preview costs nothing more than it."""
    table = _table(80, 4, 5)
    for preview in range(3):
        found = _route(table, costs, preview, 3, budget)
        if found is None:
            assert costs[preview] > budget
            continue
        router, lp = found
        right, spent = router.run(table, costs)
        assert spent.mean() <= budget + 1e-12
        best = -1.0
        for levels in itertools.product(range(preview, 4), repeat=len(router.edges) + 1):
            r, c = Router(preview, router.edges, levels).run(table, costs)
            if c.mean() <= budget + 1e-12:
                best = max(best, r.mean())
        assert right.mean() <= best + 1e-12 <= lp + 2e-12
    chosen, lp_best = best_router(table, costs, budget, bands=3)
    if chosen is not None:
        assert chosen.run(table, costs)[1].mean() <= budget + 1e-12 and chosen.run(table, costs)[0].mean() <= lp_best


@pytest.mark.parametrize("costs", [COSTS, np.array([0.0, 0.0, 0.53, 1.0])], ids=["rising", "free-levels"])
@pytest.mark.parametrize("budget", [0.3, 0.45, 0.6, 0.75, 0.9])
def test_router_leaves_no_single_band_upgrade_that_fits(budget, costs):
    """After the hull walk stops, what budget is left goes to off-hull options: no single band of the
    greedy router can switch to a level that is more accurate and still fits the budget."""
    for seed in range(4):
        table = _table(120, 4, 20 + seed)
        for preview in range(3):
            found = _route(table, costs, preview, 4, budget)
            if found is None:
                continue
            router = found[0]
            right = router.run(table, costs)[0]
            for b in range(len(router.levels)):
                for level in range(preview, 4):
                    levels = list(router.levels)
                    levels[b] = level
                    r, c = Router(preview, router.edges, tuple(levels)).run(table, costs)
                    better = c.mean() <= budget + 1e-12 and r.mean() > right.mean() + 1e-12
                    assert not better, (seed, preview, b, level)


def test_router_runs_its_bands():
    table = _table(50, 4, 6)
    router = Router(1, (0.5,), (3, 1))  # bands rise with confidence: below 0.5 run level 3, else keep the preview
    right, cost = router.run(table, COSTS)
    sure = table.confidence[:, 1] >= 0.5
    assert np.array_equal(right, np.where(sure, table.correct[:, 1], table.correct[:, 3]))
    assert np.allclose(cost, np.where(sure, COSTS[1], COSTS[1] + COSTS[3]))
    with pytest.raises(ValueError, match="bands"):
        Router(1, (0.5,), (1,))


def test_bounds_val_choice_ceiling_and_static():
    val, test = _table(400, 4, 3), _table(400, 4, 4)
    budgets = [0.2, 0.4, 0.7, 1.0]
    rows = cascade_bounds(val, test, COSTS * 5.0, budgets, grid=11, bands=5, ceiling_bands=10)  # any cost unit
    test_acc = 100 * test.correct.mean(axis=0)
    ceilings = []
    for budget, row in zip(budgets, rows, strict=True):
        assert row["u1_accuracy"] == pytest.approx(test_acc[-1])
        fits = budget >= COSTS
        assert row["static"]["accuracy"] == pytest.approx(test_acc[fits].max())
        for family in ("cascade", "router"):
            assert row[family]["val_cost"] <= budget + 1e-12  # chosen within budget on val
            assert 0.0 <= row[family]["accuracy"] <= 100.0
        c = row["ceiling"]
        assert c["accuracy"] >= row["static"]["accuracy"] - 1e-9  # a single level is a one-stage cascade
        if row["cascade"]["cost"] <= budget:  # the val choice, where it fits on test, is under the ceiling
            assert c["accuracy"] >= row["cascade"]["accuracy"] - 1e-9
        ceilings.append(c["accuracy"])
    assert ceilings == sorted(ceilings)  # more budget never hurts
    same = cascade_bounds(val, val, COSTS, budgets, grid=11, bands=5, ceiling_bands=5)  # chosen where measured
    for row in same:
        assert row["ceiling"]["accuracy"] >= max(row["cascade"]["accuracy"], row["router"]["accuracy"]) - 1e-9
    text = markdown(rows, drop=0.5)
    assert text.count("\n| ") == len(budgets) and "Target" in text
    with pytest.raises(ValueError, match="positive u=1 cost"):
        cascade_bounds(val, test, np.array([0.1, 0.2, 0.3, 0.0]), [0.5])
    with pytest.raises(ValueError, match="budgets"):
        cascade_bounds(val, test, COSTS, [float("nan")])
