"""``tnn`` subcommands for controllers: train-controller, evaluate-controller, pareto, demo.

Handlers import SB3, gymnasium and matplotlib lazily, so ``tnn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from tnn.cli import json_object_type

__all__ = ["add_cli"]


_json_arg = json_object_type('{"cost_metric": "latency"}')  # --env-kwargs
_hyperparams_arg = json_object_type('{"gamma": 0.9, "policy_kwargs": {"net_arch": [64, 64]}}')


def _cmd_train(args: argparse.Namespace) -> int:
    from agents.train import TrainConfig, train_controller

    cfg = TrainConfig(
        algo=args.algo,
        env_id=args.env_id or "",
        reward=args.reward,
        lam=args.lam,
        env_kwargs=args.env_kwargs or {},
        hyperparams=args.hyperparams or {},
        timesteps=args.timesteps or 0,
        seed=args.seed,
        n_envs=args.n_envs or 0,
        progress=not args.no_progress,
        evaluate_test=not args.no_test,
    )
    out = args.out or f"runs/controllers/{cfg.algo}-{cfg.reward}" + (f"-lam{cfg.lam:g}" if cfg.lam is not None else "")
    result = train_controller(cfg, out, resume=args.resume, command=shlex.join(["tnn", *args.argv]))
    test = result.metrics.get("test")
    if test:
        print(_summary(test))
    print(f"wrote {result.out}")
    return 0


def _summary(m: dict[str, Any]) -> str:
    hist = " ".join(f"{u}:{c}" for u, c in m["u_histogram"].items() if c)
    return (
        f"{m['method']} {m['setting']}: accuracy {m['accuracy']:.2f}% | energy {m['energy_mj']:.4g} mJ/input | "
        f"latency {m['latency_ms']:.4g} ms (batch call) | {m['flops'] / 1e6:.3g} MFLOPs/input | "
        f"budget violations {m['budget_violations']}/{m['episodes']} episodes | u histogram {hist}"
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from agents.evaluate import EVAL_COPIES, close_all, evaluate_policy, load_controller, make_eval_env, write_json

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    target = Path(args.target)
    given = args.env_kwargs or {}
    if given.get("split", "test") != "test":
        why = "controllers train and baselines tune on 'val'"
        raise ValueError(f"evaluate-controller evaluates on split 'test' ({why}): drop split")
    if "subset" in given:
        raise ValueError("evaluate-controller scores the whole test split: drop subset")
    conditioned = None
    if target.is_dir():
        policy, spec = load_controller(target)
        conditioned = _lam_range(spec["kwargs"])
    takes = {"static": {"level"}, "cascade": {"lam"}, "bandit": {"lam"}}.get(args.target, set())
    if conditioned:
        takes = {"lam"}
    for flag in ("level", "lam"):
        if getattr(args, flag) is not None and flag not in takes:
            what = "a trained controller" if target.is_dir() else f"the {args.target} baseline"
            users = "static takes" if flag == "level" else "cascade, bandit and budget-conditioned controllers take"
            raise ValueError(f"--{flag} does not apply to {what} (only {users} it): drop it")
    if target.is_dir():
        env_id, kwargs = spec["id"], {**spec["kwargs"], **given}
        if args.env_id:
            env_id = args.env_id
        if conditioned:
            low, high = conditioned
            if args.lam is None:
                raise ValueError(
                    f"{target} is a budget-conditioned controller (it trained on λ drawn per episode in "
                    f"[{low:g}, {high:g}] and reads λ in its context): pass --lam to evaluate it at one trade-off"
                )
            from agents.sweep import pinned_lam_kwargs

            kwargs = pinned_lam_kwargs(kwargs, args.lam, [low, high])
            policy.setting = f"λ={args.lam:g}"
        from agents.evaluate import check_same_network

        check_same_network(spec["kwargs"], kwargs, run=target)  # before the env builds its tables
        out = args.out or target / "evaluation.json"
    else:
        from agents.baselines import eval_kwargs_for
        from agents.sweep import baseline_policy

        env_id = args.env_id or "tnn/Throttle-v0"
        kwargs = {**given, "split": "test"}
        lam = 0.5 if args.lam is None else args.lam
        policy = baseline_policy(args.target, env_id, kwargs, level=args.level, lam=lam, seed=args.seed)
        kwargs = eval_kwargs_for(policy, kwargs)
        out = args.out
    env = make_eval_env(env_id, kwargs, copies=EVAL_COPIES if hasattr(policy, "predict_batch") else 1)
    metrics = evaluate_policy(policy, env, seed=args.seed, progress=not args.no_progress)
    close_all(env)
    print(_summary(metrics))
    if out:
        write_json(out, metrics)
        print(f"wrote {out}")
    return 0


def _lam_range(env_kwargs: dict[str, Any]) -> tuple[float, float] | None:
    """``(low, high)`` when ``env_kwargs`` draw the linear reward's λ per episode (a budget-conditioned run)."""
    lam = (env_kwargs.get("reward_kwargs") or {}).get("lam") if isinstance(env_kwargs, dict) else None
    if isinstance(lam, list | tuple) and len(lam) == 2:
        return float(lam[0]), float(lam[1])
    return None


