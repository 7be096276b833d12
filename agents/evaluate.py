"""Evaluate a controller or a baseline on the test split: every test input exactly once, in order.

One loop serves trained SB3 controllers and baselines alike (``predict(obs, env) -> action``), so
their numbers are comparable: accuracy, mean energy / latency / FLOPs per input as the env charged
them (preview included), budget violations, and a histogram of the chosen u.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agents.env_kwargs import check_env_kwargs
from agents.safe_load import RunFileError, load_model, load_pickle
from tnn.checkpoint import atomic_write, describe_error

__all__ = [
    "EVAL_COPIES",
    "METRICS_VERSION",
    "NetworkMismatchError",
    "SB3Policy",
    "SpaceMismatchError",
    "check_same_network",
    "close_all",
    "evaluate_policy",
    "load_controller",
    "load_vecnormalize",
    "make_eval_env",
    "network_changes",
    "on_split",
    "run_normalizes",
    "write_json",
]

METRICS_VERSION = 1
EVAL_COPIES = 8  # lockstep env copies when a policy predicts in batches (SB3 controllers)


class SpaceMismatchError(ValueError):
    """A policy trained on other observation/action spaces than the env it is evaluated on."""


class NetworkMismatchError(ValueError):
    """A controller evaluated on another network than the one it was trained on."""


NETWORK_FIELDS = ("dataset", "arch", "model_kwargs", "levels")
"""Checkpoint card fields that make two networks the same to a controller: the data its inputs come
from, the architecture (and its settings: width, classes, input size) and the levels its actions run."""


def _describe_network(card: Mapping[str, Any], path: Path) -> str:
    levels = card.get("levels") or []
    return f"{card.get('dataset', '?')} {card.get('arch', '?')} with {len(levels)} levels ({path})"


def network_changes(
    trained: Mapping[str, Any], evaluated: Mapping[str, Any], evaluated_card: Mapping[str, Any] | None = None
) -> tuple[list[str], str, str]:
    """How the network that env kwargs ``evaluated`` build differs from the one a controller trained on
    with env kwargs ``trained`` (its ``eval_env.json``); ``evaluated_card``: that network's card, if at hand.

    Returns ``(changes, trained network, evaluated network)``; ``changes`` is empty when the controller's
    observations and actions mean what they meant in training. Compared: the checkpoint cards'
    :data:`NETWORK_FIELDS`; for a ``features`` controller also the preview level and the weights
    themselves (the file's SHA-256), since it reads pooled activations whose channels another training
    run (another seed) orders and scales differently. Not compared: the cost profile (another device or
    batch size of the same network is a deployment question a controller may be asked) and, for a
    ``none``/``pixels`` controller, the weights of a network of the same dataset, architecture and
    levels (another seed). Runs record a checkpoint path (or none: the default); the trained network's
    card is read from that file, so old runs need no new field.
    """
    from envs.throttle import resolve_checkpoint
    from tnn.checkpoint import read_checkpoint
    from tnn.table import file_sha256

    here = resolve_checkpoint(evaluated.get("checkpoint"))
    try:
        there = resolve_checkpoint(trained.get("checkpoint"))
    except (FileNotFoundError, ValueError):
        name = trained.get("checkpoint") or "the default checkpoint"
        raise NetworkMismatchError(
            f"the checkpoint the controller was trained on ({name}, in its eval_env.json) is missing, so nothing "
            f"shows that {here} is the same network; restore it (or correct the path in eval_env.json) and "
            "evaluate on it"
        ) from None
    changes = []
    # another observation option changes the observation space's keys: SB3Policy.check_spaces names that
    features = trained.get("observation", "features") == evaluated.get("observation", "features") == "features"
    preview, preview_now = trained.get("preview_level", 0), evaluated.get("preview_level", 0)
    if features and preview != preview_now:
        changes.append(f"preview_level {preview} → {preview_now}")
    same_file = there.samefile(here)
    if same_file and not changes:  # the usual case: no checkpoint to read
        return [], str(there), str(here)
    card_now = evaluated_card if evaluated_card is not None else read_checkpoint(here)["card"]
    card = card_now if same_file else read_checkpoint(there)["card"]
    for field in NETWORK_FIELDS:
        if field == "model_kwargs" and card.get("arch") != card_now.get("arch"):
            continue  # another architecture's settings differ anyway: naming them says nothing more
        if card.get(field) != card_now.get(field):
            changes.append(f"{field} {card.get(field)!r} → {card_now.get(field)!r}")
    if not same_file and not changes and features and file_sha256(there) != file_sha256(here):
        changes.append("weights: another checkpoint of this architecture, whose preview features mean something else")
    return changes, _describe_network(card, there), _describe_network(card_now, here)


def check_same_network(
    trained: Mapping[str, Any],
    evaluated: Mapping[str, Any],
    *,
    evaluated_card: Mapping[str, Any] | None = None,
    run: str | Path | None = None,
) -> None:
    """:class:`NetworkMismatchError` (naming both networks and the fix) unless :func:`network_changes`
    finds none; ``run`` names the controller."""
    changes, was, now = network_changes(trained, evaluated, evaluated_card)
    if changes:
        who = f"the controller {run}" if run else "the controller"
        raise NetworkMismatchError(
            f"{who} was trained on {was} but the evaluation env holds {now} ({'; '.join(changes)}): its "
            "observations and actions mean something else there. Evaluate it on the network it was trained on "
            "(leave checkpoint and preview_level out of --env-kwargs; another profile of that network is fine), "
            "or train a controller for this one (tnn train-controller --env-kwargs '{\"checkpoint\": ...}')"
        )


def write_json(path: str | Path, obj: Any) -> Path:
    """JSON, written atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n"
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def on_split(env_kwargs: Mapping[str, Any], split: str, subset: Any = None) -> dict[str, Any]:
    """``env_kwargs`` moved to ``split``: all of it, or the part ``subset`` names — never the part of
    another split a controller was trained on."""
    kwargs = {k: v for k, v in env_kwargs.items() if k != "subset"}
    kwargs["split"] = split
    if subset is not None:
        kwargs["subset"] = subset
    return kwargs


def make_eval_env(env_id: str, env_kwargs: Mapping[str, Any], copies: int = 1) -> Any:
    """``gymnasium.make(env_id, **env_kwargs)`` in sequential mode (each input once); a list if ``copies`` > 1.

    A reward object (not a name) is deep-copied into each env, as ``ThrottleVecEnv`` does: the copies
    run different episodes at once, and the caller's object stays as it was.
    """
    import gymnasium

    import envs  # noqa: F401  (registers the ids)

    kwargs = dict(env_kwargs)
    kwargs["sequential"] = True
    check_env_kwargs(env_id, kwargs)
    reward = kwargs.get("reward")
    stateful = reward is not None and not isinstance(reward, str)  # a reward object keeps per-episode state

    def make() -> Any:
        return gymnasium.make(env_id, **(kwargs | {"reward": copy.deepcopy(reward)} if stateful else kwargs))

    made = [make()]
    kwargs["profile"] = made[0].unwrapped.profile  # the copies share it (a FLOPs fallback is computed once)
    made += [make() for _ in range(copies - 1)]
    return made[0] if copies == 1 else made


def close_all(env: Any) -> None:
    """Close one env or a list of them."""
    for e in env if isinstance(env, (list, tuple)) else [env]:
        e.close()


class SB3Policy:
    """A trained SB3 model (and its VecNormalize statistics) behind the baseline interface."""

    def __init__(
        self,
        model: Any,
        vecnormalize: Any = None,
        name: str = "ppo",
        setting: str = "",
        trained_on: Mapping[str, Any] | None = None,
        run: str | Path | None = None,
    ) -> None:
        self.model, self.vecnormalize, self.name, self.setting = model, vecnormalize, name, setting
        self.trained_on, self.run = trained_on, run  # env kwargs of its training (eval_env.json), its run dir

    def check_network(self, env: Any) -> None:
        """Refuse an env holding another network than the one the policy was trained on (see
        :func:`network_changes` for what is compared); nothing to compare without ``trained_on``."""
        base = env.unwrapped
        if self.trained_on is None or not hasattr(base, "card"):
            return
        evaluated = {
            "checkpoint": base.checkpoint,
            "observation": base.observation,
            "preview_level": base.preview_level,
        }
        check_same_network(self.trained_on, evaluated, evaluated_card=base.card, run=self.run)

    def check_spaces(self, env: Any) -> None:
        """Refuse an env whose spaces differ from the ones the policy was trained on."""
        for what in ("observation_space", "action_space"):
            mine, theirs = getattr(self.model, what), getattr(env, what)
            if mine != theirs:
                raise SpaceMismatchError(
                    f"the policy's {what} {mine} does not match the evaluation env's {theirs}; evaluate on the "
                    "env it was trained for (the run's eval_env.json; DQN needs tnn/ThrottleDiscrete-v0, "
                    "and the observation option and levels must match)"
                )

    def predict(self, obs: Any, env: Any) -> Any:
        return self.predict_batch([obs])[0]

    def predict_batch(self, observations: list[Any]) -> list[Any]:
        """Deterministic actions for a list of single-env observations, in one forward pass."""
        obs = {key: np.stack([o[key] for o in observations]) for key in observations[0]}
        if self.vecnormalize is not None:
            obs = self.vecnormalize.normalize_obs(obs)
        actions, _ = self.model.predict(obs, deterministic=True)
        return list(actions)


def _run_config(run: Path) -> dict[str, Any] | None:
    """A controller run's ``config.yml`` (None without one); ValueError naming it if it is not a mapping."""
    import yaml

    path = run / "config.yml"
    if not path.is_file():
        return None
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML ({describe_error(err)}); restore it or retrain the run") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a run config (a mapping); restore it or retrain the run")
    return config


