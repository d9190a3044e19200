"""A training run's checkpoints meet main's baseline: matched by their place in training
(SAELens's checkpoints/<run id>/<tokens>/, step folders, a user's step-pattern), not by ids
that carry a random run id."""

from __future__ import annotations

import json
import shutil

import pytest

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates.lineage import Match, compile_pattern, match, position
from tests.test_baseline import EV, _project

BASE = ["checkpoints/7fa0ce03/14336", "checkpoints/7fa0ce03/28672",
        "checkpoints/7fa0ce03/final_49152", "final"]


@pytest.mark.parametrize("sae_id, expected", [
    ("final", Match("final")),
    ("checkpoints/e3d4cbd2/14336",
     Match(BASE[0], "the same step (14,336 tokens) of another training run")),
    ("checkpoints/e3d4cbd2/20480",
     Match(BASE[0], "the nearest earlier step: baseline at 14,336 tokens, this checkpoint at "
                    "20,480")),
    ("checkpoints/e3d4cbd2/final_49152",
     Match(BASE[2], "the same step (49,152 tokens) of another training run")),
    ("checkpoints/e3d4cbd2/4096", "the baseline's checkpoints of series checkpoints/*/# are all "
                                  "later than this one (4,096 tokens; it has 14,336 and up)"),
    ("sweep/k16", ""),
])
def test_saelens_run_folders_match_by_tokens_seen(sae_id, expected):
    assert match(sae_id, BASE) == expected


def test_positions_of_the_known_layouts():
    assert position("checkpoints/e3d4cbd2/14336").series == "checkpoints/*/#"
    assert position("ladder/step_0200").step == 200
    assert position("run/trainer_0/checkpoints/ae_1000.pt").series == (
        "run/trainer_0/checkpoints/ae_#.pt")
    assert position("sweep/k16") is None and position("final") is None
    # a checkpoint outside any run still meets a baseline of one checkpoint
    assert match("mine", ["theirs"]) == Match("theirs", "the only checkpoint the baseline holds")


def test_a_step_pattern_names_run_and_step():
    pattern = compile_pattern(r"(?P<run>seed\d+)/it(?P<step>\d+)", "step-pattern")
    assert match("exp/seed3/it500", ["exp/seed1/it400", "exp/seed1/it600"], pattern) == Match(
        "exp/seed1/it400", "the nearest earlier step: baseline at 400 steps, this checkpoint "
                           "at 500")
    for bad, message in (("(", "not a regular expression"), (r"it\d+", r"\(\?P<step>")):
        with pytest.raises(SaebenchError, match=message):
            compile_pattern(bad, "pyproject.toml [tool.pytest-saebench] 'step-pattern'")


def _run_folder(root, run_id, steps, trained):
    for step in steps:
        shutil.copytree(trained, root / "checkpoints" / run_id / str(step))


@pytest.mark.parametrize("event", ["push", "pull_request"])
def test_a_retrained_run_is_compared_with_mains_run_step_by_step(pytester, tiny_world,
                                                                 monkeypatch, event):
    _project(pytester, "default = { max_drop = 0.01 }", 'baseline = "base.json"')
    main = pytester.path / "main"
    _run_folder(main, "7fa0ce03", (1000, 3000), tiny_world.trained)
    shutil.copytree(tiny_world.trained, main / "final")
    done = pytester.runpytest(f"--sae-path={main / 'checkpoints'}",
                              f"--sae-path={main / 'final'}", "--saebench-update-baseline")
    assert done.ret == 0, done.stdout.str()
    monkeypatch.setenv("GITHUB_EVENT_NAME", event)
    branch = pytester.path / "branch"
    _run_folder(branch, "e3d4cbd2", (500, 1000, 2000), tiny_world.trained)
    shutil.copytree(tiny_world.trained, branch / "final")
    result = pytester.runpytest(f"--sae-path={branch / 'checkpoints'}",
                                f"--sae-path={branch / 'final'}", "-rs")
    assert result.ret == 0, result.stdout.str()
    checks = {c["sae"]: c for c in json.loads(
        (pytester.path / "saebench-results.json").read_text())["checks"]
        if c["kind"] == "regression"}
    same, later = checks["checkpoints/e3d4cbd2/1000"], checks["checkpoints/e3d4cbd2/2000"]
    assert same["status"] == later["status"] == checks["final"]["status"] == "pass"
    assert same["baseline_entry"] == later["baseline_entry"] == "checkpoints/7fa0ce03/1000"
    assert "entry 'checkpoints/7fa0ce03/1000' (the same step (1,000 tokens) of another " \
           "training run)" in same["message"]
    assert "(the nearest earlier step: baseline at 1,000 tokens, this checkpoint at 2,000)" \
        in later["message"]
    assert checks["final"]["baseline_entry"] == "final"
    early = checks["checkpoints/e3d4cbd2/500"]
    assert early["status"] == "skip" and "hold nothing at or before 500 tokens (they hold " \
        "1,000 tokens, 3,000 tokens, the final SAE)" in early["message"]
    # the advice fits the run: a pull request must not overwrite main's baseline
    if event == "pull_request":
        assert "nothing to do here" in early["message"]
        assert "--saebench-update-baseline=" not in early["message"]
    else:
        assert "update it with: pytest --sae-path" in early["message"]
    assert EV in same["metric"]
