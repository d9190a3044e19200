"""Every file a run writes (results JSON and its SAEBench files, HTML report, baseline, GitHub
step summary) staged first and written as one step, or none of them when the run must not
write: an interrupt, a failed evaluation, or (for the baseline) a run stopped early."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_saebench.atomic import write_many_atomic


@dataclass
class Written:
    """What the terminal says about each output, the GitHub annotation lines, and the
    requested outputs that could not be written (the run then fails: plugin.py)."""

    notes: list[str] = field(default_factory=list)
    annotations: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def write_outputs(runner: Any, checks: list[dict[str, Any]], why_not: str, stopped_early: str,
                  gh_summary: bool, sources: dict[tuple[str, str], str],
                  outcomes: dict[str, int] | None = None) -> Written:
    """Stage the run's outputs and write them with one :func:`write_many_atomic`.

    ``why_not`` ('' when the run may write) refuses every file; ``stopped_early`` (-x,
    --maxfail) refuses only the baseline, which would otherwise lose the later checkpoints.
    """
    from pytest_saebench.reporting import github, html, jsonreport

    settings, out = runner.settings, Written()
    eval_id = str(uuid.uuid4())
    staged: list[tuple[Path, bytes]] = []
    wrote: list[str] = []
    wanted_results = settings.results_json and (runner.evaluated() or runner.errors() or checks)
    parts: list[tuple[str, Any]] = []
    if wanted_results:
        parts.append(("results", lambda: jsonreport.results_files(runner, checks, eval_id)))
    trend, why_no_trend = _history(runner) if settings.html or gh_summary else (([], False), "")
    if why_no_trend:
        out.notes.append(f"main's history: not drawn ({why_no_trend})")
    if settings.html:
        parts.append(("html report", lambda: html.staged(
            settings.html, runner.evaluated(), checks, settings.suite, runner.errors(),
            runner.registry, _frontiers(runner), outcomes,
            (*trend, settings.step_pattern))))
    if settings.update_baseline:
        parts.append(("baseline", lambda: jsonreport.baseline_file(runner, eval_id)))
    if gh_summary:
        parts.append(("GitHub step summary", lambda: github.staged(
            checks, runner.evaluated(), settings.suite, settings.html, runner.errors(),
            (*trend, settings.step_pattern), settings.family)))
        out.annotations = github.annotations(checks, sources)
    for label, stage in parts:
        reason = why_not or (stopped_early if label == "baseline" else "")
        if reason:
            out.notes.append(f"{label}: not written ({reason})")
            continue
        try:
            files = stage()
            # JSON outputs overwrite only what this plugin wrote (the HTML report and the
            # step summary are the user's chosen paths, the summary appended to)
            in_the_way = jsonreport.foreign(files) if label in ("results", "baseline") else ""
        except Exception as exc:  # a report that cannot be rendered: said, and the run fails
            out.notes.append(f"{label}: not written ({type(exc).__name__}: {exc})")
            out.failed.append(label)
            continue
        if not files:
            out.notes.append(f"{label}: not written (no checkpoint was evaluated; deselected?)")
            continue
        if in_the_way:
            out.notes.append(f"{label}: not written ({in_the_way})")
            out.failed.append(label)
            continue
        staged.extend(files)
        wrote.append(_wrote(label, files, len(runner.evaluated())))
    # what the last run's manifest lists and this run does not rewrite, read before it is
    # replaced; removed only once the new files are in place
    stale = (jsonreport.stale_files(settings.results_json, [p for p, _ in staged])
             if wanted_results and any(w.startswith("results:") for w in wrote) else [])
    if staged:
        try:
            write_many_atomic(staged)
        except OSError as exc:
            return Written([f"outputs not written: {exc}"], out.annotations,
                           [label for label, _ in parts])
    if stale:
        root = Path(settings.results_json).with_suffix("")
        for old in stale:
            old.unlink(missing_ok=True)
            # a folder of ours that this left empty (its eval's files), never the root
            if old.parent != root and not any(old.parent.iterdir()):
                old.parent.rmdir()
    out.notes[:0] = wrote
    return out


def _wrote(label: str, files: list[tuple[Path, bytes]], n_results: int) -> str:
    main = files[-1][0]
    if label == "baseline":
        return f"baseline: wrote {main} ({n_results} checkpoint(s))"
    if label == "results" and len(files) > 2:  # the envelope, its manifest, SAEBench files
        return f"results: {main} (+{len(files) - 2} SAEBench file(s))"
    return f"{label}: {main}"


def _history(runner: Any) -> tuple[tuple[list[dict[str, Any]], bool], str]:
    """Main's history for the reports, or why it cannot be drawn (a malformed history)."""
    from pytest_saebench.errors import SaebenchError
    from pytest_saebench.reporting.jsonreport import main_history

    try:
        return main_history(runner), ""
    except SaebenchError as exc:
        return ([], False), str(exc)


def _frontiers(runner: Any) -> list[tuple[Any, list]]:
    """Each frontier rule with its baseline frontier (rules whose file is missing left out:
    their gates already say so)."""
    from pytest_saebench.errors import SaebenchError

    out = []
    for rule in runner.settings.frontier:
        try:
            out.append((rule, runner.frontier_points(rule)))
        except SaebenchError:
            continue
    return out
