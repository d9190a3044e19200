"""pytest hooks of pytest-saebench. Inert (and torch-free) unless ``--sae-path`` is given."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pytest_saebench import fixtures
from pytest_saebench.errors import SaebenchError
from pytest_saebench.session import (
    CHECKS_KEY,
    GATE_PREFIX,
    OUTPUTS_KEY,
    RUNNER_KEY,
    runner_or_none,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``saebench`` option group (``options.py``)."""
    from pytest_saebench.options import add_options

    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser,
                                  args: list[str]) -> None:
    """``--sae-path PATH`` (two words) gets the rootdir and ini file ``--sae-path=PATH``
    gets: pytest chose them before it knew the option takes a value."""
    from pytest_saebench.rootdir import realign

    realign(early_config, args)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Register pytest-saebench's own hooks (``hookspecs.py``)."""
    from pytest_saebench import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and fixtures; build the runner only when asked to evaluate."""
    config.addinivalue_line(
        "markers", "saebench(evals=None, suite=None): pytest-saebench gate items; on a user "
        "test, which evals saebench_results computes and in which suite")
    if not config.pluginmanager.hasplugin("xdist"):  # gate items carry it for --dist loadgroup
        config.addinivalue_line("markers", "xdist_group(name): pytest-xdist's group marker")
    if not config.pluginmanager.has_plugin("saebench-fixtures"):
        config.pluginmanager.register(fixtures, "saebench-fixtures")
    try:
        runner = _build_runner(config)
    except SaebenchError as exc:
        raise pytest.UsageError(f"pytest-saebench: {exc}") from None
    if runner is not None:
        from pytest_saebench.signals import terminate_as_interrupt

        config.stash[RUNNER_KEY] = runner
        config.add_cleanup(terminate_as_interrupt())
        runner.judge_provider = lambda: config.hook.pytest_saebench_autointerp_judge(
            config=config)
        workerinput = getattr(config, "workerinput", None)
        if workerinput is not None and workerinput.get("saebench_shared_dir"):
            runner.shared_dir = Path(workerinput["saebench_shared_dir"])
            runner.worker_id = str(workerinput.get("workerid", "worker"))
        elif workerinput is None and config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(XdistController(runner), "saebench-xdist")
        recorder = GateRecorder()
        config.stash[CHECKS_KEY] = recorder.checks
        config.pluginmanager.register(recorder, "saebench-recorder")


def _build_runner(config: pytest.Config):
    from pytest_saebench.build import build_runner

    runner = build_runner(config, say=_say(config))
    if runner is not None:
        runner.progress = _progress(config)
    return runner


def _say(config: pytest.Config):
    """A line to stderr past pytest's capture while the session starts (before the terminal
    reporter exists): nothing at -qq and on xdist workers (the controller says it)."""
    if config.get_verbosity() <= -2 or hasattr(config, "workerinput"):
        return None

    def say(line: str) -> None:
        capman = config.pluginmanager.get_plugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    return say


def _progress(config: pytest.Config):
    """Eval progress on pytest's terminal (nothing at -qq or without a terminal reporter)."""
    from pytest_saebench.reporting.progress import Progress

    def reporter():
        found = config.pluginmanager.get_plugin("terminalreporter")
        return found if found is not None and config.get_verbosity() > -2 else None

    # Evaluation runs inside a test, under pytest's output capture: step outside it, as
    # pytest's live logging does, or the output lands in the test's captured stdout.
    def outside_capture():
        capman = config.pluginmanager.get_plugin("capturemanager")
        return capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()

    def end_line(shown) -> None:
        shown.ensure_newline()
        # -q writes result letters without a prefix, which ensure_newline does not end.
        if getattr(getattr(shown, "_tw", None), "width_of_current_line", 0):
            shown.write("\n")

    def write_line(line: str) -> None:
        shown = reporter()
        if shown is not None:
            with outside_capture():
                end_line(shown)
                shown.write_line(line)

    def tty() -> bool:
        shown = reporter()
        return shown is not None and shown.isatty()

    def newline() -> None:
        shown = reporter()
        if shown is not None:
            end_line(shown)

    def resume(nodeid: str) -> None:
        # Without -v pytest writes a file's prefix once, at its first item; the result
        # letters that follow the progress lines get it again, as the next file's would.
        shown = reporter()
        if shown is not None and shown.showfspath and not shown.showlongtestinfo:
            fsid = nodeid.split("::", 1)[0]
            end_line(shown)
            shown.write(f"{fsid} ")
            shown.currentfspath = config.rootpath / fsid

    return Progress(write_line, tty, outside_capture, lambda: sys.stdout, newline, resume)


