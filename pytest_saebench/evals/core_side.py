"""The SAE-independent half of the core eval, computed once per model, data and budget and
kept in the tensor cache: token windows, hook activations, clean log-probabilities, and the
per-context CE / KL sums of the clean and zero-ablated runs (METRICS.md §2).

Per checkpoint, core then only encodes and decodes the cached activations and runs the model
from the hook layer on with the reconstruction spliced in.

Each phase's rows are computed, and cached, in the segments an adaptive budget's looks cover
(``segments``: the looks' ends): a run whose gates are decided at the first look computes an
eighth of the SAE-independent work, and a later look, checkpoint or run extends it from the
cache. The segments are batch boundaries, so the numbers are a whole-budget run's.

A transcoder reads one hook and writes another: ``act`` is its input, ``act_out`` the output
hook's activation it reconstructs, and the clean/ablated runs replace the output hook.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from pytest_saebench.activations import (
    HookSpec,
    clean_logits_and_activations,
    hooks_activations,
    logits_with_replacement,
)
from pytest_saebench.cache import Tensors
from pytest_saebench.evals.base import EvalContext


class Side(dict):
    """A phase's SAE-independent tensors over its first :attr:`n` rows of ``ends[-1]``, the
    dict core reads; :meth:`extend` loads (or computes) the next segments. ``hold``: whether
    the phase's clean log-probabilities are held in memory for the run (see
    :data:`MAX_HELD_LOGPROB_BYTES`)."""

    def __init__(self, ends: Sequence[int], load: Callable[[Side, int, int], Tensors],
                 hold: bool = False) -> None:
        super().__init__()
        self.ends, self.n, self.hold, self._load = tuple(ends), 0, hold, load

    def extend(self, upto: int) -> Side:
        """Make rows ``0 .. upto`` available (whole segments: possibly more)."""
        for lo, hi in zip((0, *self.ends), self.ends, strict=False):
            if hi <= self.n:
                continue
            if lo >= upto:
                break
            for key, val in self._load(self, lo, hi).items():
                self[key] = torch.cat([self[key], val]) if key in self else val
            self.n = hi
        return self


def _ends(segments: Sequence[int], n: int) -> list[int]:
    """Increasing segment ends within ``n``, the last ``n``."""
    return sorted({e for e in segments if 0 < e < n} | {n})


def _side(ctx: EvalContext, kind: str, parts: dict[str, Any], ends: Sequence[int],
          compute: Callable[[Side, int, int], Tensors], hold: bool = False) -> Side:
    """The run's :class:`Side` for ``parts`` (one per model, data and budget, held by the
    tensor cache's memory), each segment a cache entry of its own."""
    found = ctx.cache.memory(kind, parts)
    if isinstance(found, Side):
        return found

    def load(side: Side, lo: int, hi: int) -> Tensors:
        return ctx.cache.get(kind, {**parts, "rows": [lo, hi]},
                             lambda: compute(side, lo, hi), remember=False)

    side = Side(ends, load, hold)
    ctx.cache.hold(kind, parts, side)
    return side

# Clean log-probabilities are kept when they fit in this many bytes; beyond it (large vocab or
# budget) the last block's output is kept instead, and they are recomputed from it.
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


def loss_side(ctx: EvalContext, n_rec: int, n_total: int, context: int, batch: int,
              segments: Sequence[int] = ()) -> Side:
    """Tokens, validity, activations, (clean log-probs) and clean/ablated CE-KL sums of the
    ``n_rec`` loss contexts, computed by segment (``segments``: their ends)."""
    keep_lp = _logprob_bytes(ctx, n_rec * context) <= MAX_LOGPROB_BYTES
    hold = not keep_lp and _logprob_bytes(ctx, n_rec * context) <= MAX_HELD_LOGPROB_BYTES
    # the last block's output stands in for log-probs the cache cannot hold, where it fits
    keep_final = not keep_lp and \
        n_rec * context * ctx.model.cfg.d_model * 4 <= MAX_ACTIVATION_BYTES
    parts = ctx.cache_parts(dataset=ctx.dataset_key or ctx.dataset, windows=n_total,
                            context=context, prepend_bos=ctx.loaded.ref.prepend_bos,
                            batch=batch, keep_logprobs=keep_lp, loss_contexts=n_rec)
    return _side(ctx, "core-loss", parts, _ends(segments, n_rec), lambda side, lo, hi:
                 _compute_loss_side(ctx, _tokens(ctx, n_total, context, lo, hi), batch,
                                    keep_lp, keep_final, side, lo), hold)


