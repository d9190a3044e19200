"""What every gate item shares: reaching the session's runner, the evaluation a gate reads
(one-line failures), recording and concluding an outcome, and the null reference's gain."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates.thresholds import Outcome, gate_context
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
        message = (str(exc) if getattr(item, "reports_evaluation", False)
                   else f"evaluation of '{sae_id}' failed (see saebench::evaluate[{sae_id}])")
    except SaebenchError as exc:
        message = str(exc)
    except Exception as exc:  # a library's own error: its first line, not its traceback
        first = (str(exc).strip().splitlines() or [""])[0]
        message = f"evaluation of '{sae_id}' failed: {type(exc).__name__}: {first}"
    finally:
        if runner.progress is not None and not getattr(item, "_probing", False):
            runner.progress.item_done(item.nodeid)
    # outside the except blocks, so no "During handling of the above exception" chain
    pytest.fail(message, pytrace=False)


class _GateItem(pytest.Item):
    def __init__(self, *, sae_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.sae_id = sae_id

    def repr_failure(self, excinfo, style=None):  # noqa: D102 - pytest API
        if isinstance(excinfo.value, SaebenchError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)


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
        as ``on-inconclusive`` says (its status stays ``inconclusive`` everywhere). A fail
        first passes the run's family-wise rule (family.py)."""
        from pytest_saebench.family import Probed

        if getattr(self, "_probing", False):
            raise Probed(outcome)
        runner = _runner(self.config)
        if outcome.evidence is not None:
            from pytest_saebench.gates.stats import one_sided_p

            t, df, level = outcome.evidence
            self.user_properties.extend([("alpha", repr(level)),
                                         ("p", repr(one_sided_p(t, df)))])
            if runner.settings.family != "none":
                outcome = family_of(self).review(self.nodeid, outcome)
        self._finish(outcome.status)
        if outcome.status == "inconclusive":
            self.user_properties.append(("message", outcome.message))
            policy = runner.settings.on_inconclusive
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


FAMILY_KEY = pytest.StashKey[Any]()


def family_of(item: pytest.Item) -> Any:
    """The session's family.Family over its gate items (made on first use)."""
    from pytest_saebench.family import Family

    config = item.config
    if FAMILY_KEY not in config.stash:
        config.stash[FAMILY_KEY] = Family(
            _runner(config).settings.family,
            lambda: [i for i in item.session.items if isinstance(i, _MetricGate)], probe)
    return config.stash[FAMILY_KEY]


def probe(item: Any) -> Outcome | None:
    """``item``'s outcome as its run would conclude it, without reporting anything (None for
    a gate that skips or errors)."""
    from pytest_saebench.family import Probed

    item._probing = True
    saved = list(item.user_properties)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if item.results is None:
                item.setup()
            item.runtest()
    except Probed as found:
        return found.outcome
    except (Exception, pytest.skip.Exception, pytest.fail.Exception):
        return None
    finally:
        item._probing = False
        item.user_properties[:] = saved
    return None


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