def pytest_report_header(config: pytest.Config) -> str | None:
    """One header line when active."""
    runner = runner_or_none(config)
    if runner is None:
        return None
    s = runner.settings
    line = (f"saebench: suite {s.suite}, {len(runner.checkpoints)} checkpoint(s), "
            f"{len(s.thresholds)} threshold(s), device {s.device}, seed {s.seed}")
    if s.shard is not None:
        k, n = s.shard
        others = runner.other_shards
        line += (f"\nsaebench: shard {k}/{n}: {len(runner.checkpoints)} of "
                 f"{len(runner.checkpoints) + len(others)} checkpoint(s); deselected (other "
                 f"shards): {', '.join(others) or 'none'}")
    if s.update_baseline:
        return line + f"\nsaebench: writing the baseline {s.update_baseline}"
    if s.baseline:
        line += f"\nsaebench: baseline {s.baseline}, {len(s.regressions)} regression rule(s)"
        if not s.regressions:
            line += (" (add [tool.pytest-saebench.regression], e.g. "
                     "default = { max_drop = 0.01 }, to compare)")
    return line


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize tests using the SAE fixtures over the checkpoints."""
    runner = runner_or_none(metafunc.config)
    if runner is None or not set(fixtures.SAE_FIXTURES) & set(metafunc.fixturenames):
        return
    ids = list(runner.checkpoints)
    metafunc.parametrize("saebench_sae_id", ids, ids=ids, indirect=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Append the gate items before -k/-m/--lf filtering sees the list."""
    if runner_or_none(config) is None:
        return
    from pytest_saebench.items import SaebenchCollector

    collector = SaebenchCollector.from_parent(session, name="saebench", nodeid="saebench")
    generated = collector.collect()
    items.extend(generated)
    # Reported like a collected module, so pytest's "collected N items", its deselected
    # count and --collect-only's total include the gate items.
    config.hook.pytest_collectreport(report=pytest.CollectReport(
        collector.nodeid, "passed", None, generated))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Evaluate only the evals the items left after -k/-m/--lf read."""
    runner = runner_or_none(session.config)
    if runner is None:
        return
    from pytest_saebench.selection import needed_evals

    runner.needed = needed_evals(session.items, runner)
    suite = runner.settings.suite
    everything = runner.configs_for(suite)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if runner.needed is not None and reporter is not None and \
            session.config.get_verbosity() > -2 and not session.config.option.collectonly:
        reporter.write_line(
            f"saebench: the selected items read {len(runner.needed)} of the "
            f"{len(everything)} evals of suite {suite}: {', '.join(runner.needed) or 'none'}")


class XdistController:
    """On the xdist controller: give every worker the directory where evaluations are shared,
    so each checkpoint is evaluated by exactly one worker."""

    def __init__(self, runner) -> None:
        self.runner = runner

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        """xdist hook: called once per worker before it starts."""
        if self.runner.shared_dir is None:
            self.runner.shared_dir = Path(tempfile.mkdtemp(prefix="saebench-shared-"))
        node.workerinput["saebench_shared_dir"] = str(self.runner.shared_dir)


class GateRecorder:
    """Collects each gate's outcome from its reports (so it also works on the xdist
    controller, which sees reports but never runs items)."""

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Turn a threshold item's call (or failed setup) report into a check record."""
        kind = report.nodeid[len(GATE_PREFIX):].split("[", 1)[0]
        if not report.nodeid.startswith(GATE_PREFIX) or kind not in ("threshold", "regression",
                                                                      "frontier", "null"):
            return
        if report.when != "call" and (report.when != "setup" or report.passed):
            return
        props = dict(report.user_properties)
        sae, _, metric = report.nodeid[len(f"{GATE_PREFIX}{kind}["):-1].rpartition("::")
        status = props.get("status") or ("error" if report.failed else report.outcome)
        message = report.longreprtext.strip().splitlines()[-1] if report.longrepr else ""
        if report.skipped and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2]).removeprefix("Skipped: ")
        message = props.get("message", message)
        self.checks.append({
            "nodeid": report.nodeid, "kind": kind, "sae": sae, "metric": metric,
            "status": status, "baseline": _num(props.get("baseline")),
            "delta": _num(props.get("delta")),
            "value": _num(props.get("value")), "stderr": _num(props.get("stderr")),
            "min": _num(props.get("min")), "max": _num(props.get("max")),
            "limit": props.get("limit", ""), "message": message,
            **({"baseline_entry": props["baseline_entry"]} if "baseline_entry" in props else {}),
            **({"null": _num(props["null"])} if "null" in props else {}),
            **({"signal_z": _num(props["signal_z"])} if "signal_z" in props else {}),
            **_noise(props),
        })


