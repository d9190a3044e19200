"""GitHub Actions: a markdown table of gates in ``$GITHUB_STEP_SUMMARY`` and ``::error``
annotations that point at the pyproject line of each failed threshold."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytest_saebench.gates.thresholds import fmt
from pytest_saebench.paths import relative_label
from pytest_saebench.reporting import trends
from pytest_saebench.reporting.gates import (
    HEADLINE,
    budget_lines,
    counts_by_checkpoint,
    family_line,
    headline,
    md,
    noise_label,
    ordered_with_notes,
    workflow_data,
    workflow_property,
)

MAX_BYTES = 1 << 20  # GitHub rejects step summaries over 1 MiB
MAX_CHECKPOINT_ROWS = 100  # the headline table: the checkpoints with failures first
ICONS = {"pass": "✅", "fail": "❌", "error": "💥", "warn": "⚠️", "skip": "⏭️",
         "improved": "⬆️", "inconclusive": "❔"}


def summary_markdown(checks: list[dict[str, Any]], results: list[Any], suite: str,
                     limit: int = MAX_BYTES, html: str | None = None,
                     errors: dict[str, str] | None = None, history: tuple | None = None,
                     family: str = "none") -> str:
    """The step summary: a headline and a row of counts per checkpoint, then the gates,
    failures first, with the reasons several gates share written once as numbered notes;
    rows past ``limit`` bytes are replaced by a note. ``family``: the run's family-wise rule,
    whose chance of any false fail is stated under the headline."""
    head = [f"### pytest-saebench: {headline(checks)} ({suite} suite)", ""]
    chance = family_line(checks, family)
    if chance:
        head += [chance[0].upper() + chance[1:] + ".", ""]
    spent = budget_lines(results)
    if spent:
        head += [f"- {md(line)}" for line in spent] + [""]
    by_sae = counts_by_checkpoint(checks)
    if by_sae:
        head += ["| checkpoint | " + " | ".join(word for _, word in HEADLINE) + " |",
                 "|---" * (len(HEADLINE) + 1) + "|"]
        worst = sorted(by_sae.items(), key=lambda kv: -(kv[1]["fail"] + kv[1]["error"]))
        head += [f"| {md(sae)} | " + " | ".join(str(n[s]) for s, _ in HEADLINE) + " |"
                 for sae, n in worst[:MAX_CHECKPOINT_ROWS]]
        if len(worst) > MAX_CHECKPOINT_ROWS:
            head.append(f"| _{len(worst) - MAX_CHECKPOINT_ROWS} more checkpoint(s)_ |"
                        + " |" * len(HEADLINE))
        head.append("")
    for sae_id, message in (errors or {}).items():
        head += [f"💥 **{md(sae_id)}**: evaluation failed: {_cell(message)}", ""]
    if html:
        head += [f"The report with plots is `{Path(html).name.replace('`', '')}` (the "
                 "workflows upload it as an artifact).", ""]
    rows, notes, uses = ordered_with_notes(checks, suite)
    head += ["| status | gate | sae | metric | value ± stderr | limit | baseline | Δ | noise | "
             "note |", "|---|---|---|---|---|---|---|---|---|---|"]
    note_lines = ["", "**Notes shared by several gates**", ""] + [
        f"{i}. {_cell(text)} ({uses[text]} gates)" for text, i in notes.items()] if notes else []
    tail_note = "\n\n_{n} more gate(s) not shown: the summary is limited to 1 MiB._\n"
    footer = "\n".join(note_lines)
    text = "\n".join(head)
    shown = 0
    for check, note, own in rows:
        base, delta = check.get("baseline"), check.get("delta")
        value = "—" if check["value"] is None else fmt(check["value"], check["stderr"])
        row = (f"\n| {ICONS.get(check['status'], '')} {check['status']} | "
               f"{check.get('kind', 'threshold')} | {md(check['sae'])} | "
               f"`{check['metric']}` | {value} | "
               f"{check['limit']} | {'' if base is None else fmt(base)} | "
               f"{'' if delta is None else f'{delta:+.4g}'} | {noise_label(check)} | "
               f"{f'note {note}' if note else _cell(own)} |")
        budget = (limit - len(tail_note.format(n=len(checks)).encode())
                  - len(footer.encode()) - 200)
        if len((text + row).encode()) > budget:
            break
        text += row
        shown += 1
    if shown < len(checks):
        text += tail_note.format(n=len(checks) - shown)
    text += "\n" + footer if footer else ""
    if history:
        text += "\n".join(trends.summary_lines(history[0], checks, html, history[2]))
    evaluated = ", ".join(f"{md(r.sae_id)} ({r.seconds:.1f} s)" for r in results)
    return text + (f"\n\nEvaluated: {evaluated}\n" if evaluated else "\n")


CELL_MAX = 2000  # a gate's message is one line; only a runaway one (a pasted path) is cut


def _cell(text: str) -> str:
    """``text`` as one markdown table cell: its first line whole (up to ``CELL_MAX``
    characters: GitHub wraps a long cell), escaped as markdown-safe text (reporting.gates.md)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = line if len(line) <= CELL_MAX else line[:CELL_MAX - 1] + "…"
    return md(line)


def workspace_path(path: str) -> str:
    """``path`` relative to ``$GITHUB_WORKSPACE`` (else the working directory) when it lies
    below it: GitHub attaches annotations only to paths relative to the repository root."""
    return relative_label(path, os.environ.get("GITHUB_WORKSPACE") or None)


def annotations(checks: list[dict[str, Any]], sources: dict[str, str]) -> list[str]:
    """``::error`` lines for failed gates (``::warning`` for warn and inconclusive,
    ``::notice`` for an improvement over the baseline), with the file and line of the rule."""
    lines = []
    levels = {"fail": "error", "error": "error", "warn": "warning", "inconclusive": "warning",
              "improved": "notice"}
    for check in checks:
        if check["status"] not in levels:
            continue
        level = levels[check["status"]]
        where = sources.get((check.get("kind", "threshold"), check["metric"]), "")
        path, _, line = where.rpartition(":")
        loc = (f" file={workflow_property(workspace_path(path))},line={line}"
               if path and line.isdigit() else "")
        message = check["message"] or f"{check['metric']} {check['status']}"
        lines.append(f"::{level}{loc}::{workflow_data(message)}")
    return lines


def enabled(mode: str) -> bool:
    """``auto``: only inside GitHub Actions; ``always`` / ``never``."""
    if mode == "never":
        return False
    return bool(os.environ.get("GITHUB_STEP_SUMMARY")) and (
        mode == "always" or os.environ.get("GITHUB_ACTIONS") == "true")


def staged(checks: list[dict[str, Any]], results: list[Any], suite: str,
           html: str | None = None, errors: dict[str, str] | None = None,
           history: tuple | None = None, family: str = "none") -> list[tuple[Path, bytes]]:
    """``$GITHUB_STEP_SUMMARY`` with the summary appended, as a file to write whole (the
    step's earlier summary kept), so it shares the run's one atomic write (see outputs.py)."""
    path = Path(os.environ["GITHUB_STEP_SUMMARY"])
    try:
        before = path.read_bytes()
    except FileNotFoundError:
        before = b""
    text = summary_markdown(checks, results, suite, html=html, errors=errors, history=history,
                            family=family)
    return [(path, before + text.encode("utf-8"))]
