"""A regression rule at a look of an adaptive budget (gates.budget): whether it is decided
there, and how likely the whole budget is to decide it. Torch-free."""

from __future__ import annotations

import math
from typing import Any

from pytest_saebench.gates import budget
from pytest_saebench.gates.regression import (
    RegressionRule,
    config_differences,
    difference,
    pair,
    rule_limits,
)


def _look_sides(rule: RegressionRule, direction: str, new: Any, old: Any
                ) -> tuple[list[tuple[float, float]], float | None, int | None] | None:
    """``(limits, standard error or None, df)`` of ``rule`` on a look's results ``new``
    against ``old``, or None where there is nothing to compare (decided)."""
    metric, eval_type = rule.metric, rule.metric.split(".", 1)[0]
    a, b = new.value(metric), old.value(metric) if old.computed(metric) else None
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or \
            eval_type not in old.evals or \
            config_differences(new.evals[eval_type].config, old.evals[eval_type].config):
        return None
    paired, why = pair(metric, new, old)
    delta, se, df, _ = difference(a, b, new.stderr(metric), old.stderr(metric), paired, why,
                                  (new.dof(metric), old.dof(metric)))
    if paired is not None:
        delta = paired.delta
    has_se = paired is not None and paired.stderr is not None or bool(new.stderr(metric))
    sign = {"up": 1.0, "down": -1.0}.get(direction, 0.0)
    limits = [(bad, allow) for bad, allow, _ in rule_limits(rule, sign, delta, b)]
    return limits, se if has_se else None, df


def decided(rule: RegressionRule, direction: str, new: Any, old: Any, look: Any,
            monotone: str = "") -> bool:
    """Whether ``rule`` has its verdict at ``look`` of an adaptive budget, ``new`` holding
    the results so far (gates.budget); a rule with nothing to compare is decided.
    ``monotone``: how the metric moves as the budget grows, for one without a standard
    error (gates.budget.regression_decided)."""
    found = _look_sides(rule, direction, new, old)
    if found is None:
        return True
    limits, se, df = found
    sign = {"up": 1.0, "down": -1.0}.get(direction, 0.0)
    return budget.regression_decided(limits, se, df, rule.z, look, _worsens(monotone, sign))


def rule_power(rule: RegressionRule, direction: str, new: Any, old: Any, look: Any
               ) -> float | None:
    """The conditional power that the whole budget decides ``rule`` (gates.budget.power),
    None where futility does not apply to it."""
    found = _look_sides(rule, direction, new, old)
    return None if found is None else budget.power(found[0], found[1], found[2], rule.z, look)


def _worsens(monotone: str, sign: float) -> str:
    """How a metric's distance past its tolerance moves as the budget grows: ``"less"``
    (a pass stays a pass), ``"more"`` (a fail stays a fail) or '' (either, or two-sided)."""
    if not monotone or not sign:
        return ""
    rises = monotone == "up"
    # bad = -sign * delta: falls as the value rises for a metric whose better way is up
    return "less" if rises == (sign > 0) else "more"