def _noise(props: dict[str, Any]) -> dict[str, Any]:
    """A regression gate's noise (between runs, given, unknown, evaluation) and why, and a
    gate's fail test (its level and p-value)."""
    out: dict[str, Any] = {k: props[k] for k in ("noise", "noise_why") if k in props}
    for key in ("alpha", "p"):  # the fail test's level and p-value (gates with z)
        if key in props:
            out[key] = _num(props[key])
    for key in ("replicates", "replicates_here"):
        if key in props:
            out[key] = int(props[key])
    for key in ("run_sd", "delta_stderr"):  # delta_stderr: of Δ, as the verdict used it
        if key in props:
            out[key] = _num(props[key])
    return out


def _pytest_outcomes(config: pytest.Config) -> dict[str, int]:
    """pytest's own counts (passed, failed, skipped, ...), for the HTML report's header."""
    stats = getattr(config.pluginmanager.get_plugin("terminalreporter"), "stats", {}) or {}
    return {key: len(stats[key]) for key in ("passed", "failed", "error", "skipped",
                                             "xfailed", "xpassed") if stats.get(key)}


def _num(text: str | None) -> float | None:
    return None if text in (None, "null") else float(text)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the run's outputs as one step (controller only), or none of them when the run
    was interrupted or an evaluation failed: the old files stay byte-identical."""
    config = session.config
    runner = runner_or_none(config)
    if runner is None or hasattr(config, "workerinput"):
        return
    from pytest_saebench.reporting import github, junit, outputs

    if runner.shared_dir is not None:
        runner.evaluation_counts = runner.load_shared()
    junit.add_suite_properties(config, runner)
    sources = {("threshold", t.metric): t.source for t in runner.settings.thresholds}
    sources.update({("regression", r.metric): r.source for r in runner.settings.regressions})
    sources.update({("frontier", r.metric): r.source for r in runner.settings.frontier})
    sources.update({("null", r.metric): r.source for r in runner.settings.null_rules})
    written = config.stash[OUTPUTS_KEY] = outputs.write_outputs(
        runner, config.stash[CHECKS_KEY], _why_not_written(session, exitstatus, runner),
        _why_no_baseline(session, runner),
        github.enabled(config.getoption("saebench_gh_summary")), sources,
        _pytest_outcomes(config))
    if written.failed and session.exitstatus == pytest.ExitCode.OK:
        # main's CI must not go green without the baseline (or results) it asked for
        written.notes.append(f"saebench: a requested output was not written "
                             f"({', '.join(written.failed)}): the run fails (exit 1)")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _why_not_written(session: pytest.Session, exitstatus: int, runner: Any) -> str:
    """Why this run must not write its outputs ('' when it may)."""
    if exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldstop:
        return "the run was interrupted"
    if runner.errors() and not runner.evaluated():  # nothing to keep: the old files stay
        return f"evaluation failed for {', '.join(sorted(runner.errors()))}"
    return ""  # a sweep's failed members are recorded in the outputs under their ids


def _why_no_baseline(session: pytest.Session, runner: Any) -> str:
    """Why the baseline alone is not written: it would lose checkpoints ('' when it may)."""
    if session.shouldfail:
        return f"the run stopped early: {session.shouldfail}"
    if runner.errors():
        return f"evaluation failed for {', '.join(sorted(runner.errors()))}"
    return ""


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the xdist sharing directory (controller only)."""
    runner = runner_or_none(config)
    if runner is not None and runner.shared_dir is not None and \
            not hasattr(config, "workerinput"):
        shutil.rmtree(runner.shared_dir, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """The saebench table."""
    runner = runner_or_none(config)
    if runner is None or hasattr(config, "workerinput"):
        return
    from pytest_saebench.reporting import terminal

    if runner.progress is not None:
        runner.progress.close()
    table = terminal.rows(runner.evaluated(), config.stash[CHECKS_KEY], runner.registry,
                          config.get_verbosity() > 0)
    if not table and not runner.errors():
        return
    terminalreporter.section("saebench")
    for line in terminal.render(table, runner.registry) if table else []:
        terminalreporter.write_line(line)
    for sae_id, message in runner.errors().items():
        terminalreporter.write_line(f"{sae_id}: evaluation failed: {message}", red=True)
    from pytest_saebench.reporting.gates import budget_lines, family_line

    family = family_line(config.stash[CHECKS_KEY], runner.settings.family)
    if family:
        terminalreporter.write_line(f"saebench: {family}")
    for line in budget_lines(runner.evaluated()):
        terminalreporter.write_line(f"saebench: {line}")
    evaluated = runner.evaluated()
    if evaluated:
        # pytest books all of it on each checkpoint's first item; this is the split.
        per = ", ".join(f"{r.sae_id} {r.seconds:.1f} s" for r in evaluated)
        terminalreporter.write_line(
            f"saebench: evaluation time {sum(r.seconds for r in evaluated):.1f} s ({per}); "
            "the gate items themselves take milliseconds")
    written = config.stash.get(OUTPUTS_KEY, None)
    for line in [*written.notes, *written.annotations] if written else []:
        terminalreporter.write_line(line)
