"""The Pareto sweep behind ``tnn pareto`` and ``tnn demo``: controllers and baselines on one test split.

For each trade-off λ it trains a controller (one policy per λ) and tunes the ``cascade`` and
``bandit`` baselines on ``val``; it evaluates them, every ``static`` level, ``random`` and the
``oracle`` upper bound on ``test`` through the same loop, and optionally one budget-conditioned
controller (λ drawn per episode and shown in the context) traced across the same λ values. With
several ``observations`` (e.g. ``features`` and ``none``) each controller is trained once per
observation and each λ keeps the one with the higher trade-off reward on ``val``: the preview that
``features`` shows costs its level's price on every input, and where that price outweighs what it
tells, a controller without it does better. The same holds for several ``preview_levels`` (the cascade
and the bandit choose theirs too). With ``select_holdout`` every learnt method — controllers, cascade,
bandit — learns on the first part of ``val`` and is chosen on the held-out rest. Results:
``pareto.csv``, ``pareto.png`` (accuracy against energy, latency and FLOPs), ``pareto.md`` (the table,
with each point's gain over the static front at equal energy), ``metrics.json`` (every evaluation,
the hypervolumes, those gains and timings), ``config.yml`` and ``command.txt``, and ``runs/`` with each
controller's run directory (a finished run is reused, so an interrupted sweep continues; a run
trained with other settings than the sweep's is refused, not reused). The controllers behind the
reported points are copied to ``controllers/<run>/`` (the policy, its observation statistics, the
evaluation env and the run's config, command and metrics, without TensorBoard logs and
checkpoints): small enough to ship, and ``tnn evaluate-controller`` loads them as they are.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from agents.baselines import (
    BanditPolicy,
    CascadePolicy,
    OraclePolicy,
    RandomPolicy,
    StaticPolicy,
    cost_fractions,
    eval_kwargs_for,
)
from agents.env_kwargs import check_env_kwargs
from agents.evaluate import (
    EVAL_COPIES,
    METRICS_VERSION,
    close_all,
    evaluate_policy,
    make_eval_env,
    on_split,
    write_json,
)
from agents.pareto import ParetoPoint, hypervolumes, plot_pareto, static_gaps, write_pareto_csv
from tnn.checkpoint import atomic_write

__all__ = ["CONTROLLER_FILES", "SweepConfig", "baseline_policy", "export_controllers", "run_demo", "run_sweep"]

METRIC_OF = {"energy": "energy_mj", "latency": "latency_ms", "flops": "flops"}


@dataclass
class SweepConfig:
    """A λ sweep over controllers and baselines."""

    env_id: str = "tnn/Throttle-v0"
    env_kwargs: dict = field(default_factory=dict)
    lams: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3)
    algo: str = "ppo"
    timesteps: int = 200_000
    seed: int = 0
    methods: tuple[str, ...] = ("static", "random", "oracle", "cascade", "bandit", "controller")
    budget_conditioned: bool = True
    observations: tuple[str, ...] = ("features",)
    controller_env_ids: tuple[str, ...] = ()
    """env ids the controllers are trained on (default: ``env_id`` alone); with several (e.g. the
    continuous ``tnn/Throttle-v0`` and the discrete ``tnn/ThrottleDiscrete-v0``), each λ keeps the
    val-best, as with ``observations``. The baselines always run on ``env_id``."""
    preview_levels: tuple[int, ...] = ()
    """levels the features preview may run at (default: ``env_kwargs``' ``preview_level``, else 0); the
    features controllers are trained once per level (val-best kept); the cascade and the bandit choose
    theirs among them the same way."""
    select_holdout: float = 0.0
    """fraction of val held out from the controllers' and baselines' training, on which each method's
    candidates are chosen (0: they learn on all of val and are chosen on it too)."""
    hyperparams: dict = field(default_factory=dict)
    progress: bool = True
    title: str = ""

    def __post_init__(self) -> None:
        lams = list(self.lams)
        if not lams or not all(_nonneg_number(lam) for lam in lams):
            raise ValueError(f"lams must be one or more finite numbers >= 0 (e.g. 0.01,0.1,0.3), got {self.lams!r}")
        if isinstance(self.timesteps, bool) or not isinstance(self.timesteps, int) or self.timesteps < 0:
            raise ValueError(f"timesteps must be an int >= 0 (0: the YAML's n_timesteps), got {self.timesteps!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        levels = list(self.preview_levels)
        indices = all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in levels)
        if not indices or len(set(levels)) != len(levels):
            raise ValueError(f"preview_levels must be distinct level indices (ints >= 0), got {self.preview_levels!r}")
        if not 0.0 <= float(self.select_holdout) < 1.0:
            raise ValueError(f"select_holdout must be a fraction in [0, 1), got {self.select_holdout!r}")
        fixed = sorted({"reward", "reward_kwargs", "budget"} & set(self.env_kwargs))
        if fixed:
            raise ValueError(
                f"tnn pareto sweeps λ of the linear reward (correct − λ·cost), so env kwarg(s) {', '.join(fixed)} "
                "would be overridden: drop them from --env-kwargs (a controller on another reward trains with "
                "tnn train-controller --reward, and tnn evaluate-controller measures it)"
            )


def _nonneg_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


class _Run(NamedTuple):
    """One candidate controller of a λ: its label (observation and/or env, when the sweep has several),
    env id, run directory, env kwargs and what goes with it (a TrainConfig, test metrics or a policy)."""

    label: str
    observation: str
    preview_level: int
    env_id: str
    run_dir: Path
    kwargs: dict[str, Any]
    item: Any


def _env_short(env_id: str) -> str:
    """``tnn/ThrottleDiscrete-v0`` → ``ThrottleDiscrete``: how a sweep labels a controller's env."""
    return env_id.rsplit("/", 1)[-1].rsplit("-v", 1)[0]


def _make(env_id: str, kwargs: Mapping[str, Any]) -> Any:
    import gymnasium

    import envs  # noqa: F401

    check_env_kwargs(env_id, kwargs)
    return gymnasium.make(env_id, **kwargs)


def _val_setup(env_id: str, env_kwargs: Mapping[str, Any]) -> tuple[Any, Any, tuple[float, ...]]:
    """The val table, the val env (closed; for :func:`cost_fractions` at any preview level), and the levels."""
    env = _make(env_id, {**env_kwargs, "split": "val"})
    base = env.unwrapped
    env.close()
    return base.table, base, tuple(float(u) for u in base.levels)


def baseline_policy(
    name: str,
    env_id: str,
    env_kwargs: Mapping[str, Any],
    *,
    level: int | None = None,
    lam: float = 0.5,
    seed: int = 0,
) -> Any:
    """A baseline by name, tuned on the ``val`` split of the env when it needs tuning."""
    if name == "static":
        env = _make(env_id, {**env_kwargs, "split": "val"})
        levels = env.unwrapped.levels
        env.close()
        i = len(levels) - 1 if level is None else level
        if not 0 <= i < len(levels):
            raise ValueError(f"static level {i} out of range; the model has levels 0..{len(levels) - 1} ({levels})")
        return StaticPolicy(i, levels[i])
    if name == "random":
        return RandomPolicy(seed)
    if name == "oracle":
        return OraclePolicy()
    if name in ("cascade", "bandit"):
        if not _nonneg_number(lam):
            raise ValueError(f"the {name} is tuned for a trade-off λ, a finite number >= 0 (e.g. 0.1); got {lam!r}")
        table, base, _levels = _val_setup(env_id, env_kwargs)
        if name == "cascade":
            level = base.preview_level
            return CascadePolicy.fit(table, lambda p: cost_fractions(base, p), lam, preview_levels=(level,))
        return BanditPolicy.fit(table, cost_fractions(base), lam, seed=seed, preview_level=base.preview_level)
    raise ValueError(f"unknown baseline {name!r}; choose one of static, random, cascade, bandit, oracle, or a run dir")


def _conditioned_env_kwargs(env_kwargs: Mapping[str, Any], lams: Sequence[float]) -> dict[str, Any]:
    """Training kwargs of the budget-conditioned controller: λ drawn per episode over the sweep's range."""
    return {**env_kwargs, "reward": "linear", "reward_kwargs": {"lam": [float(min(lams)), float(max(lams))]}}


def _pinned_lam_reward(lam: float, lams: Sequence[float]) -> Any:
    """The linear reward at one λ, shown in the context on the training range's scale (λ / max(high, 1))."""
    from envs.rewards import LinearTradeoff

    class PinnedLam(LinearTradeoff):
        def context_value(self) -> Any:
            return self.value / max(float(max(lams)), 1.0)

    return PinnedLam(lam=float(lam))


def run_sweep(cfg: SweepConfig, out: str | Path, *, command: str = "") -> list[ParetoPoint]:
    """Run the sweep into ``out``; see the module docstring."""
    import yaml

    out = Path(out)
    check_env_kwargs(cfg.env_id, cfg.env_kwargs)
    text = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, allow_unicode=True)
    t_start = time.perf_counter()
    env_kwargs, cost_source = _with_profile_file(cfg.env_id, cfg.env_kwargs, out)
    cfg = dataclasses.replace(cfg, env_kwargs=env_kwargs, title=f"{cfg.title}\ncosts: {cost_source}".strip())
    table, val_env, levels = _val_setup(cfg.env_id, env_kwargs)
    _check_preview_levels(cfg, val_env)
    if "controller" in cfg.methods:  # a mismatched or stale controller run fails now, not after the baselines
        _check_action_spaces(cfg)
        for lam in _controller_lams(cfg):
            for r in _controller_runs(cfg, out, lam):
                _check_reusable(r.item, r.run_dir)
    out.mkdir(parents=True, exist_ok=True)  # only once every check has passed: a failed start leaves nothing
    atomic_write(out / "config.yml", lambda fh: fh.write(text.encode()))
    if command:
        atomic_write(out / "command.txt", lambda fh: fh.write((command + "\n").encode()))
    test_kwargs = {**env_kwargs, "split": "test"}
    evaluations: list[dict[str, Any]] = []
    points: list[ParetoPoint] = []
    timings: dict[str, float] = {}

    def run(policy: Any, kwargs: Mapping[str, Any] = test_kwargs, env_id: str = cfg.env_id) -> None:
        kwargs = eval_kwargs_for(policy, kwargs)
        env = make_eval_env(env_id, kwargs, copies=EVAL_COPIES if hasattr(policy, "predict_batch") else 1)
        m = evaluate_policy(policy, env, seed=cfg.seed)
        close_all(env)
        evaluations.append(m)
        points.append(ParetoPoint.from_metrics(m["method"], m["setting"], m))
        _log(
            f"  {m['method']:<10} {m['setting']:<10} accuracy {m['accuracy']:6.2f}%  "
            f"energy {m['energy_mj']:.4g} mJ  latency {m['latency_ms']:.4g} ms  {m['flops'] / 1e6:.3g} MFLOPs"
        )

    def stage(name: str) -> float:
        _log(f"[{time.perf_counter() - t_start:6.1f}s] {name}")
        return time.perf_counter()

    if "static" in cfg.methods:
        t = stage(f"static: {len(levels)} levels")
        for i, u in enumerate(levels):
            run(StaticPolicy(i, u))
        timings["static"] = time.perf_counter() - t
    if "random" in cfg.methods:
        t = stage("random")
        run(RandomPolicy(cfg.seed))
        timings["random"] = time.perf_counter() - t
    if "oracle" in cfg.methods:
        t = stage("oracle (upper bound, reads the labels)")
        run(OraclePolicy())
        timings["oracle"] = time.perf_counter() - t
    fit_table, select_table, tuned_on = table, None, "val"
    if cfg.select_holdout and ("cascade" in cfg.methods or "bandit" in cfg.methods):
        # the baselines learn and are chosen on the same parts of val as the controllers
        cut = 1.0 - cfg.select_holdout
        fit_table = _val_setup(cfg.env_id, {**env_kwargs, "subset": [0.0, cut]})[0]
        select_table = _val_setup(cfg.env_id, {**env_kwargs, "subset": [cut, 1.0]})[0]
        tuned_on = f"the first {cut:.0%} of val"
    previews = _preview_levels(cfg)
    among = ""
    if len(previews) > 1:
        among = f", preview level among {', '.join(map(str, previews))} chosen on "
        among += "the held-out rest" if select_table is not None else "val"

    fractions_at = functools.partial(cost_fractions, val_env)  # preview level -> each level's charge

    if "cascade" in cfg.methods:
        t = stage(f"cascade: τ and fallback level tuned on {tuned_on} per λ{among}")
        for lam in cfg.lams:
            run(CascadePolicy.fit(fit_table, fractions_at, lam, preview_levels=previews, select_on=select_table))
        timings["cascade"] = time.perf_counter() - t
    if "bandit" in cfg.methods:
        t = stage(f"bandit: neural ε-greedy contextual bandit trained on {tuned_on} per λ{among}")
        for lam in cfg.lams:
            bandit = BanditPolicy.fit_among(
                fit_table, fractions_at, lam, preview_levels=previews, select_on=select_table, seed=cfg.seed
            )
            run(bandit)
        timings["bandit"] = time.perf_counter() - t
    selections: list[dict[str, Any]] = []
    chosen_runs: list[Path] = []  # the run directories behind the controller points, in order
    if "controller" in cfg.methods:
        env_ids = _controller_env_ids(cfg)
        pick = []
        if len(cfg.observations) > 1:
            pick.append(f"observation {' / '.join(cfg.observations)}")
        if len(env_ids) > 1:
            pick.append(f"env {' / '.join(map(_env_short, env_ids))}")
        if len(_preview_levels(cfg)) > 1 and "features" in cfg.observations:
            pick.append(f"preview level {' / '.join(map(str, _preview_levels(cfg)))}")
        pick = f", the val-best of {' × '.join(pick)}" if pick else ""
        t = stage(f"{cfg.algo}: one controller per λ{pick}, {cfg.timesteps:,} steps each")
        for lam in cfg.lams:
            chosen = _select(cfg, lam, _train_candidates(cfg, out, lam), selections, conditioned=False)
            chosen_runs.append(chosen.run_dir)
            setting = f"λ={lam:g}" + _setting_suffix(cfg, chosen)
            m = {**chosen.item, "setting": setting}
            evaluations.append(m)
            points.append(ParetoPoint.from_metrics(cfg.algo, setting, m))
            _log(f"  {cfg.algo:<10} {setting:<10} accuracy {m['accuracy']:6.2f}%  energy {m['energy_mj']:.4g} mJ")
        timings[cfg.algo] = time.perf_counter() - t
        if None in _controller_lams(cfg):
            span = f"[{min(cfg.lams)}, {max(cfg.lams)}]"
            t = stage(f"{cfg.algo}-budget: ONE controller, λ drawn per episode in {span}{pick}")
            from agents.evaluate import load_controller

            policies = []
            for r in _train_candidates(cfg, out, None):
                policy, _spec = load_controller(r.run_dir)
                policy.name = f"{cfg.algo}-budget"
                policies.append(r._replace(item=policy))
            for lam in cfg.lams:
                candidates = [r._replace(kwargs=pinned_lam_kwargs(r.kwargs, lam, cfg.lams)) for r in policies]
                chosen = _select(cfg, lam, candidates, selections, conditioned=True)
                chosen_runs.append(chosen.run_dir)
                chosen.item.setting = f"λ={lam:g}" + _setting_suffix(cfg, chosen)
                run(chosen.item, on_split(chosen.kwargs, "test"), chosen.env_id)
            timings[f"{cfg.algo}-budget"] = time.perf_counter() - t

    if "controller" in cfg.methods:
        export_controllers(chosen_runs, out / "controllers")
    write_pareto_csv(out / "pareto.csv", points)
    plot_pareto(points, out / "pareto.png", title=cfg.title)
    hv = {m: hypervolumes(points, m) for m in ("energy_mj", "latency_ms", "flops")}
    has_static = any(p.method == "static" for p in points)
    gaps = {m: static_gaps(points, m) for m in ("energy_mj", "latency_ms", "flops")} if has_static else {}
    for i, m in enumerate(evaluations):
        m["gap_vs_static_pt"] = {k: v[i] for k, v in gaps.items()}
    total = time.perf_counter() - t_start
    write_json(
        out / "metrics.json",
        {
            "version": METRICS_VERSION,
            "evaluations": evaluations,
            "hypervolume": hv,
            "selection": selections,
            "seconds": timings | {"total": total},
        },
    )
    _log(f"[{total:6.1f}s] wrote {out / 'pareto.csv'}, {out / 'pareto.png'}, {out / 'metrics.json'}")
    table = markdown_table(points, hv["energy_mj"], gaps.get("energy_mj"))
    if selections:
        table += "\n\n" + selection_table(selections, cfg.select_holdout)
    if chosen_runs:
        names = ", ".join(f"`{n}`" for n in dict.fromkeys(d.name for d in chosen_runs))
        table += (
            f"\n\nThe controllers behind these points are in `controllers/` ({names}); "
            f"`tnn evaluate-controller {out / 'controllers' / chosen_runs[0].name}` evaluates one on the test split."
        )
    note = (
        f"`{command}` — test split, means over inputs: energy and FLOPs per input, latency of the batch call "
        f"an input is part of; costs: {cost_source}\n\n"
        if command
        else ""
    )
    atomic_write(out / "pareto.md", lambda fh: fh.write((note + table + "\n").encode()))
    _log(table)
    return points


