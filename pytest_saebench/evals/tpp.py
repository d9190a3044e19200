"""tpp: Targeted Probe Perturbation (METRICS.md §6).

Ablating the latents most tied to class i should hurt the class-i probe and leave the other
classes' probes alone. Ablation keeps the SAE error term, so on mean-pooled activations it is
linear: ``pool(x') = pool(x) - pool(codes)[:, A] @ W_dec[A]``, and every N is evaluated
without another forward pass. The 2026 audit found TPP unreliable; gate it with
``severity = "warn"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from pytest_saebench.evals import probing
from pytest_saebench.evals.base import (
    EvalContext,
    EvalResult,
    input_fingerprint,
    mean_stderr,
    record_mean_units,
)
from pytest_saebench.gates.registry import MetricSpec

EVAL_TYPE_ID = "tpp"
# Reported as not computed for a transcoder (it reads one hook and writes another):
NOT_FOR_TRANSCODERS = (
    "it ablates latents and splices the decoded result back at the input hook")
SCHEMA_N = (2, 5, 10, 20, 50, 100, 500)
CLASSES = {"supersense_wordnet": ("animal", "artifact", "food", "person", "plant"),
           "genre_shakespeare": ("comedies", "histories", "romances", "roman", "tragedies")}


@dataclass(frozen=True)
class Config:
    """TPP settings (SAEBench names; probe settings are SCR's, §5.3)."""

    dataset_names: tuple[str, ...] = ("supersense_wordnet",)
    train_set_size: int = 3000  # per class: half; our sets hold 2000 rows per class
    test_set_size: int = 1000
    context_length: int = 128
    n_values: tuple[int, ...] = SCHEMA_N
    probe_lr: float = 1e-3
    probe_batch_size: int = 16
    probe_epochs: int = 20
    probe_l1_penalty: float = 1e-3
    sae_batch_size: int = 125
    llm_batch_size: int = 32
    remask_after_ablation: bool = True  # SAEBench: False (see METRICS.md §5.2 step 8)


PRESETS = {
    "fast": Config(train_set_size=1000, test_set_size=250, context_length=64,
                   n_values=(2, 5, 10, 20, 50)),
    "standard": Config(),
    "full": Config(dataset_names=tuple(CLASSES)),
}

METRICS: tuple[MetricSpec, ...] = tuple(
    spec for n in SCHEMA_N for spec in (
        MetricSpec(f"tpp.tpp_metrics.tpp_threshold_{n}_total_metric", "up",
                   f"TPP total, N={n}", default_severity="warn"),
        MetricSpec(f"tpp.tpp_metrics.tpp_threshold_{n}_intended_diff_only", "up",
                   f"TPP intended drop, N={n}", default_severity="warn"),
        MetricSpec(f"tpp.tpp_metrics.tpp_threshold_{n}_unintended_diff_only", "down",
                   f"TPP unintended drop, N={n}", default_severity="warn"),
    ))


def _llm_side(ctx: EvalContext, cfg: Config, name: str) -> dict:
    """Pooled activations and one probe per class, shared by every checkpoint."""
    return probing.memoized(ctx, "tpp", cfg, name, lambda: _compute_llm_side(ctx, cfg, name))


def _compute_llm_side(ctx: EvalContext, cfg: Config, name: str) -> dict:
    side = probing.labeled_activations(ctx, name, CLASSES[name], cfg.train_set_size // 2,
                                       cfg.test_set_size // 2, cfg.context_length,
                                       cfg.llm_batch_size)

    def train() -> dict[str, torch.Tensor]:
        out = {}
        for c in side["classes"]:
            (i_tr, y_tr), (i_te, y_te) = side["tasks"][c]["train"], side["tasks"][c]["test"]
            acc, w, b = probing.train_probe(
                side["train_pooled"][i_tr], y_tr, side["test_pooled"][i_te], y_te,
                probing.derive_seed(ctx.seed, name, c, "tpp-probe"), lr=cfg.probe_lr,
                epochs=cfg.probe_epochs, batch_size=cfg.probe_batch_size,
                patience=cfg.probe_epochs, l1=cfg.probe_l1_penalty)
            out[f"{c}/weight"] = w
            out[f"{c}/accuracy_bias"] = torch.tensor([acc, b], dtype=torch.float64)
        return out

    # The probes read only the model's activations: trained once, kept with them on disk
    # (retraining them was most of a warm TPP run in a new process).
    parts = ctx.cache_parts(probing_set=name, config=dataclasses.asdict(cfg))
    probes = ctx.cache.get("tpp-probes", parts, train)
    side["probes"] = {c: (float(probes[f"{c}/accuracy_bias"][0]), probes[f"{c}/weight"],
                          float(probes[f"{c}/accuracy_bias"][1])) for c in side["classes"]}
    return side


def n_units(cfg: Config) -> int:
    """How many units (datasets) the standard errors of ``cfg`` resample (a gate with ``z``
    on fewer than 3 is warned about at start-up)."""
    return len(cfg.dataset_names)


def run(ctx: EvalContext, cfg: Config) -> EvalResult:
    """Run TPP on every configured dataset."""
    res = EvalResult(EVAL_TYPE_ID, {**dataclasses.asdict(cfg), "random_seed": ctx.seed,
                                    "model_name": ctx.model.cfg.model_name,
                                    "hook_name": ctx.loaded.hook.name})
    sae = ctx.loaded.sae
    w_dec = sae.W_dec.detach().float().cpu()
    enc0 = probing.sae_codes_at_zero(sae)
    per_dataset: dict[str, dict[str, float]] = {}
    for name in cfg.dataset_names:
        side = _llm_side(ctx, cfg, name)
        classes = side["classes"]
        codes = {s: probing.sae_pool(sae, side[f"{s}_acts"], cfg.sae_batch_size,
                                    ctx.sae_memo)
                 for s in ("train", "test")}
        clean = {c: probing.accuracy(side["test_pooled"][side["tasks"][c]["test"][0]],
                                     side["tasks"][c]["test"][1], *side["probes"][c][1:])
                 for c in classes}
        row: dict[str, float] = {}
        per_class: dict[str, dict[str, float]] = {}
        for n in cfg.n_values:
            totals, intended, unintended = [], [], []
            for i in classes:
                idx, y = side["tasks"][i]["train"]
                delta = codes["train"][idx[y == 1]].mean(0) - codes["train"][idx[y == 0]].mean(0)
                effect = delta.clamp_min(0) * (w_dec @ side["probes"][i][1])
                chosen = probing.top_latents(effect, n)
                x_abl = probing.ablated(side["test_pooled"], codes["test"],
                                        side["test_invalid_ratio"], enc0, w_dec, chosen,
                                        cfg.remask_after_ablation)
                acc = {j: probing.accuracy(x_abl[side["tasks"][j]["test"][0]],
                                           side["tasks"][j]["test"][1], *side["probes"][j][1:])
                       for j in classes}
                drop_i = clean[i] - acc[i]
                drop_others = float(np.mean([clean[j] - acc[j] for j in classes if j != i]))
                intended.append(drop_i)
                unintended.append(drop_others)
                totals.append(drop_i - drop_others)
                per_class.setdefault(i, {})[f"tpp_threshold_{n}_total_metric"] = totals[-1]
            row[f"tpp_threshold_{n}_total_metric"] = float(np.mean(totals))
            row[f"tpp_threshold_{n}_intended_diff_only"] = float(np.mean(intended))
            row[f"tpp_threshold_{n}_unintended_diff_only"] = float(np.mean(unintended))
        per_dataset[name] = row
        res.details.append({"dataset_name": f"{name}_tpp_results", **row})
        res.unstructured[name] = {"clean_accuracy": clean, "per_class": per_class}
    for spec in METRICS:
        values = [row[spec.key] for row in per_dataset.values() if spec.key in row]
        if values:
            res.set(spec.id, *mean_stderr(values))
        else:
            res.metrics[spec.id] = None
            res.not_computed[spec.id] = (f"N not in this suite's n_values {cfg.n_values} "
                                         "(suite 'standard' runs N up to 500)")
    record_mean_units(res, "dataset", per_dataset, {spec.id: spec.key for spec in METRICS},
                      input_fingerprint(ctx, EVAL_TYPE_ID, config=dataclasses.asdict(cfg),
                                        seed=ctx.seed),
                      {name: probing.set_digest(name) for name in per_dataset})
    return res
