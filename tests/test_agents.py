"""Controllers, baselines, evaluation, Pareto files: fast checks on toy response tables."""

from __future__ import annotations

import csv
import dataclasses
import functools
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("gymnasium")

import envs  # noqa: F401  (registers tnn/Throttle-v0)
from agents.config import HyperparamError, load_hyperparams
from agents.pareto import (
    COLUMNS,
    ParetoPoint,
    front,
    hypervolume,
    hypervolumes,
    plot_pareto,
    read_pareto_csv,
    static_gaps,
    static_hull,
    write_pareto_csv,
)

# ---------------------------------------------------------------- hyperparameters


@pytest.mark.parametrize("algo", ["ppo", "a2c", "sac", "dqn"])
def test_shipped_yaml_loads_for_every_algo(algo):
    env_id = "tnn/ThrottleDiscrete-v0" if algo == "dqn" else "tnn/Throttle-v0"
    meta, kwargs = load_hyperparams(algo, env_id)
    assert meta["policy"] == "MultiInputPolicy"
    assert meta["n_envs"] >= 1 and meta["n_timesteps"] > 0
    assert isinstance(kwargs["policy_kwargs"], dict)


def test_lin_schedule_parsed():
    _, kwargs = load_hyperparams("ppo", "tnn/Throttle-v0", {"learning_rate": "lin_2e-3"})
    lr = kwargs["learning_rate"]
    assert callable(lr) and lr(1.0) == pytest.approx(2e-3) and lr(0.25) == pytest.approx(5e-4)


def test_unknown_yaml_key_names_it(tmp_path):
    path = tmp_path / "ppo.yml"
    path.write_text("default:\n  policy: MultiInputPolicy\n  n_stepz: 64\n  buffer_size: 10\n")
    with pytest.raises(HyperparamError, match="n_stepz") as err:
        load_hyperparams("ppo", "tnn/Throttle-v0", path=path)
    assert "buffer_size" in str(err.value)  # a DQN/SAC key PPO does not take is named too


def test_override_key_for_other_algo_is_an_error():
    with pytest.raises(HyperparamError, match="target_update_interval"):
        load_hyperparams("ppo", "tnn/Throttle-v0", {"target_update_interval": 10})


def test_env_id_entry_beats_default(tmp_path):
    path = tmp_path / "a2c.yml"
    path.write_text("default:\n  n_steps: 5\nmy/Env-v0:\n  n_steps: 7\n")
    assert load_hyperparams("a2c", "my/Env-v0", path=path)[1]["n_steps"] == 7
    assert load_hyperparams("a2c", "other/Env-v0", path=path)[1]["n_steps"] == 5


def test_bad_lin_and_unknown_algo():
    with pytest.raises(HyperparamError, match="lin_"):
        load_hyperparams("ppo", "tnn/Throttle-v0", {"learning_rate": "lin_fast"})
    with pytest.raises(HyperparamError, match="ppo, a2c, sac, dqn"):
        load_hyperparams("trpo", "tnn/Throttle-v0")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"n_steps": "abc"}, "n_steps must be an integer, got 'abc'"),
        ({"gamma": "high"}, "gamma must be a finite number"),
        ({"learning_rate": "fast"}, "learning_rate must be a finite number or a lin_X schedule"),
        ({"normalize": 1}, "normalize must be true/false"),
        ({"policy_kwargs": "[64, 64]"}, "policy_kwargs must be a mapping"),
    ],
)
def test_hyperparameter_types_checked_naming_the_key(override, message):
    with pytest.raises(HyperparamError, match=message.replace("[", r"\[")):
        load_hyperparams("ppo", "tnn/Throttle-v0", override)
    load_hyperparams("ppo", "tnn/Throttle-v0", {"gamma": 1, "clip_range": "lin_0.2", "target_kl": None})  # all fit


@pytest.mark.parametrize("key", ["device", "seed", "verbose", "env"])
def test_reserved_hyperparameter_is_said_to_be_set_by_tnn(key):
    with pytest.raises(HyperparamError, match="set by tnn") as err:
        load_hyperparams("ppo", "tnn/Throttle-v0", {key: 0})
    assert "does not take" not in str(err.value)


# ---------------------------------------------------------------- Pareto files


def _pt(method, setting, acc, energy, latency=None, flops=None):
    return ParetoPoint(method, setting, acc, energy, latency if latency is not None else energy, flops or energy * 1e6)


def test_hypervolume_known_points():
    assert hypervolume([0.5], [80.0], ref_cost=1.0) == pytest.approx(0.4)
    # two points: (0.2, 50%) and (0.6, 90%) -> 0.4*0.5 + 0.4*0.9 = 0.56
    assert hypervolume([0.2, 0.6], [50.0, 90.0], ref_cost=1.0) == pytest.approx(0.56)
    # a dominated point adds nothing; a point past the reference is ignored
    assert hypervolume([0.2, 0.6, 0.7, 2.0], [50.0, 90.0, 60.0, 99.0], ref_cost=1.0) == pytest.approx(0.56)
    # costs are normalised by ref_cost
    assert hypervolume([1.0, 3.0], [50.0, 90.0], ref_cost=5.0) == pytest.approx(0.4 * 0.5 + 0.4 * 0.9)
    with pytest.raises(ValueError):
        hypervolume([1.0], [50.0], ref_cost=0.0)


def test_hypervolumes_per_method_normalised_by_static_top():
    pts = [_pt("static", "0.5", 60.0, 2.0), _pt("static", "1", 90.0, 4.0), _pt("ppo", "λ=1", 85.0, 2.0)]
    hv = hypervolumes(pts, "energy_mj")
    assert hv["static"] == pytest.approx(0.5 * 0.6 + 0.0)  # (0.5 → 1.0) at 60 %; the u=1 point sits on the edge
    assert hv["ppo"] == pytest.approx(0.5 * 0.85)
    assert hv["ppo"] > hv["static"]


def test_static_gaps_interpolate_the_static_front():
    pts = [_pt("static", "0.5", 80.0, 2.0), _pt("static", "1", 90.0, 4.0), _pt("ppo", "a", 86.0, 3.0)]
    pts += [_pt("ppo", "b", 79.0, 1.0), _pt("ppo", "c", 91.0, 5.0)]
    gaps = static_gaps(pts, "energy_mj")
    assert gaps[:2] == [None, None]
    assert gaps[2] == pytest.approx(1.0)  # the front is at 85 % for 3 mJ
    assert gaps[3] == pytest.approx(-1.0) and gaps[4] == pytest.approx(1.0)  # flat beyond the ends
    with pytest.raises(ValueError, match="static"):
        static_gaps(pts[2:])


def test_static_gaps_use_the_hull_of_what_fixed_settings_reach():
    # a sagging middle level (0.625) and a dominated one (0.875: dearer than u=1, less accurate)
    pts = [_pt("static", "0.5", 80.0, 2.0), _pt("static", "0.625", 81.0, 5.0), _pt("static", "0.875", 85.0, 7.0)]
    pts += [_pt("static", "1", 90.0, 6.0), _pt("ppo", "a", 86.0, 5.0), _pt("ppo", "b", 90.0, 8.0)]
    assert static_hull(pts) == ([2.0, 6.0], [80.0, 90.0])
    gaps = static_gaps(pts, "energy_mj")
    assert gaps[4] == pytest.approx(-1.5)  # mixing 0.5 and 1 reaches 87.5 % at 5 mJ, not level 0.625's 81 %
    assert gaps[5] == pytest.approx(0.0)  # past u=1 the front stays at u=1's accuracy


def test_front_drops_dominated_points():
    pts = [_pt("m", "a", 70, 1.0), _pt("m", "b", 65, 2.0), _pt("m", "c", 80, 3.0)]
    assert [p.setting for p in front(pts)] == ["a", "c"]


def test_pareto_csv_round_trip_and_columns(tmp_path):
    pts = [_pt("static", "0.125", 80.5, 0.1, 0.2, 1e6), _pt("ppo", "λ=0.5", 88.25, 0.3, 0.4, 3e6)]
    path = write_pareto_csv(tmp_path / "pareto.csv", pts)
    with open(path, newline="") as fh:
        assert tuple(next(csv.reader(fh))) == COLUMNS
    back = read_pareto_csv(path)
    assert [(p.method, p.setting) for p in back] == [("static", "0.125"), ("ppo", "λ=0.5")]
    assert back[1].accuracy == pytest.approx(88.25) and back[1].flops == pytest.approx(3e6)
    bad = tmp_path / "bad.csv"
    bad.write_text("method,acc\nx,1\n")
    with pytest.raises(ValueError, match="columns"):
        read_pareto_csv(bad)


def test_plot_pareto_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    pts = [_pt("static", f"{u:g}", 60 + 30 * u, u) for u in (0.25, 0.5, 1.0)]
    pts += [_pt("ppo", "λ=0.5", 85.0, 0.4), _pt("oracle", "", 95.0, 0.3), _pt("cascade", "λ=0.5", 80.0, 0.5)]
    path = plot_pareto(pts, tmp_path / "pareto.png", title="toy")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temp file left


# ---------------------------------------------------------------- a toy response table inside the real env

N_TOY = 600


def _toy_table(checkpoint, split, levels, seed):
    """Synthetic responses: a sample of difficulty d is right at level j iff d < thresholds[j].

    Easy inputs (d < 0.5) are right at every level, so a good controller runs them cheaply; the
    preview confidence falls with d and the first feature is d plus noise, so the input tells — and
    tells more at a higher preview level (less noise in its confidence and features).
    """
    from tnn.table import ResponseTable, file_sha256

    rng = np.random.default_rng(seed)
    n, lv = N_TOY, len(levels)
    d = rng.random(n)
    thresholds = np.linspace(0.5, 0.98, lv)
    correct = d[:, None] < thresholds[None, :]
    labels = rng.integers(0, 4, n)
    preds = np.where(correct, labels[:, None], (labels[:, None] + 1) % 4)
    noise = np.linspace(0.2, 0.01, lv)[None, :]
    conf = np.clip(1.0 - 0.7 * d[:, None] + noise * rng.standard_normal((n, lv)), 0.25, 1.0).astype(np.float32)
    blocks = []
    for j in range(lv):
        c = conf[:, j]
        blocks.append(np.stack([d + noise[0, j] * rng.standard_normal(n), rng.standard_normal(n), c, c / 2, 1 - c], 1))
    return ResponseTable(
        labels=labels.astype(np.int64),
        levels=np.asarray(levels, np.float64),
        preds=preds.astype(np.int64),
        confidence=conf,
        correct=correct,
        features=np.concatenate(blocks, 1).astype(np.float32),
        pixels=np.zeros((n, 4), np.float32),
        meta={"checkpoint_sha256": file_sha256(checkpoint), "split": split, "dataset": "fashion_mnist"},
        feature_offsets=np.arange(lv + 1) * 5,
    )