@torch.inference_mode()
def _compute_loss_side(ctx: EvalContext, tokens: torch.Tensor, batch: int, keep_lp: bool,
                       keep_final: bool, into: Side, offset: int) -> dict[str, torch.Tensor]:
    """Rows ``offset ..`` of the loss phase (``tokens``); log-probabilities too large for the
    cache are held for ``into`` when it holds them, and with ``keep_final`` the last block's
    output is kept to rebuild them from."""
    loaded, model = ctx.loaded, ctx.model
    valid = ctx.valid(tokens)
    rows: dict[str, list[torch.Tensor]] = {}
    # Too large for the cache but small enough to hold: handed to clean_logprobs, so that the
    # first checkpoint does not rerun the clean model from the hook layer on (SmolLM2's 49k
    # vocabulary: 1.6 GB at the fast budget, a fifth of the cold core time).
    hold = not keep_lp and into.hold
    made: dict[tuple[int, int], torch.Tensor] = {}
    extra = (loaded.hook_out,) if loaded.hook_out is not None else ()
    final = (final_hook(model),) if keep_final else ()
    for start in range(0, tokens.shape[0], batch):
        t = tokens[start:start + batch].to(ctx.device)
        v = valid[start:start + batch].to(ctx.device)
        logits, act, *outs = clean_logits_and_activations(model, t, loaded.hook, *extra,
                                                          *final)
        if final:
            rows.setdefault("resid_final", []).append(outs.pop().cpu())
        target = outs[0] if outs else act
        lp_clean = log_softmax_rows(logits)
        del logits
        ce_mask, kl_mask = v[:, :-1].double(), v.double()
        ce_abl, kl_abl = ce_kl_rows(logits_with_replacement(
            model, t, loaded.target, torch.zeros_like(target)), lp_clean, t)
        out = {"ce_clean": -lp_clean[:, :-1].gather(-1, t[:, 1:, None])[..., 0],
               "ce_abl": ce_abl, "kl_abl": kl_abl}
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
            made[(offset + start, batch)] = lp_clean.cpu()
    side = {k: torch.cat(v) for k, v in rows.items()}
    side = {**side, "tokens": tokens.cpu(), "valid": valid.cpu()}
    if hold:
        _held(ctx, into).update(made)
    return side


def variance_side(ctx: EvalContext, n_rec: int, n_var: int, context: int, batch: int,
                  segments: Sequence[int] = ()) -> Side:
    """Tokens, validity and (when they fit) activations of the variance phase, computed by
    segment (``segments``: their ends, counted within the phase)."""
    width = ctx.loaded.d_in + (ctx.loaded.d_out if ctx.loaded.is_transcoder else 0)
    keep_act = n_var * context * width * 4 <= MAX_ACTIVATION_BYTES
    total = n_rec + n_var
    parts = ctx.cache_parts(dataset=ctx.dataset_key or ctx.dataset, windows=total,
                            variance_rows=[n_rec, total], context=context,
                            prepend_bos=ctx.loaded.ref.prepend_bos, batch=batch,
                            keep_activations=keep_act)
    return _side(ctx, "core-var", parts, _ends(segments, n_var), lambda side, lo, hi:
                 _compute_variance_side(ctx, _tokens(ctx, total, context, n_rec + lo,
                                                     n_rec + hi), batch, keep_act))


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


def final_hook(model: Any) -> HookSpec:
    """The last block's output, what the final norm and unembedding read: kept in place of
    clean log-probabilities too large for the cache (SmolLM2 at `fast`: 19 MB for 1.6 GB),
    they are recomputed from it with the unembedding alone, bit for bit."""
    layer = model.cfg.n_layers - 1
    return HookSpec(f"blocks.{layer}.hook_resid_post", layer)


def log_softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """Float32 log-softmax of ``logits`` ``[B, C, V]``, one context at a time."""
    out = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    for i in range(logits.shape[0]):
        out[i] = logits[i].float().log_softmax(-1)
    return out


def ce_kl_rows(logits: torch.Tensor, lp_clean: torch.Tensor, tokens: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token next-token CE ``[B, C-1]`` under ``logits`` and KL(clean || them) ``[B, C]``
    given the clean log-probabilities, one context at a time: a vocabulary-wide temporary of a
    whole batch (SmolLM2: 200 MB) is a fresh allocation whose page faults cost more than the
    arithmetic; per row the values are the same bit for bit."""
    ce = torch.empty(tokens.shape[0], tokens.shape[1] - 1, device=logits.device)
    kl = torch.empty(tokens.shape, device=logits.device)
    for i in range(tokens.shape[0]):
        lp = logits[i].float().log_softmax(-1)
        ce[i] = -lp[:-1].gather(-1, tokens[i, 1:, None])[..., 0]
        clean = lp_clean[i]
        kl[i] = (clean.exp() * (clean - lp)).sum(-1)
    return ce, kl


def _held(ctx: EvalContext, side: Side) -> dict:
    """The run's held clean log-probs of ``side``, by ``(start, batch)``; one set at a time."""
    slot = ctx.memo.get("core-lp")
    if slot is None or slot[0] is not side:  # another model, budget or seed: replace
        slot = ctx.memo["core-lp"] = (side, {})
    return slot[1]


def clean_logprobs(ctx: EvalContext, side: dict[str, torch.Tensor], start: int, batch: int
                   ) -> torch.Tensor:
    """Clean log-probabilities of rows ``start .. start + batch``: cached, held for the run,
    or recomputed from the cached last block's output (the unembedding alone), else from the
    cached activations from the hook layer on."""
    if "lp_clean" in side:
        return side["lp_clean"][start:start + batch].to(ctx.device)
    held = _held(ctx, side) if getattr(side, "hold", False) else None
    if held is not None and (start, batch) in held:
        return held[(start, batch)].to(ctx.device)
    t = side["tokens"][start:start + batch].to(ctx.device)
    if "resid_final" in side:  # the final norm and unembedding only: the same numbers
        hook, act = final_hook(ctx.model), side["resid_final"][start:start + batch]
    else:  # a cache entry from before the final residual was kept
        hook, act = ctx.loaded.target, side.get("act_out", side["act"])[start:start + batch]
    lp = log_softmax_rows(logits_with_replacement(ctx.model, t, hook, act.to(ctx.device)))
    if held is not None:
        held[(start, batch)] = lp.cpu()
    return lp
