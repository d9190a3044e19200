"""Build the hub path a user's CI takes, offline: ``python tests/hub_world.py ROOT``.

``ROOT/hf`` is a Hugging Face cache (run with ``HF_HOME=ROOT/hf HF_HUB_OFFLINE=1``) holding
- ``EleutherAI/pythia-70m-deduped``: a small GPT-NeoX (random init with a few large residual
  dimensions, then 200 steps on the embedded corpus so that losses mean something), written
  with ``save_pretrained`` beside the embedded tokenizer;
- ``monology/pile-uncopyrighted``: the embedded corpus as parquet shards (text);
- ``pytest-saebench/pile-uncopyrighted-tokenized``: the same text pretokenized by SAELens's
  ``PretokenizeRunner`` (``input_ids``, ``sae_lens.json``).

and SAEs trained by the real trainers on ``blocks.1.hook_resid_post``:
- ``ROOT/saelens``: SAELens's ``LanguageModelSAETrainingRunner`` by model name,
  ``normalize_activations="expected_average_only_in"``, two mid-training checkpoints under
  ``checkpoints/<run id>/<tokens>/`` and the final SAE under ``final/``;
- ``ROOT/dictionary_learning/trainer_0``: dictionary_learning's ``trainSAE`` with its
  ``StandardTrainer`` on the raw HF model's hidden states (``ae.pt`` + ``config.json``).
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

MODEL = "EleutherAI/pythia-70m-deduped"
TEXT = "monology/pile-uncopyrighted"
TOKENS = "pytest-saebench/pile-uncopyrighted-tokenized"
HOOK = "blocks.1.hook_resid_post"
LAYER = 1
CONTEXT = 32
D_MODEL, D_SAE = 64, 256


def build_cache(hf: Path, root: Path) -> None:
    """The model and both datasets, as ``huggingface_hub`` and ``push_to_hub`` lay them out."""
    import datasets
    from sae_lens import PretokenizeRunner, PretokenizeRunnerConfig
    from transformers import AutoTokenizer

    from pytest_saebench import reference
    from pytest_saebench.testing_hub import random_gpt_neox, save_dataset, save_model

    tokenizer = AutoTokenizer.from_pretrained(str(reference.MODEL_DIR))
    model = random_gpt_neox(tokenizer, d_model=D_MODEL)
    pretrain(model, tokenizer)
    save_model(hf, MODEL, model, tokenizer)
    corpus = reference.corpus_dataset("train").select_columns(["text", "source"])
    save_dataset(hf, TEXT, corpus, n_shards=2)
    subset = root / "subset"
    subset.mkdir(parents=True, exist_ok=True)
    corpus.select(range(1500)).to_parquet(str(subset / "train.parquet"))
    out = root / "pretokenized"
    PretokenizeRunner(PretokenizeRunnerConfig(
        tokenizer_name=MODEL, dataset_path=str(subset), context_size=CONTEXT,
        shuffle=False, num_proc=1, save_path=str(out))).run()
    save_dataset(hf, TOKENS, datasets.load_from_disk(str(out)), n_shards=2,
                 extra={"sae_lens.json": (out / "sae_lens.json").read_bytes()})


def pretrain(model, tokenizer, steps: int = 200, batch: int = 16) -> None:
    """A short language-model training run, so clean, spliced and ablated losses differ."""
    import torch

    from pytest_saebench.loading.data import load_text_dataset, token_windows

    tokens = token_windows(tokenizer, load_text_dataset("saebench-reference:train"),
                           steps * batch, 64, True, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for i in range(steps):
        rows = tokens[i * batch:(i + 1) * batch]
        loss = model(rows, labels=rows).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def text_stream():
    """The text dataset as ``load_dataset(TEXT, streaming=True)`` gives it online (offline,
    ``datasets`` cannot read the Hub cache by name; SAELens takes it as override_dataset)."""
    import datasets
    from huggingface_hub import snapshot_download

    snapshot = snapshot_download(TEXT, repo_type="dataset", local_files_only=True)
    return datasets.load_dataset(snapshot, split="train", streaming=True)


def tokens_stream():
    """The pretokenized dataset as ``load_dataset(TOKENS, streaming=True)`` gives it."""
    import datasets
    from huggingface_hub import snapshot_download

    snapshot = snapshot_download(TOKENS, repo_type="dataset", local_files_only=True)
    return datasets.load_dataset(snapshot, split="train", streaming=True)


def quick_start():
    """README's quick start, ``example_tests/train_sae.py``, as a module."""
    import importlib.util

    path = Path(__file__).parents[1] / "example_tests" / "train_sae.py"
    spec = importlib.util.spec_from_file_location("train_sae", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What README's quick start is run with here (example_tests/train_sae.py's options).
