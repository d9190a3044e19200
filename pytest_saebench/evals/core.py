"""core: reconstruction, sparsity, downstream loss and latent statistics (METRICS.md §2)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from pytest_saebench.activations import logits_with_replacement
from pytest_saebench.evals import core_side, core_units
from pytest_saebench.evals.base import EvalContext, EvalResult, group_bounds
from pytest_saebench.gates import budget
from pytest_saebench.gates.registry import MetricSpec

EVAL_TYPE_ID = "core"
ADAPTIVE = True  # evaluates in looks at growing prefixes under budget = "adaptive"
READS_DATASET = True  # the checkpoint's dataset: checked at start-up (inputs.preflight)


@dataclass(frozen=True)
class Config:
    """Core settings; field names follow SAEBench's ``CoreEvalConfig``."""

    batch_size_prompts: int = 16
    n_eval_reconstruction_batches: int = 10
    n_eval_sparsity_variance_batches: int = 1
    context_size: int = 0  # 0: the SAE's own context_size
    exclude_special_tokens_from_reconstruction: bool = True
    compute_featurewise_weight_based_metrics: bool = True
    max_d_sae_for_weight_metrics: int = 16384
    # Jackknife groups per phase, at most one per context: fine enough that an adaptive
    # budget's first look (1/8 of the loss phase's 64 contexts at `fast`) holds 8 of them.
    stderr_groups: int = 128


WARN = "warn"

PRESETS = {
    "fast": Config(batch_size_prompts=8, n_eval_reconstruction_batches=8,
                   n_eval_sparsity_variance_batches=32),
    "standard": Config(batch_size_prompts=16, n_eval_reconstruction_batches=50,
                       n_eval_sparsity_variance_batches=250),
    "full": Config(batch_size_prompts=16, n_eval_reconstruction_batches=200,
                   n_eval_sparsity_variance_batches=2000, max_d_sae_for_weight_metrics=1 << 30),
}


def _m(cat: str, key: str, direction: str, title: str, severity: str = "error",
       note: str = "", monotone: str = "") -> MetricSpec:
    return MetricSpec(f"core.{cat}.{key}", direction, title,  # type: ignore[arg-type]
                      default_severity=severity, note=note, monotone=monotone)


# Bug-compatible ids sit beside the corrected ones: say why they differ (METRICS.md 2.4-2.5).
_V06 = "SAEBench 0.6.0's value, kept to compare with published numbers: "
MSE_NOTE = _V06 + "it also divides by the tokens in each batch, so it is about mse / batch size"
EV_NOTE = _V06 + "its variance is taken about zero, not the mean (SAELens#659); never gate on it"


METRICS: tuple[MetricSpec, ...] = (
    _m("model_behavior_preservation", "kl_div_score", "up", "KL-divergence score"),
    _m("model_behavior_preservation", "kl_div_with_sae", "down", "KL(clean || SAE) per token"),
    _m("model_behavior_preservation", "kl_div_with_ablation", "info", "KL(clean || zero-abl.)"),
    _m("model_performance_preservation", "ce_loss_score", "up", "CE loss recovered"),
    # warn by default: its seed-to-seed spread is mostly the clean loss of the drawn windows,
    # so at the fast budget it does not separate 25 from 6000 steps; ce_loss_score and
    # ce_loss_increase (the same runs, differenced) do.
    _m("model_performance_preservation", "ce_loss_with_sae", "down", "CE loss with SAE", WARN),
    _m("model_performance_preservation", "ce_loss_without_sae", "info", "CE loss, clean"),
    _m("model_performance_preservation", "ce_loss_with_ablation", "info", "CE loss, zero-abl."),
    _m("model_performance_preservation", "ce_loss_increase", "down", "CE increase (nats)"),
    _m("reconstruction_quality", "explained_variance", "up", "explained variance"),
    _m("reconstruction_quality", "explained_variance_legacy", "up", "explained var. (legacy)"),
    _m("reconstruction_quality", "explained_variance_saebench_v0_6", "info", "EV (SAEBench 0.6)",
       note=EV_NOTE),
    _m("reconstruction_quality", "mse", "down", "MSE per token"),
    _m("reconstruction_quality", "mse_saebench_v0_6", "info", "MSE (SAEBench 0.6)",
       note=MSE_NOTE),
    _m("reconstruction_quality", "cossim", "up", "cosine similarity"),
    _m("shrinkage", "l2_norm_in", "info", "mean ||x||"),
    _m("shrinkage", "l2_norm_out", "info", "mean ||x_hat||"),
    _m("shrinkage", "l2_ratio", "band", "mean ||x_hat||/||x||"),
    _m("shrinkage", "relative_reconstruction_bias", "band", "relative reconstruction bias"),
    _m("sparsity", "l0", "band", "L0"),
    _m("sparsity", "l1", "info", "L1"),
    _m("token_stats", "total_tokens_eval_reconstruction", "info", "tokens (loss phase)"),
    _m("token_stats", "total_tokens_eval_sparsity_variance", "info", "tokens (variance phase)"),
    # a latent seen firing stays alive as more tokens are read
    _m("misc_metrics", "frac_alive", "up", "fraction of latents alive", monotone="up"),
    _m("misc_metrics", "frac_dead", "down", "fraction of latents dead", monotone="down"),
    _m("misc_metrics", "freq_over_1_percent", "down", "latents with density > 1%"),
    # warn by default: on the reference ladder these four rise with training (TopK training
    # makes more frequent latents and closer decoder rows); see benchmarks/gate_signal.py.
    _m("misc_metrics", "freq_over_10_percent", "down", "latents with density > 10%", WARN),
    _m("misc_metrics", "normalized_freq_over_1_percent", "down", "activity share, density > 1%"),
    _m("misc_metrics", "normalized_freq_over_10_percent", "down", "activity share, density > 10%",
       WARN),
    _m("misc_metrics", "median_log10_feature_density", "info", "median log10 density (alive)"),
    _m("misc_metrics", "average_max_encoder_cosine_sim", "down", "mean max encoder cosine", WARN),
    _m("misc_metrics", "average_max_decoder_cosine_sim", "down", "mean max decoder cosine", WARN),
    _m("misc_metrics", "frac_duplicate_latents", "down", "latents with a duplicate (cos>0.99)"),
    _m("misc_metrics", "decoder_norm_max_deviation", "info", "max | ||W_dec row|| - 1 |"),
)


