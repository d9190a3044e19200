"""Gate items driven by a rule of the pyproject against something else: a baseline
(``saebench::regression[...]``), a sweep's frontier and a random SAE of the checkpoint's shape."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates.budget import look_of
from pytest_saebench.gates.regression import (
    RegressionRule,
    check_metric,
    delta_stderr,
    env_differences,
)
from pytest_saebench.item_base import (
    SaebenchBaselineWarning,
    _location,
    _MetricGate,
    _null_gain,
    _runner,
    _z_text,
)
from pytest_saebench.paths import relative_label


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
        """Skip when there is nothing comparable, else apply the rule: paired with the
        baseline entry of the same artifact, against main's replicate runs for a retrain."""
        from pytest_saebench.baseline import RETRAIN
        from pytest_saebench.runner import EvaluationFailed

        runner, rule, res = _runner(self.config), self.rule, self.results
        settings = runner.settings
        context = self._start(rule.metric, rule.limit_text())
        if settings.update_baseline:
            # nothing is compared: a PASS here would claim a comparison that never ran
            where = relative_label(settings.update_baseline, self.config.rootpath)
            self._skip(f"not compared: this run writes the baseline ({where})"
                       if Path(settings.update_baseline).exists()
                       else f"no baseline: written now ({where})")
        self._skip_unless_computed(rule.metric, context)
        value, stderr = res.value(rule.metric), res.stderr(rule.metric)
        self.user_properties.append(("value", "null" if value is None else repr(value)))
        try:
            found = runner.comparison_for(self.sae_id)
            if isinstance(found, tuple):
                self._missing(found[0])
            spec = runner.registry.get(rule.metric)
            direction = spec.direction if spec else "info"
            if found.kind == RETRAIN:
                outcome, old, noise = self._retrain(found, direction, context)
            else:
                outcome = check_metric(rule, direction, res, found.entry, found.label, context)
                old, noise = found.entry.value(rule.metric), {
                    "noise": "evaluation" if rule.z else "none",
                    "noise_why": found.why if rule.z else "the rule has no z: the values "
                                                          "decide"}
                se = delta_stderr(rule.metric, res, found.entry)
                if se is not None:
                    noise["delta_stderr"] = repr(se)
        except (SaebenchError, EvaluationFailed) as exc:
            self._finish("error")
            pytest.fail(f"baseline: {exc}", pytrace=False)
        env = env_differences(res.env, found.entry.env)
        if env:
            warnings.warn(SaebenchBaselineWarning(
                f"baseline {found.label} was computed in another environment "
                f"({'; '.join(env)}); differences may not come from the checkpoint"),
                stacklevel=1)
        if outcome.status == "skip":
            self._skip(outcome.message)
        self.user_properties.append(("baseline", repr(old)))
        self.user_properties.append(("baseline_entry", found.entry.sae_id))
        self.user_properties.append(("delta", repr(value - old) if value is not None
                                     and old is not None else "null"))
        self.user_properties.extend((k, str(v)) for k, v in noise.items())
        if stderr is not None:
            self.user_properties.append(("stderr", repr(stderr)))
            self._record_null(rule.metric, direction)
        self._conclude(outcome)
        self.user_properties.append(("message", outcome.message))

    def _missing(self, why: str) -> None:
        """No baseline to compare with: skip with the reason, or fail (on-missing-baseline)."""
        if _runner(self.config).settings.on_missing_baseline == "fail":
            self._finish("fail")
            pytest.fail(why, pytrace=False)
        self._skip(why)

    def _retrain(self, found: Any, direction: str, context: str
                 ) -> tuple[Any, float | None, dict[str, Any]]:
        """``(outcome, main's mean, the noise used)`` of a retrain against main's replicate
        runs at its position (gates.retrain), this run's replicates there beside it."""
        from pytest_saebench.baseline import replicates
        from pytest_saebench.gates.retrain import check_retrain

        runner, rule = _runner(self.config), self.rule
        main, source = replicates(found, rule.metric)
        mine = [runner.results(i) for i in runner.baseline().replicates_here(self.sae_id)]
        text = found.main_text(len(main)) + (f" ({found.how})" if found.how else "")
        if source != "the baseline's runs":
            text += f" ({source})"
        outcome, diff = check_retrain(rule, direction, mine, main, found.entry, text, context)
        if diff is None:
            return outcome, None, {"noise": "between runs", "replicates": len(main)}
        noise = {"noise": diff.noise, "noise_why": diff.why, "replicates": diff.n_main,
                 "replicates_here": diff.n_new}
        if diff.stderr is not None:
            noise["delta_stderr"] = repr(diff.stderr)
        if diff.run_sd is not None:
            noise["run_sd"] = repr(diff.run_sd)
        return outcome, diff.main_mean, noise

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
