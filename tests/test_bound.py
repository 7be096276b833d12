"""agents.bound: the best confidence cascade within a budget, against exhaustive search."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from agents.bound import (
    Cascade,
    Router,
    _grids,
    _logistic,
    _route,
    _scores,
    auc,
    best_cascade,
    best_router,
    cascade_bounds,
    fit_probe,
    fit_probes,
    markdown,
)


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


class _FeatureTable(SimpleNamespace):
    """A toy table with per-level previews: ``features[level]`` is an (N, F) array."""

    def preview_features(self, level: int) -> np.ndarray:
        return self.features[level]

    @property
    def preview_levels(self) -> int:
        return len(self.features)


def _informative(n: int, seed: int, signal: float) -> _FeatureTable:
    """Like ``_table``, but the confidence is pure noise; feature 0 of every preview carries the
    difficulty (``signal``: its weight against unit noise), the other three are noise."""
    base = _table(n, 4, seed)
    rng = np.random.default_rng(seed + 100)
    d = rng.random(n)
    correct = d[:, None] < np.linspace(0.4, 0.95, 4)[None, :]
    features = []
    for _ in range(3):
        f = rng.standard_normal((n, 4))
        f[:, 0] += signal * (0.5 - d) * 4
        features.append(f)
    return _FeatureTable(
        num_samples=n, confidence=rng.random((n, 4)), correct=correct, levels=base.levels, features=features
    )


def test_logistic_solves_its_penalised_problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5))
    y = (x @ np.array([1.5, -2.0, 0.0, 0.5, 0.0]) + 0.7 * rng.standard_normal(300) > 0).astype(float)
    for l2 in (0.01, 1.0, 100.0):
        w, b = _logistic(x, y, l2)
        p = 1 / (1 + np.exp(-(x @ w + b)))
        assert np.allclose(x.T @ (p - y) + l2 * w, 0.0, atol=1e-6)  # stationary: gradient of the objective is 0
        assert abs(float((p - y).sum())) < 1e-6  # the unpenalised bias matches the base rate
    assert np.linalg.norm(_logistic(x, y, 100.0)[0]) < np.linalg.norm(_logistic(x, y, 0.01)[0])


def test_auc_counts_pairs_and_ties():
    rng = np.random.default_rng(1)
    score = rng.integers(0, 5, 200).astype(float)  # many ties
    pos = rng.random(200) < 0.4
    pairs = [(a > b) + 0.5 * (a == b) for a in score[pos] for b in score[~pos]]
    assert auc(score, pos) == pytest.approx(np.mean(pairs))
    assert auc(np.arange(6.0), np.array([0, 0, 0, 1, 1, 1], bool)) == 1.0
    assert np.isnan(auc(np.arange(3.0), np.zeros(3, bool)))


def test_probe_finds_what_the_confidence_does_not_tell():
    val, test = _informative(600, 7, signal=1.0), _informative(600, 8, signal=1.0)
    probe, oof = fit_probe(val, 1)
    assert oof.shape == (600,) and probe.weights.shape == (4,)
    assert abs(probe.weights[0]) > 3 * np.abs(probe.weights[1:]).max()  # it reads the informative feature
    right = test.correct[:, 1]
    assert auc(probe.score(test), right) > 0.85 > 0.6 > auc(test.confidence[:, 1], right)
    probes, report = fit_probes(val, test)
    assert sorted(probes) == [0, 1, 2] and [q["preview_u"] for q in report] == [0.25, 0.5, 0.75]
    rows = cascade_bounds(val, test, COSTS, [0.5, 0.75], grid=6, bands=5, ceiling_bands=10, probes=probes)
    for row in rows:
        assert row["probe_router_ceiling"] > row["router_ceiling"] + 5.0
        assert row["probe_router"]["accuracy"] > row["router"]["accuracy"] + 3.0
        assert row["probe_router"]["val_cost"] <= row["budget"] + 1e-9
    text = markdown(rows, drop=1.0, probes=report)
    assert "probe router ceiling" in text and "AUC of the probe" in text
    assert text.count("| 0.75 |") == 3  # the row of budget 0.75 in both tables, the AUC row of preview u=0.75
    with pytest.raises(ValueError, match="cannot key"):
        Router(0, (0.0,), (0, 3), probe=probes[1][0])


def test_an_uninformative_probe_adds_nothing():
    """Features that are noise: the probe router's ceiling does not beat the confidence router's."""
    val, test = _informative(600, 9, signal=0.0), _informative(600, 10, signal=0.0)
    val.confidence, test.confidence = _table(600, 4, 9).confidence, _table(600, 4, 10).confidence
    val.correct, test.correct = _table(600, 4, 9).correct, _table(600, 4, 10).correct
    probes, report = fit_probes(val, test)
    for q in report:
        assert q["auc_probe"] < 0.6 < q["auc_confidence"]
    rows = cascade_bounds(val, test, COSTS, [0.5, 0.75], grid=6, bands=5, ceiling_bands=10, probes=probes)
    for row in rows:
        assert row["probe_router_ceiling"] < row["router_ceiling"]
    with pytest.raises(ValueError, match="folds"):
        fit_probe(val, 0, folds=1)
