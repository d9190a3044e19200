"""Simulated false-fail rates of every gate form under no change (STATISTICS.md §5), through
the plugin's own decision functions: ``check`` (thresholds), ``compare`` and ``check_metric``
(regression rules), ``threshold_decided`` / ``regression_decided`` / ``decided`` (an adaptive
budget's stopping) and ``threshold_outcome`` at the look it stopped at. Each draw is a table
of 64 groups as core records them (``gates.stats.Units``; a `fast` loss phase has one per
context); its value, standard error and degrees of freedom are what the jackknife over those
groups gives (a mean over groups: the classical standard error, computed here in bulk).
Shared by tests/test_calibration.py and benchmarks/gate_calibration.py (the table in
docs/statistics.md)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from pytest_saebench.gates import budget
from pytest_saebench.gates import stats as S
from pytest_saebench.gates.regression import RegressionRule, compare
from pytest_saebench.gates.thresholds import Threshold, check

GROUPS = 64
FRACTIONS = budget.LOOKS  # core's looks: 8, 16, 32 and 64 of the 64 groups
FIRST_LOOK = round(FRACTIONS[0] * GROUPS)  # where Student's t differs most from the normal
METRIC = "core.reconstruction_quality.explained_variance"


def nominal(z: float) -> float:
    """A fail is one side of the interval: half the two-sided tail of ``z``."""
    return S.two_sided_alpha(z) / 2


def binomial_interval(p: float, n: int, k: float = 4.0) -> tuple[float, float]:
    """``p ± k`` binomial standard errors of a rate over ``n`` draws."""
    half = k * math.sqrt(p * (1 - p) / n)
    return max(0.0, p - half), p + half


def _means(rng: np.random.Generator, draws: int, n: int, sd: float = 1.0):
    """Per draw the mean of ``n`` groups and its standard error (df n - 1)."""
    x = rng.normal(0.0, sd, (draws, n))
    return x.mean(axis=1), x.std(axis=1, ddof=1) / math.sqrt(n)


def threshold_fixed(draws: int, z: float, seed: int = 0, normal: bool = False,
                    groups: int = GROUPS) -> float:
    """A threshold on its bound (``min = 0``, true value 0), ``groups`` groups."""
    t = Threshold(METRIC, min=0.0, z=z)
    value, se = _means(np.random.default_rng(seed), draws, groups)
    df = None if normal else groups - 1
    return float(np.mean([check(t, float(v), None, "", float(s), df).status == "fail"
                          for v, s in zip(value, se, strict=True)]))


def threshold_adaptive(draws: int, z: float, seed: int = 0, spend: bool = True) -> float:
    """The same threshold under an adaptive budget: looks at 8, 16, 32 and 64 groups, stopping at
    the first where ``threshold_decided`` says so, the verdict at that look's critical value
    (``spend=False``: the fixed budget's at every look, the broken boundary)."""
    t = Threshold(METRIC, min=0.0, z=z)
    rng = np.random.default_rng(seed)
    sizes = [round(f * GROUPS) for f in FRACTIONS]
    x = rng.normal(0.0, 1.0, (draws, GROUPS))
    fails = 0
    for row in x:
        for k, n in enumerate(sizes):
            look = budget.Look(k, FRACTIONS)
            v, se = float(row[:n].mean()), float(row[:n].std(ddof=1) / math.sqrt(n))
            if budget.threshold_decided(t, v, se, n - 1, look) or not spend and \
                    check(t, v, None, "", se, n - 1).status != "inconclusive":
                c = look.critical(z, n - 1) if spend else None
                fails += check(t, v, None, "", se, n - 1, c).status == "fail"
                break
    return fails / draws


def paired_rule(draws: int, z: float, seed: int = 0) -> float:
    """``{ max_drop = 0, z }`` on two runs over the same groups (a large shared part, a
    small own part each), through ``compare`` with the paired difference."""
    rule = RegressionRule(METRIC, max_drop=0.0, z=z)
    rng = np.random.default_rng(seed)
    shared = rng.normal(0.0, 10.0, (draws, GROUPS))
    old = shared + rng.normal(0.0, 1.0, (draws, GROUPS))
    new = shared + rng.normal(0.0, 1.0, (draws, GROUPS))
    d = new - old
    delta, se = d.mean(axis=1), d.std(axis=1, ddof=1) / math.sqrt(GROUPS)
    fails = 0
    for i in range(draws):
        diff = S.Difference(float(delta[i]), float(se[i]), GROUPS, GROUPS, GROUPS)
        fails += compare(rule, "up", float(new[i].mean()), float(old[i].mean()),
                         paired=diff).status == "fail"
    return fails / draws


def unpaired_rule(draws: int, z: float, seed: int = 0, normal: bool = False,
                  groups: int = GROUPS) -> float:
    """The same rule on runs that share no units (another seed): ``compare`` with each run's
    standard error and degrees of freedom (Welch-Satterthwaite; ``normal``: none)."""
    rule = RegressionRule(METRIC, max_drop=0.0, z=z)
    rng = np.random.default_rng(seed)
    new, new_se = _means(rng, draws, groups)
    old, old_se = _means(rng, draws, groups)
    dfs = (None, None) if normal else (groups - 1, groups - 1)
    return float(np.mean([compare(rule, "up", float(a), float(b), float(sa), float(sb),
                                  dfs=dfs).status == "fail"
                          for a, b, sa, sb in zip(new, old, new_se, old_se, strict=True)]))


def repeats_threshold(draws: int, z: float, repeats: int, seed: int = 0,
                      normal: bool = False) -> float:
    """A threshold on its bound with ``--saebench-repeats N``: the mean of N seeds' values,
    its standard error of the mean and the degrees of freedom ``SaeResults.dof`` gives a
    combined result (N - 1; ``normal``: none)."""
    from pytest_saebench.evals.base import EvalResult, combine_repeats
    from pytest_saebench.results import SaeResults

    t = Threshold(METRIC, min=0.0, z=z)
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 1.0, (draws, repeats))
    one = EvalResult("core", {}, {METRIC: 0.0})
    res = SaeResults("x", "", "", "fast", {"core": combine_repeats([one] * repeats,
                                                                  list(range(repeats)))})
    df = None if normal else res.dof(METRIC)
    mean, se = values.mean(axis=1), values.std(axis=1, ddof=1) / math.sqrt(repeats)
    return float(np.mean([check(t, float(v), None, "", float(s), df).status == "fail"
                          for v, s in zip(mean, se, strict=True)]))