def load_controller(run_dir: str | Path, device: str = "cpu") -> tuple[SB3Policy, dict[str, Any]]:
    """``(policy, eval_env spec)`` from a ``tnn train-controller`` run directory."""
    from agents.config import algo_class, extractor_of_run

    run = Path(run_dir)
    spec_path = run / "eval_env.json"
    if not spec_path.is_file() or not (run / "model.zip").is_file():
        raise FileNotFoundError(
            f"{run} is not a controller run (needs model.zip and eval_env.json); train one with "
            "tnn train-controller --out DIR"
        )
    fix = "restore it from the run (tnn train-controller writes it) or retrain the run"
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{spec_path} is not valid JSON ({err}); {fix}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("id"), str) or not isinstance(spec.get("kwargs"), dict):
        raise ValueError(f"{spec_path} is not an eval-env spec (an object with 'id' and 'kwargs'); {fix}")
    version = spec.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{spec_path}: invalid version {version!r}; {fix}")
    if version > METRICS_VERSION:
        raise ValueError(f"{spec_path}: version {version} is newer than this reader ({METRICS_VERSION}); upgrade tnn")
    algo = spec.get("algo", "ppo")
    cls = algo_class(algo)
    config = _run_config(run)
    extractor = extractor_of_run(config, str(run / "config.yml")) if config else None  # None: SB3's default
    try:
        model = load_model(
            cls, run / "model.zip", device=device, predict_only=True, allow=[extractor] if extractor else []
        )
    except RunFileError:
        raise
    except Exception as err:  # SB3's failures on a truncated, foreign or mismatched zip are many: name the file
        raise ValueError(
            f"{run / 'model.zip'} could not be loaded as a {algo.upper()} policy (as {spec_path.name} says) "
            f"({describe_error(err)}); check the run's files or retrain it"
        ) from None
    stats = run / "vecnormalize.pkl"
    vecnorm = None
    if stats.is_file():
        vecnorm = load_vecnormalize(stats)
        check_statistics_match(vecnorm, model, stats)
    elif run_normalizes(run):
        raise FileNotFoundError(
            f"{stats} is missing: {run} was trained with normalize: true (its config.yml), and its policy "
            "reads observations normalised by those statistics; restore the file or retrain the run"
        )
    setting = str(spec.get("setting", ""))
    return SB3Policy(model, vecnorm, name=algo, setting=setting, trained_on=spec["kwargs"], run=run), spec


