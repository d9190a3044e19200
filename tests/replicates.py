"""Replicate training runs of README's quick start on the offline Hub world (tests/hub_world.py),
and README's gate command run on them: shared by tests/test_replicates.py and
benchmarks/retrain_noise.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]
QUICK_START = {"training_tokens": 49_152, "context_size": 32, "batch_tokens": 512}


def hub_env(world: Path) -> dict[str, str]:
    """The environment a CI job on the Hub world runs with (offline, its HF_HOME)."""
    return {**os.environ, "HF_HOME": str(world / "hf"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": str(ROOT)}


def train(world: Path, runs: dict[Path, dict[str, Any]]) -> None:
    """README's quick start (example_tests/train_sae.py's ``train``) into each folder of
    ``runs`` with its options (``seed``, ``training_tokens``), in one process."""
    plan = {str(out): {**QUICK_START, **opts} for out, opts in runs.items()}
    code = ("import json, sys; from pathlib import Path; import datasets; "
            "datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0.1; "
            "from tests.hub_world import quick_start; q = quick_start(); "
            "[q.train(Path(out), **opts) for out, opts in json.loads(sys.argv[1]).items()]")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(plan)], cwd=ROOT,
                          env=hub_env(world), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def readme_table() -> str:
    """README's ``[tool.pytest-saebench]`` table, core only (as its quick start gates)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Configure"):].split("```toml", 1)[1].split("```", 1)[0]
    tomllib.loads(table)
    return table.replace("[tool.pytest-saebench]\n",
                         '[tool.pytest-saebench]\nselect-evals = ["core"]\n', 1)


def gate(repo: Path, world: Path, *args: str, env: dict[str, str] | None = None
         ) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    """README's test command in ``repo`` with ``args`` (``--sae-path ...``): the process and
    its results JSON."""
    results = repo / "saebench-results.json"
    results.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider",
                           "-q", "-W", "ignore::DeprecationWarning"], cwd=repo,
                          env={**hub_env(world), **(env or {})}, capture_output=True,
                          text=True, timeout=900)
    data = json.loads(results.read_text()) if results.is_file() else {}
    return done, data


def regressions(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's regression checks."""
    return [c for c in data.get("checks", []) if c["kind"] == "regression"]
