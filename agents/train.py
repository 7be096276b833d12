"""Train a throttling controller with Stable-Baselines3 (PPO by default; A2C, SAC, DQN).

``train_controller(cfg, out)`` is the whole job behind ``tnn train-controller``: hyperparameters
from ``hyperparams/<algo>.yml`` (keyed by env id, RL Zoo style), the fast vectorised env over the
response table (``envs.vec.ThrottleVecEnv``) with optional ``VecNormalize``, callbacks that log
accuracy / energy / u to TensorBoard, ``EvalCallback`` on the ``val`` split, periodic checkpoints so
an interrupted run resumes (with the settings in its ``config.yml``: a resume that would change what
the run learns is refused), and at the end an evaluation on the ``test`` split. The run directory
holds ``config.yml``, ``command.txt``, ``model.zip``, ``vecnormalize.pkl`` (when normalising),
``eval_env.json`` (the ``gymnasium.make`` kwargs of the test-split evaluation env) and
``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.config import SCHEDULE_KEYS, HyperparamError, load_hyperparams, to_yaml_ready
from agents.env_kwargs import check_env_kwargs
from agents.evaluate import (
    EVAL_COPIES,
    METRICS_VERSION,
    STEPS_ATTR,
    SB3Policy,
    check_statistics_match,
    close_all,
    evaluate_policy,
    load_vecnormalize,
    make_eval_env,
    on_split,
    write_json,
)
from agents.safe_load import load_model, load_pickle
from tnn.checkpoint import atomic_write

__all__ = [
    "DEFAULT_ENV",
    "DISCRETE_ENV",
    "RunMismatchError",
    "TrainConfig",
    "TrainResult",
    "config_changes",
    "env_kwargs_for",
    "run_config",
    "train_controller",
]

DEFAULT_ENV = "tnn/Throttle-v0"
DISCRETE_ENV = "tnn/ThrottleDiscrete-v0"


@dataclass
class TrainConfig:
    """One controller run; field docstrings are the CLI help."""

    algo: str = "ppo"
    """SB3 algorithm: ppo, a2c, sac (continuous u) or dqn (discrete levels)."""
    env_id: str = ""
    """Gymnasium id; empty: tnn/Throttle-v0, or tnn/ThrottleDiscrete-v0 for dqn."""
    reward: str = "linear"
    """Built-in reward of the env (see envs.rewards)."""
    lam: float | None = None
    """Trade-off weight λ of the linear reward (cost relative to u=1); None: the env's default."""
    env_kwargs: dict = field(default_factory=dict)
    """Extra gymnasium.make kwargs (checkpoint, profile, cost_metric, observation, ...)."""
    hyperparams: dict = field(default_factory=dict)
    """Overrides of the YAML hyperparameters (a key the algorithm does not take is an error)."""
    timesteps: int = 0
    """Environment steps; 0: n_timesteps from the YAML."""
    seed: int = 0
    """Seed of the policy, the envs and the evaluation."""
    n_envs: int = 0
    """Parallel envs in the vectorised training env; 0: n_envs from the YAML."""
    eval_episodes: int = 10
    """Episodes per EvalCallback evaluation on val."""
    evals: int = 5
    """How many EvalCallback evaluations on val during training (0: none)."""
    checkpoints: int = 5
    """How many checkpoints during training (what --resume continues from)."""
    progress: bool = True
    """Show a progress bar."""
    evaluate_test: bool = True
    """Evaluate the final policy on the test split and write its metrics."""
    device: str = "cpu"
    """Torch device of the policy (small MLPs are fastest on CPU)."""
    setting: str = ""
    """Label of this run's operating point in Pareto tables (default: λ=<lam>)."""


@dataclass
class TrainResult:
    out: Path
    model_path: Path
    metrics: dict[str, Any]


def env_kwargs_for(cfg: TrainConfig) -> dict[str, Any]:
    """The ``gymnasium.make`` kwargs of the training env (split ``val``; ``test`` is refused)."""
    kwargs = dict(cfg.env_kwargs)
    kwargs.setdefault("reward", cfg.reward)
    if cfg.lam is not None:
        if kwargs["reward"] not in ("linear", "conditioned"):
            raise ValueError(
                f"--lam sets λ of the 'linear' reward, not of {kwargs['reward']!r}; "
                "pass that reward's parameters in --env-kwargs '{\"reward_kwargs\": {...}}'"
            )
        kwargs["reward_kwargs"] = {**kwargs.get("reward_kwargs", {}), "lam": float(cfg.lam)}
    kwargs.setdefault("split", "val")
    if kwargs["split"] == "test":
        raise ValueError(
            "controllers train (and are checked by EvalCallback) on split 'val'; 'test' is for "
            "tnn evaluate-controller only: drop split from --env-kwargs"
        )
    return kwargs


