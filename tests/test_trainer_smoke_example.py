"""example_tests/test_trainer_smoke.py as a training repository runs it: its own pytest
process, offline, the example pyproject's thresholds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_trainer_smoke_example_trains_and_gates_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "example_tests" / "pyproject.toml"),
         str(ROOT / "example_tests" / "test_trainer_smoke.py"), "-p", "no:cacheprovider",
         "-q", f"--basetemp={tmp_path / 'base'}"],
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("2 passed")
