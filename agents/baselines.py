"""Baseline throttling policies, evaluated exactly like a trained controller (``agents.evaluate``).

Every policy answers ``predict(obs, env) -> action`` for the env's own action space, choosing a
level index and turning it into an action with ``env.unwrapped.action_for_level``. Those that look
at the input read what a controller could see: the preview of the *current* sample at the env's
preview level (its confidence and features, from the response table at ``env.unwrapped.index``) — except the
oracle, which reads the correctness of every level and is therefore an upper bound, never a
controller. Policies that never look at the input (``needs_preview = False``: static, random,
oracle) are evaluated without the preview pass, so they are not charged for it; see
:func:`eval_kwargs_for`.

- ``static``: one fixed level (the front every controller must beat).
- ``random``: a uniformly random level per input.
- ``cascade``: keep the preview's answer when its confidence ≥ τ, else run a chosen level; τ, that
  level and (among the levels it is offered) the preview level are tuned on ``val`` for a trade-off λ.
- ``bandit``: the paper's controller, a neural contextual bandit over discrete levels: a small MLP
  on the preview features predicts each level's reward (correct − λ·cost ratio), trained on
  ``val`` with ε-greedy exploration, greedy at test time.
- ``oracle``: the cheapest level that answers correctly (the cheapest level when none does).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

__all__ = [
    "BASELINES",
    "BanditPolicy",
    "CascadePolicy",
    "OraclePolicy",
    "Policy",
    "RandomPolicy",
    "StaticPolicy",
    "answered_correct",
    "cost_fractions",
    "eval_kwargs_for",
    "table_reward",
    "tradeoff_rewards",
]

BASELINES = ("static", "random", "cascade", "bandit", "oracle")


class Policy(Protocol):
    """What ``agents.evaluate`` runs: an action for the current observation of ``env``."""

    name: str
    setting: str

    def predict(self, obs: Any, env: Any) -> Any: ...


def eval_kwargs_for(policy: Any, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The env kwargs to evaluate a baseline ``policy`` with (a policy without ``needs_preview``, e.g. a
    trained controller, gets ``env_kwargs`` unchanged): no preview (observation "none") when it ignores the
    input; the preview (observation "features", so the env charges it) when it reads it, at the policy's
    own preview level when it has one (the cascade tunes it). A baseline reads the preview from the
    response table whatever the env shows, so it must never be evaluated on an env that does not charge it."""
    needs_preview = getattr(policy, "needs_preview", None)
    if needs_preview is None:  # a trained controller: it sees (and pays for) what its own env kwargs show
        return dict(env_kwargs)
    if needs_preview:
        level = getattr(policy, "preview_level", None)
        kwargs = {**env_kwargs, "observation": "features"}
        return kwargs if level is None else {**kwargs, "preview_level": int(level)}
    kwargs = {**env_kwargs, "observation": "none"}
    kwargs.pop("preview_level", None)
    return kwargs


def _action(env: Any, level: int) -> Any:
    return env.unwrapped.action_for_level(int(level))


def cost_fractions(env: Any, preview_level: int | None = None) -> np.ndarray:
    """Each level's charge as the env computes it, as a fraction of the u=1 cost (its ``info["cost"]``).

    For a policy that reads the preview (they are evaluated with observation "features", see
    :func:`eval_kwargs_for`): the preview (at ``env``'s ``preview_level``, or at ``preview_level`` when
    given) is charged on top of every level above it, a level at or below it costs the preview alone
    — whatever observation ``env`` itself shows; divided by the bare u=1 cost. Background load is left
    out (a baseline cannot see it).
    """
    from envs.throttle import charges

    base = getattr(env, "unwrapped", env)
    raw = np.array([float(base.profile.cost(u, base.cost_metric)) for u in base.levels], dtype=np.float64)
    level = base.preview_level if preview_level is None else preview_level
    return charges(raw, level) / raw[-1]


def answered_correct(correct: np.ndarray, preview_level: int) -> np.ndarray:
    """(N, L) correctness of what each level *answers* with the preview at ``preview_level``: a level
    at or below it answers with the preview."""
    correct = np.asarray(correct, dtype=bool)
    cols = np.maximum(np.arange(correct.shape[1]), preview_level)
    return correct[:, cols]


def tradeoff_rewards(correct: np.ndarray, fractions: np.ndarray, lam: float) -> np.ndarray:
    """(N, L) linear trade-off reward: correct − λ · cost fraction (the env's ``linear`` reward)."""
    return correct.astype(np.float64) - lam * np.asarray(fractions, np.float64)[None, :]


def table_reward(policy: Any, table: Any, fractions: np.ndarray | Any, lam: float) -> float:
    """Mean linear trade-off reward (correct − λ · cost fraction) of ``policy`` over the rows of ``table``,
    computed from the table alone (no env): what the env's ``linear`` reward averages to on that split.

    ``policy`` answers ``levels_on(table)`` and has a ``preview_level``; ``fractions`` is a callable
    ``preview_level -> fractions`` (e.g. ``lambda p: cost_fractions(env, p)``) or the array for the
    policy's preview level.
    """
    p = int(policy.preview_level)
    frac = np.asarray(fractions(p) if callable(fractions) else fractions, np.float64)
    rewards = tradeoff_rewards(answered_correct(table.correct, p), frac, lam)
    levels = np.asarray(policy.levels_on(table), np.int64)
    return float(rewards[np.arange(len(levels)), levels].mean())