def _core_results(rows: np.ndarray, keys: tuple[str, ...], formula: S.Formula, n: int,
                  total: int, prints: list[str]):
    """A SaeResults holding one core metric computed from ``rows`` (groups x keys) over its
    first ``n`` groups, as an adaptive look of ``total`` groups records it."""
    from pytest_saebench.evals.base import EvalResult
    from pytest_saebench.results import SaeResults

    units = S.Units("context group", keys, tuple(tuple(float(x) for x in r) for r in rows[:n]),
                    tuple(prints[:n]))
    est = S.jackknife(formula, units)
    res = EvalResult("core", {"seed": 0}, {METRIC: est.value},
                     {METRIC: est.stderr} if est.stderr is not None else {},
                     units={formula.table: units.to_json()},
                     formulas={METRIC: formula.to_json()})
    if n < total:
        k = [round(f * total) for f in FRACTIONS].index(n)
        res.unstructured["looks"] = {"fractions": list(FRACTIONS), "stopped_at": k,
                                     "tokens_used": n, "tokens_cap": total}
    return SaeResults("good", "", "sha", "fast", {"core": res})


def identical_checkpoint_adaptive(draws: int, seed: int = 0, shared_mean: bool = True,
                                  over_windows: bool = True) -> tuple[float, float]:
    """The very checkpoint against its own whole-budget baseline, evaluated adaptively:
    ``(the false-fail rate of a z-less { max_drop = 0 } rule on an explained-variance-like
    formula, the share of draws whose paired Δ at the first look is below 0)``. Each group's
    sums are core's ``err`` and ``ss`` (the sum of squares about the run's mean, from
    4-dimensional activations); the look stops where
    ``decided`` (the stopper's call) says so. ``shared_mean=False``: each run's ``ss`` about
    its own mean (the old bias); ``over_windows=False``: the verdict from the two values, as
    before (the other old bug)."""
    from pytest_saebench.gates.regression import check_metric
    from pytest_saebench.gates.rule_looks import decided

    rng = np.random.default_rng(seed)
    rule = RegressionRule(METRIC, max_drop=0.0)
    formula = S.Formula("variance", {"err": 1.0}, {"ss": 1.0}, 1.0, -1.0,
                        shared=("ss",) if shared_mean else ())
    sizes = [round(f * GROUPS) for f in FRACTIONS]
    fails, below = 0, 0
    for _ in range(draws):
        x = rng.normal(0.0, 1.0, (GROUPS, 8, 4)) + rng.normal(0.0, 0.5, 4)
        err = (x ** 2).sum(axis=2) * 0.05 * rng.uniform(0.5, 1.5, (GROUPS, 8))
        prints = [f"g{i}-{rng.integers(1 << 30)}" for i in range(GROUPS)]

        def rows(n: int, x=x, err=err) -> np.ndarray:
            mu = x[:n].reshape(-1, 4).mean(axis=0)
            ss = ((x - mu) ** 2).sum(axis=(1, 2))
            return np.stack([err.sum(axis=1), ss], axis=1)

        base = _core_results(rows(GROUPS), ("err", "ss"), formula, GROUPS, GROUPS, prints)
        first = _core_results(rows(sizes[0]), ("err", "ss"), formula, sizes[0], GROUPS, prints)
        found = S.paired_difference(formula, first.units(METRIC)[1], base.units(METRIC)[1])
        below += found.delta < -1e-12
        for k, n in enumerate(sizes):
            new = _core_results(rows(n), ("err", "ss"), formula, n, GROUPS, prints)
            look = budget.Look(k, FRACTIONS)
            if decided(rule, "up", new, base, look):
                break
        if over_windows:
            out = check_metric(rule, "up", new, base, "b", "")
        else:
            out = compare(rule, "up", new.value(METRIC), base.value(METRIC))
        fails += out.status == "fail"
    return fails / draws, below / draws