CONTROLLER_FILES = ("model.zip", "vecnormalize.pkl", "eval_env.json", "config.yml", "command.txt", "metrics.json")
"""What ``controllers/<run>/`` keeps of a run directory: enough to load and evaluate the controller."""


def export_controllers(run_dirs: Sequence[Path], dest: Path) -> list[Path]:
    """Copy the loadable part of each run directory (:data:`CONTROLLER_FILES`) to ``dest/<run name>/``.

    ``dest`` is replaced as a whole (built beside it, then renamed), so it never mixes controllers of
    two sweeps and an interrupted export leaves the previous one intact. Returns the copies.
    """
    import shutil
    import tempfile

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    copies = []
    try:
        for run_dir in dict.fromkeys(Path(d) for d in run_dirs):
            target = tmp / run_dir.name
            target.mkdir()
            for name in CONTROLLER_FILES:
                if (run_dir / name).is_file():
                    shutil.copy2(run_dir / name, target / name)
            copies.append(dest / run_dir.name)
        old = dest.with_name(f".{dest.name}-old")
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return copies


def _controller_lams(cfg: SweepConfig) -> list[float | None]:
    """The λ of every controller the sweep trains; None stands for the budget-conditioned one."""
    conditioned = cfg.budget_conditioned and len(cfg.lams) > 1
    return [*cfg.lams, *([None] if conditioned else [])]