STEPS_ATTR = "tnn_num_timesteps"
"""Set on a run's saved ``VecNormalize`` to the step count of the ``model.zip`` saved with it."""


def check_statistics_match(vecnorm: Any, model: Any, path: Path) -> None:
    """ValueError when ``vecnorm`` was saved with another step count than ``model`` (a run stopped
    between writing the two files pairs new weights with old statistics, or the reverse)."""
    steps = getattr(vecnorm, "__dict__", {}).get(STEPS_ATTR)
    if steps is not None and int(steps) != int(model.num_timesteps):
        raise ValueError(
            f"{path} holds the statistics of step {int(steps):,} but the model beside it was saved at step "
            f"{int(model.num_timesteps):,} (the run stopped between writing them); resume the run with --resume "
            "(it continues from its newest complete checkpoint) or retrain it"
        )


def run_normalizes(run_dir: str | Path) -> bool:
    """Whether a controller run was trained with ``VecNormalize`` (its ``config.yml``; False without one)."""
    config = _run_config(Path(run_dir))
    if config is None:
        return False
    meta = config.get("meta", {})
    if not isinstance(meta, dict):
        path = Path(run_dir) / "config.yml"
        raise ValueError(f"{path} is not a run config (a mapping with 'meta'); restore it or retrain the run")
    return bool(meta.get("normalize", False))


