"""The ``tnn`` command: ``tnn models``, ``tnn info CKPT``, ``tnn bench latency``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from tnn.checkpoint import CheckpointError, atomic_write, read_checkpoint
from tnn.models import create_model, list_models

__all__ = ["main"]


def _cmd_models(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}; known: {', '.join(list_models())}", file=sys.stderr)
        return 2
    for name in names:
        kwargs = {"in_channels": args.in_channels} if args.in_channels else {}
        model = create_model(name, **kwargs)
        shape = "×".join(map(str, model.input_shape))
        print(f"{name}  input {shape}  strategies {','.join(model.strategies)}")
        print("  u       params    MFLOPs  FLOPs ratio")
        full = model.flops(1.0)
        for u in model.levels:
            f = model.flops(u)
            print(f"  {u:<6.3f} {model.params(u):>8,d} {f / 1e6:>9.2f} {f / full:>8.3f}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    payload = read_checkpoint(args.checkpoint)
    card = dict(payload["card"])
    card["format"] = f"{payload['format']} v{payload['version']} ({payload['dtype']} weights)"
    print(json.dumps(card, indent=2, default=str))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from tnn.bench import bench_latency, format_table, rows_to_json

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.models:
        create_model(name)  # fail early, with the list of known names
    rows = bench_latency(
        args.models, args.batch_sizes, repeats=args.repeats, warmup=args.warmup, masked=not args.no_masked
    )
    print(
        f"CPU latency per forward call, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.repeats} interleaved repetitions; ratio = median / median at u=1"
    )
    print(format_table(rows))
    if args.json:
        atomic_write(args.json, lambda fh: fh.write(rows_to_json(rows).encode()))
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tnn", description="Runtime-throttleable neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models with params and FLOPs per level")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--in-channels", type=int, default=None, help="input channels (1 for Fashion-MNIST)")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("info", help="print a checkpoint's model card")
    p.add_argument("checkpoint")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("latency", help="latency per level as a ratio to u=1, levels interleaved")
    b.add_argument("--models", nargs="+", default=["resnet20"], metavar="NAME")
    b.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64], metavar="B")
    b.add_argument("--repeats", type=int, default=30)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    b.add_argument("--no-masked", action="store_true", help="skip the masked full-width reference")
    b.add_argument("--json", default=None, help="also write the rows to this JSON file")
    b.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"tnn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
