"""The example workflow's install and gate steps, run as written in a fresh virtual environment
laid out like a training repository (the plugin as the submodule tools/pytest-saebench)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
FLOWS = ROOT / "example_tests" / ".github" / "workflows"


def _steps(flow: dict, job: str) -> dict[str, dict]:
    return {s.get("name", s.get("uses", "")): s for s in flow["jobs"][job]["steps"]}


@pytest.mark.parametrize("name, jobs", [("sae-quality.yml", ["saebench"]),
                                        ("sae-quality-matrix.yml", ["shard", "merge"])])
def test_every_job_checks_out_the_plugin_it_installs(name, jobs):
    flow = yaml.safe_load((FLOWS / name).read_text())
    for job in jobs:
        steps = _steps(flow, job)
        checkout = steps["actions/checkout@v4"]
        assert checkout["with"]["submodules"] is True, (name, job)
        install = steps["Install"]["run"].splitlines()
        assert install[0].startswith("pip install torch ")  # torch is the user's choice
        assert install[1] == "pip install ./tools/pytest-saebench"
        assert "pip install pytest-saebench" not in (FLOWS / name).read_text()


def _training_repo(tmp_path: Path) -> Path:
    """What the workflow checks out: pyproject + tests, a checkpoint, the plugin submodule."""
    repo = tmp_path / "repo"
    plugin = repo / "tools" / "pytest-saebench"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        (plugin / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, plugin / rel)
    shutil.copy(ROOT / "example_tests" / "pyproject.toml", repo / "pyproject.toml")
    (repo / "example_tests").mkdir()
    shutil.copy(ROOT / "example_tests" / "test_sae_quality.py", repo / "example_tests")
    shutil.copytree(ROOT / "example_tests" / "checkpoints" / "good",
                    repo / "checkpoints" / "latest")
    return repo


def _venv(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fresh venv that sees this environment's packages (torch and the rest are then
    already satisfied and nothing is downloaded) and whose own site-packages come first."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "base-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(venv), "HF_HUB_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    return venv, env


@pytest.mark.slow
def test_workflow_install_and_gate_steps_run_as_written(tmp_path, reference_cache):
    flow = yaml.safe_load((FLOWS / "sae-quality.yml").read_text())
    steps = _steps(flow, "saebench")
    cached = steps["Model weights and SAE-independent work (activations, clean losses)"]
    assert ".pytest_cache/d/saebench" in cached["with"]["path"].split()
    repo = _training_repo(tmp_path)
    # What the cache step restores after earlier runs: the session's gate runs of the same
    # checkpoint filled it (tests/test_reference.py; empty when this test runs alone).
    shutil.copytree(reference_cache, repo / ".pytest_cache" / "d" / "saebench")
    venv, env = _venv(tmp_path)
    for line in steps["Install"]["run"].splitlines():
        done = subprocess.run(line, shell=True, cwd=repo, env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, (line, done.stdout[-2000:], done.stderr[-2000:])
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import pytest_saebench, torch; print(pytest_saebench.__file__);"
                            "print(torch.__version__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.split()
    assert Path(where[0]).is_relative_to(venv), where  # the submodule's copy, not ours
    assert where[1] == __import__("torch").__version__  # the installed torch was kept
    # pytest itself comes from the base environment through the .pth; its console script is
    # what `pip install pytest` would have put in the venv.
    script = venv / "bin" / "pytest"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom pytest import "
                      "console_main\nsys.exit(console_main())\n")
    script.chmod(0o755)
    gate = steps["Gate the checkpoint"]["run"]
    for key, value in flow["env"].items():
        gate = gate.replace("${{ env." + key + " }}", value)
    flag = "${{ github.event_name == 'push' && '--saebench-update-baseline' || '' }}"
    # A pull request before main has saved a baseline: regression gates skip with the reason.
    done = subprocess.run(gate.replace(flag, ""), shell=True, cwd=repo, env=env,
                          capture_output=True, text=True)
    assert "${{" not in gate.replace(flag, "")
    assert done.returncode == 0, done.stdout[-4000:]
    regressions = [c for c in json.loads((repo / "saebench-results.json").read_text())["checks"]
                   if c["kind"] == "regression"]
    assert regressions and all(c["status"] == "skip" and "no baseline at "
                               "baselines/saebench.json" in c["message"] for c in regressions)
    assert not (repo / "baselines" / "saebench.json").exists()
    # A push to main: the same gates, and the results become the baseline.
    done = subprocess.run(gate.replace(flag, "--saebench-update-baseline"), shell=True,
                          cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:]
    assert " passed" in done.stdout and "failed" not in done.stdout.splitlines()[-1]
    for out in ("junit.xml", "saebench-results.json", "saebench-report.html",
                "baselines/saebench.json"):
        assert (repo / out).is_file(), out
