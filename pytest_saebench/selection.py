"""Which evals the selected items read (``-k``, ``--lf``): the rest of the suite is not
run for them."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_saebench.items import EvaluateItem, _MetricGate

RESULT_FIXTURES = frozenset({"saebench_results", "sae_metrics", "saebench_check"})


def needed_evals(items: list[pytest.Item], runner: Any) -> tuple[str, ...] | None:
    """Evals of the run's suite that the selected ``items`` read, or None when one of them
    reads them all (an evaluate item, an unmarked results test, a baseline being written)."""
    suite = runner.settings.suite
    if runner.settings.update_baseline:
        return None
    type_of = {name: runner.eval_type(name) for name in runner.configs_for(suite)}
    needed: set[str] = set()
    for item in items:
        if isinstance(item, EvaluateItem):
            return None
        if isinstance(item, _MetricGate):
            types = {m.split(".", 1)[0] for m in item.reads()}
            needed.update(n for n, t in type_of.items() if t in types)
        elif RESULT_FIXTURES & set(getattr(item, "fixturenames", ())):
            marker = item.get_closest_marker("saebench")
            kwargs = marker.kwargs if marker else {}
            if kwargs.get("suite") not in (None, suite):
                continue  # evaluated in its own suite, on request
            if kwargs.get("evals") is None:
                return None
            needed.update(kwargs["evals"])
    return tuple(n for n in type_of if n in needed)