def no_stderr_adaptive(draws: int, seed: int = 0, monotone: bool = True) -> float:
    """A metric without a standard error that never rises as the budget grows (the fraction
    of dead latents: a latent seen once is alive), the very checkpoint against its whole-
    budget baseline under ``{ max_drop = 0 }``; the stopper's ``decided`` with the metric's
    monotone direction (``monotone=False``: the old rule, decided at the first look)."""
    from pytest_saebench.evals.base import EvalResult
    from pytest_saebench.gates.regression import check_metric
    from pytest_saebench.gates.rule_looks import decided
    from pytest_saebench.results import SaeResults

    frac = "core.misc_metrics.frac_dead"
    rule = RegressionRule(frac, max_drop=0.0)
    rng = np.random.default_rng(seed)
    sizes = [round(f * GROUPS) for f in FRACTIONS]
    fails = 0

    def results(value: float, k: int | None) -> SaeResults:
        res = EvalResult("core", {"seed": 0}, {frac: value})
        if k is not None:
            res.unstructured["looks"] = {"fractions": list(FRACTIONS), "stopped_at": k,
                                         "tokens_used": sizes[k], "tokens_cap": GROUPS}
        return SaeResults("good", "", "sha", "fast", {"core": res})

    for _ in range(draws):
        first_seen = rng.exponential(GROUPS / 2, 256)  # the group a latent first fires in
        dead = [float(np.mean(first_seen > n)) for n in sizes]
        base = results(dead[-1], None)
        for k in range(len(sizes)):
            new = results(dead[k], k)
            if decided(rule, "down", new, base, budget.Look(k, FRACTIONS),
                       "down" if monotone else ""):
                break
            if not monotone:
                break
        fails += check_metric(rule, "down", new, base, "b", "").status == "fail"
    return fails / draws


