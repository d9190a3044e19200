"""Baselines and regression gates: the rule engine, the pytester workflow and `compare`."""

from __future__ import annotations

import json

import pytest

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates.regression import RegressionRule, compare, config_differences, make_rule
from tests.conftest import SMALL_PYPROJECT

EV = "core.reconstruction_quality.explained_variance"
L0 = "core.sparsity.l0"


@pytest.mark.parametrize(("rule", "direction", "new", "old", "status"), [
    (RegressionRule(EV, max_drop=0.01), "up", 0.90, 0.905, "pass"),
    (RegressionRule(EV, max_drop=0.01), "up", 0.80, 0.90, "fail"),
    (RegressionRule(EV, max_drop=0.01), "up", 0.95, 0.90, "improved"),
    (RegressionRule(EV, max_drop_pct=10), "up", 0.82, 0.90, "pass"),
    (RegressionRule(EV, max_drop_pct=5), "up", 0.82, 0.90, "fail"),
    (RegressionRule("x.y.loss", max_drop=0.1), "down", 1.05, 1.0, "pass"),
    (RegressionRule("x.y.loss", max_drop=0.1), "down", 1.2, 1.0, "fail"),
    (RegressionRule("x.y.loss", max_drop=0.1), "down", 0.5, 1.0, "improved"),
    (RegressionRule(L0, max_change_pct=15), "band", 57.0, 50.0, "pass"),
    (RegressionRule(L0, max_change_pct=15), "band", 58.0, 50.0, "fail"),
    (RegressionRule(L0, max_change_pct=15), "band", 42.0, 50.0, "fail"),
    (RegressionRule(EV, max_drop=0.01, severity="warn"), "up", 0.5, 0.9, "warn"),
])
def test_rule_engine(rule, direction, new, old, status):
    assert compare(rule, direction, new, old).status == status


def test_z_decides_on_the_interval_of_the_difference():
    rule = RegressionRule(EV, max_drop=0.01, z=2)
    # a drop of 0.05 with combined stderr hypot(0.02, 0.02) = 0.028: [-0.007, 0.107] holds
    # the allowance 0.01, so the run cannot tell (it used to pass, inside "0.01 + 2σ")
    assert compare(rule, "up", 0.85, 0.90, 0.02, 0.02).status == "inconclusive"
    assert compare(rule, "up", 0.85, 0.90, 0.005, 0.005).status == "fail"
    # an improvement inside the noise is not reported as one
    assert compare(rule, "up", 0.901, 0.90, 0.002, 0.002).status == "pass"


def test_undefined_values():
    rule = RegressionRule(EV, max_drop=0.01)
    assert compare(rule, "up", None, 0.9).status == "fail"
    assert compare(rule, "up", 0.9, None).status == "skip"
    assert compare(rule, "up", float("nan"), 0.9).status == "fail"


def test_rule_validation_names_the_key():
    with pytest.raises(SaebenchError, match="unknown key 'max_dorp'.*max_drop"):
        make_rule(EV, {"max_dorp": 0.1}, "pyproject.toml [tool.pytest-saebench.regression]")
    with pytest.raises(SaebenchError, match="non-negative"):
        make_rule(EV, {"max_drop": -1}, "here")
    with pytest.raises(SaebenchError, match=r"give max_drop.*\(e\.g\. \{ max_drop = 0\.01 \}\)"):
        make_rule(EV, {"z": 2}, "here")


def test_config_differences_ignore_tuple_vs_list():
    assert config_differences({"k": (1, 2), "n": 3}, {"k": [1, 2], "n": 4}) == ["n"]


def _project(pytester, rules: str, top: str = "") -> None:
    pytester.makefile(".toml", pyproject=f"""
[tool.pytest-saebench]
{top}
select-evals = ["core"]

[tool.pytest-saebench.thresholds]
"{EV}" = {{ min = -10.0 }}

[tool.pytest-saebench.regression]
{rules}
{SMALL_PYPROJECT.split("select-evals")[1].split(chr(10), 1)[1]}
""")