def _val_best(candidates: list[Any], table: Any, fractions: Any, lam: float) -> Any:
    """The candidate with the highest :func:`table_reward` on ``table`` (the first of equals)."""
    scores = [table_reward(c, table, fractions, lam) for c in candidates]
    return candidates[int(np.argmax(scores))]


class StaticPolicy:
    """Always the same level."""

    name = "static"
    needs_preview = False

    def __init__(self, level: int, u: float | None = None) -> None:
        self.level = int(level)
        self.setting = f"{u:g}" if u is not None else str(level)

    def predict(self, obs: Any, env: Any) -> Any:
        return _action(env, self.level)


class RandomPolicy:
    """A uniformly random level per input (seeded)."""

    name = "random"
    needs_preview = False

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.setting = ""

    def predict(self, obs: Any, env: Any) -> Any:
        return _action(env, self.rng.integers(len(env.unwrapped.levels)))


class OraclePolicy:
    """The cheapest level that is correct: an upper bound that reads the labels, never a controller."""

    name = "oracle"
    setting = ""
    needs_preview = False

    def predict(self, obs: Any, env: Any) -> Any:
        base = env.unwrapped
        correct = np.asarray(base.table.correct[base.index], dtype=bool)
        return _action(env, int(np.argmax(correct)) if correct.any() else 0)


class CascadePolicy:
    """Preview (at ``preview_level``) confidence ≥ τ → the preview's own answer, else ``fallback`` level.

    It is evaluated in an env whose preview runs at its ``preview_level`` (:func:`eval_kwargs_for`).
    """

    name = "cascade"
    needs_preview = True

    def __init__(self, tau: float, fallback: int, setting: str = "", preview_level: int = 0) -> None:
        self.tau, self.fallback, self.preview_level = float(tau), int(fallback), int(preview_level)
        self.setting = setting or f"τ={self.tau:.2f}"

    @classmethod
    def fit(
        cls,
        table: Any,
        fractions: np.ndarray | Any,
        lam: float,
        setting: str = "",
        *,
        preview_levels: tuple[int, ...] = (0,),
        select_on: Any = None,
    ) -> CascadePolicy:
        """τ, fallback level and preview level maximising the mean trade-off reward on ``table`` (the
        val split). ``fractions``: a callable ``preview_level -> fractions`` (e.g. ``lambda p:
        cost_fractions(env, p)``), or for ``preview_levels=(0,)`` the array of level-0 charges,
        ``cost_fractions(env, 0)`` — not an env's own charges at another preview level.

        ``select_on``: another table (held-out val rows). τ and the fallback are then tuned on
        ``table`` for each preview level, and the preview level is chosen by the reward on
        ``select_on`` — the way the sweep chooses among controllers with ``--select-holdout``.
        """
        if not callable(fractions) and tuple(preview_levels) != (0,):
            raise ValueError("preview levels other than 0 need fractions as a callable preview_level -> fractions")
        frac_of = fractions if callable(fractions) else (lambda _p: fractions)
        per_level = []
        for p in preview_levels:
            frac = np.asarray(frac_of(p), np.float64)
            conf = np.asarray(table.confidence)[:, p]
            rewards = tradeoff_rewards(answered_correct(table.correct, p), frac, lam)
            taus = np.unique(np.quantile(conf, np.linspace(0.0, 1.0, 41)))
            taus = np.append(taus, np.inf)  # never trust the preview
            best = (-np.inf, np.inf, len(frac) - 1)
            for tau in taus:
                easy = conf >= tau
                for fb in range(p + 1 if tau < np.inf else p, len(frac)):
                    value = np.where(easy, rewards[:, p], rewards[:, fb]).mean()
                    if value > best[0] + 1e-12:
                        best = (value, float(tau), fb)
            per_level.append((best[0], cls(best[1], best[2], preview_level=p)))
        if select_on is None:
            chosen = per_level[0][1]
            top = per_level[0][0]
            for value, c in per_level[1:]:  # the first of equals
                if value > top + 1e-12:
                    top, chosen = value, c
        else:
            chosen = _val_best([c for _v, c in per_level], select_on, frac_of, lam)
        chosen.setting = setting or f"λ={lam:g}"
        if len(preview_levels) > 1:
            chosen.setting += f" preview={chosen.preview_level}"
        return chosen

    def levels_on(self, table: Any) -> np.ndarray:
        """The level this cascade runs for each row of ``table``."""
        conf = np.asarray(table.confidence)[:, self.preview_level]
        return np.where(conf >= self.tau, self.preview_level, self.fallback)

    def predict(self, obs: Any, env: Any) -> Any:
        base = env.unwrapped
        if base.preview_level != self.preview_level:
            raise ValueError(
                f"this cascade was tuned with its preview at level {self.preview_level}, the env previews at "
                f"level {base.preview_level}; evaluate it with env kwargs from agents.baselines.eval_kwargs_for"
            )
        conf = float(base.table.confidence[base.index][self.preview_level])
        return _action(env, self.preview_level if conf >= self.tau else self.fallback)