def _controller_env_ids(cfg: SweepConfig) -> tuple[str, ...]:
    return tuple(cfg.controller_env_ids) or (cfg.env_id,)


def _base_preview_level(cfg: SweepConfig) -> int:
    """The preview level of ``cfg.env_kwargs`` (0 unless it names one)."""
    return int(cfg.env_kwargs.get("preview_level", 0))


def _check_preview_levels(cfg: SweepConfig, val_env: Any) -> None:
    """Refuse preview levels the model lacks, or that nothing previews at, before anything is written."""
    n = len(val_env.levels)
    bad = [p for p in _preview_levels(cfg) if p >= n]
    if bad:
        raise ValueError(f"preview levels {bad} out of range: the model has levels 0..{n - 1} ({val_env.levels})")
    if val_env.observation != "features" and any(_preview_levels(cfg)):
        raise ValueError(
            f"--preview-levels needs the features observation; the env kwargs set observation={val_env.observation!r}"
        )


def _preview_levels(cfg: SweepConfig) -> tuple[int, ...]:
    """The preview levels the sweep tries: ``cfg.preview_levels``, else the env kwargs' own."""
    return tuple(cfg.preview_levels) or (_base_preview_level(cfg),)


ACTIONS = {"tnn/Throttle-v0": "continuous", "tnn/ThrottleDiscrete-v0": "discrete"}
"""The action space of each env id this package registers."""
ALGO_ACTIONS = {
    "ppo": ("continuous", "discrete"),
    "a2c": ("continuous", "discrete"),
    "sac": ("continuous",),
    "dqn": ("discrete",),
}
"""The action spaces each algorithm can train on (SB3: SAC needs a Box, DQN a Discrete space)."""


