"""SAE-independent activation work: reading and replacing the hooked activation.

Residual-stream hooks are spliced with ``start_at_layer`` so the layers before the hook
never run twice; any other hook falls back to a full forward with a replacement hook.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # imported by every eval module, which the metric registry imports
    from transformer_lens import HookedTransformer

_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


@dataclass(frozen=True)
class HookSpec:
    """Where an SAE reads and writes: a TransformerLens hook name plus its layer."""

    name: str
    layer: int

    @property
    def is_attn_z(self) -> bool:
        """True for ``attn.hook_z`` (``[B, C, H, d_head]``, flattened for the SAE)."""
        return self.name.endswith("hook_z")

    @property
    def start_layer(self) -> int | None:
        """The block to resume from when the hook is a residual stream, else None."""
        m = _RESID.match(self.name)
        if not m:
            return None
        return int(m.group(1)) + (1 if m.group(2) == "post" else 0)

    @property
    def stop_layer(self) -> int:
        """``stop_at_layer`` that still runs the hook and nothing after its block."""
        m = _RESID.match(self.name)
        if m and m.group(2) == "pre":
            return self.layer
        return self.layer + 1


def transposed_layout(model: torch.nn.Module) -> int:
    """Store the unembedding's and gated MLPs' weights transposed in memory (same shape and
    values), so that TransformerLens's ``W.T.contiguous()`` in their forward is free instead
    of a copy per call (SmolLM2: 113 MB for the unembedding, a seventh of a forward on 2
    CPU cores); the products are the same bits. Returns how many weights it moved."""
    moved = 0
    for module in filter(_copies_transpose, model.modules()):
        for name in ("W_U", "W_gate", "W_in", "W_out"):
            weight = getattr(module, name, None)
            if isinstance(weight, torch.nn.Parameter) and weight.ndim == 2 and \
                    not weight.T.is_contiguous():
                weight.data = weight.data.T.contiguous().T
                moved += 1
    return moved


def _copies_transpose(module: torch.nn.Module) -> bool:
    """The TransformerLens modules whose forward is ``F.linear(x, W.T.contiguous())``."""
    return type(module).__name__ in ("Unembed", "GatedMLP")


def flatten(act: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, d_head] -> [B, C, H*d_head]``; other shapes unchanged."""
    return act.flatten(-2) if act.ndim == 4 else act


@torch.inference_mode()
def hook_activations(
    model: HookedTransformer, tokens: torch.Tensor, hook: HookSpec
) -> torch.Tensor:
    """Activation at ``hook`` for ``tokens`` ``[B, C]`` as ``[B, C, d_in]`` (float32)."""
    return hooks_activations(model, tokens, [hook])[0]


@torch.inference_mode()
def hooks_activations(
    model: HookedTransformer, tokens: torch.Tensor, hooks: list[HookSpec]
) -> list[torch.Tensor]:
    """Activations at each of ``hooks`` from one forward that stops after the last of them."""
    store: dict[str, torch.Tensor] = {}

    def save(act: torch.Tensor, hook: object) -> None:
        store[hook.name] = act  # type: ignore[attr-defined]

    # A hook before block 0 still needs the embedding pass; stop_at_layer=0 would skip it.
    stop = max(1, *(h.stop_layer for h in hooks))
    model.run_with_hooks(tokens, fwd_hooks=[(h.name, save) for h in hooks], stop_at_layer=stop)
    return [flatten(store[h.name]).float() for h in hooks]


@torch.inference_mode()
def logits_with_replacement(
    model: HookedTransformer,
    tokens: torch.Tensor,
    hook: HookSpec,
    replacement: torch.Tensor,
) -> torch.Tensor:
    """Logits when the activation at ``hook`` is replaced by ``replacement`` ``[B, C, d_in]``."""
    start = hook.start_layer
    if start is not None and 0 < start <= model.cfg.n_layers:
        resid = replacement.to(model.cfg.dtype)
        return model(resid, start_at_layer=start, tokens=tokens)

    def replace(act: torch.Tensor, hook: object) -> torch.Tensor:
        return replacement.reshape(act.shape).to(act.dtype)

    return model.run_with_hooks(tokens, fwd_hooks=[(hook.name, replace)])


@torch.inference_mode()
def clean_logits_and_activations(
    model: HookedTransformer, tokens: torch.Tensor, hook: HookSpec, *more: HookSpec
) -> tuple[torch.Tensor, ...]:
    """One clean forward: ``(logits [B, C, V], activation [B, C, d] at each hook)``."""
    store: dict[str, torch.Tensor] = {}

    def save(act: torch.Tensor, hook: object) -> None:
        store[hook.name] = act  # type: ignore[attr-defined]

    hooks = (hook, *more)
    logits = model.run_with_hooks(tokens, fwd_hooks=[(h.name, save) for h in hooks])
    return (logits, *(flatten(store[h.name]).float() for h in hooks))


def right_pad(sequences: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, max_len]`` right-padded tokens and each row's last real index; a causal model
    never lets padding after a position reach it, so no attention mask is needed."""
    tokens = torch.full((len(sequences), max(len(s) for s in sequences)), pad, dtype=torch.long)
    for i, seq in enumerate(sequences):
        tokens[i, :len(seq)] = torch.tensor(seq)
    return tokens, torch.tensor([len(s) - 1 for s in sequences])


def last_logits(model: HookedTransformer, inputs: torch.Tensor, last: torch.Tensor,
                start_at_layer: int | None = None) -> torch.Tensor:
    """Logits at each row's ``last`` position only: the blocks run on every position, the
    final norm and the (49k-wide, for SmolLM2) unembedding only where they are read."""
    resid = model(inputs, start_at_layer=start_at_layer, stop_at_layer=model.cfg.n_layers)
    picked = resid[torch.arange(resid.shape[0]), last.to(resid.device)]
    return model.unembed(model.ln_final(picked[:, None, :]))[:, 0]
