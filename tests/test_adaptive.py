"""budget = "adaptive": core evaluates its budget in looks at growing prefixes of the same
windows and stops at the first look where every gate reading it is decided (gates.budget)."""

from __future__ import annotations

import json

import pytest

from pytest_saebench.gates import budget
from pytest_saebench.gates.thresholds import Threshold
from tests.conftest import SMALL_PYPROJECT

EV = "core.reconstruction_quality.explained_variance"
KL = "core.model_behavior_preservation.kl_div_score"
# 64 loss and 128 variance contexts in batches of 8, one jackknife group each: looks at
# 1/8, 1/4, 1/2 and the whole
ADAPTIVE_PYPROJECT = SMALL_PYPROJECT.replace(
    "batch_size_prompts = 4\nn_eval_reconstruction_batches = 2\n"
    "n_eval_sparsity_variance_batches = 4",
    "batch_size_prompts = 8\nn_eval_reconstruction_batches = 8\n"
    "n_eval_sparsity_variance_batches = 16")


def _project(pytester, thresholds: str, regression: str = "") -> None:
    pytester.makefile(".toml", pyproject=f"[tool.pytest-saebench.thresholds]\n{thresholds}\n"
                      f"[tool.pytest-saebench.regression]\n{regression}\n{ADAPTIVE_PYPROJECT}")


def _run(pytester, sae, *args):
    result = pytester.runpytest(f"--sae-path={sae}", *args)
    data = json.loads((pytester.path / "saebench-results.json").read_text())
    entry = next(iter(data["saes"].values()))
    core = entry["evals"]["core"]
    return result, core["eval_result_unstructured"].get("looks"), core, data["checks"]


def test_a_clear_verdict_stops_at_the_first_look_with_the_fixed_budgets_verdict(
        pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ min = 0.5, z = 3 }}')
    fixed, none, full, fixed_checks = _run(pytester, tiny_world.trained)
    assert none is None and fixed.ret == 0
    adaptive, looks, core, checks = _run(pytester, tiny_world.trained, "--saebench-budget",
                                         "adaptive")
    assert adaptive.ret == 0
    assert looks["stopped_at"] == 0
    assert looks["fractions"] == list(budget.LOOKS) == [0.125, 0.25, 0.5, 1.0]
    # the terminal says what the budget decided, one line per checkpoint
    adaptive.stdout.fnmatch_lines(["saebench: trained: budget adaptive: core stopped at look 1 "
                                   "of 4, * of * SAE tokens (12%)"])
    assert looks["tokens_used"] * 8 == looks["tokens_cap"]
    assert looks["contexts"] == [[8, 16]] and looks["spending"] == "pocock"
    metrics = core["eval_result_metrics"]
    assert metrics["token_stats"]["total_tokens_eval_sparsity_variance"] == \
        full["eval_result_metrics"]["token_stats"]["total_tokens_eval_sparsity_variance"] / 8
    assert [c["status"] for c in checks if c["metric"] == EV] == \
        [c["status"] for c in fixed_checks if c["metric"] == EV] == ["pass"]


def _fixed_core(pytester, sae):
    """Core's results at the fixed budget and their explained variance."""
    _project(pytester, f'"{EV}" = {{ min = 0.5, z = 3 }}')
    _, _, full, _ = _run(pytester, sae)
    return full, full["eval_result_metrics"]["reconstruction_quality"]["explained_variance"]


def test_a_gate_near_its_bound_without_z_runs_to_the_whole_budget(pytester, tiny_world):
    full, value = _fixed_core(pytester, tiny_world.trained)
    # without z the value decides: never inconclusive, so futility does not apply
    _project(pytester, f'"{EV}" = {{ min = {value - 1e-6:.8f} }}')
    _, looks, core, checks = _run(pytester, tiny_world.trained, "--saebench-budget=adaptive")
    assert looks["stopped_at"] == 3 and looks["tokens_used"] == looks["tokens_cap"]
    assert "futility" not in looks
    assert core["eval_result_metrics"] == full["eval_result_metrics"]  # the same windows
    assert [c["status"] for c in checks if c["metric"] == EV] == ["pass"]


def test_a_gate_on_its_bound_stops_for_futility_and_says_so(pytester, tiny_world):
    _, value = _fixed_core(pytester, tiny_world.trained)
    _project(pytester, f'"{EV}" = {{ min = {value:.8f}, z = 3 }}')
    result, looks, _, checks = _run(pytester, tiny_world.trained, "--saebench-budget=adaptive")
    assert result.ret == 0
    k = looks["stopped_at"]
    assert k < 3 and looks["tokens_used"] < looks["tokens_cap"]
    ((gate, cp),) = looks["futility"].items()
    assert gate == budget.gate_key(Threshold(EV, min=float(f"{value:.8f}"), z=3.0))
    assert 0 <= cp < budget.FUTILITY
    (check,) = [c for c in checks if c["metric"] == EV]
    assert check["status"] == "inconclusive"
    assert f"inconclusive at look {k + 1} of 4: the whole budget would decide it with " \
           f"probability {cp:.2f} (stopped for futility, below 0.1)" in check["message"]
    result.stdout.fnmatch_lines([f"saebench: trained: budget adaptive: core stopped at look "
                                 f"{k + 1} of 4, for futility (1 gate(s) the whole budget "
                                 "would not decide), * SAE tokens (*%)"])


