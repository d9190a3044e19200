"""Fixtures for users' own tests. Each is parametrized over the ``--sae-path`` checkpoints
and skips when no checkpoint was given."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates.thresholds import check, fmt, gate_context, make_threshold
from pytest_saebench.session import runner_or_none

SAE_FIXTURES = ("saebench_sae_id", "sae", "saebench_model", "saebench_results", "sae_metrics",
                "saebench_check")
_EVALUATE_KEY = pytest.StashKey[dict]()


def _runner(config: pytest.Config):
    runner = runner_or_none(config)
    if runner is None:
        pytest.skip("no SAE checkpoint to evaluate: pass --sae-path PATH (pytest-saebench)")
    return runner


def _marker_kwargs(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("saebench")
    return dict(marker.kwargs) if marker else {}


class MetricValue(float):
    """A float that explains itself in assertion messages."""

    metric_id: str
    stderr: float | None
    context: str

    def __new__(cls, value: float, metric_id: str, stderr: float | None, context: str):
        obj = super().__new__(cls, value)
        obj.metric_id, obj.stderr, obj.context = metric_id, stderr, context
        return obj

    def __repr__(self) -> str:
        return f"{fmt(float(self), self.stderr)} [{self.metric_id} {self.context}]"


class SaeMetrics(Mapping[str, MetricValue]):
    """Metric id (or unique alias) -> :class:`MetricValue` for one checkpoint."""

    def __init__(self, results, registry, context: str, thresholds=()):
        self._res, self._registry, self._context = results, registry, context
        self._thresholds = tuple(thresholds)

    def __getitem__(self, name: str) -> MetricValue:
        try:
            metric_id = self._registry.resolve(name)
        except SaebenchError as exc:
            raise KeyError(str(exc)) from None
        if not self._res.computed(metric_id):
            pytest.skip(f"{metric_id} not computed {self._context}: "
                        f"{self._res.reason(metric_id) or 'its eval is not in this run'}")
        value = self._res.value(metric_id)
        if value is None:
            pytest.fail(f"{metric_id} is undefined {self._context}: "
                        f"{self._res.reason(metric_id)}", pytrace=False)
        return MetricValue(value, metric_id, self._res.stderr(metric_id), self._context)

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, v in self._res.all_metrics().items() if v is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"SaeMetrics({self._res.sae_id}, {len(self)} metrics)"

    def gate(self, thresholds=None) -> None:
        """Apply ``thresholds`` (default: the run's, from [tool.pytest-saebench.thresholds]
        and --saebench-threshold) to the metrics computed; fail with every error-severity
        violation on its own line, warn for the rest. Metrics not computed are not gated."""
        failures = []
        for threshold in thresholds if thresholds is not None else self._thresholds:
            if not self._res.computed(threshold.metric):
                continue
            outcome = check(threshold, self._res.value(threshold.metric),
                            self._res.reason(threshold.metric), self._context)
            if outcome.status == "fail" and threshold.severity == "error":
                failures.append(outcome.message)
            elif outcome.status != "pass":
                from pytest_saebench.items import SaebenchGateWarning

                warnings.warn(SaebenchGateWarning(outcome.message), stacklevel=2)
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)


@pytest.fixture
def saebench_sae_id(request: pytest.FixtureRequest) -> str:
    """Id of the checkpoint this test instance runs against (one instance per checkpoint)."""
    _runner(request.config)
    if not hasattr(request, "param"):
        pytest.skip("no SAE checkpoint to evaluate: pass --sae-path PATH (pytest-saebench)")
    return request.param


@pytest.fixture
def sae(request: pytest.FixtureRequest, saebench_sae_id: str):
    """The checkpoint as a sae_lens ``SAE``, decoder-norm folded as SAEBench evaluates it."""
    try:
        return _runner(request.config).loaded_sae(saebench_sae_id).sae
    except SaebenchError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def saebench_model(request: pytest.FixtureRequest, saebench_sae_id: str):
    """The ``HookedTransformer`` the checkpoint is evaluated on (shared across tests)."""
    try:
        return _runner(request.config).model_for(saebench_sae_id)
    except SaebenchError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def saebench_results(request: pytest.FixtureRequest, saebench_sae_id: str):
    """Lazy results of this checkpoint (``SaeResults``): only the evals the test's
    ``@pytest.mark.saebench(evals=[...], suite=...)`` asks for (default: the run's suite),
    each computed once per session."""
    from pytest_saebench.runner import EvaluationFailed

    kwargs = _marker_kwargs(request)
    runner = _runner(request.config)
    try:
        return runner.results(saebench_sae_id, kwargs.get("evals"), kwargs.get("suite"))
    except (SaebenchError, EvaluationFailed) as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        if runner.progress is not None:
            runner.progress.item_done(request.node.nodeid)


@pytest.fixture
def sae_metrics(request: pytest.FixtureRequest, saebench_results) -> SaeMetrics:
    """Mapping metric id or alias -> value; values show id, stderr and SAE when an assert
    fails, a metric the suite skipped skips the test, an undefined one fails it."""
    runner = _runner(request.config)
    context = gate_context(saebench_results.sae_id, saebench_results.suite)
    return SaeMetrics(saebench_results, runner.registry, context, runner.settings.thresholds)


@pytest.fixture
def saebench_check(request: pytest.FixtureRequest, sae_metrics: SaeMetrics, saebench_results):
    """``saebench_check(id, min=None, max=None, severity="error", z=0)``: gate one metric
    inside a test with the same one-line message and verdict as the generated threshold items
    (with ``z``, an inconclusive one does what ``on-inconclusive`` says); returns the value.
    Without ``min`` and ``max`` it applies the run's own thresholds for the metric (pyproject,
    ``--saebench-threshold``), so a test can follow the bounds the repository configured; it
    skips, saying so, where none is configured."""
    runner = _runner(request.config)

    def _check(metric: str, min: float | None = None, max: float | None = None,
               severity: str = "error", z: float = 0.0) -> float:
        try:
            metric_id = runner.registry.resolve(metric)
            if min is None and max is None:
                thresholds = [t for t in runner.settings.thresholds if t.metric == metric_id]
            else:
                thresholds = [make_threshold(metric_id, min, max, severity,
                                             f"saebench_check({metric!r})", z)]
        except SaebenchError as exc:
            pytest.fail(str(exc), pytrace=False)
        if not thresholds:
            pytest.skip(f"saebench_check({metric!r}): no min or max given and no threshold "
                        f"configured for {metric_id} (add one to "
                        "[tool.pytest-saebench.thresholds], or pass min=/max=)")
        value = sae_metrics[metric_id]
        for threshold in thresholds:
            _verdict(runner, threshold, float(value), sae_metrics._context,
                     saebench_results.stderr(metric_id), saebench_results.dof(metric_id))
        return value

    return _check


def _verdict(runner, threshold, value: float, context: str, stderr, dof) -> None:
    """Fail, warn or pass one ``saebench_check`` bound as a generated threshold item would."""
    outcome = check(threshold, value, None, context, stderr, dof)
    if outcome.status == "inconclusive":
        from pytest_saebench.items import SaebenchInconclusiveWarning

        if runner.settings.on_inconclusive == "fail":
            pytest.fail(outcome.message, pytrace=False)
        if runner.settings.on_inconclusive == "warn":
            warnings.warn(SaebenchInconclusiveWarning(outcome.message), stacklevel=3)
    if outcome.status == "fail":
        pytest.fail(outcome.message, pytrace=False)
    if outcome.status == "warn":
        from pytest_saebench.items import SaebenchGateWarning

        warnings.warn(SaebenchGateWarning(outcome.message), stacklevel=3)


@pytest.fixture
def saebench_evaluate(request: pytest.FixtureRequest):
    """``saebench_evaluate(path, evals=None) -> SaeMetrics``: evaluate a checkpoint the test
    itself made (a training smoke test) with this run's settings (suite, model, dataset,
    seed from [tool.pytest-saebench] and the command line; no --sae-path needed). Call
    ``.gate()`` on the result to apply the configured thresholds."""
    from pytest_saebench.build import build_runner
    from pytest_saebench.runner import EvaluationFailed

    made = request.config.stash.setdefault(_EVALUATE_KEY, {})

    def _evaluate(path, evals: list[str] | None = None) -> SaeMetrics:
        key = str(path)
        try:
            if key not in made:
                made[key] = build_runner(request.config, [key])
            runner = made[key]
            if len(runner.checkpoints) != 1:
                raise SaebenchError(f"{len(runner.checkpoints)} checkpoints there; give one "
                                    "checkpoint folder")
            sae_id = next(iter(runner.checkpoints))
            results = runner.results(sae_id, evals)
        except (SaebenchError, EvaluationFailed) as exc:
            pytest.fail(f"saebench_evaluate({key!r}): {exc}", pytrace=False)
        return SaeMetrics(results, runner.registry, gate_context(sae_id, results.suite),
                          runner.settings.thresholds)

    return _evaluate


@pytest.fixture
def synthetic_activations(request: pytest.FixtureRequest):
    """Activations from a planted sparse dictionary (:mod:`pytest_saebench.synthetic`), for
    testing an SAE trainer without a language model. Needs no ``--sae-path``. Parametrize it
    indirectly with a dict of :class:`~pytest_saebench.synthetic.SyntheticConfig` fields plus
    ``n`` (samples, default 20,000)."""
    from pytest_saebench.synthetic import SyntheticConfig, generate

    params = dict(getattr(request, "param", None) or {})
    n = int(params.pop("n", 20_000))
    return generate(SyntheticConfig(**params), n)
