"""Matryoshka SAEs: core reports reconstruction from each nested prefix width the checkpoint
declares (SAELens's training details, or dictionary_learning's group sizes)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from sae_lens import SAE

from pytest_saebench.errors import SaebenchError
from pytest_saebench.loading.checkpoints import discover
from pytest_saebench.loading.data import load_text_dataset, token_windows
from pytest_saebench.loading.model import load_local_model
from tests.conftest import CONTEXT, HOOK
from tests.helpers import SMALL, make_runner

WIDTHS = [16, 48, 128]
B, N_REC, N_VAR = SMALL.batch_size_prompts, SMALL.n_eval_reconstruction_batches, \
    SMALL.n_eval_sparsity_variance_batches


def _acts(world, n=256, seed=11):
    model = load_local_model(world.model_dir, "cpu", "float32")
    ds = load_text_dataset(str(world.corpus))
    tokens = token_windows(model.tokenizer, ds, n, CONTEXT, True, seed=seed)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=HOOK)
    return cache[HOOK].reshape(-1, model.cfg.d_model)


@pytest.fixture(scope="module")
def matryoshka(tiny_world, tmp_path_factory):
    """A Matryoshka BatchTopK SAE trained by SAELens's own trainer, saved by its own
    ``save_inference_model`` (the runner's writer)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.training.sae_trainer import SAETrainer

    acts = _acts(tiny_world)
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            yield acts[torch.randint(0, acts.shape[0], (256,), generator=gen)]

    torch.manual_seed(0)
    sae = MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
        d_in=acts.shape[1], d_sae=WIDTHS[-1], k=8, matryoshka_widths=list(WIDTHS),
        metadata=SAEMetadata(**tiny_world.metadata())))
    cfg = SAETrainerConfig(
        total_training_samples=400 * 256, train_batch_size_samples=256, lr=3e-3, lr_end=3e-3,
        lr_scheduler_name="constant", lr_warm_up_steps=0, lr_decay_steps=0,
        n_restart_cycles=0, adam_beta1=0.9, adam_beta2=0.999, device="cpu", autocast=False,
        dead_feature_window=1000, feature_sampling_window=1000, n_checkpoints=0,
        checkpoint_path=None, save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False))
    with contextlib.redirect_stderr(io.StringIO()):
        trained = SAETrainer(cfg=cfg, sae=sae, data_provider=batches()).fit()
    out = tmp_path_factory.mktemp("matryoshka") / "sae"
    trained.save_inference_model(out)
    return out


def test_widths_come_from_sae_lens_training_details(matryoshka):
    ref = discover(matryoshka)[0]
    assert json.loads((matryoshka / "cfg.json").read_text())["architecture"] == "jumprelu"
    assert ref.matryoshka_widths == WIDTHS


def test_prefix_reconstruction_matches_hand_computation(tiny_world, matryoshka):
    runner = make_runner(matryoshka)
    core = runner.results(next(iter(runner.checkpoints))).evals["core"]
    rows = core.unstructured["matryoshka_prefixes"]
    assert [r["width"] for r in rows] == WIDTHS
    full_ev = core.metrics["core.reconstruction_quality.explained_variance"]
    assert rows[-1]["explained_variance"] == pytest.approx(full_ev, abs=1e-12)
    model = load_local_model(tiny_world.model_dir, "cpu", "float32")
    sae = SAE.load_from_disk(str(matryoshka))
    ds = load_text_dataset(str(tiny_world.corpus))
    tokens = token_windows(model.tokenizer, ds, B * (N_REC + N_VAR), CONTEXT, True, 42)
    var = tokens[B * N_REC:]
    valid = var != model.tokenizer.bos_token_id
    with torch.no_grad():
        _, cache = model.run_with_cache(var, names_filter=HOOK)
        x = cache[HOOK]
        feats = sae.encode(x)
        for row in rows[:-1]:
            head = feats.clone()
            head[..., row["width"]:] = 0
            xh = sae.decode(head)[valid].double().numpy()
            xv = x[valid].double().numpy()
            ev = 1 - ((xv - xh) ** 2).sum(1).mean() / np.var(xv, axis=0).sum()
            assert row["explained_variance"] == pytest.approx(ev, abs=1e-5)
            assert row["l0"] == pytest.approx(float((head[valid] != 0).sum(-1).double().mean()),
                                              abs=1e-9)
    # a trained Matryoshka SAE: each wider prefix reconstructs better, beyond its noise
    for small, large in zip(rows, rows[1:], strict=False):
        gap = large["explained_variance"] - small["explained_variance"]
        assert gap > 3 * max(small["explained_variance_stderr"],
                             large["explained_variance_stderr"]), (small, large)


def test_dictionary_learning_group_sizes_become_widths(tiny_world, tmp_path):
    """Layout of dictionary_learning's MatryoshkaBatchTopKSAE (trainers/
    matryoshka_batch_top_k.py): W_enc [d, F], W_dec [F, d], k, threshold, group_sizes."""
    from safetensors.torch import load_file

    w = load_file(str(tiny_world.trained / "sae_weights.safetensors"))
    d, f = w["W_enc"].shape
    state = {"W_enc": w["W_enc"], "b_enc": w["b_enc"], "W_dec": w["W_dec"],
             "b_dec": w["b_dec"], "k": torch.tensor(8, dtype=torch.int),
             "threshold": torch.tensor(0.05), "group_sizes": torch.tensor([32, 32, 64])}
    out = tmp_path / "trainer_0"
    out.mkdir()
    torch.save(state, out / "ae.pt")
    trainer = {"dict_class": "MatryoshkaBatchTopKSAE", "activation_dim": d, "dict_size": f,
               "k": 8, "lm_name": str(tiny_world.model_dir), "submodule_name": "resid_post_layer_0"}
    (out / "config.json").write_text(json.dumps({"trainer": trainer,
                                                 "buffer": {"ctx_len": CONTEXT}}))
    assert discover(out)[0].matryoshka_widths == [32, 64, 128]
    state["group_sizes"] = torch.tensor([32, 32])
    torch.save(state, out / "ae.pt")
    with pytest.raises(SaebenchError, match="group_sizes .* must be positive and sum to"):
        discover(out)
