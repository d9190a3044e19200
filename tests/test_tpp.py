"""TPP: the pooled-ablation shortcut against explicit per-position ablation, and a run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pytest_saebench import testing as T
from pytest_saebench.evals import probing, tpp
from tests.helpers import make_runner

# TPP at a budget the tiny world answers in seconds (also used by the cache and probing tests).
TINY = dataclasses.replace(tpp.PRESETS["fast"], train_set_size=200, test_set_size=100,
                           context_length=32, probe_epochs=5, n_values=(2, 20))


@pytest.mark.parametrize("remask", [True, False])
def test_pooled_ablation_equals_explicit_per_position_ablation(remask):
    torch.manual_seed(0)
    sae = T.make_sae(8, 16, "standard", seed=4)
    with torch.no_grad():
        sae.b_enc.uniform_(0.1, 0.5)  # encode(0) != 0, so padding matters without re-masking
    acts = torch.randn(5, 7, 8)
    acts[:, 5:] = 0  # padded positions
    acts[0, 3:] = 0
    chosen = torch.tensor([1, 4, 9])
    with torch.no_grad():
        f = sae.encode(acts)
        err = acts - sae.decode(f)
        f_abl = f.clone()
        f_abl[..., chosen] = 0
        x_abl = sae.decode(f_abl) + err
    valid = probing.valid_positions(acts)
    if remask:
        x_abl = x_abl * valid[..., None]
    expected = x_abl.sum(1) / valid.sum(1, keepdim=True)
    n_valid = valid.sum(1).float()
    got = probing.ablated(probing.pool(acts), probing.sae_pool(sae, acts, 2),
                      (acts.shape[1] - n_valid) / n_valid, probing.sae_codes_at_zero(sae),
                      sae.W_dec.detach(), chosen, remask)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_tpp_runs_and_reports_unrun_n_as_not_computed(tiny_world):
    runner = make_runner(tiny_world.trained, tpp=TINY)
    res = runner.results("trained", ["tpp"]).evals["tpp"]
    total = res.metrics["tpp.tpp_metrics.tpp_threshold_20_total_metric"]
    intended = res.metrics["tpp.tpp_metrics.tpp_threshold_20_intended_diff_only"]
    unintended = res.metrics["tpp.tpp_metrics.tpp_threshold_20_unintended_diff_only"]
    assert total == pytest.approx(intended - unintended)
    assert -1 <= total <= 1
    assert res.metrics["tpp.tpp_metrics.tpp_threshold_500_total_metric"] is None
    assert "N not in this suite's n_values" in \
        res.not_computed["tpp.tpp_metrics.tpp_threshold_500_total_metric"]
    assert res.details[0]["dataset_name"] == "supersense_wordnet_tpp_results"
