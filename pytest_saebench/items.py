"""Generated test items: ``saebench::evaluate[<sae>]``, ``saebench::threshold[<sae>::<id>]``
and ``saebench::regression[<sae>::<id>]``.

The parameter part stays last in the node id, as pytest's reporters expect."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates.budget import look_of, threshold_outcome
from pytest_saebench.gates.regression import RegressionRule, check_metric, env_differences
from pytest_saebench.gates.thresholds import Outcome, Threshold, gate_context
from pytest_saebench.session import RUNNER_KEY


class SaebenchGateWarning(UserWarning):
    """A gate with ``severity = "warn"`` was outside its bounds."""


class SaebenchInconclusiveWarning(UserWarning):
    """A gate's interval held its bound: the run could not tell pass from fail."""


class SaebenchBaselineWarning(UserWarning):
    """The baseline was computed in a different environment (library versions, device)."""


def _runner(config: pytest.Config):
    return config.stash[RUNNER_KEY]


def _evaluate(item: pytest.Item, sae_id: str):
    """Results for ``sae_id``; any failure becomes a one-line pytest failure."""
    from pytest_saebench.runner import EvaluationFailed

    runner = _runner(item.config)
    try:
        return runner.results(sae_id)
    except EvaluationFailed as exc:
        # reported in full once, by the first item that asked; the rest point at it
        message = (str(exc) if isinstance(item, EvaluateItem)
                   else f"evaluation of '{sae_id}' failed (see saebench::evaluate[{sae_id}])")
    except SaebenchError as exc:
        message = str(exc)
    except Exception as exc:  # a library's own error: its first line, not its traceback
        first = (str(exc).strip().splitlines() or [""])[0]
        message = f"evaluation of '{sae_id}' failed: {type(exc).__name__}: {first}"
    finally:
        if runner.progress is not None:
            runner.progress.item_done(item.nodeid)
    # outside the except blocks, so no "During handling of the above exception" chain
    pytest.fail(message, pytrace=False)


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


