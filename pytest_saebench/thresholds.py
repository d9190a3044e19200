"""Threshold rules and the checks shared by gate items, fixtures and reports."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from pytest_saebench.errors import SaebenchError

Severity = Literal["error", "warn"]
Status = Literal["pass", "fail", "warn", "skip", "error"]
_RULE = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*(>=|<=)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Threshold:
    """Inclusive bounds on one metric; ``severity='warn'`` reports without failing."""

    metric: str
    min: float | None = None
    max: float | None = None
    severity: Severity = "error"
    source: str = ""

    def limit_text(self) -> str:
        """``>= 0.7``, ``<= 120`` or ``in [20, 120]``."""
        if self.min is not None and self.max is not None:
            return f"in [{self.min:g}, {self.max:g}]"
        if self.min is not None:
            return f">= {self.min:g}"
        return f"<= {self.max:g}"


@dataclass(frozen=True)
class Outcome:
    """Result of checking one value against one threshold."""

    status: Status
    message: str


def fmt(value: float | None, stderr: float | None = None) -> str:
    """Compact number with optional ``± stderr``."""
    if value is None:
        return "null"
    text = f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    if stderr is not None:
        text += f" ± {stderr:.2g}"
    return text


def gate_context(sae_id: str, suite: str) -> str:
    """The ``(sae <id>, suite <suite>)`` every gate message ends its subject with."""
    return f"(sae {sae_id}, suite {suite})"


def check(threshold: Threshold, value: float | None, reason: str | None, context: str) -> Outcome:
    """Check ``value`` against ``threshold``; ``context`` is e.g. ``(sae good, suite fast)``."""
    mid = threshold.metric
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        why = reason or "value is undefined"
        return Outcome("fail", f"{mid} is undefined: {why} {context}")
    if threshold.min is not None and value < threshold.min:
        msg = f"{mid} = {fmt(value)} < min {threshold.min:g} {context}"
    elif threshold.max is not None and value > threshold.max:
        msg = f"{mid} = {fmt(value)} > max {threshold.max:g} {context}"
    else:
        return Outcome("pass", f"{mid} = {fmt(value)} {threshold.limit_text()} {context}")
    if reason:  # e.g. the counterexample of a violated property
        msg += f": {reason}"
    return Outcome("warn" if threshold.severity == "warn" else "fail", msg)


def parse_cli_rule(text: str) -> tuple[str, str, float]:
    """``"core.sparsity.l0>=20"`` -> ``("core.sparsity.l0", ">=", 20.0)``."""
    m = _RULE.match(text)
    if not m:
        raise SaebenchError(
            f"--saebench-threshold '{text}': expected METRIC>=NUMBER or METRIC<=NUMBER "
            "(e.g. 'core.reconstruction_quality.explained_variance>=0.8')"
        )
    try:
        number = float(m.group(3))
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise SaebenchError(
            f"--saebench-threshold '{text}': '{m.group(3)}' is not a finite number "
            "(e.g. 'core.reconstruction_quality.explained_variance>=0.8')"
        )
    return m.group(1), m.group(2), number


def make_threshold(metric: str, lo: float | None, hi: float | None, severity: str,
                   source: str) -> Threshold:
    """Validated :class:`Threshold` (bounds numbers, min <= max, known severity)."""
    if severity not in ("error", "warn"):
        raise SaebenchError(f"{source}: severity must be 'error' or 'warn', got '{severity}'")
    if lo is None and hi is None:
        raise SaebenchError(f"{source}: give min, max or both (e.g. {{ min = 0.8 }})")
    for name, bound in (("min", lo), ("max", hi)):
        if bound is not None and not math.isfinite(bound):
            # every comparison with NaN is False, so the gate would pass any value
            raise SaebenchError(f"{source}: {name} must be a finite number, got {bound}")
    if lo is not None and hi is not None and lo > hi:
        raise SaebenchError(f"{source}: min {lo:g} > max {hi:g}; swap them")
    return Threshold(metric, lo, hi, severity, source)  # type: ignore[arg-type]
