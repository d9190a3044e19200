"""The SAE-independent half of the core eval, computed once per model, data and budget and
kept in the tensor cache: token windows, hook activations, clean log-probabilities, and the
per-context CE / KL sums of the clean and zero-ablated runs (METRICS.md §2).

Per checkpoint, core then only encodes and decodes the cached activations and runs the model
from the hook layer on with the reconstruction spliced in.

A transcoder reads one hook and writes another: ``act`` is its input, ``act_out`` the output
hook's activation it reconstructs, and the clean/ablated runs replace the output hook.
"""

from __future__ import annotations

import torch

from pytest_saebench.activations import (
    clean_logits_and_activations,
    hooks_activations,
    logits_with_replacement,
)
from pytest_saebench.evals.base import EvalContext

# Clean log-probabilities are kept when they fit in this many bytes; beyond it (large vocab or
# budget) the clean logits are recomputed per checkpoint from the cached activations.
MAX_LOGPROB_BYTES = 512 << 20
# Beyond it, the run still holds them in memory up to this size (one set at a time), so that
# a sweep computes them once instead of once per checkpoint.
MAX_HELD_LOGPROB_BYTES = 2 << 30
# Variance-phase activations are cached up to this size, else recomputed per batch.
MAX_ACTIVATION_BYTES = 1 << 30


def _tokens(ctx: EvalContext, n_total: int, context: int, lo: int, hi: int) -> torch.Tensor:
    """Windows ``lo .. hi`` of the run's sample of ``n_total`` (one draw for both phases)."""
    return ctx.tokens(n_total, context, ctx.loaded.ref.prepend_bos)[lo:hi]


def _logprob_bytes(ctx: EvalContext, n_tokens: int) -> int:
    """Size of the float32 clean log-probabilities of ``n_tokens`` tokens."""
    return n_tokens * ctx.model.cfg.d_vocab * 4


def loss_side(ctx: EvalContext, n_rec: int, n_total: int, context: int, batch: int
              ) -> dict[str, torch.Tensor]:
    """Tokens, validity, activations, (clean log-probs) and clean/ablated CE-KL sums."""
    keep_lp = _logprob_bytes(ctx, n_rec * context) <= MAX_LOGPROB_BYTES
    parts = ctx.cache_parts(dataset=ctx.dataset_key or ctx.dataset, windows=n_total,
                            rows=[0, n_rec],
                            context=context, prepend_bos=ctx.loaded.ref.prepend_bos,
                            batch=batch, keep_logprobs=keep_lp)
    return ctx.cache.get("core-loss", parts, lambda: _compute_loss_side(
        ctx, _tokens(ctx, n_total, context, 0, n_rec), batch, keep_lp))


@torch.inference_mode()
def _compute_loss_side(ctx: EvalContext, tokens: torch.Tensor, batch: int, keep_lp: bool
                       ) -> dict[str, torch.Tensor]:
    loaded, model = ctx.loaded, ctx.model
    valid = ctx.valid(tokens)
    rows: dict[str, list[torch.Tensor]] = {}
    # Too large for the cache but small enough to hold: handed to clean_logprobs, so that the
    # first checkpoint does not rerun the clean model from the hook layer on (SmolLM2's 49k
    # vocabulary: 1.6 GB at the fast budget, a fifth of the cold core time).
    hold = not keep_lp and _holdable(ctx, tokens)
    made: dict[tuple[int, int], torch.Tensor] = {}
    extra = (loaded.hook_out,) if loaded.hook_out is not None else ()
    for start in range(0, tokens.shape[0], batch):
        t = tokens[start:start + batch].to(ctx.device)
        v = valid[start:start + batch].to(ctx.device)
        logits, act, *outs = clean_logits_and_activations(model, t, loaded.hook, *extra)
        target = outs[0] if outs else act
        lp_clean = logits.float().log_softmax(-1)
        next_tok = t[:, 1:, None]
        ce_mask, kl_mask = v[:, :-1].double(), v.double()
        lp_abl = logits_with_replacement(model, t, loaded.target,
                                         torch.zeros_like(target)).float()
        lp_abl = lp_abl.log_softmax(-1)
        out = {"ce_clean": -lp_clean[:, :-1].gather(-1, next_tok)[..., 0],
               "ce_abl": -lp_abl[:, :-1].gather(-1, next_tok)[..., 0],
               "kl_abl": (lp_clean.exp() * (lp_clean - lp_abl)).sum(-1)}
        for key, val in out.items():
            mask = ce_mask if key.startswith("ce") else kl_mask
            rows.setdefault(key, []).append((val.double() * mask).sum(1).cpu())
        rows.setdefault("n_ce", []).append(ce_mask.sum(1).cpu())
        rows.setdefault("n_kl", []).append(kl_mask.sum(1).cpu())
        rows.setdefault("act", []).append(act.cpu())
        if outs:
            rows.setdefault("act_out", []).append(target.cpu())
        if keep_lp:
            rows.setdefault("lp_clean", []).append(lp_clean.cpu())
        elif hold:
            made[(start, batch)] = lp_clean.cpu()
    side = {k: torch.cat(v) for k, v in rows.items()}
    side = {**side, "tokens": tokens.cpu(), "valid": valid.cpu()}
    if hold:
        _held(ctx, side).update(made)
    return side


