"""Generated test items: ``saebench::evaluate[<sae>]``, ``saebench::threshold[<sae>::<id>]``
and ``saebench::regression[<sae>::<id>]``.

The parameter part stays last in the node id, as pytest's reporters expect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_saebench.gates.budget import threshold_outcome
from pytest_saebench.gates.thresholds import Outcome, Threshold, fmt
from pytest_saebench.item_base import (  # re-exported: the gate items' public names
    SaebenchBaselineWarning,
    SaebenchGateWarning,
    SaebenchInconclusiveWarning,
    _evaluate,
    _GateItem,
    _location,
    _MetricGate,
    _null_gain,
    _runner,
    _z_text,
)
from pytest_saebench.rule_items import FrontierItem, NullItem, RegressionItem

__all__ = ["EvaluateItem", "FrontierItem", "NullItem", "RegressionItem", "SaebenchBaselineWarning",
           "SaebenchCollector", "SaebenchGateWarning", "SaebenchInconclusiveWarning",
           "ThresholdItem"]


class SaebenchCollector(pytest.Collector):
    """The virtual ``saebench`` node all gate items hang from."""

    def collect(self) -> list[pytest.Item]:
        """One evaluate item per checkpoint, then one threshold item per configured gate."""
        runner = _runner(self.config)
        items: list[pytest.Item] = []
        for sae_id in runner.checkpoints:
            items.append(EvaluateItem.from_parent(
                self, name=f"evaluate[{sae_id}]", sae_id=sae_id,
                nodeid=f"saebench::evaluate[{sae_id}]"))
            for threshold in runner.settings.thresholds:
                items.append(ThresholdItem.from_parent(
                    self, name=f"threshold[{sae_id}::{threshold.metric}]", sae_id=sae_id,
                    threshold=threshold,
                    nodeid=f"saebench::threshold[{sae_id}::{threshold.metric}]"))
            for rule in runner.settings.regressions:
                items.append(RegressionItem.from_parent(
                    self, name=f"regression[{sae_id}::{rule.metric}]", sae_id=sae_id,
                    rule=rule, nodeid=f"saebench::regression[{sae_id}::{rule.metric}]"))
            for nrule in runner.settings.null_rules:
                items.append(NullItem.from_parent(
                    self, name=f"null[{sae_id}::{nrule.metric}]", sae_id=sae_id, rule=nrule,
                    nodeid=f"saebench::null[{sae_id}::{nrule.metric}]"))
            for frule in runner.settings.frontier:
                items.append(FrontierItem.from_parent(
                    self, name=f"frontier[{sae_id}::{frule.metric}]", sae_id=sae_id,
                    rule=frule, nodeid=f"saebench::frontier[{sae_id}::{frule.metric}]"))
        for item in items:
            item.add_marker("saebench")
            item.add_marker(pytest.mark.xdist_group(item.sae_id))  # type: ignore[attr-defined]
        return items


class EvaluateItem(_GateItem):
    """Runs the suite's evals on one checkpoint; fails with a one-line reason if they fail."""

    reports_evaluation = True  # says a failed evaluation in full; the gates point at it

    def runtest(self) -> None:
        """Evaluate (or reuse this session's evaluation of) the checkpoint."""
        res = _evaluate(self, self.sae_id)
        self.user_properties.append(("saebench_sae", self.sae_id))
        self.user_properties.append(("saebench_sha256", res.sha256))
        self.user_properties.append(("saebench_seconds", f"{res.seconds:.3f}"))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Location shown in reports: the checkpoint directory."""
        return Path(_runner(self.config).checkpoints[self.sae_id].path), None, self.name


class ThresholdItem(_MetricGate):
    """Checks one metric of one checkpoint against inclusive bounds."""

    def __init__(self, *, threshold: Threshold, **kwargs: Any):
        super().__init__(**kwargs)
        self.threshold = threshold

    def reads(self) -> tuple[str, ...]:  # noqa: D102 - see _MetricGate
        return (self.threshold.metric,)

    def runtest(self) -> None:
        """Skip if the suite does not compute the metric, else check its value."""
        t, res = self.threshold, self.results
        context = self._start(t.metric, t.limit_text())
        if t.min is not None:
            self.user_properties.append(("min", repr(t.min)))
        if t.max is not None:
            self.user_properties.append(("max", repr(t.max)))
        self._skip_unless_computed(t.metric, context)
        value, stderr = res.value(t.metric), res.stderr(t.metric)
        self.user_properties.append(("value", "null" if value is None else repr(value)))
        if stderr is not None:
            self.user_properties.append(("stderr", repr(stderr)))
        self._conclude(self._against_chance(threshold_outcome(t, res, context), stderr))

    def _against_chance(self, outcome: Outcome, stderr: float | None) -> Outcome:
        """A threshold that a random SAE of the checkpoint's shape passes too, on a metric
        with no signal against it at this budget, cannot tell a trained SAE: its pass warns,
        saying so, unless its severity was set explicitly (gates.null.signal). A fail stays a
        fail (below the bound and no better than random is a failure, not an absence of
        signal), and so does a pass the random SAE would not get."""
        from pytest_saebench.gates.null import signal
        from pytest_saebench.gates.thresholds import check

        t, runner = self.threshold, _runner(self.config)
        spec = runner.registry.get(t.metric)
        if runner.settings.null_reference != "on" or stderr is None or spec is None or \
                spec.direction not in ("up", "down") or outcome.status == "fail" and \
                "undefined" in outcome.message:
            return outcome
        found = _null_gain(self, runner, t.metric, spec.direction)
        ok, note = signal(found)
        if not isinstance(found, str):
            self.user_properties.append(("null", repr(found.null)))
            self.user_properties.append(("signal_z", _z_text(found.z)))
        if ok or t.severity_explicit or outcome.status != "pass" or isinstance(found, str) or \
                check(t, found.null, None, "").status != "pass":
            return outcome
        return Outcome("warn", f"{outcome.message}: {note}, and a random SAE of its shape "
                               f"passes this bound too ({fmt(found.null)}); the threshold warns "
                               "instead of passing (set its severity to decide anyway)")

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Location: the pyproject line of the threshold when known."""
        return _location(self, self.threshold.source)
