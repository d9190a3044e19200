"""What a training repo adds next to its checkpoints: quality checks that run in CI.

Run with:  pytest --sae-path=checkpoints/latest example_tests/
The generated gate items (saebench::evaluate[...], saebench::threshold[...]) come from the
[tool.pytest-saebench.thresholds] table; the tests below are extra, hand-written checks.
"""

import torch


def test_sae_matches_its_model(sae, saebench_model):
    """The checkpoint reads a hook the model has, at the model's width."""
    assert sae.cfg.d_in == saebench_model.cfg.d_model


def test_reconstruction_is_good_enough(saebench_check):
    """Explained variance and downstream loss recovered, as one-line gates."""
    saebench_check("core.reconstruction_quality.explained_variance", min=0.85)
    saebench_check("core.model_performance_preservation.ce_loss_score", min=0.98)


def test_sparsity_in_the_comparable_band(sae_metrics):
    """SAEBench compares SAEs at L0 between 20 and 200; assert messages show value ± stderr."""
    assert 20 <= sae_metrics["l0"] <= 200


def test_few_dead_latents(sae_metrics):
    """More than 10% dead latents usually means a training problem."""
    assert sae_metrics["core.misc_metrics.frac_dead"] <= 0.10


def test_encoding_zero_is_silent(sae):
    """A latent that fires on the zero vector fires everywhere."""
    with torch.no_grad():
        codes = sae.encode(torch.zeros(1, sae.cfg.d_in))
    assert (codes == 0).float().mean() > 0.95
