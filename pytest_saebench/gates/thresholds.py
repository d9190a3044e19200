"""Threshold rules and the checks shared by gate items, fixtures and reports."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates import Verdict

Severity = Literal["error", "warn"]
Status = Verdict
_RULE = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*(>=|<=)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Threshold:
    """Inclusive bounds on one metric; ``severity='warn'`` reports without failing."""

    metric: str
    min: float | None = None
    max: float | None = None
    severity: Severity = "error"
    source: str = ""
    # How sure a verdict must be (STATISTICS.md §3): 0 decides on the value alone (today's
    # gate); z > 0 decides on the interval value ± c·stderr, three ways.
    z: float = 0.0
    # severity written in the file: a threshold without signal against a random SAE then
    # still decides (gates.null.signal)
    severity_explicit: bool = False

    def limit_text(self) -> str:
        """``>= 0.7``, ``<= 120`` or ``in [20, 120]`` (and ``, z 3`` with a confidence)."""
        if self.min is not None and self.max is not None:
            text = f"in [{self.min:g}, {self.max:g}]"
        elif self.min is not None:
            text = f">= {self.min:g}"
        else:
            text = f"<= {self.max:g}"
        return text + (f", z {self.z:g}" if self.z else "")


@dataclass(frozen=True)
class Outcome:
    """Result of checking one value against one threshold. ``evidence`` (gates with ``z``):
    the fail test's statistic, ``(t, degrees of freedom, its one-sided level)``, where the
    gate fails when ``t`` exceeds the level's critical value; a run's family-wise rule
    (gates.family) reads it."""

    status: Status
    message: str
    evidence: tuple[float, int | None, float] | None = None


def evidence(bads: list[float], stderr: float, c: float, df: int | None
             ) -> tuple[float, int | None, float] | None:
    """``(t, df, level)`` of a fail test: the largest of the distances ``bads`` past the
    bound in standard errors, and the one-sided level the critical value ``c`` stands for."""
    from pytest_saebench.gates.stats import one_sided_level

    if not bads or not stderr or not math.isfinite(stderr) or not math.isfinite(c):
        return None
    return max(bads) / stderr, df, one_sided_level(c, df)


def with_evidence(outcome: Outcome, found: tuple[float, int | None, float] | None) -> Outcome:
    """``outcome`` carrying ``found``."""
    from dataclasses import replace

    return replace(outcome, evidence=found)


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


def interval_text(value: float, stderr: float, c: float, df: int | None) -> str:
    """``0.9283 ± 3.45 × 0.0013 = [0.9238, 0.9328] (z 3 as t with 19 df)`` style text."""
    half = c * stderr
    dist = f"t, {df} df" if df is not None else "normal"
    return (f"{fmt(value)} ± {c:.3g} × {stderr:.2g} = [{fmt(value - half)}, "
            f"{fmt(value + half)}] ({dist})")


def check(threshold: Threshold, value: float | None, reason: str | None, context: str,
          stderr: float | None = None, df: int | None = None,
          critical_value: float | None = None) -> Outcome:
    """Check ``value`` against ``threshold``; ``context`` is e.g. ``(sae good, suite fast)``.

    With ``threshold.z`` and a standard error the interval decides (STATISTICS.md §3):
    wholly beyond a bound fails, wholly inside passes, holding a bound is ``inconclusive``.
    ``critical_value`` replaces the fixed budget's (an adaptive budget's stopping look).
    """
    mid = threshold.metric
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        why = reason or "value is undefined"
        return Outcome("fail", f"{mid} is undefined: {why} {context}")
    if threshold.z and stderr is not None and math.isfinite(stderr):
        return _check_interval(threshold, value, reason, context, stderr, df, critical_value)
    if threshold.min is not None and value < threshold.min:
        msg = f"{mid} = {fmt(value)} < min {threshold.min:g} {context}"
    elif threshold.max is not None and value > threshold.max:
        msg = f"{mid} = {fmt(value)} > max {threshold.max:g} {context}"
    else:
        return Outcome("pass", f"{mid} = {fmt(value)} {threshold.limit_text()} {context}")
    if reason:  # e.g. the counterexample of a violated property
        msg += f": {reason}"
    return Outcome("warn" if threshold.severity == "warn" else "fail", msg)


def _check_interval(t: Threshold, value: float, reason: str | None, context: str,
                    stderr: float, df: int | None, c: float | None) -> Outcome:
    from pytest_saebench.gates.stats import critical

    c = c or critical(t.z, df)
    shown = interval_text(value, stderr, c, df)
    sides = [(b - value, f"min {b:g}", "below") for b in (t.min,) if b is not None] + \
            [(value - b, f"max {b:g}", "above") for b in (t.max,) if b is not None]
    return with_evidence(_sides(t, sides, shown, stderr, c, reason, context),
                         evidence([bad for bad, _, _ in sides], stderr, c, df))


def _sides(t: Threshold, sides: list[tuple[float, str, str]], shown: str, stderr: float,
           c: float, reason: str | None, context: str) -> Outcome:
    from pytest_saebench.gates.stats import verdict

    found = [(verdict(bad, stderr, 0.0, c), bound, where) for bad, bound, where in sides]
    for status, bound, where in found:
        if status == "fail":
            msg = f"{t.metric} = {shown}: wholly {where} {bound} {context}"
            if reason:
                msg += f": {reason}"
            return Outcome("warn" if t.severity == "warn" else "fail", msg)
    for status, bound, _ in found:
        if status == "inconclusive":
            return Outcome("inconclusive", f"{t.metric} = {shown} holds {bound}: "
                                           f"inconclusive at z {t.z:g} {context}")
    return Outcome("pass", f"{t.metric} = {shown} {t.limit_text()} {context}")


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
                   source: str, z: float = 0.0) -> Threshold:
    """Validated :class:`Threshold` (bounds numbers, min <= max, known severity, z >= 0)."""
    if isinstance(z, bool) or not isinstance(z, int | float) or not math.isfinite(z) or z < 0:
        raise SaebenchError(f"{source}: z must be a non-negative number (how many standard "
                            f"errors a verdict needs, e.g. 3), got {z!r}")
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
    return Threshold(metric, lo, hi, severity, source, float(z))  # type: ignore[arg-type]
