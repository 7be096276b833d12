"""What simple confidence policies reach on a network within an energy budget (``tnn cascade-bound``).

Two families, both deciding from nothing but the top-1 confidence of the levels they have run:

- a **cascade** runs the levels ``s_1 < … < s_k`` in turn and answers with the first whose confidence
  reaches its threshold (the last stage always answers). Every stage it runs is paid in full: a
  width-sliced network reuses nothing between levels. The env runs two stages at most (the
  preview, then one level), so a longer cascade is not a controller the env can run; it is a
  reference.
- a **router** runs one preview level, cuts its confidence into bands (quantiles) and runs one level
  per band (or keeps the preview's answer): exactly what a controller can do in the env with its
  preview at that level. Given the bands, choosing a level per band within a budget is a
  multiple-choice knapsack; it is solved greedily along each band's accuracy–cost hull (what budget
  the hull walk leaves goes to the best single-band upgrades that still fit), and the hull walk gives
  the knapsack's LP optimum — what a router that randomises one band between two
  levels reaches, and an upper bound on every router with those bands.

For each budget (a fraction of the u=1 cost) each family is chosen on ``val`` and measured on
``test`` (honest operating points), and chosen on ``test`` itself — a ceiling for these families at
the given threshold grid and number of bands. A controller sees more than the top-1 confidence (the
preview's features, the resource context), so it can pass that ceiling; where the ceiling stays far
below a target, a controller has to find what confidence does not tell, and the likelier fix is a
better network. The oracle (cheapest level that is right) is the true upper bound.

With ``probe=True`` the same routers are also built on a **probe** instead of the confidence: an
L2-regularised logistic regression, fitted on ``val``, that reads a preview level's whole preview (its
pooled features, confidence, margin and entropy: what the env shows a controller) and scores whether
the preview's answer is right. Its bands are cut on out-of-fold scores on val (so the band statistics
are not flattered by the probe's fit to val) and its test-chosen LP value is set beside the
confidence router's. Where the probe predicts no better than the confidence (the AUCs say) and its
routers reach no further, reading the preview's features does not lift the ceiling either.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Cascade",
    "Probe",
    "Router",
    "auc",
    "best_cascade",
    "best_router",
    "bounds_for_env",
    "cascade_bounds",
    "fit_probe",
    "fit_probes",
    "markdown",
]

MAX_CELLS = 200_000_000
"""Largest inputs × threshold combinations one cascade search may hold at once (booleans: 200 MB)."""


@dataclass(frozen=True)
class Cascade:
    """Stages (level indices, increasing) and the confidence threshold of every stage but the last."""

    stages: tuple[int, ...]
    taus: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.stages or list(self.stages) != sorted(set(self.stages)):
            raise ValueError(f"stages must be distinct increasing level indices, got {self.stages}")
        if len(self.taus) != len(self.stages) - 1:
            raise ValueError(f"{len(self.stages)} stages need {len(self.stages) - 1} thresholds, got {len(self.taus)}")

    def run(self, table: Any, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per input of ``table``: whether the cascade's answer is right, and what it cost (``costs``:
        each level's cost, as a fraction of u=1's)."""
        n = table.num_samples
        alive = np.ones(n, dtype=bool)
        right = np.zeros(n, dtype=bool)
        cost = np.zeros(n, dtype=np.float64)
        for j, s in enumerate(self.stages):
            cost[alive] += costs[s]
            last = j == len(self.stages) - 1
            stop = alive if last else alive & (np.asarray(table.confidence)[:, s] >= self.taus[j])
            right |= stop & np.asarray(table.correct, dtype=bool)[:, s]
            alive &= ~stop
        return right, cost


def _grids(table: Any, stages: Sequence[int], grid: int) -> list[np.ndarray]:
    qs = np.linspace(0.0, 1.0, grid)
    return [np.unique(np.quantile(np.asarray(table.confidence)[:, s], qs)) for s in stages[:-1]]


