"""Transcoders are measured as what they are: the output hook's activation reconstructed from
the input hook's, and the loss with the output spliced in at the output hook only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sae_lens import SAE

from pytest_saebench import testing as T
from pytest_saebench.loading.data import load_text_dataset, token_windows
from pytest_saebench.loading.model import load_local_model
from tests.conftest import CONTEXT
from tests.helpers import SMALL, make_runner

HOOK_IN, HOOK_OUT = "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"
B, N_REC, N_VAR = SMALL.batch_size_prompts, SMALL.n_eval_reconstruction_batches, \
    SMALL.n_eval_sparsity_variance_batches


@pytest.fixture(scope="module")
def transcoders(tiny_world, tmp_path_factory):
    """A transcoder and a skip transcoder trained briefly, and a random-init one."""
    root = tmp_path_factory.mktemp("transcoders")
    model = load_local_model(tiny_world.model_dir, "cpu", "float32")
    ds = load_text_dataset(str(tiny_world.corpus))
    tokens = token_windows(model.tokenizer, ds, 256, CONTEXT, True, seed=7)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[HOOK_IN, HOOK_OUT])
    x = cache[HOOK_IN].reshape(-1, model.cfg.d_model)
    y = cache[HOOK_OUT].reshape(-1, model.cfg.d_model)
    meta = tiny_world.metadata(hook_name=HOOK_IN, hook_name_out=HOOK_OUT)
    d = model.cfg.d_model
    paths = {}
    for name, skip, steps in (("trained", False, 400), ("skip", True, 400),
                              ("random", False, 0)):
        tc = T.make_transcoder(d, 128, d, skip=skip, metadata=meta, seed=3)
        if steps:
            T.train_sae(tc, x, steps=steps, l1_coefficient=1e-3, targets=y)
        tc.save_model(root / name)
        paths[name] = root / name
    return paths


def _core(path, seed=42):
    runner = make_runner(path, seed=seed)
    res = runner.results(next(iter(runner.checkpoints)))
    return res.evals["core"], runner


def _by_hand(world, path):
    """EV of the output hook from the input hook, and CE with the output spliced in."""
    model = load_local_model(world.model_dir, "cpu", "float32")
    tc = SAE.load_from_disk(str(path))
    ds = load_text_dataset(str(world.corpus))
    tokens = token_windows(model.tokenizer, ds, B * (N_REC + N_VAR), CONTEXT, True, 42)
    valid = tokens != model.tokenizer.bos_token_id
    rec, var = tokens[:B * N_REC], tokens[B * N_REC:]
    with torch.no_grad():
        _, cache = model.run_with_cache(var, names_filter=[HOOK_IN, HOOK_OUT])
        m = valid[B * N_REC:]
        x_hat = tc(cache[HOOK_IN])[m].double().numpy()
        y = cache[HOOK_OUT][m].double().numpy()
        _, cache = model.run_with_cache(rec, names_filter=[HOOK_IN, HOOK_OUT])
        out = torch.where(valid[:B * N_REC, :, None], tc(cache[HOOK_IN]), cache[HOOK_OUT])
        seen = {}

        def keep_input(act, hook):  # the input hook is read, never replaced
            seen["in"] = act.clone()

        ce = model.run_with_hooks(rec, return_type="loss", loss_per_token=True,
                                  fwd_hooks=[(HOOK_IN, keep_input),
                                             (HOOK_OUT, lambda a, hook: out)])
        assert torch.equal(seen["in"], cache[HOOK_IN])
    ev = 1 - ((y - x_hat) ** 2).sum(1).mean() / np.var(y, axis=0).sum()
    return ev, float(ce.numpy()[valid[:B * N_REC, :-1].numpy()].mean())


def test_core_measures_the_output_hook(tiny_world, transcoders):
    res, _ = _core(transcoders["trained"])
    ev, ce = _by_hand(tiny_world, transcoders["trained"])
    got = res.metrics
    assert got["core.reconstruction_quality.explained_variance"] == pytest.approx(ev, abs=1e-5)
    assert got["core.model_performance_preservation.ce_loss_with_sae"] == pytest.approx(
        ce, abs=1e-5)


def test_skip_transcoder_adds_its_skip_term(tiny_world, transcoders):
    res, _ = _core(transcoders["skip"])
    ev, ce = _by_hand(tiny_world, transcoders["skip"])
    assert res.metrics["core.reconstruction_quality.explained_variance"] == pytest.approx(
        ev, abs=1e-5)
    assert res.metrics["core.model_performance_preservation.ce_loss_with_sae"] == \
        pytest.approx(ce, abs=1e-5)


def test_trained_transcoder_beats_random_init_by_more_than_noise(transcoders):
    ids = ("core.reconstruction_quality.explained_variance",
           "core.model_performance_preservation.ce_loss_score")
    good, _ = _core(transcoders["trained"])
    bad, _ = _core(transcoders["random"])
    for metric in ids:
        gap = good.metrics[metric] - bad.metrics[metric]
        noise = (good.stderr[metric] ** 2 + bad.stderr[metric] ** 2) ** 0.5
        assert gap > 3 * noise, (metric, good.metrics[metric], bad.metrics[metric], noise)


def test_evals_that_splice_at_the_input_are_not_applicable(transcoders):
    from pytest_saebench.evals import get_eval
    from pytest_saebench.evals.absorption import Config as AbsorptionConfig

    runner = make_runner(transcoders["trained"], absorption=AbsorptionConfig())
    res = runner.results(next(iter(runner.checkpoints)))
    absorption = res.evals[get_eval("absorption").EVAL_TYPE_ID]
    assert not absorption.metrics
    reasons = set(absorption.not_computed.values())
    assert len(reasons) == 1 and "does not apply to a transcoder" in reasons.pop()
    assert len(absorption.not_computed) == len(get_eval("absorption").METRICS)


def test_gemma_scope_transcoder_reads_and_writes_its_two_hooks(tiny_world, transcoders,
                                                                tmp_path):
    """Layout of google/gemma-scope-2b-pt-transcoders: layer_N/width_W/average_l0_L/params.npz
    (W_enc, W_dec, b_enc, b_dec, threshold); sae_lens maps it to ln2.hook_normalized ->
    hook_mlp_out. With zero thresholds it is the ReLU transcoder it was made from."""
    from safetensors.torch import load_file

    from pytest_saebench.loading.checkpoints import discover

    w = load_file(str(transcoders["trained"] / "sae_weights.safetensors"))
    folder = tmp_path / "gemma-scope-2b-pt-transcoders" / "layer_0" / "width_16k" / "l0_9"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", threshold=np.zeros(w["W_enc"].shape[1], np.float32),
             **{k: v.numpy() for k, v in w.items()})
    ref = discover(folder)[0]
    assert (ref.format, ref.hook_name, ref.meta["hook_name_out"]) == (
        "Gemma Scope", HOOK_IN, HOOK_OUT)
    assert ref.cfg["architecture"] == "jumprelu_transcoder"
    import dataclasses

    runner = make_runner(folder, model=str(tiny_world.model_dir), dataset=str(tiny_world.corpus),
                         cfg=dataclasses.replace(SMALL, context_size=CONTEXT))
    ours = runner.results(next(iter(runner.checkpoints))).evals["core"].metrics
    theirs, _ = _core(transcoders["trained"])
    for key in ("core.reconstruction_quality.explained_variance",
                "core.model_performance_preservation.ce_loss_score", "core.sparsity.l0"):
        assert ours[key] == pytest.approx(theirs.metrics[key], abs=1e-5), key
