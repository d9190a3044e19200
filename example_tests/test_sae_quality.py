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


def test_sparsity_in_a_sane_band(sae_metrics):
    """Between 4 and 200 active latents per token; assert messages show value ± stderr.

    SAEBench compares SAEs at L0 20 to 200; the shipped sweep goes down to k = 8, so this
    band is wider. Narrow it to the sparsity your training targets.
    """
    assert 4 <= sae_metrics["l0"] <= 200


def test_few_dead_latents(sae_metrics):
    """More than 10% dead latents usually means a training problem."""
    assert sae_metrics["core.misc_metrics.frac_dead"] <= 0.10


def test_encoding_zero(sae):
    """What ``encode(0)`` may do depends on the architecture (the plugin's
    ``properties.checks.zero_input`` checks finiteness and the TopK bound; the 5% bound for
    ReLU is this test's own, and fails the shipped ``dense`` checkpoint by design):

    - TopK / BatchTopK keep k latents for every input, zero included: at most k active;
    - ReLU and JumpReLU: a latent active at zero is active on almost every input, so at most
      5% of the latents may be.
    """
    with torch.no_grad():
        codes = sae.encode(torch.zeros(1, sae.cfg.d_in, dtype=sae.dtype, device=sae.W_dec.device))
    assert torch.isfinite(codes).all()
    active = int((codes != 0).sum())
    k = getattr(sae.cfg, "k", None)
    limit = int(k) if k is not None else int(0.05 * sae.cfg.d_sae)
    assert active <= limit, f"encode(0) has {active} active latents, more than {limit}"
