"""Budgets that stop when every gate is decided (STATISTICS.md §4), torch-free.

With ``budget = "adaptive"`` an eval's budget is a cap, evaluated in looks at growing
prefixes of the same units (``LOOKS`` of it). Looking several times and stopping at the first
decision would inflate the false-verdict rate at a fixed critical value, so each look uses a
stricter one: Lan-DeMets Pocock-type alpha spending (Lan and DeMets 1983, "Discrete
sequential boundaries for clinical trials", Biometrika 70(3)), each look's increment of the
spent tail taken as its own two-sided level, which bounds the chance of any false verdict over
all looks by the tail of ``z`` (a union bound, conservative). A gate without a ``z`` of its
own is decided for stopping at ``DEFAULT_STOP_Z``; its verdict is then its value's, as ever
(a regression rule's over the windows both runs evaluated). That stopping rule does not make
a value near its bound flip less often than at a fixed budget (an audit simulated 0.5008
against 0.5013 at the bound): it only keeps the budget from stopping within noise of it.

A gate whose true value sits on its bound is inconclusive at every look, so it would hold the
whole budget; stopping for futility (STATISTICS.md §8) ends the looks early when every gate
still open has a conditional power below :data:`FUTILITY` of being decided by the whole
budget, and reports those gates inconclusive. It never yields a pass or a fail, so it leaves
the error rates above as they are (non-binding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pytest_saebench.gates.stats import Looks, verdict
from pytest_saebench.gates.thresholds import Outcome, Threshold, check

# Target fractions; an eval snaps them to its own unit boundaries. The first is early because
# a clear gate is decided on few units, and Pocock spending gives an extra early look almost
# for free (the last look's critical value depends only on the spending after 1/2).
LOOKS = (0.125, 0.25, 0.5, 1.0)
SPENDING = "pocock"
DEFAULT_STOP_Z = 2.0


@dataclass(frozen=True)
class Look:
    """Where an adaptive evaluation is: look ``index`` of the information ``fractions`` it
    takes (the last is 1, the whole budget)."""

    index: int
    fractions: tuple[float, ...]

    @property
    def last(self) -> bool:
        """True at the whole budget: everything is decided there, as at a fixed budget."""
        return self.index == len(self.fractions) - 1

    def critical(self, z: float, df: int | None) -> float:
        """This look's critical value for a gate with confidence ``z``."""
        return Looks.spending(z, self.fractions, SPENDING).critical(self.index, df)


def snap(n: int, bounds: Sequence[int], batch: int, fraction: float) -> int:
    """How many units a look at ``fraction`` covers: the smallest group boundary (``bounds``,
    the whole budget's) at or past it that is also a batch boundary, so that the look holds
    whole groups (they pair with a fixed run's) computed in the fixed run's batches (the same
    numbers); ``n`` when there is none."""
    return next((b for b in bounds if b > 0 and b >= fraction * n
                 and (b % batch == 0 or b == n)), n)


def look_of(unstructured: dict[str, Any]) -> Look | None:
    """The look an eval's results stopped at (``unstructured["looks"]``), or None for a
    fixed budget."""
    looks = (unstructured or {}).get("looks")
    if not looks:
        return None
    return Look(int(looks["stopped_at"]), tuple(float(f) for f in looks["fractions"]))


def threshold_outcome(t: Threshold, res: Any, context: str) -> Outcome:
    """Threshold ``t`` checked on results ``res`` (value, stderr, dof, reason, evals), at the
    critical value of the look its eval stopped at (the fixed budget's for a whole budget)."""
    unstructured = res.evals[t.metric.split(".", 1)[0]].unstructured
    look, df = look_of(unstructured), res.dof(t.metric)
    out = check(t, res.value(t.metric), res.reason(t.metric), context, res.stderr(t.metric),
                df, look.critical(t.z, df) if look is not None and t.z else None)
    return futility_note(out, unstructured, gate_key(t))


def threshold_decided(t: Threshold, value: float | None, stderr: float | None,
                      df: int | None, look: Look, monotone: str = "") -> bool:
    """Whether threshold ``t`` has its verdict at ``look``. An undefined value, or one known
    exactly (standard error 0), is decided. One without a standard error is decided only
    where more data cannot change the verdict: a metric that never rises as the budget grows
    (``monotone = "down"``, e.g. the fraction of dead latents) below its max or already below
    its min, and the mirror for ``"up"``."""
    if look.last or value is None or not math.isfinite(value) or stderr == 0:
        return True
    if stderr is None:
        lo_ok = t.min is None or (value < t.min if monotone == "down" else
                                  value >= t.min if monotone == "up" else False)
        hi_ok = t.max is None or (value <= t.max if monotone == "down" else
                                  value > t.max if monotone == "up" else False)
        return lo_ok and hi_ok
    c = look.critical(t.z or DEFAULT_STOP_Z, df)
    sides = [b - value for b in (t.min,) if b is not None] + \
            [value - b for b in (t.max,) if b is not None]
    return all(verdict(bad, stderr, 0.0, c) != "inconclusive" for bad in sides)


def regression_decided(limits: Sequence[tuple[float, float]], se: float | None,
                       df: int | None, z: float, look: Look, worsens: str = "") -> bool:
    """Whether a regression rule with ``limits`` (how far it moved the wrong way, the
    allowance) has its verdict at ``look``. A metric known exactly (standard error 0) is
    decided; one without a standard error only where more data cannot change the verdict:
    ``worsens = "less"`` (its distance past the tolerance only falls as the budget grows, e.g.
    the fraction of dead latents) once it is within every allowance, ``"more"`` once it is
    beyond one; otherwise at the whole budget."""
    if look.last or se == 0:
        return True
    if se is None:
        within = all(bad <= allow for bad, allow in limits)
        return within if worsens == "less" else (not within if worsens == "more" else False)
    c = look.critical(z or DEFAULT_STOP_Z, df)
    return all(verdict(bad, se, allow, c) != "inconclusive" for bad, allow in limits)