def test_missing_baseline_skips_with_the_command(pytester, tiny_world):
    _project(pytester, "default = { max_drop = 0.01 }", 'baseline = "baselines/sb.json"')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines([
        "*no baseline at baselines/sb.json; create it with: pytest --sae-path "
        f"{tiny_world.trained} --saebench-update-baseline=baselines/sb.json*"])
    # Run with -c (as example_tests/ is): the command keeps it.
    result = pytester.runpytest("-c", "pyproject.toml", f"--sae-path={tiny_world.trained}", "-rs")
    result.stdout.fnmatch_lines([
        "*no baseline at baselines/sb.json; create it with: pytest -c pyproject.toml --sae-path "
        f"{tiny_world.trained} --saebench-update-baseline=baselines/sb.json*"])


def test_update_then_compare_workflow(pytester, tiny_world):
    _project(pytester, f'default = {{ max_drop = 0.01 }}\n"{L0}" = {{ max_change_pct = 15 }}',
             'baseline = "baselines/sb.json"')
    sae = f"--sae-path={tiny_world.trained}"
    result = pytester.runpytest(sae, "--saebench-update-baseline", "-rs")
    # nothing to compare with yet: the regression gates say so rather than PASS
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*baseline: wrote *baselines/sb.json (1 checkpoint(s))*"])
    result.stdout.fnmatch_lines(["*no baseline: written now (baselines/sb.json)*"])
    written = json.loads((pytester.path / "baselines" / "sb.json").read_text())
    assert written["tool"] == "pytest-saebench" and "trained" in written["saes"]
    assert not list((pytester.path / "baselines").glob(".*tmp"))

    again = pytester.runpytest(sae, "--saebench-update-baseline", "-rs")
    again.assert_outcomes(passed=2, skipped=2)
    again.stdout.fnmatch_lines(["*not compared: this run writes the baseline "
                                "(baselines/sb.json)*"])

    # same checkpoint against its own baseline: passes, Δ 0 in the table
    result = pytester.runpytest(sae, "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([f"*saebench::regression[[]trained::{EV}[]] PASSED*",
                                 f"*trained*{EV}*>= -10*PASS*+0*PASS*"])

    # the random SAE compared with the trained one's baseline (the only entry): EV regressed
    result = pytester.runpytest(f"--sae-path={tiny_world.random}")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.re_match_lines([
        rf"^{L0} changed \(\d+\.?\d* -> \d+\.?\d*, Δ [-+]\d+\.?\d*\), beyond max_change_pct 15% "
        r"vs baseline baselines/sb\.json entry 'trained' \(the only checkpoint the baseline "
        r"holds\) \(sae random, suite fast\)$",
        rf"^{EV} regressed \(0\.\d+ -> -?\d\.\d+, Δ -\d\.\d+\), beyond max_drop 0\.01 "
        r"vs baseline baselines/sb\.json entry 'trained' \(the only checkpoint the baseline "
        r"holds\) \(sae random, suite fast\)$",
    ])
    data = json.loads((pytester.path / "saebench-results.json").read_text())
    reg = {c["metric"]: c for c in data["checks"] if c["kind"] == "regression"}
    assert reg[EV]["status"] == "fail" and reg[EV]["baseline"] > reg[EV]["value"]
    assert reg[EV]["delta"] == pytest.approx(reg[EV]["value"] - reg[EV]["baseline"])


def test_improvement_is_a_notice(pytester, tiny_world, monkeypatch, tmp_path):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    _project(pytester, f'"{EV}" = {{ max_drop = 0.01 }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                                f"--saebench-baseline=ckpt:{tiny_world.random}")
    result.assert_outcomes(passed=3)
    lines = (pytester.path / "pyproject.toml").read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if "max_drop" in t)
    result.stdout.fnmatch_lines([
        f"*trained*{EV}*PASS*IMPROVED*",
        f"::notice file=*pyproject.toml,line={line}::{EV} improved (*-> *, Δ +*) vs baseline "
        f"ckpt:{tiny_world.random} (sae trained, suite fast)"])
    assert f"| ⬆️ improved | regression | trained | `{EV}` |" in summary.read_text()


