"""Main's history of each gated metric in the reports: a chart per metric in the HTML
(main's runs as a line with their intervals, this run beside them) and a compact trend per
failed, regressed or inconclusive gate in the step summary."""

from __future__ import annotations

from html import escape
from typing import Any

from pytest_saebench import history as hist
from pytest_saebench.gates import lineage
from pytest_saebench.gates.thresholds import fmt
from pytest_saebench.reporting import svg
from pytest_saebench.reporting.gates import STATUS_ORDER, md

MAX_CHECKPOINTS = 3  # per chart: the checkpoints with the worst verdicts on the metric
TREND_RUNS = 12  # runs in a step-summary trend
NOTICED = ("fail", "error", "inconclusive", "warn")


def _order(checks: list[dict[str, Any]]) -> tuple[list[str], dict[str, list[str]]]:
    """Gated metrics in the order their gates first appear, and per metric its
    checkpoints, worst verdict first."""
    metrics: dict[str, dict[str, int]] = {}
    for c in checks:
        rank = STATUS_ORDER.get(c["status"], 4)
        saes = metrics.setdefault(c["metric"], {})
        saes[c["sae"]] = min(rank, saes.get(c["sae"], rank))
    return list(metrics), {m: sorted(s, key=lambda k: s[k]) for m, s in metrics.items()}


def anchor(metric: str) -> str:
    """The HTML id of ``metric``'s history chart."""
    return f"history-{metric}"


def html_section(entries: list[dict[str, Any]], included: bool, results: list[Any],
                 checks: list[dict[str, Any]], pattern: Any = None) -> str:
    """One chart per gated metric: main's runs (bars: ± 1 standard error) and this run's
    value beside them (``included``: this run is main's newest, being written now). A
    checkpoint keeps one colour in every chart (its main line, its replicates, its point of
    this run, drawn as a ring); the x axis names main's runs by commit and date."""
    if not entries:
        return ""
    by_id = {r.sae_id: r for r in results}
    colour = {r.sae_id: svg.COLORS[i % len(svg.COLORS)] for i, r in enumerate(results)}
    metrics, saes = _order(checks)
    now_x = float(len(entries) if included else len(entries) + 1)
    charts = []
    for metric in metrics:
        series: dict[str, list[tuple[float, float, str, float | None]]] = {}
        order: set[str] = set()
        colors: dict[str, str] = {}
        rings: set[str] = set()
        dashed: set[str] = set()
        for sae_id in [s for s in saes[metric] if s in by_id][:MAX_CHECKPOINTS]:
            line = hist.series(entries, sae_id, metric, pattern)
            if line:
                name = f"main: {_mains_name(entries, sae_id, pattern)}"
                series[name] = [(float(i), v, c or f"run {i}", s) for i, v, s, c in line]
                order.add(name)
                colors[name] = colour[sae_id]
            band = hist.replicate_band(entries, sae_id, metric)
            if band:  # main's replicate runs at this position: mean, bars ± their sd
                place = lineage.run_place(sae_id)
                name = (f"main's replicates at {place.describe()} (mean, bars ± 1 sd "
                        "between runs)")
                series[name] = [(float(i), m, f"{n} runs", sd) for i, m, sd, n in band]
                order.add(name)
                colors[name] = colour[sae_id]
                dashed.add(name)
            res = by_id[sae_id]
            if res.value(metric) is not None:
                name = f"{sae_id}: this run"
                series[name] = [(now_x, res.value(metric), "this run", res.stderr(metric))]
                colors[name] = colour[sae_id]
                rings.add(name)
        if any(name in order for name in series):  # main's line or its replicates' band
            chart = svg.lines(f"{metric.rsplit('.', 1)[-1]}: main's last {len(entries)} "
                              "run(s) and this one", series, "main's runs, oldest first "
                              "(commit, date)", metric.rsplit(".", 1)[-1],
                              in_order=frozenset(order), colors=colors,
                              rings=frozenset(rings), dashed=frozenset(dashed),
                              xticks=_run_ticks(entries))
            charts.append(f'<div id="{escape(anchor(metric))}" style="display:inline-block">'
                          f"<p><code>{escape(metric)}</code></p>{chart}</div>")
    if not charts:
        return ""
    note = ("this run is the newest of them (it writes the baseline)" if included else
            "this run is drawn to the right of them, as a ring")
    return (f"<h2 id=\"history\">Main's history</h2><p class=\"note\">{len(entries)} run(s) "
            f"kept in the baseline file, bars ± 1 standard error; {note}.</p>"
            + "".join(charts))


MAX_TICKS = 7  # commit labels fit the axis (about 60 px each)


def _run_ticks(entries: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """x ticks naming main's runs (``commit`` over ``MM-DD``), at most :data:`MAX_TICKS`,
    the newest always."""
    n = len(entries)
    step = max(1, -(-n // MAX_TICKS))
    picked = sorted({*range(n - 1, -1, -step)})
    ticks = []
    for i in picked:
        entry = entries[i]
        commit = str(entry.get("commit") or "")[:7] or f"run {i + 1}"
        date = str(entry.get("date") or "")[5:10]
        ticks.append((float(i + 1), f"{commit}\n{date}" if date else commit))
    return ticks  # this run's ring, one step right of the newest, is named in the legend


def _mains_name(entries: list[dict[str, Any]], sae_id: str, pattern: Any) -> str:
    """The checkpoint main's newest run holds for ``sae_id`` (its own id in main's run, not
    this run's, when this one retrained), said as a place in the run when main's ids vary."""
    names = set()
    for entry in entries:
        found = lineage.match(sae_id, entry["values"], pattern)
        if not isinstance(found, str):
            names.add(found.entry)
    if len(names) == 1:
        return names.pop()
    place = lineage.run_place(sae_id)
    return f"{place.describe()} of its training run" if place else sae_id


def summary_lines(entries: list[dict[str, Any]], checks: list[dict[str, Any]],
                  html: str | None, pattern: Any = None) -> list[str]:
    """A trend line per failed, regressed or inconclusive gate: main's recent values as a
    sparkline, then this run's value."""
    lines = []
    for c in checks:
        if c["status"] not in NOTICED:
            continue
        line = hist.series(entries, c["sae"], c["metric"], pattern)
        if not line:
            continue
        recent = [v for _, v, _, _ in line][-TREND_RUNS:]
        errs = sorted(se for _, _, se, _ in line[-TREND_RUNS:] if se)
        noise = errs[len(errs) // 2] if errs else 0.0  # the runs' median standard error
        now = "—" if c.get("value") is None else fmt(c["value"], c.get("stderr"))
        lines.append(f"- {c['status']} `{c['metric']}` on {md(c['sae'])}: main "
                     f"{hist.sparkline(recent, noise)} {fmt(recent[0])} … {fmt(recent[-1])} "
                     f"(last {len(recent)} of {len(entries)} runs), now {now}")
    if not lines:
        return []
    where = (f" (chart per metric in `{html.rsplit('/', 1)[-1]}`, \"Main's history\")"
             if html else "")
    return ["", f"**Main's history of these gates**{where}", "", *lines]
