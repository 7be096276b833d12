"""The shipped checkpoints say what they do: each card's accuracy is what `tnn evaluate` measures.

Slow (a full test-split pass per level); `make test-slow` and CI run them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tnn import data as tdata
from tnn.checkpoint import load_checkpoint, read_checkpoint
from tnn.train import evaluate_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "results" / "models").glob("*/model.pt"))


def _data_available(dataset: str) -> bool:
    try:
        tdata.load(dataset, "test")
    except tdata.DataNotFoundError:
        return False
    return True


def test_models_are_shipped() -> None:
    assert SHIPPED, "results/models/ holds no checkpoint"
    for path in SHIPPED:
        assert path.stat().st_size <= 5 * 2**20, f"{path} is over 5 MB"
        model, card = load_checkpoint(path)
        assert card["accuracy"], f"{path}: the card records no accuracy"
        assert set(card["accuracy"]) == {f"{u:g}" for u in model.levels}


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[p.parent.name for p in SHIPPED])
def test_card_accuracy_is_measured(path: Path) -> None:
    card = read_checkpoint(path)["card"]
    if not _data_available(card["dataset"]):
        pytest.skip(f"{card['dataset']} data not found")
    measured = evaluate_checkpoint(path, write=False, log=lambda _: None)
    for u, acc in measured.items():
        assert abs(card["accuracy"][f"{u:g}"] - acc) <= 0.1, f"{path.parent.name} u={u:g}"


def _study_envs() -> list[tuple[str | None, str | None]]:
    """(checkpoint, profile) of every shipped study's evaluation env, and the default (the demo)."""
    import json

    pairs = {(None, None)}
    for f in (ROOT / "results").glob("**/eval_env.json"):
        kwargs = json.loads(f.read_text())["kwargs"]
        pairs.add((kwargs.get("checkpoint"), kwargs.get("profile")))
    return sorted(pairs, key=str)


@pytest.mark.parametrize(("checkpoint", "profile"), _study_envs(), ids=str)
def test_shipped_profiles_fit_the_models_the_studies_use(checkpoint, profile, monkeypatch) -> None:
    from envs.throttle import DEFAULT_PATHS, resolve_checkpoint
    from tnn.profile import CostProfile

    monkeypatch.delenv("TNN_RESULTS", raising=False)
    monkeypatch.chdir(ROOT)  # the studies' paths are relative to the repository
    path = resolve_checkpoint(checkpoint)
    model, _ = load_checkpoint(path)
    profile = profile or ROOT / "results" / DEFAULT_PATHS["profile"]
    CostProfile.load(profile).check_model(model, profile_name=str(profile), checkpoint=path)
