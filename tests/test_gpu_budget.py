"""scripts/gpu_budget.py: the epochs it plans and when it judges a job to run past its deadline."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gb():
    spec = importlib.util.spec_from_file_location("gpu_budget", ROOT / "scripts" / "gpu_budget.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_plan_fits_the_window_and_gives_a_group_one_schedule(gb):
    jobs = gb.default_jobs()
    # H200 step times (the four-level TNN's not measured: three passes of the four-pass 45.5 ms)
    for job, ms in zip(jobs, (45.5, 9.9, 34.1, 11.6, 36.1, 193.4, 69.8), strict=True):
        job.steps_per_epoch, job.sec_per_step = 87, ms / 1e3
    gb.plan(jobs, window_s=395, slowdown=2.0, eval_overhead=0.25, min_epochs=10)
    by = {j.name: j for j in jobs}
    group = [j for j in jobs if j.group == "resnet20"]
    assert len({j.epochs for j in group}) == 1  # the twins share the TNN's schedule
    assert by["cifar10-resnet20-tnn"].epochs == 39  # 395 / (2 * 87 * 0.0455 * 1.25)
    for job in jobs:  # every planned job fits the window at the assumed slowdown
        if job.state != "skipped":
            assert 2.0 * job.epochs * 87 * job.sec_per_step * 1.25 <= 395
    assert by["cifar10-densenet_bc_100-tnn"].state == "skipped"  # 9 epochs < min_epochs
    assert by["cifar10-vgg16-tnn"].epochs == 50  # capped at its max_epochs


def test_projection_uses_only_epochs_logged_since_the_last_stop(gb):
    job = gb.Job("j", [], 0, 100)
    job.epochs = 40
    # epochs 1-10 at 12 s each while the GPU was crowded, then 4 s each after a stop at t=130
    t = 10.0
    for k in range(1, 11):
        t += 12
        job.seen[k] = (t, 12.0 * k)
    assert gb.projected_end(job, since=0.0, final_s=20) == pytest.approx(t + 30 * 12 + 20)
    for k in range(11, 14):
        t += 4
        job.seen[k] = (t, 120 + 4.0 * (k - 10))
    assert gb.projected_end(job, since=130.0, final_s=20) == pytest.approx(t + 27 * 4 + 20)


def test_no_projection_before_two_fresh_epochs(gb):
    job = gb.Job("j", [], 0, 100)
    job.epochs = 10
    assert gb.projected_end(job, since=0.0, final_s=0) is None
    job.seen[1] = (5.0, 5.0)  # the first epoch (warm-up) never counts
    job.seen[2] = (8.0, 8.0)
    assert gb.projected_end(job, since=0.0, final_s=0) is None
    job.seen[3] = (11.0, 11.0)
    assert gb.projected_end(job, since=0.0, final_s=0) == pytest.approx(11 + 7 * 3)
    assert gb.projected_end(job, since=11.0, final_s=0) is None


def test_the_job_stopped_is_the_lowest_priority_one_not_about_to_finish(gb):
    jobs = [gb.Job(name, [], priority, 100) for name, priority in (("tnn", 0), ("twin", 1), ("big", 5))]
    tnn, twin, big = jobs
    # "big" is the lowest priority but ends in 30 s: stopping it frees nothing worth having; "twin" goes
    projected = {"tnn": 500.0, "twin": 300.0, "big": 130.0}
    assert gb.choose_victim(jobs, [tnn], projected, now=100.0, grace_s=60) is twin
    assert gb.choose_victim(jobs, [tnn], {"tnn": 500.0, "twin": None, "big": None}, now=100.0, grace_s=60) is big
    # every other job is about to end: nobody is stopped (least of all the late job that matters most)
    assert gb.choose_victim(jobs, [tnn], {"tnn": 500.0, "twin": 120.0, "big": 130.0}, now=100.0, grace_s=60) is None
    # a late low-priority job is stopped itself, not a more important one
    assert gb.choose_victim(jobs, [big], {"tnn": 300.0, "twin": 200.0, "big": 900.0}, now=100.0, grace_s=60) is big
    # nor is the last job left
    assert gb.choose_victim(jobs[:1], [tnn], {"tnn": 500.0}, now=100.0, grace_s=60) is None


def test_plan_leaves_room_for_each_jobs_start_up(gb):
    job = gb.Job("j", ["--batch-size", "512"], 0, 1000)
    job.steps_per_epoch, job.sec_per_step = 10, 0.1  # 1 s an epoch
    gb.plan([job], window_s=100, slowdown=1.0, eval_overhead=0.0, min_epochs=1)
    assert job.epochs == 100
    job.overhead_s = 40.0  # e.g. compiling every level first
    gb.plan([job], window_s=100, slowdown=1.0, eval_overhead=0.0, min_epochs=1)
    assert job.epochs == 60
    job.overhead_s = 150.0
    gb.plan([job], window_s=100, slowdown=1.0, eval_overhead=0.0, min_epochs=1)
    assert job.epochs == 0 and job.state == "skipped"
