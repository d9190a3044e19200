"""pytest's own counters around the generated gate items, and evaluating only the evals the
selected items read (-k, --lf)."""

from __future__ import annotations

import json

import pytest

EV = "core.reconstruction_quality.explained_variance"
TWO_EVALS = f"""
[tool.pytest-saebench]
select-evals = ["core", "properties"]

[tool.pytest-saebench.thresholds]
"{EV}" = {{ min = 0.5 }}
"core.sparsity.l0" = {{ max = 0.5 }}

[tool.pytest-saebench.evals.core]
batch_size_prompts = 4
n_eval_reconstruction_batches = 2
n_eval_sparsity_variance_batches = 4
"""
USER_TEST = """
def test_plain():
    assert True
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project gating core and properties, with one plain test of its own."""
    pytester.makefile(".toml", pyproject=TWO_EVALS)
    pytester.makepyfile(test_user=USER_TEST)
    return pytester


def _total(pytester: pytest.Pytester, sae: str) -> int:
    """Items pytest lists for the project (one plain test, evaluate, thresholds)."""
    listed = pytester.runpytest(f"--sae-path={sae}", "--collect-only", "-q")
    return sum(1 for line in listed.stdout.lines if "::" in line)


def test_collected_count_and_collect_only_total_include_gate_items(project, tiny_world):
    total = _total(project, tiny_world.trained)
    # 1 plain + 1 evaluate + 2 thresholds + 8 properties checks (default min 1.0)
    assert total == 12
    only = project.runpytest(f"--sae-path={tiny_world.trained}", "--collect-only", "-q")
    only.stdout.fnmatch_lines([f"{total} tests collected*"])
    selected = project.runpytest(f"--sae-path={tiny_world.trained}", "--collect-only",
                                 "-k", "explained_variance")
    selected.stdout.fnmatch_lines([f"collected {total} items / {total - 1} deselected / "
                                   "1 selected", f"*1/{total} tests collected*"])


def test_k_evaluates_only_the_evals_the_selected_gates_read(project, tiny_world):
    result = project.runpytest(f"--sae-path={tiny_world.trained}", "-k", "explained_variance")
    result.assert_outcomes(passed=1, deselected=11)
    result.stdout.fnmatch_lines(["saebench: the selected items read 1 of the 2 evals of "
                                 "suite fast: core",
                                 "saebench: trained: core * s (1/1 evals, * s)"])
    assert "trained: properties" not in result.stdout.str()
    evals = json.loads((project.path / "saebench-results.json").read_text())
    assert set(evals["saes"]["trained"]["evals"]) == {"core"}


def test_a_selected_evaluate_item_or_results_test_runs_every_eval(project, tiny_world):
    result = project.runpytest(f"--sae-path={tiny_world.trained}", "-k", "evaluate")
    result.assert_outcomes(passed=1, deselected=11)
    result.stdout.fnmatch_lines(["saebench: trained: properties * s (2/2 evals, * s)"])
    assert "the selected items read" not in result.stdout.str()
    project.makepyfile(test_results="""
        import pytest

        @pytest.mark.saebench(evals=["properties"])
        def test_marked(sae_metrics):
            assert sae_metrics["properties.checks.finite_outputs"] == 1.0
    """)
    marked = project.runpytest(f"--sae-path={tiny_world.trained}", "-k", "test_marked")
    marked.assert_outcomes(passed=1)
    marked.stdout.fnmatch_lines(["saebench: the selected items read 1 of the 2 evals of "
                                 "suite fast: properties"])
    assert "trained: core" not in marked.stdout.str()


def test_last_failed_counts_and_evaluates_only_the_failed_gate(project, tiny_world):
    first = project.runpytest(f"--sae-path={tiny_world.trained}")
    first.assert_outcomes(passed=9, skipped=2, failed=1)
    again = project.runpytest(f"--sae-path={tiny_world.trained}", "--lf")
    again.assert_outcomes(failed=1, deselected=11)
    again.stdout.fnmatch_lines(["collected 12 items / 11 deselected / 1 selected",
                                "saebench: trained: core * s (1/1 evals, * s)"])
    assert "trained: properties" not in again.stdout.str()


def test_progress_is_printed_live_not_into_the_captured_output(project, tiny_world):
    # a real subprocess: in-process runs do not capture the way a terminal run does
    result = project.runpytest_subprocess(f"--sae-path={tiny_world.trained}")
    result.assert_outcomes(passed=9, skipped=2, failed=1)
    out = result.stdout.str()
    live = out.index("saebench: trained: core")
    assert live < out.index("= FAILURES =")
    assert "Captured stdout call" not in out


def test_progress_on_a_terminal_draws_a_bar_per_checkpoint_and_keeps_the_lines():
    import io

    from pytest_saebench.reporting.progress import Progress

    lines: list[str] = []
    screen = io.StringIO()
    progress = Progress(lines.append, lambda: True, stream=lambda: screen)
    progress.started("good", "core", 0, 2)
    progress.finished("good", "core", 1.5, 1, 2, 1.5)
    progress.started("good", "tpp", 1, 2)
    progress.finished("good", "tpp", 0.5, 2, 2, 2.0)
    out = screen.getvalue()
    assert "saebench good:" in out and "core" in out and "1/2" in out
    assert "saebench: good: core 1.5 s (1/2 evals, 1.5 s)\n" in out
    assert "saebench: good: tpp 0.5 s (2/2 evals, 2.0 s)\n" in out
    assert lines == [] and progress._bar is None  # written above the bar; closed when done
    plain = Progress(lines.append, lambda: False, stream=lambda: screen)
    plain.started("k8", "core", 0, 1)
    plain.finished("k8", "core", 0.25, 1, 1, 0.25)
    assert lines == ["saebench: k8: core 0.2 s (1/1 evals, 0.2 s)"]
