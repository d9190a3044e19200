"""The user-facing fixtures and marker, through pytester."""

from __future__ import annotations

from tests.conftest import SMALL_PYPROJECT

USER_TESTS = '''
import pytest
import torch


def test_sae_and_model(sae, saebench_model, saebench_sae_id):
    assert sae.cfg.d_in == saebench_model.cfg.d_model
    assert saebench_sae_id in ("trained", "random")


def test_metrics_mapping(sae_metrics):
    assert 0 < sae_metrics["l0"] <= 128
    assert sae_metrics["core.sparsity.l0"] == sae_metrics["l0"]
    assert "core.reconstruction_quality.explained_variance" in sae_metrics


def test_metric_assert_message(sae_metrics):
    assert sae_metrics["explained_variance"] > 0.99


def test_check(saebench_check):
    value = saebench_check("explained_variance", min=0.5)
    assert isinstance(value, float)


@pytest.mark.saebench(evals=["core"])
def test_results(saebench_results):
    assert saebench_results.evals["core"].metrics["core.sparsity.l0"] > 0


def test_unknown_metric(sae_metrics):
    with pytest.raises(KeyError, match="did you mean"):
        sae_metrics["explained_variancee"]
'''


def test_fixtures_with_two_checkpoints(pytester, tiny_world):
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                                f"--sae-path={tiny_world.random}", "-v")
    # The random SAE fails the EV check in test_check; trained fails only the strict assert.
    result.assert_outcomes(passed=11, failed=3)  # 12 user tests + 2 evaluate items
    out = result.stdout.str()
    assert "test_metric_assert_message[trained] FAILED" in out
    assert "test_check[random] FAILED" in out
    result.stdout.fnmatch_lines([
        "*assert 0.9* ± * [[]core.reconstruction_quality.explained_variance (sae trained, "
        "suite fast)[]] > 0.99*",
        "*core.reconstruction_quality.explained_variance = * < min 0.5 (sae random, suite fast)",
    ])


def test_fixtures_skip_without_sae_path(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=6)
    result.stdout.fnmatch_lines(["*no SAE checkpoint to evaluate: pass --sae-path PATH*"])


def test_fixture_docstrings_are_listed(pytester):
    result = pytester.runpytest("--fixtures")
    out = result.stdout.str()
    for name in ("sae ", "saebench_model", "saebench_results", "sae_metrics", "saebench_check",
                 "saebench_sae_id"):
        assert name in out, name
    assert "decoder-norm folded as SAEBench evaluates it" in out
    assert "only the evals the test's" in out


def test_marker_asks_for_an_eval_outside_the_suite(pytester, tiny_world):
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT)
    pytester.makepyfile(test_user='''
import pytest

@pytest.mark.saebench(evals=["absorption"])
def test_results(saebench_results):
    pass
''')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*eval 'absorption' is not part of suite 'fast'*"])


def test_check_without_bounds_follows_the_configured_thresholds(pytester, tiny_world):
    # What the copied example tests rely on: saebench_check(id) applies pyproject's bound for
    # the metric, fails a checkpoint outside it, and skips, saying so, where none is set.
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT + '\n[tool.pytest-saebench.thresholds]\n'
                      '"core.reconstruction_quality.explained_variance" = { min = 0.5 }\n')
    pytester.makepyfile(test_user='''
def test_configured(saebench_check):
    assert saebench_check("explained_variance") > 0.5


def test_unconfigured(saebench_check):
    saebench_check("core.misc_metrics.frac_dead")
''')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}",
                                f"--sae-path={tiny_world.random}", "-v", "-rs")
    out = result.stdout.str()
    assert "test_configured[trained] PASSED" in out and "test_configured[random] FAILED" in out
    result.stdout.fnmatch_lines([
        "*core.reconstruction_quality.explained_variance = * < min 0.5 (sae random, suite fast)",
        "*saebench_check('core.misc_metrics.frac_dead'): no min or max given and no threshold "
        "configured for core.misc_metrics.frac_dead*"])
    assert out.count("test_unconfigured[") >= 2 and "test_unconfigured[trained] SKIPPED" in out
