"""An adaptive budget's stopping rule for one checkpoint's eval (gates.budget): the gates of
this run that read the eval, decided look by look. Torch-free; the runner hands it to evals
that evaluate in looks (``ADAPTIVE = True``: core)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pytest_saebench.gates import budget
from pytest_saebench.gates.regression import CKPT_PREFIX
from pytest_saebench.gates.rule_looks import decided, rule_power
from pytest_saebench.results import SaeResults


def stopper(runner: Any, sae_id: str, suite: str, module: Any, seeds: int
            ) -> Callable[[Any, budget.Look], bool] | None:
    """``stop(results of a look, look) -> bool`` for ``module`` on ``sae_id``, or None where
    the whole budget is spent: a fixed budget, several seeds, another suite than the run's,
    an eval that does not evaluate in looks, a frontier gate or a ``ckpt:`` baseline reading
    it (evaluated at the whole budget, said in docs/statistics.md)."""
    settings = runner.settings
    prefix = f"{module.EVAL_TYPE_ID}."
    if settings.budget != "adaptive" or seeds > 1 or suite != settings.suite or \
            not getattr(module, "ADAPTIVE", False) or sae_id.startswith("null:"):
        return None
    if any(r.metric.startswith(prefix) or r.x.startswith(prefix) for r in settings.frontier):
        return None
    thresholds = [t for t in settings.thresholds if t.metric.startswith(prefix)]
    rules = [r for r in settings.regressions if r.metric.startswith(prefix)]
    if rules and (settings.baseline or "").startswith(CKPT_PREFIX):
        return None
    ref = runner.ref(sae_id)
    baseline: list[Any] = []

    def base() -> Any:
        if not baseline:
            found: Any = None
            if rules and not settings.update_baseline:
                try:
                    found = runner.comparison_for(sae_id)
                except Exception:  # a broken baseline: its gates say so, at the whole budget
                    found = None
            # A retrain is judged by the run-to-run noise, which more windows do not shrink:
            # its gates never hold the budget (their verdict uses the stopping look's value).
            artifact = getattr(found, "kind", "") == "artifact"
            baseline.append(found.entry if artifact else "none")
        return baseline[0] if isinstance(baseline[0], SaeResults) else None

    def stop(partial: Any, look: budget.Look) -> bool:
        res = SaeResults(sae_id, ref.shown_path, "", suite, {module.EVAL_TYPE_ID: partial})
        old = base() if rules else None
        done, futile = budget.stop_now(
            pending_gates(thresholds, rules if old is not None else [], res, old, look,
                          runner.registry), look, budget.FUTILITY)
        if futile:
            partial.unstructured.setdefault("looks", {})["futility"] = futile
        return done

    return stop


def pending_gates(thresholds: Sequence[Any], rules: Sequence[Any], res: Any, old: Any,
                  look: budget.Look, registry: Any) -> list[tuple[str, float | None]]:
    """The gates on ``res`` (a look's results) not yet decided at ``look``, each with its
    conditional power to be decided by the whole budget (None where futility does not apply),
    keyed as :func:`budget.gate_key` names them; ``old`` is the baseline the ``rules`` compare
    with."""
    pending: list[tuple[str, float | None]] = []
    for t in thresholds:
        spec = registry.get(t.metric)
        value, se, df = res.value(t.metric), res.stderr(t.metric), res.dof(t.metric)
        if res.computed(t.metric) and not budget.threshold_decided(
                t, value, se, df, look, spec.monotone if spec else ""):
            pending.append((budget.gate_key(t), budget.threshold_power(t, value, se, df, look)))
    for rule in rules:
        spec = registry.get(rule.metric)
        direction = spec.direction if spec else "info"
        if res.computed(rule.metric) and not decided(
                rule, direction, res, old, look, spec.monotone if spec else ""):
            pending.append((budget.gate_key(rule),
                            rule_power(rule, direction, res, old, look)))
    return pending
