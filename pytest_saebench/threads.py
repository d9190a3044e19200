"""How many CPU threads torch may use: the CPUs this process may run on (its affinity mask and
its cgroup's CPU quota), shared between pytest-xdist workers. torch's default is the
machine's core count, which on a shared runner or a CPU-limited container oversubscribes:
threads then wait on each other (a forward pass ran 11x slower than on one thread). No torch
import here."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpus(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup's quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpus(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def threads_for_run(setting: int, env: dict[str, str] | None = None) -> int:
    """``setting`` when positive (``--saebench-threads``), else the available CPUs divided
    between the pytest-xdist workers of this run."""
    if setting > 0:
        return setting
    env = os.environ if env is None else env
    workers = int(env.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    return max(1, available_cpus() // max(1, workers))
