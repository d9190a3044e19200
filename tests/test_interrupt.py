"""Ctrl-C (a real SIGINT) during evaluation or during the baseline update leaves the old
baseline and results byte-identical."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import SMALL_PYPROJECT

# Loaded by the inner pytest run: sends this process SIGINT at the moment SAEBENCH_INTERRUPT
# names, as a user's Ctrl-C would.
INTERRUPTER = '''
import os
import signal

import pytest

WHEN = os.environ.get("SAEBENCH_INTERRUPT", "")


def _interrupt():
    os.kill(os.getpid(), signal.SIGINT)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    if WHEN == "evaluation" and item.nodeid == "saebench::evaluate[sweep/b]":
        _interrupt()


def pytest_sessionstart(session):
    if WHEN != "baseline":
        return
    from pytest_saebench import atomic

    real = atomic.os.replace

    def replace(src, dst):  # the baseline's temporary file is complete, not yet in place
        if str(dst).endswith("base.json"):
            _interrupt()
        return real(src, dst)

    atomic.os.replace = replace
'''


@pytest.fixture
def sweep(tiny_world, tmp_path):
    root = tmp_path / "sweep"
    shutil.copytree(tiny_world.trained, root / "a")
    shutil.copytree(tiny_world.topk, root / "b")
    return root


def _run(pytester, sweep, monkeypatch, when: str = ""):
    monkeypatch.setenv("SAEBENCH_INTERRUPT", when)
    args = (f"--sae-path={sweep}", "--saebench-update-baseline", "-p", "no:cacheprovider")
    if not when:  # nothing is interrupted: in this process, which saves a start-up
        return pytester.runpytest_inprocess(*args)
    return pytester.runpytest_subprocess(*args)  # the SIGINT must not reach this process


def test_ctrl_c_loses_nothing(pytester, sweep, monkeypatch):
    pytester.makeconftest(INTERRUPTER)
    config = SMALL_PYPROJECT.replace("[tool.pytest-saebench]\n",
                                     '[tool.pytest-saebench]\nbaseline = "base.json"\n')
    pytester.makefile(".toml", pyproject=config)
    first = _run(pytester, sweep, monkeypatch)
    assert first.ret == 0, first.stdout.str()
    outputs = [pytester.path / "base.json", pytester.path / "saebench-results.json"]
    before = {p: p.read_bytes() for p in outputs}
    assert b'"sweep/a"' in before[outputs[0]] and b'"sweep/b"' in before[outputs[0]]

    # Ctrl-C while the second checkpoint is evaluated: nothing is written
    during = _run(pytester, sweep, monkeypatch, "evaluation")
    assert during.ret == pytest.ExitCode.INTERRUPTED
    during.stdout.fnmatch_lines(["*baseline: not written (the run was interrupted)*"])
    assert before == {p: p.read_bytes() for p in outputs}
    # Ctrl-C while the baseline is written: the old one stays whole
    writing = _run(pytester, sweep, monkeypatch, "baseline")
    assert writing.ret != 0
    assert outputs[0].read_bytes() == before[outputs[0]]
    assert not list(pytester.path.glob(".*.tmp"))
