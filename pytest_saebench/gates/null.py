"""Gates against chance: a checkpoint's metric against its null reference, a random SAE of
its shape evaluated on the same windows (``null.py`` builds it), as a paired difference.

``[tool.pytest-saebench.null]`` rules ask for a gain over chance (``min_gain``, in the
metric's units, the good way) with a confidence ``z``; and every threshold learns from the
same difference whether its metric carries signal at this budget at all (:func:`signal`).
Torch-free, reads no files: both results come in as data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pytest_saebench.errors import SaebenchError, did_you_mean
from pytest_saebench.gates.thresholds import Outcome, fmt

RULE_KEYS = ("min_gain", "z", "severity")
# A threshold's metric carries signal when its paired difference from the null reaches this
# many standard errors (as Student's t over the units); below it the threshold only warns.
SIGNAL_Z = 3.0


@dataclass(frozen=True)
class NullRule:
    """``metric`` must beat a random SAE of the checkpoint's shape by ``min_gain`` (the good
    way), with confidence ``z`` (0: the values alone decide)."""

    metric: str
    min_gain: float = 0.0
    z: float = 0.0
    severity: str = "error"
    source: str = ""

    def limit_text(self) -> str:
        """E.g. ``gain over random >= 0.5, z 3``."""
        return f"gain over random >= {self.min_gain:g}" + (f", z {self.z:g}" if self.z else "")


def parse_rules(table: Any, label: str, resolve, gated: list[str], direction_of,
                line_of=None, path: str = "") -> tuple[NullRule, ...]:
    """Rules from ``[tool.pytest-saebench.null]``: ``default`` covers every thresholded
    metric (``gated``) that has a better direction; other keys are metric ids or aliases."""
    if not isinstance(table, dict):
        raise SaebenchError(f"{label}: 'null' must be a table, e.g. "
                            "default = { min_gain = 0, z = 3 }")
    rules: dict[str, NullRule] = {}
    default = None
    for name, spec in table.items():
        where = f"{label} '{name}'"
        metric = "default" if name == "default" else _resolve(resolve, name, where)
        line = line_of(name) if line_of else None
        rule = _rule(metric, spec, where, f"{path}:{line}" if path and line else path)
        if name == "default":
            default = rule
            continue
        if direction_of(metric) not in ("up", "down"):
            raise SaebenchError(f"{where}: '{metric}' has no better direction (it is kept "
                                "in a band or is context only), so no gain over a random SAE "
                                "is defined; gate it with a threshold instead")
        rules[metric] = rule
    if default is not None:
        for metric in gated:
            if metric not in rules and direction_of(metric) in ("up", "down"):
                rules[metric] = NullRule(metric, default.min_gain, default.z,
                                         default.severity, default.source)
    return tuple(rules.values())


def _rule(metric: str, spec: Any, where: str, source: str) -> NullRule:
    if not isinstance(spec, dict):
        raise SaebenchError(f"{where}: expected a table like {{ min_gain = 0, z = 3 }}, "
                            f"got {spec!r}")
    unknown = sorted(set(spec) - set(RULE_KEYS))
    if unknown:
        raise SaebenchError(f"{where}: unknown key '{unknown[0]}'"
                            f"{did_you_mean(unknown[0], list(RULE_KEYS))}")
    for key in ("min_gain", "z"):
        value = spec.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value) or (key == "z" and value < 0):
            raise SaebenchError(f"{where}: {key} must be a {'non-negative ' * (key == 'z')}"
                                f"number, got {value!r}")
    severity = spec.get("severity", "error")
    if severity not in ("error", "warn"):
        raise SaebenchError(f"{where}: severity must be 'error' or 'warn', got {severity!r}")
    return NullRule(metric, float(spec.get("min_gain", 0.0)), float(spec.get("z", 0.0)),
                    severity, source)


def _resolve(resolve, name: str, where: str) -> str:
    try:
        return resolve(name)
    except SaebenchError as exc:
        raise SaebenchError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Gain:
    """A metric's gain over its null reference, the good way: value, standard error (None
    without one), degrees of freedom and how the error was formed."""

    value: float
    null: float
    gain: float
    stderr: float | None
    df: int | None
    basis: str

    @property
    def z(self) -> float | None:
        """The gain in standard errors (None without a standard error)."""
        if self.stderr is None:
            return None
        if self.stderr == 0:
            return 0.0 if self.gain == 0 else math.copysign(math.inf, self.gain)
        return self.gain / self.stderr

    def record(self) -> dict[str, Any]:
        """JSON-ready, for the results and the gate's properties."""
        return {"null": self.null, "gain": self.gain, "stderr": self.stderr,
                "z": self.z, "basis": self.basis}