def load_vecnormalize(path: str | Path, venv: Any = None) -> Any:
    """SB3's ``VecNormalize`` pickle of a run of ours, for ``venv`` (statistics only, frozen, without one).

    Unpickled with an allow-list of data classes (:mod:`agents.safe_load`): a truncated, foreign or
    code-carrying file is a ValueError naming it, never code run or an unpickling traceback.
    """
    from stable_baselines3.common.vec_env import VecNormalize

    fix = "restore it from the run, or retrain the run (another --out)"
    vecnorm = load_pickle(path, VecNormalize, "VecNormalize statistics", fix)
    if venv is not None:
        vecnorm.set_venv(venv)
        return vecnorm
    vecnorm.training = False
    vecnorm.norm_reward = False
    return vecnorm


def _overspent(reward_fn: Any) -> bool:
    """A budget reward's episode spent more than its total; False for a reward that keeps no such numbers
    (a user's reward may have ``spent`` without ``total``, or neither)."""
    spent, total = getattr(reward_fn, "spent", None), getattr(reward_fn, "total", None)
    numbers = all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in (spent, total))
    return numbers and float(spent) > float(total) + 1e-12


def evaluate_policy(policy: Any, env: Any, *, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Run ``policy`` over every sample of the split once; ``env`` is one sequential env or a list of them.

    A trained controller is first checked against the env: the network it was trained on
    (:class:`NetworkMismatchError`), then its spaces (:class:`SpaceMismatchError`).

    With K copies of the same sequential env, copy k plays episodes k, k+K, k+2K, … (it skips the
    others with ``reset()``), all in lockstep, so a policy with ``predict_batch`` answers K inputs per
    call; each episode sees exactly what it would see in a single pass. Inputs of an episode that
    the reward ended early (e.g. a spent budget) are never served and count as wrong.

    Returns accuracy (%), mean ``energy_mj``/``latency_ms``/``flops`` per served input, episodes,
    budget violations (episodes that overspent or were ended early), deadline misses (with the
    ``deadline`` reward), a histogram of u, and the wall time.
    """
    envs = list(env) if isinstance(env, (list, tuple)) else [env]
    if hasattr(policy, "check_network"):  # first: another network is why the spaces would differ too
        policy.check_network(envs[0])
    if hasattr(policy, "check_spaces"):
        policy.check_spaces(envs[0])
    base = envs[0].unwrapped
    if not getattr(base, "sequential", True):
        raise ValueError("evaluation needs sequential=True (each input once); build the env with make_eval_env")
    n = len(base.labels)
    levels = [float(u) for u in base.levels]
    counts = np.zeros(len(levels), dtype=np.int64)
    correct = energy = latency = flops = 0.0
    episodes = violations = misses = 0
    seen = np.zeros(n, dtype=bool)
    reward_fn = getattr(base, "reward_fn", None)
    deadline = getattr(reward_fn, "param_name", "") == "deadline"
    k_envs = len(envs)
    t0 = time.perf_counter()
    bar = _bar(n, progress, getattr(policy, "name", "policy"))

    claimed: set[int] = set()  # first index of every episode started: episodes are fixed chunks of the split

    def start(k: int, skip: int, seed_: int | None) -> Any:
        """Reset copy k ``skip + 1`` times (the first with ``seed_``); None once its chunks come round again."""
        obs, info = envs[k].reset(seed=seed_)
        for _ in range(skip):
            obs, info = envs[k].reset()
        first = int(info["index"])
        if first in claimed:
            return None
        claimed.add(first)
        return obs

    obs: list[Any] = [start(k, k, seed) for k in range(k_envs)]
    batch = hasattr(policy, "predict_batch") and k_envs > 1
    while any(o is not None for o in obs):
        live = [k for k in range(k_envs) if obs[k] is not None]
        if batch:
            actions = dict(zip(live, policy.predict_batch([obs[k] for k in live]), strict=True))
        else:
            actions = {k: policy.predict(obs[k], envs[k]) for k in live}
        for k in live:
            ob, _reward, terminated, truncated, info = envs[k].step(actions[k])
            idx = int(info["index"])
            if seen[idx]:
                raise RuntimeError(f"sample {idx} evaluated twice: the env is not in sequential mode")
            seen[idx] = True
            counts[int(info["level"])] += 1
            correct += float(info["correct"])
            energy += float(info["energy_mj"])
            latency += float(info["latency_ms"])
            flops += float(info["flops"])
            if deadline:
                misses += int(float(info["cost_latency"]) > float(envs[k].unwrapped.reward_fn.value))
            obs[k] = ob
            if terminated or truncated:
                episodes += 1
                fn = envs[k].unwrapped.reward_fn
                if terminated or _overspent(fn):
                    violations += 1
                obs[k] = start(k, k_envs - 1, None)
        if bar is not None:
            bar.update(len(live))
    if bar is not None:
        bar.close()
    served = int(seen.sum())
    return {
        "version": METRICS_VERSION,
        "method": getattr(policy, "name", type(policy).__name__),
        "setting": getattr(policy, "setting", ""),
        "split": getattr(base, "split", "test"),
        "inputs": n,
        "served": served,
        "accuracy": 100.0 * correct / n,
        "energy_mj": energy / max(served, 1),
        "latency_ms": latency / max(served, 1),
        "flops": flops / max(served, 1),
        "episodes": episodes,
        "budget_violations": violations,
        "deadline_misses": misses if deadline else None,
        "u_histogram": {f"{u:g}": int(c) for u, c in zip(levels, counts, strict=True)},
        "seconds": time.perf_counter() - t0,
    }


def _bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"evaluate {desc}", unit="input", leave=False, mininterval=0.5)
