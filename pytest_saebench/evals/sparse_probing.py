"""sparse_probing: can k SAE latents linearly detect known concepts? (METRICS.md §3)

Runs on the labeled sets shipped with the package (built from WordNet, the KJV and
Shakespeare; OFFLINE_DATA.md §3). Everything on the LLM side (activations, pooled vectors,
LLM probes) depends only on the model, hook and data, so it is computed once per run and
shared by every checkpoint.
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

EVAL_TYPE_ID = "sparse_probing"
SCHEMA_K = (1, 2, 5, 10, 20, 50, 100)
CLASSES = {
    "supersense_wordnet": ("animal", "artifact", "food", "person", "plant"),
    "genre_shakespeare": ("comedies", "histories", "romances", "roman", "tragedies"),
    "testament_kjv": ("new", "old"),
}


@dataclass(frozen=True)
class Config:
    """Sparse-probing settings (SAEBench names; per-class sizes are half of each set size)."""

    dataset_names: tuple[str, ...] = tuple(CLASSES)
    probe_train_set_size: int = 3000  # SAEBench 4000; our sets hold 2000 rows per class
    probe_test_set_size: int = 1000
    context_length: int = 128
    k_values: tuple[int, ...] = (1, 2, 5, 10, 20, 50)
    sae_batch_size: int = 125
    llm_batch_size: int = 32
    probe_epochs: int = 100
    probe_patience: int = 10


PRESETS = {
    "fast": Config(probe_train_set_size=1000, probe_test_set_size=250, context_length=64,
                   k_values=(1, 2, 5)),
    "standard": Config(),
    "full": Config(),
}

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("sparse_probing.llm.llm_test_accuracy", "info", "LLM probe accuracy"),
    *(MetricSpec(f"sparse_probing.llm.llm_top_{k}_test_accuracy", "info", f"LLM top-{k}")
      for k in SCHEMA_K),
    # warn by default: on the reference ladder (benchmarks/gate_signal.py) no SAE-side accuracy
    # moves by more than its noise (z < 3) at any budget, random init included.
    MetricSpec("sparse_probing.sae.sae_test_accuracy", "up", "SAE probe accuracy",
               default_severity="warn"),
    *(MetricSpec(f"sparse_probing.sae.sae_top_{k}_test_accuracy", "up", f"SAE top-{k} accuracy",
                 default_severity="warn") for k in SCHEMA_K),
)


def _llm_side(ctx: EvalContext, cfg: Config, name: str) -> dict:
    """Pooled LLM activations, raw activations and LLM probe results for one dataset."""
    return probing.memoized(ctx, "sparse_probing", cfg, name,
                            lambda: _compute_llm_side(ctx, cfg, name))


def _compute_llm_side(ctx: EvalContext, cfg: Config, name: str) -> dict:
    side = probing.labeled_activations(ctx, name, CLASSES[name], cfg.probe_train_set_size // 2,
                                       cfg.probe_test_set_size // 2, cfg.context_length,
                                       cfg.llm_batch_size)
    keys = ["test_accuracy", *(f"top_{k}_test_accuracy" for k in cfg.k_values)]

    def probe_llm() -> dict[str, torch.Tensor]:
        rows = _probe_all(side, "train_pooled", "test_pooled", cfg, ctx.seed, name)
        return {"llm": torch.tensor([[rows[c][k] for k in keys] for c in side["classes"]],
                                    dtype=torch.float64)}

    parts = ctx.cache_parts(probing_set=name, config=dataclasses.asdict(cfg))
    table = ctx.cache.get("sparse-probing-llm", parts, probe_llm)["llm"].tolist()
    side["llm"] = {c: dict(zip(keys, table[i], strict=True))
                   for i, c in enumerate(side["classes"])}
    return side


def _probe_all(side: dict, train_key: str, test_key: str, cfg: Config, seed: int,
               name: str, train_x: torch.Tensor | None = None,
               test_x: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
    """Per class: full-width probe accuracy and top-k accuracies."""
    x_tr = side[train_key] if train_x is None else train_x
    x_te = side[test_key] if test_x is None else test_x
    out: dict[str, dict[str, float]] = {}
    for c in side["classes"]:
        (i_tr, y_tr), (i_te, y_te) = side["tasks"][c]["train"], side["tasks"][c]["test"]
        acc, _, _ = probing.train_probe(x_tr[i_tr], y_tr, x_te[i_te], y_te,
                                     probing.derive_seed(seed, name, c, train_key, "probe"),
                                     epochs=cfg.probe_epochs, patience=cfg.probe_patience)
        row = {"test_accuracy": acc}
        xn_tr, xn_te = x_tr[i_tr].numpy(), x_te[i_te].numpy()
        for k in cfg.k_values:
            row[f"top_{k}_test_accuracy"] = probing.top_k_accuracy(xn_tr, y_tr, xn_te, y_te, k)
        out[c] = row
    return out


def n_units(cfg: Config) -> int:
    """How many units (datasets) the standard errors of ``cfg`` resample (a gate with ``z``
    on fewer than 3 is warned about at start-up)."""
    return len(cfg.dataset_names)


def run(ctx: EvalContext, cfg: Config) -> EvalResult:
    """Run sparse probing on every configured dataset."""
    res = EvalResult(EVAL_TYPE_ID, {**dataclasses.asdict(cfg), "random_seed": ctx.seed,
                                    "model_name": ctx.model.cfg.model_name,
                                    "hook_name": ctx.loaded.hook.name,
                                    "probe_selection": "best test-set epoch (as SAEBench)"})
    per_dataset: dict[str, dict[str, float]] = {}
    for name in cfg.dataset_names:
        side = _llm_side(ctx, cfg, name)
        sae = ctx.loaded.sae
        sae_tr = probing.sae_pool(sae, side["train_acts"], cfg.sae_batch_size, ctx.sae_memo)
        sae_te = probing.sae_pool(sae, side["test_acts"], cfg.sae_batch_size, ctx.sae_memo)
        sae_rows = _probe_all(side, "sae_train", "sae_test", cfg, ctx.seed, name, sae_tr, sae_te)
        row: dict[str, float] = {}
        for prefix, rows in (("llm", side["llm"]), ("sae", sae_rows)):
            for key in rows[side["classes"][0]]:
                row[f"{prefix}_{key}"] = float(np.mean([rows[c][key] for c in side["classes"]]))
        per_dataset[name] = row
        res.unstructured[name] = {"llm": side["llm"], "sae": sae_rows}
        res.details.append({"dataset_name": f"{name}_results", **row})
    for prefix, category in (("llm", "llm"), ("sae", "sae")):
        keys = ["test_accuracy", *(f"top_{k}_test_accuracy" for k in SCHEMA_K)]
        for key in keys:
            metric = f"sparse_probing.{category}.{prefix}_{key}"
            values = [row[f"{prefix}_{key}"] for row in per_dataset.values()
                      if f"{prefix}_{key}" in row]
            if values:
                res.set(metric, *mean_stderr(values))
            else:
                res.metrics[metric] = None
                res.not_computed[metric] = (f"k not in this suite's k_values {cfg.k_values} "
                                            "(suite 'standard' runs up to k=50)")
    record_mean_units(res, "dataset", per_dataset, {
        f"sparse_probing.{cat}.{prefix}_{key}": f"{prefix}_{key}"
        for prefix, cat in (("llm", "llm"), ("sae", "sae"))
        for key in ["test_accuracy", *(f"top_{k}_test_accuracy" for k in SCHEMA_K)]},
        input_fingerprint(ctx, EVAL_TYPE_ID, config=dataclasses.asdict(cfg), seed=ctx.seed),
        {name: probing.set_digest(name) for name in per_dataset})
    return res
