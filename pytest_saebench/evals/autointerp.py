"""autointerp: can a judge LLM explain a latent, then use the explanation to tell which
excerpts make it fire? (METRICS.md §8, after arXiv 2410.13928.)

The judge comes from the ``pytest_saebench_autointerp_judge`` hook, from the ``judge``
setting (``"transformers:<local model dir>"`` or ``"smollm2-135m"``) or from the
``SAEBENCH_JUDGE_*`` environment (any OpenAI-compatible endpoint). Without one every metric
is "not computed" with the reason: a score is never invented. What we do differently from
SAEBench, and why:

- Random scoring excerpts are labelled by the latent's real activations. SAEBench gives them
  all-zero activations, so it calls them inactive even where the latent fires, and a judge
  that is right is marked wrong. ``random_examples_inactive = true`` restores SAEBench's
  labels for comparisons.
- Token windows come from the run's dataset through the shared token source, not from a
  separate document join, so they share the cache and the seed with the other evals.
- Temperature is 0 and the judge's name, requests, tokens and cost are stored in the results.
"""

from __future__ import annotations

import dataclasses
import math
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from pytest_saebench.activations import hook_activations
from pytest_saebench.evals import autointerp_examples as ex
from pytest_saebench.evals.base import EvalContext, EvalResult
from pytest_saebench.gates.registry import MetricSpec
from pytest_saebench.judge import NO_JUDGE, Judge, judge_name, resolve_judge

EVAL_TYPE_ID = "autointerp"
READS_DATASET = True  # the checkpoint's dataset: checked at start-up (inputs.preflight)
SCORE = "autointerp.autointerp.autointerp_score"
STD = "autointerp.autointerp.autointerp_std_dev"
# Cached LLM activations up to this size; beyond it they are recomputed per pass.
MAX_ACTIVATION_BYTES = 1 << 30


@dataclass(frozen=True)
class Config:
    """Autointerp settings (SAEBench names; ``judge`` and ``random_examples_inactive`` are
    ours)."""

    n_latents: int = 100
    total_tokens: int = 200_000
    llm_context_size: int = 128
    llm_batch_size: int = 32
    buffer: int = 10
    dead_latent_threshold: int = 15
    act_threshold_frac: float = 0.01
    n_top_ex_for_generation: int = 10
    n_iw_sampled_ex_for_generation: int = 5
    n_top_ex_for_scoring: int = 2
    n_iw_sampled_ex_for_scoring: int = 2
    n_random_ex_for_scoring: int = 10
    max_tokens_in_explanation: int = 30
    judge: str = ""  # "" / "env": SAEBENCH_JUDGE_*; "transformers:<dir>"; "smollm2-135m"
    judge_threads: int = 4
    random_examples_inactive: bool = False  # True: SAEBench's labelling (see module doc)


PRESETS = {
    "fast": Config(n_latents=25, total_tokens=50_000),
    "standard": Config(),
    "full": Config(n_latents=1000, total_tokens=2_000_000),
}

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(SCORE, "up", "autointerp detection score", default_severity="warn"),
    MetricSpec(STD, "info", "autointerp score std dev"),
)


