"""JUnit suite-level properties (checkpoint id, sha256, suite, device)."""

from __future__ import annotations

from typing import Any

import pytest


def add_suite_properties(config: pytest.Config, runner: Any) -> None:
    """Add ``saebench.*`` properties to the ``<testsuite>`` when ``--junitxml`` is on."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    settings = runner.settings
    xml.add_global_property("saebench.suite", settings.suite)
    xml.add_global_property("saebench.device", runner.device)
    xml.add_global_property("saebench.seed", str(settings.seed))
    for sae_id, ref in runner.checkpoints.items():
        xml.add_global_property(f"saebench.sae.{sae_id}.path", ref.shown_path)
        try:
            xml.add_global_property(f"saebench.sae.{sae_id}.sha256", ref.sha256)
        except OSError as exc:
            xml.add_global_property(f"saebench.sae.{sae_id}.sha256", f"unreadable: {exc}")
