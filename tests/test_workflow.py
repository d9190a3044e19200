"""The example workflows: clean under a GitHub Actions security linter and the workflow schema,
installing the plugin as README says, and their steps run as written in README's install (a
venv that sees nothing else, tests/user_install.py): sae-quality.yml's pull request, push and
retrained pull request on SAELens's layout, and sae-train-and-gate.yml's seeds, its training
matrix (main's replicates) and its gate on the offline Hub world, for a push and a pull
request."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.user_install import README_PLUGIN, ROOT, readme_install

FLOWS = ROOT / "example_tests" / ".github" / "workflows"
FILES = sorted(FLOWS.glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}  # v\d+(\.\d+)*$")
PUSH_FLAG = "${{ github.event_name == 'push' && '--saebench-update-baseline' || '' }}"
MAIN_FLAG = ("${{ github.event_name != 'pull_request' && github.ref == 'refs/heads/main' && "
             "'--saebench-update-baseline' || '' }}")
QUICK_START_ARGS = "--training-tokens 49152 --context-size 32 --batch-tokens 512"
# Jobs that run neither the plugin nor the training (sae-train-and-gate's plan: the seeds).
NO_PLUGIN = {("sae-train-and-gate.yml", "plan")}


def _flow(name: str) -> dict:
    return yaml.safe_load((FLOWS / name).read_text())


def _steps(flow: dict, job: str) -> dict[str, dict]:
    return {s.get("name", s.get("uses", "").split("@")[0]): s for s in flow["jobs"][job]["steps"]}


def test_workflows_pass_zizmor_and_the_workflow_schema():
    lint = subprocess.run(["zizmor", "--offline", "--no-progress", str(FLOWS)],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-4000:] + lint.stderr[-2000:]
    schema = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows",
                             *map(str, FILES)], capture_output=True, text=True)
    assert schema.returncode == 0, schema.stdout + schema.stderr
    bot = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.dependabot",
                          str(FLOWS.parent / "dependabot.yml")], capture_output=True, text=True)
    assert bot.returncode == 0, bot.stdout + bot.stderr


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_actions_pinned_by_commit_least_privilege_and_no_persisted_token(path):
    text = path.read_text()
    uses = [line.split("uses:", 1)[1].strip() for line in text.splitlines() if "uses:" in line]
    assert uses and all(PINNED.match(u) for u in uses), uses  # SHA, and its version beside it
    flow = yaml.safe_load(text)
    assert flow["permissions"] == {}
    for name, job in flow["jobs"].items():
        assert job["permissions"] == {"contents": "read"}, name
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_job_installs_the_plugin_as_readme_says(path):
    flow = yaml.safe_load(path.read_text())
    assert f'pip install "{flow["env"]["PLUGIN"]}"' == readme_install()[1]
    assert README_PLUGIN.fullmatch(readme_install()[1])
    for job in flow["jobs"]:
        if (path.name, job) in NO_PLUGIN:
            continue
        install = _steps(flow, job)["Install"]["run"].splitlines()
        assert install[0].startswith("pip install torch ")  # torch first: the user's build
        assert install[1] == 'pip install "$PLUGIN"'


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_a_red_main_says_in_its_log_that_no_baseline_was_saved(path, tmp_path):
    # The save steps carry the implicit success(): a failed push saves nothing, and every
    # pull request after it would say "no baseline" with no word in main's log why.
    flow = yaml.safe_load(path.read_text())
    for job, body in flow["jobs"].items():
        names = [s.get("name", "") for s in body["steps"]]
        saves = [i for i, s in enumerate(body["steps"])
                 if s.get("uses", "").startswith("actions/cache/save@")]
        if not saves:
            continue
        said = names.index("Say that no baseline was saved (main, red)")
        assert said > saves[0], (job, names)
        step = body["steps"][said]
        assert step["if"].startswith("failure() && ") and (
            "'push'" in step["if"] or "'pull_request'" in step["if"]), step["if"]
        done = subprocess.run(step["run"], shell=True, cwd=tmp_path, capture_output=True,
                              text=True, env={"PATH": "/usr/bin:/bin"})
        assert done.returncode == 0 and done.stdout.startswith("::error title=") and \
            "not saved as main's baseline" in done.stdout, done.stdout


def _run_step(step: dict, flow: dict, repo: Path, user, event: str, **env: str):
    """One ``run:`` step as written, with the workflow's and the step's env, as GitHub runs
    it for ``event`` (offline here: nothing is downloaded)."""
    values = {**flow["env"], **{k: str(v) for k, v in (step.get("env") or {}).items()},
              "GITHUB_EVENT_NAME": event, "HF_HUB_OFFLINE": "1", **env}
    if values.get("UPDATE") in (PUSH_FLAG, MAIN_FLAG):
        values["UPDATE"] = "--saebench-update-baseline" if event == "push" else ""
    assert "${{" not in " ".join(values.values()) + step["run"], values
    return subprocess.run(step["run"], shell=True, cwd=repo, env={**user.env, **values},
                          capture_output=True, text=True, timeout=900)


def _regressions(repo: Path) -> dict[str, dict]:
    """The run's regression gates on core (the one eval these runs select)."""
    checks = json.loads((repo / "saebench-results.json").read_text())["checks"]
    return {f"{c['sae']}::{c['metric']}": c for c in checks
            if c["kind"] == "regression" and c["metric"].startswith("core.")}


