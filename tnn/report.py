"""Tables of shipped checkpoints, made from their model cards (never typed by hand)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tnn.checkpoint import read_checkpoint

__all__ = ["accuracy_table"]


def accuracy_table(paths: Sequence[str | os.PathLike]) -> str:
    """A markdown table (one row per checkpoint: test accuracy % per level, as its card records it) and the
    command that made each."""
    cards = [(Path(p), read_checkpoint(p)["card"]) for p in sorted(paths)]
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
    return "\n".join(lines)


def _name(path: Path) -> str:
    return path.parent.name if path.name == "model.pt" else path.name  # run directories ship whole
