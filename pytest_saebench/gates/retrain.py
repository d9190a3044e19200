"""A retrain against main's replicate runs (STATISTICS.md §6), torch-free, plain numbers.

A retrained checkpoint is another draw of the training: between two runs of one configuration
the metrics move by the run-to-run variance (seed, data order, float sums), on top of the
evaluation noise the paired statistics cover. Its regression verdict compares the mean of
this run's replicates (usually one) with the mean of main's at the same position, with

    se² = σ²_run (1/R + 1/R') + mean(v)/R + mean(v')/R'

``v`` each replicate's evaluation variance (its squared standard error), ``σ²_run`` the
between-run variance by the method of moments of a random-effects model (DerSimonian and
Laird 1986), ``max(0, s² − mean(v))`` with ``s²`` the replicates' sample variance (pooled over
both sides where each has several), and Student's t at the ``R + R' − 2`` degrees of freedom
of that estimate. Satterthwaite's degrees of freedom, which STATISTICS.md names, are larger
exactly when ``s²`` falls below ``mean(v)`` by chance and the estimate is clipped:
simulated through this module (benchmarks/retrain_calibration.py, docs/statistics.md) they let
up to 3.5x the nominal rate of unchanged retrains fail at z = 2 and 38x at z = 3 (R = 2); the
estimate's own degrees of freedom keep every case at or under it. A user's ``run_sd`` is a
known ``σ_run``: then only the evaluation variances are estimated (Satterthwaite over them).
With one run on each side and neither, the noise that decides is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_saebench.gates.thresholds import Outcome

BETWEEN, GIVEN, UNKNOWN, EVALUATION = "between runs", "given", "unknown", "evaluation"
# A retrain's value is one draw of the training: a rule without z would let the point decide,
# so a reseed would fail it about as often as the tolerance sits within the run-to-run noise.
# Such a rule is judged on the interval at this z instead (said in its message).
RETRAIN_Z = 2.0


@dataclass(frozen=True)
class Replicate:
    """One training run's value of a metric at a position, with its evaluation standard
    error and that error's degrees of freedom (None: unknown, read as many)."""

    value: float
    stderr: float | None = None
    df: int | None = None