class _GateItem(pytest.Item):
    def __init__(self, *, sae_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.sae_id = sae_id

    def repr_failure(self, excinfo, style=None):  # noqa: D102 - pytest API
        if isinstance(excinfo.value, SaebenchError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)


class EvaluateItem(_GateItem):
    """Runs the suite's evals on one checkpoint; fails with a one-line reason if they fail."""

    def runtest(self) -> None:
        """Evaluate (or reuse this session's evaluation of) the checkpoint."""
        res = _evaluate(self, self.sae_id)
        self.user_properties.append(("saebench_sae", self.sae_id))
        self.user_properties.append(("saebench_sha256", res.sha256))
        self.user_properties.append(("saebench_seconds", f"{res.seconds:.3f}"))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Location shown in reports: the checkpoint directory."""
        return Path(_runner(self.config).checkpoints[self.sae_id].path), None, self.name


class _MetricGate(_GateItem):
    """A gate on one metric of one checkpoint: shared setup, properties and outcomes."""

    results: Any = None

    def setup(self) -> None:
        """Obtain the evaluation; a failed one makes this gate an error, not a failure."""
        self.results = _evaluate(self, self.sae_id)

    def reads(self) -> tuple[str, ...]:
        """Metric ids this gate reads (which evals it needs)."""
        raise NotImplementedError

    def _start(self, metric: str, limit: str) -> str:
        """Record the gate's identity; returns the ``(sae ..., suite ...)`` context."""
        suite = _runner(self.config).settings.suite
        self.user_properties.extend([("saebench_sae", self.sae_id), ("saebench_metric", metric),
                                     ("saebench_suite", suite), ("limit", limit)])
        return gate_context(self.sae_id, suite)

    def _skip_unless_computed(self, metric: str, context: str) -> None:
        """Skip, with the reason, when the run did not compute ``metric``."""
        if not self.results.computed(metric):
            settings = _runner(self.config).settings
            reason = self.results.reason(metric) or _not_in_suite(metric, settings.suite,
                                                                  settings)
            self._skip(f"{metric} not computed {context}: {reason}")

    def _conclude(self, outcome: Outcome) -> None:
        """Record the status; fail, or warn for a warn-severity gate; an inconclusive one
        as ``on-inconclusive`` says (its status stays ``inconclusive`` everywhere)."""
        self._finish(outcome.status)
        if outcome.status == "inconclusive":
            self.user_properties.append(("message", outcome.message))
            policy = _runner(self.config).settings.on_inconclusive
            if policy == "fail":
                pytest.fail(outcome.message, pytrace=False)
            if policy == "warn":
                warnings.warn(SaebenchInconclusiveWarning(outcome.message), stacklevel=1)
            return
        if outcome.status == "fail":
            pytest.fail(outcome.message, pytrace=False)
        if outcome.status == "warn":
            # the item passes, so its report has no message: record it for the annotation
            self.user_properties.append(("message", outcome.message))
            warnings.warn(SaebenchGateWarning(outcome.message), stacklevel=1)

    def _finish(self, status: str) -> None:
        self.user_properties.append(("status", status))

    def _skip(self, message: str) -> None:
        self._finish("skip")
        pytest.skip(message)


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
        """A threshold on a metric that a random SAE of the checkpoint's shape matches at
        this budget cannot mean anything here: it warns, saying so, unless its severity was
        set explicitly (gates.null.signal)."""
        from pytest_saebench.gates.null import signal

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
        if ok or t.severity_explicit or outcome.status not in ("pass", "fail",
                                                               "inconclusive"):
            return outcome
        return Outcome("warn", f"{outcome.message}: {note}; the threshold warns instead of "
                               f"{'failing' if outcome.status == 'fail' else 'passing'} "
                               "(set its severity to decide anyway)")

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Location: the pyproject line of the threshold when known."""
        return _location(self, self.threshold.source)


class _RuleGate(_MetricGate):
    """A gate driven by one rule of the pyproject (regression or frontier)."""

    def __init__(self, *, rule: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.rule = rule

    def reads(self) -> tuple[str, ...]:  # noqa: D102 - see _MetricGate
        x = getattr(self.rule, "x", None)
        return (self.rule.metric,) if x is None else (self.rule.metric, x)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Location: the pyproject line of the rule when known."""
        return _location(self, self.rule.source)


class RegressionItem(_RuleGate):
    """Checks one metric of one checkpoint against its value in the baseline."""

    rule: RegressionRule

    def runtest(self) -> None:
        """Skip when there is nothing comparable, else apply the rule."""
        runner, rule, res = _runner(self.config), self.rule, self.results
        settings = runner.settings
        context = self._start(rule.metric, rule.limit_text())
        if settings.update_baseline:
            self._finish("pass")
            return
        self._skip_unless_computed(rule.metric, context)
        value, stderr = res.value(rule.metric), res.stderr(rule.metric)
        self.user_properties.append(("value", "null" if value is None else repr(value)))
        from pytest_saebench.runner import EvaluationFailed

        try:
            base, label = runner.baseline_for(self.sae_id)
        except (SaebenchError, EvaluationFailed) as exc:
            self._finish("error")
            pytest.fail(f"baseline: {exc}", pytrace=False)
        if isinstance(base, str):
            if settings.on_missing_baseline == "fail":
                self._finish("fail")
                pytest.fail(base, pytrace=False)
            self._skip(base)
        env = env_differences(res.env, base.env)
        if env:
            warnings.warn(SaebenchBaselineWarning(
                f"baseline {label} was computed in another environment ({'; '.join(env)}); "
                "differences may not come from the checkpoint"), stacklevel=1)
        spec = runner.registry.get(rule.metric)
        outcome = check_metric(rule, spec.direction if spec else "info", res, base, label,
                               context)
        if outcome.status == "skip":
            self._skip(outcome.message)
        old = base.value(rule.metric)
        self.user_properties.append(("baseline", repr(old)))
        self.user_properties.append(("baseline_entry", base.sae_id))
        self.user_properties.append(("delta", repr(value - old) if value is not None
                                     else "null"))
        if stderr is not None:
            self.user_properties.append(("stderr", repr(stderr)))
            self._record_null(rule.metric, spec.direction if spec else "info")
        self._conclude(outcome)
        self.user_properties.append(("message", outcome.message))

    def _record_null(self, metric: str, direction: str) -> None:
        """The metric against a random SAE of the checkpoint's shape, recorded beside the
        verdict (which it does not change): every gated metric carries its null."""
        runner = _runner(self.config)
        if runner.settings.null_reference == "on" and direction in ("up", "down"):
            found = _null_gain(self, runner, metric, direction)
            if not isinstance(found, str):
                self.user_properties.extend([("null", repr(found.null)),
                                             ("signal_z", _z_text(found.z))])


class FrontierItem(_RuleGate):
    """Checks one metric of one checkpoint against a baseline sweep's frontier at its x."""

    def runtest(self) -> None:
        """Skip outside the frontier's range, else gate the distance below it."""
        from pytest_saebench.gates.frontier import check

        runner, rule, res = _runner(self.config), self.rule, self.results
        context = self._start(rule.metric, rule.limit_text())
        self._skip_unless_computed(rule.metric, context)
        self._skip_unless_computed(rule.x, context)
        value, stderr, x = res.value(rule.metric), res.stderr(rule.metric), res.value(rule.x)
        self.user_properties.append(("value", "null" if value is None else repr(value)))
        if stderr is not None:
            self.user_properties.append(("stderr", repr(stderr)))
        spec = runner.registry.get(rule.metric)
        outcome = check(rule, spec.direction if spec else "up", x, value, stderr,
                        runner.frontier_points(rule), context)
        if outcome.status == "skip":
            self._skip(outcome.message)
        self._conclude(outcome)
        self.user_properties.append(("message", outcome.message))


class NullItem(_RuleGate):
    """Checks that one metric of one checkpoint beats a random SAE of its shape."""

    def runtest(self) -> None:
        """Compare with the null reference on the same windows (paired), three ways."""
        from pytest_saebench.gates.null import check

        runner, rule, res = _runner(self.config), self.rule, self.results
        context = self._start(rule.metric, rule.limit_text())
        self._skip_unless_computed(rule.metric, context)
        value, stderr = res.value(rule.metric), res.stderr(rule.metric)
        self.user_properties.append(("value", "null" if value is None else repr(value)))
        if stderr is not None:
            self.user_properties.append(("stderr", repr(stderr)))
        spec = runner.registry.get(rule.metric)
        found = _null_gain(self, runner, rule.metric, spec.direction if spec else "up")
        if not isinstance(found, str):
            self.user_properties.extend([("baseline", repr(found.null)),
                                         ("null", repr(found.null)),
                                         ("baseline_entry", "random SAE of its shape"),
                                         ("delta", repr(found.gain)),
                                         ("signal_z", _z_text(found.z))])
        look = look_of(res.evals[rule.metric.split(".", 1)[0]].unstructured)
        df = None if isinstance(found, str) else found.df
        outcome = check(rule, found, context,
                        look.critical(rule.z, df) if look is not None and rule.z else None)
        self._conclude(outcome)
        self.user_properties.append(("message", outcome.message))


def _z_text(z: float | None) -> str:
    """A z for the reports: ``null`` where there is none or it is infinite (no noise)."""
    import math

    return "null" if z is None or not math.isfinite(z) else repr(z)


def _null_gain(item: _MetricGate, runner: Any, metric: str, direction: str) -> Any:
    """The checkpoint's gain over its null reference on ``metric`` (gates.null.Gain), or
    why there is none (the null could not be built or evaluated)."""
    from pytest_saebench.gates.null import gain
    from pytest_saebench.runner import EvaluationFailed

    try:
        null = runner.null_results(item.sae_id, metric)
    except (SaebenchError, EvaluationFailed) as exc:
        return f"the random SAE could not be evaluated: {exc}"
    found = gain(metric, direction, item.results, null)
    if not isinstance(found, str):  # for the results JSON (reporting/jsonreport.py)
        runner.null_gains.setdefault(item.sae_id, {})[metric] = {
            "reference": null.sae_id, **found.record()}
    return found


def _location(item: pytest.Item, source: str) -> tuple[Path, int | None, str]:
    """``source`` (``path:line``) as a report location, else the item's own path."""
    path, _, line = source.rpartition(":")
    if path and line.isdigit():
        return Path(path), int(line) - 1, item.name
    return item.path, None, item.name


def _not_in_suite(metric: str, suite: str, settings) -> str:
    from pytest_saebench.suites import evals_computing

    suites = evals_computing(metric.split(".", 1)[0])
    if suite in suites and settings.select_evals:
        return (f"its eval is not in select-evals ({', '.join(settings.select_evals)}); "
                "add it there or drop --saebench-evals")
    where = f"suite(s) {', '.join(suites)} compute it" if suites else "no suite computes it"
    return f"suite '{suite}' does not compute it; {where}"
