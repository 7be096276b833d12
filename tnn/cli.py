"""The ``tnn`` command: models, info, pretrain, evaluate, bench."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from tnn.checkpoint import CheckpointError, atomic_write, check_writable, read_checkpoint
from tnn.models import ThrottleNet, create_model, list_models
from tnn.runtime import cpu_bf16_native, resolve_device, set_threads

__all__ = ["json_object_type", "main"]

# Modules with ``add_cli(subparsers)``; each keeps its heavy imports inside its handlers.
_EXTENSIONS = ("tnn.profile", "tnn.table", "agents.cli")


def _cmd_models(args: argparse.Namespace) -> int:
    if args.in_channels is not None and args.in_channels < 1:
        raise ValueError(f"--in-channels must be positive, got {args.in_channels}")
    names = list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}; known: {', '.join(list_models())}", file=sys.stderr)
        return 2
    for name in names:
        kwargs = {"in_channels": args.in_channels} if args.in_channels is not None else {}
        model = create_model(name, **kwargs)
        shape, source = _models_input_shape(model, args.input_size)
        print(f"{name}  input {'×'.join(map(str, shape))}{source}  strategies {','.join(model.strategies)}")
        print("  u       params    MFLOPs  FLOPs ratio")
        full = model.flops(1.0, shape)
        for u in model.levels:
            f = model.flops(u, shape)
            print(f"  {u:<6.3f} {model.params(u):>8,d} {f / 1e6:>9.2f} {f / full:>8.3f}")
    return 0


def _models_input_shape(model: ThrottleNet, sizes: Sequence[int] | None) -> tuple[tuple[int, ...], str]:
    """The input shape ``tnn models`` counts FLOPs at, and a note on where it came from.

    ``--input-size`` sets it (one value: height = width; else every dimension after the channels);
    otherwise the data set with the model's channels and rank gives it, as ``tnn pretrain`` builds
    models (1 channel: Fashion-MNIST's 28×28); otherwise the model's default.
    """
    from tnn import data as tdata

    c, *dims = model.input_shape
    if sizes:
        if len(sizes) == 1:
            dims[-2:] = [sizes[0]] * min(2, len(dims))
        elif len(sizes) == len(dims):
            dims = list(sizes)
        else:
            raise ValueError(f"--input-size takes 1 or {len(dims)} values for {model.arch}, got {list(sizes)}")
        return (c, *dims), ""
    for name in tdata.DATASETS:
        shape = tdata.input_shape(name)
        if shape[0] == c and len(shape) == len(model.input_shape):
            return tuple(shape), f" ({name})"
    return tuple(model.input_shape), ""


def _cmd_info(args: argparse.Namespace) -> int:
    payload = read_checkpoint(args.checkpoint)
    card = dict(payload["card"])
    dtype = payload.get("dtype")
    if not isinstance(dtype, str):  # files written before the field existed: say what the weights are
        kinds = {str(t.dtype).removeprefix("torch.") for t in payload["state_dict"].values() if t.is_floating_point()}
        dtype = "/".join(sorted(kinds)) or "unrecorded"
    card["format"] = f"{payload['format']} v{payload['version']} ({dtype} weights)"
    print(json.dumps(card, indent=2, default=str))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from tnn.bench import bench_latency, format_table, rows_to_json

    if min(args.batch_sizes) < 1:  # unknown models and inputs without channels-last: bench_latency, before timing
        raise ValueError(f"--batch-sizes must be positive, got {args.batch_sizes}")
    if args.json:
        check_writable(args.json, "--json")
    threads = args.threads or []
    rows = bench_latency(
        args.models,
        args.batch_sizes,
        repeats=args.repeats,
        warmup=args.warmup,
        masked=not args.no_masked,
        threads=threads,
        channels_last=args.channels_last,
    )
    counts = ", ".join(map(str, threads)) or str(torch.get_num_threads())
    print(
        f"CPU latency per forward call, torch {torch.__version__}, {counts} threads, "
        f"{args.repeats} interleaved repetitions; ratio = median / median at u=1"
    )
    if args.channels_last:
        print(
            "channels-last: the same input in channels-last memory format (NHWC; NDHWC for clips), same logits, "
            "timed in the same loop; its ratio is against its own u=1, speed-up = median / channels-last median"
        )
    print(format_table(rows))
    if args.json:
        atomic_write(args.json, lambda fh: fh.write(rows_to_json(rows).encode()))
        print(f"wrote {args.json}")
    return 0


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal under each field), for --help."""
    import ast
    import inspect
    import textwrap

    docs, body = {}, ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    for node, nxt in itertools.pairwise(body):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def json_object_type(example: str) -> Callable[[str], dict[str, Any]]:
    """An argparse type: a JSON object; a bad one is refused with ``example`` of a good one for this flag."""

    def parse(text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"not JSON ({err.msg}): {text!r}; e.g. '{example}'") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}; e.g. '{example}'")
        return value

    return parse