def _check_action_spaces(cfg: SweepConfig) -> None:
    """Refuse a controller env whose action space the algorithm cannot train on, before anything runs."""
    allowed = ALGO_ACTIONS.get(cfg.algo)
    for env_id in _controller_env_ids(cfg):
        kind = ACTIONS.get(env_id)
        if allowed is not None and kind is not None and kind not in allowed:
            fits = ", ".join(e for e, k in ACTIONS.items() if k in allowed)
            raise ValueError(
                f"--algo {cfg.algo} cannot train on {env_id} ({kind} actions); use {fits} "
                f"(--env-id / --controller-env-ids)"
            )


def _setting_suffix(cfg: SweepConfig, r: _Run) -> str:
    """What a controller point's setting adds to its λ: the observation and env it was chosen with."""
    suffix = f" obs={r.observation}" if len(cfg.observations) > 1 else ""
    if r.observation == "features" and len(_preview_levels(cfg)) > 1:
        suffix += f" preview={r.preview_level}"
    named = len(_controller_env_ids(cfg)) > 1 or r.env_id != cfg.env_id  # the baselines' env goes unnamed
    return suffix + (f" env={_env_short(r.env_id)}" if named else "")


def _controller_runs(cfg: SweepConfig, out: Path, lam: float | None) -> list[_Run]:
    """The candidate controllers for ``lam`` (item: their TrainConfig), one per observation (features: per
    preview level) and env id; ``lam=None``: the budget-conditioned controller (λ drawn per episode).
    Runs on ``cfg.env_id`` at the env kwargs' preview level are named as in a sweep of that env alone (so
    they are reused); runs on another env or preview level add it to their name."""
    from agents.train import TrainConfig

    multi = len(cfg.observations) > 1
    env_ids = _controller_env_ids(cfg)
    previews, base_level = _preview_levels(cfg), _base_preview_level(cfg)
    combos = [
        (e, o, p) for e in env_ids for o in cfg.observations for p in (previews if o == "features" else (base_level,))
    ]
    runs = []
    for env_id, obs_name, level in combos:
        common = {
            "algo": cfg.algo,
            "env_id": env_id,
            "hyperparams": dict(cfg.hyperparams),
            "seed": cfg.seed,
            "progress": cfg.progress,
        }
        kwargs = _with_observation(cfg.env_kwargs, obs_name, multi)
        if obs_name == "features" and level != base_level:
            kwargs["preview_level"] = level
        elif obs_name != "features":  # no preview to place
            kwargs.pop("preview_level", None)
        if cfg.select_holdout:  # learns on the first part of val only
            kwargs["subset"] = [0.0, 1.0 - cfg.select_holdout]
        if lam is None:
            stem = f"{cfg.algo}-conditioned"
            tc = TrainConfig(
                **common,
                reward="linear",
                env_kwargs=_conditioned_env_kwargs(kwargs, cfg.lams),
                timesteps=2 * cfg.timesteps,  # one policy for every λ: a harder task, twice the steps
                evaluate_test=False,
                setting="conditioned",
            )
        else:
            stem = f"{cfg.algo}-lam{lam:g}"
            tc = TrainConfig(**common, lam=lam, env_kwargs=kwargs, timesteps=cfg.timesteps)
        stem += f"-{obs_name}" if multi else ""
        stem += f"-preview{level}" if level != base_level else ""
        stem += f"-{_env_short(env_id).lower()}" if env_id != cfg.env_id else ""
        stem += f"-fit{1.0 - cfg.select_holdout:g}" if cfg.select_holdout else ""
        named = len(env_ids) > 1 or env_id != cfg.env_id
        shown = obs_name == "features" and len(previews) > 1
        label = " ".join([obs_name] * multi + [f"preview {level}"] * shown + [_env_short(env_id)] * named) or obs_name
        runs.append(_Run(label, obs_name, level, env_id, out / "runs" / stem, kwargs, tc))
    return runs