def variance_side(ctx: EvalContext, n_rec: int, n_var: int, context: int, batch: int
                  ) -> dict[str, torch.Tensor]:
    """Tokens, validity and (when they fit) activations of the variance phase."""
    width = ctx.loaded.d_in + (ctx.loaded.d_out if ctx.loaded.is_transcoder else 0)
    keep_act = n_var * context * width * 4 <= MAX_ACTIVATION_BYTES
    parts = ctx.cache_parts(dataset=ctx.dataset_key or ctx.dataset, windows=n_rec + n_var,
                            rows=[n_rec, n_rec + n_var], context=context,
                            prepend_bos=ctx.loaded.ref.prepend_bos, batch=batch,
                            keep_activations=keep_act)
    return ctx.cache.get("core-var", parts, lambda: _compute_variance_side(
        ctx, _tokens(ctx, n_rec + n_var, context, n_rec, n_rec + n_var), batch, keep_act))


@torch.inference_mode()
def _compute_variance_side(ctx: EvalContext, tokens: torch.Tensor, batch: int, keep_act: bool
                           ) -> dict[str, torch.Tensor]:
    side = {"tokens": tokens.cpu(), "valid": ctx.valid(tokens)}
    if keep_act:
        parts = [_acts(ctx, tokens[i:i + batch].to(ctx.device))
                 for i in range(0, tokens.shape[0], batch)]
        side["act"] = torch.cat([p[0].cpu() for p in parts])
        if ctx.loaded.is_transcoder:
            side["act_out"] = torch.cat([p[1].cpu() for p in parts])
    return side


def _acts(ctx: EvalContext, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, target)`` activations: the same tensor for an SAE."""
    loaded = ctx.loaded
    if loaded.hook_out is None:
        act = hooks_activations(ctx.model, tokens, [loaded.hook])[0]
        return act, act
    act, out = hooks_activations(ctx.model, tokens, [loaded.hook, loaded.hook_out])
    return act, out


def variance_activations(ctx: EvalContext, side: dict[str, torch.Tensor], start: int,
                         batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, target)`` activations of rows ``start .. start + batch``: cached, or
    recomputed."""
    if "act" in side:
        act = side["act"][start:start + batch].to(ctx.device)
        out = side.get("act_out")
        return act, (out[start:start + batch].to(ctx.device) if out is not None else act)
    return _acts(ctx, side["tokens"][start:start + batch].to(ctx.device))


def _holdable(ctx: EvalContext, tokens: torch.Tensor) -> bool:
    """Whether the clean log-probs of ``tokens`` are small enough to hold for the run."""
    return _logprob_bytes(ctx, tokens.numel()) <= MAX_HELD_LOGPROB_BYTES


def _held(ctx: EvalContext, side: dict[str, torch.Tensor]) -> dict:
    """The run's held clean log-probs of ``side``, by ``(start, batch)``; one set at a time."""
    slot = ctx.memo.get("core-lp")
    if slot is None or slot[0] is not side:  # another model, budget or seed: replace
        slot = ctx.memo["core-lp"] = (side, {})
    return slot[1]


def clean_logprobs(ctx: EvalContext, side: dict[str, torch.Tensor], start: int, batch: int
                   ) -> torch.Tensor:
    """Clean log-probabilities of rows ``start .. start + batch``: cached, or recomputed from
    the cached activations from the hook layer on."""
    if "lp_clean" in side:
        return side["lp_clean"][start:start + batch].to(ctx.device)
    held = _held(ctx, side) if _holdable(ctx, side["tokens"]) else None
    if held is not None and (start, batch) in held:
        return held[(start, batch)].to(ctx.device)
    t = side["tokens"][start:start + batch].to(ctx.device)
    act = side.get("act_out", side["act"])[start:start + batch].to(ctx.device)
    lp = logits_with_replacement(ctx.model, t, ctx.loaded.target, act).float().log_softmax(-1)
    if held is not None:
        held[(start, batch)] = lp.cpu()
    return lp
