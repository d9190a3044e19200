"""Gates decided as STATISTICS.md says, on real runs: regression rules paired with the baseline
over the units both evaluated, thresholds and rules with ``z`` three-way, and the paired
standard error recomputed independently from the recorded units."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pytest_saebench.gates import stats as S
from pytest_saebench.gates.regression import RegressionRule, compare
from tests.conftest import SMALL_PYPROJECT

GOOD = Path(__file__).parents[1] / "example_tests" / "checkpoints" / "good"
KL = "core.model_behavior_preservation.kl_div_score"
EV = "core.reconstruction_quality.explained_variance"


def _zeroed(root: Path, fraction: float, seed: int = 0) -> Path:
    """A copy of ``good`` with ``fraction`` of its latents switched off (never selected)."""
    out = root / f"zeroed_{fraction:g}"
    shutil.copytree(GOOD, out)
    weights = load_file(str(out / "sae_weights.safetensors"))
    d_sae = weights["W_enc"].shape[1]
    off = torch.randperm(d_sae, generator=torch.Generator().manual_seed(seed))
    off = off[:max(1, round(fraction * d_sae))]
    weights["W_enc"][:, off] = 0.0
    weights["b_enc"][off] = -1e4
    save_file(weights, str(out / "sae_weights.safetensors"))
    return out


def _project(pytester, rule: str, threshold: str = "") -> None:
    pytester.makefile(".toml", pyproject=f"""
[tool.pytest-saebench]
select-evals = ["core"]

[tool.pytest-saebench.thresholds]
{threshold}

