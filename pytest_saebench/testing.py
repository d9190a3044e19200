"""Helpers for tests (ours and downstream repos'): a tiny corpus, tokenizer, language model
and SAEs, all built locally in seconds with no network."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from pytest_saebench.activations import HookSpec, hook_activations
from pytest_saebench.loading.model import load_local_model, save_local_model
from pytest_saebench.quiet_sae_lens import SAE, SAEMetadata

_SUBJECTS = ["the cat", "a dog", "my sister", "the old man", "our teacher", "the farmer",
             "a small bird", "the king", "her brother", "the children", "a young girl", "the queen"]
_VERBS = ["sees", "likes", "finds", "carries", "watches", "follows", "feeds", "paints", "calls"]
_OBJECTS = ["the ball", "a red apple", "the river", "a green hat", "the little house",
            "the bread", "a long letter", "the garden", "a wooden box", "the silver key"]
_PLACES = ["in the morning", "near the river", "at the market", "under the tree",
           "after dinner", "in the rain", "by the door", "on the hill"]


def make_corpus(n_docs: int = 2000, seed: int = 0) -> list[str]:
    """Short documents from a small English-like grammar: learnable, license-free text."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
            if rng.random() < 0.6:
                s += f" {rng.choice(_PLACES)}"
            if rng.random() < 0.3:
                s += f" and {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} it"
            sentences.append(s[0].upper() + s[1:] + ".")
        docs.append(" ".join(sentences))
    return docs


