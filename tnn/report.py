"""Tables of shipped checkpoints, made from their model cards (never typed by hand)."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tnn.checkpoint import CheckpointError, read_checkpoint
from tnn.train import RUNTIME_FIELDS, _with_new_defaults

__all__ = ["accuracy_table", "baseline_comparison", "seed_spread", "time_to_accuracy_table"]


def accuracy_table(paths: Sequence[str | os.PathLike]) -> str:
    """A markdown table (one row per checkpoint: test accuracy % per level, as its card records it) and the
    command that made each."""
    cards = [(Path(p), _card(p)) for p in sorted(paths)]
    levels = sorted({float(u) for _, card in cards for u in card.get("accuracy", {})})
    head = "| checkpoint | arch | dataset | variant | params | MFLOPs (u=1) | " + " | ".join(f"u={u:g}" for u in levels)
    lines = [head + " | training |", "|" + "---|" * 6 + "---:|" * len(levels) + "---|"]
    for path, card in cards:
        acc = {float(u): a for u, a in card.get("accuracy", {}).items()}
        made = card.get("made", {})
        how = f"{made.get('epochs', '?')} epochs on {made.get('device', '?')}"
        if "train_seconds" in made:
            how += f", {made['train_seconds'] / 60:.1f} min"
        name = _name(path)
        cells = " | ".join(f"{acc[u]:.2f}" if u in acc else "–" for u in levels)
        lines.append(
            f"| `{name}` | {card['arch']} | {card.get('dataset', '?')} | {card.get('variant', '?')} | "
            f"{card['params']['1']:,} | {card['flops']['1'] / 1e6:.1f} | {cells} | {how} |"
        )
    lines.append("")
    lines += [f"- `{_name(p)}`: `{card.get('made', {}).get('command', '(not recorded)')}`" for p, card in cards]
    comparison = baseline_comparison([p for p, _ in cards], cards=[card for _, card in cards])
    if comparison:
        lines += ["", comparison]
    spread = seed_spread([p for p, _ in cards], cards=[card for _, card in cards])
    if spread:
        lines += ["", spread]
    return "\n".join(lines)


def _card(path: str | os.PathLike) -> dict:
    """A checkpoint's card, checked for what the table reads; CheckpointError naming the file if not."""
    card = read_checkpoint(path)["card"]
    fix = "re-run tnn evaluate on it, or re-save it with tnn.save_checkpoint"
    if not isinstance(card.get("arch"), str):
        raise CheckpointError(f"{path}: its card names no architecture ('arch'); {fix}")
    for key in ("params", "flops"):
        if not isinstance(card.get(key), dict) or not isinstance(card[key].get("1"), int | float):
            raise CheckpointError(f"{path}: its card has no {key!r} at u=1; {fix}")
    accuracy = card.get("accuracy", {})
    if not isinstance(accuracy, dict):
        raise CheckpointError(f"{path}: its card's accuracy is not a table of u -> %; {fix}")
    for u, a in accuracy.items():
        try:
            float(u), float(a)
        except (TypeError, ValueError):
            raise CheckpointError(f"{path}: its card's accuracy has a bad entry {u!r}: {a!r}; {fix}") from None
    return card