@pytest.mark.slow
def test_sae_quality_on_saelens_layout_pull_request_push_and_a_retrained_pull_request(
        tmp_path, user_install, reference_cache):
    flow = _flow("sae-quality.yml")
    gate = _steps(flow, "saebench")["Gate the checkpoints"]
    assert gate["env"]["UPDATE"] == PUSH_FLAG
    assert flow["env"]["RUN"] == "checkpoints" and flow["env"]["FINAL"] == "final"
    repo = tmp_path / "repo"
    (repo / "example_tests").mkdir(parents=True)
    shutil.copy(ROOT / "example_tests" / "test_sae_quality.py", repo / "example_tests")
    # the example's table, core only (this repository's choice, to keep the test short)
    pyproject = (ROOT / "example_tests" / "pyproject.toml").read_text().replace(
        "[tool.pytest-saebench]\n", '[tool.pytest-saebench]\nselect-evals = ["core"]\n', 1)
    (repo / "pyproject.toml").write_text(pyproject)
    good = ROOT / "example_tests" / "checkpoints" / "good"
    shutil.copytree(good, repo / "checkpoints" / "7fa0ce03" / "6144")  # SAELens: run / tokens
    shutil.copytree(good, repo / "final")
    # what the cache step restores after earlier runs (tests/test_reference.py filled it)
    shutil.copytree(reference_cache, repo / ".pytest_cache" / "d" / "saebench")
    baseline = repo / "baselines" / "saebench.json"

    # A pull request before main has a baseline: the regression gates skip, saying so.
    done = _run_step(gate, flow, repo, user_install, "pull_request")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    skipped = _regressions(repo)
    assert skipped and all(c["status"] == "skip" and "this is a pull request" in c["message"]
                           for c in skipped.values()), skipped
    assert not baseline.exists()
    # A push to main: the same gates; the results become the baseline.
    done = _run_step(gate, flow, repo, user_install, "push")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    for out in ("junit.xml", "saebench-results.json", "saebench-report.html",
                "baselines/saebench.json"):
        assert (repo / out).is_file(), out
    # Another push, from a fresh checkout as GitHub runs it: the restore step runs on pushes
    # too, so main's baseline comes back from the cache and this run joins its history.
    restore = _steps(flow, "saebench")["Restore main's baseline"]
    assert "if" not in restore and restore["with"]["restore-keys"] == "saebench-baseline-"
    saved = baseline.read_bytes()  # what the save step put in the cache
    fresh = tmp_path / "fresh"
    for part in ("example_tests", "checkpoints", "final", ".pytest_cache"):
        shutil.copytree(repo / part, fresh / part)
    shutil.copy(repo / "pyproject.toml", fresh / "pyproject.toml")
    (fresh / "baselines").mkdir()
    (fresh / "baselines" / "saebench.json").write_bytes(saved)
    repo, baseline = fresh, fresh / "baselines" / "saebench.json"
    done = _run_step(gate, flow, repo, user_install, "push", GITHUB_SHA="b" * 40)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    history = json.loads(baseline.read_text())["history"]
    assert len(history) == 2 and history[-1]["commit"] == "b" * 40, history
    page = (repo / "saebench-report.html").read_text()
    assert "Main&#x27;s history" in page or "Main's history" in page
    assert "2 run(s) kept in the baseline file" in page and 'id="history-core.' in page
    # A pull request that retrained: SAELens wrote the run under another id; each of its
    # checkpoints is compared with main's at the same tokens seen.
    (repo / "checkpoints" / "7fa0ce03").rename(repo / "checkpoints" / "e3d4cbd2")
    done = _run_step(gate, flow, repo, user_install, "pull_request")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    compared = _regressions(repo)
    mid = {k: c for k, c in compared.items() if k.startswith("checkpoints/e3d4cbd2/6144::")}
    assert mid and all(c["status"] == "pass" and c["baseline_entry"] ==
                       "checkpoints/7fa0ce03/6144" for c in mid.values()), mid
    assert all("the same step (6,144 tokens) of another training run" in c["message"]
               for c in mid.values())
    # the same windows as main's run: each rule with z pairs its difference with main's
    assert all(re.search(r"paired over (64|128) units with identical inputs", c["message"])
               for c in mid.values() if "z " in c["limit"] and c["stderr"]), mid
    assert all(c["status"] == "pass" for c in compared.values()), compared
    # every gated metric carries its random SAE's value and its z against it (null on)
    kl = compared["final::core.model_behavior_preservation.kl_div_score"]
    assert kl["null"] < 0.6 and kl["signal_z"] > 10, kl


