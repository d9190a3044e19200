"""The gate statistics (pytest_saebench/gates/stats.py) against independent computations and
against simulations with known truth (STATISTICS.md §5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pytest_saebench.gates import stats as S

MEAN = S.Formula("t", {"v": 1.0}, {"n": 1.0})
SCORE = S.Formula("t", {"abl": 1.0, "sae": -1.0}, {"abl": 1.0, "clean": -1.0})  # CE-score form


def _units(rows: list[dict[str, float]], prints: list[str] | None = None) -> S.Units:
    keys = tuple(rows[0])
    return S.Units("group", keys, tuple(tuple(r[k] for k in keys) for r in rows),
                   tuple(prints or [f"g{i}" for i in range(len(rows))]))


@given(st.lists(st.floats(-50, 50), min_size=3, max_size=40))
def test_jackknife_of_a_mean_is_the_classical_standard_error(values):
    est = S.jackknife(MEAN, _units([{"v": v, "n": 1.0} for v in values]))
    assert est.value == pytest.approx(float(np.mean(values)), abs=1e-9)
    assert est.stderr == pytest.approx(float(np.std(values, ddof=1) / math.sqrt(len(values))),
                                       abs=1e-9)
    assert est.df == len(values) - 1


@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-1, 1)), min_size=3, max_size=40))
@example([(1.0, 0.0), (1.0, 0.0), (1.0, 0.0)])  # no change at all: zero difference, zero se
def test_paired_difference_of_means_is_the_se_of_the_mean_difference(pairs):
    a = [x for x, _ in pairs]
    b = [x + d for x, d in pairs]
    diff = S.paired_difference(MEAN, _units([{"v": v, "n": 1.0} for v in b]),
                               _units([{"v": v, "n": 1.0} for v in a]))
    d = np.array(b) - np.array(a)
    assert diff.delta == pytest.approx(float(d.mean()), abs=1e-9)
    assert diff.stderr == pytest.approx(float(d.std(ddof=1) / math.sqrt(len(d))), abs=1e-9)
    assert diff.n_paired == len(pairs)


def _loo_ratio_difference(new: np.ndarray, old: np.ndarray) -> tuple[float, float]:
    """Leave-one-group-out of (abl - sae) / (abl - clean), written out with numpy."""
    def score(m):
        return (m[:, 0].sum() - m[:, 1].sum()) / (m[:, 0].sum() - m[:, 2].sum())

    g = len(new)
    loo = np.array([score(np.delete(new, i, 0)) - score(np.delete(old, i, 0)) for i in range(g)])
    return score(new) - score(old), math.sqrt((g - 1) / g * ((loo - loo.mean()) ** 2).sum())


def test_paired_ratio_difference_matches_an_independent_leave_one_out():
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 1, (20, 1))  # window difficulty: shared by both runs
    clean = 100 + 5 * shared[:, 0] + rng.normal(0, 1, 20)
    abl = clean + 300 + rng.normal(0, 3, 20)
    sae_old = clean + 10 + 2 * shared[:, 0] + rng.normal(0, 0.5, 20)
    sae_new = sae_old + 0.8 + rng.normal(0, 0.1, 20)
    old = np.stack([abl, sae_old, clean], 1)
    new = np.stack([abl, sae_new, clean], 1)
    rows = lambda m: [{"abl": r[0], "sae": r[1], "clean": r[2]} for r in m]  # noqa: E731
    diff = S.paired_difference(SCORE, _units(rows(new)), _units(rows(old)))
    delta, se = _loo_ratio_difference(new, old)
    assert diff.delta == pytest.approx(delta, rel=1e-12)
    assert diff.stderr == pytest.approx(se, rel=1e-9)
    # treated as independent runs the margin is many times wider: the shared noise cancels
    unpaired = math.hypot(S.jackknife(SCORE, _units(rows(new))).stderr,
                          S.jackknife(SCORE, _units(rows(old))).stderr)
    assert unpaired > 5 * diff.stderr


def test_only_units_with_equal_fingerprints_pair():
    new = _units([{"v": float(i), "n": 1.0} for i in range(8)], [f"w{i}" for i in range(8)])
    old = _units([{"v": float(i), "n": 1.0} for i in range(4)], [f"w{i}" for i in range(4)])
    diff = S.paired_difference(MEAN, new, old)  # a longer run against a shorter one: a prefix
    assert (diff.n_paired, diff.n_new, diff.n_old, diff.delta) == (4, 8, 4, 0.0)
    other = _units([{"v": 1.0, "n": 1.0}] * 4, [f"x{i}" for i in range(4)])
    assert S.paired_difference(MEAN, new, other) is None  # another seed: nothing pairs
    assert S.Units.from_json(new.to_json()) == new


def test_critical_values_are_students_t_at_the_tail_of_z():
    scipy_stats = pytest.importorskip("scipy.stats")
    for z in (1.0, 2.0, 3.0, 4.0):
        alpha = S.two_sided_alpha(z)
        assert alpha == pytest.approx(2 * scipy_stats.norm.sf(z), rel=1e-12)
        assert S.critical(z) == pytest.approx(z, rel=1e-9)
        for df in (1, 3, 9, 19, 79):
            assert S.critical(z, df) == pytest.approx(scipy_stats.t.isf(alpha / 2, df), rel=1e-8)


def test_pocock_spends_more_early_than_obrien_fleming():
    pocock = S.Looks.spending(3.0, (0.25, 0.5, 1.0), "pocock")
    obf = S.Looks.spending(3.0, (0.25, 0.5, 1.0), "obrien-fleming")
    assert math.fsum(pocock.alphas) == pytest.approx(math.fsum(obf.alphas), rel=1e-9)
    assert pocock.critical(0, 19) < obf.critical(0, 19)
    assert pocock.critical(2, 79) > obf.critical(2, 79)  # and pays for it at the last look


def _simulate(rng, n_groups: int, true_drop: float, z: float, fractions, reps: int,
              kind: str = "pocock"):
    """Paired runs over shared windows: per group a shared difficulty (large), the baseline's
    own noise and the new run's (small); the metric is a mean over groups. Returns the
    verdict counts of a ``{ max_drop = 0, z }`` rule, looking at growing prefixes and stopping
    at the first decided look."""
    looks = S.Looks.spending(z, fractions, kind)
    sizes = [max(2, round(f * n_groups)) for f in fractions]
    crit = [looks.critical(k, size - 1) for k, size in enumerate(sizes)]
    counts = {"pass": 0, "fail": 0, "inconclusive": 0}
    for _ in range(reps):
        shared = rng.normal(0, 10, n_groups)
        old = shared + rng.normal(0, 1, n_groups)
        new = shared + rng.normal(0, 1, n_groups) - true_drop
        status = "inconclusive"
        for k, size in enumerate(sizes):
            d = new[:size] - old[:size]  # the paired difference of the means, and its se
            se = d.std(ddof=1) / math.sqrt(size)
            status = S.verdict(-d.mean(), se, 0.0, crit[k])
            if status != "inconclusive":
                break
        counts[status] += 1
    return counts


def test_the_inconclusive_rate_falls_as_the_budget_grows():
    rates = []
    for n_groups in (10, 20, 40, 80):
        counts = _simulate(np.random.default_rng(1), n_groups, 0.6, 3.0, (1.0,), 2000)
        rates.append(counts["inconclusive"] / 2000)
    assert rates == sorted(rates, reverse=True) and rates[-1] < 0.5 * rates[0], rates


def test_without_z_the_point_decides_and_bounds_are_inclusive():
    assert S.verdict(0.2, 0.01, 0.1, None) == "fail"
    assert S.verdict(0.1, 0.01, 0.1, None) == "pass"
