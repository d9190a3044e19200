"""Matched-sparsity (frontier) gates: a metric against the Pareto frontier of a baseline sweep.

``[tool.pytest-saebench.frontier]`` rules such as
``"core.reconstruction_quality.explained_variance" = { against = "baselines/sweep.json",
x = "core.sparsity.l0", max_below = 0.01 }``: the baseline's checkpoints are points (x, metric);
the frontier keeps those no other point beats at a lower or equal x (lower x is sparser, so
better). A checkpoint is gated on how far its metric falls short of the frontier interpolated
piecewise linearly in log x at its own x, allowing ``max_below`` plus ``z`` combined standard
errors. Outside the frontier's x range the gate skips, naming the range. Nothing here imports
torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_saebench.errors import SaebenchError, did_you_mean
from pytest_saebench.gates.regression import _resolve
from pytest_saebench.gates.thresholds import Outcome, fmt

FRONTIER_KEYS = ("against", "x", "max_below", "z", "severity")
Point = tuple[float, float, float]  # (x, metric, metric's stderr)


@dataclass(frozen=True)
class FrontierRule:
    """How far below the baseline's frontier one metric may fall, at matched x."""

    metric: str
    against: str
    x: str = "core.sparsity.l0"
    max_below: float = 0.0
    z: float = 0.0
    severity: str = "error"
    source: str = ""

    def limit_text(self) -> str:
        """E.g. ``below frontier <= 0.01 + 2σ``."""
        return f"below frontier <= {self.max_below:g}" + (f" + {self.z:g}σ" if self.z else "")


def parse_frontier(table: Any, label: str, resolve, direction_of, base: Path | None,
                   line_of=None, path: str = "", written: str | None = None,
                   check_file: Callable[[str, str], None] | None = None
                   ) -> tuple[FrontierRule, ...]:
    """Rules from ``[tool.pytest-saebench.frontier]``; ``against`` is relative to ``base``
    and ``check_file(path, where)`` (the caller's: nothing here reads files) says it is a
    results JSON now, unless this run writes it (``written``)."""
    if not isinstance(table, dict):
        raise SaebenchError(f"{label}: 'frontier' must be a table of metric -> "
                            "{ against = ..., x = ..., max_below = ... }")
    rules = []
    for name, spec in table.items():
        where = f"{label} '{name}'"
        if not isinstance(spec, dict):
            raise SaebenchError(f"{where}: expected a table like {{ against = "
                                f"\"baselines/sweep.json\", max_below = 0.01 }}, got {spec!r}")
        unknown = sorted(set(spec) - set(FRONTIER_KEYS))
        if unknown:
            raise SaebenchError(f"{where}: unknown key '{unknown[0]}'"
                                f"{did_you_mean(unknown[0], list(FRONTIER_KEYS))}")
        metric, x = _resolve(resolve, name, where), _resolve(
            resolve, str(spec.get("x", "core.sparsity.l0")), f"{where} x")
        if direction_of(metric) not in ("up", "down"):
            raise SaebenchError(f"{where}: '{metric}' has no better direction "
                                f"({direction_of(metric)}); a frontier needs an up or down metric")
        against = spec.get("against")
        if not isinstance(against, str) or not against:
            raise SaebenchError(f"{where}: 'against' must name a results JSON of the sweep, "
                                "e.g. against = \"baselines/sweep.json\"")
        for key in ("max_below", "z"):
            value = spec.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
                    or not math.isfinite(value):
                raise SaebenchError(f"{where}: {key} must be a non-negative number, got "
                                    f"{value!r}")
        sev = spec.get("severity", "error")
        if sev not in ("error", "warn"):
            raise SaebenchError(f"{where}: severity must be 'error' or 'warn', got {sev!r}")
        full = against if base is None or Path(against).is_absolute() else str(base / against)
        if check_file is not None and (written is None or
                                       Path(written).resolve() != Path(full).resolve()):
            check_file(full, where)
        line = line_of(name) if line_of else None
        rules.append(FrontierRule(metric, full, x, float(spec.get("max_below", 0.0)),
                                  float(spec.get("z", 0.0)), sev,
                                  f"{path}:{line}" if path and line else path))
    return tuple(rules)


def pareto(points: list[Point], sign: float) -> list[Point]:
    """Points no other point beats at a lower or equal x, by increasing x (``sign`` = +1 when
    a higher metric is better)."""
    front: list[Point] = []
    for x, y, se in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if not front or sign * y > sign * front[-1][1]:
            if front and front[-1][0] == x:
                continue
            front.append((x, y, se))
    return front


def interpolate(front: list[Point], x: float) -> tuple[float, float] | None:
    """``(metric, stderr)`` on the frontier at ``x`` (linear in log x), None outside it."""
    if not front or x <= 0 or not front[0][0] <= x <= front[-1][0]:
        return None
    for (x0, y0, s0), (x1, y1, s1) in zip(front, front[1:], strict=False):
        if x0 <= x <= x1:
            w = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + w * (y1 - y0), math.hypot((1 - w) * s0, w * s1)
    return front[-1][1], front[-1][2]


def check(rule: FrontierRule, direction: str, x: float | None, y: float | None,
          y_se: float | None, front: list[Point], context: str = "") -> Outcome:
    """Gate ``y`` at ``x`` against ``front``."""
    if not front:
        return Outcome("skip", f"{rule.metric}: {rule.against} has no checkpoint with both "
                               f"{rule.metric} and {rule.x} {context}")
    if x is None or y is None or not math.isfinite(x) or not math.isfinite(y):
        return Outcome("fail", f"{rule.metric} or {rule.x} is undefined {context}")
    at = interpolate(front, x) if front[0][0] > 0 else None
    if at is None:
        return Outcome("skip", f"{rule.x} = {fmt(x)} is outside the frontier's range "
                               f"[{fmt(front[0][0])}, {fmt(front[-1][0])}] of {rule.against} "
                               f"{context}")
    y_front, se_front = at
    sign = 1.0 if direction == "up" else -1.0
    below = sign * (y_front - y)
    margin = rule.z * math.hypot(y_se or 0.0, se_front)
    text = (f"{rule.metric} = {fmt(y)} at {rule.x} = {fmt(x)}; frontier {fmt(y_front)} "
            f"({'below' if below > 0 else 'above'} by {abs(below):.3g})")
    se = math.hypot(y_se or 0.0, se_front)
    # the fail test a run's family-wise rule orders (gates.family): z standard errors, normal
    found = ((below - rule.max_below) / se, None, 0.5 * math.erfc(rule.z / math.sqrt(2))) \
        if rule.z and se > 0 else None
    if below > rule.max_below + margin:
        extra = f" + {rule.z:g}σ = {margin:.3g}" if margin else ""
        status = "warn" if rule.severity == "warn" else "fail"
        return Outcome(status, f"{text} > max_below {rule.max_below:g}{extra} {context}",
                       found)
    return Outcome("pass", f"{text} {context}", found)