def _lams(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, e.g. 0,0.2,0.5; got {text!r}") from None


def _observations(text: str) -> list[str]:
    from envs.throttle import OBSERVATIONS

    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in OBSERVATIONS]
    if bad or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct comma-separated observations from {', '.join(OBSERVATIONS)}; got {text!r}"
        )
    return names


def _env_ids(text: str) -> list[str]:
    import envs

    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in envs.ENV_IDS]
    if bad or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct comma-separated env ids from {', '.join(envs.ENV_IDS)}; got {text!r}"
        )
    return names


def _preview_levels(text: str) -> list[int]:
    try:
        levels = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        levels = []
    if not levels or len(set(levels)) != len(levels) or min(levels) < 0:
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated level indices, e.g. 0,2; got {text!r}")
    return levels


def _cmd_pareto(args: argparse.Namespace) -> int:
    from agents.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(
        env_id=args.env_id or ("tnn/ThrottleDiscrete-v0" if args.algo == "dqn" else "tnn/Throttle-v0"),
        env_kwargs=args.env_kwargs or {},
        lams=tuple(args.lams),
        algo=args.algo,
        timesteps=args.timesteps,
        seed=args.seed,
        methods=tuple(args.methods),
        budget_conditioned=not args.no_budget_conditioned,
        observations=tuple(args.observations),
        controller_env_ids=tuple(args.controller_env_ids or ()),
        preview_levels=tuple(args.preview_levels or ()),
        select_holdout=args.select_holdout,
        progress=not args.no_progress,
        title=args.title or "",
    )
    run_sweep(cfg, args.out, command=shlex.join(["tnn", *args.argv]))
    return 0


def _cmd_bound(args: argparse.Namespace) -> int:
    import math

    from agents.bound import bounds_for_env, markdown
    from agents.evaluate import write_json
    from tnn.checkpoint import atomic_write

    if not args.budgets or any(not (math.isfinite(b) and b > 0.0) for b in args.budgets):
        raise ValueError(f"--budgets are fractions of the u=1 cost (finite, > 0; e.g. 0.3,0.5), got {args.budgets}")
    if args.drop is not None and not (math.isfinite(args.drop) and args.drop >= 0.0):
        raise ValueError(f"--drop is accuracy points below u=1 (>= 0, e.g. 0.5), got {args.drop}")
    rows, probes = bounds_for_env(
        args.env_kwargs or {},
        args.budgets,
        env_id=args.env_id,
        max_stages=args.max_stages,
        grid=args.grid,
        bands=args.bands,
        ceiling_bands=args.ceiling_bands,
        probe=args.probe,
    )
    text = markdown(rows, drop=args.drop, probes=probes)
    print(text)
    if args.out:
        out = Path(args.out)
        command = shlex.join(["tnn", *args.argv])
        saved = {"command": command, "rows": rows} | ({"probes": probes} if probes else {})
        write_json(out.with_suffix(".json"), saved)
        atomic_write(out.with_suffix(".md"), lambda fh: fh.write(f"`{command}`\n\n{text}\n".encode()))
        print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from agents.sweep import run_demo

    run_demo(args.out, timesteps=args.timesteps, command=shlex.join(["tnn", *args.argv]))
    return 0