def _train_candidates(cfg: SweepConfig, out: Path, lam: float | None) -> list[_Run]:
    """Train (or reuse) the candidate controllers of ``lam`` (or with ``lam=None`` the budget-conditioned
    one); item: their test metrics (empty for the conditioned controller, evaluated per λ afterwards)."""
    return [r._replace(item=_train_or_reuse(r.item, r.run_dir)) for r in _controller_runs(cfg, out, lam)]


def _with_observation(env_kwargs: Mapping[str, Any], observation: str, multi: bool) -> dict[str, Any]:
    """The env kwargs of one candidate controller: ``observation`` set (left out when it is the env
    kwargs' own and the sweep has one observation, so such runs keep the kwargs they were trained with)."""
    if multi or observation != env_kwargs.get("observation", "features"):
        return {**env_kwargs, "observation": observation}
    return dict(env_kwargs)


def pinned_lam_kwargs(env_kwargs: Mapping[str, Any], lam: float, lams: Sequence[float]) -> dict[str, Any]:
    """Env kwargs with a budget-conditioned controller's reward pinned to ``lam`` (its own kwargs dropped).

    ``lams`` is the λ range the controller trained on: the context shows λ on that range's scale.
    """
    kwargs = {**env_kwargs, "reward": _pinned_lam_reward(lam, lams)}
    kwargs.pop("reward_kwargs", None)
    return kwargs


