"""Train several `tnn pretrain` jobs side by side on one GPU inside a fixed wall-clock budget.

    python3 scripts/gpu_budget.py OUT --deadline 470 [--device cuda] [--limit N] [--only NAME ...]

A borrowed GPU comes for minutes, once: this script spends them on as many of the shipped models
as fit. It (1) times a few real training steps of every job alone on the device (random data, the
job's own model, batch, levels and precision), (2) gives every job the epochs that fit before
``--deadline`` seconds (counted from the script's start) when all run at once, assuming they slow
one another down by ``--slowdown``, (3) starts them all as separate processes, and (4) watches
their logs: when any job's projected end (at the rate of its epochs since the last stop) passes
the deadline, one lower-priority job is stopped (:func:`choose_victim`; its partial run is kept,
labelled as such in ``plan.json``). Jobs of one
``group`` (a TNN and its vanilla/half-width twins) get the same epochs: the twins must share the
TNN's recipe. Each job writes a normal `tnn pretrain` run directory, so its model card and
metrics are what `tnn evaluate` measures. ``OUT/plan.json`` records the timings, the epochs given,
every job's fate and the wall time it took.

Needs only torch and numpy (and the checkout on PYTHONPATH): it runs where gymnasium and
stable-baselines3 are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) .*\((\d+)s\)$")

RECIPE = ["--dataset", "cifar10", "--batch-size", "512", "--warmup-epochs", "2", "--label-smoothing", "0.1"]


@dataclass
class Job:
    name: str
    args: list[str]
    priority: int  # 0 first; the highest number is stopped first
    max_epochs: int
    group: str = ""
    epochs: int = 0
    sec_per_step: float = 0.0
    overhead_s: float = 0.0  # start-up the job pays before its first epoch (with --compile: compilation)
    steps_per_epoch: int = 0
    state: str = "planned"  # planned | running | finished | failed | stopped | skipped
    log: list[str] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    seen: dict[int, tuple[float, float]] = field(default_factory=dict)
    """epoch -> (when its log line was first seen, the job's training seconds it reports)"""


def default_jobs() -> list[Job]:
    r20 = [*RECIPE, "--lr", "0.4"]
    four_levels = ["--model-kwargs", '{"levels": [0.25, 0.5, 0.75, 1.0]}', "--random-levels", "1", "--full-weight", "2"]
    return [
        Job("cifar10-resnet20-tnn", ["--arch", "resnet20", *r20], 0, 120, "resnet20"),
        Job("cifar10-resnet20-vanilla", ["--arch", "resnet20", "--variant", "vanilla", *r20], 1, 120, "resnet20"),
        # The best CPU recipe: four levels, one random level per step (on the CPU schedule 0.87 pt under the
        # half-width network at u=0.5 over two seeds, against 2.52 for eight levels, and 5.7 pt better at
        # u=0.25), with the u=1 loss weighted twice (--full-weight 2: the one CPU seed within 0.5 pt of
        # the vanilla twin's mean at u=1; README). The 2026-11-26 lease's TNN (eight levels, two random)
        # ended 2.0 pt under its twin. Same schedule as the group, so the TNNs and twins compare directly.
        Job("cifar10-resnet20-tnn-l4-fw2", ["--arch", "resnet20", *four_levels, *r20], 2, 120, "resnet20"),
        Job(
            "cifar10-resnet20-half",
            ["--arch", "resnet20", "--variant", "vanilla", "--model-kwargs", '{"widths": [8, 16, 32]}', *r20],
            3,
            120,
            "resnet20",
        ),
        Job(
            "cifar10-vgg16-tnn",
            ["--arch", "vgg16", "--model-kwargs", '{"width_mult": 0.375}', *RECIPE, "--lr", "0.2"],
            4,
            80,
        ),
        Job("cifar10-densenet_bc_100-tnn", ["--arch", "densenet_bc_100", *RECIPE, "--lr", "0.4"], 5, 80),
        Job(
            "cifar10-resnext29_8x16d-tnn",
            ["--arch", "resnext29_8x16d", "--model-kwargs", '{"widths": [64, 128, 256]}', *RECIPE, "--lr", "0.4"],
            6,
            80,
        ),
    ]


def _flag(args: list[str], name: str, default: str | None = None) -> str | None:
    return args[args.index(name) + 1] if name in args else default


def time_step(job: Job, device: str, steps: int, compile: bool = False) -> tuple[float, float]:
    """Seconds per training step of ``job`` alone (its model, batch, levels and precision, random
    data) and the seconds its warm-up took (``compile``: through ``torch.compile`` as ``tnn pretrain
    --compile`` runs it, so the warm-up is the compilation of the four levels a step runs)."""
    import torch

    from tnn.bench import time_train_step
    from tnn.train import PretrainConfig, build_model

    kwargs = json.loads(_flag(job.args, "--model-kwargs", "{}") or "{}")
    variant = _flag(job.args, "--variant", "tnn") or "tnn"
    cfg = PretrainConfig(arch=_flag(job.args, "--arch"), dataset="cifar10", variant=variant, model_kwargs=kwargs)
    batch = int(_flag(job.args, "--batch-size", "128") or 128)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(cfg).to(dev)
    lv = model.levels
    us = [1.0] if len(lv) == 1 else [1.0, lv[0], lv[len(lv) // 2], lv[-2]]
    cuda = dev.type == "cuda"  # pretrain's defaults: bf16 autocast and channels-last on CUDA only
    timed = time_train_step(model, us, batch_size=batch, steps=steps, warmup=3, bf16=cuda, compiled=compile)
    del model
    if cuda:  # leave the GPU's memory to the training processes
        torch.cuda.empty_cache()
    return timed


def projected_end(job: Job, since: float, final_s: float) -> float | None:
    """When ``job`` will end (script seconds), at the rate of its epochs logged after ``since``.

    Only epochs seen after ``since`` (the last time a job was stopped) count: the rate from before
    a stop is that of a busier GPU. The first epoch (warm-up, autotuning) never counts. ``None``
    until two such epochs are in.
    """
    points = sorted((k, *v) for k, v in job.seen.items() if k >= 2 and v[0] > since)
    if len(points) < 2:
        return None
    (k0, _, s0), (k1, t1, s1) = points[0], points[-1]
    return t1 + (job.epochs - k1) * (s1 - s0) / (k1 - k0) + final_s


def choose_victim(
    running: list[Job], late: list[Job], projected: dict[str, float | None], now: float, grace_s: float
) -> Job | None:
    """The job to stop so that the ``late`` ones speed up: the lowest-priority running job that is no
    more important than the most important late one (a late low-priority job may be stopped itself:
    it would not finish anyway), but never the most important running job, never one projected to
    end within ``grace_s`` (it frees the GPU soon anyway), and none when only one job runs
    (stopping it speeds nothing up; the hard deadline still ends it)."""
    if len(running) < 2 or not late:
        return None
    floor = min(j.priority for j in late)
    top = min(running, key=lambda j: j.priority)  # the job everything else makes way for: never stopped
    candidates = [
        j
        for j in running
        if j is not top
        and j.priority >= floor
        and not (projected.get(j.name) is not None and projected[j.name] - now < grace_s)
    ]
    return max(candidates, key=lambda j: j.priority) if candidates else None


def plan(jobs: list[Job], window_s: float, slowdown: float, eval_overhead: float, min_epochs: int) -> None:
    """Epochs per job so that every job, slowed down ``slowdown``-fold, ends inside ``window_s``."""
    for job in jobs:
        per_epoch = job.steps_per_epoch * job.sec_per_step * (1 + eval_overhead)
        job.epochs = min(job.max_epochs, max(0, int((window_s - job.overhead_s) / (slowdown * per_epoch))))
    for group in {j.group for j in jobs if j.group}:
        members = [j for j in jobs if j.group == group]
        epochs = min(j.epochs for j in members)
        for j in members:
            j.epochs = epochs
    for job in jobs:
        if job.epochs < min_epochs:
            job.state = "skipped"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--deadline", type=float, required=True, help="seconds from start by which every job must end")
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--slowdown",
        type=float,
        default=3.5,
        help="assumed slowdown of each job when all run at once (the 2026-11-26 H200 lease measured 3-4x for six jobs)",
    )
    p.add_argument("--eval-overhead", type=float, default=0.25, help="validation cost per epoch, share of training")
    p.add_argument("--final-s", type=float, default=25.0, help="seconds each job needs after its last epoch")
    p.add_argument("--min-epochs", type=int, default=5, help="skip a job that would get fewer epochs")
    p.add_argument("--grace-s", type=float, default=60.0, help="never stop a job projected to end this soon")
    p.add_argument("--limit", type=int, default=0, help="train on the first N images only (plumbing checks)")
    p.add_argument("--batch-size", type=int, default=0, help="override every job's batch size (plumbing checks)")
    p.add_argument("--calibration-steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="CPU threads per job")
    p.add_argument("--only", nargs="*", default=None, help="run only these jobs (names)")
    p.add_argument("--compile", action="store_true", help="tnn pretrain --compile for every job (timed so too)")
    args = p.parse_args(argv)

    t0 = time.time()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [j for j in default_jobs() if args.only is None or j.name in args.only]
    if args.batch_size:
        for job in jobs:
            i = job.args.index("--batch-size")
            job.args[i + 1] = str(args.batch_size)
    n_train = args.limit or 45_000  # CIFAR-10's train split (val holds 5,000 of the official 50,000)

    def report(msg: str) -> None:
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    gpu = None
    if args.device == "cuda":
        import torch

        gpu = torch.cuda.get_device_name(0)

    def save() -> None:
        doc = {
            "device": args.device,
            "gpu": gpu,
            "deadline_s": args.deadline,
            "slowdown": args.slowdown,
            "wall_s": round(time.time() - t0, 1),
            "jobs": [{k: v for k, v in asdict(j).items() if k != "log"} | {"last_log": j.log[-3:]} for j in jobs],
        }
        tmp = out / "plan.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, out / "plan.json")

    if args.only is not None and {j.name for j in jobs} != set(args.only):
        known = ", ".join(j.name for j in default_jobs())
        p.error(f"unknown job in --only {args.only}; the jobs are {known}")
    for job in jobs:
        job.steps_per_epoch = n_train // int(_flag(job.args, "--batch-size", "128") or 128)
        if job.steps_per_epoch < 1:
            p.error(f"{job.name}: --limit {n_train} is smaller than its batch size; raise --limit or pass --batch-size")
        job.sec_per_step, warm_s = time_step(job, args.device, args.calibration_steps, args.compile)
        # a training run compiles every level (the warm-up compiled the four a step runs), slowed down
        # by the others as its steps are
        job.overhead_s = 2 * args.slowdown * warm_s if args.compile else 0.0
        report(f"{job.name}: {job.sec_per_step * 1e3:.1f} ms/step alone, {job.steps_per_epoch} steps/epoch")
    window = args.deadline - (time.time() - t0) - args.final_s
    plan(jobs, window, args.slowdown, args.eval_overhead, args.min_epochs)
    for job in jobs:
        report(f"{job.name}: {job.epochs} epochs" + (" (skipped: too few fit)" if job.state == "skipped" else ""))
    save()

    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", PYTHONUNBUFFERED="1")
    procs: dict[str, subprocess.Popen] = {}
    logs = {}
    for job in sorted((j for j in jobs if j.state == "planned"), key=lambda j: j.priority):
        run_dir = out / job.name
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "tnn.cli", "pretrain", *job.args, "--epochs", str(job.epochs)]
        cmd += ["--device", args.device, "--threads", str(args.threads), "--out", str(run_dir)]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        if args.compile:
            cmd.append("--compile")
        logs[job.name] = open(run_dir / "log.txt", "w")  # noqa: SIM115 -- open while the job runs
        procs[job.name] = subprocess.Popen(cmd, stdout=logs[job.name], stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        job.state, job.started = "running", time.time() - t0
        report(f"started {job.name}")

    last_stop = 0.0
    while any(j.state == "running" for j in jobs):
        time.sleep(2)
        now = time.time() - t0
        running = [j for j in jobs if j.state == "running"]
        for job in running:
            text = (out / job.name / "log.txt").read_text(errors="replace").splitlines()
            if len(text) > len(job.log):
                for line in text[len(job.log) :]:
                    m = EPOCH_LINE.match(line)
                    if m:
                        job.seen[int(m[1])] = (now, float(m[3]))
                        report(f"{job.name}: {line}")
                job.log = text
            rc = procs[job.name].poll()
            if rc is not None:
                job.state, job.ended = ("finished" if rc == 0 else "failed"), now
                report(f"{job.name} {job.state} (exit {rc})" + ("" if rc == 0 else ": " + " | ".join(text[-5:])))
        running = [j for j in jobs if j.state == "running"]
        if not running:
            break
        projected = {j.name: projected_end(j, last_stop, args.final_s) for j in running}
        late = [j for j in running if (projected[j.name] or 0.0) > args.deadline]
        for job in late:
            report(f"{job.name} projected to end at {projected[job.name]:.0f}s, past the deadline")
        victims: list[Job] = []
        if now > args.deadline:  # out of time: stop everything
            victims = running
        elif late:  # stop one job (see choose_victim) so that the rest speed up
            victim = choose_victim(running, late, projected, now, args.grace_s)
            victims = [victim] if victim is not None else []
        if victims:
            for v in victims:
                if procs[v.name].poll() is not None:  # it finished meanwhile: not a stop
                    continue
                procs[v.name].send_signal(signal.SIGTERM)
                try:
                    procs[v.name].wait(timeout=10)
                except subprocess.TimeoutExpired:
                    procs[v.name].kill()
                v.state, v.ended = "stopped", time.time() - t0
                report(f"stopped {v.name} to keep the deadline")
            last_stop = now
        save()
    for fh in logs.values():
        fh.close()
    save()
    report("done: " + ", ".join(f"{j.name} {j.state}" for j in jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
