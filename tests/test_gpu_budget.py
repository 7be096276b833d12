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
    for job, ms in zip(jobs, (45.5, 9.9, 11.6, 36.1, 193.4, 69.8), strict=True):  # H200 step times
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
