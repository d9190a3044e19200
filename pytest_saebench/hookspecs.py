"""Hooks that conftest.py files and plugins may implement."""

from __future__ import annotations

import pytest


@pytest.hookspec(firstresult=True)
def pytest_saebench_autointerp_judge(config: pytest.Config):
    """Return the judge for the autointerp eval: any object with
    ``complete(prompt: str, max_tokens: int) -> str`` (optionally ``name`` and ``usage``), or
    None to fall back to the ``judge`` setting and the ``SAEBENCH_JUDGE_*`` environment.
    Called at most once per run, when autointerp first needs a judge."""