def test_config_mismatch_skips_naming_the_keys(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ max_drop = 0.01 }}', 'baseline = "base.json"')
    sae = f"--sae-path={tiny_world.trained}"
    pytester.runpytest(sae, "--saebench-update-baseline").assert_outcomes(passed=2,
                                                                          skipped=1)
    result = pytester.runpytest(sae, "--saebench-seed=7", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines([f"*{EV} not compared: the core eval config differs from "
                                 "baseline base.json in random_seed*"])


def test_environment_mismatch_warns(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ max_drop = 0.01 }}', 'baseline = "base.json"')
    sae = f"--sae-path={tiny_world.trained}"
    pytester.runpytest(sae, "--saebench-update-baseline").assert_outcomes(passed=2,
                                                                          skipped=1)
    path = pytester.path / "base.json"
    data = json.loads(path.read_text())
    data["saes"]["trained"]["env"]["torch"] = "1.0.0"
    path.write_text(json.dumps(data))
    result = pytester.runpytest(sae)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*SaebenchBaselineWarning: baseline base.json was computed in "
                                 "another environment (torch: 1.0.0 -> *"])


def test_corrupt_baseline_is_a_clear_failure(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ max_drop = 0.01 }}', 'baseline = "base.json"')
    (pytester.path / "base.json").write_text("{not json")
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}")
    # read at start-up: one line and a usage error, not an error per gate
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*base.json: cannot read results JSON*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_update_without_a_path_is_a_usage_error(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ max_drop = 0.01 }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}", "--saebench-update-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--saebench-update-baseline needs a results JSON path*"])


def test_compare_cli_exits_1_on_a_regression(pytester, tiny_world, capsys, monkeypatch):
    from pytest_saebench.cli import main

    _project(pytester, f'"{EV}" = {{ max_drop = 0.01 }}')
    for name, sae in (("old.json", tiny_world.trained), ("new.json", tiny_world.random)):
        pytester.runpytest(f"--sae-path={sae}", f"--saebench-json={name}")
    monkeypatch.chdir(pytester.path)
    assert main(["compare", "new.json", "old.json"]) == 0  # report only without --fail
    assert main(["compare", "new.json", "old.json", "--fail"]) == 1
    out = capsys.readouterr().out
    assert f"random  {EV}" in out and "FAIL" in out
    assert f"{EV} regressed (" in out and "1 regression(s) in 1 comparison(s)" in out
    assert main(["compare", "old.json", "new.json", "--fail"]) == 0
    assert "IMPROVED" in capsys.readouterr().out
    # without rules: every directional metric, beyond two standard errors
    (pytester.path / "pyproject.toml").write_text("")
    assert main(["compare", "new.json", "old.json", "--fail"]) == 1
    out = capsys.readouterr().out
    assert "max_drop = 0, z = 2" in out and "core.model_performance_preservation" in out
    assert main(["compare", "new.json", "missing.json"]) == 2


@pytest.mark.parametrize("saes, message", [
    (None, "'saes' must be an object"),
    ([], "'saes' must be an object"),
    ({"a": []}, "malformed results entry"),
    ({"a": {"evals": {"core": {}}}}, "malformed results entry (KeyError"),
    ({"a": {"evals": {"core": {"eval_result_metrics": {"x": {"y": "0.9"}}}}}},
     "metric core.x.y is not a number"),
    # per-unit sums that do not line up, or a formula over a table that is not there
    ({"a": {"evals": {"core": {"eval_result_metrics": {}}}, "units": {"core": {"tables": {
        "loss": {"keys": ["a"], "sums": [[1.0, 2.0]], "fingerprints": ["f"]}}}}}},
     "sums, keys and fingerprints disagree"),
    ({"a": {"evals": {"core": {"eval_result_metrics": {}}}, "units": {"core": {"tables": {},
        "formulas": {"core.x.y": {"table": "loss", "num": {}, "den": {}}}}}}},
     "no table 'loss'"),
])
def test_a_malformed_baseline_is_one_line_naming_the_file(tmp_path, saes, message):
    from pytest_saebench.results import load_envelope

    path = tmp_path / "base.json"
    data = {"tool": "pytest-saebench", "schema_version": 1}
    if saes is not None:
        data["saes"] = saes
    path.write_text(json.dumps(data))
    with pytest.raises(SaebenchError) as info:
        load_envelope(path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)
