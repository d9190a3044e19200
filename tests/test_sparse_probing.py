"""Sparse probing on constructed SAEs where the answer is known."""

from __future__ import annotations

import dataclasses
from pathlib import Path

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


def _pool_every_position(sae, acts: torch.Tensor) -> torch.Tensor:
    """The pooled codes as first written: encode every position, mask, average."""
    valid = probing.valid_positions(acts)
    with torch.no_grad():
        codes = sae.encode(acts) * valid[..., None]
    return codes.sum(1) / valid.sum(1, keepdim=True).clamp_min(1)


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_pooling_only_valid_positions_equals_encoding_every_position(arch):
    torch.manual_seed(0)
    sae = T.make_sae(8, 32, arch, k=4)
    with torch.no_grad():
        sae.b_enc.uniform_(0.1, 0.5)  # encode(0) != 0: padding would leak in if not masked
    acts = torch.randn(9, 6, 8)
    acts[:, 4:] = 0
    acts[2, 1:] = 0
    acts[5] = 0  # a text with no valid position pools to 0
    for batch_size in (1, 2, 50):
        got = probing.sae_pool(sae, acts, batch_size)
        torch.testing.assert_close(got, _pool_every_position(sae, acts), rtol=1e-6, atol=1e-6)
    assert torch.equal(got[5], torch.zeros(32))


def test_pooled_codes_are_shared_within_a_checkpoint_by_tensor(monkeypatch):
    monkeypatch.setattr(probing, "SPARSE_MEMO_BYTES", 0)  # as for a 16k-latent SAE
    sae = T.make_sae(8, 64, "topk", k=2)
    acts, other = torch.randn(4, 3, 8), torch.randn(4, 3, 8)
    memo: dict = {}
    first = probing.sae_pool(sae, acts, 2, memo)
    assert len(memo) == 1 and next(iter(memo.values()))[1].is_sparse  # 2 of 64 latents
    with torch.no_grad():
        sae.W_enc.zero_()  # a recomputation would now differ: the memo must answer
    assert torch.equal(probing.sae_pool(sae, acts, 2, memo), first)
    probing.sae_pool(sae, other, 2, memo)  # another tensor is encoded anew
    assert len(memo) == 2


def test_sparse_probing_and_tpp_give_the_same_numbers_with_shared_codes(tiny_world):
    from tests.test_tpp import TINY as tpp_cfg

    sp_cfg = dataclasses.replace(TINY, dataset_names=("supersense_wordnet",),
                                 probe_train_set_size=200, probe_test_set_size=100,
                                 probe_epochs=5)
    together = make_runner(tiny_world.trained, sparse_probing=sp_cfg, tpp=tpp_cfg)
    sae_id = next(iter(together.checkpoints))
    shared = together.results(sae_id, ["sparse_probing", "tpp"])
    assert any(k.startswith("sae_pool/") for k in together._sae_memo[1])
    for name in ("sparse_probing", "tpp"):
        alone = make_runner(tiny_world.trained, **{name: sp_cfg if name != "tpp" else tpp_cfg})
        assert alone.results(sae_id, [name]).evals[name].metrics == \
            shared.evals[name].metrics


def test_tpp_at_large_n_ablates_only_latents_with_a_positive_effect():
    """The N = 500 of the standard suite on a class with 231 positive effects: the 231, in
    order of effect, never a zero- or negative-effect latent to make up the number."""
    from pytest_saebench.evals.probing import top_latents

    gen = torch.Generator().manual_seed(0)
    effect = torch.zeros(2048)
    positive = torch.randperm(2048, generator=gen)[:231]
    negative = torch.randperm(2048, generator=gen)[:600]
    effect[negative] = -torch.rand(600, generator=gen)
    effect[positive] = torch.rand(231, generator=gen) + 1e-3
    chosen = top_latents(effect, 500)
    assert len(chosen) == int((effect > 0).sum()) <= 231
    assert (effect[chosen] > 0).all()
    assert torch.equal(effect[chosen], effect[effect > 0].sort(descending=True).values)
    assert torch.equal(top_latents(effect, 20), chosen[:20])  # small N: unchanged


def test_tpp_and_scr_record_their_remask_setting():
    from pytest_saebench.evals import scr, tpp

    for module in (tpp, scr):
        for preset in module.PRESETS.values():
            assert dataclasses.asdict(preset)["remask_after_ablation"] is True
    docs = (Path(__file__).parents[1] / "docs" / "evals.md").read_text()
    assert "`remask_after_ablation = true`" in docs


def test_probes_train_when_gradients_are_off_process_wide():
    """A conftest or another library (SAEBench does) may call torch.set_grad_enabled(False);
    the probes and the meta-SAE still train, and the setting is left as it was."""
    from pytest_saebench.evals import meta_structure

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen)
    y = (x[:, 0] > 0).numpy().astype(np.int64)
    torch.set_grad_enabled(False)
    try:
        acc, w, _ = probing.train_probe(x[:150], y[:150], x[150:], y[150:], seed=0, lr=0.1)
        meta, _ = meta_structure.train_meta_sae(
            meta_structure.unit_rows(torch.randn(64, 8, generator=gen)),
            dataclasses.replace(meta_structure.PRESETS["fast"], train_steps=20,
                                train_batch_size=32), seed=0)
        assert not torch.is_grad_enabled()
    finally:
        torch.set_grad_enabled(True)
    assert acc > 0.9 and int(w.abs().argmax()) == 0
    assert meta.cfg.d_sae > 0