QUICK_START_ARGS = {"training_tokens": 49_152, "context_size": CONTEXT, "batch_tokens": 512}


def train_saelens(out: Path, training_tokens: int = 49_152, pretokenized: bool = False) -> None:
    """SAELens's runner by model name: README's quick start on the text dataset (two
    mid-training checkpoints), or on the pretokenized one (final SAE only)."""
    if not pretokenized:
        quick_start().train(out, **QUICK_START_ARGS)
        return
    from sae_lens import (
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
        StandardTrainingSAEConfig,
    )

    cfg = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=D_MODEL, d_sae=D_SAE, l1_coefficient=2.0,
                                      normalize_activations="expected_average_only_in"),
        model_name=MODEL, hook_name=HOOK, dataset_path=TOKENS, is_dataset_tokenized=True,
        streaming=True, context_size=CONTEXT, training_tokens=training_tokens,
        train_batch_size_tokens=512, store_batch_size_prompts=16, n_batches_in_buffer=32,
        n_checkpoints=0, checkpoint_path=str(out / "checkpoints"),
        output_path=str(out / "final"), device="cpu", lr=3e-3, seed=0,
        n_batches_for_norm_estimate=8, logger=LoggingConfig(log_to_wandb=False))
    LanguageModelSAETrainingRunner(cfg, override_dataset=tokens_stream()).run()


def train_dictionary_learning(out: Path, steps: int = 300) -> None:
    """dictionary_learning's own trainer on the raw HF model's residual stream (what its
    nnsight ActivationBuffer reads; nnsight itself is not installed, so it is stubbed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.modules.setdefault("nnsight", types.ModuleType("nnsight"))
    sys.modules["nnsight"].LanguageModel = object  # type: ignore[attr-defined]
    from dictionary_learning.trainers.standard import StandardTrainer
    from dictionary_learning.training import trainSAE

    from pytest_saebench.loading.data import load_text_dataset, token_windows

    model = AutoModelForCausalLM.from_pretrained(MODEL).eval()
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    tokens = token_windows(tokenizer, load_text_dataset(TEXT), 512, CONTEXT, True, seed=1)
    seen: list = []
    # The block's output, as nnsight's ``model.gpt_neox.layers[1].output`` gives it (the last
    # of ``hidden_states`` has the final LayerNorm applied).
    hook = model.gpt_neox.layers[LAYER].register_forward_hook(
        lambda _m, _i, out: seen.append(out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        model(tokens)
    hook.remove()
    acts = seen[0].reshape(-1, D_MODEL)
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            yield acts[torch.randint(len(acts), (512,), generator=gen)]

    trainer = {"trainer": StandardTrainer, "activation_dim": D_MODEL, "dict_size": D_SAE,
               "lr": 2e-3, "l1_penalty": 0.2, "warmup_steps": 20, "sparsity_warmup_steps": 50,
               "steps": steps, "layer": LAYER, "lm_name": MODEL,
               "submodule_name": f"resid_post_layer_{LAYER}", "device": "cpu", "seed": 0}
    trainSAE(batches(), [trainer],
             steps=steps, save_dir=str(out), device="cpu")


def main(root: Path) -> None:
    import time

    import datasets

    # SAELens's store leaves parquet streams open; each waits 5 s for Arrow's threads when it
    # is collected, long before this process ends (see pytest_saebench/loading/data.py).
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0.1
    hf = Path(os.environ["HF_HOME"])
    for step, run in (("cache", lambda: build_cache(hf, root)),
                      ("saelens", lambda: train_saelens(root / "saelens")),
                      ("saelens_tokens", lambda: train_saelens(root / "saelens_tokens", 24_576,
                                                               pretokenized=True)),
                      ("dictionary_learning",
                       lambda: train_dictionary_learning(root / "dictionary_learning"))):
        started = time.perf_counter()
        run()
        print(f"hub_world: {step} {time.perf_counter() - started:.1f} s", file=sys.stderr)
    (root / "done.json").write_text(json.dumps({"model": MODEL, "text": TEXT, "tokens": TOKENS}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
