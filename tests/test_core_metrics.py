"""Each core metric against an independent computation (full forwards with hooks, numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sae_lens import SAE

from pytest_saebench.loading.data import load_text_dataset, token_windows
from pytest_saebench.loading.model import load_local_model
from tests.conftest import CONTEXT, HOOK
from tests.helpers import SMALL, run_core

B, N_REC, N_VAR = SMALL.batch_size_prompts, SMALL.n_eval_reconstruction_batches, \
    SMALL.n_eval_sparsity_variance_batches


def _reference(world, sae_dir, seed=42):
    """Every core number recomputed from scratch; the SAE is folded by sae_lens itself, as
    activation metrics are defined on the folded SAE (METRICS.md §0.4)."""
    model = load_local_model(world.model_dir, "cpu", "float32")
    sae = SAE.load_from_disk(str(sae_dir), fold_W_dec_norm=True)
    ds = load_text_dataset(str(world.corpus))
    tokens = token_windows(model.tokenizer, ds, B * (N_REC + N_VAR), CONTEXT, True, seed)
    special = torch.tensor([model.tokenizer.bos_token_id])
    valid = ~torch.isin(tokens, special)
    rec = tokens[: B * N_REC]
    out = {}
    with torch.no_grad():
        _, cache = model.run_with_cache(rec, names_filter=HOOK)
        act = cache[HOOK]
        recon = sae.decode(sae.encode(act))
        recon = torch.where(valid[: B * N_REC, :, None], recon, act)

        def spliced(new):
            return model.run_with_hooks(rec, return_type="loss", loss_per_token=True,
                                        fwd_hooks=[(HOOK, lambda a, hook: new)])

        def logits_with(new):
            return model.run_with_hooks(rec, fwd_hooks=[(HOOK, lambda a, hook: new)])

        ce_mask = valid[: B * N_REC, :-1].numpy()
        clean_ce = model(rec, return_type="loss", loss_per_token=True).numpy()
        sae_ce = spliced(recon).numpy()
        abl_ce = spliced(torch.zeros_like(act)).numpy()
        out["ce_clean"] = clean_ce[ce_mask].mean()
        out["ce_sae"] = sae_ce[ce_mask].mean()
        out["ce_abl"] = abl_ce[ce_mask].mean()
        lp = model(rec).log_softmax(-1)
        kl_mask = valid[: B * N_REC].numpy()
        for name, new in (("sae", recon), ("abl", torch.zeros_like(act))):
            lq = logits_with(new).log_softmax(-1)
            kl = torch.nn.functional.kl_div(lq, lp, log_target=True, reduction="none").sum(-1)
            out[f"kl_{name}"] = kl.numpy()[kl_mask].mean()

        var_tokens = tokens[B * N_REC:]
        var_valid = valid[B * N_REC:]
        xs, xhs, fs, batch_of, window_of = [], [], [], [], []
        for b in range(N_VAR):
            t = var_tokens[b * B:(b + 1) * B]
            _, cache = model.run_with_cache(t, names_filter=HOOK)
            a = cache[HOOK]
            f = sae.encode(a)
            m = var_valid[b * B:(b + 1) * B]
            xs.append(a[m].double().numpy())
            xhs.append(sae.decode(f)[m].double().numpy())
            fs.append(f[m].double().numpy())
            batch_of += [b] * int(m.sum())
            window_of += (torch.arange(B)[:, None].expand_as(m)[m] + b * B).tolist()
    x, xh, f = np.concatenate(xs), np.concatenate(xhs), np.concatenate(fs)
    batch_of, window_of = np.array(batch_of), np.array(window_of)
    err = ((x - xh) ** 2).sum(1)
    out["ev"] = 1 - err.mean() / np.var(x, axis=0).sum()
    legacy, rrb, s_b, m_b, r_b, err_nb = [], [], [], [], [], []
    for b in range(N_VAR):
        sel = batch_of == b
        xb, xhb = x[sel], xh[sel]
        eb = ((xb - xhb) ** 2).sum(1)
        legacy.append(1 - eb / ((xb - xb.mean(0)) ** 2).sum(1))
        rrb.append((xhb ** 2).sum(1).mean() / (xb * xhb).sum(1).mean())
        s_b.append((xb ** 2).sum(1).mean())
        m_b.append((xb ** 2).mean(0).mean())
        r_b.append(eb.mean())
        err_nb.append(eb / sel.sum())
    out["legacy"] = np.concatenate(legacy).mean()
    out["rrb"] = np.mean(rrb)
    out["ev_v06"] = 1 - np.mean(r_b) / (np.mean(s_b) - np.mean(m_b) ** 2)
    out["mse"] = err.mean()
    out["mse_v06"] = np.concatenate(err_nb).mean()
    nx, nxh = np.linalg.norm(x, axis=1), np.linalg.norm(xh, axis=1)
    out["cossim"] = ((x * xh).sum(1) / (nx * nxh)).mean()
    out["l2_in"], out["l2_out"] = nx.mean(), nxh.mean()
    out["l2_ratio"] = (nxh / nx).mean()
    out["l0"] = (f != 0).sum(1).mean()
    out["l1"] = f.sum(1).mean()
    density = (f != 0).mean(0)
    out["density"] = density
    prompts = np.array([len(set(window_of[f[:, j] != 0])) for j in range(f.shape[1])])
    out["cah"] = np.where(prompts > 0, (f != 0).sum(0) / np.maximum(prompts, 1), np.nan)
    w_dec = sae.W_dec.detach().double().numpy()
    w_dec = w_dec / np.linalg.norm(w_dec, axis=1, keepdims=True)
    w_enc = sae.W_enc.detach().double().numpy().T
    for name, rows in (("enc", w_enc), ("dec", w_dec)):
        unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        gram = unit @ unit.T
        np.fill_diagonal(gram, -np.inf)
        out[f"max_{name}_cos"] = gram.max(1)
    return out


@pytest.fixture(scope="module")
def computed(tiny_world):
    """Our core result and the reference numbers for the trained SAE."""
    return run_core(tiny_world.trained), _reference(tiny_world, tiny_world.trained)


CASES = {
    "core.model_performance_preservation.ce_loss_without_sae": lambda r: r["ce_clean"],
    "core.model_performance_preservation.ce_loss_with_sae": lambda r: r["ce_sae"],
    "core.model_performance_preservation.ce_loss_with_ablation": lambda r: r["ce_abl"],
    "core.model_performance_preservation.ce_loss_increase": lambda r: r["ce_sae"] - r["ce_clean"],
    "core.model_performance_preservation.ce_loss_score":
        lambda r: (r["ce_abl"] - r["ce_sae"]) / (r["ce_abl"] - r["ce_clean"]),
    "core.model_behavior_preservation.kl_div_with_sae": lambda r: r["kl_sae"],
    "core.model_behavior_preservation.kl_div_with_ablation": lambda r: r["kl_abl"],
    "core.model_behavior_preservation.kl_div_score":
        lambda r: (r["kl_abl"] - r["kl_sae"]) / r["kl_abl"],
    "core.reconstruction_quality.explained_variance": lambda r: r["ev"],
    "core.reconstruction_quality.explained_variance_legacy": lambda r: r["legacy"],
    "core.reconstruction_quality.explained_variance_saebench_v0_6": lambda r: r["ev_v06"],
    "core.reconstruction_quality.mse": lambda r: r["mse"],
    "core.reconstruction_quality.mse_saebench_v0_6": lambda r: r["mse_v06"],
    "core.reconstruction_quality.cossim": lambda r: r["cossim"],
    "core.shrinkage.l2_norm_in": lambda r: r["l2_in"],
    "core.shrinkage.l2_norm_out": lambda r: r["l2_out"],
    "core.shrinkage.l2_ratio": lambda r: r["l2_ratio"],
    "core.shrinkage.relative_reconstruction_bias": lambda r: r["rrb"],
    "core.sparsity.l0": lambda r: r["l0"],
    "core.sparsity.l1": lambda r: r["l1"],
    "core.misc_metrics.frac_alive": lambda r: (r["density"] > 0).mean(),
    "core.misc_metrics.frac_dead": lambda r: (r["density"] == 0).mean(),
    "core.misc_metrics.freq_over_1_percent": lambda r: (r["density"] > 0.01).mean(),
    "core.misc_metrics.freq_over_10_percent": lambda r: (r["density"] > 0.1).mean(),
    "core.misc_metrics.normalized_freq_over_1_percent":
        lambda r: r["density"][r["density"] > 0.01].sum() / r["density"].sum(),
    "core.misc_metrics.normalized_freq_over_10_percent":
        lambda r: r["density"][r["density"] > 0.1].sum() / r["density"].sum(),
    "core.misc_metrics.median_log10_feature_density":
        lambda r: np.median(np.log10(r["density"][r["density"] > 0])),
    "core.misc_metrics.average_max_encoder_cosine_sim": lambda r: r["max_enc_cos"].mean(),
    "core.misc_metrics.average_max_decoder_cosine_sim": lambda r: r["max_dec_cos"].mean(),
    "core.misc_metrics.frac_duplicate_latents": lambda r: (r["max_dec_cos"] > 0.99).mean(),
    "core.token_stats.total_tokens_eval_reconstruction": lambda r: B * N_REC * CONTEXT,
    "core.token_stats.total_tokens_eval_sparsity_variance": lambda r: B * N_VAR * CONTEXT,
}


@pytest.mark.parametrize("metric", list(CASES))
def test_metric_matches_independent_computation(computed, metric):
    ours, ref = computed
    expected = float(CASES[metric](ref))
    assert ours.metrics[metric] == pytest.approx(expected, rel=2e-4, abs=2e-5), metric


def test_every_core_metric_is_checked(computed):
    from pytest_saebench.evals.core import METRICS

    unchecked = {m.id for m in METRICS} - set(CASES) - {
        "core.misc_metrics.decoder_norm_max_deviation"}
    assert not unchecked


def test_per_latent_details(computed):
    ours, ref = computed
    density = np.array([d["feature_density"] for d in ours.details])
    np.testing.assert_allclose(density, ref["density"], atol=1e-9)
    cah = np.array([np.nan if d["consistent_activation_heuristic"] is None
                    else d["consistent_activation_heuristic"] for d in ours.details])
    np.testing.assert_allclose(cah, ref["cah"], rtol=1e-6)
    dec = np.array([d["max_decoder_cosine_sim"] for d in ours.details])
    np.testing.assert_allclose(dec, ref["max_dec_cos"], atol=1e-5)


def test_standard_errors_are_positive_and_small(computed):
    ours, _ = computed
    for metric in ("core.reconstruction_quality.explained_variance", "core.sparsity.l0",
                   "core.model_performance_preservation.ce_loss_score"):
        se = ours.stderr[metric]
        assert 0 < se < abs(ours.metrics[metric]), metric


@pytest.mark.parametrize("gated", [False, True])
def test_the_transposed_weight_layout_changes_no_bit_and_no_cache_key(gated):
    """activations.transposed_layout (the runner's models) moves the unembedding's and a
    gated MLP's weights so TransformerLens stops copying them per call: same logits, bit for
    bit, and the same fingerprint, so no cache entry changes."""
    from dataclasses import replace

    from transformer_lens import HookedTransformer

    from pytest_saebench.activations import transposed_layout
    from pytest_saebench.cache import model_fingerprint
    from pytest_saebench.testing import tiny_model_config

    cfg = tiny_model_config(97)
    model = HookedTransformer(replace(cfg, gated_mlp=gated, act_fn="silu") if gated else cfg)
    tokens = torch.randint(0, 97, (3, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before, key = model(tokens), model_fingerprint(model)
        assert transposed_layout(model) == (1 + 3 * cfg.n_layers if gated else 1)
        assert model.W_U.T.is_contiguous() and transposed_layout(model) == 0  # idempotent
        assert torch.equal(model(tokens), before) and model_fingerprint(model) == key
