"""Latency benchmark: every level timed side by side in one run, as a ratio to u=1.

Levels are *interleaved* — each repetition times every level once, in a rotating order — so that
thermal drift, frequency scaling or a noisy neighbour hits all levels alike. The masked reference
(full width, inactive channels zeroed: what masking-based TNN code runs) is timed in the same
loop, to show that only slicing saves time. So is, on request, the same input in channels-last memory
format (NHWC; NDHWC for 5-D clips), which can be faster than NCHW on CPU and throttle by another
ratio: both layouts are then measured under the same drift.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

import torch

from tnn.models import ThrottleNet, create_model

__all__ = [
    "LevelTiming",
    "bench_latency",
    "bench_train",
    "channels_last_format",
    "check_channels_last",
    "format_table",
    "time_interleaved",
    "time_levels",
    "time_train_step",
    "to_channels_last",
]

K = TypeVar("K")


@dataclass
class LevelTiming:
    """Latency of one forward call at one level (milliseconds)."""

    model: str
    batch_size: int
    u: float
    flops: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    ratio: float  # median / median at u=1 (sliced)
    masked_median_ms: float | None = None
    masked_ratio: float | None = None
    threads: int = 0  # torch CPU threads it ran with (0: not recorded)
    thread_ratio: float | None = None  # median / median of the same level at the first thread count
    # the sliced forward on a channels-last copy of the same input (None: not measured)
    channels_last_median_ms: float | None = None
    channels_last_p10_ms: float | None = None
    channels_last_p90_ms: float | None = None
    channels_last_ratio: float | None = None  # channels-last median / channels-last median at u=1
    channels_last_speedup: float | None = None  # median / channels-last median (> 1: channels-last is faster)


def _quantile(xs: Sequence[float], q: float) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[round(q * 10) - 1] if len(xs) > 1 else xs[0]


def time_interleaved(
    calls: Mapping[K, Callable[[], object]],
    *,
    repeats: int = 30,
    warmup: int = 3,
    time_call: Callable[[Callable[[], object]], float] | None = None,
) -> dict[K, list[float]]:
    """Milliseconds per call of each entry of ``calls``, interleaved: every round times every call once.

    Each call runs ``warmup`` times first (untimed). Round ``r`` starts at entry ``r mod n`` and
    wraps around, so neither drift nor "who ran last" favours one entry. ``time_call(fn)`` times
    one call in ms (default: wall clock; the call must synchronise its device itself).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    keys = list(calls)
    times: dict[K, list[float]] = {k: [] for k in keys}
    time_call = time_call or _wall_ms
    for _ in range(warmup):
        for k in keys:
            calls[k]()
    for r in range(repeats):
        i = r % len(keys)
        for k in keys[i:] + keys[:i]:
            times[k].append(time_call(calls[k]))
    return times


def _wall_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def channels_last_format(ndim: int, model: str = "the model") -> torch.memory_format:
    """The channels-last memory format of a ``ndim``-D input: ``torch.channels_last`` (NHWC) for 4-D
    images, ``torch.channels_last_3d`` (NDHWC) for 5-D clips; ValueError naming ``model`` otherwise."""
    if ndim == 4:
        return torch.channels_last
    if ndim == 5:
        return torch.channels_last_3d
    raise ValueError(
        f"{model} takes {ndim}-D input; channels-last memory format exists only for 4-D images (N, C, H, W) "
        f"and 5-D clips (N, C, D, H, W): drop --channels-last for {model}"
    )


def to_channels_last(x: torch.Tensor, model: str = "the model") -> torch.Tensor:
    """A copy of ``x`` in channels-last memory format (same shape and values, NHWC / NDHWC strides)."""
    return x.contiguous(memory_format=channels_last_format(x.dim(), model))


