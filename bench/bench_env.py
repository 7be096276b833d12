"""Environment throughput (not a test): single env through gymnasium.make, and the native vec env.

    python bench/bench_env.py [--no-table] [--steps 50000] [--num-envs 1024] [--vec-steps 300] [env kwargs as JSON]

Goals from issue 5: ≥ 20,000 steps/s for one env in table mode, ≥ 1,000,000 aggregated steps/s for
the vec env with 1,024 envs on one core. Both wall-clock and process-CPU rates are printed: on a
shared machine the CPU rate is the one that says what the code costs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the goals are stated
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's envs, installed or not

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the ids)


def _rates(fn, steps: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return steps / (time.perf_counter() - wall), steps / max(time.process_time() - cpu, 1e-9)


def bench_table_build(kwargs: dict) -> float:
    """Seconds to build the env's response table from scratch (what a first ``gymnasium.make`` waits)."""
    import tempfile

    import torch

    from envs.throttle import resolve_checkpoint
    from tnn.table import cached_table

    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # the build runs with all cores, as it does for users
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            cached_table(resolve_checkpoint(kwargs.get("checkpoint")), kwargs.get("split", "val"), cache_dir=tmp)
            return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def bench_single(kwargs: dict, steps: int) -> tuple[float, float]:
    env = gym.make("tnn/Throttle-v0", **kwargs)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, 1)).astype(np.float32)

    def run() -> None:
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()

    return _rates(run, steps)


def bench_vec(kwargs: dict, num_envs: int, steps: int) -> tuple[float, float]:
    from envs.vec import ThrottleVecEnv

    vec = ThrottleVecEnv(num_envs, **kwargs)
    vec.seed(0)
    vec.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, (num_envs, 1)).astype(np.float32)
    for _ in range(5):
        vec.step(actions)

    def run() -> None:
        for _ in range(steps):
            vec.step(actions)

    return _rates(run, steps * num_envs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--num-envs", type=int, default=1024)
    p.add_argument("--vec-steps", type=int, default=300)
    p.add_argument("--no-table", action="store_true", help="skip timing a from-scratch table build")
    p.add_argument("kwargs", nargs="?", default="{}", help='env kwargs as JSON, e.g. \'{"reward": "paper"}\'')
    args = p.parse_args()
    kwargs = json.loads(args.kwargs)
    import torch

    torch.set_num_threads(1)
    if not args.no_table:
        print(f"response table built from scratch in {bench_table_build(kwargs):.1f} s (goal: ≤ 60 s)")
    wall, cpu = bench_single(kwargs, args.steps)
    print(f"single env (gymnasium.make, table mode) {kwargs}: {wall:,.0f} steps/s wall, {cpu:,.0f} per CPU-second")
    wall, cpu = bench_vec(kwargs, args.num_envs, args.vec_steps)
    print(f"vec env, {args.num_envs} envs, 1 thread: {wall:,.0f} steps/s wall, {cpu:,.0f} per CPU-second")


if __name__ == "__main__":
    main()
