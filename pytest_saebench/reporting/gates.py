"""What the HTML report and the GitHub step summary both say about the gates: failures first,
a reason several gates share written once as a numbered note, and counts per checkpoint."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pytest_saebench.gates.thresholds import gate_context

STATUS_ORDER = {"error": 0, "fail": 1, "inconclusive": 2, "warn": 3}
HEADLINE = (("pass", "passed"), ("fail", "failed"), ("error", "errors"),
            ("inconclusive", "inconclusive"), ("warn", "warned"), ("skip", "skipped"))


def general_message(check: dict[str, Any], suite: str) -> str:
    """The gate's message without its own checkpoint and metric, so that the same reason
    on many gates reads the same."""
    context = gate_context(check["sae"], suite)
    text = (check.get("message") or "").replace(f" {context}", "").replace(context, "")
    return text.replace(check["metric"], "the metric").strip()


def ordered_with_notes(checks: list[dict[str, Any]], suite: str
                       ) -> tuple[list[tuple[dict[str, Any], int | None, str]], dict[str, int],
                                  Counter]:
    """``(rows, notes, uses)``: each gate, failures first, with its note number (a reason
    several gates share) or its own message; the notes numbered from 1; how many gates
    share each."""
    ordered = sorted(checks, key=lambda c: STATUS_ORDER.get(c["status"], 4))
    general = [general_message(c, suite) for c in ordered]
    uses = Counter(text for text in general if text)
    notes = {text: i + 1 for i, text in enumerate(t for t, n in uses.items() if n > 1)}
    rows = [(c, notes.get(text), "" if text in notes else (c.get("message") or ""))
            for c, text in zip(ordered, general, strict=True)]
    return rows, notes, uses


def counts_by_checkpoint(checks: list[dict[str, Any]]) -> dict[str, Counter]:
    """Gate statuses counted per checkpoint, in the order the checkpoints first appear."""
    out: dict[str, Counter] = {}
    for c in checks:
        out.setdefault(c["sae"], Counter())[c["status"]] += 1
    return out


def headline(checks: list[dict[str, Any]]) -> str:
    """``2 failed, 18 passed, 9 skipped``: failures first, zero counts left out."""
    total = Counter(c["status"] for c in checks)
    order = sorted(HEADLINE, key=lambda kv: STATUS_ORDER.get(kv[0], 4))
    return ", ".join(f"{total[s]} {word}" for s, word in order if total[s]) or "no gates"


def noise_label(check: dict[str, Any]) -> str:
    """The noise a regression gate was decided against, short: ``3 runs`` (between main's
    replicate runs), ``run_sd 0.004`` (given), ``unknown`` (one run a side), ``eval``
    (the same artifact, or one outside a training run); '' for other gates."""
    noise = check.get("noise")
    if noise == "between runs":
        return f"{check.get('replicates', '?')} runs"
    if noise == "given":
        return f"run_sd {check['run_sd']:g}" if check.get("run_sd") is not None else "given"
    if noise == "evaluation":
        return "eval"
    return noise or ""


def family_line(checks: list[dict[str, Any]], kind: str) -> str:
    """The run's chance of any false fail over its gates with z (family.py), one line; ''
    without such gates."""
    from pytest_saebench.family import chance_of_any_fail

    levels = [c["alpha"] for c in checks if c.get("alpha")]
    if not levels:
        return ""
    chance = chance_of_any_fail(levels, kind)
    if kind == "holm":
        return (f"{len(levels)} gate(s) with z under Holm's step-down (family = \"holm\"): the "
                f"chance that any fails by chance is at most {chance:.3%}")
    return (f"{len(levels)} gate(s) with z, each failing by chance at {min(levels):.3%}"
            f"{'' if min(levels) == max(levels) else f' to {max(levels):.3%}'}: the chance "
            f"that any does is about {chance:.2%} (family = \"holm\" keeps it at "
            f"{max(levels):.3%})")


# what markdown acts on inside a table cell (links need "[", images "![", emphasis "*"/"_",
# code "`", strikethrough "~", cells "|"); "<" and ">" go as entities
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|~"})


def md(text: str) -> str:
    """``text`` as markdown that renders as itself: on one line (a newline would end a table
    row), ``&``, ``<`` and ``>`` as HTML entities, every other character markdown acts on
    backslash-escaped, so a checkpoint's folder name can add no link, image, tag or cell."""
    line = " ".join(str(text).split("\n")).replace("\r", " ")
    line = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return line.translate(_MD_SPECIAL)


def workflow_data(text: str) -> str:
    """A GitHub workflow command's message, escaped as GitHub's toolkit escapes it: ``%``,
    carriage return and newline (which would end the command and start another)."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def workflow_property(text: str) -> str:
    """A workflow command's property value (``file=``, ``line=``): also ``:`` and ``,``."""
    return workflow_data(text).replace(":", "%3A").replace(",", "%2C")


def budget_lines(results: list[Any]) -> list[str]:
    """One line per checkpoint an adaptive budget evaluated: where each eval with looks
    stopped and the tokens it used (``eval_result_unstructured.looks``)."""
    out = []
    for res in results:
        parts = []
        for name, ev in res.evals.items():
            looks = (getattr(ev, "unstructured", None) or {}).get("looks")
            if not looks:
                continue
            k, n = int(looks["stopped_at"]) + 1, len(looks["fractions"])
            used, cap = int(looks["tokens_used"]), int(looks["tokens_cap"]) or 1
            futile = looks.get("futility") or {}
            why = f", for futility ({len(futile)} gate(s) the whole budget would not " \
                  "decide)" if futile else ""
            parts.append(f"{name} stopped at look {k} of {n}{why}, {used:,} of {cap:,} SAE "
                         f"tokens ({used / cap:.0%})")
        if parts:
            out.append(f"{res.sae_id}: budget adaptive: {'; '.join(parts)}")
    return out