def check_channels_last(model: ThrottleNet, x: torch.Tensor, x_cl: torch.Tensor) -> None:
    """RuntimeError unless ``model`` gives the same logits for ``x`` and its channels-last copy ``x_cl``
    at every level (eval-mode inference, the path that is timed).

    Equal means allclose within 1e-4 of the largest logit (1e-2 on CUDA while cuDNN may use TF32):
    another kernel's float rounding, not another result. Run once before timing, since timings of a
    layout that changes the answer would compare different computations.
    """
    tol = 1e-2 if x.is_cuda and torch.backends.cudnn.allow_tf32 else 1e-4
    with torch.inference_mode():
        for u in model.levels:
            ref, got = model(x, u), model(x_cl, u)
            scale = max(ref.abs().max().item(), 1e-6)
            if not torch.allclose(got, ref, rtol=tol, atol=tol * scale):
                diff = (got.float() - ref.float()).abs().max().item()
                raise RuntimeError(
                    f"{model.arch} at u={u:g}: the output for a channels-last input differs from the NCHW output "
                    f"(max |difference| {diff:.3g}, largest logit {scale:.3g}, tolerance {tol:g} of it), so their "
                    "timings would not be of the same computation; this is a bug in the model or in torch's "
                    "kernels for that layout"
                )


def time_levels(
    model: ThrottleNet,
    x: torch.Tensor,
    *,
    repeats: int = 30,
    warmup: int = 3,
    masked: bool = False,
    channels_last: bool = False,
) -> dict[tuple[float, str], list[float]]:
    """Wall time (ms) of one forward call per (level, variant), all interleaved over repetitions.

    Variants: ``"sliced"``, ``model(x, u)``; with ``masked``, ``"masked"``, the full-width reference;
    with ``channels_last``, ``"channels_last"``, ``model(x_cl, u)`` on a channels-last copy of ``x``
    (made once, untimed; :func:`to_channels_last`).
    """
    inputs = {"sliced": x, "masked": x}
    variants = ["sliced", "masked"] if masked else ["sliced"]
    if channels_last:
        inputs["channels_last"] = to_channels_last(x, model.arch)
        variants.append("channels_last")
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def call(u: float, v: str) -> Callable[[], object]:
        inp, m = inputs[v], v == "masked"
        return lambda: (model(inp, u, masked=m), sync())

    keys = [(u, v) for v in variants for u in model.levels]
    with torch.inference_mode():
        return time_interleaved({k: call(*k) for k in keys}, repeats=repeats, warmup=warmup)


