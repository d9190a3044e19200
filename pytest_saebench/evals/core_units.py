"""Core's metrics and units from its per-context sums: each metric with its grouped-jackknife
standard error, and for paired comparisons (STATISTICS.md §1) the per-group sums the
jackknife resamples, each group's fingerprint, and every metric as a formula over the sums."""

from __future__ import annotations

import torch

from pytest_saebench.evals.base import (
    EvalContext,
    EvalResult,
    Groups,
    grouped_jackknife,
    input_fingerprint,
    mean_stderr,
    unit_table,
)
from pytest_saebench.gates.stats import Formula

RQ = "core.reconstruction_quality"
# The reconstruction and sparsity metrics that are means over valid tokens: (key, metric id).
PER_TOKEN: tuple[tuple[str, str], ...] = (
    ("legacy", f"{RQ}.explained_variance_legacy"), ("err", f"{RQ}.mse"),
    ("err_nb", f"{RQ}.mse_saebench_v0_6"), ("cos", f"{RQ}.cossim"),
    ("norm_in", "core.shrinkage.l2_norm_in"), ("norm_out", "core.shrinkage.l2_norm_out"),
    ("ratio", "core.shrinkage.l2_ratio"), ("l0", "core.sparsity.l0"), ("l1", "core.sparsity.l1"))


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> float:
    d = float(den)
    return float(num) / d if d != 0 else float("nan")


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
    out = {f"{RQ}.explained_variance": Formula(phase, {"err": 1.0}, {"ss": 1.0}, 1.0, -1.0,
                                               shared=("ss",))}
    out.update({metric: mean(key, "n") for key, metric in PER_TOKEN})
    return out


def record(res: EvalResult, phase: str, stats: dict[str, torch.Tensor],
           tokens: torch.Tensor, groups: Groups, ctx: EvalContext) -> None:
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


def record_loss(res: EvalResult, stats: dict[str, torch.Tensor], groups: Groups) -> None:
    """The loss phase's metrics, each its formula (the one its units record) jackknifed."""
    formulas = _formulas("loss")
    mp, mb = "core.model_performance_preservation", "core.model_behavior_preservation"
    for metric in (f"{mp}.ce_loss_without_sae", f"{mp}.ce_loss_with_sae",
                   f"{mp}.ce_loss_with_ablation", f"{mb}.kl_div_with_sae",
                   f"{mb}.kl_div_with_ablation", f"{mp}.ce_loss_increase"):
        res.set(metric, *grouped_jackknife(stats, formulas[metric], groups))
    totals = {k: v.sum() for k, v in stats.items()}
    gap = _safe_div(totals["ce_abl"] - totals["ce_clean"], totals["n_ce"])
    score_id = "core.model_performance_preservation.ce_loss_score"
    if not gap > 1e-6:
        res.set(score_id, None, reason=f"zero-ablation does not increase loss (CE_abl - CE_clean"
                f" = {gap:.3g} nats); gate on ce_loss_increase instead")
    else:
        res.set(score_id, *grouped_jackknife(stats, formulas[score_id], groups))
        if gap < 0.5:
            res.unstructured["warnings"] = [f"ce_loss_score is ill-conditioned: zero-ablation "
                                            f"raises CE by only {gap:.3f} nats"]
    kl_abl = _safe_div(totals["kl_abl"], totals["n_kl"])
    kl_id = "core.model_behavior_preservation.kl_div_score"
    if not kl_abl > 1e-12:
        res.set(kl_id, None, reason="KL with zero-ablation is 0; the score is undefined")
    else:
        res.set(kl_id, *grouped_jackknife(stats, formulas[kl_id], groups))


def explained_variance(s, err: str = "err") -> float:
    n = float(s["n"])
    var = float(s["x2"]) / n - float((s["sum_x"] / n).pow(2).sum())
    return 1 - float(s[err]) / n / var if var >= 1e-10 else float("nan")


def record_prefixes(res: EvalResult, stats, widths: list[int], groups: Groups) -> None:
    """Reconstruction from each nested Matryoshka prefix (``unstructured``, with stderrs)."""
    rows = []
    for i, width in enumerate(widths):
        at = "" if i == len(widths) - 1 else f"@{width}"  # the full width: the main sums
        row: dict[str, float | int] = {"width": width}
        for name, fn in (
                ("explained_variance", lambda s, a=at: explained_variance(s, f"err{a}")),
                ("mse", lambda s, a=at: _safe_div(s[f"err{a}"], s["n"])),
                ("cossim", lambda s, a=at: _safe_div(s[f"cos{a}"], s["n"])),
                ("l0", lambda s, a=at: _safe_div(s[f"l0{a}"], s["n"]))):
            value, stderr = grouped_jackknife(stats, fn, groups)
            row[name], row[f"{name}_stderr"] = value, stderr
        rows.append(row)
    res.unstructured["matryoshka_prefixes"] = rows


def record_variance(res: EvalResult, stats, rrb, ev_v06, groups: Groups) -> None:
    """The reconstruction and sparsity metrics: the per-token means through their formulas;
    explained variance exactly (each leave-one-out about its own mean)."""
    formulas = _formulas("variance")
    res.set(f"{RQ}.explained_variance", *grouped_jackknife(stats, explained_variance, groups),
            reason="activation variance is ~0")
    for _key, metric in PER_TOKEN:
        res.set(metric, *grouped_jackknife(stats, formulas[metric], groups))
    s_bar = sum(ev_v06["S"]) / len(ev_v06["S"])
    m_bar = sum(ev_v06["m"]) / len(ev_v06["m"])
    r_bar = sum(ev_v06["R"]) / len(ev_v06["R"])
    res.set(f"{RQ}.explained_variance_saebench_v0_6", 1 - r_bar / (s_bar - m_bar**2))
    res.set("core.shrinkage.relative_reconstruction_bias", *mean_stderr(rrb))


def record_density(res: EvalResult, active: torch.Tensor, prompts: torch.Tensor, n: float):
    density = active / max(n, 1.0)
    total = float(density.sum())
    mm = "core.misc_metrics"
    res.set(f"{mm}.frac_alive", float((density > 0).double().mean()))
    res.set(f"{mm}.frac_dead", float((density == 0).double().mean()))
    for pct, thr in (("1", 0.01), ("10", 0.1)):
        res.set(f"{mm}.freq_over_{pct}_percent", float((density > thr).double().mean()))
        share = float(density[density > thr].sum()) / total if total > 0 else 0.0
        res.set(f"{mm}.normalized_freq_over_{pct}_percent", share)
    alive = density[density > 0]
    res.set(f"{mm}.median_log10_feature_density",
            float(alive.log10().quantile(0.5)) if alive.numel() else None,
            reason="no latent fired")
    return density, torch.where(prompts > 0, active / prompts.clamp_min(1), float("nan"))
