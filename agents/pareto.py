"""Accuracy–cost Pareto data: ``pareto.csv``, the figure beside it, and the area under each front.

A row is one operating point of one method, measured on the test split (means per input):
``method,setting,accuracy,energy_mj,latency_ms,flops``. The static front (one point per level) is
drawn as a line because every point on it is reachable by fixing u; every other method is drawn as
markers labelled with its setting. The hypervolume of a method is the area under its staircase
front on normalised axes (cost / the largest static cost, accuracy as a fraction), so 1.0 would be
perfect accuracy at zero cost and the numbers are comparable between metrics.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tnn.checkpoint import atomic_write

__all__ = [
    "COLUMNS",
    "METRICS",
    "ParetoPoint",
    "front",
    "hypervolume",
    "hypervolumes",
    "plot_pareto",
    "read_pareto_csv",
    "static_gaps",
    "static_hull",
    "write_pareto_csv",
]

COLUMNS = ("method", "setting", "accuracy", "energy_mj", "latency_ms", "flops")
METRICS = {
    "energy_mj": "energy per input (mJ)",
    "latency_ms": "latency of the batch call (ms)",
    "flops": "FLOPs per input",
}


@dataclass(frozen=True)
class ParetoPoint:
    """One operating point: ``accuracy`` in % on the test split, costs as means per input."""

    method: str
    setting: str
    accuracy: float
    energy_mj: float
    latency_ms: float
    flops: float

    @classmethod
    def from_metrics(cls, method: str, setting: str, metrics: Mapping[str, Any]) -> ParetoPoint:
        """From an ``evaluate`` metrics dict (accuracy in %, ``*_per_input`` means)."""
        return cls(
            method,
            str(setting),
            float(metrics["accuracy"]),
            float(metrics["energy_mj"]),
            float(metrics["latency_ms"]),
            float(metrics["flops"]),
        )


def write_pareto_csv(path: str | Path, points: Iterable[ParetoPoint]) -> Path:
    """Write ``pareto.csv`` atomically, in the column order of ``COLUMNS``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for p in points:
        writer.writerow(
            [p.method, p.setting, f"{p.accuracy:.4f}", f"{p.energy_mj:.6g}", f"{p.latency_ms:.6g}", f"{p.flops:.6g}"]
        )
    return atomic_write(path, lambda fh: fh.write(buf.getvalue().encode()))


def read_pareto_csv(path: str | Path) -> list[ParetoPoint]:
    """Read a ``pareto.csv``; a file with other columns is refused, naming the expected ones."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames} are not {list(COLUMNS)}; rewrite it with tnn pareto")
        return [
            ParetoPoint(
                r["method"],
                r["setting"],
                float(r["accuracy"]),
                float(r["energy_mj"]),
                float(r["latency_ms"]),
                float(r["flops"]),
            )
            for r in reader
        ]


def front(points: Sequence[ParetoPoint], metric: str = "energy_mj") -> list[ParetoPoint]:
    """The non-dominated points (lower cost, higher accuracy), sorted by cost."""
    best, out = -math.inf, []
    for p in sorted(points, key=lambda p: (getattr(p, metric), -p.accuracy)):
        if p.accuracy > best:
            out.append(p)
            best = p.accuracy
    return out


def hypervolume(costs: Sequence[float], accuracies: Sequence[float], ref_cost: float) -> float:
    """Area under the staircase front on [0, 1]²: cost / ``ref_cost``, accuracy in % / 100.

    Each point dominates every (cost ≥ its cost, accuracy ≤ its accuracy) up to ``ref_cost``; the
    area of the union is the hypervolume with reference point (``ref_cost``, 0 %).
    """
    if ref_cost <= 0:
        raise ValueError(f"ref_cost must be positive, got {ref_cost}")
    pts = sorted((c / ref_cost, a / 100.0) for c, a in zip(costs, accuracies, strict=True) if c <= ref_cost)
    area, best = 0.0, 0.0
    for i, (x, a) in enumerate(pts):
        best = max(best, a)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else 1.0
        area += (nxt - x) * best
    return area


def hypervolumes(points: Sequence[ParetoPoint], metric: str = "energy_mj") -> dict[str, float]:
    """Hypervolume per method, normalised by the largest static cost (u = 1); else the largest cost."""
    static = [getattr(p, metric) for p in points if p.method == "static"]
    ref = max(static) if static else max(getattr(p, metric) for p in points)
    out = {}
    for method in dict.fromkeys(p.method for p in points):
        mine = [p for p in points if p.method == method]
        out[method] = hypervolume([getattr(p, metric) for p in mine], [p.accuracy for p in mine], ref)
    return out


def static_hull(points: Sequence[ParetoPoint], metric: str = "energy_mj") -> tuple[list[float], list[float]]:
    """What fixed settings can reach: the upper concave hull of the static points (cost, accuracy).

    Time-sharing two levels reaches every point on the segment between them, so the hull, not the
    line through the levels, is the front a controller must beat; a dominated level (dearer and no
    better than another) never bounds it.
    """
    static = [p for p in points if p.method == "static"]
    if not static:
        raise ValueError("the static points (one per level) are missing from the list")
    hull: list[tuple[float, float]] = []
    for p in front(static, metric):
        x, y = float(getattr(p, metric)), float(p.accuracy)
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = hull[-2], hull[-1]
            if (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0) >= 0:  # hull[-1] on or below the chord
                hull.pop()
            else:
                break
        hull.append((x, y))
    xs, ys = zip(*hull, strict=True)
    return list(xs), list(ys)


def static_gaps(points: Sequence[ParetoPoint], metric: str = "energy_mj") -> list[float | None]:
    """Per point: accuracy minus the static hull's at the same cost (pt); None for static points.

    The hull (:func:`static_hull`) is interpolated linearly and held flat beyond its ends, so a
    positive gap is an improvement no mix of fixed settings reaches.
    """
    xs, ys = static_hull(points, metric)
    return [None if p.method == "static" else p.accuracy - float(np.interp(getattr(p, metric), xs, ys)) for p in points]


CONTEXT_ONLY = " obs=none"  # the setting suffix of a controller chosen without the preview (tnn pareto)


def _coincident(points: Sequence[ParetoPoint], metric: str) -> dict[tuple[float, float], str]:
    """One label per spot: points drawn on top of each other (cost within 0.5 %, accuracy within
    0.05 pt) share it, e.g. "λ=0.003,0.01"; the " obs=…" suffix is left to the marker's fill."""
    groups: dict[tuple[float, float], list[str]] = {}
    for p in points:
        x, name = getattr(p, metric), p.setting.split(" obs=")[0]
        for gx, gy in groups:
            if abs(gx - x) <= 0.005 * max(abs(gx), 1e-12) and abs(gy - p.accuracy) <= 0.05:
                groups[(gx, gy)].append(name)
                break
        else:
            groups[(x, p.accuracy)] = [name]
    labels = {}
    for spot, names in groups.items():
        lam = all(n.startswith("λ=") for n in names)
        labels[spot] = "λ=" + ",".join(n[2:] for n in names) if lam else ", ".join(names)
    return labels