@dataclass(frozen=True)
class RetrainDifference:
    """``mean(new) - mean(main)`` with the standard error a retrain is judged by, or none
    (``noise == "unknown"``): ``run_sd`` is the between-run standard deviation used."""

    delta: float
    stderr: float | None
    df: int | None
    main_mean: float
    new_mean: float
    n_main: int
    n_new: int
    run_sd: float | None
    noise: str
    why: str


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def _ss(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return math.fsum((x - m) ** 2 for x in xs)


def between_runs(main: Sequence[Replicate], new: Sequence[Replicate] = ()
                 ) -> tuple[float, int] | None:
    """``(σ²_run, its degrees of freedom)`` from the replicates of both sides (each side
    about its own mean), or None with fewer than two runs on every side."""
    df = max(0, len(main) - 1) + max(0, len(new) - 1)
    if df < 1:
        return None
    ss = (_ss([r.value for r in main]) if len(main) > 1 else 0.0) + \
        (_ss([r.value for r in new]) if len(new) > 1 else 0.0)
    eval_var = _mean([(r.stderr or 0.0) ** 2 for r in [*main, *new]])
    return max(0.0, ss / df - eval_var), df


def retrain_difference(new: Sequence[Replicate], main: Sequence[Replicate],
                       run_sd: float | None = None) -> RetrainDifference:
    """The difference of a retrain's replicates from main's and its standard error
    (module docstring); ``run_sd``: a known between-run standard deviation."""
    if not new or not main:
        raise ValueError("a retrain is compared with at least one run on each side")
    r_main, r_new = len(main), len(new)
    m_new, m_main = _mean([r.value for r in new]), _mean([r.value for r in main])
    delta = m_new - m_main
    v_main = _mean([(r.stderr or 0.0) ** 2 for r in main])
    v_new = _mean([(r.stderr or 0.0) ** 2 for r in new])
    eval_terms = [(v_main / r_main, _df_sum(main)), (v_new / r_new, _df_sum(new))]
    inv = 1 / r_main + 1 / r_new
    if run_sd is not None:
        se2 = run_sd ** 2 * inv + sum(t for t, _ in eval_terms)
        return RetrainDifference(delta, math.sqrt(se2), _satterthwaite(se2, eval_terms),
                                 m_main, m_new, r_main, r_new, run_sd, GIVEN,
                                 f"run_sd {run_sd:g} given on the rule")
    found = between_runs(main, new)
    if found is None:
        return RetrainDifference(delta, None, None, m_main, m_new, r_main, r_new, None,
                                 UNKNOWN, "one run on each side cannot estimate the "
                                          "run-to-run noise")
    sigma2, df = found
    se2 = sigma2 * inv + sum(t for t, _ in eval_terms)
    sides = f"{r_main} run(s) on main" + (f" and {r_new} here" if r_new > 1 else "")
    return RetrainDifference(delta, math.sqrt(se2), df, m_main, m_new, r_main, r_new,
                             math.sqrt(sigma2), BETWEEN,
                             f"estimated from {sides}, {df} degree(s) of freedom")


def _df_sum(reps: Sequence[Replicate]) -> float:
    """Degrees of freedom of the mean of the replicates' evaluation variances."""
    return sum(r.df if r.df else math.inf for r in reps)


def _satterthwaite(total: float, terms: Sequence[tuple[float, float]]) -> int | None:
    """Welch-Satterthwaite degrees of freedom of ``total`` = the sum of ``terms`` (each a
    variance estimate with its degrees of freedom; the rest of ``total`` known exactly)."""
    den = math.fsum(t * t / df for t, df in terms if t > 0 and math.isfinite(df))
    if den <= 0 or total <= 0:
        return None
    return max(1, math.floor(total * total / den))


def compare_retrain(rule: Any, direction: str, diff: RetrainDifference, main_text: str,
                    context: str, look: Any = None) -> Outcome:
    """The verdict of regression ``rule`` (gates.regression.RegressionRule) on a retrain:
    ``diff`` from main's replicates, ``main_text`` naming them (``main's 3 runs at 33,280
    tokens``): the interval of ``diff``, three ways, at the rule's ``z`` (:data:`RETRAIN_Z`
    for a rule without one); a noise that is unknown gives ``inconclusive``, never a fail."""
    from dataclasses import replace

    from pytest_saebench.gates.regression import decide
    from pytest_saebench.gates.stats import critical
    from pytest_saebench.gates.thresholds import Outcome, fmt

    this = "this run" if diff.n_new == 1 else f"this run's {diff.n_new} replicates"
    if not rule.z:
        context = f"(the rule has no z: a retrain is judged at z {RETRAIN_Z:g}) {context}"
        rule = replace(rule, z=RETRAIN_Z)
    between = ""
    if diff.noise == BETWEEN and diff.run_sd:
        between = f" ± {diff.run_sd:.2g} between runs"
    elif diff.noise == BETWEEN:
        between = ", runs no further apart than their evaluation noise"
    if diff.stderr is None:
        return Outcome("inconclusive",
                       f"{rule.metric} ({this} {fmt(diff.new_mean)} vs {main_text}: "
                       f"{fmt(diff.main_mean)}, Δ {diff.delta:+.4g}): the run-to-run noise is "
                       f"unknown ({diff.why}): inconclusive at z {rule.z:g}; record replicate "
                       "runs of main (train R seeds into runs/<seed>/ and gate --sae-path "
                       f"runs/ with --saebench-update-baseline) or give run_sd on the rule "
                       f"{context}")
    c = look.critical(rule.z, diff.df) if look is not None else critical(rule.z, diff.df)
    moved = (f"({this} {fmt(diff.new_mean)} vs {main_text}: {fmt(diff.main_mean)}{between}; "
             f"Δ {diff.delta:+.4g} ± {diff.stderr:.2g}, run-to-run noise {diff.why})")
    return decide(rule, direction, diff.delta, diff.stderr, c, diff.main_mean, moved, context,
                  diff.df)


def check_retrain(rule: Any, direction: str, mine: Sequence[Any], main: Sequence[Replicate],
                  main_entry: Any, main_text: str, context: str) -> tuple[Outcome, Any]:
    """``(outcome, difference or None)`` of regression ``rule`` on a retrain: ``mine`` this
    run's replicates at the position (results objects: ``value``, ``stderr``, ``dof``,
    ``evals``; the gated checkpoint first), ``main`` main's replicates of the metric there;
    ``skip`` when main has no value or the eval ran with another config than
    ``main_entry``'s."""
    from pytest_saebench.gates.budget import look_of
    from pytest_saebench.gates.regression import config_differences
    from pytest_saebench.gates.thresholds import Outcome

    metric, eval_type = rule.metric, rule.metric.split(".", 1)[0]
    if not main:
        return Outcome("skip", f"{metric}: {main_text} have no value for it {context}"), None
    if eval_type in main_entry.evals:
        diffs = config_differences(mine[0].evals[eval_type].config,
                                   main_entry.evals[eval_type].config)
        if diffs:
            return Outcome("skip", f"{metric} not compared: the {eval_type} eval config differs "
                                   f"from {main_text} in {', '.join(diffs)} {context}"), None
    new = [Replicate(float(v), r.stderr(metric), r.dof(metric)) for r in mine
           if (v := r.value(metric)) is not None and math.isfinite(v)]
    if not new:
        return Outcome("fail", f"{metric} is undefined now but {main_text} have "
                               f"{_mean([r.value for r in main]):.4g} {context}"), None
    diff = retrain_difference(new, main, rule.run_sd)
    look = look_of(mine[0].evals[eval_type].unstructured)
    return compare_retrain(rule, direction, diff, main_text, context, look), diff
