"""torch's CPU threads follow the CPUs this process may use, not the machine's core count."""

from __future__ import annotations

import os
from pathlib import Path

from pytest_saebench.threads import available_cpus, cgroup_cpus, threads_for_run


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpus(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpus(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpus(tmp_path) == 1.0
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpus(tmp_path) is None


def test_affinity_and_quota_cap_the_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert available_cpus(tmp_path) == 8  # no quota file: the mask alone
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert available_cpus(tmp_path) == 3  # 2.5 CPUs of quota
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert available_cpus(tmp_path) == 1
    monkeypatch.setattr("pytest_saebench.threads.CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads_for_run(0, {"PYTEST_XDIST_WORKER_COUNT": "4"}) == 2  # shared by workers
    assert threads_for_run(3, {"PYTEST_XDIST_WORKER_COUNT": "4"}) == 3  # --saebench-threads


def test_a_run_allowed_one_cpu_uses_one_thread_and_records_it(tiny_world, monkeypatch):
    import torch

    from tests.helpers import make_runner

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr("pytest_saebench.threads.CGROUP_ROOT", Path("/nonexistent"))
    try:
        runner = make_runner(tiny_world.trained)
        res = runner.results("trained", ["core"])
        assert runner.threads == 1 == torch.get_num_threads()
        assert res.env["threads"] == 1
    finally:
        torch.set_num_threads(before)