def run(ctx: EvalContext, cfg: Config) -> EvalResult:
    """Explain and score up to ``n_latents`` alive latents with the configured judge."""
    res = EvalResult(EVAL_TYPE_ID, _config_record(cfg))
    judge = resolve_judge(cfg.judge, ctx.judge() if ctx.judge else None, device=ctx.device)
    if judge is None:
        for spec in METRICS:
            res.not_computed[spec.id] = NO_JUDGE
        return res
    res.config["judge"] = judge_name(judge)
    n_windows = max(1, cfg.total_tokens // cfg.llm_context_size)
    tokens = ctx.tokens(n_windows, cfg.llm_context_size, ctx.loaded.ref.prepend_bos).cpu()
    valid = ctx.valid(tokens)
    side = _llm_side(ctx, cfg, tokens)
    counts = torch.zeros(ctx.loaded.d_sae, dtype=torch.int64)
    for start, codes in _codes(ctx, cfg, tokens, side):
        counts += (codes > 0).logical_and(valid[start:start + codes.shape[0], :, None].to(
            codes.device)).sum((0, 1)).cpu()
    alive = torch.nonzero(counts > cfg.dead_latent_threshold).flatten().tolist()
    latents = sorted(random.Random(ctx.seed).sample(alive, min(cfg.n_latents, len(alive))))
    if not latents:
        for spec in METRICS:
            res.set(spec.id, None, reason="no alive latents (every latent fired at most "
                                          f"{cfg.dead_latent_threshold} times)")
        return res
    piece = _piece(ctx.model.tokenizer)
    usage_before = _usage(judge)

    def one(job: tuple[int, torch.Tensor]) -> dict[str, Any]:
        return _score_latent(judge, cfg, tokens, job[1], job[0], ctx.seed, piece)

    threads = max(1, cfg.judge_threads)  # a local judge serialises its own calls
    # Latents go in groups whose activations fit in MAX_ACTIVATION_BYTES: at SAEBench's budget
    # (2M tokens, 1000 latents) all of them at once would take 8 GB.
    group = max(1, MAX_ACTIVATION_BYTES // (tokens.numel() * 4))
    records: list[dict[str, Any]] = []
    for g in range(0, len(latents), group):
        chosen = torch.tensor(latents[g:g + group])
        acts = torch.cat([(codes[..., chosen.to(codes.device)].cpu()
                           * valid[start:start + codes.shape[0], :, None])
                          for start, codes in _codes(ctx, cfg, tokens, side)])
        jobs = [(lat, acts[..., j]) for j, lat in enumerate(chosen.tolist())]
        with ThreadPoolExecutor(threads) as pool:
            records += list(pool.map(one, jobs))
    scored = [r["score"] for r in records if r["score"] is not None]
    res.unstructured = {"latents": records, "judge_usage": _usage_diff(judge, usage_before),
                        "n_alive": len(alive), "n_dropped": len(records) - len(scored)}
    if not scored:
        why = "the judge's answers could not be parsed for any latent; see eval_result_unstructured"
        res.set(SCORE, None, reason=why)
        res.set(STD, None, reason=why)
        return res
    mean = sum(scored) / len(scored)
    std = (math.sqrt(sum((s - mean) ** 2 for s in scored) / (len(scored) - 1))
           if len(scored) > 1 else None)
    res.set(SCORE, mean, stderr=std / math.sqrt(len(scored)) if std is not None else None)
    res.set(STD, std, reason="fewer than two latents scored")
    return res


def _config_record(cfg: Config) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    out.pop("judge_threads")  # does not change the results
    return out


def _score_latent(judge: Judge, cfg: Config, tokens: torch.Tensor, acts: torch.Tensor,
                  latent: int, seed: int, piece) -> dict[str, Any]:
    record: dict[str, Any] = {"latent": latent, "explanation": None, "predictions": None,
                              "correct seqs": None, "score": None, "logs": ""}
    picked = ex.latent_examples(tokens, acts, cfg, seed * 1_000_003 + latent)
    if isinstance(picked, str):
        record["logs"] = f"skipped: {picked}"
        return record
    reply = judge.complete(ex.generation_prompt(picked, piece),
                           max_tokens=cfg.max_tokens_in_explanation)
    record["explanation"] = explanation = ex.parse_explanation(reply)
    n = len(picked.scoring)
    answer = judge.complete(ex.scoring_prompt(picked, explanation, piece),
                            max_tokens=2 * n + 5)
    predicted = ex.parse_prediction(answer, n)
    record["correct seqs"] = [i for i, lab in enumerate(picked.labels, 1) if lab]
    if predicted is None:
        record["logs"] = f"dropped: unparsable detection answer {answer!r}"
        return record
    record["predictions"] = sorted(predicted)
    record["score"] = ex.detection_score(predicted, picked.labels)
    return record


def _llm_side(ctx: EvalContext, cfg: Config, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The hooked activations of ``tokens`` (cached across checkpoints) when they fit."""
    if tokens.numel() * ctx.loaded.d_in * 4 > MAX_ACTIVATION_BYTES:
        return {}
    parts = ctx.cache_parts(dataset=ctx.dataset_key or ctx.dataset, windows=tokens.shape[0],
                            context=cfg.llm_context_size, batch=cfg.llm_batch_size,
                            prepend_bos=ctx.loaded.ref.prepend_bos)
    return ctx.cache.get("autointerp-act", parts, lambda: {"act": torch.cat([
        hook_activations(ctx.model, tokens[i:i + cfg.llm_batch_size].to(ctx.device),
                         ctx.loaded.hook).cpu()
        for i in range(0, tokens.shape[0], cfg.llm_batch_size)])})


@torch.inference_mode()
def _codes(ctx: EvalContext, cfg: Config, tokens: torch.Tensor, side: dict):
    """``(start, codes [B, C, d_sae])`` per batch, special tokens included."""
    sae = ctx.loaded.sae
    for i in range(0, tokens.shape[0], cfg.llm_batch_size):
        if "act" in side:
            act = side["act"][i:i + cfg.llm_batch_size].to(ctx.device)
        else:
            act = hook_activations(ctx.model, tokens[i:i + cfg.llm_batch_size].to(ctx.device),
                                   ctx.loaded.hook)
        yield i, sae.encode(act.to(sae.dtype)).float()


def _piece(tokenizer):
    @cache
    def piece(token_id: int) -> str:
        return tokenizer.decode([token_id])
    return piece


def _usage(judge: Judge) -> dict[str, float]:
    usage = getattr(judge, "usage", None)
    if usage is None:
        return {}
    return {k: getattr(usage, k) for k in ("requests", "retries", "prompt_tokens",
                                           "completion_tokens", "cost_usd")}


def _usage_diff(judge: Judge, before: dict[str, float]) -> dict[str, float]:
    after = _usage(judge)
    return {k: after[k] - before.get(k, 0) for k in after}
