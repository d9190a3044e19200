"""The terminal table: one row per gated (or headline) metric per checkpoint."""

from __future__ import annotations

from typing import Any

from pytest_saebench.gates.registry import ARROWS
from pytest_saebench.gates.thresholds import fmt
from pytest_saebench.reporting.gates import noise_label

HEADLINE = (
    "core.sparsity.l0",
    "core.reconstruction_quality.explained_variance",
    "core.model_performance_preservation.ce_loss_score",
    "core.model_performance_preservation.ce_loss_increase",
    "core.model_behavior_preservation.kl_div_score",
    "core.misc_metrics.frac_alive",
)


HEADER = ["sae", "metric", "dir", "value ± stderr", "limit", "status"]
BASELINE_HEADER = ["baseline", "Δ", "vs baseline", "noise"]
NULL_HEADER = ["vs random (gain)"]


def rows(results: list[Any], checks: list[dict[str, Any]], registry: Any, verbose: bool
         ) -> list[list[str]]:
    """Table rows: SAE, metric, direction, value ± stderr, limit, status; plus baseline, Δ,
    the regression status and the noise it was decided against (main's runs, the
    evaluation's, unknown) when the run compared against a baseline; and the verdict against
    a random SAE of the checkpoint's shape, with the gain, when it has null rules."""
    limits = {(c["sae"], c["metric"]): c for c in checks
              if c.get("kind", "threshold") == "threshold"}
    regressions = {(c["sae"], c["metric"]): c for c in checks if c.get("kind") == "regression"}
    nulls = {(c["sae"], c["metric"]): c for c in checks if c.get("kind") == "null"}
    out: list[list[str]] = []
    for res in results:
        gated = list(dict.fromkeys(m for (sae, m) in [*limits, *regressions, *nulls]
                                   if sae == res.sae_id))
        metrics = list(res.all_metrics()) if verbose else [
            *gated, *(m for m in HEADLINE if m not in gated and res.computed(m))]
        for metric in metrics:
            c = limits.get((res.sae_id, metric), {})
            spec = registry.get(metric) if registry is not None else None
            value = res.value(metric) if res.computed(metric) else None
            shown = fmt(value, res.stderr(metric)) if res.computed(metric) else "-"
            row = [res.sae_id, metric, ARROWS.get(spec.direction, "") if spec else "",
                   shown, c.get("limit", ""), c.get("status", "").upper()]
            if regressions:
                r = regressions.get((res.sae_id, metric), {})
                delta = r.get("delta")
                row += [fmt(r["baseline"]) if r.get("baseline") is not None else "",
                        f"{delta:+.4g}" if delta is not None else "",
                        r.get("status", "").upper(), noise_label(r)]
            if nulls:
                n = nulls.get((res.sae_id, metric), {})
                gain = n.get("delta")
                row.append(" ".join([n.get("status", "").upper(), f"({gain:+.4g})"
                                     if gain is not None else ""]).strip())
            out.append(row)
    return out


def render(table: list[list[str]], registry: Any = None) -> list[str]:
    """Align ``table`` under the metric table's header into text lines, then a note for
    each metric shown whose value needs one (a bug-compatible id beside the corrected)."""
    extra = len(table[0]) - len(HEADER) if table else 0
    header = HEADER + (BASELINE_HEADER if extra >= len(BASELINE_HEADER) else []) + (
        NULL_HEADER if extra % len(BASELINE_HEADER) else [])
    shown = dict.fromkeys(row[1] for row in table)
    notes = [f"note: {m}: {registry[m].note}" for m in shown
             if registry is not None and m in registry and registry[m].note]
    return align(header, table) + notes


def align(header: list[str], table: list[list[str]]) -> list[str]:
    """Left-aligned columns under ``header`` and a rule line."""
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in table]
    return lines