def add_cli(sub: Any) -> None:
    """Register the controller subcommands on ``tnn``'s subparsers."""
    from agents.baselines import BASELINES

    p = sub.add_parser("train-controller", help="train a throttling controller (SB3: ppo, a2c, sac, dqn)")
    p.add_argument("--algo", default="ppo", choices=["ppo", "a2c", "sac", "dqn"])
    p.add_argument("--env-id", default=None, help="default tnn/Throttle-v0 (tnn/ThrottleDiscrete-v0 for dqn)")
    p.add_argument(
        "--reward",
        default="linear",
        help="reward of the env: a built-in name (default: linear) or your own as 'module:attr' "
        "(a class gets --env-kwargs' reward_kwargs; the module must be importable, e.g. PYTHONPATH=.)",
    )
    p.add_argument("--lam", type=float, default=None, help="trade-off weight λ of the linear reward")
    p.add_argument("--env-kwargs", type=_json_arg, default=None, metavar="JSON", help="extra gymnasium.make kwargs")
    p.add_argument(
        "--hyperparams", type=_hyperparams_arg, default=None, metavar="JSON", help="override YAML hyperparameters"
    )
    p.add_argument("--timesteps", type=int, default=None, help="environment steps (default: the YAML's)")
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: the YAML's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default runs/controllers/ALGO-REWARD[-lamX])")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--no-test", action="store_true", help="skip the final evaluation on the test split")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate-controller", help="evaluate a controller run or a baseline on the test split")
    p.add_argument("target", help=f"a train-controller run directory, or a baseline: {', '.join(BASELINES)}")
    p.add_argument("--env-id", default=None)
    p.add_argument("--env-kwargs", type=_json_arg, default=None, metavar="JSON")
    p.add_argument("--level", type=int, default=None, help="static: the level index (default: the top level)")
    p.add_argument(
        "--lam",
        type=float,
        default=None,
        help="cascade/bandit: trade-off λ they are tuned for on val (default 0.5); a budget-conditioned "
        "controller: the λ to evaluate it at",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="metrics JSON (default for a run: RUN_DIR/evaluation.json)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("pareto", help="sweep λ for a controller and the baselines; pareto.csv + figure")
    p.add_argument("--out", required=True, help="output directory (pareto.csv, pareto.png, metrics.json, runs/)")
    p.add_argument(
        "--env-id",
        default=None,
        help="default tnn/Throttle-v0 (tnn/ThrottleDiscrete-v0 for dqn); controllers and baselines all use it",
    )
    p.add_argument("--env-kwargs", type=_json_arg, default=None, metavar="JSON", help="checkpoint, profile, ...")
    p.add_argument("--lams", type=_lams, default=[0.003, 0.01, 0.03, 0.1, 0.3], help="comma-separated λ values")
    p.add_argument("--algo", default="ppo", choices=["ppo", "a2c", "sac", "dqn"])
    p.add_argument("--timesteps", type=int, default=200_000, help="steps per controller (0: the YAML's n_timesteps)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=["static", "random", "oracle", "cascade", "bandit", "controller"],
        choices=["static", "random", "oracle", "cascade", "bandit", "controller"],
    )
    p.add_argument("--no-budget-conditioned", action="store_true", help="skip the one-policy-for-all-λ controller")
    p.add_argument(
        "--observations",
        type=_observations,
        default=["features"],
        metavar="OBS[,OBS]",
        help="controller observations to train (features, pixels, none); with several, each λ keeps the one "
        "with the best val trade-off reward (e.g. features,none: whether the preview pays for its cost)",
    )
    p.add_argument(
        "--controller-env-ids",
        type=_env_ids,
        default=None,
        metavar="ID[,ID]",
        help="env ids to train the controllers on (default: --env-id); with several, each λ keeps the one with "
        "the best val trade-off reward (e.g. tnn/Throttle-v0,tnn/ThrottleDiscrete-v0: continuous u or one "
        "action per level); the baselines run on --env-id",
    )
    p.add_argument(
        "--preview-levels",
        type=_preview_levels,
        default=None,
        metavar="I[,I]",
        help="levels (indices) the features preview may run at (default: the env's preview_level, 0): the "
        "features controllers are trained once per level and each λ keeps the val-best; the cascade and the "
        "bandit choose theirs among them; a deeper preview costs more and tells more",
    )
    p.add_argument(
        "--select-holdout",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="hold this fraction of val out of the training of the controllers, cascade and bandit, and choose "
        "between each one's candidates on it (e.g. 0.2; default 0: they learn on all of val and are chosen on it)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--title", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_pareto)

    p = sub.add_parser(
        "cascade-bound",
        help="what confidence cascades and routers reach within energy budgets, chosen on val and on test "
        "(is the network or the controller the limit?)",
    )
    p.add_argument("--env-kwargs", type=_json_arg, default=None, metavar="JSON", help="checkpoint, profile, ...")
    p.add_argument("--env-id", default="tnn/Throttle-v0")
    p.add_argument("--budgets", type=_lams, default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8], help="fractions of the u=1 cost")
    p.add_argument("--max-stages", type=int, default=3, help="levels a cascade may run in turn (default 3)")
    p.add_argument("--grid", type=int, default=21, help="confidence thresholds tried per stage (quantiles)")
    p.add_argument("--bands", type=int, default=20, help="confidence bands of a router chosen on val (quantiles)")
    p.add_argument("--ceiling-bands", type=int, default=50, help="confidence bands of the routers chosen on test")
    p.add_argument("--drop", type=float, default=None, help="report whether u=1 accuracy − DROP pt is reached")
    p.add_argument(
        "--probe",
        action="store_true",
        help="also route on a logistic-regression probe of each preview's features (fitted on val): does reading "
        "the features, not just the confidence, lift the ceiling?",
    )
    p.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    p.set_defaults(func=_cmd_bound)

    p = sub.add_parser("demo", help="the main job: PPO controllers vs baselines on the shipped Fashion-MNIST TNN")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--timesteps", type=int, default=None, help="steps per controller (default: the demo's)")
    p.set_defaults(func=_cmd_demo)