_JSON_EXAMPLES = {"model_kwargs": '{"widths": [8, 16, 32]}'}  # per dict-valued config field, for its flag's errors


def _add_config_flags(p: argparse.ArgumentParser, cls: type) -> None:
    """One flag per dataclass field, typed from its default; the field's docstring is the help."""
    import dataclasses

    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        flag, default = "--" + f.name.replace("_", "-"), getattr(cls(), f.name)
        help_ = f"{docs.get(f.name, '')} (default: {default})"
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif isinstance(default, dict):
            example = _JSON_EXAMPLES.get(f.name, '{"key": "value"}')
            p.add_argument(flag, type=json_object_type(example), default=None, metavar="JSON", help=help_)
        elif default is None:  # optional string (e.g. a path)
            p.add_argument(flag, default=None, help=help_)
        else:
            p.add_argument(flag, type=type(default), default=None, help=help_)


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM (a scheduler's or a time limit's stop) raises SystemExit(143) instead of killing the
    process outright, so that a checkpoint being written is cleaned up (atomic_write removes its
    temporary file) rather than left half-written beside the run."""
    import signal

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave the signal alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    import dataclasses

    from tnn.train import PretrainConfig, pretrain

    values = {}
    fields = [f.name for f in dataclasses.fields(PretrainConfig)]
    if args.config:
        try:
            values = json.loads(Path(args.config).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"--config {args.config} is not valid JSON ({err})") from None
        except (OSError, UnicodeDecodeError) as err:
            why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise ValueError(
                f"--config {args.config}: cannot read it ({why}); pass the path of a JSON file of config values"
            ) from None
        if not isinstance(values, dict):
            raise ValueError(
                f"--config {args.config} must hold a JSON object of config values, got {type(values).__name__}"
            )
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(f"--config {args.config}: unknown config keys {sorted(unknown)}; known: {fields}")
    for f in dataclasses.fields(PretrainConfig):
        if getattr(args, f.name) is not None:
            values[f.name] = getattr(args, f.name)
    cfg = PretrainConfig(**values)
    out = args.out or f"runs/{cfg.dataset}-{cfg.arch}-{cfg.variant}"
    with _sigterm_exits():
        result = pretrain(cfg, out, resume=args.resume, command=shlex.join(["tnn", *args.argv]))
    print(f"wrote {result.checkpoint}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tnn.train import evaluate_checkpoint

    evaluate_checkpoint(
        args.checkpoint, split=args.split, data_root=args.data_root, device=args.device, write=not args.no_write
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from tnn.report import accuracy_table

    if args.out:
        check_writable(args.out, "--out")
    table = accuracy_table(_checkpoints(args.checkpoints))
    print(table)
    if args.out:
        try:
            text = Path(args.out).read_text() if Path(args.out).is_file() else ""
        except UnicodeDecodeError:
            raise ValueError(
                f"--out {args.out} is not a text file; report writes its table into a markdown file such as README.md"
            ) from None
        begin, end = "<!-- tnn report: begin -->", "<!-- tnn report: end -->"
        block = f"{begin}\n{table}\n{end}"
        if begin in text and end in text:
            text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
        else:
            text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
        atomic_write(args.out, lambda fh: fh.write(text.encode()))
        print(f"updated {args.out}")
    return 0


def _floats(text: str) -> list[float]:
    """``"80,85,90"`` -> [80.0, 85.0, 90.0]; an argparse error naming the bad item otherwise."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, e.g. 80,85,90; got {text!r}") from None


