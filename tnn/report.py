"""Tables of shipped checkpoints, made from their model cards (never typed by hand)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tnn.checkpoint import CheckpointError, read_checkpoint

__all__ = ["accuracy_table", "baseline_comparison"]


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
    Empty when no pair exists."""
    if cards is None:
        cards = [_card(p) for p in paths]
    named = sorted(zip([_name(Path(p)) for p in paths], cards, strict=True), key=lambda nc: nc[0])
    tnns = [(n, c) for n, c in named if c.get("variant") == "tnn"]
    rows = []
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
    if not rows:
        return ""
    head = [
        "Each TNN level against the standalone networks of the same architecture, data set, number of training "
        f"epochs and cost (FLOPs within {rel_tol:.0%}); the commands above say how each was trained:",
        "",
        "| TNN level | test % | standalone network | test % | MFLOPs (TNN / standalone) | TNN − standalone (pt) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    return "\n".join(head + rows)


def _peers(card: dict) -> tuple:
    """What two networks must share to be compared: architecture, data set and training epochs."""
    return card["arch"], card.get("dataset"), card.get("made", {}).get("epochs")


def _name(path: Path) -> str:
    return path.parent.name if path.name == "model.pt" else path.name  # run directories ship whole
