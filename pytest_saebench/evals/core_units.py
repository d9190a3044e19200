"""Core's units for paired comparisons (STATISTICS.md §1): the per-group sums its grouped
jackknife resamples, each group's fingerprint, and every metric as a formula over the sums."""

from __future__ import annotations

import torch

from pytest_saebench.evals.base import EvalContext, EvalResult, input_fingerprint, unit_table
from pytest_saebench.gates.stats import Formula


def _formulas(phase: str) -> dict[str, Formula]:
    """Each metric of ``phase`` as a formula over its per-group sums (gates.stats)."""
    def mean(key: str, n: str) -> Formula:
        return Formula(phase, {key: 1.0}, {n: 1.0})

    if phase == "loss":
        mp, mb = "core.model_performance_preservation", "core.model_behavior_preservation"
        return {
            f"{mp}.ce_loss_without_sae": mean("ce_clean", "n_ce"),
            f"{mp}.ce_loss_with_sae": mean("ce_sae", "n_ce"),
            f"{mp}.ce_loss_with_ablation": mean("ce_abl", "n_ce"),
            f"{mp}.ce_loss_increase": Formula(phase, {"ce_sae": 1.0, "ce_clean": -1.0},
                                              {"n_ce": 1.0}),
            f"{mp}.ce_loss_score": Formula(phase, {"ce_abl": 1.0, "ce_sae": -1.0},
                                           {"ce_abl": 1.0, "ce_clean": -1.0}),
            f"{mb}.kl_div_with_sae": mean("kl_sae", "n_kl"),
            f"{mb}.kl_div_with_ablation": mean("kl_abl", "n_kl"),
            f"{mb}.kl_div_score": Formula(phase, {"kl_abl": 1.0, "kl_sae": -1.0},
                                          {"kl_abl": 1.0}),
        }
    rq = "core.reconstruction_quality"
    out = {f"{rq}.explained_variance": Formula(phase, {"err": 1.0}, {"ss": 1.0}, 1.0, -1.0)}
    for key, metric in (("legacy", f"{rq}.explained_variance_legacy"), ("err", f"{rq}.mse"),
                        ("err_nb", f"{rq}.mse_saebench_v0_6"), ("cos", f"{rq}.cossim"),
                        ("norm_in", "core.shrinkage.l2_norm_in"),
                        ("norm_out", "core.shrinkage.l2_norm_out"),
                        ("ratio", "core.shrinkage.l2_ratio"),
                        ("l0", "core.sparsity.l0"), ("l1", "core.sparsity.l1")):
        out[metric] = mean(key, "n")
    return out


def record(res: EvalResult, phase: str, stats: dict[str, torch.Tensor],
                  tokens: torch.Tensor, groups: int, ctx: EvalContext) -> None:
    """The phase's per-group sums, fingerprints and formulas, for paired comparisons."""
    formulas = {m: f for m, f in _formulas(phase).items() if res.metrics.get(m) is not None}
    if not formulas:
        return
    keys = {k for f in formulas.values() for k in (*f.num, *f.den)}
    per_context = {k: v for k, v in stats.items() if k in keys}
    if phase == "variance":
        # Each context's squared distance from the run's mean, summed: additive over groups
        # (the jackknife's per-group sums), and over all groups the total sum of squares
        # that the explained variance divides by.
        mu = stats["sum_x"].sum(0) / stats["n"].sum().clamp_min(1)
        per_context["ss"] = (stats["x2"] - 2 * stats["sum_x"] @ mu
                             + stats["n"] * mu.pow(2).sum())
    res.units[phase] = unit_table("context group", per_context, groups, tokens,
                                  input_fingerprint(ctx, f"core/{phase}"))
    res.formulas.update({m: f.to_json() for m, f in formulas.items()})