def _ids(cat: str, *keys: str) -> list[str]:
    return [f"core.{cat}.{k}" for k in keys]


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> float:
    d = float(den)
    return float(num) / d if d != 0 else float("nan")


@torch.inference_mode()
def _loss_phase(ctx: EvalContext, side: dict[str, torch.Tensor], cfg: Config,
                done: dict[str, Any] | None = None, upto: int | None = None
                ) -> dict[str, torch.Tensor]:
    """Per-context sums of CE (clean / SAE / ablated) and KL (SAE / ablated) of the first
    ``upto`` contexts (a batch boundary; default all); only the SAE's own forward from the
    hook layer on is computed here. ``done`` keeps the batches computed for an earlier look."""
    loaded = ctx.loaded
    done = {} if done is None else done
    rows: dict[str, list[torch.Tensor]] = done.setdefault("rows", {})
    bsz = cfg.batch_size_prompts
    upto = side["tokens"].shape[0] if upto is None else upto
    for start in range(done.get("n", 0), upto, bsz):
        t = side["tokens"][start:start + bsz].to(ctx.device)
        v = side["valid"][start:start + bsz].to(ctx.device)
        act = side["act"][start:start + bsz].to(ctx.device)
        target = side.get("act_out", side["act"])[start:start + bsz].to(ctx.device)
        x_hat = loaded.reconstruct(act.to(loaded.sae.dtype)).float()
        if cfg.exclude_special_tokens_from_reconstruction:
            x_hat = torch.where(v[..., None], x_hat, target)
        lp_clean = core_side.clean_logprobs(ctx, side, start, bsz)
        ce, kl = core_side.ce_kl_rows(
            logits_with_replacement(ctx.model, t, loaded.target, x_hat), lp_clean, t)
        rows.setdefault("ce_sae", []).append((ce.double() * v[:, :-1].double()).sum(1).cpu())
        rows.setdefault("kl_sae", []).append((kl.double() * v.double()).sum(1).cpu())
        done["n"] = start + t.shape[0]
    out = {k: torch.cat(v)[:upto] for k, v in rows.items()}
    for key in ("ce_clean", "ce_abl", "kl_abl", "n_ce", "n_kl"):
        out[key] = side[key][:upto]
    return out


# Latent tensors are processed in chunks of at most this many elements: beyond ~32 MB every
# temporary is a fresh mmap whose page faults cost more than the arithmetic (d_sae 16k).
LATENT_CHUNK_ELEMENTS = 1 << 22


