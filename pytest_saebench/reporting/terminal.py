"""The terminal table: one row per gated (or headline) metric per checkpoint."""

from __future__ import annotations

from typing import Any

from pytest_saebench.metrics import ARROWS
from pytest_saebench.thresholds import fmt

HEADLINE = (
    "core.sparsity.l0",
    "core.reconstruction_quality.explained_variance",
    "core.model_performance_preservation.ce_loss_score",
    "core.model_performance_preservation.ce_loss_increase",
    "core.model_behavior_preservation.kl_div_score",
    "core.misc_metrics.frac_alive",
)


def rows(results: list[Any], checks: list[dict[str, Any]], registry: Any, verbose: bool
         ) -> list[list[str]]:
    """Table rows: SAE, metric, direction, value ± stderr, limit, status."""
    by_key = {(c["sae"], c["metric"]): c for c in checks}
    out: list[list[str]] = []
    for res in results:
        gated = [m for (sae, m) in by_key if sae == res.sae_id]
        metrics = list(res.all_metrics()) if verbose else [
            *gated, *(m for m in HEADLINE if m not in gated and res.computed(m))]
        for metric in metrics:
            c = by_key.get((res.sae_id, metric), {})
            spec = registry.get(metric) if registry is not None else None
            value = res.value(metric) if res.computed(metric) else None
            shown = fmt(value, res.stderr(metric)) if res.computed(metric) else "-"
            out.append([res.sae_id, metric, ARROWS.get(spec.direction, "") if spec else "",
                        shown, c.get("limit", ""), c.get("status", "").upper()])
    return out


def render(table: list[list[str]]) -> list[str]:
    """Align ``table`` under a header into text lines."""
    header = ["sae", "metric", "dir", "value ± stderr", "limit", "status"]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in table]
    return lines
