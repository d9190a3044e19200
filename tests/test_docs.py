"""The documentation site builds with every internal link and anchor checked, and README (the
quick start) links only to files that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LINK = re.compile(r"\]\(([^)#]+)(#[^)]*)?\)")


def _build(root: Path, out: Path) -> subprocess.CompletedProcess:
    # not -q: it hides the warnings that --strict counts, and the build passes anyway
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-d", str(out)], cwd=root, capture_output=True, text=True)


def test_the_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    built = _build(ROOT, tmp_path / "site")
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "site" / "hub" / "index.html").is_file()
    # README's links into the pages land on a section that exists
    for target, anchor in LINK.findall((ROOT / "README.md").read_text()):
        if target.startswith("docs/") and anchor:
            page = tmp_path / "site" / Path(target).stem / "index.html"
            assert f'id="{anchor[1:]}"' in page.read_text(), (target, anchor)


def test_a_broken_anchor_fails_the_build(tmp_path):
    pytest.importorskip("mkdocs")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    with open(tmp_path / "docs" / "index.md", "a") as fh:
        fh.write("\nSee [nowhere](hub.md#no-such-section).\n")
    built = _build(tmp_path, tmp_path / "site")
    assert built.returncode != 0 and "no-such-section" in built.stderr


def test_readme_is_a_quick_start_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 250
    for target, _anchor in LINK.findall(text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    linked = {Path(t).name for t, _ in LINK.findall(text) if t.startswith("docs/")}
    assert pages <= linked, pages - linked  # every moved section is reachable from README


def test_readmes_quick_start_is_the_script_its_test_runs():
    # tests/hub_world.py runs example_tests/train_sae.py's train(); README shows that function.
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quick start"):]
    shown = section.split("```python\n", 1)[1].split("```", 1)[0]
    script = (ROOT / "example_tests" / "train_sae.py").read_text()
    assert shown.startswith("def train(") and shown in script
    assert "..." not in shown
    world = (ROOT / "tests" / "hub_world.py").read_text()
    assert "quick_start().train(out, **QUICK_START_ARGS)" in world
    assert "--training-tokens 49152 --context-size 32 --batch-tokens 512" in section