def bench_latency(
    models: Sequence[str],
    batch_sizes: Sequence[int] = (1, 64),
    *,
    repeats: int = 30,
    warmup: int = 3,
    masked: bool = True,
    in_channels: int | None = None,
    device: str = "cpu",
    threads: Sequence[int] = (),
    channels_last: bool = False,
) -> list[LevelTiming]:
    """Time every level of each named model (freshly built, eval mode) at each batch size.

    With several CPU ``threads`` counts, each is timed in turn in ``min(repeats, 5)`` alternating
    blocks (levels interleaved inside each), so drift hits every count alike; ``thread_ratio`` is a
    level's median over its median at the first count. Torch's thread count is restored afterwards.
    ``channels_last``: every level also runs on a channels-last copy of the input (NHWC; NDHWC for
    5-D clips; ValueError for other inputs) in the same interleaved loop, after
    :func:`check_channels_last` found its logits equal to NCHW's (RuntimeError if not); the rows
    get its median, p10, p90, ratio to its own u=1 median and the speed-up over NCHW.
    """
    if any(t < 1 for t in threads):
        raise ValueError(f"thread counts must be >= 1, got {list(threads)}")
    counts = list(dict.fromkeys(threads)) or [torch.get_num_threads()]
    before = torch.get_num_threads()
    blocks = min(repeats, 5) if len(counts) > 1 else 1
    rows: list[LevelTiming] = []
    kwargs = {} if in_channels is None else {"in_channels": in_channels}
    built = {name: create_model(name, **kwargs).to(device).eval() for name in models}
    if channels_last:  # refuse an input without a channels-last format before timing anything
        for name, model in built.items():
            channels_last_format(1 + len(model.input_shape), name)
    try:
        for name, model in built.items():
            for bs in batch_sizes:
                x = torch.rand(bs, *model.input_shape, device=device)
                if channels_last:
                    check_channels_last(model, x, to_channels_last(x, name))
                times: dict[int, dict[tuple[float, str], list[float]]] = {t: {} for t in counts}
                for b in range(blocks):
                    n = repeats // blocks + (b < repeats % blocks)
                    for t in counts:
                        torch.set_num_threads(t)
                        block = time_levels(
                            model, x, repeats=n, warmup=warmup, masked=masked, channels_last=channels_last
                        )
                        for key, ts in block.items():
                            times[t].setdefault(key, []).extend(ts)
                first: dict[float, float] = {}
                for t in counts:
                    full = statistics.median(times[t][(1.0, "sliced")])
                    cl_full = statistics.median(times[t][(1.0, "channels_last")]) if channels_last else 0.0
                    for u in model.levels:
                        ts = times[t][(u, "sliced")]
                        med = statistics.median(ts)
                        first.setdefault(u, med)
                        row = LevelTiming(
                            name, bs, u, model.flops(u), med, _quantile(ts, 0.1), _quantile(ts, 0.9), med / full
                        )
                        row.threads, row.thread_ratio = t, (med / first[u] if len(counts) > 1 else None)
                        if masked:
                            row.masked_median_ms = statistics.median(times[t][(u, "masked")])
                            row.masked_ratio = row.masked_median_ms / full
                        if channels_last:
                            cl = times[t][(u, "channels_last")]
                            row.channels_last_median_ms = statistics.median(cl)
                            row.channels_last_p10_ms, row.channels_last_p90_ms = _quantile(cl, 0.1), _quantile(cl, 0.9)
                            row.channels_last_ratio = row.channels_last_median_ms / cl_full
                            row.channels_last_speedup = med / row.channels_last_median_ms
                        rows.append(row)
    finally:
        torch.set_num_threads(before)
    return rows


def format_table(rows: Sequence[LevelTiming]) -> str:
    """A markdown table of the timings; the masked, thread and channels-last columns where measured."""
    masked = any(r.masked_ratio is not None for r in rows)
    channels_last = any(r.channels_last_ratio is not None for r in rows)
    by_threads = any(r.thread_ratio is not None for r in rows)
    head = "| model | batch | u | MFLOPs | FLOPs ratio | median ms | p10–p90 ms | latency ratio |"
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if by_threads:
        first = rows[0].threads
        head = head.replace("| u |", "| threads | u |") + f" ms vs {first} thread{'s' * (first != 1)} |"
        sep += "---:|---:|"
    if masked:
        head += " masked ms | masked ratio |"
        sep += "---:|---:|"
    if channels_last:
        head += " channels-last ms | channels-last p10–p90 ms | channels-last ratio | channels-last speed-up |"
        sep += "---:|---:|---:|---:|"
    lines = [head, sep]
    full_flops = {(r.model, r.batch_size): r.flops for r in rows if r.u == 1.0}
    for r in rows:
        threads = f"{r.threads} | " if by_threads else ""
        line = (
            f"| {r.model} | {r.batch_size} | {threads}{r.u:.3f} | {r.flops / 1e6:.2f} | "
            f"{r.flops / full_flops[(r.model, r.batch_size)]:.3f} | {r.median_ms:.3f} | "
            f"{r.p10_ms:.3f}–{r.p90_ms:.3f} | **{r.ratio:.3f}** |"
        )
        if by_threads:
            line += f" {r.thread_ratio:.2f}× |"
        if masked:
            line += f" {r.masked_median_ms:.3f} | {r.masked_ratio:.3f} |"
        if channels_last:
            line += (
                f" {r.channels_last_median_ms:.3f} | {r.channels_last_p10_ms:.3f}–{r.channels_last_p90_ms:.3f} | "
                f"{r.channels_last_ratio:.3f} | {r.channels_last_speedup:.2f}× |"
            )
        lines.append(line)
    return "\n".join(lines)