def _env_id(cfg: TrainConfig) -> str:
    return cfg.env_id or (DISCRETE_ENV if cfg.algo == "dqn" else DEFAULT_ENV)


def make_vec_env(env_id: str, n_envs: int, env_kwargs: Mapping[str, Any], seed: int) -> Any:
    """The fast native VecEnv over the response table for the tnn ids; SB3's DummyVecEnv for any other id."""
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.vec_env import VecMonitor

    import envs

    kwargs = {k: v for k, v in env_kwargs.items() if k != "sequential"}
    try:
        from envs.vec import ThrottleVecEnv
    except ImportError:
        ThrottleVecEnv = None
    if ThrottleVecEnv is None or env_id not in envs.ENV_IDS or kwargs.get("mode", "table") != "table":
        return sb3_make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=kwargs)

    if env_id == DISCRETE_ENV:
        kwargs["discrete"] = True
    venv = ThrottleVecEnv(n_envs, **kwargs)
    venv.seed(seed)
    return VecMonitor(venv)


def _throttle_callback() -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class ThrottleLogCallback(BaseCallback):
        """Logs accuracy, energy, latency and u of the inputs seen since the last rollout (TensorBoard)."""

        def __init__(self) -> None:
            super().__init__()
            self._reset()

        def _reset(self) -> None:
            self.n = 0
            self.sums = {"correct": 0.0, "energy_mj": 0.0, "latency_ms": 0.0, "u": 0.0}

        def _on_step(self) -> bool:
            step_info = getattr(self.training_env.unwrapped, "step_info", None)  # ThrottleVecEnv: arrays
            if step_info:
                self.n += len(step_info["u"])
                for k in self.sums:
                    self.sums[k] += float(np.sum(step_info[k]))
                return True
            for info in self.locals.get("infos", ()):
                if "u" in info:
                    self.n += 1
                    for k in self.sums:
                        self.sums[k] += float(info[k])
            return True

        def _on_rollout_end(self) -> None:
            if self.n:
                self.logger.record("throttle/accuracy", self.sums["correct"] / self.n)
                self.logger.record("throttle/energy_mj", self.sums["energy_mj"] / self.n)
                self.logger.record("throttle/latency_ms", self.sums["latency_ms"] / self.n)
                self.logger.record("throttle/u", self.sums["u"] / self.n)
            self._reset()

    return ThrottleLogCallback()


class RunMismatchError(ValueError):
    """A run directory holds a controller trained with other settings than the ones asked for now."""


RUNTIME_FIELDS = ("version", "timesteps", "train_config")
"""``config.yml`` fields a resumed run may change. ``timesteps`` is the target a resume continues to
(it may grow); ``train_config`` holds the flags as given (progress bar, device, evaluations,
checkpoints, test evaluation: how the run is watched, not what it learns) and is compared through
the fields derived from it."""


def run_config(cfg: TrainConfig) -> dict[str, Any]:
    """The ``config.yml`` of a run of ``cfg``: what it trains, resolved (YAML hyperparameters, env kwargs).

    Validates the config on the way (counts, hyperparameters, env kwargs, split), before anything is written.
    """
    counts = (("timesteps", 0), ("seed", 0), ("n_envs", 0), ("eval_episodes", 1), ("evals", 0), ("checkpoints", 0))
    for name, low in counts:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            zero = " (0: the YAML's)" if name in ("timesteps", "n_envs") else ""
            raise ValueError(f"{name} must be an int >= {low}{zero}, got {value!r}")
    env_id = _env_id(cfg)
    if (cfg.algo == "dqn" and env_id == DEFAULT_ENV) or (cfg.algo == "sac" and env_id == DISCRETE_ENV):
        space, other = ("continuous u", DISCRETE_ENV) if cfg.algo == "dqn" else ("discrete levels", DEFAULT_ENV)
        raise ValueError(
            f"{cfg.algo.upper()} cannot act in {env_id} ({space}); use --env-id {other}, or another --algo"
        )
    meta, algo_kwargs = load_hyperparams(cfg.algo, env_id, cfg.hyperparams)
    env_kwargs = env_kwargs_for(cfg)
    check_env_kwargs(env_id, env_kwargs)
    return {
        "version": METRICS_VERSION,
        "algo": cfg.algo,
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "timesteps": cfg.timesteps or meta["n_timesteps"],
        "n_envs": cfg.n_envs or meta["n_envs"],
        "seed": cfg.seed,
        "setting": cfg.setting or (f"λ={cfg.lam:g}" if cfg.lam is not None else cfg.reward),
        "meta": {k: v for k, v in meta.items() if k != "n_envs"},
        "hyperparams": to_yaml_ready(algo_kwargs),
        "train_config": dataclasses.asdict(cfg),
    }


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """The fields of two run configs that differ, as "name: old → new" (nested keys dotted).

    Both are compared as ``config.yml`` holds them (through YAML, so tuples and lists agree);
    ``meta.n_timesteps`` (the YAML default of ``timesteps``) and the ``ignore`` fields are skipped.
    """
    import yaml

    from tnn.train import config_changes as changes

    def as_saved(config: Mapping[str, Any]) -> dict[str, Any]:
        return yaml.safe_load(yaml.safe_dump(dict(config), allow_unicode=True)) or {}

    return changes(as_saved(saved), as_saved(current), (*ignore, "meta.n_timesteps"))