@pytest.mark.slow
def test_train_and_gate_trains_mains_replicates_and_judges_a_retrain_against_them(
        tmp_path, user_install, hub_world):
    flow = _flow("sae-train-and-gate.yml")
    plan = _steps(flow, "plan")["Seeds to train"]
    train = _steps(flow, "train")["Train"]
    gate = _steps(flow, "gate")["Gate what the training wrote"]
    assert flow["env"]["TRAIN"] == "python example_tests/train_sae.py"
    assert flow["jobs"]["train"]["strategy"]["matrix"]["seed"] == \
        "${{ fromJSON(needs.plan.outputs.seeds) }}"
    repo = tmp_path / "repo"
    (repo / "example_tests").mkdir(parents=True)
    for name in ("train_sae.py", "test_sae_quality.py"):
        shutil.copy(ROOT / "example_tests" / name, repo / "example_tests")
    # README's pyproject, core only as its quick start says
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Configure"):].split("```toml", 1)[1].split("```", 1)[0]
    tomllib.loads(table)
    (repo / "pyproject.toml").write_text(table.replace(
        "[tool.pytest-saebench]\n", '[tool.pytest-saebench]\nselect-evals = ["core"]\n', 1))
    hf = {"HF_HOME": str(hub_world / "hf"), "HF_DATASETS_OFFLINE": "1",
          "TRANSFORMERS_OFFLINE": "1"}
    # The example's hand-written tests, copied as README says: they pass on what the quick
    # start trains (their bounds are README's table; frac_dead, which it leaves ungated, skips).
    tests = {"TESTS": "example_tests/test_sae_quality.py"}

    def seeds(event: str, labelled: bool = False, asked: str = "") -> list[int]:
        out = tmp_path / "GITHUB_OUTPUT"
        out.unlink(missing_ok=True)
        done = _run_step(plan, flow, repo, user_install, event, EVENT=event, ASKED=asked,
                         LABELLED="true" if labelled else "false", GITHUB_OUTPUT=str(out))
        assert done.returncode == 0, done.stderr
        return json.loads(out.read_text().strip().removeprefix("seeds="))

    assert seeds("push") == [0, 1, 2] and seeds("pull_request") == [0]
    assert seeds("pull_request", labelled=True) == [0, 1, 2]
    assert seeds("workflow_dispatch", asked="5") == [0, 1, 2, 3, 4]
    bad = _run_step(plan, flow, repo, user_install, "workflow_dispatch", EVENT="x",
                    ASKED="3; rm -rf /", LABELLED="false", GITHUB_OUTPUT=str(tmp_path / "o"))
    assert bad.returncode == 1 and "whole number" in bad.stderr
    runs = {}
    for event in ("push", "pull_request"):  # main trains its replicates; a PR retrains once
        shutil.rmtree(repo / "runs", ignore_errors=True)
        for seed in seeds(event):  # the matrix's jobs, then the artifacts merged into runs/
            trained = _run_step(train, flow, repo, user_install, event, SEED=str(seed),
                                TRAIN_ARGS=QUICK_START_ARGS, **hf)
            assert trained.returncode == 0, trained.stderr[-3000:]
            # the quick start says what it does before SAELens's bar can move (every 100 steps)
            assert "train_sae: 96 steps of 512 tokens" in trained.stdout and \
                "stays at 0 % until the end" in trained.stdout, trained.stdout[-2000:]
        runs[event] = sorted(p.name for p in (repo / "runs").iterdir())
        done = _run_step(gate, flow, repo, user_install, event, **hf, **tests)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        cases = list(ET.parse(repo / "junit.xml").getroot().iter("testcase"))
        mine = {c.get("name"): c for c in cases if c.get("classname", "").endswith(
            "test_sae_quality")}
        zero = [c for name, c in mine.items() if name.startswith("test_encoding_zero[")]
        assert len(zero) == 3 * len(runs[event]) and len(mine) == 5 * len(zero), list(mine)
        for name, case in mine.items():  # passed, or (frac_dead) skipped with its reason
            outcome = [child.tag for child in case if child.tag != "properties"]
            assert outcome == [] or (outcome == ["skipped"] and name.startswith(
                "test_few_dead_latents[") and "no threshold configured" in
                case.find("skipped").get("message", "")), (name, outcome)
    assert runs == {"push": ["seed0", "seed1", "seed2"], "pull_request": ["seed0"]}
    saved = json.loads((repo / "baselines" / "saebench.json").read_text())
    assert sorted({e["run"]["seed"] for e in saved["saes"].values()}) == [0, 1, 2]
    # the pull request's retrain against main's three runs at each position: never a fail
    # from a harmless retrain, and each gate says which noise decided it
    compared = _regressions(repo)
    assert len(compared) == 9 and not [c for c in compared.values() if c["status"] == "fail"]
    for c in compared.values():
        assert c["noise"] == "between runs" and c["replicates"] == 3, c
        assert "vs main's 3 runs at " in c["message"], c