def baseline_comparison(
    paths: Sequence[str | os.PathLike], *, cards: Sequence[dict] | None = None, rel_tol: float = 0.02
) -> str:
    """Each throttleable network's levels against the standalone networks (vanilla twins, narrower nets)
    of the same architecture, data set and training length that cost the same: a standalone network is
    paired with the TNN level whose FLOPs per input are within ``rel_tol`` of its own. Networks trained
    for different numbers of epochs are not compared (a longer schedule alone moves accuracy by points).
    Where either side of a pairing was trained by one recipe with several seeds (see ``seed_spread``), a
    second table compares the recipes: the gap between their mean accuracies over seeds, and the smallest
    and largest gap of the single pairs under it. Empty when no pair exists."""
    if cards is None:
        cards = [_card(p) for p in paths]
    named = sorted(zip([_name(Path(p)) for p in paths], cards, strict=True), key=lambda nc: nc[0])
    tnns = [(n, c) for n, c in named if c.get("variant") == "tnn"]
    keys = {n: _recipe_key(c) for n, c in named}
    rows = []
    recipes: dict[tuple, dict[str, Any]] = {}  # (TNN recipe, level, standalone recipe) -> the pairs under it
    for name, card in named:
        if card.get("variant") == "tnn" or "1" not in card.get("accuracy", {}):
            continue
        flops = card["flops"]["1"]
        for tname, tcard in tnns:
            if _peers(tcard) != _peers(card):
                continue
            for u, tflops in tcard["flops"].items():
                if abs(tflops - flops) <= rel_tol * flops and u in tcard.get("accuracy", {}):
                    mine, theirs = tcard["accuracy"][u], card["accuracy"]["1"]
                    rows.append(
                        f"| `{tname}` at u={float(u):g} | {mine:.2f} | `{name}` ({card.get('variant', '?')}) | "
                        f"{theirs:.2f} | {tflops / 1e6:.1f} / {flops / 1e6:.1f} | {mine - theirs:+.2f} |"
                    )
                    tkey, skey = keys[tname], keys[name]
                    if tkey is not None and skey is not None:
                        group = recipes.setdefault((tkey, float(u), skey), {"tnn": {}, "standalone": {}, "gaps": []})
                        group["tnn"][tname] = (mine, tcard["made"]["config"]["seed"])
                        group["standalone"][name] = (theirs, card["made"]["config"]["seed"])
                        group["gaps"].append(mine - theirs)
    if not rows:
        return ""
    head = [
        "Each TNN level against the standalone networks of the same architecture, data set, number of training "
        f"epochs and cost (FLOPs within {rel_tol:.0%}); the commands above say how each was trained:",
        "",
        "| TNN level | test % | standalone network | test % | MFLOPs (TNN / standalone) | TNN − standalone (pt) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    means = []
    for (_, u, _), group in sorted(recipes.items(), key=lambda kv: (sorted(kv[1]["tnn"]), kv[0][1])):
        tseeds = len({seed for _, seed in group["tnn"].values()})  # distinct seeds, as the seed tables count them
        sseeds = len({seed for _, seed in group["standalone"].values()})
        if tseeds < 2 and sseeds < 2:
            continue
        tmean = statistics.fmean(a for a, _ in group["tnn"].values())
        smean = statistics.fmean(a for a, _ in group["standalone"].values())
        tnames = ", ".join(f"`{n}`" for n in sorted(group["tnn"]))
        snames = ", ".join(f"`{n}`" for n in sorted(group["standalone"]))
        means.append(
            f"| {tnames} at u={u:g} | {tseeds} | {tmean:.2f} | {snames} | {sseeds} | "
            f"{smean:.2f} | {tmean - smean:+.2f} | {min(group['gaps']):+.2f} … {max(group['gaps']):+.2f} |"
        )
    if means:
        head_means = [
            "",
            "The same pairings by recipe, where a recipe was trained with several seeds (the seed tables below): "
            "mean test accuracy over each recipe's seeds, and the gap between the means beside the range of the "
            "single pairs' gaps:",
            "",
            "| TNN recipe | seeds | mean % | standalone recipe | seeds | mean % | gap of means (pt) | pair gaps (pt) |",
            "|---|---:|---:|---|---:|---:|---:|---|",
        ]
        rows += head_means + means
    return "\n".join(head + rows)


# Config keys that change how or where a run executes, or what it logs on the way, not the network it trains.
_NOT_RECIPE = frozenset({*RUNTIME_FIELDS, "seed", "device", "val_recalibration"})


def _recipe_key(card: dict) -> str | None:
    """What a network shares with the other seeds of its recipe: architecture, variant, kind of device and the
    ``tnn pretrain`` config apart from the seed and how the run executed; None when the card records no config."""
    made = card.get("made", {})
    config = made.get("config") if isinstance(made, dict) else None
    if not isinstance(config, dict) or not isinstance(config.get("seed"), int):
        return None
    # a run saved before a config field existed trained with its default (as `tnn pretrain --resume` reads it)
    recipe = {k: v for k, v in _with_new_defaults(config).items() if k not in _NOT_RECIPE}
    return json.dumps([card["arch"], card.get("variant"), made.get("device"), recipe], sort_keys=True)


def seed_spread(paths: Sequence[str | os.PathLike], *, cards: Sequence[dict] | None = None) -> str:
    """Networks trained by one recipe (the same ``tnn pretrain`` config, on the same kind of device)
    with different seeds: one table per recipe with each seed's test accuracy per level, their mean and
    their range (max − min), the run-to-run noise under every other comparison of those networks.
    Checkpoints whose card records no config are left out; empty when no recipe has two seeds."""
    if cards is None:
        cards = [_card(p) for p in paths]
    groups: dict[str, list[tuple[str, int, dict[float, float]]]] = {}
    for path, card in zip(paths, cards, strict=True):
        key = _recipe_key(card)
        if key is None:
            continue
        acc = {float(u): float(a) for u, a in card.get("accuracy", {}).items()}
        groups.setdefault(key, []).append((_name(Path(path)), card["made"]["config"]["seed"], acc))
    tables = []
    for members in groups.values():
        seeds = {seed for _, seed, _ in members}
        if len(seeds) < 2:
            continue
        members.sort(key=lambda m: (m[1], m[0]))
        levels = sorted(set.intersection(*(set(acc) for _, _, acc in members)))
        if not levels:
            continue
        names = ", ".join(f"`{name}`" for name, _, _ in members)
        lines = [
            f"{names}: one recipe, {len(seeds)} seeds. Test accuracy (%):",
            "",
            "| checkpoint | seed | " + " | ".join(f"u={u:g}" for u in levels) + " |",
            "|---|---:|" + "---:|" * len(levels),
        ]
        for name, seed, acc in members:
            lines.append(f"| `{name}` | {seed} | " + " | ".join(f"{acc[u]:.2f}" for u in levels) + " |")
        columns = [[acc[u] for _, _, acc in members] for u in levels]
        lines.append("| mean | | " + " | ".join(f"{statistics.fmean(c):.2f}" for c in columns) + " |")
        lines.append("| range (max − min) | | " + " | ".join(f"{max(c) - min(c):.2f}" for c in columns) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def _peers(card: dict) -> tuple:
    """What two networks must share to be compared: architecture, data set and training epochs."""
    return card["arch"], card.get("dataset"), card.get("made", {}).get("epochs")


def _name(path: Path) -> str:
    return path.parent.name if path.name == "model.pt" else path.name  # run directories ship whole


def time_to_accuracy_table(paths: Sequence[str | os.PathLike], targets: Sequence[float], level: float = 1.0) -> str:
    """A markdown table: for each checkpoint's training run (the ``metrics.json`` beside it), the
    wall time and epoch at which its validation accuracy at ``level`` first reached each of
    ``targets`` (%), as the run logged it at the end of every epoch; also its device, batch size,
    median seconds per epoch and best validation accuracy at that level. Times are the run's own
    (training plus the per-epoch validation, summed across resumes), on whatever machine ran it.
    Runs that never trained ``level`` are left out; none at all is a ValueError."""
    if not targets or any(not (0.0 < float(t) <= 100.0) for t in targets):
        raise ValueError(f"targets are accuracies in % (0, 100], got {list(targets)}")
    if not (0.0 < float(level) <= 1.0):  # NaN fails this too
        raise ValueError(f"level is a u in (0, 1], e.g. 1 or 0.5; got {level}")
    key = f"{float(level):g}"
    rows = []
    for path in sorted(Path(p) for p in paths):
        card = _card(path)
        history = _history(path)
        if not any(key in row["val_accuracy"] for row in history):
            continue
        made = card.get("made", {})
        config = made.get("config", {}) if isinstance(made.get("config"), dict) else {}
        seconds = [float(row["seconds"]) for row in history]
        per_epoch = statistics.median([b - a for a, b in zip([0.0, *seconds[:-1]], seconds, strict=True)])
        cells = []
        for target in targets:
            hit = next((row for row in history if row["val_accuracy"].get(key, -1.0) >= float(target)), None)
            cells.append("—" if hit is None else f"{_minutes(hit['seconds'])} (epoch {hit['epoch']})")
        best = max(row["val_accuracy"].get(key, -1.0) for row in history)
        rows.append(
            f"| `{_name(path)}` | {card.get('variant', '?')} | {made.get('device', '?')} | "
            f"{config.get('batch_size', '?')} | {len(history)} | {per_epoch:.1f} | {_minutes(seconds[-1])} | "
            + " | ".join(cells)
            + f" | {best:.2f} |"
        )
    if not rows:
        raise ValueError(f"no training history at u={key} in {[str(p) for p in paths]}")
    head = (
        "| run | variant | device | batch | epochs | s/epoch (median) | total | "
        + " | ".join(f"val ≥ {float(t):g} %" for t in targets)
        + f" | best val % at u={key} |"
    )
    sep = "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(targets) + "---:|"
    return "\n".join([head, sep, *rows])


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _history(path: Path) -> list[dict]:
    """The per-epoch history in the ``metrics.json`` beside checkpoint ``path``, checked for what
    :func:`time_to_accuracy_table` reads; a ValueError naming the file when it is missing or malformed."""
    metrics = path.parent / "metrics.json"
    if not metrics.is_file():
        raise ValueError(
            f"{path}: no metrics.json beside it; time to accuracy reads the per-epoch history that tnn pretrain "
            "writes into its run directory"
        )
    try:
        history = json.loads(metrics.read_text()).get("history")
        ok = isinstance(history, list) and bool(history)
        ok = ok and all(
            isinstance(row.get("val_accuracy"), dict)
            and isinstance(row.get("seconds"), int | float)
            and isinstance(row.get("epoch"), int)
            for row in history
        )
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise ValueError(
            f"{metrics}: not a tnn pretrain metrics file with a per-epoch history (epoch, val_accuracy, seconds)"
        )
    return history