class BanditPolicy:
    """The paper's neural contextual bandit: an MLP on preview features → each level's reward.

    Trained on the val table with ε-greedy exploration (only the chosen arm's reward is seen, as
    in the paper), then greedy. Standardises features with val statistics.
    """

    name = "bandit"
    needs_preview = True

    def __init__(self, net: Any, mean: np.ndarray, std: np.ndarray, setting: str = "", preview_level: int = 0) -> None:
        self.net, self.mean, self.std, self.setting = net, mean, std, setting
        self.preview_level = int(preview_level)
        self._table: Any = None
        self._levels = np.zeros(0, np.int64)

    @classmethod
    def fit(
        cls,
        table: Any,
        fractions: np.ndarray,
        lam: float,
        *,
        epochs: int = 20,
        hidden: int = 64,
        batch_size: int = 128,
        eps_start: float = 1.0,
        eps_end: float = 0.05,
        lr: float = 3e-3,
        seed: int = 0,
        setting: str = "",
        preview_level: int = 0,
    ) -> BanditPolicy:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny MLP: threads only add synchronisation
        try:
            return cls._fit(
                table, fractions, lam, epochs, hidden, batch_size, eps_start, eps_end, lr, seed, setting, preview_level
            )
        finally:
            torch.set_num_threads(threads)

    @classmethod
    def _fit(
        cls,
        table: Any,
        fractions: np.ndarray,
        lam: float,
        epochs: int,
        hidden: int,
        batch_size: int,
        eps_start: float,
        eps_end: float,
        lr: float,
        seed: int,
        setting: str,
        preview_level: int,
    ) -> BanditPolicy:
        import torch
        from torch import nn

        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        feats = np.asarray(table.preview_features(preview_level), dtype=np.float32)
        mean, std = feats.mean(0), feats.std(0) + 1e-6
        x = torch.from_numpy((feats - mean) / std)
        correct = answered_correct(table.correct, preview_level)
        rewards = torch.from_numpy(tradeoff_rewards(correct, fractions, lam).astype(np.float32))
        n, n_arms = rewards.shape
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, n_arms))
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        steps = epochs * ((n + batch_size - 1) // batch_size)
        step = 0
        for _ in range(epochs):
            for idx in torch.randperm(n, generator=gen).split(batch_size):
                eps = eps_start + (eps_end - eps_start) * min(1.0, step / max(1, 0.7 * steps))
                pred = net(x[idx])
                greedy = pred.argmax(1).numpy()
                explore = rng.random(len(idx)) < eps
                arms = np.where(explore, rng.integers(n_arms, size=len(idx)), greedy)
                arms_t = torch.from_numpy(arms)
                chosen = pred.gather(1, arms_t[:, None]).squeeze(1)
                loss = nn.functional.mse_loss(chosen, rewards[idx, arms_t])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
        net.eval()
        return cls(net, mean, std, setting or f"λ={lam:g}", preview_level)

    @classmethod
    def fit_among(
        cls,
        table: Any,
        fractions: Any,
        lam: float,
        *,
        preview_levels: tuple[int, ...] = (0,),
        select_on: Any = None,
        **kwargs: Any,
    ) -> BanditPolicy:
        """One bandit per preview level (``fractions``: a callable ``preview_level -> fractions``), each
        trained on ``table``; keeps the one with the highest greedy reward on ``select_on`` (held-out val
        rows) or, without it, on ``table``. The setting names the preview level when there was a choice."""
        candidates = [cls.fit(table, fractions(p), lam, preview_level=p, **kwargs) for p in preview_levels]
        chosen = _val_best(candidates, table if select_on is None else select_on, fractions, lam)
        if len(preview_levels) > 1:
            chosen.setting += f" preview={chosen.preview_level}"
        return chosen

    def levels_on(self, table: Any) -> np.ndarray:
        """The level this bandit runs for each row of ``table`` (greedy)."""
        return self.levels_for(table.preview_features(self.preview_level))

    def levels_for(self, features: np.ndarray) -> np.ndarray:
        """Greedy level per row of raw preview features."""
        import torch

        with torch.no_grad():
            x = torch.from_numpy(((np.asarray(features, np.float32) - self.mean) / self.std).astype(np.float32))
            return self.net(x.reshape(-1, x.shape[-1])).argmax(1).numpy()

    def predict(self, obs: Any, env: Any) -> Any:
        base = env.unwrapped
        if self._table is not base.table:  # the net is deterministic: answer a whole table in one pass
            if base.preview_level != self.preview_level:
                raise ValueError(
                    f"this bandit was trained on the preview at level {self.preview_level}, the env previews at "
                    f"level {base.preview_level}"
                )
            self._table, self._levels = base.table, self.levels_for(base.table.preview_features(self.preview_level))
        return _action(env, int(self._levels[base.index]))
