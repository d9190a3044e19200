"""The quality ladder on the shipped reference model: metrics that carry signal keep their
order, and absorption is scored (the model spells)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_saebench.evals import absorption, core, tpp
from tests.helpers import make_runner

LADDER = Path(__file__).parents[1] / "example_tests" / "checkpoints" / "ladder"
STEPS = (0, 25, 200, 1000, 6000)
EV = "core.reconstruction_quality.explained_variance"


def test_ladder_is_one_run_at_increasing_steps():
    cfgs = {p.parent.name: json.loads(p.read_text()) for p in LADDER.glob("*/cfg.json")}
    assert sorted(c["metadata"]["training_steps"] for c in cfgs.values()) == list(STEPS)
    assert {(c["architecture"], c["d_sae"], c["k"]) for c in cfgs.values()} == {
        ("topk", 1024, 32)}
    good = (LADDER.parent / "good" / "sae_weights.safetensors").read_bytes()
    under = (LADDER.parent / "undertrained" / "sae_weights.safetensors").read_bytes()
    assert (LADDER / "step_6000" / "sae_weights.safetensors").read_bytes() == good
    assert (LADDER / "step_0025" / "sae_weights.safetensors").read_bytes() == under


@pytest.mark.slow
def test_core_orders_the_ladder():
    runner = make_runner(LADDER, cfg=core.PRESETS["fast"])
    ids = sorted(runner.checkpoints)  # step_0000 ... step_6000
    ev = [runner.results(i).value(EV) for i in ids]
    kl = [runner.results(i).value("core.model_behavior_preservation.kl_div_score") for i in ids]
    ce = [runner.results(i).value("core.model_performance_preservation.ce_loss_score")
          for i in ids]
    assert ev == sorted(ev) and ev[-1] - ev[1] > 0.3, ev
    # From 25 steps on; the random init and 25 steps are within noise on the loss scores.
    assert kl[1:] == sorted(kl[1:]) and kl[-1] - kl[1] > 0.03, kl
    assert ce[1:] == sorted(ce[1:]) and ce[-1] - ce[1] > 0.03, ce


@pytest.mark.slow
def test_tpp_separates_early_rungs_from_the_trained_sae():
    """The fast-suite probing metric the example config gates: 25 and 200 steps score below
    the trained SAE at N = 20 (z about 4 over seeds). The random init is not pinned: on a
    128-wide model random latents are as good ablation targets (README)."""
    runner = make_runner(LADDER, tpp=tpp.PRESETS["fast"])
    metric = "tpp.tpp_metrics.tpp_threshold_20_total_metric"
    value = {i.rsplit("_", 1)[-1]: runner.results(i, ["tpp"]).value(metric)
             for i in runner.checkpoints}
    assert max(value["0025"], value["0200"]) + 0.03 < value["6000"], value


@pytest.mark.slow
def test_absorption_is_scored_on_the_reference_model():
    runner = make_runner(LADDER / "step_6000", absorption=absorption.PRESETS["fast"])
    res = runner.results(next(iter(runner.checkpoints)), ["absorption"])
    ab = res.evals["absorption_first_letter"]
    f1 = ab.unstructured["ground_truth_f1"]
    assert sum(v > 0.6 for v in f1.values()) >= 20, f1
    assert len(ab.unstructured["letters_scored"]) >= 20
    value = res.value("absorption_first_letter.mean.mean_absorption_fraction_score")
    assert value is not None and 0 < value < 1
    # Space-prefixed whole words (" cat") are scored, as in SAEBench; few words are dropped.
    kept = ab.unstructured["words_kept"]
    assert kept["with_leading_space"] > 0.4 * ab.config["n_vocab_words"], kept
    assert kept["dropped"] < 0.05 * ab.config["n_vocab_words"], kept