def _scores(table: Any, costs: np.ndarray, stages: Sequence[int], grids: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Mean accuracy and mean cost of the cascade ``stages`` at every threshold combination of ``grids``
    (arrays of shape ``(len(g_1), …, len(g_{k-1}))``), in one broadcast pass over the inputs."""
    conf = np.asarray(table.confidence)
    correct = np.asarray(table.correct, dtype=bool)
    n, k = table.num_samples, len(stages)
    shape = tuple(len(g) for g in grids)
    column = (n,) + (1,) * (k - 1)  # one input per row, broadcast over the threshold axes
    alive = np.ones(column, dtype=bool)
    acc = np.zeros(shape)
    cost = np.zeros(shape)
    for j, s in enumerate(stages):
        cost = cost + costs[s] * alive.mean(axis=0)
        if j == k - 1:
            stop = alive
        else:
            axis = tuple(len(grids[j]) if i == j else 1 for i in range(k - 1))  # thresholds of stage j
            stop = alive & (conf[:, s].reshape(column) >= grids[j].reshape((1, *axis)))
        acc = acc + (stop & correct[:, s].reshape(column)).mean(axis=0)
        alive = alive & ~stop
    return np.broadcast_to(acc, shape), np.broadcast_to(cost, shape)


def best_cascade(
    table: Any, costs: np.ndarray, budget: float, *, max_stages: int = 3, grid: int = 21
) -> Cascade | None:
    """The most accurate cascade of up to ``max_stages`` stages whose mean cost on ``table`` is at most
    ``budget`` (fraction of u=1's cost); ties go to the cheaper. None when even the cheapest level
    costs more than the budget."""
    if max_stages < 1:
        raise ValueError(f"max_stages must be >= 1, got {max_stages}")
    if grid < 2:
        raise ValueError(f"grid must be >= 2 (thresholds per stage), got {grid}")
    check_search_size(table.num_samples, max_stages, grid)
    costs = np.asarray(costs, np.float64)
    best: tuple[float, float, Cascade] | None = None
    for k in range(1, max_stages + 1):
        for stages in itertools.combinations(range(len(costs)), k):
            grids = _grids(table, stages, grid)
            acc, cost = _scores(table, costs, stages, grids)
            ok = cost <= budget + 1e-12
            if not ok.any():
                continue
            key = np.where(ok, acc - 1e-9 * cost, -np.inf)  # most accurate, then cheapest
            idx = np.unravel_index(int(np.argmax(key)), key.shape) if key.ndim else ()
            value = (float(acc[idx]), -float(cost[idx]))
            better = (
                best is None or value[0] > best[0] + 1e-12 or (abs(value[0] - best[0]) <= 1e-12 and value[1] > best[1])
            )
            if better:
                taus = tuple(float(g[i]) for g, i in zip(grids, idx, strict=True))
                best = (*value, Cascade(tuple(stages), taus))
    return None if best is None else best[2]


def check_search_size(n: int, max_stages: int, grid: int) -> None:
    """Refuse a cascade search whose broadcast arrays (inputs × grid^(stages−1)) would not fit in memory."""
    cells = n * grid ** max(max_stages - 1, 0)
    if cells > MAX_CELLS:
        raise ValueError(
            f"--max-stages {max_stages} with --grid {grid} on {n} inputs means {cells:,} cells per array "
            f"(limit {MAX_CELLS:,}); lower --grid or --max-stages"
        )


@dataclass(frozen=True)
class Router:
    """Preview at level ``preview``; its confidence's band (cut at ``edges``, increasing) picks the level
    to run, ``levels[band]``; a level at or below the preview keeps the preview's answer."""

    preview: int
    edges: tuple[float, ...]
    levels: tuple[int, ...]
    probe: Probe | None = None
    """bands of the probe's score instead of the preview's confidence"""

    def __post_init__(self) -> None:
        if len(self.levels) != len(self.edges) + 1:
            raise ValueError(
                f"{len(self.edges)} band edges make {len(self.edges) + 1} bands, got {len(self.levels)} levels"
            )
        if self.probe is not None and self.probe.preview != self.preview:
            raise ValueError(
                f"a probe of preview level {self.probe.preview} cannot key a router previewing {self.preview}"
            )

    def key(self, table: Any) -> np.ndarray:
        """What the bands cut, per input: the probe's score, or the preview's top-1 confidence."""
        if self.probe is not None:
            return self.probe.score(table)
        return np.asarray(table.confidence)[:, self.preview]

    def bands(self, table: Any, key: np.ndarray | None = None) -> np.ndarray:
        """Each input's band; ``key`` (per input of ``table``) replaces :meth:`key` where given."""
        return np.searchsorted(np.asarray(self.edges), self.key(table) if key is None else key, side="right")

    def run(self, table: Any, costs: np.ndarray, key: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per input of ``table``: whether the answer is right, and its cost (fractions of u=1's); ``key``
        as in :meth:`bands` (the out-of-fold probe scores of the table a probe router was chosen on)."""
        level = np.asarray(self.levels)[self.bands(table, key)]
        keep = level <= self.preview
        answer = np.where(keep, self.preview, level)
        correct = np.asarray(table.correct, dtype=bool)
        right = correct[np.arange(len(answer)), answer]
        cost = costs[self.preview] + np.where(keep, 0.0, costs[level])
        return right, cost


def _hull(cost: np.ndarray, acc: np.ndarray) -> list[int]:
    """Indices of the upper concave hull of the options (cost, acc), from the cheapest (index 0, the
    preview's own answer) upwards, each more accurate than the one before."""
    order = sorted(range(len(cost)), key=lambda i: (cost[i], -acc[i]))
    hull: list[int] = []
    for i in order:
        if hull and acc[i] <= acc[hull[-1]] + 1e-15:
            continue  # no more accurate than a cheaper option
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies on or under the segment a→i: drop it
            if (acc[b] - acc[a]) * (cost[i] - cost[a]) <= (acc[i] - acc[a]) * (cost[b] - cost[a]):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def _route(
    table: Any,
    costs: np.ndarray,
    preview: int,
    bands: int,
    budget: float,
    *,
    key: np.ndarray | None = None,
    probe: Probe | None = None,
) -> tuple[Router, float] | None:
    """The greedy router at one preview level and its LP value (mean accuracy), or None if even keeping
    every preview answer costs more than ``budget``. Bands are quantiles of ``key`` (per input of
    ``table``; default the preview's confidence); ``probe`` is what computes that key on other tables."""
    conf = np.asarray(table.confidence)[:, preview] if key is None else np.asarray(key, np.float64)
    edges = tuple(float(e) for e in np.unique(np.quantile(conf, np.linspace(0.0, 1.0, bands + 1)[1:-1])))
    band = np.searchsorted(np.asarray(edges), conf, side="right")
    n, nb = len(conf), len(edges) + 1
    options = list(range(preview, len(costs)))  # options[0]: keep the preview's answer
    weight = np.bincount(band, minlength=nb) / n
    correct = np.asarray(table.correct, dtype=np.float64)
    acc = np.stack([np.bincount(band, weights=correct[:, lv], minlength=nb) / n for lv in options], 1)
    extra = np.array([0.0] + [costs[lv] for lv in options[1:]])
    cost = weight[:, None] * (costs[preview] + extra[None, :])
    hulls = [_hull(cost[b], acc[b]) for b in range(nb)]
    # each band starts at its hull's cheapest point: keeping the preview's answer, or a level that costs
    # nothing more and answers better
    choice = np.array([h[0] for h in hulls], dtype=np.int64)
    total_c = float(cost[np.arange(nb), choice].sum())
    total_a = float(acc[np.arange(nb), choice].sum())
    if total_c > budget + 1e-12:
        return None
    steps = []  # every band's upgrades along its hull, most accuracy per cost first
    for b, h in enumerate(hulls):
        for i0, i1 in itertools.pairwise(h):
            dc, da = cost[b, i1] - cost[b, i0], acc[b, i1] - acc[b, i0]
            steps.append((da / dc if dc > 0 else np.inf, b, i0, i1, dc, da))
    steps.sort(key=lambda t: (-t[0], t[1], t[2]))
    lp = None
    blocked: set[int] = set()
    for _eff, b, i0, i1, dc, da in steps:
        if b in blocked or choice[b] != i0:
            continue
        if total_c + dc <= budget + 1e-12:
            choice[b], total_c, total_a = i1, total_c + dc, total_a + da
        else:
            if lp is None:  # the LP optimum: this upgrade in part, nothing after it
                lp = total_a + da * (budget - total_c) / dc
            blocked.add(b)  # a band's later upgrades need this one first
    lp = total_a if lp is None else lp
    # the hull walk stops a band at its first upgrade that does not fit; spend what budget is left on
    # the largest accuracy gain that still fits, any option of any band, until none does
    rows = np.arange(nb)
    while True:
        gain = acc - acc[rows, choice][:, None]
        more = cost - cost[rows, choice][:, None]
        fits = (gain > 1e-15) & (more <= budget + 1e-12 - total_c)
        if not fits.any():
            break
        b, o = np.unravel_index(int(np.argmax(np.where(fits, gain, -np.inf))), gain.shape)
        choice[b], total_c, total_a = o, total_c + float(more[b, o]), total_a + float(gain[b, o])
    return Router(preview, edges, tuple(options[c] for c in choice), probe), lp


def best_router(
    table: Any,
    costs: np.ndarray,
    budget: float,
    *,
    bands: int = 20,
    probes: dict[int, tuple[Probe, np.ndarray]] | None = None,
) -> tuple[Router | None, float]:
    """The most accurate router (over every preview level but the top) within ``budget`` on ``table``,
    chosen greedily per preview level, and the highest LP value (mean accuracy, a fraction) over
    preview levels — what any router with these bands reaches at most on ``table``.

    With ``probes`` ({preview level: (probe, its score per input of ``table``)}) only those preview
    levels are tried, banded by those scores (out-of-fold ones on the table the probe was fitted on)."""
    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    costs = np.asarray(costs, np.float64)
    best: tuple[float, Router] | None = None
    lp_best = -np.inf
    previews = range(len(costs) - 1) if probes is None else sorted(p for p in probes if p < len(costs) - 1)
    for p in previews:
        key, probe = (None, None) if probes is None else (probes[p][1], probes[p][0])
        found = _route(table, costs, p, bands, budget, key=key, probe=probe)
        if found is None:
            continue
        router, lp = found
        value = float(router.run(table, costs, key)[0].mean())
        if best is None or value > best[0] + 1e-12:
            best = (value, router)
        lp_best = max(lp_best, lp)
    return (None if best is None else best[1]), float(lp_best)


@dataclass(frozen=True, eq=False)
class Probe:
    """Logistic regression on preview level ``preview``'s features (standardised): the log-odds that
    the preview's answer is right."""

    preview: int
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    l2: float

    def score(self, table: Any) -> np.ndarray:
        x = (np.asarray(table.preview_features(self.preview), np.float64) - self.mean) / self.scale
        return x @ self.weights + self.bias


PROBE_L2 = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
"""L2 strengths tried (on standardised features; the penalty is l2/2·|w|², summed over inputs' losses)."""


def _logistic(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 50) -> tuple[np.ndarray, float]:
    """Newton's method for min Σ log(1 + exp(−s·z)) + l2/2·|w|² (z = x·w + b, s = ±1; bias unpenalised)."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    theta[-1] = np.log((y.mean() + 1e-3) / (1.0 - y.mean() + 1e-3))
    reg = np.full(d + 1, float(l2))
    reg[-1] = 0.0
    for _ in range(iters):
        z = xb @ theta
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow
        grad = xb.T @ (p - y) + reg * theta
        hess = (xb * (p * (1.0 - p))[:, None]).T @ xb + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return theta[:-1], float(theta[-1])


def _log_loss(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, np.where(y > 0.5, -z, z))))


def fit_probe(
    table: Any, preview: int, *, l2s: Sequence[float] = PROBE_L2, folds: int = 5, seed: int = 0
) -> tuple[Probe, np.ndarray]:
    """A :class:`Probe` of preview level ``preview`` fitted on ``table`` (its L2 strength the one of
    ``l2s`` with the lowest ``folds``-fold cross-validated log-loss), and its out-of-fold scores on
    ``table`` (each input scored by the fold fit that did not see it)."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    x = np.asarray(table.preview_features(preview), np.float64)
    y = np.asarray(table.correct, dtype=bool)[:, preview].astype(np.float64)
    n = len(y)
    if n < 2 * folds:
        raise ValueError(f"a probe needs at least {2 * folds} inputs for {folds}-fold cross-validation, got {n}")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    xs = (x - mean) / scale
    fold = np.random.default_rng(seed).permutation(n) % folds
    best: tuple[float, float, np.ndarray] | None = None
    for l2 in l2s:
        oof = np.empty(n)
        for k in range(folds):
            w, b = _logistic(xs[fold != k], y[fold != k], l2)
            oof[fold == k] = xs[fold == k] @ w + b
        loss = _log_loss(oof, y)
        if best is None or loss < best[0] - 1e-12:
            best = (loss, float(l2), oof)
    assert best is not None
    w, b = _logistic(xs, y, best[1])
    return Probe(preview, mean, scale, w, b, best[1]), best[2]


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the boolean ``positive`` (ties count a half); NaN when
    one class is empty."""
    score = np.asarray(score, np.float64)
    positive = np.asarray(positive, dtype=bool)
    n1 = int(positive.sum())
    n0 = len(positive) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - n1 * (n1 - 1) / 2.0) / (n1 * n0))


def fit_probes(
    val: Any, test: Any, *, folds: int = 5
) -> tuple[dict[int, tuple[Probe, np.ndarray]], list[dict[str, Any]]]:
    """A probe per preview level that both tables store (every level but the top), fitted on ``val``:
    {level: (probe, out-of-fold val scores)}, and per level how well the probe and the confidence tell
    on ``test`` whether the preview's answer is right (AUC)."""
    stored = min(int(getattr(t, "preview_levels", 1)) for t in (val, test))
    levels = [float(u) for u in test.levels]
    probes: dict[int, tuple[Probe, np.ndarray]] = {}
    report = []
    for p in range(min(stored, len(levels) - 1)):
        probe, oof = fit_probe(val, p, folds=folds)
        probes[p] = (probe, oof)
        right = np.asarray(test.correct, dtype=bool)[:, p]
        report.append(
            {
                "preview_u": levels[p],
                "features": int(probe.weights.size),
                "l2": probe.l2,
                "auc_confidence": auc(np.asarray(test.confidence)[:, p], right),
                "auc_probe": auc(probe.score(test), right),
            }
        )
    return probes, report


def cascade_bounds(
    val: Any,
    test: Any,
    costs: np.ndarray,
    budgets: Sequence[float],
    *,
    max_stages: int = 3,
    grid: int = 21,
    bands: int = 20,
    ceiling_bands: int = 50,
    probes: dict[int, tuple[Probe, np.ndarray]] | None = None,
) -> list[dict[str, Any]]:
    """Per budget, on test: the best static level, the cascade and the router chosen on val, and the
    ceiling of both families chosen on test (accuracy in %, cost as a fraction of u=1's).

    The ceiling is the best of the test-chosen cascade (over the threshold grid of the test
    confidences), the LP value of routers with ``ceiling_bands`` bands of the test confidences, and the
    val-chosen cascade and router where they fit the budget on test.

    With ``probes`` (:func:`fit_probes` on ``val``) each row also holds ``probe_router`` (the router
    on the probes' scores chosen on val, measured on test), ``router_ceiling`` and
    ``probe_router_ceiling`` (the LP values of routers with ``ceiling_bands`` bands of the test
    confidences and of the test probe scores, over the preview levels the probes cover).
    """
    costs = np.asarray(costs, np.float64)
    if not np.all(np.isfinite(costs)) or np.any(costs < 0) or costs[-1] <= 0:
        raise ValueError(f"level costs must be finite, >= 0, with a positive u=1 cost; got {costs.tolist()}")
    if float(test.levels[-1]) != 1.0:
        raise ValueError(f"the top level must be u=1 (budgets are fractions of its cost), got levels {test.levels}")
    if any(not (np.isfinite(b) and b > 0) for b in budgets):
        raise ValueError(f"budgets are fractions of the u=1 cost, finite and > 0; got {list(budgets)}")
    costs = costs / costs[-1]
    levels = [float(u) for u in test.levels]
    on_test_keys = None if probes is None else {p: (probe, probe.score(test)) for p, (probe, _) in probes.items()}
    test_acc = 100.0 * np.asarray(test.correct, dtype=bool).mean(axis=0)

    def measured(policy: Cascade | Router) -> dict[str, Any]:
        right, cost = policy.run(test, costs)
        if isinstance(policy, Router) and policy.probe is not None and probes is not None:
            vr, vc = policy.run(val, costs, probes[policy.preview][1])  # the out-of-fold scores it was chosen on
        else:
            vr, vc = policy.run(val, costs)
        entry: dict[str, Any] = {"accuracy": 100.0 * float(right.mean()), "cost": float(cost.mean())}
        entry |= {"val_accuracy": 100.0 * float(vr.mean()), "val_cost": float(vc.mean())}
        if isinstance(policy, Cascade):
            return entry | {"stages_u": [levels[i] for i in policy.stages], "taus": list(policy.taus)}
        level = np.asarray(policy.levels)[policy.bands(test)]
        share = {f"{levels[lv]:g}": float(np.mean(level == lv)) for lv in sorted(set(policy.levels))}
        return entry | {
            "preview_u": levels[policy.preview],
            "edges": list(policy.edges),
            "levels_u": [levels[i] for i in policy.levels],
            "test_share": share,
        }

    rows = []
    for budget in budgets:
        row: dict[str, Any] = {"budget": float(budget), "u1_accuracy": float(test_acc[-1])}
        fits = [i for i in range(len(costs)) if costs[i] <= budget + 1e-12]
        row["static"] = (
            {"u": levels[max(fits, key=lambda i: test_acc[i])], "accuracy": float(max(test_acc[fits]))}
            if fits
            else None
        )
        cascade = best_cascade(val, costs, budget, max_stages=max_stages, grid=grid)
        router = best_router(val, costs, budget, bands=bands)[0]
        row["cascade"] = None if cascade is None else measured(cascade)
        row["router"] = None if router is None else measured(router)
        ceilings = []
        on_test = best_cascade(test, costs, budget, max_stages=max_stages, grid=grid)
        for c in (on_test, cascade):
            if c is not None:
                right, cost = c.run(test, costs)
                if cost.mean() <= budget + 1e-12:
                    ceilings.append((100.0 * float(right.mean()), "cascade"))
        if router is not None:  # its val bands are not among the test bands: it may do better on test
            right, cost = router.run(test, costs)
            if cost.mean() <= budget + 1e-12:
                ceilings.append((100.0 * float(right.mean()), "router"))
        lp = best_router(test, costs, budget, bands=ceiling_bands)[1]
        if np.isfinite(lp):
            ceilings.append((100.0 * lp, "router"))
        row["ceiling"] = None if not ceilings else dict(zip(("accuracy", "family"), max(ceilings), strict=True))
        if probes is not None and on_test_keys is not None:
            keyed = best_router(val, costs, budget, bands=bands, probes=probes)[0]
            row["probe_router"] = None if keyed is None else measured(keyed)
            row["router_ceiling"] = 100.0 * lp if np.isfinite(lp) else None
            lp_probe = best_router(test, costs, budget, bands=ceiling_bands, probes=on_test_keys)[1]
            row["probe_router_ceiling"] = 100.0 * lp_probe if np.isfinite(lp_probe) else None
        rows.append(row)
    return rows


def markdown(
    rows: Sequence[dict[str, Any]], drop: float | None = None, probes: Sequence[dict[str, Any]] | None = None
) -> str:
    """The bounds as a markdown table; with ``drop``, whether the ceiling reaches u=1's accuracy − drop;
    where the rows hold probe routers, a second table sets them beside the confidence routers, and
    ``probes`` (:func:`fit_probes`' report) adds each preview level's AUCs."""

    def point(e: dict[str, Any] | None) -> str:
        return "—" if e is None else f"{e['accuracy']:.2f} ({e['cost']:.3f}×)"

    def cascade(e: dict[str, Any] | None) -> str:
        if e is None:
            return "—"
        steps = [f"u={u:g} if conf ≥ {t:.3f}" for u, t in zip(e["stages_u"], e["taus"], strict=False)]
        return " → ".join([*steps, f"u={e['stages_u'][-1]:g}"])

    def router(e: dict[str, Any] | None) -> str:
        if e is None:
            return "—"
        share = ", ".join(
            f"{'keep' if float(u) <= e['preview_u'] else f'u={u}'} {100 * f:.0f} %" for u, f in e["test_share"].items()
        )
        return f"preview u={e['preview_u']:g}: {share}"

    lines = [
        "| budget (× u=1 cost) | best static (%) | cascade chosen on val: test % (cost) | the cascade "
        "| router chosen on val: test % (cost) | the router (share of test inputs) | ceiling, chosen on test (%) |",
        "|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in rows:
        static = "—" if r["static"] is None else f"{r['static']['accuracy']:.2f} (u={r['static']['u']:g})"
        c = r["ceiling"]
        ceiling = "—" if c is None else f"{c['accuracy']:.2f} ({c['family']})"
        lines.append(
            f"| {r['budget']:g} | {static} | {point(r['cascade'])} | {cascade(r['cascade'])} "
            f"| {point(r['router'])} | {router(r['router'])} | {ceiling} |"
        )
    if rows:
        u1 = rows[0]["u1_accuracy"]
        lines += ["", f"u=1 test accuracy {u1:.2f} %. Costs are means over the test inputs, as fractions of u=1's."]
        if drop is not None:
            target = u1 - drop
            reach = [r["budget"] for r in rows if r["ceiling"] and r["ceiling"]["accuracy"] >= target]
            verdict = (
                f"the ceiling reaches it at budget{'s' if len(reach) > 1 else ''} {', '.join(f'{b:g}' for b in reach)}."
                if reach
                else "neither family reaches it at any budget above, even chosen on test."
            )
            lines.append(f"Target {target:.2f} % (u=1 − {drop:g} pt): {verdict}")
    if rows and "probe_router" in rows[0]:
        lines += [
            "",
            "Routers banded by a probe of the preview's features (logistic regression fitted on val) against routers "
            "banded by the preview's confidence:",
            "",
            "| budget (× u=1 cost) | confidence router chosen on val: test % (cost) | probe router chosen on val: "
            "test % (cost) | the probe router (share of test inputs) | confidence router ceiling (%) "
            "| probe router ceiling (%) |",
            "|---:|---:|---:|---|---:|---:|",
        ]
        for r in rows:
            ceil = ["—" if r.get(k) is None else f"{r[k]:.2f}" for k in ("router_ceiling", "probe_router_ceiling")]
            lines.append(
                f"| {r['budget']:g} | {point(r['router'])} | {point(r['probe_router'])} | {router(r['probe_router'])} "
                f"| {ceil[0]} | {ceil[1]} |"
            )
        if drop is not None:
            target = rows[0]["u1_accuracy"] - drop
            reach = [r["budget"] for r in rows if (r.get("probe_router_ceiling") or -1.0) >= target]
            lines += [
                "",
                f"Target {target:.2f} %: "
                + (
                    f"the probe router ceiling reaches it at budget{'s' if len(reach) > 1 else ''} "
                    f"{', '.join(f'{b:g}' for b in reach)}."
                    if reach
                    else "the probe router ceiling does not reach it at any budget above."
                ),
            ]
    if probes:
        lines += [
            "",
            "How well each preview tells whether its own answer is right (test AUC; probe fitted on val, its L2 "
            "strength chosen by 5-fold cross-validation there):",
            "",
            "| preview u | features | L2 | AUC of the confidence | AUC of the probe |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {q['preview_u']:g} | {q['features']} | {q['l2']:g} | {q['auc_confidence']:.4f} | {q['auc_probe']:.4f} |"
            for q in probes
        ]
    return "\n".join(lines)


def bounds_for_env(
    env_kwargs: dict[str, Any],
    budgets: Sequence[float],
    *,
    env_id: str = "tnn/Throttle-v0",
    max_stages: int = 3,
    grid: int = 21,
    bands: int = 20,
    ceiling_bands: int = 50,
    probe: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`cascade_bounds` on the val and test response tables and the level costs of the env that
    ``env_kwargs`` builds (its checkpoint, profile and ``cost_metric``; default energy), and with
    ``probe`` the routers on probes of the preview features too; returns the rows and the probes'
    report (empty without ``probe``)."""
    from agents.evaluate import on_split
    from agents.sweep import _make

    if env_kwargs.get("mode", "table") != "table":
        raise ValueError('tnn cascade-bound reads response tables: leave out env kwarg mode (or set it to "table")')
    if max_stages < 1 or grid < 2 or bands < 1 or ceiling_bands < 1:
        raise ValueError(
            f"need --max-stages >= 1, --grid >= 2, --bands >= 1 and --ceiling-bands >= 1; got {max_stages}, {grid}, "
            f"{bands}, {ceiling_bands}"
        )

    def table_of(split: str) -> Any:
        kwargs = on_split(env_kwargs, split, env_kwargs.get("subset") if split == "val" else None)
        env = _make(env_id, kwargs)
        try:
            return env.unwrapped.table, env.unwrapped
        finally:
            env.close()

    val, base = table_of("val")
    check_search_size(val.num_samples, max_stages, grid)
    test = table_of("test")[0]
    check_search_size(test.num_samples, max_stages, grid)
    costs = np.array([float(base.profile.cost(u, base.cost_metric)) for u in base.levels])
    probes, report = fit_probes(val, test) if probe else (None, [])
    rows = cascade_bounds(
        val,
        test,
        costs,
        budgets,
        max_stages=max_stages,
        grid=grid,
        bands=bands,
        ceiling_bands=ceiling_bands,
        probes=probes,
    )
    return rows, report
