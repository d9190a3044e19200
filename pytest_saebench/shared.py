"""Evaluate each checkpoint once across pytest-xdist workers.

The controller hands every worker one directory. A worker that needs a checkpoint's results
takes ``<sha256>-<suite>.lock``; the first one evaluates and writes ``<sha256>-<suite>.json``
atomically (or the error), the others read it. The controller reads the files for reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_saebench.atomic import write_json_atomic
from pytest_saebench.results import SaeResults, from_dict, to_dict

LOG = "evaluations.log"


def _path(shared_dir: Path, sha256: str, suite: str) -> Path:
    return shared_dir / f"{sha256}-{suite}.json"


def lock(shared_dir: Path, sha256: str, suite: str) -> FileLock:
    """The lock guarding one checkpoint's evaluation."""
    return FileLock(str(_path(shared_dir, sha256, suite)) + ".lock")


def read(shared_dir: Path, sha256: str, suite: str) -> SaeResults | str | None:
    """Stored results, the stored error message, or None if nobody evaluated it yet."""
    path = _path(shared_dir, sha256, suite)
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data["error"] if "error" in data else from_dict(data["results"])


def write(shared_dir: Path, sha256: str, suite: str, result: SaeResults | str,
          sae_id: str, worker: str) -> None:
    """Store results (or an error message) and log who evaluated what."""
    payload = {"error": result} if isinstance(result, str) else {"results": to_dict(result)}
    write_json_atomic(_path(shared_dir, sha256, suite), payload)
    with open(shared_dir / LOG, "a", encoding="utf-8") as fh:
        fh.write(f"{sae_id}\t{suite}\t{worker}\n")


def evaluation_counts(shared_dir: Path) -> dict[str, int]:
    """How many times each checkpoint id was evaluated (should be once)."""
    counts: dict[str, int] = {}
    log = shared_dir / LOG
    if log.exists():
        for line in log.read_text().splitlines():
            sae_id = line.split("\t", 1)[0]
            counts[sae_id] = counts.get(sae_id, 0) + 1
    return counts
