"""The plugin end to end with pytester: items, exit codes, messages, JUnit, JSON, selection."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import SMALL_PYPROJECT

EV = "core.reconstruction_quality.explained_variance"
L0 = "core.sparsity.l0"


def _project(pytester: pytest.Pytester, thresholds: str, extra: str = "") -> None:
    pytester.makefile(".toml", pyproject=f"""
[tool.pytest-saebench.thresholds]
{thresholds}
{SMALL_PYPROJECT}
{extra}
""")


def test_passing_gates(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ min = 0.5 }}\n"l0" = {{ min = 1, max = 128 }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*saebench::evaluate[[]trained[]] PASSED*",
        f"*saebench::threshold[[]trained::{EV}[]] PASSED*",
        f"*saebench::threshold[[]trained::{L0}[]] PASSED*",
        "*= saebench =*",
        f"*trained*{EV}*>= 0.5*PASS*",
    ])
    assert result.ret == 0
    data = json.loads((pytester.path / "saebench-results.json").read_text())
    entry = data["saes"]["trained"]
    assert data["suite"] == "fast" and entry["sha256"]
    core = entry["evals"]["core"]
    assert core["eval_type_id"] == "core"
    assert core["eval_result_metrics"]["reconstruction_quality"]["explained_variance"] > 0.5
    assert {c["metric"]: c["status"] for c in data["checks"]} == {EV: "pass", L0: "pass"}
    per_eval = pytester.path / "saebench-results" / "core" / "trained_custom_sae_eval_results.json"
    assert len(json.loads(per_eval.read_text())["eval_result_details"]) == 128


def test_failing_gate_is_one_line_and_exit_code_1(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ min = 0.999 }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == 1
    result.stdout.re_match_lines([
        rf"^{EV} = 0\.\d+ < min 0\.999 \(sae trained, suite fast\)$",
    ])
    assert "Traceback" not in result.stdout.str()
    assert "torch" not in result.stdout.str().split("= FAILURES =")[1].split("= saebench")[0]


def test_cli_threshold_overrides_config_bound(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ min = 0.999, max = 1.0 }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                                f"--saebench-threshold={EV}>=0.5")
    result.assert_outcomes(passed=2)
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                                "--saebench-threshold=core.sparsity.l0<=1")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([f"*{L0} = * > max 1 (sae trained, suite fast)*"])


def test_warn_severity_passes_with_a_warning(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ min = 0.999, severity = "warn" }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}")
    # Count only outcomes: pytest may add PytestAssertRewriteWarning for already-imported modules.
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 2 and "failed" not in outcomes
    result.stdout.fnmatch_lines(["*SaebenchGateWarning: *explained_variance = * < min 0.999*",
                                 "*explained_variance*>= 0.999*WARN*"])
    # the recorded gate carries its value and bound, for the ::warning annotation
    (warned,) = [c for c in json.loads((pytester.path / "saebench-results.json").read_text())
                 ["checks"] if c["status"] == "warn"]
    assert f"{EV} = " in warned["message"] and "< min 0.999" in warned["message"]


def test_metric_not_computed_is_skipped_with_reason(pytester, tiny_world):
    metric = "core.misc_metrics.average_max_decoder_cosine_sim"
    _project(pytester, f'"{metric}" = {{ max = 0.9 }}',
             "compute_featurewise_weight_based_metrics = false")
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([
        f"*SKIPPED*{metric} not computed (sae trained, suite fast): "
        "compute_featurewise_weight_based_metrics is off*"])


def test_undefined_metric_fails_with_its_reason(pytester, tiny_world):
    _project(pytester, '"l0" = { min = 1 }')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                                "--saebench-threshold=core.misc_metrics.median_log10_feature"
                                "_density>=-10")
    result.assert_outcomes(passed=3)


def test_junit_properties(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ min = 0.999 }}\n"l0" = {{ max = 128 }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}", "--junitxml=junit.xml")
    assert result.ret == 1
    root = ET.parse(pytester.path / "junit.xml").getroot()
    suite = root.find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["saebench.suite"] == "fast"
    assert props["saebench.device"] == "cpu"
    assert len(props["saebench.sae.trained.sha256"]) == 64
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    ev_case = cases[f"threshold[trained::{EV}]"]
    assert ev_case.find("failure") is not None
    assert "< min 0.999" in ev_case.find("failure").get("message")
    case_props = {p.get("name"): p.get("value") for p in ev_case.find("properties")}
    assert float(case_props["value"]) < 0.999
    assert case_props["limit"] == ">= 0.999" and case_props["min"] == "0.999"
    assert case_props["status"] == "fail"
    l0_case = cases[f"threshold[trained::{L0}]"]
    assert l0_case.find("failure") is None
    assert {p.get("name") for p in l0_case.find("properties")} >= {"value", "stderr", "max"}


def test_collect_only_does_not_evaluate(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ min = 0.5 }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["saebench::evaluate[[]trained[]]",
                                 f"saebench::threshold[[]trained::{EV}[]]"])
    assert result.ret == 0
    assert not (pytester.path / "saebench-results.json").exists()
    assert "= saebench =" not in result.stdout.str()
    # the slow start (the imports, reading the checkpoints) is said as it happens
    result.stderr.fnmatch_lines(["saebench: loading torch, transformer_lens and sae_lens ...",
                                 "saebench: 1 checkpoint(s) read and checked in * s; *"])
    quiet = pytester.runpytest(f"--sae-path={tiny_world.trained}", "--collect-only", "-qq")
    assert "saebench: loading" not in quiet.stderr.str()


def test_keyword_marker_and_last_failed_selection(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ min = 0.999 }}\n"l0" = {{ max = 128 }}')
    pytester.makepyfile(test_other="def test_plain():\n    assert True\n")
    args = [f"--sae-path={tiny_world.trained}"]
    pytester.runpytest(*args, "-k", "l0").assert_outcomes(passed=1, deselected=3)
    pytester.runpytest(*args, "-m", "saebench").assert_outcomes(passed=2, failed=1,
                                                               deselected=1)
    pytester.runpytest(*args).assert_outcomes(passed=3, failed=1)
    result = pytester.runpytest(*args, "--lf")
    result.assert_outcomes(failed=1, deselected=3)


def test_sweep_directory_parametrizes_checkpoints(pytester, tiny_world, tmp_path):
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_world.trained, sweep / "a_trained")
    shutil.copytree(tiny_world.random, sweep / "b_random")
    _project(pytester, f'"{EV}" = {{ min = 0.8 }}')
    result = pytester.runpytest(f"--sae-path={sweep}", "-v")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines([
        "*evaluate[[]sweep/a_trained[]] PASSED*",
        f"*threshold[[]sweep/a_trained::{EV}[]] PASSED*",
        "*evaluate[[]sweep/b_random[]] PASSED*",
        f"*threshold[[]sweep/b_random::{EV}[]] FAILED*",
    ])


def test_without_sae_path_the_plugin_is_inert(pytester):
    pytester.makefile(".toml", pyproject='[tool.pytest-saebench]\nnot-a-key = 1\n')
    pytester.makepyfile(test_x="def test_x():\n    assert True\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "= saebench =" not in out and "saebench: suite" not in out
    assert not (pytester.path / "saebench-results.json").exists()


@pytest.mark.parametrize("argv", [["--help"], ["--collect-only", "-q"]])
def test_help_and_plain_runs_never_import_torch(pytester, argv):
    pytester.makepyfile(test_x="def test_x():\n    assert True\n")
    code = ("import sys, pytest; rc = pytest.main(sys.argv[1:]); "
            "print('TORCH-IMPORTED' if 'torch' in sys.modules else 'TORCH-FREE'); "
            "sys.exit(int(rc))")
    result = pytester.run(sys_executable(), "-c", code, *argv)
    assert result.ret == 0
    assert "TORCH-FREE" in result.stdout.str()


def test_a_missing_sae_path_fails_before_anything_heavy_is_imported(pytester):
    pytester.makepyfile(test_x="def test_x():\n    assert True\n")
    code = ("import sys, time, pytest; t = time.time(); rc = pytest.main(sys.argv[1:]); "
            "print('TORCH-IMPORTED' if 'torch' in sys.modules else 'TORCH-FREE'); "
            "sys.exit(int(rc))")
    result = pytester.run(sys_executable(), "-c", code, "--sae-path=no/such/ckpt")
    assert result.ret == 4
    assert "TORCH-FREE" in result.stdout.str()
    assert "--sae-path no/such/ckpt: no such file or directory" in result.stderr.str()


def sys_executable() -> str:
    import sys

    return sys.executable


SP_TOP1 = "sparse_probing.sae.sae_top_1_test_accuracy"
TINY_SP = """
[tool.pytest-saebench.evals.sparse_probing]
dataset_names = ["testament_kjv"]
probe_train_set_size = 200
probe_test_set_size = 100
context_length = 32
probe_epochs = 10
"""


def test_gate_on_an_unselected_eval_is_skipped(pytester, tiny_world):
    _project(pytester, f'"{SP_TOP1}" = {{ min = 0.5 }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*its eval is not in select-evals (core)*"])


def test_sparse_probing_gate_through_the_plugin(pytester, tiny_world):
    _project(pytester, f'"{SP_TOP1}" = {{ min = 0.5 }}\n"l0" = {{ min = 1 }}', TINY_SP)
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                                "--saebench-evals=core,sparse_probing", "-v")
    result.assert_outcomes(passed=3)
    data = json.loads((pytester.path / "saebench-results.json").read_text())
    sp = data["saes"]["trained"]["evals"]["sparse_probing"]
    assert sp["eval_result_metrics"]["sae"]["sae_top_100_test_accuracy"] is None
    assert sp["eval_config"]["dataset_names"] == ["testament_kjv"]


def test_unknown_selected_eval_is_a_usage_error(pytester, tiny_world):
    _project(pytester, '"l0" = { min = 1 }')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}", "--saebench-evals=cor")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown eval 'cor'; did you mean 'core'?" in result.stderr.str()


@pytest.mark.slow
def test_xdist_evaluates_each_checkpoint_once(pytester, tiny_world, tmp_path):
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_world.trained, sweep / "a")
    shutil.copytree(tiny_world.topk, sweep / "b")
    _project(pytester, f'"{EV}" = {{ min = 0.5 }}\n"l0" = {{ min = 1 }}\n'
                       '"core.sparsity.l1" = { min = 0 }\n"cossim" = { min = 0.5 }',
             f'[tool.pytest-saebench.regression]\n"{EV}" = {{ max_drop = 0.01 }}')
    result = pytester.runpytest_subprocess(f"--sae-path={sweep}", "-n", "2",
                                           "--junitxml=junit.xml",
                                           f"--saebench-baseline=ckpt:{tiny_world.random}")
    result.assert_outcomes(passed=12)
    data = json.loads((pytester.path / "saebench-results.json").read_text())
    # the ckpt: baseline is shared by both checkpoints and also evaluated once
    assert data["evaluation_counts"] == {"sweep/a": 1, "sweep/b": 1, "baseline:random": 1}
    assert {s["evaluated_by"] for s in data["saes"].values()} <= {"gw0", "gw1"}
    for entry in data["saes"].values():
        assert entry["evals"]["core"]["eval_result_metrics"]["sparsity"]["l0"] > 0
    assert len(data["checks"]) == 10
    assert {c["status"] for c in data["checks"] if c["kind"] == "regression"} == {"improved"}
    root = ET.parse(pytester.path / "junit.xml").getroot()
    props = {p.get("name") for p in root.find("testsuite").find("properties")}
    assert {"saebench.suite", "saebench.sae.sweep/a.sha256"} <= props
    result.stdout.fnmatch_lines(["*sweep/a*explained_variance*PASS*"])


def test_show_cli_prints_the_table_of_a_results_file(pytester, tiny_world, capsys):
    from pytest_saebench.cli import main

    _project(pytester, f'"{EV}" = {{ min = 0.999 }}')
    pytester.runpytest(f"--sae-path={tiny_world.trained}")
    path = pytester.path / "saebench-results.json"
    assert main(["show", str(path)]) == 1  # the gate in the file failed
    out = capsys.readouterr().out
    assert f"trained  {EV}" in out and "FAIL" in out and "core.sparsity.l0" in out
    (pytester.path / "bad.json").write_text("{}")
    assert main(["show", str(pytester.path / "bad.json")]) == 2
    assert "not a pytest-saebench results file" in capsys.readouterr().err


def test_github_step_summary_and_annotations(pytester, tiny_world, monkeypatch, tmp_path):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(pytester.path))
    _project(pytester, f'"{EV}" = {{ min = 0.999 }}\n"l0" = {{ max = 128 }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}")
    assert result.ret == 1
    text = summary.read_text()
    assert "| ❌ fail | threshold | trained | `core.reconstruction_quality.explained_varia" in text
    assert "| ✅ pass | threshold | trained | `core.sparsity.l0` |" in text
    pyproject = pytester.path / "pyproject.toml"
    line = next(i for i, t in enumerate(pyproject.read_text().splitlines(), 1) if EV in t)
    # Relative to the workspace: GitHub attaches annotations only to repository paths.
    result.stdout.fnmatch_lines([
        f"::error file=pyproject.toml,line={line}::{EV} = * < min 0.999 (sae trained, suite fast)"])
    pytester.runpytest(f"--sae-path={tiny_world.trained}", "--saebench-gh-summary=never")
    assert summary.read_text() == text  # nothing appended


def test_annotation_paths_outside_the_workspace_stay_absolute(monkeypatch, tmp_path):
    from pytest_saebench.reporting.github import annotations

    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path / "repo"))
    check = {"status": "fail", "metric": "m", "message": "m = 1 < min 2"}
    inside = {("threshold", "m"): f"{tmp_path}/repo/sub/pyproject.toml:7"}
    outside = {("threshold", "m"): "/elsewhere/pyproject.toml:7"}
    assert annotations([check], inside) == ["::error file=sub/pyproject.toml,line=7::m = 1 < min 2"]
    assert annotations([check], outside) == [
        "::error file=/elsewhere/pyproject.toml,line=7::m = 1 < min 2"]


def test_step_summary_gives_the_reason_of_a_row_without_value():
    from pytest_saebench.reporting.github import summary_markdown

    skip = {"status": "skip", "sae": "s", "metric": "tpp.x", "value": None, "stderr": None,
            "limit": ">= 0.1", "message": "tpp.x not computed: N not in n_values | (2, 5)\nmore"}
    text = summary_markdown([skip], [], "fast")
    assert "null" not in text
    assert "| — | >= 0.1 |  |  |  | tpp.x not computed: N not in n\\_values \\| (2, 5) |" in text


def test_step_summary_leads_with_a_headline_failures_first_and_shared_notes(monkeypatch):
    from pytest_saebench.reporting.github import annotations, summary_markdown

    def gate(sae, status, metric, message, value=None, base=None):
        return {"status": status, "sae": sae, "metric": metric, "value": value,
                "stderr": None, "limit": ">= 0.5", "kind": "regression" if base else
                "threshold", "baseline": base, "delta": None if base is None else
                value - base, "message": message}

    why = "no baseline at baselines/saebench.json; create it with: pytest --sae-path c"
    checks = [gate("good", "pass", "core.sparsity.l0", "", 30.0),
              *[gate(s, "skip", m, f"{why} (sae {s}, suite fast)") for s in ("good", "bad")
                for m in ("core.sparsity.l0", "tpp.x")],
              gate("bad", "fail", "core.reconstruction_quality.explained_variance",
                   "core.reconstruction_quality.explained_variance = 0.4 < min 0.5 (sae bad, "
                   "suite fast)", 0.4),
              gate("good", "warn", "absorption.y", "absorption.y = 0.9 > max 0.8 (sae good, "
                   "suite fast)", 0.9),
              gate("good", "pass", "core.reconstruction_quality.explained_variance", "",
                   0.91, base=0.9)]
    text = summary_markdown(checks, [], "fast", html="out/saebench-report.html")
    lines = text.splitlines()
    assert lines[0] == "### pytest-saebench: 1 failed, 1 warned, 2 passed, 4 skipped (fast suite)"
    # passed, failed, errors, inconclusive, warned, skipped
    assert "| bad | 0 | 1 | 0 | 0 | 0 | 2 |" in text and "| good | 2 | 0 | 0 | 0 | 1 | 2 |" in text
    assert text.index("| bad | 0 | 1") < text.index("| good | 2 | 0")  # failing first
    gates = [line for line in lines if line.startswith("| ") and "`" in line]
    assert gates[0].startswith("| ❌ fail |") and gates[1].startswith("| ⚠️ warn |")
    assert "`saebench-report.html`" in text
    assert text.count("no baseline at") == 1 and "1. no baseline at" in text
    assert "(4 gates)" in text and text.count("| note 1 |") == 4
    assert "| 0.91 | >= 0.5 | 0.9 | +0.01 |" in text  # baseline and delta filled
    warned = annotations([checks[6]], {})
    assert warned == ["::warning::absorption.y = 0.9 > max 0.8 (sae good, suite fast)"]


def test_step_summary_is_size_bounded():
    from pytest_saebench.reporting.github import MAX_BYTES, summary_markdown

    checks = [{"status": "pass", "sae": f"sae{i}", "metric": "core.sparsity.l0", "value": 1.0,
               "stderr": 0.1, "limit": ">= 0"} for i in range(40000)]
    text = summary_markdown(checks, [], "fast")
    assert len(text.encode()) <= MAX_BYTES
    assert "more gate(s) not shown" in text
    small = summary_markdown(checks[:3], [], "fast")
    assert small.count("| ✅ pass |") == 3 and "not shown" not in small


def test_progress_line_per_finished_eval_and_evaluation_time(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ min = 0.5 }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["saebench: trained: core * s (1/1 evals, * s)",
                                 "saebench: evaluation time * s (trained * s); the gate items*"])
    quiet = pytester.runpytest(f"--sae-path={tiny_world.trained}", "-qq")
    assert "saebench: trained: core" not in quiet.stdout.str()
