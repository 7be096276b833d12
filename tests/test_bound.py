"""agents.bound: the best confidence cascade within a budget, against exhaustive search."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from agents.bound import Cascade, _grids, _scores, best_cascade, cascade_bounds, markdown


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


def test_bounds_val_choice_ceiling_and_static():
    val, test = _table(400, 4, 3), _table(400, 4, 4)
    budgets = [0.2, 0.4, 0.7, 1.0]
    rows = cascade_bounds(val, test, COSTS * 5.0, budgets, grid=11)  # costs in any unit: divided by u=1's
    test_acc = 100 * test.correct.mean(axis=0)
    ceilings, within = [], 0
    for budget, row in zip(budgets, rows, strict=True):
        assert row["u1_accuracy"] == pytest.approx(test_acc[-1])
        fits = budget >= COSTS
        assert row["static"]["accuracy"] == pytest.approx(test_acc[fits].max())
        v, t = row["val_tuned"], row["test_tuned"]
        assert v["val_cost"] <= budget + 1e-12 and t["cost"] <= budget + 1e-12
        if v["cost"] <= budget:  # on test the val choice may cost more than the budget
            within += 1
            assert t["accuracy"] >= v["accuracy"] - 1e-9  # chosen on test: a ceiling for the val choice
        assert t["accuracy"] >= row["static"]["accuracy"] - 1e-9  # a single level is a one-stage cascade
        ceilings.append(t["accuracy"])
    assert ceilings == sorted(ceilings)  # more budget never hurts
    assert within >= 1  # the ceiling check above ran
    same = cascade_bounds(val, val, COSTS, budgets, grid=11)  # chosen on the table it is measured on
    for row in same:
        assert row["val_tuned"]["accuracy"] == pytest.approx(row["test_tuned"]["accuracy"])
    text = markdown(rows, drop=0.5)
    assert text.count("\n| ") == len(budgets) and "Target" in text
    with pytest.raises(ValueError, match="positive u=1 cost"):
        cascade_bounds(val, test, np.array([0.1, 0.2, 0.3, 0.0]), [0.5])
