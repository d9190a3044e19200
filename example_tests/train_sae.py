"""Train an SAE with SAELens's runner on a Hub model and dataset: README's quick start.

    python example_tests/train_sae.py                          # a real run (about 2M tokens)
    pytest --sae-path=checkpoints --sae-path=final             # gate what it wrote

SAELens writes two mid-training checkpoints under checkpoints/<run id>/<tokens seen>/ while
it trains, and the final SAE under final/. The model and dataset are named as on the Hub;
with HF_HUB_OFFLINE=1 both come from the local Hugging Face cache (a CI runner's restored
cache). tests/test_hub_path.py runs this file's train() on a scratch cache that holds a small
GPT-NeoX saved as EleutherAI/pythia-70m-deduped (pretrained 200 steps on the embedded corpus;
random weights would make every metric meaningless) and the corpus as
monology/pile-uncopyrighted, at --training-tokens 49152 --context-size 32 --batch-tokens 512.
"""

from __future__ import annotations

import argparse
from pathlib import Path

MODEL = "EleutherAI/pythia-70m-deduped"
DATASET = "monology/pile-uncopyrighted"
HOOK = "blocks.1.hook_resid_post"


def train(out: Path, training_tokens: int = 2_000_000, context_size: int = 128,
          batch_tokens: int = 4096, model: str = MODEL, dataset: str = DATASET,
          seed: int = 0) -> None:
    """Train a standard (ReLU, L1) SAE, 4x the model's width, on ``HOOK``, seeded by ``seed``
    (replicates differ in it alone); write ``out/checkpoints/<run id>/<tokens>/`` twice."""
    from sae_lens import (
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
        StandardTrainingSAEConfig,
    )
    from transformers import AutoConfig

    from pytest_saebench.training import hub_dataset

    d_in = AutoConfig.from_pretrained(model).hidden_size
    cfg = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=d_in, d_sae=4 * d_in, l1_coefficient=2.0,
                                      normalize_activations="expected_average_only_in"),
        model_name=model, hook_name=HOOK, dataset_path=dataset, is_dataset_tokenized=False,
        streaming=True, context_size=context_size, training_tokens=training_tokens,
        train_batch_size_tokens=batch_tokens, store_batch_size_prompts=16,
        n_batches_in_buffer=32, n_checkpoints=2, checkpoint_path=str(out / "checkpoints"),
        output_path=str(out / "final"), device="cpu", lr=3e-3, seed=seed,
        n_batches_for_norm_estimate=8, logger=LoggingConfig(log_to_wandb=False))
    # hub_dataset streams the dataset as load_dataset(name, streaming=True) does, and offline
    # from the local cache (where load_dataset by name refuses).
    LanguageModelSAETrainingRunner(cfg, override_dataset=hub_dataset(dataset)).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="where checkpoints/ and final/ go (default: here)")
    parser.add_argument("--training-tokens", type=int, default=2_000_000)
    parser.add_argument("--context-size", type=int, default=128)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0,
                        help="the runner's seed; replicates of one configuration differ in it")
    args = parser.parse_args()
    # SAELens's bar advances once per 100 steps and only after the activation buffer has
    # filled (n_batches_in_buffer * store_batch_size_prompts contexts through the model), so
    # say up front what the run will do and why the bar may sit at 0 % for a while.
    steps = args.training_tokens // args.batch_tokens
    print(f"train_sae: {steps:,} steps of {args.batch_tokens:,} tokens on {MODEL} {HOOK}, "
          f"seed {args.seed}; first the model fills SAELens's activation buffer "
          f"({32 * 16 * args.context_size:,} tokens), then SAELens's bar moves every 100 steps"
          + (" (this run is shorter: it stays at 0 % until the end)" if steps < 100 else ""),
          flush=True)
    train(args.out, args.training_tokens, args.context_size, args.batch_tokens,
          seed=args.seed)
    print(f"train_sae: wrote {args.out / 'checkpoints'} and {args.out / 'final'}", flush=True)


if __name__ == "__main__":
    main()
