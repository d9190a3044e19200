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
    """Explained variance and downstream loss recovered, as one-line gates. With no bound
    given, ``saebench_check`` applies the repository's own ([tool.pytest-saebench.thresholds]),
    so this test follows pyproject.toml; ``min=``/``max=`` set one here instead."""
    saebench_check("core.reconstruction_quality.explained_variance")
    saebench_check("core.model_performance_preservation.ce_loss_score")


def test_sparsity_in_a_sane_band(sae_metrics):
    """Between 4 and 200 active latents per token; assert messages show value ± stderr.

    SAEBench compares SAEs at L0 20 to 200; the shipped sweep goes down to k = 8, so this
    band is wider. Narrow it to the sparsity your training targets.
    """
    assert 4 <= sae_metrics["l0"] <= 200


def test_few_dead_latents(saebench_check):
    """Dead latents within the repository's bound: the example's pyproject allows 10%, more
    usually meaning a training problem at full length. Skipped, saying so, where pyproject has
    no bound: README's table gates none, since a run as short as its quick start on the
    tests' small model leaves about half its latents dead."""
    saebench_check("core.misc_metrics.frac_dead")


def test_encoding_zero(sae):
    """``encode(0)`` is finite, and a TopK / BatchTopK SAE keeps at most k latents for it
    (they keep k for every input, zero included); the plugin's
    ``properties.checks.zero_input`` gate checks the same.

    No bound for ReLU and JumpReLU: an SAE that subtracts ``b_dec`` before encoding (SAELens's
    standard SAE) sees 0 as an input far from its data, and many latents may fire there while
    every one of them is sparse on real activations (the L0 and density gates measure those).
    """
    with torch.no_grad():
        codes = sae.encode(torch.zeros(1, sae.cfg.d_in, dtype=sae.dtype, device=sae.W_dec.device))
    assert torch.isfinite(codes).all()
    k = getattr(sae.cfg, "k", None)
    if k is not None:
        active = int((codes != 0).sum())
        assert active <= int(k), f"encode(0) has {active} active latents, more than k = {k}"
