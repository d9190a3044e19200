"""scr: Spurious Correlation Removal (METRICS.md §5).

SAEBench biases a probe with male professors vs female nurses. Offline we use Shakespeare:
attribute 1 (the intended one, SAEBench's "profession") is the play's genre, e.g. tragedies
(P) vs comedies (Q); attribute 2 (the spurious one, "gender") is the speech's form, verse (m)
vs prose (f). Both are real, independent properties of every speech; a probe trained only on
tragic verse vs comic prose learns both, and removing the latents tied to verse/prose should
give back its accuracy on genre. The audit found SCR unreliable: gate it with
``severity = "warn"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from pytest_saebench.errors import SaebenchError
from pytest_saebench.evals import probing
from pytest_saebench.evals.base import (
    EvalContext,
    EvalResult,
    input_fingerprint,
    mean_stderr,
    record_mean_units,
)
from pytest_saebench.gates.registry import MetricSpec

EVAL_TYPE_ID = "scr"
# Reported as not computed for a transcoder (it reads one hook and writes another):
NOT_FOR_TRANSCODERS = (
    "it ablates latents and splices the decoded result back at the input hook")
SCHEMA_N = (2, 5, 10, 20, 50, 100, 500)
DATASET = "genre_form_shakespeare"
FORMS = ("verse", "prose")  # (m, f): the spurious attribute


@dataclass(frozen=True)
class Config:
    """SCR settings; set sizes are data-limited (comic prose has 813 speeches)."""

    pairs: tuple[tuple[str, str], ...] = (("tragedies", "comedies"), ("histories", "comedies"),
                                          ("problems", "comedies"))
    train_set_size: int = 800  # n = size // 4 per quadrant
    test_set_size: int = 200
    context_length: int = 128
    n_values: tuple[int, ...] = SCHEMA_N
    probe_lr: float = 1e-3
    probe_batch_size: int = 16  # part of the method: it sets how much spurious signal S learns
    probe_epochs: int = 20
    probe_l1_penalty: float = 1e-3
    sae_batch_size: int = 125
    llm_batch_size: int = 32
    remask_after_ablation: bool = True  # SAEBench: False


PRESETS = {
    "fast": Config(pairs=(("tragedies", "comedies"), ("histories", "comedies")),
                   context_length=64, n_values=(2, 5, 10, 20, 50)),
    "standard": Config(),
    "full": Config(),
}

METRICS: tuple[MetricSpec, ...] = tuple(
    MetricSpec(f"scr.scr_metrics.scr_{kind}_threshold_{n}", "up", f"SCR {kind}, N={n}",
               default_severity="warn")
    for n in SCHEMA_N for kind in ("dir1", "dir2", "metric"))


def _quadrants(p: str, q: str, n_train: int, n_test: int, seed: int) -> dict[str, dict]:
    """Rows per split and quadrant: Pm and Qf get 2n, Pf and Qm get n (METRICS.md §5.2)."""
    by_label = probing.load_set(DATASET)
    need = {"Pm": 2, "Qm": 1, "Pf": 1, "Qf": 2}
    out: dict[str, dict] = {"train": {}, "test": {}}
    for quad, mult in need.items():
        label, form = (p if quad[0] == "P" else q), FORMS[0 if quad[1] == "m" else 1]
        rows = [r for r in by_label.get(label, []) if r.get("form") == form]
        n_tr, n_te = mult * n_train, mult * n_test
        if len(rows) < n_tr + n_te:
            raise SaebenchError(f"scr: {DATASET} has {len(rows)} {form} speeches of {label}, "
                                f"fewer than {n_tr} + {n_te}; lower train_set_size/test_set_size")
        order = np.random.default_rng(probing.derive_seed(seed, "scr", p, q, quad)).permutation(
            len(rows))
        out["train"][quad] = [rows[i]["text"] for i in order[:n_tr]]
        out["test"][quad] = [rows[i]["text"] for i in order[n_tr:n_tr + n_te]]
    return out


def _tasks(n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Index/label arrays of the G (form), R (genre) and S (biased) tasks over rows laid out
    as Pm(2n) | Qm(n) | Pf(n) | Qf(2n)."""
    pm = np.arange(0, 2 * n)
    qm = np.arange(2 * n, 3 * n)
    pf = np.arange(3 * n, 4 * n)
    qf = np.arange(4 * n, 6 * n)

    def task(pos, neg):
        return np.concatenate([pos, neg]), np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])

    return {"G": task(np.r_[pm[:n], qm], np.r_[pf, qf[:n]]),
            "R": task(np.r_[pm[:n], pf], np.r_[qm, qf[:n]]),
            "S": task(pm, qf)}


def _llm_side(ctx: EvalContext, cfg: Config, pair: tuple[str, str]) -> dict:
    """Activations of the four quadrants and the G/R/S probes, shared by every checkpoint."""
    return probing.memoized(ctx, "scr", cfg, "/".join(pair),
                            lambda: _compute_llm_side(ctx, cfg, pair))


