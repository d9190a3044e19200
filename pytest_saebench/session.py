"""Per-session state kept in ``config.stash``; below plugin, items and fixtures, which share it."""

from __future__ import annotations

from typing import Any

import pytest

RUNNER_KEY = pytest.StashKey[Any]()
CHECKS_KEY = pytest.StashKey[list]()
OUTPUTS_KEY = pytest.StashKey[Any]()  # reporting.outputs.Written
GATE_PREFIX = "saebench::"


def runner_or_none(config: pytest.Config) -> Any:
    """This session's Runner, or None when the plugin is not evaluating anything."""
    return config.stash.get(RUNNER_KEY, None)