def test_an_adaptive_run_pairs_with_a_fixed_baseline_over_the_groups_both_evaluated(
        pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ min = 0.5, z = 3 }}', f'"{KL}" = {{ max_drop = 0.5, z = 3 }}')
    base = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                              "--saebench-update-baseline=base.json")
    assert base.ret == 0
    _, looks, _, checks = _run(pytester, tiny_world.trained, "--saebench-budget=adaptive",
                               "--saebench-baseline=base.json")
    (rule,) = [c for c in checks if c["kind"] == "regression" and c["metric"] == KL]
    assert looks["stopped_at"] == 0 and rule["status"] == "pass", rule
    assert "paired over 8 units with identical inputs" in rule["message"]  # 8 of 64 contexts


def test_bad_budget_is_one_line(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ min = 0.5 }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}")
    pytester.makefile(".toml", pyproject=f'[tool.pytest-saebench]\nbudget = "quick"\n'
                      f'[tool.pytest-saebench.thresholds]\n"{EV}" = {{ min = 0.5 }}\n')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "'budget': must be 'fixed' or 'adaptive', got 'quick'" in result.stderr.str()


@pytest.mark.parametrize(("monotone", "value", "bounds", "decided"), [
    ("down", 0.05, (None, 0.1), True),    # frac_dead below its max: more tokens only lower it
    ("down", 0.15, (None, 0.1), False),   # above: more tokens may bring it under
    ("down", 0.05, (0.1, None), True),    # already below a min: it stays below
    ("up", 0.95, (0.9, None), True),
    ("", 0.05, (None, 0.1), False),       # no standard error, no known direction: wait
])
def test_a_metric_without_a_standard_error_stops_only_where_more_data_cannot_change_it(
        monotone, value, bounds, decided):
    look = budget.Look(0, budget.LOOKS)
    t = Threshold("core.misc_metrics.frac_dead", *bounds)
    assert budget.threshold_decided(t, value, None, None, look, monotone) is decided
    assert budget.threshold_decided(t, value, None, None, budget.Look(3, look.fractions))


def test_conditional_power_is_statistics_md_section_8():
    """CP = Φ((|D| − c_K·se_K) / (sqrt(1 − t_k)·se_K)), se_K = se_k·sqrt(t_k)."""
    from statistics import NormalDist

    for bad, se, frac, c in [(0.0, 1.0, 0.25, 2.0), (1.5, 0.4, 0.5, 3.1), (-0.2, 0.1, 0.25, 2.5)]:
        se_k = se * frac ** 0.5
        want = NormalDist().cdf((abs(bad) - c * se_k) / ((1 - frac) ** 0.5 * se_k))
        assert budget.conditional_power(bad, 0.0, se, frac, c) == pytest.approx(want, rel=1e-9)


def test_futility_needs_every_open_gate_hopeless_and_z():
    first, look = budget.Look(0, budget.LOOKS), budget.Look(1, budget.LOOKS)
    assert budget.stop_now([("a", 0.03)], first) == (False, {})  # 1/8: too noisy to judge
    assert budget.stop_now([("a", 0.03), ("b", 0.05)], look) == (True, {"a": 0.03, "b": 0.05})
    assert budget.stop_now([("a", 0.03), ("b", 0.4)], look) == (False, {})
    assert budget.stop_now([("a", 0.03), ("b", None)], look) == (False, {})  # no z: the value
    assert budget.stop_now([("a", 0.03)], look, level=0.0) == (False, {})
    assert budget.stop_now([], look) == (True, {})
    on_bound = Threshold(EV, min=0.9, z=3.0)
    assert budget.threshold_power(on_bound, 0.9, 0.01, 4, look) < 0.01
    assert budget.threshold_power(Threshold(EV, min=0.9), 0.9, 0.01, 4, look) is None


def test_a_regression_rule_on_its_tolerance_stops_for_futility_and_its_message_says_so():
    """The stopper's path for a rule (adaptive.pending_gates, rule_looks.rule_power) on a
    second look (16 of 64 groups; futility starts there) whose drop sits on max_drop, then
    check_metric's message."""
    import numpy as np

    from pytest_saebench.adaptive import pending_gates
    from pytest_saebench.gates import stats as S
    from pytest_saebench.gates.regression import RegressionRule, check_metric
    from tests import calibration as C

    rng = np.random.default_rng(3)
    g, first = C.GROUPS, round(C.FRACTIONS[1] * C.GROUPS)
    formula = S.Formula("variance", {"err": 1.0}, {"ss": 1.0}, 1.0, -1.0)
    prints = [f"g{i}" for i in range(g)]
    base_rows = np.stack([rng.uniform(1, 2, g), rng.uniform(20, 21, g)], axis=1)
    new_rows = base_rows + np.stack([rng.normal(0.3, 0.05, g), np.zeros(g)], axis=1)
    base = C._core_results(base_rows, ("err", "ss"), formula, g, g, prints)
    new = C._core_results(new_rows, ("err", "ss"), formula, first, g, prints)
    drop = -S.paired_difference(formula, new.units(EV)[1], base.units(EV)[1]).delta
    rule = RegressionRule(EV, max_drop=drop, z=3.0)
    look = budget.Look(1, C.FRACTIONS)
    registry = {EV: type("Spec", (), {"direction": "up", "monotone": ""})()}
    ((gate, cp),) = pending_gates([], [rule], new, base, look, registry)
    assert gate == f"regression {EV}" and cp < budget.FUTILITY
    stop, futile = budget.stop_now([(gate, cp)], look)
    assert stop and futile == {gate: cp}
    new.evals["core"].unstructured["looks"]["futility"] = futile
    out = check_metric(rule, "up", new, base, "b", "")
    assert out.status == "inconclusive" and "inconclusive at look 2 of 4: the whole budget " \
        f"would decide it with probability {cp:.2f}" in out.message
    # a rule without z is decided by its value: futility does not apply
    assert pending_gates([], [RegressionRule(EV, max_drop=drop)], new, base, look,
                         registry) in ([], [(f"regression {EV}", None)])
