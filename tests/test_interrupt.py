"""Ctrl-C (a real SIGINT) and a CI job's cancellation (SIGTERM) during evaluation or during
the baseline update leave the old baseline and results byte-identical."""

from __future__ import annotations

import shutil
from signal import SIGINT

import pytest

from tests.conftest import SMALL_PYPROJECT

# Loaded by the inner pytest run: sends this process SAEBENCH_SIGNAL at the moment
# SAEBENCH_INTERRUPT names, as a user's Ctrl-C or a cancelled CI job would.
INTERRUPTER = '''
import os
import signal

import pytest

WHEN = os.environ.get("SAEBENCH_INTERRUPT", "")
SIGNAL = getattr(signal, os.environ.get("SAEBENCH_SIGNAL", "SIGINT"))
# A background job of a non-interactive shell starts with SIGINT ignored (POSIX), and Python
# then installs no KeyboardInterrupt handler: this run sets the terminal's default itself.
signal.signal(signal.SIGINT, signal.default_int_handler)


def _interrupt():
    os.kill(os.getpid(), SIGNAL)


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


def _run(pytester, sweep, monkeypatch, when: str = "", signal: str = "SIGINT"):
    monkeypatch.setenv("SAEBENCH_INTERRUPT", when)
    monkeypatch.setenv("SAEBENCH_SIGNAL", signal)
    args = (f"--sae-path={sweep}", "--saebench-update-baseline", "-p", "no:cacheprovider")
    if not when:  # nothing is interrupted: in this process, which saves a start-up
        return pytester.runpytest_inprocess(*args)
    return pytester.runpytest_subprocess(*args)  # the SIGINT must not reach this process


def test_ctrl_c_and_sigterm_lose_nothing(pytester, sweep, monkeypatch):
    pytester.makeconftest(INTERRUPTER)
    config = SMALL_PYPROJECT.replace("[tool.pytest-saebench]\n",
                                     '[tool.pytest-saebench]\nbaseline = "base.json"\n')
    pytester.makefile(".toml", pyproject=config)
    first = _run(pytester, sweep, monkeypatch)
    assert first.ret == 0, first.stdout.str()
    outputs = [pytester.path / "base.json", pytester.path / "saebench-results.json"]
    before = {p: p.read_bytes() for p in outputs}
    assert b'"sweep/a"' in before[outputs[0]] and b'"sweep/b"' in before[outputs[0]]
    for signal in ("SIGINT", "SIGTERM"):  # Ctrl-C; a cancelled CI job
        before = {p: p.read_bytes() for p in outputs}
        # Interrupted while the second checkpoint is evaluated: nothing is written
        during = _run(pytester, sweep, monkeypatch, "evaluation", signal)
        assert during.ret == pytest.ExitCode.INTERRUPTED, (signal, during.stdout.str())
        during.stdout.fnmatch_lines(["*baseline: not written (the run was interrupted)*"])
        assert before == {p: p.read_bytes() for p in outputs}, signal
        # Interrupted while the baseline is written: the old one stays whole
        writing = _run(pytester, sweep, monkeypatch, "baseline", signal)
        # raised inside pytest's session finish, the interrupt ends the process as Ctrl-C
        # does there (-SIGINT): both signals alike, and never a run that passed
        assert writing.ret in (pytest.ExitCode.INTERRUPTED, -SIGINT), (signal, writing.ret)
        assert outputs[0].read_bytes() == before[outputs[0]], signal
        assert not list(pytester.path.glob(".*.tmp")), signal