def _val_score(cfg: SweepConfig, lam: float, policy: Any, kwargs: Mapping[str, Any], env_id: str) -> dict[str, Any]:
    """``policy`` over the whole val split: accuracy, cost, and its mean trade-off reward at ``lam``.

    The score is accuracy − λ · (mean cost / u=1 cost), the linear reward averaged per input, with the
    cost metric the env charges; it decides between candidates without looking at the test split.
    """
    holdout = [1.0 - cfg.select_holdout, 1.0] if cfg.select_holdout else None  # never learnt on
    val_kwargs = on_split(kwargs, "val", holdout)
    env = make_eval_env(env_id, val_kwargs, copies=EVAL_COPIES if hasattr(policy, "predict_batch") else 1)
    base = (env[0] if isinstance(env, list) else env).unwrapped
    metric, full = base.cost_metric, base._full[base.cost_metric]
    m = evaluate_policy(policy, env, seed=cfg.seed)
    close_all(env)
    cost = m[METRIC_OF[metric]] * m["served"] / max(m["inputs"], 1) / full
    return {"accuracy": m["accuracy"], "cost": cost, "score": m["accuracy"] / 100.0 - lam * cost}


def _select(
    cfg: SweepConfig,
    lam: float,
    candidates: Sequence[_Run],
    selections: list[dict[str, Any]],
    *,
    conditioned: bool,
) -> _Run:
    """The candidate with the best val score, recorded in ``selections`` and logged.

    ``candidates``' items are their test metrics — or, for the budget-conditioned controller, the
    policy. One candidate is returned as it is.
    """
    if len(candidates) == 1:
        return candidates[0]
    from agents.evaluate import load_controller

    rows = []
    for r in candidates:
        if conditioned:
            policy, kwargs, env_id = r.item, r.kwargs, r.env_id
        else:  # the env its test evaluation used (eval_env.json), on the val split
            policy, spec = load_controller(r.run_dir)
            kwargs, env_id = spec["kwargs"], spec.get("id", r.env_id)
        score = _val_score(cfg, lam, policy, kwargs, env_id)
        rows.append({"observation": r.label, "env_id": r.env_id, "run": r.run_dir.name, **score})
    best = max(range(len(rows)), key=lambda i: rows[i]["score"])
    method = f"{cfg.algo}-budget" if conditioned else cfg.algo
    selections.append({"method": method, "lam": lam, "chosen": rows[best]["observation"], "candidates": rows})
    desc = ", ".join(f"{r['observation']} {r['score']:.4f}" for r in rows)
    _log(f"  {method} λ={lam:g}: val score (accuracy − λ·cost) {desc} → {rows[best]['observation']}")
    return candidates[best]