def budget_used(unstructured: dict[str, Any]) -> float:
    """The share of its budget an eval evaluated (1 for a fixed budget or the last look)."""
    looks = (unstructured or {}).get("looks")
    if not looks or not looks.get("tokens_cap"):
        return 1.0
    return float(looks["tokens_used"]) / float(looks["tokens_cap"])


# -- stopping for futility (STATISTICS.md §8) -----------------------------------------------

FUTILITY = 0.10  # stop when every undecided gate would be decided with less than this
# ... at looks from this share of the budget on: at 1/8 the current estimate is too noisy to
# judge by (it gave up 19 % of gates 4.5 standard errors inside their bound against 10 %
# from 1/4, and saved little: a gate on its bound then uses 0.34 of the budget, not 0.25).
FUTILITY_FROM = 0.25


def conditional_power(bad: float, allow: float, se: float, fraction: float,
                      c_whole: float) -> float:
    """The chance that the whole budget decides a gate that is ``bad`` past its bound with
    ``allow`` allowed, from a look at information ``fraction`` with standard error ``se``,
    under the current estimate (STATISTICS.md §8): the whole budget's standard error is
    about ``se·sqrt(fraction)``, and its estimate lies about the current one with the spread
    of the windows still to come, ``sqrt(1 - fraction)`` of it."""
    se_whole = se * math.sqrt(fraction)
    spread = math.sqrt(max(1.0 - fraction, 0.0)) * se_whole
    margin = abs(bad - allow) - c_whole * se_whole
    if spread <= 0:
        return 1.0 if margin > 0 else 0.0
    return 0.5 * math.erfc(-margin / spread / math.sqrt(2.0))


def _whole(look: Look, z: float, df: int | None) -> float:
    """The last look's critical value, its degrees of freedom scaled up from this look's."""
    frac = look.fractions[look.index]
    whole_df = None if df is None else max(1, round((df + 1) / frac) - 1)
    return Look(len(look.fractions) - 1, look.fractions).critical(z, whole_df)


def power(sides: Sequence[tuple[float, float]], se: float | None, df: int | None, z: float,
          look: Look) -> float | None:
    """Conditional power that the whole budget decides a gate with ``z`` whose ``sides``
    (how far past each bound, the allowance) are not all decided at ``look``: the smallest
    over its undecided sides. None where futility does not apply: no ``z`` (the value
    decides, never inconclusive), no standard error, or the last look."""
    if not z or look.last or not se or not math.isfinite(se):
        return None
    c_look, c_whole = look.critical(z, df), _whole(look, z, df)
    frac = look.fractions[look.index]
    open_sides = [(bad, allow) for bad, allow in sides
                  if verdict(bad, se, allow, c_look) == "inconclusive"]
    if not open_sides:
        return 1.0
    return min(conditional_power(bad, allow, se, frac, c_whole) for bad, allow in open_sides)


def threshold_power(t: Threshold, value: float | None, stderr: float | None,
                    df: int | None, look: Look) -> float | None:
    """:func:`power` of threshold ``t`` at ``value``."""
    if value is None or not math.isfinite(value):
        return None
    sides = [(b - value, 0.0) for b in (t.min,) if b is not None] + \
            [(value - b, 0.0) for b in (t.max,) if b is not None]
    return power(sides, stderr, df, t.z, look)


def gate_key(gate: Any) -> str:
    """How an eval's ``looks["futility"]`` names a gate: a threshold by its metric and
    bounds, a regression rule by its metric."""
    if isinstance(gate, Threshold):
        return f"threshold {gate.metric} {gate.limit_text()}"
    return f"regression {gate.metric}"


def stop_now(pending: Sequence[tuple[str, float | None]], look: Look,
             level: float = FUTILITY) -> tuple[bool, dict[str, float]]:
    """Whether an adaptive eval stops at ``look``, given its gates not yet decided there
    (``(gate, conditional power or None)``), and the gates it stops on for futility: none
    pending; or, before the last look and from :data:`FUTILITY_FROM` of the budget on, every
    pending gate with ``z`` and a conditional power below ``level`` (:data:`FUTILITY`; 0
    turns the rule off). Non-binding: such a gate is reported inconclusive, so the error
    rates of the fail and pass verdicts are those without the rule."""
    if not pending:
        return True, {}
    if look.last:
        return True, {}
    if look.fractions[look.index] < FUTILITY_FROM:
        return False, {}
    if all(p is not None and p < level for _, p in pending):
        return True, {key: float(p) for key, p in pending}
    return False, {}


def futility_note(outcome: Outcome, unstructured: dict[str, Any], gate: str) -> Outcome:
    """``outcome`` with the futility stop said in its message, where its eval stopped for
    futility on ``gate`` (``unstructured["looks"]["futility"]``) and it is inconclusive."""
    looks = (unstructured or {}).get("looks") or {}
    found = (looks.get("futility") or {}).get(gate)
    if found is None or outcome.status != "inconclusive":
        return outcome
    k, n = int(looks["stopped_at"]) + 1, len(looks["fractions"])
    return replace(outcome, message=f"{outcome.message}; inconclusive at look {k} of {n}: the "
                                    f"whole budget would decide it with probability "
                                    f"{found:.2f} (stopped for futility, below "
                                    f"{FUTILITY:g})")