def _compute_llm_side(ctx: EvalContext, cfg: Config, pair: tuple[str, str]) -> dict:
    n = {"train": cfg.train_set_size // 4, "test": cfg.test_set_size // 4}
    quads = _quadrants(*pair, n["train"], n["test"], ctx.seed)
    side: dict = {}
    for split in ("train", "test"):
        texts = [t for quad in ("Pm", "Qm", "Pf", "Qf") for t in quads[split][quad]]
        side.update(probing.text_activations(ctx, texts, cfg.context_length,
                                             cfg.llm_batch_size, split))
        side[f"{split}_tasks"] = _tasks(n[split])
    side["probes"] = {}
    for name in ("G", "R", "S"):
        (i_tr, y_tr), (i_te, y_te) = side["train_tasks"][name], side["test_tasks"][name]
        side["probes"][name] = probing.train_probe(
            side["train_pooled"][i_tr], y_tr, side["test_pooled"][i_te], y_te,
            probing.derive_seed(ctx.seed, "scr", *pair, name), lr=cfg.probe_lr,
            epochs=cfg.probe_epochs, batch_size=cfg.probe_batch_size,
            patience=cfg.probe_epochs, l1=cfg.probe_l1_penalty)
    return side


def _pair_scores(ctx: EvalContext, cfg: Config, pair: tuple[str, str]) -> dict[str, float]:
    side = _llm_side(ctx, cfg, pair)
    sae = ctx.loaded.sae
    w_dec = sae.W_dec.detach().float().cpu()
    enc0 = probing.sae_codes_at_zero(sae)
    codes = {s: probing.sae_pool(sae, side[f"{s}_acts"], cfg.sae_batch_size,
                                    ctx.sae_memo)
             for s in ("train", "test")}
    test = side["test_tasks"]

    def acc(probe: str, task: str, x: torch.Tensor) -> float:
        idx, y = test[task]
        return probing.accuracy(x[idx], y, *side["probes"][probe][1:])

    clean = side["test_pooled"]
    a_r, a_g = acc("R", "R", clean), acc("G", "G", clean)
    s1, s2 = acc("S", "R", clean), acc("S", "G", clean)
    effects = {}
    for c in ("G", "R"):
        idx, y = side["train_tasks"][c]
        delta = codes["train"][idx[y == 1]].mean(0) - codes["train"][idx[y == 0]].mean(0)
        effects[c] = (delta * (w_dec @ side["probes"][c][1])).abs()
    out: dict[str, float] = {"A_R": a_r, "A_G": a_g, "S1": s1, "S2": s2}
    for n in cfg.n_values:
        for kind, ablate, task, base, top in (("dir1", "G", "R", s1, a_r),
                                              ("dir2", "R", "G", s2, a_g)):
            x = probing.ablated(clean, codes["test"], side["test_invalid_ratio"], enc0, w_dec,
                                probing.top_latents(effects[ablate], n),
                                cfg.remask_after_ablation)
            after = acc("S", task, x)
            out[f"scr_{kind}_threshold_{n}"] = (after - base) / (top - base) \
                if top - base >= 0.001 else 0.0
        if s1 != s2:
            out[f"scr_metric_threshold_{n}"] = out[f"scr_{'dir1' if s1 < s2 else 'dir2'}"
                                                   f"_threshold_{n}"]
    return out


def n_units(cfg: Config) -> int:
    """How many units (class pairs) the standard errors of ``cfg`` resample (a gate with ``z``
    on fewer than 3 is warned about at start-up)."""
    return len(cfg.pairs)


def run(ctx: EvalContext, cfg: Config) -> EvalResult:
    """Run SCR over every configured class pair."""
    res = EvalResult(EVAL_TYPE_ID, {**dataclasses.asdict(cfg), "random_seed": ctx.seed,
                                    "dataset": DATASET, "spurious_attribute": "form",
                                    "model_name": ctx.model.cfg.model_name,
                                    "hook_name": ctx.loaded.hook.name})
    runs = {}
    for pair in cfg.pairs:
        scores = _pair_scores(ctx, cfg, pair)
        runs[pair] = scores
        res.details.append({"dataset_name": f"{DATASET}_scr_{pair[0]}_{pair[1]}_results",
                            **{k: v for k, v in scores.items() if k.startswith("scr_")}})
    res.unstructured = {f"{p}_{q}": {k: scores[k] for k in ("A_R", "A_G", "S1", "S2")}
                        for (p, q), scores in runs.items()}
    for spec in METRICS:
        n = int(spec.key.rsplit("_", 1)[1])
        if n not in cfg.n_values:
            res.metrics[spec.id] = None
            res.not_computed[spec.id] = (f"N not in this suite's n_values {cfg.n_values} "
                                         "(suite 'standard' runs N up to 500)")
            continue
        values = [scores[spec.key] for scores in runs.values() if spec.key in scores]
        if values:
            res.set(spec.id, *mean_stderr(values))
        else:
            res.set(spec.id, None, reason="the biased probe scored the same on both attributes "
                                          "(S1 == S2) for every pair, so no direction applies")
    record_mean_units(res, "pair", {f"{p}_{q}": scores for (p, q), scores in runs.items()},
                      {spec.id: spec.key for spec in METRICS},
                      input_fingerprint(ctx, EVAL_TYPE_ID, config=dataclasses.asdict(cfg),
                                        seed=ctx.seed, data=probing.set_digest(DATASET)))
    return res