def _toy_profile(model):
    """Latency and energy that grow as u² (a width-sliced conv net) plus a fixed 10 % per-call overhead;
    the model's own FLOPs (a profile must belong to the model it prices)."""
    from tnn.profile import CostProfile, LevelCost

    rows = []
    for u in model.levels:
        ms = 0.1 + u * u
        stats = {"median": ms, "p10": ms, "p90": ms}
        rows.append(LevelCost(u, int(model.flops(u)), int(1e4 * u * u), stats, {**stats, "source": "model"}, None))
    return CostProfile(
        "resnet8",
        (1, 32, 32),
        4,
        1,
        1,
        {"kind": "cpu", "name": "toy"},
        "toy",
        "2026-01-01",
        rows,
        latency_source="model",
        energy_model="toy: u² + 0.1",
    )


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """gymnasium.make kwargs of the real env over a tiny model and synthetic val/test tables."""
    import tnn
    from tnn.table import table_path

    root = tmp_path_factory.mktemp("toy")
    model = tnn.create_model("resnet8", num_classes=4, in_channels=1)
    ckpt = tnn.save_checkpoint(model, root / "model.pt", dataset="fashion_mnist")
    cache = root / "cache"
    for seed, split in enumerate(("val", "test")):
        _toy_table(ckpt, split, model.levels, seed).save(table_path(ckpt, split, cache))
    profile = _toy_profile(model).save(root / "profile.json")
    return {
        "checkpoint": str(ckpt),
        "profile": str(profile),
        "cache_dir": str(cache),
        "episode_length": 32,
        "cost_metric": "flops",
    }


def _evaluate(policy, toy, **extra):
    from agents.baselines import eval_kwargs_for
    from agents.evaluate import evaluate_policy, make_eval_env

    env = make_eval_env("tnn/Throttle-v0", eval_kwargs_for(policy, {**toy, "split": "test", **extra}))
    try:
        return evaluate_policy(policy, env)
    finally:
        env.close()


@pytest.fixture(scope="module")
def statics(toy):
    from agents.baselines import StaticPolicy

    return [_evaluate(StaticPolicy(i), toy) for i in range(8)]


def test_evaluation_covers_test_split_once(statics):
    for m in statics:
        assert m["inputs"] == N_TOY and sum(m["u_histogram"].values()) == N_TOY
    assert statics[0]["u_histogram"]["0.125"] == N_TOY and statics[-1]["u_histogram"]["1"] == N_TOY
    assert statics[-1]["energy_mj"] == pytest.approx(0.1 + 1.0)  # the profile's u=1 cost: no preview for static
    energies = [m["energy_mj"] for m in statics]
    assert energies == sorted(energies) and energies[0] < energies[-1]
    assert statics[0]["accuracy"] < statics[-1]["accuracy"]


def test_oracle_bounds_every_static(toy, statics):
    from agents.baselines import OraclePolicy

    oracle = _evaluate(OraclePolicy(), toy)
    assert all(oracle["accuracy"] >= m["accuracy"] for m in statics)
    assert oracle["energy_mj"] < statics[-1]["energy_mj"]


def test_cascade_tuned_on_val_is_sane(toy, statics):
    import gymnasium

    from agents.baselines import CascadePolicy, cost_fractions

    env = gymnasium.make("tnn/Throttle-v0", **toy)
    table, fractions = env.unwrapped.table, cost_fractions(env)
    env.close()
    accurate = _evaluate(CascadePolicy.fit(table, fractions, lam=0.0), toy)
    cheap = _evaluate(CascadePolicy.fit(table, fractions, lam=10.0), toy)
    mid = CascadePolicy.fit(table, fractions, lam=0.3)
    assert accurate["accuracy"] >= statics[-1]["accuracy"] - 1.0  # λ=0: as accurate as u=1
    assert cheap["energy_mj"] == pytest.approx(statics[0]["energy_mj"])  # huge λ: always the preview's answer
    assert 0.0 < mid.tau < 1.0 and mid.fallback > 0  # trusts confident previews, escalates the rest
    m = _evaluate(mid, toy)
    static_front = [s for s in statics if s["energy_mj"] <= m["energy_mj"]]
    assert m["accuracy"] > max(s["accuracy"] for s in static_front)  # beats static at equal cost on this table


@pytest.mark.parametrize("preview_levels", [(0,), (3,), (0, 3, 6)])
def test_cascade_fit_scores_what_the_env_then_charges(toy, preview_levels):
    """The reward the cascade maximises on val is the mean linear reward the env gives it on val, at
    whatever preview level it picked; offered several, it scores at least the best of each alone."""
    import gymnasium

    from agents.baselines import CascadePolicy, cost_fractions, eval_kwargs_for
    from agents.evaluate import evaluate_policy, make_eval_env

    env = gymnasium.make("tnn/Throttle-v0", **toy)
    base = env.unwrapped
    env.close()
    lam = 0.3

    def val_reward(policy):
        kwargs = eval_kwargs_for(policy, {**toy, "split": "val"})
        assert kwargs["preview_level"] == policy.preview_level
        ev = make_eval_env("tnn/Throttle-v0", kwargs)
        m = evaluate_policy(policy, ev)
        ev.close()
        return m["accuracy"] / 100 - lam * m["flops"] / base._full["flops"]

    cascade = CascadePolicy.fit(base.table, lambda p: cost_fractions(base, p), lam, preview_levels=preview_levels)
    assert cascade.preview_level in preview_levels and cascade.fallback > cascade.preview_level
    conf = base.table.confidence[:, cascade.preview_level]
    easy = conf >= cascade.tau
    frac = cost_fractions(base, cascade.preview_level)
    correct = np.where(easy, base.table.correct[:, cascade.preview_level], base.table.correct[:, cascade.fallback])
    expected = correct.mean() - lam * np.where(easy, frac[cascade.preview_level], frac[cascade.fallback]).mean()
    assert val_reward(cascade) == pytest.approx(expected, abs=1e-9)
    if len(preview_levels) > 1:
        alone = [
            CascadePolicy.fit(base.table, lambda q: cost_fractions(base, q), lam, preview_levels=(p,))
            for p in preview_levels
        ]
        assert val_reward(cascade) >= max(val_reward(c) for c in alone) - 1e-9
        assert f"preview={cascade.preview_level}" in cascade.setting
    other = gymnasium.make("tnn/Throttle-v0", **{**toy, "preview_level": (cascade.preview_level + 1) % 8})
    other.reset(seed=0)
    with pytest.raises(ValueError, match="tuned with its preview at level"):
        cascade.predict(None, other)
    other.close()


def _val_base(toy):
    import gymnasium

    env = gymnasium.make("tnn/Throttle-v0", **toy)
    base = env.unwrapped
    env.close()
    return base


def test_table_reward_is_what_the_env_pays(toy):
    """table_reward, which chooses between baselines without an env, equals the env's mean linear reward."""
    from agents.baselines import BanditPolicy, CascadePolicy, cost_fractions, eval_kwargs_for, table_reward
    from agents.evaluate import evaluate_policy, make_eval_env

    base, lam = _val_base(toy), 0.1
    fractions = functools.partial(cost_fractions, base)
    policies = [
        CascadePolicy.fit(base.table, fractions, lam, preview_levels=(3,)),
        BanditPolicy.fit(base.table, fractions(2), lam, preview_level=2, epochs=5),
    ]
    for policy in policies:
        env = make_eval_env("tnn/Throttle-v0", eval_kwargs_for(policy, {**toy, "split": "val"}))
        m = evaluate_policy(policy, env)
        env.close()
        paid = m["accuracy"] / 100 - lam * m["flops"] / base._full["flops"]
        assert table_reward(policy, base.table, fractions, lam) == pytest.approx(paid, abs=1e-9), policy.name


def test_baselines_choose_their_preview_level_on_held_out_rows(toy):
    """With select_on, τ (or the bandit's net) is learnt on one table and the preview level is chosen
    on the other: a held-out table on which only level 0 is ever right makes the cascade preview at 0,
    where on the val table itself a deeper preview wins."""

    from agents.baselines import BanditPolicy, CascadePolicy, cost_fractions, table_reward

    base, lam = _val_base(toy), 0.1
    fractions = functools.partial(cost_fractions, base)
    table = base.table
    only0 = np.zeros_like(table.correct)
    only0[:, 0] = True
    held_out = dataclasses.replace(table, correct=only0)
    own = CascadePolicy.fit(table, fractions, lam, preview_levels=(0, 3, 6))
    chosen = CascadePolicy.fit(table, fractions, lam, preview_levels=(0, 3, 6), select_on=held_out)
    assert own.preview_level != 0 and chosen.preview_level == 0
    alone = CascadePolicy.fit(table, fractions, lam, preview_levels=(0,))
    assert (chosen.tau, chosen.fallback) == (alone.tau, alone.fallback)  # τ still tuned on the training table
    assert chosen.setting == "λ=0.1 preview=0"

    singles = {p: BanditPolicy.fit(table, fractions(p), lam, preview_level=p, epochs=5) for p in (0, 3, 6)}
    for select_on in (None, held_out, dataclasses.replace(table, correct=np.ones_like(table.correct))):
        scored = table if select_on is None else select_on
        best = max(singles, key=lambda p: table_reward(singles[p], scored, fractions, lam))
        bandit = BanditPolicy.fit_among(table, fractions, lam, preview_levels=(0, 3, 6), select_on=select_on, epochs=5)
        assert bandit.preview_level == best and bandit.setting == f"λ=0.1 preview={best}"


def test_holdout_sweep_fits_the_baselines_on_the_training_part_of_val(toy, tmp_path, monkeypatch):
    import agents.sweep as sweep
    from agents.baselines import BanditPolicy, CascadePolicy
    from agents.sweep import SweepConfig, run_sweep

    seen = {}
    fit_cascade, fit_bandit = CascadePolicy.fit.__func__, BanditPolicy.fit_among.__func__

    def cascade(cls, table, *args, select_on=None, **kw):
        seen["cascade"] = (table.num_samples, select_on.num_samples, kw["preview_levels"])
        seen["labels"] = (table.labels, select_on.labels)
        return fit_cascade(cls, table, *args, select_on=select_on, **kw)

    def bandit(cls, table, *args, select_on=None, **kw):
        seen["bandit"] = (table.num_samples, select_on.num_samples, kw["preview_levels"])
        return fit_bandit(cls, table, *args, select_on=select_on, **{**kw, "epochs": 2})

    monkeypatch.setattr(sweep.CascadePolicy, "fit", classmethod(cascade))
    monkeypatch.setattr(sweep.BanditPolicy, "fit_among", classmethod(bandit))
    cfg = SweepConfig(
        env_kwargs=dict(toy),
        lams=(0.1,),
        methods=("cascade", "bandit"),
        preview_levels=(0, 3),
        select_holdout=0.25,
        progress=False,
    )
    points = run_sweep(cfg, tmp_path / "sweep")
    fit_labels, held_labels = seen.pop("labels")
    assert seen == {"cascade": (450, 150, (0, 3)), "bandit": (450, 150, (0, 3))}
    whole = _val_base(toy).table.labels  # the rows the env's subset takes: the first 75 %, then the rest
    assert np.array_equal(fit_labels, whole[:450]) and np.array_equal(held_labels, whole[450:])
    assert [p.method for p in points] == ["cascade", "bandit"]
    assert all(" preview=" in p.setting for p in points)