[tool.pytest-saebench.regression]
"{KL}" = {rule}
""")


def _checks(pytester, kind: str) -> dict[str, dict]:
    data = json.loads((pytester.path / "saebench-results.json").read_text())
    return {c["sae"]: c for c in data["checks"] if c["kind"] == kind}


@pytest.mark.slow
def test_two_percent_of_latents_off_fails_paired_and_not_unpaired(pytester, tmp_path,
                                                                 reference_cache):
    cache = f"--saebench-cache-dir={reference_cache}"
    _project(pytester, "{ max_drop = 0, z = 3 }")
    # main's baseline: good, with its per-unit sums
    base = pytester.runpytest(f"--sae-path={GOOD}", "--saebench-update-baseline=base.json",
                              cache)
    assert base.ret == 0, base.stdout.str()
    zeroed = _zeroed(tmp_path, 0.02)
    paired = pytester.runpytest(f"--sae-path={zeroed}", "--saebench-baseline=base.json", cache)
    check = _checks(pytester, "regression")["zeroed_0.02"]
    assert paired.ret == 1 and check["status"] == "fail", check
    assert "paired over 64 units with identical inputs" in check["message"]  # one per context
    # the same comparison against a baseline that predates per-unit sums: unpaired, no fail
    old = json.loads((pytester.path / "base.json").read_text())
    for entry in old["saes"].values():
        entry.pop("units", None)
    (pytester.path / "old.json").write_text(json.dumps(old))
    unpaired = pytester.runpytest(f"--sae-path={zeroed}", "--saebench-baseline=old.json", cache)
    check = _checks(pytester, "regression")["zeroed_0.02"]
    assert unpaired.ret == 0 and check["status"] in ("inconclusive", "pass"), check
    assert "unpaired: the baseline recorded no per-unit sums" in check["message"]
    # good against itself on other windows (another seed): nothing pairs, and never a fail
    again = pytester.runpytest(f"--sae-path={GOOD}", "--saebench-baseline=base.json", cache,
                               "--saebench-seed=7")
    checks = _checks(pytester, "regression")
    assert again.ret == 0, again.stdout.str()
    assert all(c["status"] != "fail" for c in checks.values())


@pytest.mark.slow
def test_the_paired_standard_error_is_the_jackknife_of_the_recorded_units(tmp_path):
    from pytest_saebench.evals.core import PRESETS
    from tests.helpers import make_runner

    sweep = tmp_path / "sweep"  # one runner: the SAE-independent passes run once for both
    sweep.mkdir()
    (sweep / "good").symlink_to(GOOD)
    _zeroed(sweep, 0.05)
    runner = make_runner(sweep, cfg=PRESETS["fast"])
    good, worse = runner.results("sweep/good"), runner.results("sweep/zeroed_0.05")
    formula = good.evals["core"].formulas[KL]
    rows = {name: [dict(zip(t["keys"], r, strict=True)) for r in t["sums"]]
            for name, t in ((n, r.evals["core"].units["loss"]) for n, r in
                            (("old", good), ("new", worse)))}
    # independently: leave each group out of both runs, take the score, jackknife the gap
    def score(groups):
        abl = math.fsum(g["kl_abl"] for g in groups)
        return (abl - math.fsum(g["kl_sae"] for g in groups)) / abl

    n = len(rows["new"])
    new, old = rows["new"], rows["old"]
    loo = [score(new[:i] + new[i + 1:]) - score(old[:i] + old[i + 1:]) for i in range(n)]
    mean = sum(loo) / n
    se = math.sqrt((n - 1) / n * sum((x - mean) ** 2 for x in loo))
    diff = S.paired_difference(S.Formula.from_json(formula),
                               S.Units.from_json(worse.evals["core"].units["loss"]),
                               S.Units.from_json(good.evals["core"].units["loss"]))
    assert diff.n_paired == n == 64
    assert diff.delta == pytest.approx(worse.value(KL) - good.value(KL), rel=1e-9)
    assert diff.stderr == pytest.approx(se, rel=1e-9)
    unpaired = math.hypot(worse.stderr(KL), good.stderr(KL))
    assert unpaired > 4 * diff.stderr  # the windows' noise, shared, cancels
    assert diff.delta / diff.stderr < -3  # 5 % of latents off: clearly worse, paired


def test_a_threshold_with_z_is_three_way(pytester, tiny_world):
    ev = "core.reconstruction_quality.explained_variance"
    for bound, expected in ((0.5, "pass"), (0.99, "fail")):
        pytester.makefile(".toml", pyproject=f'[tool.pytest-saebench.thresholds]\n'
                          f'"{ev}" = {{ min = {bound}, z = 3 }}\n{SMALL_PYPROJECT}')
        result = pytester.runpytest(f"--sae-path={tiny_world.trained}")
        check = _checks(pytester, "threshold")["trained"]
        assert check["status"] == expected, check
    # the failed one: its interval, as Student's t over the 16 groups of SMALL's 16 contexts
    assert "(t, 15 df): wholly below min 0.99" in check["message"], check
    value, se = check["value"], check["stderr"]
    pytester.makefile(".toml", pyproject=f'[tool.pytest-saebench.thresholds]\n'
                      f'"{ev}" = {{ min = {value + se:.6f}, z = 3 }}\n{SMALL_PYPROJECT}')
    for policy, ret in (("warn", 0), ("pass", 0), ("fail", 1)):
        result = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                                    f"--saebench-on-inconclusive={policy}", "-W",
                                    "default::UserWarning")
        check = _checks(pytester, "threshold")["trained"]
        assert result.ret == ret and check["status"] == "inconclusive", (policy, check)
        assert "holds min" in check["message"] and "inconclusive at z 3" in check["message"]
        warned = "SaebenchInconclusiveWarning" in result.stdout.str()
        assert warned == (policy == "warn"), (policy, result.stdout.str()[-2000:])


@pytest.mark.parametrize(("new", "old", "new_se", "old_se", "status"), [
    (0.85, 0.90, 0.02, 0.02, "inconclusive"),  # a drop of 0.05 ± 0.057: could be either
    (0.85, 0.90, 0.005, 0.005, "fail"),
    (0.905, 0.90, 0.001, 0.001, "improved"),
    (0.90, 0.901, 0.0001, 0.0001, "pass"),
])
def test_an_unpaired_rule_with_z_is_three_way(new, old, new_se, old_se, status):
    rule = RegressionRule(EV, max_drop=0.01, z=2)
    assert compare(rule, "up", new, old, new_se, old_se).status == status
    plain = RegressionRule(EV, max_drop=0.01)  # without z: exactly as before, the values decide
    assert compare(plain, "up", new, old, new_se, old_se).status == (
        "fail" if old - new > 0.01 else "improved" if new > old else "pass")


def test_inconclusive_is_visible_wherever_a_verdict_is():
    from pytest_saebench.reporting import github, html, terminal

    check = {"status": "inconclusive", "sae": "good", "metric": EV, "value": 0.851,
             "stderr": 0.002, "limit": ">= 0.85, z 3", "kind": "threshold", "baseline": None,
             "delta": None, "message": f"{EV} = 0.851 ± 3.45 × 0.002 = [0.8441, 0.8579] (t, 19 "
                                       "df) holds min 0.85: inconclusive at z 3 (sae good, "
                                       "suite fast)"}
    summary = github.summary_markdown([check], [], "fast")
    assert "1 inconclusive" in summary.splitlines()[0] and "| ❔ inconclusive |" in summary
    assert github.annotations([check], {("threshold", EV): "pyproject.toml:9"}) == [
        f"::warning file=pyproject.toml,line=9::{check['message']}"]
    assert '<tr class="inconclusive">' in html.render([], [check], "fast", {})
    from pytest_saebench.evals.base import EvalResult
    from pytest_saebench.results import SaeResults

    res = SaeResults("good", "p", "s", "fast", {"core": EvalResult("core", {}, {EV: 0.851})})
    rows = terminal.rows([res], [check], None, False)
    assert rows[0][5] == "INCONCLUSIVE"


def test_holm_keeps_a_clear_fail_and_turns_a_marginal_one_inconclusive(pytester, tiny_world):
    """family = "holm" through the plugin: three thresholds with z, one far past its bound,
    one just past it and one passing; alone two fail, after the step-down over the run's
    gates only the clear one does (the marginal one is inconclusive, saying why)."""
    from pytest_saebench.gates.stats import critical

    ev, l2 = "core.reconstruction_quality.explained_variance", "core.shrinkage.l2_ratio"
    pytester.makefile(".toml", pyproject=f'[tool.pytest-saebench.thresholds]\n'
                      f'"{ev}" = {{ min = 0.0, z = 2 }}\n"{l2}" = {{ min = 0.0, z = 2 }}\n'
                      f"{SMALL_PYPROJECT}")
    pytester.runpytest(f"--sae-path={tiny_world.trained}")
    checks = {c["metric"]: c for c in json.loads(
        (pytester.path / "saebench-results.json").read_text())["checks"]}
    c = critical(2.0, 15)
    clear = checks[ev]["value"] + 20 * checks[ev]["stderr"]
    marginal = checks[l2]["value"] + 1.05 * c * checks[l2]["stderr"]
    # and a third gate with z that passes: Holm's second step is then at α/2
    pytester.makefile(".toml", pyproject=f'[tool.pytest-saebench.thresholds]\n'
                      f'"{ev}" = {{ min = {clear:.8f}, z = 2 }}\n'
                      f'"{l2}" = {{ min = {marginal:.8f}, z = 2 }}\n'
                      f'"core.sparsity.l0" = {{ min = 1, z = 2 }}\n{SMALL_PYPROJECT}')
    for family, statuses in (("none", ("fail", "fail")), ("holm", ("fail", "inconclusive"))):
        result = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                                    f"--saebench-family={family}")
        got = {c["metric"]: c for c in json.loads(
            (pytester.path / "saebench-results.json").read_text())["checks"]
            if c["kind"] == "threshold"}
        assert (got[ev]["status"], got[l2]["status"]) == statuses, (family, got)
        assert result.ret == 1
    assert "not a fail after Holm's step-down over the run's" in got[l2]["message"]


def test_a_baseline_grouped_otherwise_is_compared_unpaired_not_skipped(tiny_world):
    """stderr_groups changes the standard error's grouping, not the values: a baseline
    written with other groups (an earlier version's 20) is compared, unpaired, and says why."""
    from dataclasses import replace

    from pytest_saebench.gates.regression import check_metric
    from tests.helpers import SMALL, make_runner

    def results(groups: int):
        runner = make_runner(tiny_world.trained, cfg=replace(SMALL, stderr_groups=groups))
        return runner.results(next(iter(runner.checkpoints)))

    new, old = results(128), results(4)
    assert new.value(KL) == old.value(KL) and new.stderr(KL) != old.stderr(KL)
    out = check_metric(RegressionRule(KL, max_drop=0.01, z=3.0), "up", new, old, "b", "")
    assert out.status == "pass", out
    assert "unpaired: no unit has the baseline's inputs (another seed, dataset, budget, " \
           "model or stderr_groups)" in out.message
