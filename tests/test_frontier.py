"""Frontier gates: a checkpoint against the Pareto frontier of a baseline sweep at its own L0."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates.frontier import FrontierRule, check, interpolate, pareto, parse_frontier
from tests.conftest import SMALL_PYPROJECT

CHECKPOINTS = Path(__file__).parents[1] / "example_tests" / "checkpoints"
EV = "core.reconstruction_quality.explained_variance"


def test_pareto_keeps_points_nothing_beats_at_lower_x():
    points = [(8, 0.80, 0.01), (16, 0.78, 0.01), (16, 0.86, 0.01), (32, 0.90, 0.01),
              (64, 0.89, 0.01), (64, 0.95, 0.01)]
    assert pareto(points, 1.0) == [(8, 0.80, 0.01), (16, 0.86, 0.01), (32, 0.90, 0.01),
                                   (64, 0.95, 0.01)]
    # a lower-is-better metric (e.g. MSE): the frontier keeps the lowest values
    assert pareto([(8, 5.0, 0), (16, 6.0, 0), (32, 3.0, 0)], -1.0) == [(8, 5.0, 0), (32, 3.0, 0)]


def test_interpolation_is_linear_in_log_x():
    front = [(8.0, 0.8, 0.02), (32.0, 0.9, 0.02)]
    y, se = interpolate(front, 16.0)
    assert y == pytest.approx(0.85)  # 16 is halfway between 8 and 32 in log x
    assert se == pytest.approx(math.hypot(0.01, 0.01))
    assert interpolate(front, 4.0) is None and interpolate(front, 40.0) is None


def test_check_fails_below_the_allowance_and_skips_out_of_range():
    rule = FrontierRule(EV, "sweep.json", max_below=0.01, z=2.0)
    front = [(8.0, 0.8, 0.0), (32.0, 0.9, 0.0)]
    assert check(rule, "up", 16.0, 0.845, 0.001, front).status == "pass"
    bad = check(rule, "up", 16.0, 0.80, 0.001, front)
    assert bad.status == "fail" and "frontier 0.85 (below by 0.05)" in bad.message
    out = check(rule, "up", 64.0, 0.99, 0.0, front)
    assert out.status == "skip" and "outside the frontier's range [8, 32]" in out.message


@pytest.mark.parametrize("spec, message", [
    ({"x": "core.sparsity.l0"}, "'against' must name a results JSON"),
    ({"against": "a.json", "max_blow": 1}, "unknown key 'max_blow'; did you mean 'max_below'"),
    ({"against": "a.json", "max_below": -1}, "max_below must be a non-negative number"),
])
def test_bad_rules_are_one_line(spec, message):
    with pytest.raises(SaebenchError, match=message):
        parse_frontier({EV: spec}, "[frontier]", lambda n: n, lambda m: "up", None)
    with pytest.raises(SaebenchError, match="no better direction"):
        parse_frontier({"core.sparsity.l0": {"against": "a.json"}}, "[frontier]",
                       lambda n: n, lambda m: "band", None)


def test_sweep_member_passes_and_undertrained_fails_against_the_sweep(pytester):
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT)
    made = pytester.runpytest(f"--sae-path={CHECKPOINTS / 'sweep'}",
                              "--saebench-update-baseline=baselines/sweep.json")
    assert made.ret == 0
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT + f'''
[tool.pytest-saebench.frontier]
"{EV}" = {{ against = "baselines/sweep.json", x = "core.sparsity.l0", max_below = 0.01 }}
''')
    on = pytester.runpytest(f"--sae-path={CHECKPOINTS / 'sweep' / 'k16'}", "-v",
                            "--saebench-json=on.json")
    on.stdout.fnmatch_lines([f"*frontier[[]k16::{EV}[]] PASSED*"])
    assert on.ret == 0
    off = pytester.runpytest(f"--sae-path={CHECKPOINTS / 'undertrained'}", "-v",
                             "--saebench-json=off.json", "--saebench-html=off.html")
    assert off.ret == 1
    off.stdout.fnmatch_lines([f"*frontier[[]undertrained::{EV}[]] FAILED*",
                              f"{EV} = * at core.sparsity.l0 = 32; frontier * (below by *) > "
                              "max_below 0.01 (sae undertrained, suite fast)"])
    report = (pytester.path / "off.html").read_text()
    assert "<h2>Frontier</h2>" in report and "frontier of sweep.json" in report
    assert report.count('class="pt"') >= 4  # the sweep's frontier points and this run's
    checks = json.loads((pytester.path / "off.json").read_text())["checks"]
    assert [(c["kind"], c["status"]) for c in checks if c["kind"] == "frontier"] == [
        ("frontier", "fail")]
    dense = pytester.runpytest(f"--sae-path={CHECKPOINTS / 'dense'}", "-rs")
    dense.stdout.fnmatch_lines(["*core.sparsity.l0 = * is outside the frontier's range "
                                "[[]8, 64[]]*"])
    # compare applies the same rules to a results file
    from pytest_saebench.cli import main as cli

    code = cli(["compare", str(pytester.path / "off.json"),
                str(pytester.path / "baselines" / "sweep.json"), "--fail",
                "--config", str(pytester.path / "pyproject.toml")])
    assert code == 1


def test_a_missing_or_foreign_against_file_is_a_usage_error_before_evaluation(tmp_path):
    from pytest_saebench.config_tables import check_results_file

    rule = {EV: {"against": "sweep.json"}}

    def parse(**written):  # as the configuration parses it: gates read no files themselves
        return parse_frontier(rule, "[frontier]", lambda n: n, lambda m: "up", tmp_path,
                              check_file=check_results_file, **written)

    with pytest.raises(SaebenchError, match="against = .*sweep.json: no such file; write it "
                                            "from the sweep with --saebench-update-baseline="):
        parse()
    (tmp_path / "sweep.json").write_text('{"something": "else"}')
    with pytest.raises(SaebenchError, match="not a pytest-saebench results file"):
        parse()
    (tmp_path / "sweep.json").unlink()
    made = parse(written=str(tmp_path / "sweep.json"))  # this run writes it
    assert made[0].against == str(tmp_path / "sweep.json")
