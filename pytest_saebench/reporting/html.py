"""``--saebench-html``: one self-contained HTML file with the gates, the metrics and plots.

Plots: latent density histogram (core), probing accuracy against k (sparse probing), absorption
by first letter, and across a sweep of checkpoints explained variance and CE-loss score
against L0. Inline SVG and CSS only: the file opens offline and attaches to a CI run as is.
"""

from __future__ import annotations

import math
import time
from html import escape
from pathlib import Path
from typing import Any

from pytest_saebench import __version__
from pytest_saebench.gates import lineage
from pytest_saebench.gates.thresholds import fmt
from pytest_saebench.reporting import svg, trends
from pytest_saebench.reporting.gates import headline, noise_label, ordered_with_notes

L0 = "core.sparsity.l0"
# eval type ids (the keys of SaeResults.evals) of the per-checkpoint plots
CORE, PROBING, ABSORPTION = "core", "sparse_probing", "absorption_first_letter"
ABSORPTION_SCORE = f"{ABSORPTION}.mean.mean_absorption_fraction_score"
PLOTTED = ((CORE, "latent density"), (PROBING, "probing accuracy"),
           (ABSORPTION, "absorption by first letter"))
SWEEP_Y = (("core.reconstruction_quality.explained_variance", "explained variance"),
           ("core.model_performance_preservation.ce_loss_score", "CE-loss score"))