def selection_table(selections: Sequence[Mapping[str, Any]], holdout: float = 0.0) -> str:
    """Which candidate each controller point uses, chosen on val: a markdown table."""
    where = (
        f"on the last {holdout:.0%} of the val split (held out from their training)" if holdout else "on the val split"
    )
    lines = [
        f"Controller candidate (observation, and env where several) chosen per λ {where} "
        "(score = accuracy − λ · cost / u=1 cost):",
        "",
        "| method | λ | candidate | val accuracy (%) | val cost (× u=1) | val score | chosen |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for s in selections:
        for c in s["candidates"]:
            chosen = "✓" if c["observation"] == s["chosen"] else ""
            lines.append(
                f"| {s['method']} | {s['lam']:g} | {c['observation']} | {c['accuracy']:.2f} | {c['cost']:.4f} "
                f"| {c['score']:.4f} | {chosen} |"
            )
    return "\n".join(lines)


def _with_profile_file(env_id: str, env_kwargs: Mapping[str, Any], out: Path) -> tuple[dict[str, Any], str]:
    """Pin a FLOPs-model fallback profile to a file in ``out`` (a measured one is read from its own file).

    Every env of the sweep (and each run's ``eval_env.json``) then reads the same profile, and the
    fallback is not recomputed per env. Also returns a one-line description of the cost source.
    """
    kwargs = dict(env_kwargs)
    env = _make(env_id, {**kwargs, "split": "val"})
    base = env.unwrapped
    env.close()
    source = str(getattr(base, "cost_source", ""))
    device = base.profile.device.get("name", "?")
    if kwargs.get("profile") is not None or base.profile.latency_source == "measured":  # a file: nothing to pin
        return kwargs, f"profile measured on {device} (latency measured, energy source {base.profile.energy_source})"
    _log(f"note: {source}; costs come from a FLOPs model, not a measurement")
    out.mkdir(parents=True, exist_ok=True)
    kwargs["profile"] = str(base.profile.save(out / "profile-flops-model.json"))
    return kwargs, "FLOPs model (no measured profile found), not a measurement"


def _check_reusable(tc: Any, run_dir: Path) -> None:
    """Refuse a run directory holding (part of) a controller trained with other settings than ``tc``.

    A rerun of the sweep into the same ``--out`` reuses finished runs and resumes interrupted ones;
    one trained for other env kwargs, steps, hyperparameters or seed would otherwise enter the new
    ``pareto.csv`` as if it were this sweep's. A directory with nothing trained in it is left alone.
    """
    from agents.train import config_changes, read_run_config, run_config

    config = run_config(tc)  # also checks the hyperparameters and env kwargs, before anything runs
    trained = (run_dir / "model.zip").is_file() or (run_dir / "checkpoints").is_dir()
    if not trained:
        return
    changes = config_changes(read_run_config(run_dir), config, ignore=("version", "train_config"))
    if changes:
        raise ValueError(
            f"{run_dir} holds a controller trained with other settings than this sweep's ({'; '.join(changes)}); "
            f"run the sweep into a new --out, or delete {run_dir} to retrain it"
        )


def _train_or_reuse(tc: Any, run_dir: Path) -> dict[str, Any]:
    """A finished run's test metrics, else train (resuming from its checkpoints when there are some).

    ``run_sweep`` has checked every run directory with :func:`_check_reusable` before it started.
    """
    import json

    from agents.train import train_controller

    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file() and (run_dir / "model.zip").is_file():
        m = json.loads(metrics_path.read_text())
        if m.get("test") or not tc.evaluate_test:
            _log(f"  reusing {run_dir}")
            return m.get("test", {})
    resume = (run_dir / "checkpoints").is_dir() or (run_dir / "model.zip").is_file()
    return train_controller(tc, run_dir, resume=resume, command=_train_command(tc, run_dir)).metrics.get("test", {})


def _train_command(tc: Any, run_dir: Path) -> str:
    """The ``tnn train-controller`` command line that trains this run on its own."""
    import json
    import shlex

    argv = ["tnn", "train-controller", "--algo", tc.algo, "--reward", tc.reward, "--seed", str(tc.seed)]
    if tc.env_id:
        argv += ["--env-id", tc.env_id]
    if tc.lam is not None:
        argv += ["--lam", f"{tc.lam:g}"]
    argv += ["--timesteps", str(tc.timesteps), "--env-kwargs", json.dumps(tc.env_kwargs, ensure_ascii=False)]
    if tc.hyperparams:
        argv += ["--hyperparams", json.dumps(tc.hyperparams)]
    if not tc.evaluate_test:
        argv.append("--no-test")
    return shlex.join([*argv, "--out", str(run_dir)])


def markdown_table(
    points: Sequence[ParetoPoint], hv: Mapping[str, float] | None = None, gaps: Sequence[float | None] | None = None
) -> str:
    """The Pareto points as a markdown table (accuracy %, costs per input, gain over static at equal energy)."""
    head = "| method | setting | accuracy (%) | energy (mJ) | latency (ms) | MFLOPs |"
    rule = "|---|---|---:|---:|---:|---:|"
    if gaps is not None:
        head, rule = head + " Δ vs static at equal energy (pt) |", rule + "---:|"
    lines = [head, rule]
    for i, p in enumerate(points):
        row = f"| {p.method} | {p.setting} | {p.accuracy:.2f} | {p.energy_mj:.4g} | {p.latency_ms:.4g} "
        row += f"| {p.flops / 1e6:.3g} |"
        if gaps is not None:
            row += " |" if gaps[i] is None else f" {gaps[i]:+.2f} |"
        lines.append(row)
    if hv:
        lines.append("")
        lines.append(
            "hypervolume (area under the accuracy–energy front; energy / u=1 energy, accuracy as a fraction): "
            + ", ".join(f"{k} {v:.4f}" for k, v in hv.items())
        )
    return "\n".join(lines)


def _log(msg: str) -> None:
    print(msg, flush=True)


DEMO_LAMS = (0.01, 0.03, 0.1, 0.3)
DEMO_TIMESTEPS = 200_000
DEMO_OBSERVATIONS = ("features", "none")  # with and without the preview; val decides per λ


def run_demo(out: str | Path = "results/demo", *, timesteps: int | None = None, command: str = "") -> list[ParetoPoint]:
    """The embedded default: the shipped Fashion-MNIST TNN, its CPU profile, real Fashion-MNIST data."""
    cfg = SweepConfig(
        lams=DEMO_LAMS,
        timesteps=DEMO_TIMESTEPS if timesteps is None else timesteps,
        observations=DEMO_OBSERVATIONS,
        title="Fashion-MNIST VGG-11 TNN (shipped), test split: accuracy vs cost per input",
    )
    return run_sweep(cfg, out, command=command or "tnn demo")