_MARKERS = {"ppo": "o", "ppo-budget": "D", "a2c": "o", "sac": "o", "dqn": "o"}
_FIXED = {"random": "x", "cascade": "^", "bandit": "s", "oracle": "*"}


def plot_pareto(
    points: Sequence[ParetoPoint],
    path: str | Path,
    metrics: Sequence[str] = tuple(METRICS),
    title: str = "",
) -> Path:
    """Accuracy against each cost metric (one panel each): static as a line, others as labelled markers.

    The oracle is an upper bound, not a controller; its legend entry says so.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(p.method for p in points))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    hv = {m: hypervolumes(points, m) for m in metrics}
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, method in enumerate(methods):
            mine = [p for p in points if p.method == method]
            color = colors[i % len(colors)]
            label = f"{method} (upper bound)" if method == "oracle" else method
            label += f"  HV {hv[metric][method]:.3f}"
            if method == "static":
                mine = sorted(mine, key=lambda p: getattr(p, metric))
                ax.plot([getattr(p, metric) for p in mine], [p.accuracy for p in mine], "-", color="0.3", lw=1.5)
                ax.scatter(
                    [getattr(p, metric) for p in mine],
                    [p.accuracy for p in mine],
                    s=14,
                    color="0.3",
                    label=label,
                    zorder=3,
                )
                for p in mine:
                    ax.annotate(
                        f"u={p.setting}",
                        (getattr(p, metric), p.accuracy),
                        fontsize=6,
                        color="0.3",
                        xytext=(3, -8),
                        textcoords="offset points",
                    )
                continue
            marker = _MARKERS.get(method.split(":")[0], _FIXED.get(method, "o"))
            hollow = [p.setting.endswith(CONTEXT_ONLY) for p in mine]  # controllers that skip the preview
            for flag in (False, True):
                pts = [p for p, h in zip(mine, hollow, strict=True) if h == flag]
                if not pts:
                    continue
                ax.scatter(
                    [getattr(p, metric) for p in pts],
                    [p.accuracy for p in pts],
                    marker=marker,
                    s=36,
                    color="white" if flag else color,
                    label=None if flag and not all(hollow) else label,
                    zorder=4,
                    edgecolors=color if flag else ("k" if marker not in ("x", "+") else None),
                    linewidths=1.0 if flag else 0.4,
                )
            if method.split(":")[0] in _MARKERS:  # label the controllers' points (legibility)
                below = sum(m.split(":")[0] in _MARKERS for m in methods[: methods.index(method)]) % 2 == 1
                for (x, y), text in _coincident(mine, metric).items():
                    ax.annotate(
                        text,
                        (x, y),
                        fontsize=6,
                        color=color,
                        xytext=(4, -9 if below else 3),
                        textcoords="offset points",
                    )
        if any(p.setting.endswith(CONTEXT_ONLY) for p in points):
            ax.scatter(
                [], [], marker="o", s=36, color="white", edgecolors="0.3", label="hollow: no preview (context only)"
            )
        ax.set_xlabel(METRICS.get(metric, metric))
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=130)
    plt.close(fig)
    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def points_as_dicts(points: Iterable[ParetoPoint]) -> list[dict[str, Any]]:
    """Rows as plain dicts (for JSON)."""
    return [asdict(p) for p in points]
