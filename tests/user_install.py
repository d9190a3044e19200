"""README's install, made as a user makes it: the plugin published as a git repository at the
ref README names, a virtual environment that sees none of this environment's packages, torch
first, then ``pip install "pytest-saebench @ git+URL@REF"`` without extras.

The URL is the one thing changed: README's names the repository on GitHub, here it is a local
git repository holding this working tree's files (what a clone of the ref would hold), so
uncommitted changes are tested too. The ref must exist in this repository as it is (a tag
README named once did not, and pip's clone failed for every user). torch comes from this
machine's CPU wheel (``torch==2.13.0``, as README's development command takes it): the PyTorch
index README names for a CPU runner is not reachable here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]
README_PLUGIN = re.compile(r'pip install "pytest-saebench @ git\+(?P<url>\S+)@(?P<ref>[^"]+)"')
TORCH = "torch==2.13.0"


@dataclass
class UserInstall:
    """A venv with README's install in it, and the environment to run its programs in."""

    venv: Path
    env: dict[str, str]
    repository: Path  # the published plugin: a git repository with README's ref
    requirement: str  # what was installed: README's requirement with the local URL

    def bin(self, name: str) -> str:
        """A program of the venv (python, pip, pytest)."""
        return str(self.venv / "bin" / name)

    def run(self, *args: str, cwd: Path, timeout: float = 600, env: dict | None = None
            ) -> subprocess.CompletedProcess:
        """Run ``args`` with the venv first on PATH, capturing output."""
        return subprocess.run(list(args), cwd=cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)


def readme_install() -> list[str]:
    """The command lines of README's "Install" block."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Install"):text.index("## Configure")]
    block = section.split("```", 2)[1]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def ref_exists(ref: str) -> bool:
    """Whether ``ref`` (a branch, tag or commit) names a commit of this repository (a clone
    checked out at a commit knows its branches as ``origin/<branch>``)."""
    return any(subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"],
                              cwd=ROOT, capture_output=True).returncode == 0
               for name in (ref, f"origin/{ref}"))


def publish(target: Path, ref: str = "main") -> Path:
    """This working tree's files (tracked and new, not ignored) as a git repository whose
    ``ref`` (a branch) holds them: what ``git+URL@REF`` clones."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target / rel)
    git = ["git", "-c", "user.name=release", "-c", "user.email=release@localhost"]
    for args in (["init", "-q", "-b", ref], ["add", "-A"], ["commit", "-qm", "release"]):
        subprocess.run([*git, *args], cwd=target, check=True, capture_output=True)
    return target


def user_env(venv: Path) -> dict[str, str]:
    """The environment a user's shell gives the venv: its bin first, offline, and nothing
    of this process's Python path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PYTEST", "SAEBENCH_", "COV_", "HYPOTHESIS"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(venv),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", TOKENIZERS_PARALLELISM="false")
    return env


def make(root: Path) -> UserInstall:
    """Publish the plugin, make the venv and run README's install in it (torch's line with
    this machine's CPU wheel, the plugin's with the local repository's URL)."""
    lines = readme_install()
    assert lines[0].startswith("pip install torch"), lines  # torch first: the user's build
    found = README_PLUGIN.fullmatch(lines[1])
    assert found, lines[1]
    # what pip clones must resolve against this repository, not only against the copy below
    assert ref_exists(found["ref"]), f"README installs @{found['ref']}, not a ref of this repo"
    repository = publish(root / "pytest-saebench", found["ref"])
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # no system packages
    requirement = f"pytest-saebench @ git+file://{repository}@{found['ref']}"
    user = UserInstall(venv, user_env(venv), repository, requirement)
    for args in ([user.bin("python"), "-m", "pip", "install", "-q", "--upgrade", "pip"],
                 [user.bin("pip"), "install", "-q", TORCH],
                 [user.bin("pip"), "install", "-q", requirement]):
        done = user.run(*args, cwd=root)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return user
