"""The properties eval: every property fails on a deliberately broken SAE, with a shrunk
counterexample, and holds on trained SAEs."""

from __future__ import annotations

import pytest
import torch

from pytest_saebench import testing as T
from pytest_saebench.evals import properties as P
from tests.conftest import SMALL_PYPROJECT
from tests.helpers import make_runner

D_IN, D_SAE = 16, 64
CFG = P.Config(max_examples=40)


def _inputs() -> P.Inputs:
    return P.Inputs(torch.randn(20, D_IN, generator=torch.Generator().manual_seed(0)), 0)


def _verdicts(sae, k=None) -> dict[str, str | None]:
    strategy = P.rows_strategy(20, CFG.max_rows)
    return {name: P.search(fn, strategy, CFG)
            for name, fn in P.checks(sae, _inputs(), CFG, k).items()}


def test_a_correct_sae_satisfies_every_property():
    sae = T.make_sae(D_IN, D_SAE, "topk", k=4, seed=1)
    assert _verdicts(sae, k=4) == {"shapes_and_dtypes": None, "finite_outputs": None,
                                   "batch_invariance": None, "determinism": None,
                                   "respects_k": None}
    assert P.static_checks(sae, promise_unit=True, k=4) == {"decoder_rows": None,
                                                              "zero_input": None}


def test_wrong_k_is_caught():
    sae = T.make_sae(D_IN, D_SAE, "topk", k=4, seed=1)
    sae.cfg.k = 4
    sae.encode = lambda x: _topk_codes(sae, x, 6)  # claims k=4, keeps 6
    why = _verdicts(sae, k=4)["respects_k"]
    assert why.startswith("counterexample (shrunk) [") and "6 active latents > k = 4" in why


def _topk_codes(sae, x: torch.Tensor, keep: int) -> torch.Tensor:
    pre = x @ sae.W_enc + sae.b_enc
    vals, idx = pre.topk(keep, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu() + 1e-3)


def test_overflow_to_inf_is_caught_at_the_smallest_scale():
    sae = T.make_sae(D_IN, D_SAE, "standard", seed=1)
    with torch.no_grad():
        sae.W_enc.mul_(1e36)
    why = _verdicts(sae)["finite_outputs"]
    assert "non-finite" in why
    assert "x 10 " in why + " " or "x 10000" in why  # only large inputs overflow
    assert "x 1 " not in why + " "


def test_batch_dependent_encoder_is_caught_with_two_rows():
    sae = T.make_sae(D_IN, D_SAE, "standard", seed=1)
    base = sae.encode
    sae.encode = lambda x: base(x - x.mean(0, keepdim=True))  # batch-norm-like leak
    why = _verdicts(sae)["batch_invariance"]
    assert why is not None and "max |batch - row alone|" in why
    shrunk = why.split(": max", 1)[0]
    assert shrunk.count(" x ") == 2  # the minimal batch: two rows


def test_nondeterministic_encoder_is_caught():
    sae = T.make_sae(D_IN, D_SAE, "standard", seed=1)
    base = sae.encode
    sae.encode = lambda x: base(x + 1e-3 * torch.randn_like(x))
    assert "max |difference|" in _verdicts(sae)["determinism"]


def test_weight_properties():
    sae = T.make_sae(D_IN, D_SAE, "jumprelu", seed=1)
    with torch.no_grad():
        sae.threshold.fill_(0.1)
        sae.threshold[3] = -0.5
        sae.W_dec[5] = 0
    found = P.static_checks(sae, promise_unit=False, k=None)
    assert "1 negative threshold(s), min -0.5" in found["thresholds_nonnegative"]
    assert "1 decoder row(s) zero or non-finite, e.g. latent 5" in found["decoder_rows"]
    dense = T.make_sae(D_IN, D_SAE, "topk", k=4, seed=1)
    dense.encode = lambda x: _topk_codes(dense, x + 1.0, 8)
    assert "encode(0) has 8 active latents > k = 4" in P.static_checks(dense, False, 4)[
        "zero_input"]


@pytest.mark.parametrize("name", ["trained", "topk"])
def test_trained_saes_satisfy_all_applicable_properties(tiny_world, name):
    runner = make_runner(getattr(tiny_world, name), properties=P.PRESETS["fast"])
    res = runner.results(name, ["properties"]).evals["properties"]
    computed = {m: v for m, v in res.metrics.items() if m not in res.not_computed}
    assert computed and all(v == 1.0 for v in computed.values()), res.reasons
    applies = "properties.checks.respects_k" not in res.not_computed
    assert applies == (name == "topk")


def test_violated_property_is_a_default_gate_with_the_counterexample(pytester, tiny_world,
                                                                      tmp_path):
    d_model = _width(tiny_world)
    sae = T.make_sae(d_model, 32, "jumprelu", metadata=tiny_world.metadata(), seed=1)
    with torch.no_grad():
        sae.threshold.fill_(0.05)
        sae.threshold[0] = -1.0
    sae.save_model(tmp_path / "neg")
    pytester.makefile(".toml", pyproject=SMALL_PYPROJECT.replace('["core"]',
                                                                 '["core", "properties"]'))
    result = pytester.runpytest(f"--sae-path={tmp_path / 'neg'}", "-v")
    result.stdout.fnmatch_lines([
        "*saebench::threshold[[]neg::properties.checks.determinism[]] PASSED*",
        "*saebench::threshold[[]neg::properties.checks.respects_k[]] SKIPPED*",
        "properties.checks.thresholds_nonnegative = 0 < min 1 (sae neg, suite fast): "
        "1 negative threshold(s), min -1"])
    result.assert_outcomes(passed=7, failed=1, skipped=1)


def _width(world) -> int:
    from pytest_saebench.loading.model import load_local_model

    return load_local_model(world.model_dir, "cpu", "float32").cfg.d_model