def test_sweep_trains_features_controllers_per_preview_level(toy, tmp_path):
    from agents.sweep import SweepConfig, _controller_runs

    cfg = SweepConfig(env_kwargs=dict(toy), observations=("features", "none"), preview_levels=(0, 2))
    runs = _controller_runs(cfg, tmp_path, 0.1)
    assert [r.run_dir.name for r in runs] == ["ppo-lam0.1-features", "ppo-lam0.1-features-preview2", "ppo-lam0.1-none"]
    assert [r.kwargs.get("preview_level") for r in runs] == [None, 2, None]
    assert [r.label for r in runs] == ["features preview 0", "features preview 2", "none"]
    at2 = SweepConfig(env_kwargs={**toy, "preview_level": 2}, preview_levels=(0, 2))
    names = {r.run_dir.name: r.kwargs["preview_level"] for r in _controller_runs(at2, tmp_path, 0.1)}
    assert names == {"ppo-lam0.1-preview0": 0, "ppo-lam0.1": 2}  # the env kwargs' own level keeps the plain name


def test_sweep_refuses_bad_preview_levels_before_writing(toy, tmp_path):
    from agents.sweep import SweepConfig, run_sweep

    with pytest.raises(ValueError, match="distinct level indices"):
        SweepConfig(preview_levels=(0, 0))
    cfg = SweepConfig(env_kwargs=dict(toy), methods=("static", "cascade"), preview_levels=(0, 9), progress=False)
    with pytest.raises(ValueError, match=r"preview levels \[9\] out of range"):
        run_sweep(cfg, tmp_path / "bad")
    assert not (tmp_path / "bad" / "config.yml").exists()


def test_single_observation_sweep_trains_on_that_observation(toy, tmp_path):
    from agents.sweep import SweepConfig, _controller_runs

    (blind,) = _controller_runs(SweepConfig(env_kwargs=dict(toy), observations=("none",)), tmp_path, 0.1)
    assert blind.kwargs["observation"] == "none" and blind.run_dir.name == "ppo-lam0.1"
    (seeing,) = _controller_runs(SweepConfig(env_kwargs=dict(toy)), tmp_path, 0.1)
    assert "observation" not in seeing.kwargs  # the env's default, as earlier runs were trained


def test_holdout_selection_trains_on_one_part_of_val_and_chooses_on_the_rest(toy, tmp_path, monkeypatch):
    import agents.sweep as sweep
    from agents.sweep import SweepConfig, _controller_runs, _val_score

    with pytest.raises(ValueError, match="select_holdout"):
        SweepConfig(select_holdout=1.0)
    cfg = SweepConfig(env_kwargs=dict(toy), observations=("features", "none"), select_holdout=0.25)
    runs = _controller_runs(cfg, tmp_path, 0.1)
    assert [r.run_dir.name for r in runs] == ["ppo-lam0.1-features-fit0.75", "ppo-lam0.1-none-fit0.75"]
    conditioned = _controller_runs(cfg, tmp_path, None)
    for r in [*runs, *conditioned]:  # the budget-conditioned controllers too
        assert r.kwargs["subset"] == [0.0, 0.75] and r.item.env_kwargs["subset"] == [0.0, 0.75], r.run_dir.name
    seen = []

    def capture(env_id, kwargs, copies=1):
        seen.append(kwargs)
        raise KeyboardInterrupt  # stop once the env kwargs are known

    monkeypatch.setattr(sweep, "make_eval_env", capture)
    with pytest.raises(KeyboardInterrupt):
        _val_score(cfg, 0.1, None, runs[0].kwargs, "tnn/Throttle-v0")
    assert seen[-1]["split"] == "val" and seen[-1]["subset"] == [0.75, 1.0]


def test_training_on_a_subset_still_evaluates_on_all_of_test(toy, tmp_path):
    import json

    from tnn.cli import main

    out = tmp_path / "run"
    kwargs = {**toy, "subset": [0.0, 0.5]}
    argv = ["train-controller", "--lam", "0.1", "--timesteps", "256", "--n-envs", "16", "--no-progress"]
    argv += ["--hyperparams", '{"batch_size": 256}', "--env-kwargs", json.dumps(kwargs), "--out", str(out)]
    assert main(argv) == 0
    spec = json.loads((out / "eval_env.json").read_text())
    assert "subset" not in spec["kwargs"] and spec["kwargs"]["split"] == "test"
    assert json.loads((out / "metrics.json").read_text())["test"]["inputs"] == N_TOY


def test_bandit_follows_lambda(toy):
    import gymnasium

    from agents.baselines import BanditPolicy, cost_fractions

    env = gymnasium.make("tnn/Throttle-v0", **toy)
    table, fractions = env.unwrapped.table, cost_fractions(env)
    env.close()
    greedy = _evaluate(BanditPolicy.fit(table, fractions, lam=0.0, epochs=10), toy)
    frugal = _evaluate(BanditPolicy.fit(table, fractions, lam=3.0, epochs=10), toy)
    assert frugal["energy_mj"] < greedy["energy_mj"]
    assert greedy["accuracy"] > frugal["accuracy"]


def test_random_policy_is_seeded_and_spreads(toy):
    from agents.baselines import RandomPolicy

    a, b = _evaluate(RandomPolicy(3), toy), _evaluate(RandomPolicy(3), toy)
    assert a["u_histogram"] == b["u_histogram"] and min(a["u_histogram"].values()) > 0


# ---------------------------------------------------------------- controllers


def _train(toy, out, lam, timesteps=8192, **kw):
    from agents.train import TrainConfig, train_controller

    kw.setdefault("hyperparams", {"batch_size": 256})  # 16 envs × 32 steps = 512 per rollout: two minibatches
    cfg = TrainConfig(lam=lam, env_kwargs=dict(toy), timesteps=timesteps, n_envs=16, progress=False, **kw)
    return train_controller(cfg, out)


def _mean_u(m):
    return sum(float(u) * c for u, c in m["u_histogram"].items()) / sum(m["u_histogram"].values())


def test_ppo_learns_the_tradeoff(toy, statics, tmp_path):
    """λ = 0: accuracy is all that counts → high u, as accurate as u=1; large λ: cost dominates → low u."""
    greedy = _train(toy, tmp_path / "lam0", 0.0, evals=0, checkpoints=0).metrics["test"]
    frugal = _train(toy, tmp_path / "lam2", 2.0, evals=0, checkpoints=0).metrics["test"]
    assert greedy["accuracy"] >= statics[-1]["accuracy"] - 3.0
    assert frugal["energy_mj"] < statics[2]["energy_mj"]
    assert _mean_u(greedy) > _mean_u(frugal) + 0.25


