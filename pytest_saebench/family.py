"""A run's family-wise rule over its gates (STATISTICS.md §7), torch-free.

A run gates m metrics on n checkpoints; each gate with ``z`` fails by chance at its one-sided
level α_i, so the chance that at least one does grows towards ``1 - Π(1 - α_i)``. With
``family = "holm"`` the fails obey Holm's step-down (Holm 1979, "A simple sequentially
rejective multiple test procedure", Scand. J. Statist. 6): the gates' fail tests ordered by
``q_i = p_i / α_i`` (``p_i`` the one-sided p-value of the gate's distance past its bound),
the k-th (from 0) may fail only when it and every gate before it have ``q <= 1 / (m - k)``.
With one z for every gate this is Holm at that level, and the chance of any false fail over
the run is at most α; with several z, at most the largest α among them. A gate that would fail
alone but not after the step-down is inconclusive, and its message says why. Passes and
inconclusive verdicts are unchanged: the rule guards against false fails, which is what a
run of many gates at a tolerance within the noise suffers.

To order the gates it needs every gate's fail test before any verdict: the first gate that
would fail asks each of the run's gate items for its outcome (``probe``: the item computes it
as it would, without reporting), evaluating whatever they read (once per checkpoint, shared
with pytest-xdist's other workers). Under an adaptive budget each gate's level is that of
the look its eval stopped at, and stopping is decided gate by gate as before: the step-down
only ever turns a fail into inconclusive, so it keeps the budgets' guarantees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

KINDS = ("none", "holm")


class Probed(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a gate item asked for its outcome only (carries it)."""

    def __init__(self, outcome: Any):
        super().__init__("probed")
        self.outcome = outcome


@dataclass(frozen=True)
class Step:
    """A gate's place in the step-down: rank from 0, of ``m``, its ``q`` and whether it may
    fail."""

    rank: int
    m: int
    q: float
    may_fail: bool


def holm(evidence: dict[str, tuple[float, int | None, float]]) -> dict[str, Step]:
    """Holm's step-down over ``{gate: (t, df, one-sided level)}``."""
    from pytest_saebench.gates.stats import one_sided_p

    q = {k: one_sided_p(t, df) / level for k, (t, df, level) in evidence.items()
         if level > 0 and math.isfinite(t)}
    order = sorted(q, key=lambda k: (q[k], k))
    m, out, open_ = len(order), {}, True
    for rank, key in enumerate(order):
        open_ = open_ and q[key] <= 1.0 / (m - rank)
        out[key] = Step(rank, m, q[key], open_)
    return out


class Family:
    """The run's gates and, once asked, their step-down (computed on first use)."""

    def __init__(self, kind: str, gates: Callable[[], Iterable[Any]],
                 probe: Callable[[Any], Any]):
        self.kind, self._gates, self._probe = kind, gates, probe
        self._steps: dict[str, Step] | None = None

    def steps(self) -> dict[str, Step]:
        """Every gate's step (probing the gates the first time)."""
        if self._steps is None:
            found = {}
            for item in self._gates():
                outcome = self._probe(item)
                if outcome is not None and outcome.evidence is not None:
                    found[item.nodeid] = outcome.evidence
            self._steps = holm(found)
        return self._steps

    def review(self, nodeid: str, outcome: Any) -> Any:
        """``outcome`` of gate ``nodeid`` after the family's rule: a fail the step-down does
        not allow becomes inconclusive, saying so."""
        from pytest_saebench.gates.thresholds import Outcome

        if self.kind != "holm" or outcome.status != "fail" or outcome.evidence is None:
            return outcome
        step = self.steps().get(nodeid)
        if step is None or step.may_fail:
            return outcome
        return Outcome("inconclusive",
                       f"{outcome.message}; not a fail after Holm's step-down over the run's "
                       f"{step.m} gates with z (rank {step.rank + 1}: p/α = {step.q:.3g} > "
                       f"1/{step.m - step.rank} or a gate before it kept): inconclusive",
                       outcome.evidence)


def chance_of_any_fail(levels: list[float], kind: str) -> float:
    """The chance that at least one of the run's gates fails by chance: ``1 - Π(1 - α_i)``
    (independent gates), or under Holm at most the largest level."""
    if not levels:
        return 0.0
    if kind == "holm":
        return max(levels)
    return 1.0 - math.prod(1.0 - a for a in levels)