def _checkpoints(args: list[str]) -> list[Path]:
    """Checkpoint files named, or found (``model.pt``, recursively) in the folders named."""
    paths = [p for arg in args for p in (sorted(Path(arg).rglob("model.pt")) if Path(arg).is_dir() else [Path(arg)])]
    if not paths:
        raise ValueError(f"no checkpoints in {args}")
    return paths


def _cmd_bench_tta(args: argparse.Namespace) -> int:
    from tnn.report import time_to_accuracy_table

    print(time_to_accuracy_table(_checkpoints(args.checkpoints), args.targets, level=args.level))
    return 0


def _cmd_bench_train(args: argparse.Namespace) -> int:
    from tnn.bench import bench_train

    set_threads(args.threads)
    resolve_device(args.device)
    if args.batch_size < 1 or args.in_channels < 1:
        raise ValueError(f"--batch-size and --in-channels must be positive, got {args.batch_size}, {args.in_channels}")
    for name in args.models:
        create_model(name)
    rows = bench_train(
        args.models,
        batch_size=args.batch_size,
        steps=args.steps,
        in_channels=args.in_channels,
        device=args.device,
        precisions=args.precisions,
        compile=args.compile,
    )
    print(
        f"training throughput on {args.device}, torch {torch.__version__}; tnn = full + lowest + 2 more levels per step"
    )
    if resolve_device(args.device).type == "cpu" and "bf16" in {r.precision for r in rows}:
        native = cpu_bf16_native()
        print(
            f"CPU dispatch {torch.backends.cpu.get_cpu_capability()}; oneDNN bf16 kernels: "
            + ("yes" if native else "no (bf16 runs on fallback kernels)")
        )
    fp32 = {(r.model, r.variant): r.images_per_s for r in rows if r.precision == "fp32" and not r.compiled}
    eager = {(r.model, r.variant, r.precision): r.images_per_s for r in rows if not r.compiled}
    head = "| model | variant | precision | batch | levels/step | images/s | ms/step | × fp32 |"
    sep = "|---|---|---|---:|---:|---:|---:|---:|"
    if args.compile:
        head, sep = head.replace("| images/s", "| compiled | images/s") + " × eager |", sep + "---:|---:|"
    print(head + "\n" + sep)
    for r in rows:
        base = fp32.get((r.model, r.variant))
        ratio = f"{r.images_per_s / base:.2f}" if base and not r.compiled else ""
        compiled = f"{'yes' if r.compiled else 'no'} | " if args.compile else ""
        vs_eager = f" {r.images_per_s / eager[(r.model, r.variant, r.precision)]:.2f} |" if args.compile else ""
        print(
            f"| {r.model} | {r.variant} | {r.precision} | {r.batch_size} | {r.levels_per_step} "
            f"| {compiled}{r.images_per_s:.0f} | {r.ms_per_step:.1f} | {ratio} |{vs_eager}"
        )
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tnn")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tnn", description="Runtime-throttleable neural networks.")
    parser.add_argument("--version", action="version", version=f"tnn {_version()} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models with params and FLOPs per level")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--in-channels", type=int, default=None, help="input channels (1 for Fashion-MNIST)")
    p.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="count FLOPs at this input size: one value (height = width) or one per dimension after the channels "
        "(default: the shape of the data set with those channels, e.g. 28 for 1 channel, else the model's)",
    )
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("info", help="print a checkpoint's model card")
    p.add_argument("checkpoint")
    p.set_defaults(func=_cmd_info)

    from tnn.train import PretrainConfig

    p = sub.add_parser("pretrain", help="train a throttleable network (sandwich rule, in-place distillation)")
    p.add_argument("--config", default=None, help="JSON file of config values (flags override it)")
    p.add_argument(
        "--out",
        default=None,
        help="run directory (default: runs/DATASET-ARCH-VARIANT); one that already holds a run "
        "(model.pt or last.pt) is refused unless --resume",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/last.pt")
    _add_config_flags(p, PretrainConfig)
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("evaluate", help="accuracy per level; on the test split it is written into the card")
    p.add_argument("checkpoint")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--data-root", default=None, help="data directory (else $TNN_DATA / the defaults)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-write", action="store_true", help="do not update the checkpoint's card")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("report", help="markdown table of checkpoints' test accuracy per level, from their cards")
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or directories of them")
    p.add_argument("--out", default=None, help="markdown file whose 'tnn report' block is (re)written")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("latency", help="latency per level as a ratio to u=1, levels interleaved")
    b.add_argument("--models", nargs="+", default=["resnet20"], metavar="NAME")
    b.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64], metavar="B")
    b.add_argument("--repeats", type=int, default=30)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument(
        "--threads",
        nargs="+",
        type=int,
        default=None,
        metavar="T",
        help="torch CPU threads (default: torch's); several counts are timed side by side in one run",
    )
    b.add_argument("--no-masked", action="store_true", help="skip the masked full-width reference")
    b.add_argument(
        "--channels-last",
        action="store_true",
        help="also time every level on a channels-last copy of the input (NHWC; NDHWC for 5-D clips) in the same "
        "interleaved loop, beside the default NCHW: its median, ratio to its own u=1, and speed-up over NCHW",
    )
    b.add_argument("--json", default=None, help="also write the rows to this JSON file")
    b.set_defaults(func=_cmd_bench)
    b = bench.add_parser("train", help="training images/s of the sandwich step and of a vanilla step")
    b.add_argument("--models", nargs="+", default=["resnet20"], metavar="NAME")
    b.add_argument("--batch-size", type=int, default=128)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--in-channels", type=int, default=3)
    b.add_argument("--device", default="cpu")
    b.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    b.add_argument(
        "--precisions",
        nargs="+",
        choices=("fp32", "bf16"),
        default=None,
        help="fp32 and/or bf16 (autocast + channels-last); default: bf16 on CUDA, both on CPU",
    )
    b.add_argument(
        "--compile",
        action="store_true",
        help="also time each step through torch.compile, one graph per level (tnn pretrain --compile), beside eager",
    )
    b.set_defaults(func=_cmd_bench_train)
    b = bench.add_parser(
        "time-to-accuracy",
        help="wall time and epoch at which training runs first reached target validation accuracies "
        "(from the metrics.json beside each checkpoint)",
    )
    b.add_argument("checkpoints", nargs="+", metavar="CKPT_OR_DIR", help="model.pt files, or folders searched for them")
    b.add_argument(
        "--targets", type=_floats, default=[80.0, 85.0, 90.0], metavar="A,B", help="validation accuracies in %%"
    )
    b.add_argument("--level", type=float, default=1.0, help="the level u whose validation accuracy counts")
    b.set_defaults(func=_cmd_bench_tta)

    for module in _EXTENSIONS:  # subcommands that live beside the code they drive
        try:
            ext = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and (module + ".").startswith(err.name + "."):  # that package is not installed here
                continue
            raise
        ext.add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:  # the reader went away (`tnn models | head`): stop quietly, as Unix tools do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it
    except (CheckpointError, OSError, ValueError) as err:  # bad input or a bad path: say which, no traceback
        print(f"tnn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