@pytest.fixture(scope="module")
def run_dir(toy, tmp_path_factory):
    """A controller trained through the CLI (tiny budget), with its run directory."""
    import json

    from tnn.cli import main

    out = tmp_path_factory.mktemp("cli") / "run"
    argv = ["train-controller", "--lam", "0.5", "--timesteps", "1024", "--n-envs", "16", "--seed", "1"]
    argv += ["--hyperparams", '{"batch_size": 256}']
    argv += ["--env-kwargs", json.dumps(toy), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    return out


def test_train_controller_cli_writes_run_dir(run_dir, toy):
    import json

    import yaml

    for name in ("config.yml", "command.txt", "model.zip", "vecnormalize.pkl", "eval_env.json", "metrics.json"):
        assert (run_dir / name).is_file(), name
    spec = json.loads((run_dir / "eval_env.json").read_text())
    assert spec["id"] == "tnn/Throttle-v0"
    assert spec["kwargs"]["split"] == "test" and spec["kwargs"]["sequential"] is True
    assert spec["kwargs"]["reward_kwargs"] == {"lam": 0.5} and spec["kwargs"]["checkpoint"] == toy["checkpoint"]
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    assert config["algo"] == "ppo" and config["seed"] == 1 and config["hyperparams"]["learning_rate"].startswith("lin_")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["timesteps"] >= 1024 and metrics["test"]["inputs"] == N_TOY
    assert "train-controller" in (run_dir / "command.txt").read_text()
    assert list((run_dir / "tb").rglob("events.out.tfevents.*"))  # TensorBoard logs
    with pytest.raises(ValueError, match="--resume"):  # never silently overwrite a finished run
        _train(toy, run_dir, 0.5, timesteps=1024)


def test_evaluate_controller_cli(run_dir, capsys):
    import json

    from tnn.cli import main

    assert main(["evaluate-controller", str(run_dir), "--no-progress"]) == 0
    m = json.loads((run_dir / "evaluation.json").read_text())
    assert m["inputs"] == N_TOY and m["method"] == "ppo"
    # the CLI's numbers are the training run's own test evaluation (same env, deterministic policy)
    assert m["accuracy"] == pytest.approx(json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"])
    assert "accuracy" in capsys.readouterr().out


def test_evaluate_baseline_cli(toy, tmp_path):
    import json

    from tnn.cli import main

    out = tmp_path / "static.json"
    argv = ["evaluate-controller", "static", "--level", "0", "--env-kwargs", json.dumps(toy), "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    m = json.loads(out.read_text())
    assert m["u_histogram"]["0.125"] == N_TOY
    assert main(["evaluate-controller", "nonsense", "--env-kwargs", json.dumps(toy)]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["static", "--lam", "0.1"],
            "--lam does not apply to the static baseline (only cascade, bandit and budget-conditioned controllers "
            "take it)",
        ),
        (["random", "--level", "2"], "--level does not apply to the random baseline (only static takes it)"),
        (["cascade", "--level", "2"], "--level does not apply to the cascade baseline"),
        (["oracle", "--lam", "0.1"], "--lam does not apply to the oracle baseline"),
    ],
)
def test_evaluate_controller_refuses_a_flag_its_target_ignores(toy, tmp_path, capsys, argv, message):
    import json

    from tnn.cli import main

    out = tmp_path / "m.json"
    assert main(["evaluate-controller", *argv, "--env-kwargs", json.dumps(toy), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_evaluate_controller_refuses_baseline_flags_for_a_run(run_dir, capsys):
    from tnn.cli import main

    assert main(["evaluate-controller", str(run_dir), "--lam", "0.1"]) == 2
    assert "--lam does not apply to a trained controller" in capsys.readouterr().err


def test_space_mismatch_is_refused(run_dir, toy):
    from agents.evaluate import SpaceMismatchError, evaluate_policy, load_controller, make_eval_env

    policy, _spec = load_controller(run_dir)
    env = make_eval_env("tnn/ThrottleDiscrete-v0", {**toy, "split": "test"})
    with pytest.raises(SpaceMismatchError, match="action_space"):
        evaluate_policy(policy, env)
    env = make_eval_env("tnn/Throttle-v0", {**toy, "split": "test", "observation": "none"})
    with pytest.raises(SpaceMismatchError, match="observation_space"):
        evaluate_policy(policy, env)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--env-kwargs", '{"bogus": 1}'], "does not take the env kwarg(s) 'bogus'; valid keys: action_map, budget"),
        (["--env-kwargs", '{"load": {"bogus": 1}}'], "MarkovLoad does not take 'bogus'; valid keys: factors, switch"),
        (["--env-kwargs", '{"split": "test"}'], "'test' is for tnn evaluate-controller only"),
        (["--hyperparams", '{"n_steps": "abc"}'], "n_steps must be an integer, got 'abc'"),
        (["--hyperparams", '{"device": "cuda"}'], "'device' is set by tnn"),
        (["--algo", "dqn", "--hyperparams", '{"n_steps": 64}'], "DQN refuses its hyperparameters"),  # Dict obs
        (["--env-id", "tnn/Nope-v0"], "unknown env id 'tnn/Nope-v0'"),
        (["--algo", "dqn", "--env-id", "tnn/Throttle-v0"], "DQN cannot act in tnn/Throttle-v0 (continuous u)"),
        (["--algo", "sac", "--env-id", "tnn/ThrottleDiscrete-v0"], "use --env-id tnn/Throttle-v0"),
    ],
)
def test_bad_training_input_is_one_line_and_writes_nothing(toy, tmp_path, capsys, flags, message):
    import json

    from tnn.cli import main

    out = tmp_path / "run"
    env_kwargs = dict(toy)
    if flags[0] == "--env-kwargs":
        env_kwargs.update(json.loads(flags[1]))
        flags = flags[2:]
    argv = ["train-controller", *flags, "--env-kwargs", json.dumps(env_kwargs), "--out", str(out), "--no-progress"]
    assert main([*argv, "--timesteps", "64", "--n-envs", "2"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # validated before the run directory is written


def test_make_eval_env_gives_each_copy_its_own_reward_object(toy):
    from agents.evaluate import close_all, make_eval_env
    from envs.rewards import HardBudget

    reward = HardBudget(rate=0.5)
    made = make_eval_env("tnn/Throttle-v0", {**toy, "split": "test", "reward": reward}, copies=3)
    fns = [e.unwrapped.reward_fn for e in made]
    assert len({id(f) for f in fns}) == 3 and all(isinstance(f, HardBudget) and f is not reward for f in fns)
    close_all(made)


@pytest.fixture(scope="module")
def tiny_run(toy, tmp_path_factory):
    """A controller trained through the CLI at λ=0.1 on 512 steps, no test evaluation: (run dir, argv)."""
    import json

    from tnn.cli import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    argv = ["train-controller", "--lam", "0.1", "--timesteps", "512", "--n-envs", "16", "--no-test"]
    argv += ["--hyperparams", '{"batch_size": 256}', "--env-kwargs", json.dumps(toy), "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    return out, argv


def _copy_run(tiny_run, tmp_path):
    import shutil

    return Path(shutil.copytree(tiny_run[0], tmp_path / "run"))


def test_resume_refuses_other_settings_and_keeps_provenance(tiny_run, tmp_path, capsys):
    import json

    from tnn.cli import main

    run, argv = _copy_run(tiny_run, tmp_path), tiny_run[1]
    provenance = {name: (run / name).read_bytes() for name in ("config.yml", "command.txt", "eval_env.json")}
    without_lam = [a for i, a in enumerate(argv) if a != "--lam" and (i == 0 or argv[i - 1] != "--lam")]
    assert main([*without_lam, "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "env_kwargs.reward_kwargs.lam: 0.1 → '(not set)'" in err and "setting: 'λ=0.1' → 'linear'" in err
    assert "another --out" in err
    seed = [*argv, "--seed", "3", "--out", str(run), "--resume"]
    assert main(seed) == 2 and "seed: 0 → 3" in capsys.readouterr().err
    # the same flags resume (here: a finished run, so nothing is left to train), and more steps extend it
    assert main([*argv, "--out", str(run), "--resume"]) == 0
    longer = [*argv, "--timesteps", "1024", "--out", str(run), "--resume"]  # argparse: the last --timesteps wins
    assert main(longer) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["timesteps"] >= 1024 and metrics["train"]["resumed_from"] >= 512
    assert "--resume" in metrics["train"]["resume_command"]
    assert {name: (run / name).read_bytes() for name in provenance} == provenance


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timesteps", -5, "timesteps must be an int >= 0 (0: the YAML's), got -5"),
        ("n_envs", -1, "n_envs must be an int >= 0"),
        ("eval_episodes", 0, "eval_episodes must be an int >= 1"),
    ],
)
def test_train_config_counts_are_checked_before_training(toy, field, value, message):
    from agents.train import TrainConfig, run_config

    with pytest.raises(ValueError, match=re.escape(message)):
        run_config(dataclasses.replace(TrainConfig(lam=0.1, env_kwargs=dict(toy)), **{field: value}))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lams": ()}, "lams must be one or more finite numbers >= 0"),
        ({"lams": (0.1, float("nan"))}, "lams must be one or more finite numbers >= 0"),
        ({"lams": (-1.0,)}, "lams must be one or more finite numbers >= 0"),
        ({"timesteps": -5}, "timesteps must be an int >= 0"),
    ],
)
def test_sweep_config_refuses_bad_lams_and_steps(kwargs, message):
    from agents.sweep import SweepConfig

    with pytest.raises(ValueError, match=re.escape(message)):
        SweepConfig(**kwargs)


def test_evaluate_controller_refuses_bad_lam_and_seed(toy, capsys):
    import json

    from tnn.cli import main

    base = ["evaluate-controller", "--env-kwargs", json.dumps(toy), "--no-progress"]
    for argv, message in (
        (["cascade", "--lam", "nan"], "the cascade is tuned for a trade-off λ, a finite number >= 0"),
        (["bandit", "--lam", "-0.5"], "the bandit is tuned for a trade-off λ"),
        (["static", "--seed", "-1"], "--seed must be >= 0, got -1"),
    ):
        assert main([*base, *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    val = ["evaluate-controller", "oracle", "--env-kwargs", json.dumps({**toy, "split": "val"})]
    assert main(val) == 2 and "evaluates on split 'test'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("eval_env.json", "[1]", "is not an eval-env spec (an object with 'id' and 'kwargs')"),
        ("eval_env.json", '{"kwargs": {}}', "is not an eval-env spec"),
        ("eval_env.json", "{", "eval_env.json is not valid JSON"),
        ("config.yml", "meta: [", "config.yml is not valid YAML"),
        ("model.zip", "PK", "model.zip is not an SB3 model archive (BadZipFile"),
    ],
)
def test_a_damaged_controller_run_is_named(tiny_run, tmp_path, capsys, name, text, message):
    from tnn.cli import main

    run = _copy_run(tiny_run, tmp_path)
    (run / name).write_text(text)
    if name == "config.yml":  # read when the normalisation statistics are missing, to say whether they are due
        (run / "vecnormalize.pkl").unlink()
    assert main(["evaluate-controller", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_policy_of_another_algorithm_is_named(tiny_run, tmp_path, capsys):
    import json

    from tnn.cli import main

    run = _copy_run(tiny_run, tmp_path)
    spec = json.loads((run / "eval_env.json").read_text())
    (run / "eval_env.json").write_text(json.dumps({**spec, "algo": "dqn"}))
    assert main(["evaluate-controller", str(run), "--no-progress"]) == 2
    assert "could not be loaded as a DQN policy" in capsys.readouterr().err


def test_missing_or_corrupt_vecnormalize_is_named(toy, tiny_run, tmp_path):
    from agents.evaluate import load_controller
    from agents.train import TrainConfig, train_controller

    run = _copy_run(tiny_run, tmp_path)
    stats = run / "vecnormalize.pkl"
    stats.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"vecnormalize\.pkl is corrupt"):
        load_controller(run)
    stats.unlink()
    with pytest.raises(FileNotFoundError, match=r"vecnormalize\.pkl is missing.*normalize: true"):
        load_controller(run)
    cfg = TrainConfig(lam=0.1, env_kwargs=dict(toy), timesteps=512, n_envs=16, hyperparams={"batch_size": 256})
    with pytest.raises(FileNotFoundError, match=r"vecnormalize\.pkl is missing"):
        train_controller(cfg, run, resume=True)


class _Trap:
    """Unpickling it runs os.mkdir(path): what a tampered run file could do with a plain pickle.load."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.path,))


def test_run_files_carrying_code_are_refused_unrun(tiny_run, tmp_path):
    import base64
    import json
    import pickle
    import zipfile

    from agents.evaluate import load_controller
    from agents.safe_load import UnsafePickleError, restricted_loads

    run, marker = _copy_run(tiny_run, tmp_path), tmp_path / "ran"
    assert load_controller(run)[0].vecnormalize.obs_rms  # the real files load through the allow-list
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.mkdir"):
        restricted_loads(pickle.dumps(_Trap(marker)))

    (run / "vecnormalize.pkl").write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(ValueError, match=r"vecnormalize\.pkl is not VecNormalize statistics: .*mkdir.*never unpickles"):
        load_controller(run)
    assert not marker.exists()
    (run / "vecnormalize.pkl").write_bytes(pickle.dumps({"a": 1}))  # data, but not statistics
    with pytest.raises(ValueError, match="holds a dict, not VecNormalize"):
        load_controller(run)
    other = _copy_run(tiny_run, tmp_path / "b")

    archive = other / "model.zip"
    with zipfile.ZipFile(archive) as zf:
        entries = {name: zf.read(name) for name in zf.namelist()}
    data = json.loads(entries["data"])
    data["observation_space"][":serialized:"] = base64.b64encode(pickle.dumps(_Trap(marker))).decode()
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, payload in entries.items():
            zf.writestr(name, payload)
    with pytest.raises(ValueError, match=r"model\.zip: its 'observation_space' is pickled code \(.*mkdir"):
        load_controller(other)
    assert not marker.exists()


def test_pareto_refuses_a_stale_controller_run(toy, tmp_path):
    """A rerun into the same --out with other settings must not put the old controller into pareto.csv."""
    import json

    import yaml

    from agents.sweep import SweepConfig, _controller_runs, _train_or_reuse, run_sweep
    from agents.train import run_config

    cfg = SweepConfig(
        env_kwargs=dict(toy), lams=(0.5,), timesteps=512, methods=("controller",), budget_conditioned=False
    )
    out = tmp_path / "sweep"
    [(*_, run_dir, _kwargs, tc)] = _controller_runs(cfg, out, 0.5)
    run_dir.mkdir(parents=True)
    (run_dir / "model.zip").write_bytes(b"")  # stands in for a finished run: nothing is trained below
    (run_dir / "metrics.json").write_text(json.dumps({"test": {"accuracy": 1.0}}))
    (run_dir / "config.yml").write_text(yaml.safe_dump(run_config(tc), allow_unicode=True))
    assert _train_or_reuse(tc, run_dir) == {"accuracy": 1.0}  # the same settings: reused
    for change, named in [({"timesteps": 1024}, "timesteps: 512 → 1024"), ({"seed": 1}, "seed: 0 → 1")]:
        with pytest.raises(ValueError, match=f"{named}.*new --out, or delete") as err:
            run_sweep(dataclasses.replace(cfg, **change), out)
        assert str(run_dir) in str(err.value)
    episode = dataclasses.replace(cfg, env_kwargs={**toy, "episode_length": 16})
    with pytest.raises(ValueError, match=r"env_kwargs\.episode_length: 32 → 16"):
        run_sweep(episode, out)
    assert not (out / "config.yml").exists()  # refused before the sweep wrote anything of its own


def test_cli_reports_bad_hyperparameter(toy, capsys):
    import json

    from tnn.cli import main

    argv = [
        "train-controller",
        "--hyperparams",
        '{"n_stepz": 8}',
        "--env-kwargs",
        json.dumps(toy),
        "--out",
        "/nonexistent/x",
    ]
    assert main(argv) == 2
    assert "n_stepz" in capsys.readouterr().err


def test_interrupted_training_resumes(toy, tmp_path, monkeypatch):
    import json

    from stable_baselines3.common.callbacks import CheckpointCallback

    original = CheckpointCallback._on_step

    def crash_after_first_checkpoint(self):
        result = original(self)
        if list(Path(self.save_path).glob("rl_model_*_steps.zip")):
            raise KeyboardInterrupt  # as if the process were killed
        return result

    monkeypatch.setattr(CheckpointCallback, "_on_step", crash_after_first_checkpoint)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _train(toy, out, 0.5, timesteps=2048, evals=0, checkpoints=4, evaluate_test=False)
    assert not (out / "model.zip").exists() and list((out / "checkpoints").glob("*.zip"))
    monkeypatch.setattr(CheckpointCallback, "_on_step", original)
    from agents.train import TrainConfig, train_controller

    cfg = TrainConfig(
        lam=0.5,
        env_kwargs=dict(toy),
        timesteps=2048,
        n_envs=16,
        hyperparams={"batch_size": 256},
        progress=False,
        evals=0,
        checkpoints=4,
        evaluate_test=False,
    )
    result = train_controller(cfg, out, resume=True)
    assert 0 < result.metrics["train"]["resumed_from"] < 2048
    assert result.metrics["train"]["timesteps"] >= 2048 and (out / "model.zip").is_file()
    assert (
        json.loads((out / "metrics.json").read_text())["train"]["resumed_from"]
        == result.metrics["train"]["resumed_from"]
    )


def test_pareto_cli_on_baselines(toy, tmp_path):
    import json

    from tnn.cli import main

    out = tmp_path / "pareto"
    argv = ["pareto", "--out", str(out), "--env-kwargs", json.dumps(toy), "--lams", "0,0.3,3"]
    assert main([*argv, "--methods", "static", "oracle", "cascade", "--no-progress", "--preview-levels", "0,3"]) == 0
    points = read_pareto_csv(out / "pareto.csv")
    assert [p.method for p in points].count("static") == 8 and [p.method for p in points].count("cascade") == 3
    assert all("preview=" in p.setting for p in points if p.method == "cascade")
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((out / "metrics.json").read_text())
    hv = metrics["hypervolume"]["energy_mj"]
    assert hv["oracle"] > hv["static"] and 0 < hv["static"] < 1
    oracle = next(m for m in metrics["evaluations"] if m["method"] == "oracle")
    assert oracle["gap_vs_static_pt"]["energy_mj"] > 0


@pytest.mark.slow
def test_pareto_sweep_with_controllers(toy, tmp_path):
    from agents.sweep import SweepConfig, run_sweep

    cfg = SweepConfig(
        env_kwargs=dict(toy), lams=(0.0, 2.0), timesteps=4096, methods=("static", "controller"), progress=False
    )
    points = run_sweep(cfg, tmp_path / "sweep")
    methods = [p.method for p in points]
    assert methods.count("ppo") == 2 and methods.count("ppo-budget") == 2
    budget = {p.setting: p for p in points if p.method == "ppo-budget"}
    assert budget["λ=2"].energy_mj < budget["λ=0"].energy_mj  # one policy, steered by the λ in its context


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algo", "hyperparams"),
    [
        ("a2c", {}),
        ("sac", {"learning_starts": 100, "buffer_size": 5000}),
        ("dqn", {"learning_starts": 100, "buffer_size": 5000, "target_update_interval": 100}),
    ],
)
def test_other_algorithms_train_and_evaluate(toy, tmp_path, monkeypatch, algo, hyperparams):
    from agents.train import TrainConfig, train_controller

    cfg = TrainConfig(
        algo=algo,
        lam=0.5,
        env_kwargs=dict(toy),
        timesteps=1024,
        n_envs=4,
        hyperparams=hyperparams,
        progress=False,
        evals=1,
        checkpoints=2,
    )
    # killed after its first checkpoint, then resumed: the checkpoint (and SAC's/DQN's replay buffer) is
    # read back through the allow-list unpickler
    from stable_baselines3.common.callbacks import CheckpointCallback

    original = CheckpointCallback._on_step

    def crash_after_first_checkpoint(self):
        result = original(self)
        if list(Path(self.save_path).glob("rl_model_*_steps.zip")):
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(CheckpointCallback, "_on_step", crash_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_controller(cfg, tmp_path / algo)
    if algo in ("sac", "dqn"):
        assert list((tmp_path / algo / "checkpoints").glob("rl_model_replay_buffer_*_steps.pkl"))
    monkeypatch.setattr(CheckpointCallback, "_on_step", original)
    result = train_controller(cfg, tmp_path / algo, resume=True)
    assert 0 < result.metrics["train"]["resumed_from"] < 1024
    assert result.metrics["env_id"] == ("tnn/ThrottleDiscrete-v0" if algo == "dqn" else "tnn/Throttle-v0")
    assert result.metrics["test"]["inputs"] == N_TOY and (tmp_path / algo / "model.zip").is_file()


def test_budget_violations_and_unserved_inputs(toy):
    from agents.baselines import StaticPolicy

    kwargs = {"reward": "budget", "reward_kwargs": {"rate": 0.3, "overspend": "terminate"}}
    spender = _evaluate(StaticPolicy(7), toy, **kwargs)  # u=1 every time: over budget in every episode
    saver = _evaluate(StaticPolicy(0), toy, **kwargs)
    assert spender["budget_violations"] == spender["episodes"] > 0
    assert spender["served"] < N_TOY and sum(spender["u_histogram"].values()) == spender["served"]
    assert saver["budget_violations"] == 0 and saver["served"] == N_TOY


@pytest.mark.slow
def test_pareto_keeps_the_val_best_observation_per_lambda(toy, tmp_path):
    """With several observations each λ trains one controller per observation and keeps the one whose
    val trade-off reward is higher (here: does the preview pay for its cost?); the discrete env id
    reaches the controllers and their recorded commands."""
    import json

    from agents.pareto import read_pareto_csv
    from agents.sweep import SweepConfig, run_sweep
    from tnn.cli import main

    cfg = SweepConfig(
        env_id="tnn/ThrottleDiscrete-v0",
        env_kwargs=dict(toy),
        lams=(0.0, 3.0),
        timesteps=2048,
        methods=("controller",),
        observations=("features", "none"),
        progress=False,
    )
    out = tmp_path / "sweep"
    run_sweep(cfg, out)
    metrics = json.loads((out / "metrics.json").read_text())
    selections = [s for s in metrics["selection"] if s["method"] == "ppo"]
    assert [s["lam"] for s in selections] == [0.0, 3.0]
    points = {p.setting: p for p in read_pareto_csv(out / "pareto.csv") if p.method == "ppo"}
    budget = [s for s in metrics["selection"] if s["method"] == "ppo-budget"]
    assert [s["lam"] for s in budget] == [0.0, 3.0]  # the conditioned policy: trained both ways, val picks per λ
    for s in budget:
        assert [c["run"] for c in s["candidates"]] == ["ppo-conditioned-features", "ppo-conditioned-none"]
        assert s["chosen"] == max(s["candidates"], key=lambda c: c["score"])["observation"]
    traced = [p.setting for p in read_pareto_csv(out / "pareto.csv") if p.method == "ppo-budget"]
    assert traced == [f"λ={s['lam']:g} obs={s['chosen']}" for s in budget]
    for s in selections:
        assert [c["observation"] for c in s["candidates"]] == ["features", "none"]
        for c in s["candidates"]:
            assert c["score"] == pytest.approx(c["accuracy"] / 100 - s["lam"] * c["cost"])
            run = out / "runs" / c["run"]
            assert json.loads((run / "eval_env.json").read_text())["id"] == "tnn/ThrottleDiscrete-v0"
            assert "--env-id tnn/ThrottleDiscrete-v0" in (run / "command.txt").read_text()
            assert json.loads((run / "eval_env.json").read_text())["kwargs"]["observation"] == c["observation"]
        best = max(s["candidates"], key=lambda c: c["score"])
        assert s["chosen"] == best["observation"]
        chosen_test = json.loads((out / "runs" / best["run"] / "metrics.json").read_text())["test"]
        point = points[f"λ={s['lam']:g} obs={s['chosen']}"]
        assert point.accuracy == pytest.approx(chosen_test["accuracy"], abs=1e-3)
        assert point.energy_mj == pytest.approx(chosen_test["energy_mj"], rel=1e-4)
    assert "chosen" in (out / "pareto.md").read_text()
    # the chosen controllers are exported without logs or checkpoints, and load as they are
    chosen = {f"ppo-lam{s['lam']:g}-{s['chosen']}" for s in selections}
    chosen |= {f"ppo-conditioned-{s['chosen']}" for s in budget}
    assert {d.name for d in (out / "controllers").iterdir()} == chosen
    for s in selections:
        copy = out / "controllers" / f"ppo-lam{s['lam']:g}-{s['chosen']}"
        assert not (copy / "tb").exists() and not (copy / "checkpoints").exists()
        assert main(["evaluate-controller", str(copy), "--out", str(tmp_path / "e.json"), "--no-progress"]) == 0
        again = json.loads((tmp_path / "e.json").read_text())
        point = points[f"λ={s['lam']:g} obs={s['chosen']}"]
        assert again["accuracy"] == pytest.approx(point.accuracy, abs=1e-3)
    assert "controllers/" in (out / "pareto.md").read_text()


@pytest.mark.slow
def test_pareto_keeps_the_val_best_controller_env_per_lambda(toy, tmp_path):
    """With several controller env ids (continuous u, one action per level) each λ trains one controller
    per env and keeps the val-best; runs on the sweep's own env id keep the names a one-env sweep gives."""
    import json

    from agents.pareto import read_pareto_csv
    from agents.sweep import SweepConfig, run_sweep

    env_ids = ("tnn/Throttle-v0", "tnn/ThrottleDiscrete-v0")
    cfg = SweepConfig(
        env_kwargs=dict(toy),
        lams=(0.0, 3.0),
        timesteps=2048,
        methods=("static", "controller"),
        budget_conditioned=False,
        controller_env_ids=env_ids,
        progress=False,
    )
    out = tmp_path / "sweep"
    run_sweep(cfg, out)
    metrics = json.loads((out / "metrics.json").read_text())
    points = {p.setting: p for p in read_pareto_csv(out / "pareto.csv") if p.method == "ppo"}
    assert len(metrics["selection"]) == 2 and len(points) == 2
    for s in metrics["selection"]:
        lam = f"{s['lam']:g}"
        assert [c["run"] for c in s["candidates"]] == [f"ppo-lam{lam}", f"ppo-lam{lam}-throttlediscrete"]
        assert [c["observation"] for c in s["candidates"]] == ["Throttle", "ThrottleDiscrete"]
        for c, env_id in zip(s["candidates"], env_ids, strict=True):
            assert c["env_id"] == env_id
            assert json.loads((out / "runs" / c["run"] / "eval_env.json").read_text())["id"] == env_id
        best = max(s["candidates"], key=lambda c: c["score"])
        assert s["chosen"] == best["observation"]
        chosen_test = json.loads((out / "runs" / best["run"] / "metrics.json").read_text())["test"]
        point = points[f"λ={lam} env={s['chosen']}"]
        assert point.accuracy == pytest.approx(chosen_test["accuracy"], abs=1e-3)
    # λ=0: accuracy alone; λ=3: cost dominates — whichever env wins, the trade-off shows
    assert (
        points[next(k for k in points if k.startswith("λ=3"))].energy_mj
        < points[next(k for k in points if k.startswith("λ=0"))].energy_mj
    )


def test_pareto_cli_rejects_unknown_controller_env_id(toy, tmp_path, capsys):
    import json

    from tnn.cli import main

    argv = ["pareto", "--out", str(tmp_path / "p"), "--env-kwargs", json.dumps(toy)]
    with pytest.raises(SystemExit):
        main([*argv, "--controller-env-ids", "tnn/Throttle-v0,tnn/Nope-v0"])
    assert "env ids" in capsys.readouterr().err


def test_cascade_bound_cli(toy, tmp_path, capsys):
    import json

    from tnn.cli import main

    argv = ["cascade-bound", "--env-kwargs", json.dumps(toy), "--budgets", "0.3,0.6", "--drop", "0.5"]
    assert main([*argv, "--out", str(tmp_path / "bound")]) == 0
    saved = json.loads((tmp_path / "bound.json").read_text())
    assert [r["budget"] for r in saved["rows"]] == [0.3, 0.6] and saved["command"].startswith("tnn cascade-bound")
    test = _val_base({**toy, "split": "test"}).table  # the rows are measured on the test split
    assert saved["rows"][0]["u1_accuracy"] == pytest.approx(100 * test.correct[:, -1].mean())
    assert "| 0.6 |" in (tmp_path / "bound.md").read_text() and "probes" not in saved
    assert main([*argv, "--probe", "--out", str(tmp_path / "probed")]) == 0
    probed = json.loads((tmp_path / "probed.json").read_text())
    assert len(probed["probes"]) == len(test.levels) - 1 and "probe_router_ceiling" in probed["rows"][1]
    assert "AUC of the probe" in (tmp_path / "probed.md").read_text()
    assert main([*argv[:3], "--budgets", "0,0.5"]) == 2
    assert "--budgets are fractions" in capsys.readouterr().err
    assert main([*argv[:3], "--budgets", "nan"]) == 2
    assert main([*argv, "--max-stages", "0"]) == 2
    assert "need --max-stages >= 1" in capsys.readouterr().err
    assert main([*argv[:1], "--env-kwargs", json.dumps({**toy, "mode": "live"})]) == 2
    assert "reads response tables" in capsys.readouterr().err


def test_export_controllers_keeps_the_loadable_files_and_replaces_the_previous_export(tmp_path):
    from agents.sweep import CONTROLLER_FILES, export_controllers

    runs = []
    for name in ("ppo-lam0.1-features", "ppo-conditioned-none"):
        run = tmp_path / "runs" / name
        (run / "tb").mkdir(parents=True)
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "rl_model_8_steps.zip").write_bytes(b"ckpt")
        for f in CONTROLLER_FILES:
            (run / f).write_text(f"{name}/{f}")
        runs.append(run)
    dest = tmp_path / "controllers"
    copies = export_controllers([runs[0], runs[1], runs[0]], dest)  # a run chosen twice is copied once
    assert copies == [dest / "ppo-lam0.1-features", dest / "ppo-conditioned-none"]
    for run, copy in zip(runs, copies, strict=True):
        assert sorted(p.name for p in copy.iterdir()) == sorted(CONTROLLER_FILES)
        assert (copy / "model.zip").read_text() == f"{run.name}/model.zip"
    export_controllers([runs[1]], dest)  # a second sweep's export replaces the first one's
    assert [p.name for p in dest.iterdir()] == ["ppo-conditioned-none"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_pareto_cli_rejects_unknown_observation(toy, tmp_path, capsys):
    import json

    from tnn.cli import main

    argv = ["pareto", "--out", str(tmp_path / "p"), "--env-kwargs", json.dumps(toy), "--observations", "features,rgb"]
    with pytest.raises(SystemExit):
        main(argv)
    assert "observations" in capsys.readouterr().err


def test_plot_labels_coincident_points_once_and_marks_context_only(tmp_path, monkeypatch):
    import matplotlib
    from matplotlib.colors import to_rgba

    from agents.pareto import CONTEXT_ONLY, METRICS, ParetoPoint, _coincident, plot_pareto

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [
        ParetoPoint("ppo", "λ=0.01 obs=none", 90.0, 10.0, 1.0, 1e6),
        ParetoPoint("ppo", "λ=0.03 obs=none", 90.01, 10.02, 1.0, 1e6),
        ParetoPoint("ppo", "λ=0.1 obs=features", 88.0, 6.0, 0.6, 6e5),
        ParetoPoint("ppo", "conditioned", 85.0, 4.0, 0.4, 4e5),
    ]
    assert sorted(_coincident(pts, "energy_mj").values()) == ["conditioned", "λ=0.01,0.03", "λ=0.1"]
    statics = [ParetoPoint("static", f"{u:g}", 80 + 10 * u, 10 * u, u, 1e6 * u) for u in (0.25, 0.5, 1.0)]
    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    assert plot_pareto(statics + pts, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    (fig,) = figures
    white = to_rgba("white")
    for ax, metric in zip(fig.axes, METRICS, strict=True):
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "hollow: no preview (context only)" in legend
        assert sum(t.startswith("ppo") for t in legend) == 1  # the hollow ppo markers add no second entry
        faces = {}  # (cost, accuracy) of each drawn point -> its face colour
        for coll in ax.collections:
            offsets = coll.get_offsets()
            colours = np.broadcast_to(coll.get_facecolors(), (len(offsets), 4))  # one colour may serve them all
            faces.update({(float(x), float(y)): tuple(c) for (x, y), c in zip(offsets, colours, strict=True)})
        for p in pts:
            filled = faces[(float(getattr(p, metric)), p.accuracy)]
            assert (filled == white) == p.setting.endswith(CONTEXT_ONLY), (metric, p.setting, filled)


def test_pareto_refuses_an_env_the_algorithm_cannot_train_on(toy, tmp_path):
    from agents.sweep import SweepConfig, run_sweep

    for algo, env_ids in (
        ("dqn", ("tnn/ThrottleDiscrete-v0", "tnn/Throttle-v0")),
        ("sac", ("tnn/ThrottleDiscrete-v0",)),
    ):
        cfg = SweepConfig(
            env_kwargs=dict(toy), algo=algo, lams=(0.5,), methods=("controller",), controller_env_ids=env_ids
        )
        with pytest.raises(ValueError, match=f"--algo {algo} cannot train on"):
            run_sweep(cfg, tmp_path / algo)
        assert not (tmp_path / algo / "config.yml").exists()


def test_pareto_that_fails_to_start_writes_nothing(toy, tmp_path, capsys):
    import json

    from tnn.cli import main

    out = tmp_path / "study"
    kwargs = {**toy, "checkpoint": str(tmp_path / "missing.pt")}
    assert main(["pareto", "--out", str(out), "--env-kwargs", json.dumps(kwargs), "--methods", "static"]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert not out.exists()  # a failed start leaves no empty study directory behind


def test_train_and_evaluate_a_controller_on_the_users_own_reward(toy, tmp_path, monkeypatch, capsys):
    import json

    from tnn.cli import main

    (tmp_path / "user_rewards_cli.py").write_text(
        "class Capped:\n"  # keeps `spent` but no `total`: evaluation must not read it as a built-in budget
        "    def __init__(self, lam, cap):\n"
        "        self.lam, self.cap = lam, cap\n"
        "    def reset(self, rng=None):\n"
        "        self.spent, self.terminated = 0.0, False\n"
        "    def __call__(self, info):\n"
        "        self.spent += info['cost']\n"
        "        self.terminated = self.spent > self.cap\n"
        "        return float(info['correct']) - self.lam * info['cost']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    kwargs = {**toy, "reward_kwargs": {"lam": 0.2, "cap": 40}}
    argv = ["train-controller", "--timesteps", "256", "--n-envs", "16", "--no-progress"]
    argv += ["--hyperparams", '{"batch_size": 256}', "--env-kwargs", json.dumps(kwargs)]
    assert main([*argv, "--reward", "user_rewards_cli:Capped", "--out", str(out)]) == 0
    spec = json.loads((out / "eval_env.json").read_text())["kwargs"]
    assert spec["reward"] == "user_rewards_cli:Capped" and spec["reward_kwargs"] == {"lam": 0.2, "cap": 40}
    trained = json.loads((out / "metrics.json").read_text())["test"]
    assert main(["evaluate-controller", str(out), "--no-progress"]) == 0  # rebuilt from eval_env.json alone
    assert json.loads((out / "evaluation.json").read_text())["accuracy"] == pytest.approx(trained["accuracy"])
    bad = tmp_path / "bad"
    assert main([*argv, "--reward", "user_rewards_cli:Nope", "--out", str(bad)]) == 2
    assert "has no attribute 'Nope'" in capsys.readouterr().err
    assert not bad.exists()


def test_pareto_refuses_a_reward_it_would_override(toy, tmp_path, capsys):
    import json

    from tnn.cli import main

    out = tmp_path / "study"
    for extra in ({"reward": "budget"}, {"reward_kwargs": {"lam": 0.5}}, {"budget": 0.5}):
        argv = ["pareto", "--out", str(out), "--env-kwargs", json.dumps({**toy, **extra}), "--methods", "static"]
        assert main(argv) == 2
        assert f"env kwarg(s) {next(iter(extra))} would be overridden" in capsys.readouterr().err
    assert not out.exists()


def _tiny_cfg(toy, timesteps=512, **kw):
    from agents.train import TrainConfig

    kw = {"evals": 0, "checkpoints": 0, "evaluate_test": False, **kw}
    return TrainConfig(
        lam=0.1,
        env_kwargs=dict(toy),
        timesteps=timesteps,
        n_envs=16,
        hyperparams={"batch_size": 256},
        progress=False,
        **kw,
    )


def test_resume_with_nothing_to_resume_starts_afresh_and_clears_stale_files(toy, tmp_path, capsys):
    """Killed before its first complete checkpoint (SB3 made checkpoints/ at the start, or wrote a model
    without its statistics): --resume starts at step 0; a fresh start never keeps an older run's files."""
    from agents.train import train_controller

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "rl_model_256_steps.zip").write_bytes(b"half a checkpoint")  # no vecnormalize beside it
    (out / "eval").mkdir()
    (out / "eval" / "evaluations.npz").write_bytes(b"an older run's")
    result = train_controller(_tiny_cfg(toy), out, resume=True)
    assert "nothing to resume" in capsys.readouterr().out
    assert result.metrics["train"]["resumed_from"] is None and (out / "model.zip").is_file()
    assert not (out / "checkpoints").exists() and not (out / "eval").exists()


def test_resume_prefers_the_newer_of_model_zip_and_checkpoints(toy, tiny_run, tmp_path, capsys):
    """A finished run killed before its checkpoints were removed resumes from model.zip, not from an
    older checkpoint (which would retrain and overwrite the finished model)."""
    from agents.train import train_controller

    run = _copy_run(tiny_run, tmp_path)
    ckpts = run / "checkpoints"
    ckpts.mkdir(exist_ok=True)
    for name in ("rl_model_256_steps.zip", "rl_model_vecnormalize_256_steps.pkl"):
        (ckpts / name).write_bytes(b"never read: model.zip is newer")
    before = (run / "model.zip").read_bytes()
    result = train_controller(_tiny_cfg(toy), run, resume=True)
    assert "from model.zip" in capsys.readouterr().out
    assert result.metrics["train"]["resumed_from"] == 512 and (run / "model.zip").read_bytes() == before


def test_statistics_saved_with_another_model_are_refused(tiny_run, tmp_path):
    """model.zip and vecnormalize.pkl are replaced one after the other; a run stopped between the two
    renames pairs weights and statistics of different steps, which loading names instead of using."""
    from agents.evaluate import STEPS_ATTR, load_controller, load_vecnormalize

    run = _copy_run(tiny_run, tmp_path)
    stats = load_vecnormalize(run / "vecnormalize.pkl")
    assert getattr(stats, STEPS_ATTR) == 512  # stamped with the model's step count
    load_controller(run)
    setattr(stats, STEPS_ATTR, 256)
    stats.class_attributes, stats.returns = {}, None  # what VecNormalize's pickling drops (loaded without a venv)
    stats.save(str(run / "vecnormalize.pkl"))
    with pytest.raises(ValueError, match=r"statistics of step 256 but the model beside it was saved at step 512"):
        load_controller(run)


def test_resume_keeps_the_validation_history(toy, tmp_path):
    from agents.train import train_controller

    out = tmp_path / "run"
    first = train_controller(_tiny_cfg(toy, timesteps=1024, evals=2, eval_episodes=2), out)
    seen = first.metrics["val"]["timesteps"]
    assert seen and max(seen) <= 1024
    longer = train_controller(_tiny_cfg(toy, timesteps=2048, evals=2, eval_episodes=2), out, resume=True)
    after = longer.metrics["val"]["timesteps"]
    assert after[: len(seen)] == seen and len(after) > len(seen) and max(after) > 1024


def test_preview_reading_baselines_pay_for_the_preview(toy):
    """The cascade reads the preview from the table whatever the env shows: it is evaluated (and tuned)
    with the preview charged, so asking for observation "none" cannot make its decisions cheaper."""
    from agents.baselines import eval_kwargs_for
    from agents.sweep import baseline_policy

    results = []
    for observation in ("features", "none"):
        kwargs = {**toy, "observation": observation, "split": "test"}
        policy = baseline_policy("cascade", "tnn/Throttle-v0", kwargs, lam=0.1)
        assert eval_kwargs_for(policy, kwargs)["observation"] == "features"
        results.append(_evaluate(policy, {**toy, "observation": observation}))
    assert results[0]["energy_mj"] == pytest.approx(results[1]["energy_mj"])
    assert results[0]["accuracy"] == results[1]["accuracy"]
    controller = object()  # no needs_preview: a trained controller sees what its own env kwargs show
    assert eval_kwargs_for(controller, {**toy, "observation": "none"})["observation"] == "none"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"normalize_kwargs": {"norm_obz": True}}, r"normalize_kwargs: VecNormalize does not take 'norm_obz'"),
        ({"normalize_kwargs": {"clip_obs": float("nan")}}, r"normalize_kwargs\.clip_obs must be a finite number"),
        ({"gamma": float("nan")}, r"gamma must be a finite number"),
        ({"learning_rate": float("inf")}, r"learning_rate must be a finite number"),
    ],
)
def test_hyperparams_refuse_bad_normalize_kwargs_and_non_finite_numbers(override, message):
    from agents.config import HyperparamError, load_hyperparams

    with pytest.raises(HyperparamError, match=message):
        load_hyperparams("ppo", "tnn/Throttle-v0", override)


def test_evaluate_controller_pins_a_budget_conditioned_policy(toy, tmp_path, capsys, monkeypatch):
    """A budget-conditioned run's eval_env.json draws λ per episode; evaluate-controller asks for one λ
    and evaluates it pinned there, as `tnn pareto` does; split and subset overrides are refused."""
    import json

    import agents.evaluate
    from envs.throttle import CONTEXT
    from tnn.cli import main

    out = tmp_path / "conditioned"
    low, high = 0.01, 2.0  # high > 1: the context shows λ / high, not λ
    argv = ["train-controller", "--timesteps", "512", "--n-envs", "16", "--no-test", "--no-progress"]
    kwargs = {**toy, "reward_kwargs": {"lam": [low, high]}}
    argv += ["--hyperparams", '{"batch_size": 256}', "--env-kwargs", json.dumps(kwargs), "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["evaluate-controller", str(out), "--no-progress"]) == 2
    assert "budget-conditioned" in capsys.readouterr().err

    built = []  # (kwargs, reward value and context λ after a reset) of each env the evaluation makes
    real = agents.evaluate.make_eval_env

    def capture(env_id, env_kwargs, copies=1):
        env = real(env_id, env_kwargs, copies=copies)
        first = env[0] if isinstance(env, list) else env
        for seed in (0, 1, 2):  # a drawn λ would differ between episodes
            obs, _ = first.reset(seed=seed)
            value = first.unwrapped.reward_fn.value
            built.append((dict(env_kwargs), value, float(obs["context"][CONTEXT.index("episode_parameter")])))
        return env

    monkeypatch.setattr(agents.evaluate, "make_eval_env", capture)
    assert (
        main(["evaluate-controller", str(out), "--lam", "0.1", "--no-progress", "--out", str(tmp_path / "m.json")]) == 0
    )
    assert json.loads((tmp_path / "m.json").read_text())["setting"] == "λ=0.1"
    assert len(built) == 3
    for env_kwargs, value, context_lam in built:
        assert "reward_kwargs" not in env_kwargs
        assert value == pytest.approx(0.1)
        assert context_lam == pytest.approx(0.1 / max(high, 1.0))
    for bad, word in (('{"split": "val"}', "split"), ('{"subset": [0, 0.5]}', "subset")):
        for target in (str(out), "static"):
            argv = ["evaluate-controller", target, "--env-kwargs", json.dumps({**toy, **json.loads(bad)})]
            assert main([*argv, "--lam", "0.1"] if target == str(out) else argv) == 2
            assert f"drop {word}" in capsys.readouterr().err


# ---------------------------------------------------------------- audit: bad input named, never run


def _other_checkpoint(path, *, dataset="fashion_mnist", **model_kwargs):
    """A resnet8 checkpoint beside the toy one (fresh weights: another seed, or another network)."""
    import tnn

    model = tnn.create_model("resnet8", **{"num_classes": 4, "in_channels": 1, **model_kwargs})
    return str(tnn.save_checkpoint(model, path, dataset=dataset))


def test_evaluate_controller_refuses_another_network(run_dir, tmp_path, capsys):
    import json

    from tnn.cli import main

    other = _other_checkpoint(tmp_path / "cifar.pt", dataset="cifar10", levels=[0.5, 1.0])
    out = tmp_path / "m.json"
    argv = ["evaluate-controller", str(run_dir), "--env-kwargs", json.dumps({"checkpoint": other}), "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "was trained on fashion_mnist resnet8 with 8 levels" in err and "holds cifar10 resnet8 with 2 levels" in err
    assert "dataset 'fashion_mnist' → 'cifar10'" in err and "train a controller for this one" in err
    assert "Traceback" not in err and not out.exists()


def test_network_changes_compare_what_the_observations_depend_on(toy, tmp_path):
    import shutil

    from agents.evaluate import network_changes

    trained = {"checkpoint": toy["checkpoint"], "observation": "features"}
    seed = _other_checkpoint(tmp_path / "seed1.pt")  # same dataset, arch and levels; other weights
    copy = shutil.copy(toy["checkpoint"], tmp_path / "copy.pt")  # the same weights elsewhere
    assert network_changes(trained, {"checkpoint": copy})[0] == []
    assert network_changes(trained, {"checkpoint": seed})[0][0].startswith("weights: another checkpoint")
    none = {**trained, "observation": "none"}  # the context alone: another seed's network is a fair question
    assert network_changes(none, {"checkpoint": seed, "observation": "none"})[0] == []
    assert network_changes(trained, {"checkpoint": toy["checkpoint"], "preview_level": 1})[0] == ["preview_level 0 → 1"]


def test_evaluate_policy_refuses_another_preview_level_with_equal_spaces(run_dir, toy):
    from agents.evaluate import NetworkMismatchError, evaluate_policy, load_controller, make_eval_env

    policy, _spec = load_controller(run_dir)
    env = make_eval_env("tnn/Throttle-v0", {**toy, "split": "test", "preview_level": 1})
    assert env.observation_space == policy.model.observation_space  # the toy's previews are equally wide
    with pytest.raises(NetworkMismatchError, match="preview_level 0 → 1"):
        evaluate_policy(policy, env)
    env.close()


@pytest.mark.parametrize(
    ("algo", "override", "message"),
    [
        ("ppo", {"gamma": 2}, "gamma must be in [0, 1], got 2"),
        ("a2c", {"gae_lambda": -0.1}, "gae_lambda must be in [0, 1], got -0.1"),
        ("ppo", {"clip_range": 0}, "clip_range must be > 0, got 0"),
        ("ppo", {"clip_range": "lin_-0.2"}, "clip_range must be > 0, got 'lin_-0.2'"),
        ("ppo", {"n_steps": 0}, "n_steps must be > 0"),
        ("ppo", {"batch_size": -8}, "batch_size must be > 0"),
        ("ppo", {"n_epochs": 0}, "n_epochs must be > 0"),
        ("sac", {"learning_rate": -1e-3}, "learning_rate must be > 0"),
        ("dqn", {"exploration_final_eps": 1.5}, "exploration_final_eps must be in [0, 1]"),
        ("ppo", {"policy_kwargs": {"net_arch": "big"}}, "net_arch must be a list of positive layer sizes"),
        ("ppo", {"policy_kwargs": {"net_arch": [64, 0]}}, "e.g. [64, 64], or a mapping {pi: [...], vf: [...]}"),
        ("sac", {"policy_kwargs": {"net_arch": {"pi": [64], "vf": [64]}}}, "a mapping {pi: [...], qf: [...]}"),
        ("ppo", {"policy_kwargs": {"activation_fn": "nn.Swish"}}, "activation_fn must name one of nn.ReLU, nn.Tanh"),
        ("ppo", {"policy_kwargs": {"activation_fn": 3}}, 'e.g. "nn.Tanh" or "tanh"'),
        ("ppo", {"policy": "MlpPolicy"}, "policy must be MultiInputPolicy (every TNN env observes a dict"),
        ("ppo", {"policy_kwargs": {"foo": 1}}, "MultiInputActorCriticPolicy does not take 'foo'; valid keys:"),
        ("dqn", {"policy_kwargs": {"ortho_init": True}}, "MultiInputPolicy does not take 'ortho_init'"),
        ("ppo", {"policy_kwargs": {"ortho_init": "yes"}}, "policy_kwargs.ortho_init must be true/false, got 'yes'"),
        ("sac", {"policy_kwargs": {"log_std_init": float("nan")}}, "log_std_init must be a finite number"),
        ("sac", {"policy_kwargs": {"n_critics": 0}}, "policy_kwargs: n_critics must be > 0, got 0"),
        ("ppo", {"policy_kwargs": {"optimizer_class": "Lion"}}, "optimizer_class must name one of optim.Adam,"),
        ("ppo", {"policy_kwargs": {"features_extractor_class": "x"}}, "an import spec is 'module:attr'"),
        ("ppo", {"policy_kwargs": {"features_extractor_class": "no_such_mod:X"}}, "cannot import 'no_such_mod'"),
        (
            "ppo",
            {"policy_kwargs": {"features_extractor_class": "json:nothing"}},
            "module 'json' has no attribute 'nothing'",
        ),
        ("ppo", {"policy_kwargs": {"features_extractor_class": "json:JSONDecoder"}}, "is not a features extractor"),
        ("ppo", {"policy_kwargs": {"features_extractor_class": 3}}, "must be an import spec 'module:Class' of a"),
        ("ppo", {"policy_kwargs": {"optimizer_kwargs": {"lr": 1}}}, "Adam does not take 'lr' (the learning rate is"),
        (
            "a2c",
            {"policy_kwargs": {"optimizer_class": "sgd", "optimizer_kwargs": {"betas": [0.9, 0.9]}}},
            "optimizer_kwargs: SGD does not take 'betas'",
        ),
        ("ppo", {"policy_kwargs": {"optimizer_kwargs": {"eps": float("inf")}}}, "optimizer_kwargs.eps must be finite"),
        ("ppo", {"policy_kwargs": {"features_extractor_kwargs": {"x": 1}}}, "CombinedExtractor does not take 'x'"),
    ],
)
def test_hyperparameter_ranges_and_policy_kwargs_checked(algo, override, message):
    env_id = "tnn/ThrottleDiscrete-v0" if algo == "dqn" else "tnn/Throttle-v0"
    with pytest.raises(HyperparamError, match=re.escape(message)):
        load_hyperparams(algo, env_id, override)


def test_activation_names_resolve_and_round_trip():
    import torch

    from agents.config import to_yaml_ready

    for name in ("nn.Tanh", "torch.nn.Tanh", "Tanh", "tanh"):
        pk = {"activation_fn": name, "net_arch": {"pi": [32], "vf": [64, 64]}}
        _, kwargs = load_hyperparams("ppo", "tnn/Throttle-v0", {"policy_kwargs": pk})
        assert kwargs["policy_kwargs"]["activation_fn"] is torch.nn.Tanh
        assert to_yaml_ready(kwargs)["policy_kwargs"]["activation_fn"] == "nn.Tanh"
    for name in ("optim.AdamW", "torch.optim.AdamW", "adamw", torch.optim.AdamW):
        _, kwargs = load_hyperparams("ppo", "tnn/Throttle-v0", {"policy_kwargs": {"optimizer_class": name}})
        assert kwargs["policy_kwargs"]["optimizer_class"] is torch.optim.AdamW
        written = to_yaml_ready(kwargs)["policy_kwargs"]["optimizer_class"]
        assert written == "optim.AdamW"
        again = load_hyperparams("ppo", "tnn/Throttle-v0", {"policy_kwargs": {"optimizer_class": written}})
        assert again[1]["policy_kwargs"]["optimizer_class"] is torch.optim.AdamW


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_features_extractor_of_your_own_is_checked_imported_and_named_back(monkeypatch):
    from stable_baselines3.common.torch_layers import CombinedExtractor

    from agents.config import extractor_of_run, to_yaml_ready

    monkeypatch.syspath_prepend(str(EXAMPLES))
    from split_extractor import SplitMLP

    pk = {"features_extractor_class": "split_extractor:SplitMLP", "features_extractor_kwargs": {"hidden": 8}}
    _, kwargs = load_hyperparams("ppo", "tnn/Throttle-v0", {"policy_kwargs": pk})
    assert kwargs["policy_kwargs"]["features_extractor_class"] is SplitMLP
    assert to_yaml_ready(kwargs)["policy_kwargs"]["features_extractor_class"] == "split_extractor:SplitMLP"
    assert extractor_of_run({"hyperparams": {"policy_kwargs": pk}}, "config.yml") is SplitMLP
    assert extractor_of_run({"hyperparams": {}}, "config.yml") is None
    _, default = load_hyperparams(
        "ppo", "tnn/Throttle-v0", {"policy_kwargs": {"features_extractor_class": "CombinedExtractor"}}
    )
    assert default["policy_kwargs"]["features_extractor_class"] is CombinedExtractor
    bad = {**pk, "features_extractor_kwargs": {"width": 3}}  # checked against SplitMLP, not CombinedExtractor
    with pytest.raises(HyperparamError, match=re.escape("SplitMLP does not take 'width'; valid keys: hidden")):
        load_hyperparams("ppo", "tnn/Throttle-v0", {"policy_kwargs": bad})

    class Local(SplitMLP):
        pass

    with pytest.raises(HyperparamError, match="defined in a script or a function"):
        load_hyperparams("ppo", "tnn/Throttle-v0", {"policy_kwargs": {"features_extractor_class": Local}})


def test_controller_with_its_own_features_extractor_trains_resumes_and_loads(toy, tmp_path, monkeypatch, capsys):
    import json

    import yaml

    from agents.evaluate import load_controller
    from agents.safe_load import RunFileError
    from tnn.cli import main

    monkeypatch.syspath_prepend(str(EXAMPLES))
    from split_extractor import SplitMLP

    out = tmp_path / "run"
    pk = {"features_extractor_class": "split_extractor:SplitMLP", "features_extractor_kwargs": {"hidden": 8}}
    hp = {"batch_size": 64, "n_steps": 8, "policy_kwargs": pk}
    argv = ["train-controller", "--timesteps", "64", "--n-envs", "8", "--no-test", "--no-progress"]
    argv += ["--hyperparams", json.dumps(hp), "--env-kwargs", json.dumps(toy), "--out", str(out)]
    assert main(argv) == 0
    config = yaml.safe_load((out / "config.yml").read_text())
    assert config["hyperparams"]["policy_kwargs"]["features_extractor_class"] == "split_extractor:SplitMLP"
    policy, _spec = load_controller(out)
    extractor = policy.model.policy.features_extractor
    assert type(extractor) is SplitMLP and extractor.features_dim == 8 * len(extractor.encoders)
    argv[argv.index("64")] = "128"
    assert main([*argv, "--resume"]) == 0  # the archive's extractor class resolves on resume too
    assert load_controller(out)[0].model.num_timesteps == 128
    capsys.readouterr()

    # the archive may name only the class config.yml names: with that entry gone it is refused, with the fix
    del config["hyperparams"]["policy_kwargs"]["features_extractor_class"]
    (out / "config.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(
        RunFileError, match=r"split_extractor\.SplitMLP.*names it as policy_kwargs\.features_extractor_class"
    ):
        load_controller(out)


def test_controller_with_named_activation_trains_and_loads(toy, tmp_path):
    import json

    import torch

    from agents.evaluate import load_controller
    from tnn.cli import main

    out = tmp_path / "run"
    pk = {"activation_fn": "tanh", "net_arch": [16], "optimizer_class": "adamw", "optimizer_kwargs": {"eps": 1e-6}}
    hp = {"batch_size": 64, "n_steps": 8, "policy_kwargs": pk}
    argv = ["train-controller", "--timesteps", "64", "--n-envs", "8", "--no-test", "--no-progress"]
    argv += ["--hyperparams", json.dumps(hp), "--env-kwargs", json.dumps(toy), "--out", str(out)]
    assert main(argv) == 0
    policy, _spec = load_controller(out)  # the activation and optimizer are on safe_load's allow-list
    assert policy.model.policy.activation_fn is torch.nn.Tanh
    assert type(policy.model.policy.optimizer) is torch.optim.AdamW
    assert policy.model.policy.optimizer.defaults["eps"] == 1e-6


def test_bad_hyperparams_json_gives_a_hyperparams_example(tmp_path, capsys):
    from tnn.cli import main

    with pytest.raises(SystemExit):
        main(["train-controller", "--out", str(tmp_path / "r"), "--hyperparams", "{bad"])
    err = capsys.readouterr().err
    assert "argument --hyperparams: not JSON" in err and '"gamma": 0.9' in err and "cost_metric" not in err


@pytest.mark.parametrize("command", ["train-controller", "evaluate-controller", "cascade-bound"])
def test_non_tnn_env_id_is_named_not_its_kwargs(toy, tmp_path, capsys, command):
    import json

    from tnn.cli import main

    argv = [command, *(["static"] if command == "evaluate-controller" else []), "--env-id", "CartPole-v1"]
    argv += ["--env-kwargs", json.dumps(toy)] if command != "train-controller" else ["--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "CartPole-v1 is not a TNN environment" in err and "tnn/Throttle-v0 or tnn/ThrottleDiscrete-v0" in err
    assert "does not take" not in err and not (tmp_path / "r").exists()