def read_run_config(out: Path) -> dict[str, Any]:
    """A run directory's ``config.yml``."""
    import yaml

    path = out / "config.yml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing, so nothing says what {out} was trained with; train afresh into another --out"
        )
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a run config (a mapping); train afresh into another --out")
    return config


_CKPT = re.compile(r"rl_model_(\d+)_steps\.zip$")


def _latest_checkpoint(ckpt_dir: Path, normalize: bool = False) -> tuple[int, Path] | None:
    """The newest complete checkpoint ``(steps, path)``: with ``normalize``, one whose statistics were
    written too (SB3 writes the model first, so a run killed between the two left only the model)."""
    found = [(int(m.group(1)), p) for p in ckpt_dir.glob("rl_model_*_steps.zip") if (m := _CKPT.search(p.name))]
    if normalize:
        found = [(n, p) for n, p in found if (ckpt_dir / f"rl_model_vecnormalize_{n}_steps.pkl").is_file()]
    return max(found) if found else None


def _zip_timesteps(path: Path) -> int | None:
    """The step count an SB3 ``model.zip`` was saved at (its JSON ``data`` entry), None when unreadable."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            steps = json.loads(archive.read("data")).get("num_timesteps")
    except (OSError, KeyError, ValueError, AttributeError, zipfile.BadZipFile):
        return None
    return int(steps) if isinstance(steps, int) and not isinstance(steps, bool) else None


def train_controller(cfg: TrainConfig, out: str | Path, *, resume: bool = False, command: str = "") -> TrainResult:
    """Train, save and (optionally) evaluate one controller; see the module docstring for the run layout.

    On CPU it runs torch single-threaded (restored afterwards): the policy is a small MLP, for which
    extra threads only add synchronisation, and badly so on a shared machine.
    """
    import torch

    threads = torch.get_num_threads()
    if cfg.device == "cpu":
        torch.set_num_threads(1)
    try:
        return _train_controller(cfg, out, resume=resume, command=command)
    finally:
        torch.set_num_threads(threads)


_RESUME_FIX = "restore it, or delete it if it is a checkpoint (the run resumes from an earlier one), or train afresh"


def _required(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the run normalises observations (normalize: true) and cannot resume without "
            "the statistics it trained with; restore the file or train a new run into another --out"
        )
    return path


def _train_controller(cfg: TrainConfig, out: str | Path, *, resume: bool, command: str) -> TrainResult:
    import yaml
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.config import algo_class

    out = Path(out)
    config = run_config(cfg)
    env_id, env_kwargs, setting, n_envs = config["env_id"], config["env_kwargs"], config["setting"], config["n_envs"]
    meta, algo_kwargs = load_hyperparams(cfg.algo, env_id, cfg.hyperparams)
    ckpt_dir = out / "checkpoints"
    model_path = out / "model.zip"
    if model_path.exists() and not resume:
        raise ValueError(
            f"{out} already holds a trained controller; pass --resume to continue it or choose another --out"
        )
    latest = _latest_checkpoint(ckpt_dir, meta["normalize"]) if resume else None
    if latest is not None and model_path.exists():  # the newer of the two: model.zip once the run has finished
        final_steps = _zip_timesteps(model_path)
        if final_steps is None or final_steps >= latest[0]:
            latest = None
    if resume and latest is None and not model_path.exists():  # killed before its first checkpoint: start afresh
        print(f"resume: nothing to resume in {out} (no complete checkpoint, no model.zip), so the run starts at step 0")
        resume = False
    if resume:  # the run's own settings, or nothing: only the step target may change
        saved = read_run_config(out)
        changes = config_changes(saved, config, ignore=RUNTIME_FIELDS)
        if changes:
            raise RunMismatchError(
                f"{out} was trained with other settings ({'; '.join(changes)}); resume it with the flags it was "
                f"started with (its command.txt) or train a new run into another --out"
            )
        if not cfg.timesteps:  # no --timesteps: the run's own target, not the YAML default
            config["timesteps"] = int(saved.get("timesteps", config["timesteps"]))
    timesteps = config["timesteps"]
    eval_kwargs = {**on_split(env_kwargs, "test"), "sequential": True}

    # everything is built (and so checked) before the run directory is written
    set_random_seed(cfg.seed)
    venv = make_vec_env(env_id, n_envs, env_kwargs, cfg.seed)
    if meta["normalize"]:
        venv = VecNormalize(venv, **{"gamma": algo_kwargs.get("gamma", 0.99), **meta["normalize_kwargs"]})
    cls = algo_class(cfg.algo)
    # the schedules the archive may hold as pickled closures come from this run's hyperparameters
    schedules = {k: algo_kwargs[k] for k in SCHEDULE_KEYS if k in algo_kwargs}
    # a features extractor of your own (already imported by load_hyperparams) may be named by the archive
    extractor = (algo_kwargs.get("policy_kwargs") or {}).get("features_extractor_class")
    allow = [extractor] if isinstance(extractor, type) else []
    done_steps = 0
    if latest is not None:
        done_steps, path = latest
        if isinstance(venv, VecNormalize):
            venv = load_vecnormalize(_required(ckpt_dir / f"rl_model_vecnormalize_{done_steps}_steps.pkl"), venv.venv)
        model = load_model(cls, path, env=venv, device=cfg.device, overrides=schedules, fix=_RESUME_FIX, allow=allow)
        buffer = ckpt_dir / f"rl_model_replay_buffer_{done_steps}_steps.pkl"
        if buffer.is_file() and hasattr(model, "replay_buffer"):
            from stable_baselines3.common.buffers import ReplayBuffer

            # what SB3's load_replay_buffer does, with the allow-list unpickler instead of pickle.load
            model.replay_buffer = load_pickle(buffer, ReplayBuffer, "an SB3 replay buffer", _RESUME_FIX)
            model.replay_buffer.device = model.device
        print(f"resuming {out} from {path.name} ({done_steps:,} of {timesteps:,} steps)")
    elif resume:  # a finished run: continue it up to --timesteps (or just re-evaluate it)
        if isinstance(venv, VecNormalize):
            venv = load_vecnormalize(_required(out / "vecnormalize.pkl"), venv.venv)
        model = load_model(
            cls, out / "model.zip", env=venv, device=cfg.device, overrides=schedules, fix=_RESUME_FIX, allow=allow
        )
        if isinstance(venv, VecNormalize):
            check_statistics_match(venv, model, out / "vecnormalize.pkl")
        done_steps = int(model.num_timesteps)
        print(f"resuming {out} from model.zip ({done_steps:,} of {timesteps:,} steps)")
    else:
        try:
            model = cls(
                meta["policy"],
                venv,
                seed=cfg.seed,
                device=cfg.device,
                verbose=0,
                tensorboard_log=str(out / "tb"),
                **algo_kwargs,
            )
        except (AssertionError, TypeError, ValueError) as err:  # SB3 checks its arguments with asserts
            venv.close()
            given = f" (--hyperparams {cfg.hyperparams})" if cfg.hyperparams else ""
            raise HyperparamError(
                f"{cfg.algo.upper()} refuses its hyperparameters{given}: {str(err).rstrip('.') or type(err).__name__}; "
                f"see {cfg.algo}.yml in agents/hyperparams"
            ) from None

    if STEPS_ATTR in getattr(venv, "__dict__", {}):  # the statistics move on: stamped anew when saved
        delattr(venv, STEPS_ATTR)
    if not resume:  # a resumed run keeps the provenance it was started with
        out.mkdir(parents=True, exist_ok=True)
        for stale in (ckpt_dir, out / "eval"):  # a killed earlier run's: never resumed into this one
            shutil.rmtree(stale, ignore_errors=True)
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        atomic_write(out / "config.yml", lambda fh: fh.write(text.encode()))
        if command:
            atomic_write(out / "command.txt", lambda fh: fh.write((command + "\n").encode()))
        write_json(
            out / "eval_env.json",
            {"version": METRICS_VERSION, "id": env_id, "kwargs": eval_kwargs, "algo": cfg.algo, "setting": setting},
        )

    callbacks = [_throttle_callback()]
    per_env = max(1, timesteps // n_envs)
    if cfg.checkpoints > 0:
        callbacks.append(
            CheckpointCallback(
                max(1, per_env // cfg.checkpoints),
                str(ckpt_dir),
                save_vecnormalize=True,
                save_replay_buffer=cfg.algo in ("sac", "dqn"),
            )
        )
    if cfg.evals > 0:
        # built like the training env (same wrappers), so EvalCallback can sync VecNormalize statistics
        eval_env = make_vec_env(env_id, 1, env_kwargs, cfg.seed + 1_000)
        if isinstance(venv, VecNormalize):
            eval_env = VecNormalize(
                eval_env, training=False, norm_reward=False, norm_obs=venv.norm_obs, norm_obs_keys=venv.norm_obs_keys
            )
        evaluator = EvalCallback(
            eval_env,
            n_eval_episodes=cfg.eval_episodes,
            eval_freq=max(1, per_env // cfg.evals),
            log_path=str(out / "eval"),
            deterministic=True,
            verbose=0,
        )
        if resume:  # it rewrites the file from its own lists: start them with the evaluations made so far
            _continue_evaluations(evaluator, out / "eval" / "evaluations.npz", done_steps, cfg.eval_episodes)
        callbacks.append(evaluator)

    t0 = time.perf_counter()
    remaining = timesteps - done_steps
    if remaining > 0:
        model.learn(
            remaining,
            callback=CallbackList(callbacks),
            progress_bar=cfg.progress,
            reset_num_timesteps=not resume,
            tb_log_name=cfg.algo,
        )
    train_seconds = time.perf_counter() - t0
    if remaining > 0 or not model_path.exists():
        # both written before either replaces its predecessor; the statistics carry the model's step
        # count, so a run stopped between the two renames is detected when the pair is next read
        tmp_model, tmp_stats = out / ".model.tmp.zip", out / ".vecnormalize.tmp.pkl"
        model.save(tmp_model)
        if isinstance(venv, VecNormalize):
            setattr(venv, STEPS_ATTR, int(model.num_timesteps))
            venv.save(str(tmp_stats))
            tmp_stats.replace(out / "vecnormalize.pkl")
        tmp_model.replace(model_path)
        if ckpt_dir.is_dir() and cfg.checkpoints > 0 and model.num_timesteps >= timesteps:
            shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: model.zip supersedes the checkpoints
    venv.close()

    metrics: dict[str, Any] = {
        "version": METRICS_VERSION,
        "algo": cfg.algo,
        "env_id": env_id,
        "setting": setting,
        "train": {
            "timesteps": int(model.num_timesteps),
            "seconds": train_seconds,
            "steps_per_s": remaining / train_seconds if remaining > 0 and train_seconds > 0 else None,
            "resumed_from": done_steps if resume else None,
            **({"resume_command": command} if resume and command else {}),
        },
    }
    evals = out / "eval" / "evaluations.npz"
    if evals.is_file():
        with np.load(evals, allow_pickle=False) as ev:
            metrics["val"] = {"timesteps": ev["timesteps"].tolist(), "mean_reward": ev["results"].mean(1).tolist()}
    if cfg.evaluate_test:
        vecnorm = venv if isinstance(venv, VecNormalize) else None
        if vecnorm is not None:
            vecnorm.training = False
        policy = SB3Policy(model, vecnorm, name=cfg.algo, setting=setting)
        env = make_eval_env(env_id, eval_kwargs, copies=EVAL_COPIES)
        metrics["test"] = evaluate_policy(policy, env, seed=cfg.seed, progress=cfg.progress)
        close_all(env)
    write_json(out / "metrics.json", metrics)
    return TrainResult(out, model_path, metrics)


def _continue_evaluations(evaluator: Any, path: Path, done_steps: int, episodes: int) -> None:
    """Seed an ``EvalCallback``'s history with a resumed run's earlier evaluations (those up to
    ``done_steps``, when they used the same number of episodes), so its file keeps them."""
    if not path.is_file():
        return
    try:
        with np.load(path, allow_pickle=False) as ev:
            steps, results, lengths = ev["timesteps"], ev["results"], ev["ep_lengths"]
    except (OSError, KeyError, ValueError):
        return  # unreadable: the resumed run's evaluations replace it
    if results.ndim != 2 or results.shape[1] != episodes or not len(steps) == len(results) == len(lengths):
        return
    keep = steps <= done_steps
    evaluator.evaluations_timesteps = steps[keep].tolist()
    evaluator.evaluations_results = results[keep].tolist()
    evaluator.evaluations_length = lengths[keep].tolist()