GATE_FORMS: dict[str, Callable[..., float]] = {
    "threshold, fixed budget": threshold_fixed,
    "threshold, adaptive budget (3 looks)": threshold_adaptive,
    "regression rule, paired": paired_rule,
    "regression rule, unpaired": unpaired_rule,
    "threshold, --saebench-repeats 3": lambda d, z, seed=0: repeats_threshold(d, z, 3, seed),
    "threshold, --saebench-repeats 5": lambda d, z, seed=0: repeats_threshold(d, z, 5, seed),
}


def rule_z(rule: RegressionRule, z: float) -> RegressionRule:
    """``rule`` with confidence ``z``."""
    return replace(rule, z=z)


def family_of_gates(draws: int, gates: int, z: float, kind: str, seed: int = 0) -> float:
    """The chance that any of ``gates`` independent gates on their bounds fails in a run
    (:data:`GROUPS` groups each, Student's t), with the run's family-wise rule ``kind``
    applied through ``family.Family.review`` (the items' call)."""
    from pytest_saebench.family import Family

    t = Threshold(METRIC, min=0.0, z=z)
    rng = np.random.default_rng(seed)
    any_fail = 0
    for _ in range(draws):
        value, se = _means(rng, gates, GROUPS)
        outcomes = {f"g{i}": check(t, float(v), None, "", float(s), GROUPS - 1)
                    for i, (v, s) in enumerate(zip(value, se, strict=True))}

        class Gate:
            def __init__(self, nodeid):
                self.nodeid = nodeid

        family = Family(kind, lambda o=outcomes: [Gate(k) for k in o],
                        lambda g, o=outcomes: o[g.nodeid])
        any_fail += any(family.review(k, o).status == "fail" for k, o in outcomes.items())
    return any_fail / draws


class _Look:
    """A look's results as the stopper reads them: one metric's value, stderr and df."""

    def __init__(self, value: float, stderr: float, df: int) -> None:
        self._v, self._se, self._df = value, stderr, df

    def computed(self, metric: str) -> bool:
        return metric == METRIC

    def value(self, metric: str) -> float:
        return self._v

    def stderr(self, metric: str) -> float:
        return self._se

    def dof(self, metric: str) -> int:
        return self._df


def futility_run(draws: int, z: float, inside: float = 0.0, seed: int = 0,
                 level: float = budget.FUTILITY) -> dict[str, float]:
    """A threshold ``min = 0`` with ``z`` under an adaptive budget, its true value ``inside``
    whole-budget standard errors above the bound, through the stopping path core's stopper
    takes (``adaptive.pending_gates`` then ``budget.stop_now``) and the verdict at the look
    it stopped at (``check`` at that look's critical value, as ``threshold_outcome``);
    ``level = 0`` turns futility off. Rates of fail, pass, inconclusive, of the
    inconclusive verdicts the futility stop gave, and the mean share of the budget used."""
    from pytest_saebench.adaptive import pending_gates

    t = Threshold(METRIC, min=0.0, z=z)
    rng = np.random.default_rng(seed)
    sizes = [round(f * GROUPS) for f in FRACTIONS]
    x = rng.normal(inside / math.sqrt(GROUPS), 1.0, (draws, GROUPS))
    counts = {"fail": 0, "pass": 0, "inconclusive": 0, "futile": 0}
    used = 0.0
    for row in x:
        for k, n in enumerate(sizes):
            look = budget.Look(k, FRACTIONS)
            v, se = float(row[:n].mean()), float(row[:n].std(ddof=1) / math.sqrt(n))
            pending = pending_gates([t], [], _Look(v, se, n - 1), None, look, {})
            stop, futile = budget.stop_now(pending, look, level)
            if look.last or stop:
                counts[check(t, v, None, "", se, n - 1, look.critical(z, n - 1)).status] += 1
                counts["futile"] += bool(futile)
                used += n / GROUPS
                break
    return {**{k: c / draws for k, c in counts.items()}, "used": used / draws}
