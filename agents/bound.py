"""How far confidence cascades can take a network under an energy budget (``tnn cascade-bound``).

A k-stage cascade runs the levels ``s_1 < … < s_k`` in turn and answers with the first whose top-1
confidence reaches its threshold (the last stage always answers). Every stage it runs is paid in
full: a width-sliced network reuses nothing between levels. The env runs two of these stages at most
(the preview, then one level), so this is not a controller; it answers the question behind one. If
no cascade of up to ``max_stages`` stages reaches a target accuracy within a budget — even with its
thresholds chosen on the test split itself — then a controller that decides from the previews'
confidence will not either, and what has to improve is the network.

For each budget (a fraction of the u=1 cost) the search tries every increasing stage sequence and
a grid of thresholds (quantiles of each stage's confidence) and keeps the most accurate cascade
whose mean cost stays within the budget: once with everything chosen on ``val`` (then measured
on ``test``: an honest operating point) and once chosen on ``test`` (an optimistic ceiling).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Cascade", "best_cascade", "bounds_for_env", "cascade_bounds", "markdown"]


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
            if best is None or value > best[:2]:
                taus = tuple(float(g[i]) for g, i in zip(grids, idx, strict=True))
                best = (*value, Cascade(tuple(stages), taus))
    return None if best is None else best[2]


def cascade_bounds(
    val: Any,
    test: Any,
    costs: np.ndarray,
    budgets: Sequence[float],
    *,
    max_stages: int = 3,
    grid: int = 21,
) -> list[dict[str, Any]]:
    """Per budget: the best static level, the val-chosen cascade measured on test, and the test-chosen
    ceiling (accuracy in %, cost as a fraction of u=1's), beside u=1's test accuracy.

    The ceiling is the best over the threshold grid of the test confidences (and the val choice, whose
    thresholds may lie between its points): a finer ``grid`` can only raise it.
    """
    costs = np.asarray(costs, np.float64)
    if not np.all(np.isfinite(costs)) or costs[-1] <= 0:
        raise ValueError(f"level costs must be finite with a positive u=1 cost, got {costs.tolist()}")
    costs = costs / costs[-1]
    levels = [float(u) for u in test.levels]
    test_acc = 100.0 * np.asarray(test.correct, dtype=bool).mean(axis=0)
    rows = []
    for budget in budgets:
        row: dict[str, Any] = {"budget": float(budget), "u1_accuracy": float(test_acc[-1])}
        fits = [i for i in range(len(costs)) if costs[i] <= budget + 1e-12]
        row["static"] = (
            {"u": levels[max(fits, key=lambda i: test_acc[i])], "accuracy": float(max(test_acc[fits]))}
            if fits
            else None
        )
        chosen = best_cascade(val, costs, budget, max_stages=max_stages, grid=grid)
        ceiling = best_cascade(test, costs, budget, max_stages=max_stages, grid=grid)
        if chosen is not None and ceiling is not None:  # the val choice's thresholds may lie off the test grid
            right, cost = chosen.run(test, costs)
            if cost.mean() <= budget + 1e-12 and right.mean() > ceiling.run(test, costs)[0].mean():
                ceiling = chosen
        for name, c in (("val_tuned", chosen), ("test_tuned", ceiling)):
            if c is None:
                row[name] = None
                continue
            right, cost = c.run(test, costs)
            entry = {"stages_u": [levels[s] for s in c.stages], "taus": list(c.taus)}
            entry |= {"accuracy": 100.0 * float(right.mean()), "cost": float(cost.mean())}
            if name == "val_tuned":
                vr, vc = c.run(val, costs)
                entry |= {"val_accuracy": 100.0 * float(vr.mean()), "val_cost": float(vc.mean())}
            row[name] = entry
        rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, Any]], drop: float | None = None) -> str:
    """The bounds as a markdown table; with ``drop``, whether each reaches u=1's accuracy − drop."""

    def fmt(e: dict[str, Any] | None, key: str = "accuracy") -> str:
        return "—" if e is None else f"{e[key]:.2f}"

    def stages(e: dict[str, Any] | None) -> str:
        if e is None:
            return "—"
        steps = [f"u={u:g} if conf ≥ {t:.3f}" for u, t in zip(e["stages_u"], e["taus"], strict=False)]
        return " → ".join([*steps, f"u={e['stages_u'][-1]:g}"])

    lines = [
        "| budget (× u=1 cost) | best static (%) | cascade chosen on val | its test accuracy (%) | its test cost "
        "| ceiling: chosen on test (%) |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        v, t = r["val_tuned"], r["test_tuned"]
        static = "—" if r["static"] is None else f"{r['static']['accuracy']:.2f} (u={r['static']['u']:g})"
        cost = "—" if v is None else f"{v['cost']:.3f}"
        lines.append(f"| {r['budget']:g} | {static} | {stages(v)} | {fmt(v)} | {cost} | {fmt(t)} |")
    if rows:
        u1 = rows[0]["u1_accuracy"]
        lines.append("")
        lines.append(f"u=1 test accuracy {u1:.2f} %.")
        if drop is not None:
            target = u1 - drop
            reach = [r["budget"] for r in rows if r["test_tuned"] and r["test_tuned"]["accuracy"] >= target]
            verdict = (
                f"the ceiling reaches it at budget{'s' if len(reach) > 1 else ''} {', '.join(f'{b:g}' for b in reach)}."
                if reach
                else "no cascade reaches it at any budget above, even with everything chosen on test."
            )
            lines.append(f"Target {target:.2f} % (u=1 − {drop:g} pt): {verdict}")
    return "\n".join(lines)


def bounds_for_env(
    env_kwargs: dict[str, Any],
    budgets: Sequence[float],
    *,
    env_id: str = "tnn/Throttle-v0",
    max_stages: int = 3,
    grid: int = 21,
) -> list[dict[str, Any]]:
    """:func:`cascade_bounds` on the val and test tables and the level costs of the env that
    ``env_kwargs`` builds (its checkpoint, profile and ``cost_metric``; default energy)."""
    import gymnasium

    import envs  # noqa: F401  (registers the ids)
    from agents.env_kwargs import check_env_kwargs
    from agents.evaluate import on_split

    def table_of(split: str) -> Any:
        kwargs = on_split(env_kwargs, split, env_kwargs.get("subset") if split == "val" else None)
        check_env_kwargs(env_id, kwargs)
        env = gymnasium.make(env_id, **kwargs)
        try:
            return env.unwrapped.table, env.unwrapped
        finally:
            env.close()

    val, base = table_of("val")
    test = table_of("test")[0]
    costs = np.array([float(base.profile.cost(u, base.cost_metric)) for u in base.levels])
    return cascade_bounds(val, test, costs, budgets, max_stages=max_stages, grid=grid)
