"""A training repository's smoke test: train a small SAE with SAELens's own runner on the
embedded reference model, offline, and gate it in the same pytest run.

    pytest -c example_tests/pyproject.toml example_tests/test_trainer_smoke.py

No --sae-path: the test makes its checkpoints and hands them to ``saebench_evaluate``, which
evaluates them with this repository's settings ([tool.pytest-saebench] in pyproject.toml);
``.gate()`` applies its thresholds. About a minute on 2 CPU cores (README, "CI for a
trainer"). Replace the config with your trainer's, at a budget CI can afford. It trains, so
a run that gates existing checkpoints (--sae-path) skips it: give it its own CI step.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("sae_lens")


@pytest.fixture(scope="module")
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """One short SAELens training run with a mid-training checkpoint (trained on scaled
    activations, ``expected_average_only_in``) and the final SAE."""
    if request.config.getoption("sae_path"):
        pytest.skip("trains an SAE (about a minute); run it on its own: pytest "
                    "example_tests/test_trainer_smoke.py")
    from sae_lens import (
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        LoggingConfig,
        TopKTrainingSAEConfig,
    )

    from pytest_saebench.training import (
        CONTEXT_SIZE,
        D_MODEL,
        DATASET,
        HOOK_NAME,
        MODEL_NAME,
        reference_inputs,
    )

    out = tmp_path_factory.mktemp("sae-run")
    model, dataset = reference_inputs()
    cfg = LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=D_MODEL, d_sae=1024, k=32,
                                  normalize_activations="expected_average_only_in"),
        model_name=MODEL_NAME, dataset_path=DATASET, hook_name=HOOK_NAME,
        is_dataset_tokenized=False, context_size=CONTEXT_SIZE, training_tokens=300_000,
        train_batch_size_tokens=2048, store_batch_size_prompts=32, n_batches_in_buffer=32,
        n_batches_for_norm_estimate=20, lr=3e-3, n_checkpoints=1, seed=0, device="cpu",
        checkpoint_path=str(out / "checkpoints"), output_path=str(out / "final"),
        logger=LoggingConfig(log_to_wandb=False))
    LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=dataset).run()
    return out


def test_the_trained_sae_passes_the_gates(run, saebench_evaluate):
    final = saebench_evaluate(run / "final", evals=["core"])
    final.gate()  # [tool.pytest-saebench.thresholds] of this repository
    assert final["l0"] == 32  # TopK: exactly k latents fire


def test_training_improved_on_the_mid_training_checkpoint(run, saebench_evaluate):
    mid = saebench_evaluate(next((run / "checkpoints").glob("*/*")), evals=["core"])
    final = saebench_evaluate(run / "final", evals=["core"])
    ev = "core.reconstruction_quality.explained_variance"
    noise = math.hypot(mid[ev].stderr, final[ev].stderr)
    assert final[ev] - mid[ev] > 3 * noise, (mid[ev], final[ev])