def gain(metric: str, direction: str, new: Any, null: Any) -> Gain | str:
    """``new``'s gain over ``null`` on ``metric`` (both ``SaeResults``), paired over the
    units both evaluated with identical inputs; or why there is none."""
    from pytest_saebench.gates.regression import difference, pair

    sign = {"up": 1.0, "down": -1.0}.get(direction)
    if sign is None:
        return f"{metric} has no better direction"
    a, b = new.value(metric), null.value(metric) if null.computed(metric) else None
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b):
        return f"{metric} is undefined for {'the checkpoint' if a is None else 'the random SAE'}"
    if new.stderr(metric) is None:
        return Gain(a, b, sign * (a - b) + 0.0, None, None, "no standard error")
    paired, why = pair(metric, new, null)
    delta, se, df, basis = difference(a, b, new.stderr(metric), null.stderr(metric), paired,
                                      why)
    return Gain(a, b, sign * delta + 0.0, se, df, basis)  # + 0.0: no -0


def check(rule: NullRule, found: Gain | str, context: str, critical_value: float | None = None
          ) -> Outcome:
    """Three-way verdict of ``rule`` on ``found`` (STATISTICS.md §3): the interval of the
    gain wholly above ``min_gain`` passes, wholly below fails, holding it is inconclusive."""
    from pytest_saebench.gates.stats import critical

    mid = rule.metric
    if isinstance(found, str):
        return Outcome("fail", f"{mid}: no gain over a random SAE can be computed: {found} "
                               f"{context}")
    against = f"({fmt(found.value)} vs random {fmt(found.null)}"
    if rule.z and found.stderr is not None:
        c = critical_value or critical(rule.z, found.df)
        half = c * found.stderr
        lo, hi = found.gain - half, found.gain + half
        shown = (f"the gain {fmt(found.gain)} ± {c:.3g} × {found.stderr:.2g} = [{fmt(lo)}, "
                 f"{fmt(hi)}] {against}, {found.basis})")
    else:
        lo = hi = found.gain
        shown = f"the gain {fmt(found.gain)} {against})"
    from pytest_saebench.gates.thresholds import evidence, with_evidence

    found_evidence = (evidence([rule.min_gain - found.gain], found.stderr, c, found.df)
                      if rule.z and found.stderr is not None else None)
    return with_evidence(_verdict(rule, found, lo, hi, shown, context), found_evidence)


def _verdict(rule: NullRule, found: Gain, lo: float, hi: float, shown: str, context: str
             ) -> Outcome:
    mid = rule.metric
    bad = "warn" if rule.severity == "warn" else "fail"
    if hi < rule.min_gain:
        return Outcome(bad, f"{mid} is no better than a random SAE of its shape: {shown} lies "
                            f"below min_gain {rule.min_gain:g} {context}")
    if lo == hi and lo <= rule.min_gain:  # no interval: a gain exactly at the bound is none
        return Outcome(bad, f"{mid} does not beat a random SAE of its shape: {shown} is not "
                            f"above min_gain {rule.min_gain:g} {context}")
    if lo <= rule.min_gain:
        return Outcome("inconclusive", f"{mid}: {shown} holds min_gain {rule.min_gain:g}: "
                                       f"inconclusive at z {rule.z:g} {context}")
    return Outcome("pass", f"{mid} beats a random SAE of its shape: {shown} above min_gain "
                           f"{rule.min_gain:g} {context}")


def critical_for(z: float, df: int | None) -> float:
    """The critical value a gain's interval uses for ``z`` (Student's t with ``df``)."""
    from pytest_saebench.gates.stats import critical

    return critical(z, df)


def signal(found: Gain | str) -> tuple[bool, str]:
    """``(carries signal, the note)``: whether the metric's difference from a random SAE
    of the checkpoint's shape reaches :data:`SIGNAL_Z` at this budget; a metric without a
    standard error cannot be judged and counts as carrying it."""
    from pytest_saebench.gates.stats import critical

    if isinstance(found, str) or found.z is None:
        return True, ""
    c = critical(SIGNAL_Z, found.df)
    if abs(found.z) >= c:
        return True, f"signal against a random SAE: z = {found.z:.1f}"
    return False, (f"no signal against a random SAE at this budget: z = {found.z:.1f} "
                   f"(needs |z| >= {c:.3g}; random {fmt(found.null)}, {found.basis})")
