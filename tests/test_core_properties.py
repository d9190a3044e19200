"""Formula-pinning cases (METRICS.md §13.4), determinism, architectures, trained vs random."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from sae_lens import SAE

from pytest_saebench import testing as T
from pytest_saebench.loading.checkpoints import discover
from pytest_saebench.loading.data import load_text_dataset, token_windows
from pytest_saebench.loading.model import load_local_model, save_local_model
from pytest_saebench.loading.sae import load_sae
from tests.conftest import CONTEXT
from tests.helpers import SMALL, run_core

EV = "core.reconstruction_quality.explained_variance"
CE_SCORE = "core.model_performance_preservation.ce_loss_score"


def _identity_sae(world, scale: float = 1.0) -> SAE:
    """x -> [relu(x), relu(-x)] -> scale * x: a perfect (or uniformly shrunk) SAE."""
    d = load_local_model(world.model_dir, "cpu", "float32").cfg.d_model
    sae = T.make_sae(d, 2 * d, "standard", metadata=world.metadata())
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0) * scale)
    return sae


def test_perfect_reconstruction(tiny_world, tmp_path):
    _identity_sae(tiny_world).save_model(tmp_path / "perfect")
    m = run_core(tmp_path / "perfect").metrics
    assert m[EV] == pytest.approx(1, abs=1e-6)
    assert m["core.reconstruction_quality.explained_variance_legacy"] == pytest.approx(1, abs=1e-6)
    assert m["core.reconstruction_quality.cossim"] == pytest.approx(1, abs=1e-6)
    assert m["core.reconstruction_quality.mse"] == pytest.approx(0, abs=1e-8)
    assert m["core.shrinkage.l2_ratio"] == pytest.approx(1, abs=1e-6)
    assert m[CE_SCORE] == pytest.approx(1, abs=1e-5)
    assert m["core.model_behavior_preservation.kl_div_score"] == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("scale", [0.5, 0.8])
def test_shrinkage_scales_exactly(tiny_world, tmp_path, scale):
    _identity_sae(tiny_world, scale).save_model(tmp_path / "shrunk")
    m = run_core(tmp_path / "shrunk").metrics
    assert m["core.shrinkage.l2_ratio"] == pytest.approx(scale, rel=1e-5)
    assert m["core.shrinkage.relative_reconstruction_bias"] == pytest.approx(scale, rel=1e-5)


def test_predicting_the_mean_explains_nothing(tiny_world, tmp_path):
    model = load_local_model(tiny_world.model_dir, "cpu", "float32")
    cfg = dataclasses.replace(SMALL, n_eval_reconstruction_batches=0)
    ds = load_text_dataset(str(tiny_world.corpus))
    n = cfg.batch_size_prompts * cfg.n_eval_sparsity_variance_batches
    tokens = token_windows(model.tokenizer, ds, n, CONTEXT, True, 42)
    acts = T.collect_activations(model, tokens, "blocks.0.hook_resid_post", 0)
    valid = (tokens != model.tokenizer.bos_token_id).flatten()
    sae = T.make_sae(model.cfg.d_model, 16, "standard", metadata=tiny_world.metadata())
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_dec.copy_(acts[valid].double().mean(0).float())
    sae.save_model(tmp_path / "mean")
    m = run_core(tmp_path / "mean", cfg=cfg).metrics
    assert m[EV] == pytest.approx(0, abs=1e-5)
    assert m["core.sparsity.l0"] == 0
    assert m["core.misc_metrics.frac_alive"] == 0
    assert m["core.misc_metrics.median_log10_feature_density"] is None


def test_mse_is_batch_invariant_and_legacy_mse_is_not(tiny_world):
    small = dataclasses.replace(SMALL, n_eval_reconstruction_batches=0,
                                batch_size_prompts=4, n_eval_sparsity_variance_batches=4)
    big = dataclasses.replace(small, batch_size_prompts=8, n_eval_sparsity_variance_batches=2)
    a, b = run_core(tiny_world.trained, cfg=small), run_core(tiny_world.trained, cfg=big)
    key = "core.reconstruction_quality.mse"
    assert a.metrics[key] == pytest.approx(b.metrics[key], rel=1e-6)
    ratio = a.metrics[f"{key}_saebench_v0_6"] / b.metrics[f"{key}_saebench_v0_6"]
    assert ratio == pytest.approx(2, rel=0.05)


def test_ce_score_is_null_when_ablation_does_not_hurt(tiny_world, tmp_path):
    model = load_local_model(tiny_world.model_dir, "cpu", "float32")
    with torch.no_grad():
        model.W_U.zero_()
        model.b_U.zero_()
    save_local_model(model, tmp_path / "flat_model")
    meta = tiny_world.metadata(model_name=str(tmp_path / "flat_model"))
    T.make_sae(model.cfg.d_model, 32, "standard", metadata=meta).save_model(tmp_path / "sae")
    res = run_core(tmp_path / "sae")
    assert res.metrics[CE_SCORE] is None
    assert "zero-ablation does not increase loss" in res.reasons[CE_SCORE]
    assert res.metrics["core.model_behavior_preservation.kl_div_score"] is None


def test_duplicated_decoder_row(tiny_world, tmp_path):
    sae = SAE.load_from_disk(str(tiny_world.trained))
    with torch.no_grad():
        sae.W_dec[1] = sae.W_dec[0] * 2
    sae.save_model(tmp_path / "dup")
    res = run_core(tmp_path / "dup")
    details = {d["index"]: d for d in res.details}
    assert details[0]["max_decoder_cosine_sim"] == pytest.approx(1, abs=1e-6)
    assert details[1]["max_decoder_cosine_sim"] == pytest.approx(1, abs=1e-6)
    assert res.metrics["core.misc_metrics.frac_duplicate_latents"] >= 2 / 128


def test_trained_sae_beats_random(tiny_world):
    trained, rand = run_core(tiny_world.trained).metrics, run_core(tiny_world.random).metrics
    assert trained[EV] > 0.8 > rand[EV] + 0.3
    assert trained[CE_SCORE] > 0.9
    assert trained[CE_SCORE] > rand[CE_SCORE] + 0.05


def test_same_seed_same_numbers_other_seed_other_tokens(tiny_world):
    first = run_core(tiny_world.trained, seed=7)
    again = run_core(tiny_world.trained, seed=7)
    other = run_core(tiny_world.trained, seed=8)
    assert first.metrics == again.metrics
    assert first.stderr == again.stderr
    assert first.metrics[EV] != other.metrics[EV]


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu", "gated"])
def test_architectures_load_fold_and_evaluate(tiny_world, tmp_path, arch):
    d = 64
    sae = T.make_sae(d, 96, arch, k=6, metadata=tiny_world.metadata(), seed=3)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 96)[:, None])  # non-unit decoder rows
        if arch == "jumprelu":
            sae.threshold.fill_(0.05)
    sae.save_model(tmp_path / arch)
    loaded = load_sae(discover(tmp_path / arch)[0], "cpu")
    x = torch.randn(50, d)
    with torch.no_grad():
        expected = sae.decode(sae.encode(x))
        got = loaded.sae.decode(loaded.sae.encode(x))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert loaded.folded == (arch != "topk")  # TopK without rescaling must stay unfolded
    assert loaded.decoder_norm_max_deviation == pytest.approx(1.0, abs=1e-5)
    if loaded.folded:
        norms = loaded.sae.W_dec.norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
    m = run_core(tmp_path / arch).metrics
    assert m[EV] is not None
    if arch == "topk":
        assert m["core.sparsity.l0"] == pytest.approx(6, abs=1e-6)


def test_trained_topk_checkpoint(tiny_world):
    m = run_core(tiny_world.topk).metrics
    assert m["core.sparsity.l0"] == pytest.approx(8, abs=1e-6)
    assert m[EV] > 0.7


def test_standard_errors_shrink_as_the_token_budget_grows(tiny_world):
    from tests.helpers import SMALL, run_core

    small = run_core(tiny_world.trained, SMALL).stderr
    big_cfg = dataclasses.replace(SMALL, n_eval_reconstruction_batches=8,
                                  n_eval_sparsity_variance_batches=16)  # 4x the contexts
    big = run_core(tiny_world.trained, big_cfg).stderr
    for metric in ("core.reconstruction_quality.explained_variance", "core.sparsity.l0",
                   "core.model_performance_preservation.ce_loss_with_sae",
                   "core.model_behavior_preservation.kl_div_with_sae"):
        # 4x the data: about half the standard error (allow sampling slack)
        assert big[metric] < 0.8 * small[metric], (metric, small[metric], big[metric])


def test_repeats_report_mean_standard_error_and_spread(tiny_world):
    import statistics

    from tests.helpers import SMALL, make_runner, run_core

    ev = "core.reconstruction_quality.explained_variance"
    singles = [run_core(tiny_world.trained, SMALL, seed=s).metrics[ev] for s in (42, 43, 44)]
    assert len(set(singles)) == 3  # other seeds, other tokens
    runner = make_runner(tiny_world.trained)
    runner.settings = dataclasses.replace(runner.settings, repeats=3)
    res = runner.results("trained").evals["core"]
    assert res.metrics[ev] == pytest.approx(statistics.mean(singles), rel=1e-12)
    assert res.stderr[ev] == pytest.approx(statistics.stdev(singles) / 3 ** 0.5, rel=1e-9)
    repeats = res.unstructured["repeats"]
    assert repeats["seeds"] == [42, 43, 44] and repeats["values"][ev] == singles
    assert repeats["range"][ev] == pytest.approx(max(singles) - min(singles))
    assert res.config["random_seed"] == [42, 43, 44] and res.config["repeats"] == 3


def test_repeats_option_through_the_plugin(pytester, tiny_world):
    from tests.conftest import SMALL_PYPROJECT

    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT)
    result = pytester.runpytest(f"--sae-path={tiny_world.trained}", "--saebench-repeats=2")
    result.assert_outcomes(passed=1)
    import json

    data = json.loads((pytester.path / "saebench-results.json").read_text())
    core = data["saes"]["trained"]["evals"]["core"]
    assert core["eval_config"]["repeats"] == 2
    assert core["eval_result_unstructured"]["repeats"]["seeds"] == [42, 43]
    bad = pytester.runpytest(f"--sae-path={tiny_world.trained}", "--saebench-repeats=0")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
