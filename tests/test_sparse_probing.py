"""Sparse probing on constructed SAEs where the answer is known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pytest_saebench import testing as T
from pytest_saebench.evals import probing
from pytest_saebench.evals import sparse_probing as sp
from pytest_saebench.loading.model import load_local_model
from tests.helpers import make_runner

TINY = dataclasses.replace(sp.PRESETS["fast"], dataset_names=("testament_kjv",),
                           probe_train_set_size=400, probe_test_set_size=200,
                           context_length=32, probe_epochs=30)


def _run(sae_dir, cfg=TINY):
    runner = make_runner(sae_dir, sparse_probing=cfg)
    sae_id = next(iter(runner.checkpoints))
    return runner.results(sae_id, ["sparse_probing"]).evals["sparse_probing"]


def _basis_sae(world, tmp_path, shift: float = 6.0):
    """Latent i = x_i + shift, never clipped (|x_i| < 6 here): each latent is one residual
    direction, so top-k probes on latents and on the residual see the same data up to a shift."""
    d = load_local_model(world.model_dir, "cpu", "float32").cfg.d_model
    sae = T.make_sae(d, d, "standard", metadata=world.metadata())
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.fill_(shift)
        sae.b_dec.zero_()
    path = tmp_path / "basis"
    sae.save_model(path)
    return path


def test_sae_made_of_the_residual_basis_matches_llm_top_k(tiny_world, tmp_path):
    res = _run(_basis_sae(tiny_world, tmp_path))
    m = res.metrics
    for k in TINY.k_values:
        llm = m[f"sparse_probing.llm.llm_top_{k}_test_accuracy"]
        sae = m[f"sparse_probing.sae.sae_top_{k}_test_accuracy"]
        assert sae == pytest.approx(llm, abs=0.011), k  # identical up to a constant shift
    details = {d["dataset_name"]: d for d in res.details}
    assert set(details) == {"testament_kjv_results"}


def test_unrun_k_is_null_and_not_computed(tiny_world, tmp_path):
    res = _run(tiny_world.trained)
    metric = "sparse_probing.sae.sae_top_50_test_accuracy"
    assert res.metrics[metric] is None
    assert "k not in this suite's k_values" in res.not_computed[metric]


def test_dead_sae_probes_at_chance(tiny_world, tmp_path):
    d = load_local_model(tiny_world.model_dir, "cpu", "float32").cfg.d_model
    sae = T.make_sae(d, 32, "standard", metadata=tiny_world.metadata())
    with torch.no_grad():
        sae.b_enc.fill_(-1e6)  # never fires
    sae.save_model(tmp_path / "dead")
    m = _run(tmp_path / "dead").metrics
    assert m["sparse_probing.sae.sae_top_1_test_accuracy"] == pytest.approx(0.5, abs=0.02)
    assert m["sparse_probing.llm.llm_top_1_test_accuracy"] > 0.55


def test_one_vs_rest_is_balanced_and_seeded():
    labels = ["a"] * 30 + ["b"] * 50 + ["c"] * 40
    idx, y = probing.one_vs_rest(labels, "a", seed=3)
    assert y.sum() == 30 and (1 - y).sum() == 30
    assert {labels[i] for i, t in zip(idx, y, strict=True) if t == 0} == {"b", "c"}
    idx2, y2 = probing.one_vs_rest(labels, "a", seed=3)
    assert np.array_equal(idx, idx2) and np.array_equal(y, y2)


def test_pooling_ignores_zeroed_positions_and_remasks_codes():
    acts = torch.zeros(1, 4, 3)
    acts[0, 1] = torch.tensor([1.0, 2.0, 3.0])
    acts[0, 2] = torch.tensor([3.0, 2.0, 1.0])
    assert torch.equal(probing.pool(acts), torch.tensor([[2.0, 2.0, 2.0]]))
    sae = T.make_sae(3, 3, "standard")
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(3))
        sae.b_enc.fill_(5.0)  # encode(0) = 5 at the padded positions
    pooled = probing.sae_pool(sae, acts, batch_size=1)
    assert torch.allclose(pooled, torch.tensor([[7.0, 7.0, 7.0]]))