def rows_to_json(rows: Sequence[LevelTiming]) -> str:
    """The rows as JSON (every :class:`LevelTiming` field; null where not measured), with torch's
    version and the thread counts."""
    return json.dumps(
        {"torch": torch.__version__, "threads": sorted({r.threads for r in rows}), "rows": [asdict(r) for r in rows]},
        indent=1,
    )


@dataclass
class TrainThroughput:
    """Training images per second of one model, as the pretraining step runs it."""

    model: str
    variant: str
    batch_size: int
    levels_per_step: int
    images_per_s: float
    ms_per_step: float
    precision: str = "fp32"  # fp32 | bf16 (autocast, channels-last for images)
    compiled: bool = False  # torch.compile per level (tnn pretrain --compile)


def bench_train(
    models: Sequence[str],
    *,
    batch_size: int = 128,
    steps: int = 10,
    warmup: int = 2,
    in_channels: int = 3,
    device: str = "cpu",
    precisions: Sequence[str] | None = None,
    compile: bool = False,
) -> list[TrainThroughput]:
    """Images/s of the sandwich step (full, lowest, two random levels) and of a vanilla step.

    ``precisions``: "fp32" and/or "bf16" (autocast, channels-last for images — what ``tnn pretrain``
    runs on CUDA, and on CPU with ``--cpu-bf16``); default: bf16 on CUDA, both side by side on CPU.
    ``compile``: each step is also timed through :func:`tnn.train.compile_levels` (``tnn pretrain
    --compile``), beside the eager one; its warm-up steps pay the compilation and are not timed.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    from tnn.runtime import resolve_device

    dev = resolve_device(device)
    if precisions is None:
        precisions = ("bf16",) if dev.type == "cuda" else ("fp32", "bf16")
    unknown = set(precisions) - {"fp32", "bf16"}
    if unknown:
        raise ValueError(f"unknown precision {sorted(unknown)}; choose fp32 or bf16")
    rows = []
    for name in models:
        for precision in precisions:
            torch.manual_seed(0)
            model = create_model(name, in_channels=in_channels).to(dev)
            lv = model.levels
            for variant, us in (("tnn", [1.0, lv[0], lv[len(lv) // 2], lv[-2]]), ("vanilla", [1.0])):
                for compiled in (False, True) if compile else (False,):
                    per_step, _ = time_train_step(
                        model,
                        us,
                        batch_size=batch_size,
                        steps=steps,
                        warmup=warmup,
                        bf16=precision == "bf16",
                        compiled=compiled,
                    )
                    rows.append(
                        TrainThroughput(
                            name,
                            variant,
                            batch_size,
                            len(us),
                            batch_size / per_step,
                            per_step * 1e3,
                            precision,
                            compiled,
                        )
                    )
    return rows


def time_train_step(
    model: ThrottleNet,
    us: Sequence[float],
    *,
    batch_size: int,
    steps: int,
    warmup: int = 2,
    bf16: bool = False,
    compiled: bool = False,
) -> tuple[float, float]:
    """Seconds per pretraining step of ``model`` (on its device) at levels ``us``, random data, and
    the seconds its untimed warm-up took: the step ``tnn pretrain`` runs (the sandwich loss, SGD with
    Nesterov momentum; ``bf16``: autocast and channels-last for images; ``compiled``: through
    :func:`tnn.train.compile_levels`, with at least 3 warm-up steps, which pay the compilation)."""
    from tnn.train import Sandwich, compile_levels, sandwich_loss

    dev = next(model.parameters()).device
    x = torch.rand(batch_size, *model.input_shape, device=dev)
    if bf16 and x.dim() == 4:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.num_classes, (batch_size,), device=dev)
    net = Sandwich(model, compile_levels(model, dev) if compiled else None)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    warmup = max(warmup, 3 if compiled else 0)
    t_warm = time.perf_counter()
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            start = time.perf_counter()
            warm_s = start - t_warm
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x, us)
        loss = sandwich_loss(logits, y, distill=True, label_smoothing=0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    return (time.perf_counter() - start) / steps, warm_s
