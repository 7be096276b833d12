"""tnn/Throttle-v0: checkers, determinism, actions, rewards and budgets, live mode, the vec env."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
import tnn
from envs.throttle import ThrottleEnv
from tnn.profile import CostProfile, ProfileError

FMNIST = Path("/usr/share/datasets/fashion-mnist")
SHIPPED = Path(__file__).resolve().parents[1] / "results/models/fashion_mnist-vgg11-tnn/model.pt"
IDS = list(envs.ENV_IDS)


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny VGG-11 TNN on Fashion-MNIST-shaped data (120 train → 12 val, 40 test), a profile whose
    latency has a fixed overhead (so energy, latency and FLOPs fractions differ), and a cache dir."""
    root = tmp_path_factory.mktemp("envs")
    data = root / "data" / "fashion-mnist"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 120), ("t10k", 40)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28)) + labels[:, None, None] * 19
        _write_idx(data / f"{part}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(data / f"{part}-labels-idx1-ubyte.gz", labels, 2049)
    torch.manual_seed(0)
    model = tnn.create_model("vgg11", in_channels=1, input_size=28, width_mult=0.05).eval()
    ckpt = tnn.save_checkpoint(model, root / "tiny.pt", dataset="fashion_mnist", variant="tnn")
    flops = CostProfile.from_flops(model)
    levels = [
        dataclasses.replace(lv, latency_ms={q: 0.05 + v for q, v in lv.latency_ms.items()}) for lv in flops.levels
    ]
    profile = dataclasses.replace(flops, levels=levels)
    base = {"checkpoint": str(ckpt), "data_root": str(data), "cache_dir": str(root / "cache"), "profile": profile}
    return {"root": root, "data": data, "ckpt": ckpt, "model": model, "profile": profile, "base": base}


def make(tiny, env_id: str = "tnn/Throttle-v0", **kwargs) -> gym.Env:
    return gym.make(env_id, **{**tiny["base"], **kwargs})


CONFIGS = [
    {},
    {"observation": "pixels"},
    {"observation": "none", "reward": "paper"},
    {"reward": "budget_conditioned", "load": "markov", "cost_metric": "latency"},
    {"reward": "conditioned", "sequential": True, "split": "test", "episode_length": 7},
    {"reward": "deadline", "u_min": 0.5, "cost_metric": "flops"},
    {"preview_level": 3, "load": "markov"},
    {"action_map": "bins", "preview_level": 2},
]


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("kwargs", CONFIGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
def test_env_checkers_pass_without_warnings(tiny, env_id, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = make(tiny, env_id, **kwargs)
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)


def test_live_mode_passes_the_gymnasium_checker(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(make(tiny, mode="live").unwrapped)


def test_make_with_no_arguments_builds_the_table(tiny, tmp_path, monkeypatch):
    results = tmp_path / "results"
    (results / "models/fashion_mnist-vgg11-tnn").mkdir(parents=True)
    shutil.copy(tiny["ckpt"], results / "models/fashion_mnist-vgg11-tnn/model.pt")
    monkeypatch.setenv("TNN_RESULTS", str(results))
    monkeypatch.setenv("TNN_DATA", str(tiny["data"].parent))
    monkeypatch.setenv("TNN_CACHE", str(tmp_path / "cache"))
    env = gym.make("tnn/Throttle-v0")
    assert list((tmp_path / "cache").glob("*-val-v*.npz"))  # built automatically
    assert "FLOPs model" in env.unwrapped.cost_source  # no shipped profile here: the fallback, said so
    obs, info = env.reset(seed=0)
    assert info["cost_source"] == env.unwrapped.cost_source
    assert env.observation_space.contains(obs)
    tiny["profile"].save(results / "profiles/fashion_mnist-vgg11-cpu-b1.json")
    env = gym.make("tnn/Throttle-v0")
    assert env.unwrapped.cost_source.endswith("profiles/fashion_mnist-vgg11-cpu-b1.json")  # the shipped one is used
    assert env.unwrapped.profile.cost(1.0, "latency") == pytest.approx(tiny["profile"].cost(1.0, "latency"))


def _rollout(env, seed: int, steps: int, actions_seed: int = 0):
    rng = np.random.default_rng(actions_seed)
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(rng.uniform(-1.2, 1.2, 1).astype(np.float32))
        trace.append((obs, r, term, trunc, info))
        if term or trunc:
            trace.append(env.reset()[0])
    return trace


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(np.array_equal(a, b))


def test_seeded_determinism(tiny):
    kw = {"reward": "budget_conditioned", "load": "markov", "episode_length": 10}
    a = _rollout(make(tiny, **kw), seed=5, steps=40)
    b = _rollout(make(tiny, **kw), seed=5, steps=40)
    c = _rollout(make(tiny, **kw), seed=6, steps=40)
    assert _same(a, b)
    assert not _same(a, c)


def test_bad_actions_and_step_before_reset(tiny):
    env = make(tiny).unwrapped
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(1, np.float32))
    env.reset(seed=0)
    for bad in (np.array([np.nan]), np.array([np.inf]), np.array([-np.inf]), np.zeros(2), np.zeros((1, 1)), "0.5"):
        with pytest.raises(ValueError):
            env.step(bad)
    with pytest.raises(ValueError, match=r"action must be a float array of shape \(1,\), got None"):
        env.step(None)
    assert env.step(np.array([7.5], np.float32))[4]["level"] == len(env.levels) - 1  # clipped to 1
    assert env.step(np.array([-30.0]))[4]["level"] == 0  # clipped to -1 → u_min
    discrete = make(tiny, "tnn/ThrottleDiscrete-v0").unwrapped
    discrete.reset(seed=0)
    for bad in (8, -1, 1.5, np.array([1, 2])):
        with pytest.raises(ValueError):
            discrete.step(bad)
    assert discrete.step(3)[4]["level"] == 3


def test_action_mapping_and_u_min(tiny):
    env = make(tiny).unwrapped
    env.reset(seed=0)
    for i, u in enumerate(env.levels):
        action = env.action_for_level(i)
        assert env.action_space.contains(action)
        info = env.step(action)[4]
        assert (info["level"], info["u"]) == (i, u)
    halfway = make(tiny, u_min=0.5).unwrapped
    assert halfway.level_of(np.array([-1.0], np.float32)) == halfway.levels.index(0.5)
    with pytest.raises(ValueError, match="below u_min"):
        halfway.action_for_level(0)
    discrete = make(tiny, "tnn/ThrottleDiscrete-v0").unwrapped
    assert [discrete.level_of(discrete.action_for_level(i)) for i in range(8)] == list(range(8))
    assert discrete.action_space == gym.spaces.Discrete(8)


@pytest.mark.parametrize(("kw", "reachable"), [({}, range(8)), ({"preview_level": 2}, range(2, 8)),
                                               ({"u_min": 0.5, "observation": "none"}, range(3, 8))])  # fmt: skip
def test_action_map_bins_gives_every_reachable_level_an_equal_share(tiny, kw, reachable):
    """With action_map="bins" the cheapest reachable level owns as much of [-1, 1] as any other; with the
    default "snap" it is run only at -1 itself."""
    grid = np.linspace(-1.0, 1.0, 4801)
    bins = make(tiny, action_map="bins", **kw).unwrapped
    runs = np.array([bins.level_of(np.array([a])) for a in grid])
    shares = np.array([np.mean(runs == level) for level in reachable])
    assert set(runs) == set(reachable)
    np.testing.assert_allclose(shares, 1 / len(reachable), atol=2 / len(grid))
    for level in reachable:
        action = bins.action_for_level(level)
        assert bins.action_space.contains(action) and bins.level_of(action) == level
    snap = make(tiny, **kw).unwrapped
    lowest = np.array([snap.level_of(np.array([a])) for a in grid]) == reachable[0]
    assert lowest.sum() == 1 and lowest[0]  # a = -1 exactly
    with pytest.raises(ValueError, match="unknown action_map 'tanh'; choose one of snap, bins"):
        make(tiny, action_map="tanh")


def test_costs_in_info_charge_the_preview_and_scale_with_load(tiny):
    profile = tiny["profile"]
    env = make(tiny, load={"factors": [1.0, 3.0], "switch": 0.5}).unwrapped
    obs, _ = env.reset(seed=1)
    loads = set()
    for _ in range(30):
        level = int(env.np_random.integers(8))  # any level; the generator is the env's, so this stays seeded
        shown_load = obs["context"][2]
        obs, _, _, trunc, info = env.step(env.action_for_level(level))
        u, f = env.levels[level], info["load"]
        loads.add(f)
        assert shown_load == pytest.approx(f / 3.0)  # the context showed this step's load
        preview = 0.0 if level == 0 else profile.cost(env.levels[0], "energy")
        assert info["energy_mj"] == pytest.approx((profile.cost(u, "energy") + preview) * f)
        full = profile.cost(1.0, "latency")
        lat_preview = 0.0 if level == 0 else profile.cost(env.levels[0], "latency")
        assert info["cost_latency"] == pytest.approx((profile.cost(u, "latency") + lat_preview) * f / full)
        assert info["cost"] == info["cost_energy"]
        for key in ("u", "level", "correct", "confidence", "energy_mj", "latency_ms", "flops", "budget_left"):
            assert key in info
        assert info["label"] == env.labels[info["index"]]
        if trunc:
            obs, _ = env.reset()
    assert loads == {1.0, 3.0}
    blind = make(tiny, observation="none").unwrapped  # no preview shown: none charged
    blind.reset(seed=0)
    assert blind.step(blind.action_for_level(4))[4]["flops"] == profile.cost(blind.levels[4], "flops")


def test_custom_callable_reward(tiny):
    seen = []

    def accuracy_minus_latency(info):
        seen.append(info)
        return float(info["correct"]) - 0.1 * info["cost_latency"]

    env = make(tiny, reward=accuracy_minus_latency)
    env.reset(seed=0)
    for level in (0, 7, 3):
        _, r, _, _, info = env.step(env.unwrapped.action_for_level(level))
        assert r == float(info["correct"]) - 0.1 * info["cost_latency"]
    assert [i["level"] for i in seen] == [0, 7, 3]


class EpisodeBudget:
    """A user's stateful budget: per-episode allowance drawn from the env's generator."""

    def __init__(self):
        self.resets, self.rng_seen = 0, []

    def reset(self, rng=None):
        self.resets += 1
        self.rng_seen.append(rng)
        self.allowance = float(rng.uniform(1.0, 2.0))
        self.spent, self.terminated = 0.0, False

    def __call__(self, info):
        self.spent += info["cost"]
        self.terminated = self.spent > self.allowance
        return float(info["correct"]) - (1.0 if self.terminated else 0.0)

    def context_value(self):
        return self.allowance / 2.0

    def budget_left(self):
        return max(0.0, 1.0 - self.spent / self.allowance)


def test_stateful_reward_is_reset_each_episode_and_drives_context_and_termination(tiny):
    budget = EpisodeBudget()
    env = make(tiny, reward=budget, episode_length=50)
    obs, _ = env.reset(seed=3)
    assert budget.resets == 1 and budget.rng_seen[0] is env.unwrapped.np_random
    assert obs["context"][3] == pytest.approx(budget.allowance / 2, abs=1e-6)
    assert obs["context"][0] == 1.0
    steps, term = 0, False
    while not term:
        obs, _, term, trunc, info = env.step(env.unwrapped.action_for_level(7))
        steps += 1
        assert not trunc
        assert info["budget_left"] == pytest.approx(budget.budget_left())
        assert obs["context"][0] == pytest.approx(budget.budget_left(), abs=1e-6)
    assert steps < 50 and budget.spent > budget.allowance
    first = budget.allowance
    env.reset()
    assert budget.resets == 2 and budget.spent == 0.0 and budget.allowance != first


def test_non_finite_reward_and_unknown_names_are_refused(tiny):
    def my_broken_reward(info):
        return float("nan")

    env = make(tiny, reward=my_broken_reward)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="my_broken_reward"):
        env.step(np.zeros(1, np.float32))
    with pytest.raises(ValueError, match=r"unknown reward 'nope'.*linear.*budget.*paper"):
        make(tiny, reward="nope")
    with pytest.raises(ValueError, match="budget="):
        make(tiny, reward="linear", budget=0.5)
    with pytest.raises(ValueError, match="reward_kwargs"):
        make(tiny, reward=my_broken_reward, reward_kwargs={"lam": 1})


def test_builtin_reward_formulas(tiny):
    for name, kwargs in (("linear", {"lam": 0.7}), ("paper", {}), ("deadline", {"deadline": 0.5, "penalty": 2.0})):
        env = make(tiny, reward=name, reward_kwargs=kwargs, load="markov")
        env.reset(seed=0)
        for level in range(8):
            _, r, _, _, info = env.step(env.unwrapped.action_for_level(level))
            c, rho = float(info["correct"]), info["cost"]
            if name == "linear":
                expected = c - 0.7 * rho
            elif name == "paper":
                expected = np.exp(1 - rho) * (2 - rho) ** 2 if c else -(info["confidence"] + 0.5) * (rho + 1.5)
            else:
                expected = c if info["cost_latency"] <= 0.5 else -2.0
            assert r == pytest.approx(expected), (name, level)


def test_hard_budget_terminates_or_penalises_overspend(tiny):
    env = make(tiny, reward="budget", budget=0.3, episode_length=20)  # 20 × 0.3 = 6 full-cost units
    env.reset(seed=0)
    full = env.unwrapped.action_for_level(7)
    rewards, lefts, term = [], [], False
    while not term:
        _, r, term, trunc, info = env.step(full)
        rewards.append(r)
        lefts.append(info["budget_left"])
        assert not trunc
    assert len(rewards) == 6  # each full step costs 1 + the preview's share: the 6th overspends
    assert rewards[-1] == -1.0 and lefts[-1] == 0.0 and lefts == sorted(lefts, reverse=True)
    soft = make(tiny, reward="budget", reward_kwargs={"rate": 0.3, "overspend": "penalty"}, episode_length=20)
    soft.reset(seed=0)
    out = [soft.step(full) for _ in range(20)]
    assert not any(o[2] for o in out) and out[-1][3]  # runs to the end, truncated
    assert all(o[1] <= 1.0 for o in out) and out[-1][1] < 0  # past the budget each step is penalised
    cheap = make(tiny, reward="budget", budget=0.3, episode_length=20)
    cheap.reset(seed=0)
    lowest = cheap.unwrapped.action_for_level(0)
    assert not any(cheap.step(lowest)[2] for _ in range(20))  # the lowest level fits the budget


def test_budget_conditioned_draws_a_budget_per_episode_and_shows_it(tiny):
    from envs.rewards import REWARDS

    env = make(tiny, reward="budget_conditioned", episode_length=4)
    shown = {float(env.reset(seed=s)[0]["context"][3]) for s in range(6)}
    rate = REWARDS["budget_conditioned"]()  # its rate range, shown on the scale max(high, 1)
    low, high = rate.low / max(rate.high, 1.0), rate.high / max(rate.high, 1.0)
    assert low < high and len(shown) == 6 and all(low - 1e-6 <= v <= high + 1e-6 for v in shown)


def test_sequential_covers_the_split_exactly_once(tiny):
    env = make(tiny, sequential=True, episode_length=5)
    n = env.unwrapped.num_samples
    seen, episodes = [], 0
    env.reset(seed=0)
    while len(seen) < n:
        episodes += 1
        trunc = False
        while not trunc:
            _, _, _, trunc, info = env.step(env.action_space.sample())
            seen.append(info["index"])
        env.reset()
    assert seen == list(range(n)) and episodes == -(-n // 5)
    whole = make(tiny, sequential=True, episode_length=None, split="test")
    whole.reset(seed=0)
    assert whole.unwrapped.episode_length == 40
    with pytest.raises(ValueError, match="sequential"):
        make(tiny, episode_length=None)


def test_preview_level_shows_that_level_and_charges_it(tiny):
    """With preview_level p the features are level p's preview, levels above p cost theirs plus the
    preview's, and a level at or below p answers with the preview at the preview's cost alone."""
    from envs.throttle import squash_features

    profile, p = tiny["profile"], 3
    for env_id in IDS:
        env = make(tiny, env_id, preview_level=p, u_min=0.125).unwrapped  # every u reachable
        obs, _ = env.reset(seed=2)
        expected = squash_features(env.table.preview_features(p), env.num_classes)
        assert env.observation_space["features"].shape == (expected.shape[1],)
        assert expected.shape[1] != make(tiny).unwrapped.observation_space["features"].shape[0]  # not level 0's
        for level in range(8):
            i = env.index
            np.testing.assert_array_equal(obs["features"], expected[i])
            if env.discrete:
                action = env.action_for_level(level)
            else:  # the action of level's u, below the preview's too
                action = np.array([2 * (env.levels[level] - 0.125) / 0.875 - 1], np.float32)
            obs, _, _, _, info = env.step(action)
            ran = max(level, p)
            assert (info["level"], info["u"]) == (ran, env.levels[ran])
            assert info["pred"] == env.table.preds[i, ran] and info["correct"] == env.table.correct[i, ran]
            charge = profile.cost(env.levels[ran], "energy") + (level > p) * profile.cost(env.levels[p], "energy")
            assert info["energy_mj"] == pytest.approx(charge)
    cont = make(tiny, preview_level=p).unwrapped
    assert cont.u_min == cont.levels[p]  # the continuous action spans the preview level to u=1
    np.testing.assert_array_equal(cont.action_for_level(0), cont.action_for_level(p))
    with pytest.raises(ValueError, match=r"preview_level must be in \[0, 8\)"):
        make(tiny, preview_level=8)
    with pytest.raises(ValueError, match="level index"):
        make(tiny, preview_level=0.5)
    with pytest.raises(ValueError, match="needs observation='features'"):
        make(tiny, preview_level=2, observation="none")


def test_subset_uses_only_that_part_of_the_split(tiny):
    whole = make(tiny, sequential=True, episode_length=None).unwrapped
    n = whole.num_samples
    part = make(tiny, subset=(0.5, 1.0), sequential=True, episode_length=None).unwrapped
    rows = np.arange(round(0.5 * n), n)
    assert part.num_samples == len(rows)
    np.testing.assert_array_equal(part.labels, whole.labels[rows])
    np.testing.assert_array_equal(part.table.correct, whole.table.correct[rows])
    np.testing.assert_array_equal(part._features, whole._features[rows])
    part.reset(seed=0)
    labels = []
    done = False
    while not done:
        _, _, term, trunc, info = part.step(part.action_for_level(7))
        labels.append(info["label"])
        done = term or trunc
    assert labels == whole.labels[rows].tolist()  # a sequential pass covers the subset once, in order
    live = make(tiny, subset=(0.5, 1.0), mode="live").unwrapped
    np.testing.assert_array_equal(live.labels, part.labels)
    for bad in [(0.5, 0.5), (-0.1, 0.5), (0.2, 1.5), "half", (0.1,)]:
        with pytest.raises(ValueError, match="subset"):
            make(tiny, subset=bad)


@pytest.mark.parametrize("preview_level", [0, 4])
def test_table_and_live_modes_give_the_same_rewards(tiny, preview_level):
    kw = {"reward": "paper", "load": "markov", "episode_length": 12, "preview_level": preview_level}
    table, live = make(tiny, **kw), make(tiny, mode="live", **kw)
    assert live.unwrapped.table is None and table.unwrapped.table is not None
    rng = np.random.default_rng(0)
    o1, _ = table.reset(seed=9)
    o2, _ = live.reset(seed=9)
    for _ in range(30):
        np.testing.assert_allclose(o1["features"], o2["features"], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(o1["context"], o2["context"])
        a = rng.uniform(-1, 1, 1).astype(np.float32)
        o1, r1, t1, u1, i1 = table.step(a)
        o2, r2, t2, u2, i2 = live.step(a)
        assert (i1["index"], i1["level"], i1["correct"], t1, u1) == (i2["index"], i2["level"], i2["correct"], t2, u2)
        assert r1 == pytest.approx(r2, rel=1e-5) and live.unwrapped.wall_ms > 0
        if t1 or u1:
            o1, _ = table.reset()
            o2, _ = live.reset()


VEC_CONFIGS = [
    {},
    {"reward": "budget", "budget": 0.4, "load": "markov", "episode_length": 9},
    {"reward": "paper", "observation": "pixels", "cost_metric": "latency", "episode_length": 5},
    {"reward": "conditioned", "sequential": True, "episode_length": 5},
    {"reward": EpisodeBudget, "episode_length": 30},  # a user's object: the per-env loop fallback
    {"discrete": True, "reward": "deadline", "observation": "none"},
    {"discrete": True, "preview_level": 2, "load": "markov"},
    {"preview_level": 5, "episode_length": 11},
    {"subset": (0.25, 0.75), "sequential": True, "episode_length": 4},
    {"action_map": "bins", "preview_level": 2},
    {"action_map": "bins", "u_min": 0.5, "observation": "none", "episode_length": 7},
]


@pytest.mark.parametrize("kw", VEC_CONFIGS, ids=range(len(VEC_CONFIGS)))
def test_vec_env_equals_n_single_envs(tiny, kw):
    from envs.vec import ThrottleVecEnv

    n, steps = 5, 70
    kw = dict(kw)
    reward = kw.pop("reward", "linear")
    factory = (lambda: reward()) if isinstance(reward, type) else (lambda: reward)
    discrete = kw.pop("discrete", False)
    vec = ThrottleVecEnv(n, **tiny["base"], reward=factory(), discrete=discrete, full_info=True, **kw)
    vec.seed(11)
    obs = vec.reset()
    singles = [ThrottleEnv(**tiny["base"], reward=factory(), discrete=discrete, **kw) for _ in range(n)]
    s_obs = [e.reset(seed=11 + i)[0] for i, e in enumerate(singles)]
    rng = np.random.default_rng(0)
    dones_seen = 0
    for _ in range(steps):
        for i in range(n):
            assert _same({k: v[i] for k, v in obs.items()}, s_obs[i])
        actions = rng.integers(0, 8, n) if discrete else rng.uniform(-1.3, 1.3, (n, 1)).astype(np.float32)
        obs, rewards, dones, infos = vec.step(actions)
        for i, env in enumerate(singles):
            o, r, term, trunc, info = env.step(actions[i])
            assert rewards[i] == pytest.approx(r, rel=1e-6, abs=1e-6)
            for key in ("level", "correct", "index", "energy_mj", "cost", "budget_left"):
                assert infos[i][key] == pytest.approx(info[key], rel=1e-12), key
            assert dones[i] == (term or trunc)
            if term or trunc:
                dones_seen += 1
                assert _same(infos[i]["terminal_observation"], o)
                assert infos[i]["TimeLimit.truncated"] == (trunc and not term)
                o, _ = env.reset()
            s_obs[i] = o
    assert dones_seen > 0


def test_vec_env_refuses_bad_actions_and_trains_with_sb3(tiny):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    from envs.vec import ThrottleVecEnv

    vec = ThrottleVecEnv(4, **tiny["base"], episode_length=8)
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(np.zeros((4, 1), np.float32))
    vec.reset()
    for bad in (np.full((4, 1), np.nan, np.float32), np.zeros((3, 1), np.float32), np.zeros((4, 2), np.float32)):
        with pytest.raises(ValueError):
            vec.step(bad)
    assert vec.levels == tuple(tiny["model"].levels) and vec.table is not None
    vec.step(vec.action_for_level(2))
    assert (vec.step_info["level"] == 2).all() and vec.step_info["budget_left"].shape == (4,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = PPO("MultiInputPolicy", VecMonitor(vec), n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
        model.learn(64)
    assert model.num_timesteps == 64


def test_bad_configuration_is_refused_with_the_valid_choices(tiny, tmp_path, monkeypatch):
    results = tmp_path / "results"
    (results / "models/fashion_mnist-vgg11-tnn").mkdir(parents=True)
    shutil.copy(tiny["ckpt"], results / "models/fashion_mnist-vgg11-tnn/model.pt")
    monkeypatch.setenv("TNN_RESULTS", str(results))
    with pytest.raises(ValueError, match=r"unknown checkpoint 'nope'.*fashion_mnist-vgg11-tnn"):
        make(tiny, checkpoint="nope")
    env = make(tiny, checkpoint="fashion_mnist-vgg11-tnn")  # a shipped model by name
    assert env.unwrapped.checkpoint.name == "model.pt"
    for key, value, valid in (
        ("split", "train", "'val'"),
        ("observation", "image", "features, pixels, none"),
        ("cost_metric", "joules", "energy, latency, flops"),
        ("mode", "fast", "table, live"),
    ):
        with pytest.raises(ValueError, match=valid):
            make(tiny, **{key: value})
    with pytest.raises(ValueError, match=r"u_min must be in \(0, 1\], got 'x'"):
        make(tiny, u_min="x")
    with pytest.raises(ValueError, match=r"lam must be a finite number >= 0 .* got 'x'"):
        make(tiny, reward_kwargs={"lam": "x"})
    with pytest.raises(ValueError, match=r"the budget rate \(env kwarg budget=, or reward_kwargs rate\) must be"):
        make(tiny, reward="budget", budget=-1)
    other = tnn.create_model("vgg11", in_channels=1, input_size=28, width_mult=0.05, num_levels=4)
    with pytest.raises(ProfileError, match=r"\[0.25, 0.5, 0.75, 1.0\].*\[0.125, 0.25"):
        make(tiny, profile=CostProfile.from_flops(other))
    with pytest.raises(TypeError, match=r"profile must be a CostProfile or the path of a profile JSON .* got dict"):
        make(tiny, profile={"levels": []})
    with pytest.raises(ValueError, match=r"load takes the MarkovLoad arguments factors and switch, not foo"):
        make(tiny, load={"foo": 1})
    (tmp_path / "run").mkdir()
    shutil.copy(tiny["ckpt"], tmp_path / "run/model.pt")
    env = make(tiny, checkpoint=str(tmp_path / "run"))  # a run directory stands for its model.pt
    assert env.unwrapped.checkpoint == tmp_path / "run/model.pt"


@pytest.mark.slow
@pytest.mark.skipif(not (FMNIST.is_dir() and SHIPPED.is_file()), reason="needs Fashion-MNIST and the shipped model")
def test_shipped_model_with_no_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("TNN_CACHE", str(tmp_path))
    monkeypatch.delenv("TNN_RESULTS", raising=False)
    env = gym.make("tnn/Throttle-v0")
    assert env.unwrapped.table.num_samples == 6000
    gym_check_env(env.unwrapped)


def test_a_profile_of_another_model_is_refused(tiny, tmp_path):
    """A profile measured for another architecture (here: ResNet-8 on CIFAR-shaped input) must not
    silently price this VGG-11's levels; the error names both files and how to make the right one."""
    other = tnn.create_model("resnet8", num_levels=len(tiny["model"].levels))
    path = CostProfile.from_flops(other).save(tmp_path / "resnet8.json")
    with pytest.raises(ProfileError, match=r"resnet8.json was measured for resnet8 .*tiny.pt.*`tnn profile .*tiny.pt"):
        make(tiny, profile=str(path))
    with pytest.raises(ValueError, match="input 3×32×32 ≠ 1×28×28"):
        make(tiny, profile=CostProfile.from_flops(other))
    slimmer = tnn.create_model("vgg11", in_channels=1, input_size=28, width_mult=0.03)  # same name and shape
    with pytest.raises(ProfileError, match=r"FLOPs at u=0.125"):
        make(tiny, profile=CostProfile.from_flops(slimmer))


@pytest.mark.parametrize("env_id", IDS)
def test_episode_length_is_the_envs_own_not_a_registered_time_limit(tiny, env_id):
    assert gym.spec(env_id).max_episode_steps is None  # episode_length is an argument: no fixed TimeLimit
    env = make(tiny, env_id, episode_length=100)
    env.reset(seed=0)
    action = env.unwrapped.action_for_level(0)
    for t in range(100):
        _, _, terminated, truncated, _ = env.step(action)
        assert not terminated and truncated == (t == 99)


def test_results_paths_resolve_from_any_working_directory(tmp_path, monkeypatch):
    """The repository's files name checkpoints and profiles as results/...; from another directory
    those resolve in the results directory, while a path that exists where it is given wins."""
    from envs.throttle import in_results, resolve_checkpoint, results_dir

    shipped = "results/models/fashion_mnist-vgg11-tnn/model.pt"
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint(shipped) == results_dir() / "models/fashion_mnist-vgg11-tnn/model.pt"
    assert in_results("results/profiles/fashion_mnist-vgg11-cpu-b1.json").is_file()
    local = tmp_path / "results" / "profiles" / "fashion_mnist-vgg11-cpu-b1.json"
    local.parent.mkdir(parents=True)
    local.write_text("{}")
    assert in_results("results/profiles/fashion_mnist-vgg11-cpu-b1.json") == Path(
        "results/profiles/fashion_mnist-vgg11-cpu-b1.json"
    )
    assert in_results("elsewhere/model.pt") == Path("elsewhere/model.pt")
    with pytest.raises(ValueError, match="not a file nor a shipped model"):
        resolve_checkpoint("results/models/nothing/model.pt")


REWARD_MODULE = '''
class Capped:
    """correct - lam * cost, and -1 once the episode has spent more than `cap` u=1 calls."""

    def __init__(self, lam, cap=1e9):
        self.lam, self.cap = lam, cap

    def reset(self, rng=None):
        self.spent, self.terminated = 0.0, False

    def __call__(self, info):
        self.spent += info["cost"]
        self.terminated = self.spent > self.cap
        return -1.0 if self.terminated else float(info["correct"]) - self.lam * info["cost"]


def accuracy(info):
    return float(info["correct"])


NOT_A_REWARD = 3
'''


def test_reward_named_by_import_spec(tiny, tmp_path, monkeypatch):
    (tmp_path / "user_rewards_envs.py").write_text(REWARD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = make(tiny, reward="user_rewards_envs:Capped", reward_kwargs={"lam": 0.5, "cap": 2.5}, episode_length=50)
    env.reset(seed=0)
    steps, term = 0, False
    while not term:
        _, r, term, _, info = env.step(env.unwrapped.action_for_level(7))
        steps += 1
        assert r == (-1.0 if term else float(info["correct"]) - 0.5 * info["cost"])
    assert steps == 3  # three u=1 calls spend 3 > 2.5
    env = make(tiny, reward="user_rewards_envs:accuracy")
    env.reset(seed=0)
    _, r, _, _, info = env.step(env.unwrapped.action_for_level(0))
    assert r == float(info["correct"])
    for spec, kwargs, message in [
        ("no_such_module_xyz:R", {}, "cannot import 'no_such_module_xyz'.*PYTHONPATH"),
        ("user_rewards_envs:Nope", {}, "has no attribute 'Nope'"),
        ("user_rewards_envs:NOT_A_REWARD", {}, "not callable"),
        ("user_rewards_envs:accuracy", {"lam": 1}, "is a function, not a class"),
        ("user_rewards_envs:Capped", {"lambda": 1}, "user_rewards_envs:Capped.*lambda"),
        (":Capped", {}, "an import spec is 'module:attr'"),
    ]:
        with pytest.raises(ValueError, match=message):
            make(tiny, reward=spec, reward_kwargs=kwargs)
