"""The README's environment snippets run as printed (on the shipped model and the real data)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.is_dir(), reason="needs the Fashion-MNIST data (apt-get install dataset-fashion-mnist)")
def test_env_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TNN_CACHE", str(tmp_path / "cache"))
    make, budget, vec = (s for s in _snippets() if "gym.make" in s or "ThrottleVecEnv" in s)
    scope: dict = {}
    exec(make, scope)  # the README's own code
    assert 0 < scope["info"]["u"] <= 1
    exec(budget, scope)
    env = scope["env"]
    env.reset(seed=0)
    for _ in range(10_000):  # the budget must end the episode before its 64 steps (random u ≥ 1 call each)
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    assert terminated and not truncated and reward == -1.0
    short = vec.replace('reward="conditioned"))', 'reward="conditioned"), n_steps=8)').replace("100_000", "512")
    assert short != vec.replace("100_000", "512"), "the README's PPO line changed; update this test"
    exec(short, scope)  # a short run of the same code


def test_readme_tables_are_what_the_commands_print():
    """The READMEs paste command output (profiles, the model table): it must be current."""
    from tnn.profile import CostProfile, format_table
    from tnn.report import accuracy_table, time_to_accuracy_table

    readme = (ROOT / "README.md").read_text()
    listing = (ROOT / "results" / "profiles" / "README.md").read_text()
    block = listing[listing.index("<!-- profiles: begin -->") : listing.index("<!-- profiles: end -->")]
    profiles = sorted((ROOT / "results" / "profiles").glob("*.json"))
    assert profiles
    for path in profiles:
        assert format_table(CostProfile.load(path)) in block, f"results/profiles/README.md: {path.name} is stale"
    begin, end = "<!-- profile cifar10-resnet20-cpu-b64: begin -->", "<!-- profile cifar10-resnet20-cpu-b64: end -->"
    b64 = readme[readme.index(begin) : readme.index(end)]
    b64_table = format_table(CostProfile.load(ROOT / "results" / "profiles" / "cifar10-resnet20-cpu-b64.json"))
    assert b64_table in b64, "README's table of cifar10-resnet20-cpu-b64.json is stale"
    models = sorted((ROOT / "results" / "models").glob("*/model.pt"))
    table = accuracy_table(models)
    for text in (readme, (ROOT / "results" / "README.md").read_text()):
        assert f"<!-- tnn report: begin -->\n{table}\n<!-- tnn report: end -->" in text
    timing = time_to_accuracy_table(models, [80, 85, 90])
    assert f"<!-- time-to-accuracy: begin -->\n{timing}\n<!-- time-to-accuracy: end -->" in readme


def test_readme_latency_tables_are_what_the_bench_wrote():
    """The latency tables pasted in the README are `format_table` of the committed benchmark JSON."""
    import json

    from tnn.bench import LevelTiming, format_table

    readme = (ROOT / "README.md").read_text()
    for name in ("cpu-resnet20.json", "cpu-resnet20-channels-last.json"):
        rows = [LevelTiming(**r) for r in json.loads((ROOT / "results" / "bench" / name).read_text())["rows"]]
        assert rows
        assert format_table(rows) in readme, f"README's latency table of results/bench/{name} is stale"