def _encode_chunked(ctx: EvalContext, act: torch.Tensor, v: torch.Tensor,
                    totals: dict[str, torch.Tensor], prefixes: list[int] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                               dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """``x_hat``, per-token L0 and L1 of ``act`` ``[B, C, D]``, a few contexts at a time;
    adds each latent's valid firing count and firing-context count to ``totals``. For each
    width in ``prefixes`` also ``(x_hat, L0)`` decoded from the first ``width`` latents."""
    sae = ctx.loaded.sae
    step = max(1, LATENT_CHUNK_ELEMENTS // (act.shape[1] * ctx.loaded.d_sae))
    x_hat, l0, l1 = [], [], []
    nested: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {
        w: ([], []) for w in prefixes or ()}
    for i in range(0, act.shape[0], step):
        x_in = act[i:i + step].to(sae.dtype)
        feats = sae.encode(x_in)
        out = sae.decode(feats)
        x_hat.append((out + ctx.loaded.skip(x_in) if ctx.loaded.has_skip else out).float())
        for w, (xs, ls) in nested.items():
            head = feats.clone()
            head[..., w:] = 0
            xs.append(sae.decode(head).float())
            ls.append((head != 0).float().sum(-1).double())
        feats = feats.float()
        nz = feats != 0
        # Casting reductions over the latent axis take a slow kernel path (50x); counts are
        # exact in float32/int32, and L1 is summed in float32 before widening.
        l0.append(nz.float().sum(-1).double())
        l1.append(feats.sum(-1).double())
        nz_valid = nz & v[i:i + step, :, None]
        totals["active"] += nz_valid.reshape(-1, nz.shape[-1]).sum(0, dtype=torch.int32).cpu()
        totals["prompts"] += nz_valid.any(1).sum(0, dtype=torch.float64).cpu()
    return torch.cat(x_hat), torch.cat(l0), torch.cat(l1), {
        w: (torch.cat(xs), torch.cat(ls)) for w, (xs, ls) in nested.items()}


@torch.inference_mode()
def _variance_phase(ctx: EvalContext, side: dict[str, torch.Tensor], cfg: Config,
                    prefixes: list[int] | None = None, done: dict[str, Any] | None = None,
                    upto: int | None = None):
    """Per-context sums for reconstruction/sparsity metrics (and per Matryoshka prefix
    width), per-batch values, densities, of the first ``upto`` contexts (a batch boundary;
    default all). ``done`` keeps the batches computed for an earlier look."""
    done = {} if done is None else done
    rows: dict[str, list[torch.Tensor]] = done.setdefault("rows", {})
    rrb = done.setdefault("rrb", [])
    ev_v06 = done.setdefault("ev_v06", {"S": [], "m": [], "R": []})
    d_sae = ctx.loaded.d_sae
    totals = done.setdefault("totals", {"active": torch.zeros(d_sae, dtype=torch.float64),
                                        "prompts": torch.zeros(d_sae, dtype=torch.float64)})
    bsz = cfg.batch_size_prompts
    upto = side["tokens"].shape[0] if upto is None else upto
    for start in range(done.get("n", 0), upto, bsz):
        v = side["valid"][start:start + bsz].to(ctx.device)
        act, target = core_side.variance_activations(ctx, side, start, bsz)
        x_hat, l0, l1, nested = _encode_chunked(ctx, act, v, totals, prefixes)
        w = v.double()  # [B, C]
        n_b = w.sum()
        x, xh = target.double(), x_hat.double()
        err = (x - xh).pow(2).sum(-1)
        x2 = x.pow(2).sum(-1)
        xh2 = xh.pow(2).sum(-1)
        dot = (x * xh).sum(-1)
        n_in, n_out = x2.sqrt(), xh2.sqrt()
        cos = torch.where(n_out > 0, dot / (n_in * n_out).clamp_min(1e-30), torch.zeros_like(dot))
        ratio = n_out / torch.where(n_in < 1e-4, torch.ones_like(n_in), n_in)
        mu_b = (x * w[..., None]).sum((0, 1)) / n_b.clamp_min(1)
        legacy = 1 - err / (x - mu_b).pow(2).sum(-1)
        per_token = {
            "n": w, "x2": x2, "err": err, "cos": cos, "norm_in": n_in, "norm_out": n_out,
            "ratio": ratio, "l0": l0, "l1": l1, "legacy": legacy,
            "err_nb": err / n_b.clamp_min(1),
        }
        for width, (xh_w, l0_w) in nested.items():
            xh_w = xh_w.double()
            per_token[f"err@{width}"] = (x - xh_w).pow(2).sum(-1)
            norm_w = xh_w.pow(2).sum(-1).sqrt()
            per_token[f"cos@{width}"] = torch.where(
                norm_w > 0, (x * xh_w).sum(-1) / (n_in * norm_w).clamp_min(1e-30), 0.0)
            per_token[f"l0@{width}"] = l0_w
        for key, val in per_token.items():
            rows.setdefault(key, []).append(torch.where(w > 0, val * w, 0).sum(1))
        rows.setdefault("sum_x", []).append((x * w[..., None]).sum(1))
        if n_b > 0:
            rrb.append(_safe_div((xh2 * w).sum() / n_b, (dot * w).sum() / n_b))
            ev_v06["S"].append(float((x2 * w).sum() / n_b))
            ev_v06["m"].append(float(((x.pow(2) * w[..., None]).sum((0, 1)) / n_b).mean()))
            ev_v06["R"].append(float((err * w).sum() / n_b))
        done["n"] = start + v.shape[0]
    stats = {k: torch.cat(v)[:upto].cpu() for k, v in rows.items()}
    return stats, list(rrb), {k: list(x) for k, x in ev_v06.items()}, \
        totals["active"].clone(), totals["prompts"].clone()


def _max_other_cosine(rows: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each row, the max cosine with any other row, in chunks (O(F^2 D) time, O(F chunk))."""
    unit = torch.nn.functional.normalize(rows.float(), dim=-1)
    out = torch.empty(unit.shape[0])
    for lo in range(0, unit.shape[0], chunk):
        gram = unit[lo:lo + chunk] @ unit.T
        idx = torch.arange(lo, min(lo + chunk, unit.shape[0]))
        gram[idx - lo, idx] = -float("inf")
        out[lo:lo + chunk] = gram.max(-1).values.cpu()
    return out


@torch.inference_mode()
def _weight_stats(ctx: EvalContext) -> dict[str, torch.Tensor]:
    sae = ctx.loaded.sae
    w_enc, w_dec = sae.W_enc.detach().T, sae.W_dec.detach()
    bias = getattr(sae, "b_enc", None)
    if bias is None:
        bias = getattr(sae, "b_mag", None)
    return {
        "encoder_norm": w_enc.norm(dim=-1).cpu(),
        "encoder_decoder_cosine_sim": torch.nn.functional.cosine_similarity(
            w_enc.float(), w_dec.float(), dim=-1).cpu(),
        "max_encoder_cosine_sim": _max_other_cosine(w_enc),
        "max_decoder_cosine_sim": _max_other_cosine(w_dec),
        "encoder_bias": (bias.detach().float().cpu() if bias is not None
                         else torch.zeros(w_dec.shape[0])),
    }


def _fraction(sizes: tuple[int, int], n_rec: int, n_var: int) -> float:
    """A look's information fraction: the larger of its two phases' shares."""
    return max(sizes[0] / n_rec if n_rec else 0.0, sizes[1] / n_var if n_var else 0.0)


def _plan(n_rec: int, n_var: int, loss_bounds: list[int], var_bounds: list[int], bsz: int
          ) -> list[tuple[int, int]]:
    """The contexts of each phase at each look of an adaptive budget, each look's fraction
    above the last's (two targets that snap to the same fraction are one look)."""
    plan: list[tuple[int, int]] = []
    for f in budget.LOOKS:
        sizes = (budget.snap(n_rec, loss_bounds, bsz, f), budget.snap(n_var, var_bounds, bsz, f))
        if plan and _fraction(sizes, n_rec, n_var) <= _fraction(plan[-1], n_rec, n_var):
            plan[-1] = (max(plan[-1][0], sizes[0]), max(plan[-1][1], sizes[1]))
        else:
            plan.append(sizes)
    return plan


def run(ctx: EvalContext, cfg: Config) -> EvalResult:
    """Run the core eval on ``ctx`` with settings ``cfg``; with ``ctx.stop_when_decided`` (an
    adaptive budget) in looks at growing prefixes of the same windows, stopping at the first
    look where every gate reading it is decided."""
    ref = ctx.loaded.ref
    context = min(cfg.context_size or ref.context_size, ctx.model.cfg.n_ctx)
    bsz, groups = cfg.batch_size_prompts, cfg.stderr_groups
    n_rec = bsz * cfg.n_eval_reconstruction_batches
    n_var = bsz * cfg.n_eval_sparsity_variance_batches
    config = {**dataclasses.asdict(cfg), "context_size": context, "dataset": ctx.dataset,
              "model_name": ctx.model.cfg.model_name,
              "llm_dtype": str(ctx.model.cfg.dtype).removeprefix("torch."),
              "random_seed": ctx.seed, "decoder_norm_folded": ctx.loaded.folded,
              "stderr_method": "grouped jackknife over contexts"}
    widths = ref.matryoshka_widths  # the last is d_sae: the main metrics
    loss_bounds, var_bounds = group_bounds(n_rec, groups), group_bounds(n_var, groups)
    # The SAE-independent work is cached by the looks' segments with either budget, so that
    # an adaptive run computes only the looks it takes and a fixed run reuses them.
    looks = _plan(n_rec, n_var, loss_bounds, var_bounds, bsz)
    loss = core_side.loss_side(ctx, n_rec, n_rec + n_var, context, bsz,
                               [p[0] for p in looks]) if n_rec else None
    var = core_side.variance_side(ctx, n_rec, n_var, context, bsz,
                                  [p[1] for p in looks]) if n_var else None
    stop = ctx.stop_when_decided
    plan = looks if stop is not None else [(n_rec, n_var)]
    fractions = tuple(_fraction(p, n_rec, n_var) for p in plan)
    done_loss: dict[str, Any] = {}
    done_var: dict[str, Any] = {}
    for k, (n_l, n_v) in enumerate(plan):
        res = EvalResult(EVAL_TYPE_ID, dict(config))
        if n_rec:
            bounds = [b for b in loss_bounds if b <= n_l]
            stats = _loss_phase(ctx, loss.extend(n_l), cfg, done_loss, n_l)
            core_units.record_loss(res, stats, bounds)
            core_units.record(res, "loss", stats, loss["tokens"][:n_l], bounds, ctx)
        if n_var:
            bounds = [b for b in var_bounds if b <= n_v]
            stats, rrb, ev_v06, active, prompts = _variance_phase(
                ctx, var.extend(n_v), cfg, widths[:-1], done_var, n_v)
            core_units.record_variance(res, stats, rrb, ev_v06, bounds)
            core_units.record(res, "variance", stats, var["tokens"][:n_v], bounds, ctx)
            if widths:
                core_units.record_prefixes(res, stats, widths, bounds)
            density, cah = core_units.record_density(res, active, prompts,
                                                     float(stats["n"].sum()))
        else:
            density = cah = torch.full((ctx.loaded.d_sae,), float("nan"))
        res.set("core.token_stats.total_tokens_eval_reconstruction", float(n_l * context))
        res.set("core.token_stats.total_tokens_eval_sparsity_variance", float(n_v * context))
        if stop is None:
            break
        look = budget.Look(k, fractions)
        res.unstructured["looks"] = {
            "budget": "adaptive", "spending": budget.SPENDING, "fractions": list(fractions),
            "stopped_at": k, "contexts": [list(p) for p in plan[:k + 1]],
            "tokens_used": (n_l + n_v) * context, "tokens_cap": (n_rec + n_var) * context}
        if look.last or stop(res, look):
            break
    mm = "core.misc_metrics"
    res.set(f"{mm}.decoder_norm_max_deviation", ctx.loaded.decoder_norm_max_deviation)
    weights: dict[str, torch.Tensor] = {}
    if not cfg.compute_featurewise_weight_based_metrics:
        why = "compute_featurewise_weight_based_metrics is off in this suite's core config"
    elif ctx.loaded.d_sae > cfg.max_d_sae_for_weight_metrics:
        why = (f"d_sae={ctx.loaded.d_sae} exceeds max_d_sae_for_weight_metrics="
               f"{cfg.max_d_sae_for_weight_metrics} of this suite (suite 'full' computes it)")
    else:
        why = ""
        weights = _weight_stats(ctx)
        res.set(f"{mm}.average_max_encoder_cosine_sim",
                float(weights["max_encoder_cosine_sim"].mean()))
        res.set(f"{mm}.average_max_decoder_cosine_sim",
                float(weights["max_decoder_cosine_sim"].mean()))
        res.set(f"{mm}.frac_duplicate_latents",
                float((weights["max_decoder_cosine_sim"] > 0.99).double().mean()))
    if why:
        for key in ("average_max_encoder_cosine_sim", "average_max_decoder_cosine_sim",
                    "frac_duplicate_latents"):
            res.not_computed[f"{mm}.{key}"] = why
    res.details = _details(density, cah, weights)
    return res


def _details(density: torch.Tensor, cah: torch.Tensor, weights: dict[str, torch.Tensor]):
    """One SAEBench-style record per latent (values rounded to 10 decimals, NaN -> None)."""
    cols = {"feature_density": density, "consistent_activation_heuristic": cah, **weights}
    lists = {k: v.double().tolist() for k, v in cols.items()}
    out = []
    for i in range(density.shape[0]):
        row: dict[str, float | int | None] = {"index": i}
        for key, values in lists.items():
            x = values[i]
            row[key] = None if x != x else round(x, 10)
        out.append(row)
    return out