DENSITY_EDGES = [10.0 ** e for e in range(-6, 1)]  # 1e-6 .. 1
DIRECTIONS = {"up": "higher", "down": "lower", "band": "within a band", "info": "context only"}
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
.wide{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;margin:8px 0 20px}
td:not(.note,.w){white-space:nowrap}
td.note{overflow-wrap:anywhere;min-width:14em}
td.w{overflow-wrap:anywhere}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f2f2f2}
.pass,.improved{color:#17692a}
.fail,.error{color:#b00020;font-weight:600}
.warn{color:#9a6200}
.inconclusive{color:#6a4c93}
.skip,.note{color:#666}
ol.notes li{overflow-wrap:anywhere;color:#444;margin:4px 0}
svg{border:1px solid #eee;margin:4px;vertical-align:top}
svg text{font-size:11px;fill:#333}
svg .title{font-size:13px;font-weight:600}
.missing{display:inline-block;box-sizing:border-box;width:560px;min-height:120px;margin:4px;
 padding:12px 16px;border:1px dashed #bbb;vertical-align:top;color:#555}
.missing b{display:block;color:#333;margin-bottom:6px}
code{font-size:12px}
table.facts th{width:9em;vertical-align:top}
"""


def render(results: list[Any], checks: list[dict[str, Any]], suite: str,
           errors: dict[str, str], registry: Any = None,
           frontiers: list[tuple[Any, list]] | None = None,
           outcomes: dict[str, int] | None = None, history: tuple | None = None) -> str:
    """The whole report as an HTML document (``frontiers``: each frontier rule with its
    baseline frontier, drawn with this run's points; ``outcomes``: pytest's own counts,
    which also count the evaluate items and the user's tests; ``history``: main's runs,
    whether this run is among them, and the step pattern, reporting.trends)."""
    status = f"gates: {headline(checks)}"
    if outcomes:
        status = ("pytest: " + ", ".join(f"{n} {k}" for k, n in outcomes.items())
                  + f" · {status}")
    body = [f"<h1>pytest-saebench report</h1><p>suite <b>{escape(suite)}</b> · "
            f"{len(results)} checkpoint(s) · {escape(status)} · "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} · "
            f"pytest-saebench {escape(__version__)}</p>"]
    for sae_id, message in errors.items():
        body.append(f'<p class="error">{escape(sae_id)}: evaluation failed: '
                    f"{escape(message)}</p>")
    if checks:
        body.append("<h2>Gates</h2>" + _gates(checks, suite))
    if history:
        body.append(trends.html_section(history[0], history[1], results, checks,
                                        history[2]))
    charts = [_frontier(rule, front, results) for rule, front in frontiers or []]
    if any(charts):
        body.append("<h2>Frontier</h2>" + "".join(charts))
    sweep = _sweep(results)
    if sweep:
        body.append("<h2>Sweep</h2>" + sweep)
    for res in results:
        body.append(_checkpoint(res, registry))
    body.append(_glossary(results, checks, registry))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>pytest-saebench: {escape(suite)} suite</title><style>{CSS}</style>"
            "</head><body>" + "\n".join(body) + "</body></html>\n")


def _gates(checks: list[dict[str, Any]], suite: str) -> str:
    """Failures first; a message several gates share is written once, below the table."""
    rows_in, shared, uses = ordered_with_notes(checks, suite)
    compared = any(c.get("baseline") is not None or c.get("delta") is not None for c in checks)
    heads = ["status", "gate", "sae", "metric", "value ± stderr", "limit",
             *(("baseline", "Δ", "noise") if compared else ()), "note"]
    rows = []
    for c, note, own in rows_in:
        base, delta = c.get("baseline"), c.get("delta")
        values = [c["status"], c.get("kind", "threshold"), c["sae"], "",
                  fmt(c["value"], c["stderr"]), c["limit"]]
        if compared:
            values += ["" if base is None else fmt(base), "" if delta is None else f"{delta:+.4g}",
                       noise_label(c)]
        cells = [escape(str(x)) for x in values]
        cells[2] = _breaks(cells[2])
        cells[3] = _metric_link(c["metric"], breaks=True)
        cells.append(f'<a href="#note-{note}">note {note}</a>' if note else "")
        status = escape(c["status"])
        # sae, metric, limit and noise may wrap, so the table fits its box (at 1400 px too)
        wrap = {2, 3, 5, 8} if compared else {2, 3, 5}
        rows.append(f'<tr class="{status}">' + "".join(
            f'<td class="w">{x}</td>' if i in wrap else f"<td>{x}</td>"
            for i, x in enumerate(cells)) + "</tr>")
        if own:  # its own message, on a full-width row of its own
            rows.append(f'<tr class="{status}"><td></td><td class="note" colspan="'
                        f'{len(heads) - 1}">{escape(own)}</td></tr>')
    head = "".join(f"<th>{h}</th>" for h in heads)
    table = f'<div class="wide"><table><tr>{head}</tr>{"".join(rows)}</table></div>'
    if not shared:
        return table
    notes = "".join(f'<li id="note-{i}">{escape(text)} <span class="note">({uses[text]} '
                    "gates)</span></li>" for text, i in shared.items())
    return table + f'<h3>Notes shared by several gates</h3><ol class="notes">{notes}</ol>'


def _sweep(results: list[Any]) -> str:
    """EV and CE-loss score against L0: a sweep's checkpoints joined by L0, one line per
    architecture and width (they differ in sparsity alone); a training run's checkpoints
    joined step by step, one line per run (a path through training, not a frontier)."""
    points = [r for r in results if r.value(L0) is not None]
    if len(points) < 2:
        return ""
    runs = {r.sae_id: p for r in points if (p := lineage.position(r.sae_id)) is not None}
    runs = {k: p for k, p in runs.items()
            if sum(q.run == p.run for q in runs.values()) > 1}  # a run of one is a point
    groups = {_family(r) for r in points if r.sae_id not in runs}
    charts = []
    for metric, label in SWEEP_Y:
        series: dict[str, list[tuple[float, float, str]]] = {}
        trained: set[str] = set()
        for r in sorted(points, key=lambda r: runs[r.sae_id].step if r.sae_id in runs else 0):
            if r.value(metric) is None:
                continue
            if r.sae_id in runs:
                name = f"training run {runs[r.sae_id].run} (in step order)"
                trained.add(name)
            else:
                name = _family(r) if len(groups) > 1 or runs else label
            series.setdefault(name, []).append((r.value(L0), r.value(metric), r.sae_id))
        if sum(len(v) for v in series.values()) >= 2:
            charts.append(svg.lines(f"{label} against L0", series, "L0 (log scale)", label,
                                    log_x=True, label_points=True,
                                    in_order=frozenset(trained)))
    return "".join(charts)


def _family(res: Any) -> str:
    cfg = res.sae_cfg or {}
    arch = str(cfg.get("architecture") or "unknown architecture")
    width = cfg.get("d_sae")
    return f"{arch}, {width:,} latents" if isinstance(width, int) else arch


def _frontier(rule: Any, front: list, results: list[Any]) -> str:
    mine = [(r.value(rule.x), r.value(rule.metric), r.sae_id) for r in results
            if r.value(rule.x) is not None and r.value(rule.metric) is not None]
    if not front and not mine:
        return ""
    series = {f"frontier of {Path(rule.against).name}": [(x, y, "") for x, y, _ in front],
              "this run": mine}
    return svg.lines(f"{rule.metric} against {rule.x}", series, f"{rule.x} (log scale)",
                     rule.metric.rsplit(".", 1)[-1], log_x=True, label_points=True)


def _metric_link(metric: str, breaks: bool = False) -> str:
    shown = _breaks(escape(metric)) if breaks else escape(metric)
    return f'<a href="#m-{escape(metric)}"><code>{shown}</code></a>'


def _breaks(text: str) -> str:
    """Escaped ``text`` with a line-break opportunity after each ``.`` and ``/``: a wrapped
    metric id or checkpoint path breaks between its parts, not inside a word."""
    return text.replace(".", ".<wbr>").replace("/", "/<wbr>")


def _glossary(results: list[Any], checks: list[dict[str, Any]], registry: Any) -> str:
    """What each metric in the report is: its name, direction and eval (linked from the
    metric names above)."""
    if registry is None:
        return ""
    shown = {c["metric"] for c in checks} | {m for r in results for m in r.all_metrics()}
    rows = []
    for metric in sorted(shown):
        spec = registry.get(metric)
        if spec is None:
            continue
        better = DIRECTIONS.get(spec.direction, spec.direction)
        note = f'<br><span class="note">{escape(spec.note)}</span>' if spec.note else ""
        rows.append(f'<tr id="m-{escape(metric)}"><td><code>{escape(metric)}</code></td>'
                    f"<td>{escape(spec.title)}{note}</td><td>{escape(better)}</td></tr>")
    if not rows:
        return ""
    return ("<h2>The metrics</h2><p class=\"note\">What each means and how it is computed: "
            "docs/metrics.md and docs/evals.md in the pytest-saebench repository.</p>"
            "<details><summary>metric, name, which way is better</summary><table><tr><th>metric"
            "</th><th>name</th><th>better</th></tr>" + "".join(rows) + "</table></details>")


def _described(res: Any) -> str:
    """What was evaluated: model (as loaded), hook, dataset, architecture, width and each
    eval's budget."""
    cfg, inputs = res.sae_cfg or {}, res.inputs or {}
    meta = {**cfg, **(cfg.get("metadata") or {})}
    model, data, sae = (inputs.get(k) or {} for k in ("model", "dataset", "sae"))
    flags = [f for f in ("fold_ln", "center_writing_weights", "center_unembed") if model.get(f)]
    facts = [
        ("model", (model.get("name") or meta.get("model_name") or "?")
         + (f" ({model['loader']}" + (f"; {', '.join(flags)}" if flags else "") + ")"
            if model.get("loader") else "")),
        ("hook", meta.get("hook_name") or meta.get("hook_point") or "?"),
        ("dataset", (data.get("name") or meta.get("dataset_path") or "?")
         + (f" ({_how_read(data)})" if data else "")),
        ("SAE", f"{sae.get('architecture') or cfg.get('architecture', '?')}, d_in "
                f"{cfg.get('d_in', '?')}, d_sae {cfg.get('d_sae', '?')}"
         + (f", k {cfg['k']}" if cfg.get("k") else "")
         + (f", {sae['format']}" if sae.get("format") else "")),
    ]
    if (sae.get("activation_scaling_folded") or {}).get("normalize_activations"):
        fold = sae["activation_scaling_folded"]
        facts.append(("folded at load", f"{fold['normalize_activations']} (scaling factor "
                                        f"{fold.get('scaling_factor')})"))
    budgets = "; ".join(f"{name}: " + ", ".join(
        f"{k} {v}" for k, v in ev.config.items() if isinstance(v, int)
        and not isinstance(v, bool)) for name, ev in res.evals.items()
        if isinstance(ev.config, dict))
    facts.append(("budgets", budgets or "?"))
    return "<table class=\"facts\">" + "".join(
        f"<tr><th>{escape(k)}</th><td class=\"note\">{escape(str(v))}</td></tr>"
        for k, v in facts) + "</table>"


def _how_read(data: dict[str, Any]) -> str:
    ways = [w for w in ("streamed", "pretokenized") if data.get(w)]
    return ", ".join(ways) or "read whole"


def _checkpoint(res: Any, registry: Any) -> str:
    parts = [f'<h2 id="{escape(res.sae_id)}">{escape(res.sae_id)}</h2>',
             f'<p class="note">{escape(res.path)} · sha256 {escape(res.sha256[:16])}… · '
             f"evaluated in {res.seconds:.1f} s</p>", _described(res)]
    absent = [title for key, title in PLOTTED if key not in res.evals]
    parts += [c for c in (_density(res), _probing(res), _absorption(res)) if c]
    if absent:
        parts.append(f'<p class="note">Not plotted: {escape(", ".join(absent))} (not part of '
                     "this run).</p>")
    rows = []
    for metric, value in res.all_metrics().items():
        spec = registry.get(metric) if registry is not None else None
        shown = fmt(value, res.stderr(metric)) if res.computed(metric) else "not computed"
        why = res.reason(metric) if value is None else (spec.note if spec else "")
        rows.append(f"<tr><td>{_metric_link(metric)}</td>"
                    f"<td>{escape(spec.direction if spec else '')}</td>"
                    f"<td>{escape(shown)}</td><td class=\"note\">{escape(why or '')}</td></tr>")
    parts.append("<details><summary>all metrics</summary><table><tr><th>metric</th>"
                 "<th>direction</th><th>value ± stderr</th><th>note</th></tr>"
                 + "".join(rows) + "</table></details>")
    return "\n".join(parts)


def _missing(title: str, why: str) -> str:
    """Where a plot would be: its title and why it is not there."""
    return f'<div class="missing"><b>{escape(title)}: no plot</b>{escape(why)}</div>'


def _density(res: Any) -> str:
    core = res.evals.get(CORE)
    if core is None:
        return ""
    title = "latent density"
    if not core.details:
        return _missing(title, "these results hold no per-latent densities (a results JSON "
                               "keeps the summary metrics only)")
    density = [d.get("feature_density") for d in core.details]
    alive = [x for x in density if x is not None and x > 0]
    dead = sum(1 for x in density if x is not None and x == 0)
    edges = list(DENSITY_EDGES)
    low = min(alive, default=1.0)
    while edges[0] > low:
        edges.insert(0, edges[0] / 10)
    return svg.histogram(f"{title} (fraction of tokens a latent fires on)", alive, edges,
                         "density bin (lower edge, log scale)", ("dead", dead))


def _probing(res: Any) -> str:
    sp = res.evals.get(PROBING)
    if sp is None:
        return ""
    series: dict[str, list[tuple[float, float, str]]] = {"SAE": [], "LLM": []}
    for metric, value in sp.metrics.items():
        for name, prefix in (("SAE", "sparse_probing.sae.sae_top_"),
                             ("LLM", "sparse_probing.llm.llm_top_")):
            if metric.startswith(prefix) and value is not None:
                k = int(metric[len(prefix):].split("_", 1)[0])
                series[name].append((float(k), value, f"top-{k}", sp.stderr.get(metric)))
    if not series["SAE"]:
        first = "sparse_probing.sae.sae_top_1_test_accuracy"
        return _missing("probing accuracy against k", res.reason(first) or next(
            iter(sp.not_computed.values()), "no top-k accuracy was computed"))
    return svg.lines("probing accuracy against k (bars: ± 1 standard error)", series,
                     "k latents / dimensions (log)", "test accuracy", log_x=True)


def _absorption(res: Any) -> str:
    ab = res.evals.get(ABSORPTION)
    if ab is None:
        return ""
    f1 = ab.unstructured.get("ground_truth_f1") or {}
    scored = {d["first_letter"]: d for d in ab.details}
    letters = sorted(set(f1) | set(scored))
    if not letters:
        return _missing("absorption by first letter", res.reason(ABSORPTION_SCORE) or
                        "no letter was probed")
    series = {
        "absorption fraction": [scored[x]["mean_absorption_fraction"] if x in scored else None
                                for x in letters],
        "full absorption rate": [scored[x]["full_absorption_rate"] if x in scored else None
                                 for x in letters],
        "ground-truth probe F1": [_finite(f1.get(x)) for x in letters],
    }
    if scored:
        note = ""
    elif ab.unstructured.get("letters_scored"):
        note = ('<p class="note">Per-letter absorption is not in these results (read from a '
                "results JSON, which keeps the mean only); bars show the spelling probe's "
                "F1.</p>")
    else:
        why = res.reason(ABSORPTION_SCORE) or "the ground-truth spelling probe is too weak"
        note = (f'<p class="note">No letter was scored: {escape(why)} (bars show the '
                "spelling probe's F1).</p>")
    unscored = ab.unstructured.get("letters_not_scored") or {}
    if unscored:
        listed = ", ".join(f"{letter} ({why})" for letter, why in sorted(unscored.items()))
        note += (f'<p class="note">Letters without a score ({len(unscored)}): '
                 f"{escape(listed)}.</p>")
    return note + svg.bars("absorption by first letter", letters, series, "fraction",
                           ylim=(0.0, 1.0))


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def staged(path: str, results: list[Any], checks: list[dict[str, Any]], suite: str,
           errors: dict[str, str], registry: Any = None,
           frontiers: list[tuple[Any, list]] | None = None,
           outcomes: dict[str, int] | None = None, history: tuple | None = None
           ) -> list[tuple[Path, bytes]]:
    """The report as a file to write (see outputs.py)."""
    return [(Path(path), render(results, checks, suite, errors, registry,
                                frontiers, outcomes, history).encode("utf-8"))]