def train_tokenizer(texts: list[str], directory: str | Path, vocab_size: int = 512):
    """Byte-level BPE tokenizer saved to ``directory`` and reloaded with AutoTokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # its bars print blank lines in logs
    tok.train_from_iterator(texts, trainer)
    special = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=special, eos_token=special,
                                   unk_token=special, pad_token=special)
    directory = Path(directory)
    fast.save_pretrained(str(directory))
    # TransformerLens reloads tokenizers by name_or_path, so it must be a saved directory.
    return AutoTokenizer.from_pretrained(str(directory))


def tiny_model_config(d_vocab: int, n_layers: int = 2, d_model: int = 64, n_ctx: int = 64,
                      seed: int = 0) -> HookedTransformerConfig:
    """A small GPT-style config (LayerNorm, GELU)."""
    return HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, n_heads=4, d_head=d_model // 4, d_mlp=4 * d_model,
        n_ctx=n_ctx, d_vocab=d_vocab, act_fn="gelu", normalization_type="LN",
        tokenizer_name=None, seed=seed, model_name="tiny-test-model")


def train_language_model(model: HookedTransformer, tokens: torch.Tensor, steps: int,
                         batch_size: int = 32, lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Next-token training with AdamW on ``tokens`` ``[N, C]``; returns the loss curve."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, tokens.shape[0], (batch_size,), generator=gen)
        loss = model(tokens[idx], return_type="loss")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


def build_tiny_model(directory: str | Path, corpus: list[str], steps: int = 300, seed: int = 0,
                     **config: Any) -> HookedTransformer:
    """Train a tokenizer and a tiny LM on ``corpus`` and save both as a local model dir."""
    import datasets

    from pytest_saebench.loading.data import token_windows

    directory = Path(directory)
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(corpus, directory, vocab_size=config.pop("vocab_size", 512))
    cfg = tiny_model_config(len(tokenizer), seed=seed, **config)
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    ds = datasets.Dataset.from_dict({"text": corpus})
    n_tokens = sum(map(len, tokenizer(corpus, add_special_tokens=False)["input_ids"]))
    # Nearly every token: windows drop a separator that would open them, and the last
    # partial window, so the exact count is a little below this.
    n_windows = (n_tokens + len(corpus) - 1) // (cfg.n_ctx - 1) * 49 // 50
    tokens = token_windows(tokenizer, ds, n_windows, cfg.n_ctx, True, seed)
    if steps:
        train_language_model(model, tokens, steps, seed=seed)
    save_local_model(model, directory)
    return load_local_model(directory, "cpu", "float32")


def collect_activations(model: HookedTransformer, tokens: torch.Tensor, hook_name: str,
                        layer: int, batch_size: int = 64) -> torch.Tensor:
    """Hook activations for ``tokens`` flattened to ``[N * C, d_in]``."""
    hook = HookSpec(hook_name, layer)
    chunks = [hook_activations(model, tokens[i:i + batch_size], hook)
              for i in range(0, tokens.shape[0], batch_size)]
    return torch.cat(chunks).flatten(0, 1)


def make_sae(d_in: int, d_sae: int, architecture: str = "standard", k: int = 8,
             metadata: dict[str, Any] | None = None, seed: int = 0) -> SAE:
    """A randomly initialised inference SAE of ``architecture`` (standard, topk, jumprelu,
    gated) with unit-norm decoder rows and a tied encoder."""
    from sae_lens.saes.gated_sae import GatedSAE, GatedSAEConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    meta = SAEMetadata(**(metadata or {}))
    classes = {"standard": (StandardSAE, StandardSAEConfig, {}),
               "topk": (TopKSAE, TopKSAEConfig, {"k": k}),
               "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {}),
               "gated": (GatedSAE, GatedSAEConfig, {})}
    sae_cls, cfg_cls, extra = classes[architecture]
    sae = sae_cls(cfg_cls(d_in=d_in, d_sae=d_sae, metadata=meta, **extra))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w_dec = torch.randn(d_sae, d_in, generator=gen)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        sae.W_dec.copy_(w_dec)
        sae.W_enc.copy_(w_dec.T)
        for name, param in sae.named_parameters():
            if name not in ("W_dec", "W_enc"):
                param.zero_()
    return sae


def make_transcoder(d_in: int, d_sae: int, d_out: int, skip: bool = False,
                    metadata: dict[str, Any] | None = None, seed: int = 0) -> SAE:
    """A randomly initialised sae_lens (skip) transcoder: ReLU latents of the input hook,
    decoded into the ``d_out``-wide output hook (``metadata`` names ``hook_name_out``)."""
    from sae_lens.saes.transcoder import (
        SkipTranscoder,
        SkipTranscoderConfig,
        Transcoder,
        TranscoderConfig,
    )

    cls, cfg_cls = (SkipTranscoder, SkipTranscoderConfig) if skip else (Transcoder,
                                                                       TranscoderConfig)
    sae = cls(cfg_cls(d_in=d_in, d_sae=d_sae, d_out=d_out, apply_b_dec_to_input=False,
                      metadata=SAEMetadata(
        **(metadata or {}))))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if name.startswith("W_"):
                param.copy_(torch.randn(param.shape, generator=gen) / param.shape[-1] ** 0.5)
            else:
                param.zero_()
    return sae


def train_sae(sae: SAE, acts: torch.Tensor, steps: int = 500, batch_size: int = 256,
              lr: float = 3e-3, l1_coefficient: float = 1e-3, seed: int = 0,
              on_step: Callable[[int], None] | None = None,
              targets: torch.Tensor | None = None) -> list[float]:
    """Train ``sae`` on ``acts`` ``[N, d_in]`` (MSE plus L1 on decoder-norm-weighted codes;
    TopK SAEs use MSE only); returns the loss curve. ``on_step(n)`` is called after the
    initialisation (n = 0) and after every step, e.g. to save snapshots of one run. A
    transcoder learns ``targets`` ``[N, d_out]`` (another hook's activations) from ``acts``."""
    gen = torch.Generator().manual_seed(seed)
    goal = acts if targets is None else targets
    skip = getattr(sae, "W_skip", None)
    with torch.no_grad():
        sae.b_dec.copy_(goal.mean(0))
    if on_step:
        on_step(0)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    sparse_penalty = sae.cfg.architecture() in ("standard", "gated", "jumprelu", "transcoder",
                                                 "skip_transcoder")
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, acts.shape[0], (batch_size,), generator=gen)
        x, y = acts[idx], goal[idx]
        feats = sae.encode(x)
        out = sae.decode(feats) + (x @ skip.T if skip is not None else 0)
        loss = (out - y).pow(2).sum(-1).mean()
        if sparse_penalty:
            loss = loss + l1_coefficient * (feats * sae.W_dec.norm(dim=-1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step:
            on_step(len(losses))
    return losses
