"""Every gate form's false-fail rate under no change, through the plugin's own decision
functions (tests/calibration.py), lies within a binomial interval of its nominal level from
both sides, and a deliberately broken boundary (the normal instead of Student's t, no alpha
spending over the looks, the old pairings) takes it out: a rule that always said
"inconclusive" would fail the lower side, one that ignored the noise the upper."""

from __future__ import annotations

import pytest

from tests import calibration as C


def _within(rate: float, z: float, draws: int) -> bool:
    lo, hi = C.binomial_interval(C.nominal(z), draws)
    return lo <= rate <= hi


def _above(rate: float, z: float, draws: int) -> bool:
    return rate > C.binomial_interval(C.nominal(z), draws)[1]


def _conservative(rate: float, z: float, draws: int) -> bool:
    """At most the nominal rate, and not far below it: the union bound over the looks errs
    on the safe side (measured 0.019 against 0.023 at z = 2), a rule that always said
    "inconclusive" (0) does not pass."""
    return 0.7 * C.nominal(z) <= rate <= C.binomial_interval(C.nominal(z), draws)[1]


@pytest.mark.parametrize("groups", [C.GROUPS, C.FIRST_LOOK])
def test_a_threshold_at_a_fixed_budget_and_students_t(groups):
    assert _within(C.threshold_fixed(40_000, 2.0, groups=groups), 2.0, 40_000)


def test_the_normal_quantile_on_few_groups_fails_too_often():
    # at 64 groups t and the normal nearly agree; at a first look's 8 they do not
    assert _above(C.threshold_fixed(40_000, 2.0, normal=True, groups=C.FIRST_LOOK), 2.0,
                  40_000)


def test_a_threshold_under_an_adaptive_budget_and_its_alpha_spending():
    assert _conservative(C.threshold_adaptive(40_000, 2.0), 2.0, 40_000)
    assert _above(C.threshold_adaptive(40_000, 2.0, spend=False), 2.0, 40_000)


def test_a_paired_regression_rule():
    assert _within(C.paired_rule(40_000, 2.0), 2.0, 40_000)


def test_an_unpaired_regression_rule_and_welch_satterthwaite():
    assert _within(C.unpaired_rule(100_000, 3.0), 3.0, 100_000)
    few = C.FIRST_LOOK
    assert _within(C.unpaired_rule(100_000, 3.0, groups=few), 3.0, 100_000)
    assert _above(C.unpaired_rule(100_000, 3.0, normal=True, groups=few), 3.0, 100_000)


@pytest.mark.parametrize("repeats", [3, 5])
def test_repeats_and_students_t_at_n_minus_1(repeats):
    assert _within(C.repeats_threshold(40_000, 3.0, repeats), 3.0, 40_000)
    assert _above(C.repeats_threshold(40_000, 3.0, repeats, normal=True), 3.0, 40_000)


def test_the_very_checkpoint_never_fails_its_own_baseline_under_an_adaptive_budget():
    """A z-less rule at tolerance 0: the nominal rate is 0 (the same SAE on the same windows
    differs by nothing)."""
    assert C.identical_checkpoint_adaptive(200) == (0.0, 0.0)
    # each run's sum of squares about its own mean: the shorter run always looks worse
    assert C.identical_checkpoint_adaptive(200, shared_mean=False)[1] == 1.0
    # the verdict from the two values, over different windows: it fails
    assert C.identical_checkpoint_adaptive(200, over_windows=False)[0] > 0.3


def test_a_metric_without_a_standard_error_is_decided_only_where_monotone():
    assert C.no_stderr_adaptive(2_000) == 0.0
    assert C.no_stderr_adaptive(2_000, monotone=False) > 0.5  # decided at the first look


def test_holm_keeps_the_chance_of_any_false_fail_in_a_run_at_one_gates_level():
    # 30 gates at z = 2: without a family-wise rule about half of all runs fail somewhere
    assert C.family_of_gates(4_000, 30, 2.0, "none") > 0.4
    assert _within(C.family_of_gates(4_000, 30, 2.0, "holm"), 2.0, 4_000)


def test_holm_is_the_textbook_step_down():
    from pytest_saebench.family import holm
    from pytest_saebench.gates.stats import one_sided_p

    rng = __import__("numpy").random.default_rng(3)
    for _ in range(200):
        ts = rng.normal(1.5, 1.5, 8)
        alpha = C.nominal(2.0)
        steps = holm({f"g{i}": (float(t), 19, alpha) for i, t in enumerate(ts)})
        ps = sorted((one_sided_p(float(t), 19), f"g{i}") for i, t in enumerate(ts))
        rejected, open_ = set(), True
        for k, (p, key) in enumerate(ps):  # Holm 1979: p_(k) <= alpha / (m - k), in order
            open_ = open_ and p <= alpha / (8 - k)
            if open_:
                rejected.add(key)
        assert {k for k, s in steps.items() if s.may_fail} == rejected


def test_futility_stops_a_gate_on_its_bound_at_a_third_of_the_budget_and_keeps_the_rates():
    """STATISTICS.md §8: a z = 3 threshold whose true value is its bound, through the
    stopper's path. On the same draws the futility stop yields no fail or pass that the
    looks without it would not (it is non-binding), the fail rate stays at its nominal level,
    and the budget used falls from nearly all of it to about a third."""
    draws = 20_000
    on, off = C.futility_run(draws, 3.0), C.futility_run(draws, 3.0, level=0.0)
    assert on["fail"] <= off["fail"] and on["pass"] <= off["pass"]
    assert on["fail"] <= C.binomial_interval(C.nominal(3.0), draws)[1]
    assert off["used"] > 0.95 and 0.28 < on["used"] < 0.40
    assert on["futile"] > 0.9 and off["futile"] == 0.0


@pytest.mark.parametrize("inside", [4.5, -4.5])
def test_futility_gives_up_little_of_a_clear_verdict(inside):
    """4.5 whole-budget standard errors from the bound a z = 3 gate is decided by the whole
    budget 85 % of the time; with futility 76 % (STATISTICS.md §8). A rule that stopped
    whenever a gate was undecided (level 1) would keep a few %, one that never stopped 85 %
    at the whole budget's cost: both fail here."""
    verdict = "pass" if inside > 0 else "fail"
    on = C.futility_run(10_000, 3.0, inside)
    off = C.futility_run(10_000, 3.0, inside, level=0.0)
    eager = C.futility_run(10_000, 3.0, inside, level=1.0)
    assert 0.71 < on[verdict] < 0.81 and 0.80 < off[verdict] < 0.90
    assert eager[verdict] < 0.1
    assert on["used"] < off["used"] - 0.1
