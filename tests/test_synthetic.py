"""Synthetic ground truth: a correctly trained SAE recovers the planted features, a random one
does not; the scores match direct computations; the fixture works without --sae-path."""

from __future__ import annotations

import pytest
import torch

from pytest_saebench import testing as T
from pytest_saebench.synthetic import SyntheticConfig, generate, recovery_scores

CFG = SyntheticConfig(n_features=64, d=32, p_active=0.03, seed=0)


def test_generator_statistics():
    data = generate(CFG, n=20_000)
    assert data.activations.shape == (20_000, 32) and data.codes.shape == (20_000, 64)
    assert torch.allclose(data.features.norm(dim=-1), torch.ones(64))
    assert float((data.codes > 0).float().mean()) == pytest.approx(0.03, rel=0.05)
    assert torch.allclose(data.activations, data.codes @ data.features)
    assert torch.equal(generate(CFG, 100).codes, generate(CFG, 100).codes)


def test_correlation_makes_block_mates_co_fire():
    def co_fire(rho: float) -> float:
        on = (generate(SyntheticConfig(correlation=rho, p_active=0.05), 20_000).codes > 0).float()
        return float((on[:, 0] * on[:, 1]).mean() / (on[:, 0].mean() * on[:, 1].mean()))
    assert co_fire(0.0) == pytest.approx(1.0, abs=0.3)
    assert co_fire(0.8) > 3.0


def test_trained_topk_sae_recovers_planted_features_random_does_not():
    data = generate(CFG, n=20_000)
    random = T.make_sae(32, 128, "topk", k=4, seed=1)
    base = data.score(random)
    sae = T.make_sae(32, 128, "topk", k=4, seed=1)
    T.train_sae(sae, data.activations, steps=1000, l1_coefficient=0.0)
    trained = data.score(sae)
    assert trained["frac_recovered"] > 0.9 and base["frac_recovered"] < 0.1
    assert trained["mean_max_cosine"] > 0.95 > 0.6 > base["mean_max_cosine"]
    assert trained["mcc"] > 0.8 > base["mcc"]


def test_scores_match_a_direct_computation():
    features = torch.eye(4)
    decoder = torch.tensor([[1.0, 0, 0, 0], [0, 0.6, 0.8, 0], [0, 0, 0, -1.0]])
    scores = recovery_scores(features, decoder)
    # best cosines per planted feature: 1, 0.6, 0.8, 0
    assert scores["mean_max_cosine"] == pytest.approx((1 + 0.6 + 0.8 + 0) / 4)
    assert scores["frac_recovered"] == 0.25
    planted = torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]])
    learned = torch.stack([planted[:, 1] * 3, planted[:, 0] * 2 + 5], dim=1)  # swapped, scaled
    assert recovery_scores(torch.eye(2), torch.eye(2), planted, learned)["mcc"] == \
        pytest.approx(1.0)


@pytest.mark.parametrize("synthetic_activations", [{"n_features": 16, "d": 8, "n": 500}],
                         indirect=True)
def test_fixture_is_configurable(synthetic_activations):
    assert synthetic_activations.activations.shape == (500, 8)
    assert synthetic_activations.features.shape == (16, 8)


def test_fixture_needs_no_checkpoint(pytester):
    pytester.makepyfile("""
        def test_it(synthetic_activations):
            assert synthetic_activations.activations.shape == (20000, 64)
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_synthetic_eval_gates_a_checkpoint_without_a_language_model(pytester, tmp_path):
    spec = "synthetic:n_features=64,d=32,p_active=0.03,seed=0"
    meta = {"hook_name": "synthetic", "dataset_path": spec}
    data = generate(CFG, n=20_000)
    sae = T.make_sae(32, 128, "topk", k=4, metadata=meta, seed=1)
    T.make_sae(32, 128, "topk", k=4, metadata=meta, seed=1).save_model(tmp_path / "s" / "random")
    T.train_sae(sae, data.activations, steps=1000, l1_coefficient=0.0)
    sae.save_model(tmp_path / "s" / "trained")
    pytester.makefile(".toml", pyproject="""
[tool.pytest-saebench]
select-evals = ["synthetic"]
[tool.pytest-saebench.thresholds]
"synthetic.recovery.frac_recovered" = { min = 0.9 }
""")
    result = pytester.runpytest(f"--sae-path={tmp_path / 's'}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.re_match_lines([r"^synthetic\.recovery\.frac_recovered = 0 < min 0\.9 "
                                  r"\(sae s/random, suite fast\)$"])


def test_synthetic_metrics_are_not_computed_for_a_language_model_sae(tiny_world):
    from pytest_saebench.evals.synthetic import PRESETS
    from tests.helpers import make_runner

    runner = make_runner(tiny_world.trained, synthetic=PRESETS["fast"])
    res = runner.results("trained", ["synthetic"]).evals["synthetic"]
    assert "not trained on synthetic data" in res.not_computed["synthetic.recovery.mcc"]


def test_bad_synthetic_spec_names_the_field():
    from pytest_saebench.errors import SaebenchError
    from pytest_saebench.evals.synthetic import parse_spec

    assert parse_spec("synthetic:n_features=8,d=4,p_active=0.1", "cfg").p_active == 0.1
    with pytest.raises(SaebenchError, match="cfg: unknown synthetic field 'n_feature' "):
        parse_spec("synthetic:n_feature=8", "cfg")
    with pytest.raises(SaebenchError, match="field 'd' has bad value 'x'"):
        parse_spec("synthetic:d=x", "cfg")
