"""ravel on the shipped gazetteer: prompts, pairs, the intervention against independent
activation patching, and the honest skip on a model that knows no geography."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig

from pytest_saebench import reference
from pytest_saebench.activations import HookSpec
from pytest_saebench.evals import ravel
from pytest_saebench.evals.base import EvalContext
from pytest_saebench.loading.model import load_model
from tests.helpers import make_runner

GOOD = Path(__file__).parents[1] / "example_tests" / "checkpoints" / "good"


@pytest.fixture(scope="module")
def ref_model():
    return load_model(reference.MODEL_NAME, "cpu", "float32")


def test_gazetteer_is_shipped_with_its_notice():
    rows = ravel.load_cities(10_000)
    assert len(rows) == 300 and len({r["city"] for r in rows}) == 300
    assert {r["continent"] for r in rows} >= {"Africa", "Asia", "Europe", "North America"}
    assert {"Tokyo", "Paris", "Cairo"} <= {r["city"] for r in rows}
    notice = (Path(__file__).parents[1] / "NOTICE").read_text()
    assert "GeoNames" in notice and "CC BY 4.0" in notice


def test_prompts_point_at_the_last_city_token(ref_model):
    tok = ref_model.tokenizer
    prompts = ravel.build_prompts(tok, ravel.load_cities(20), prepend_bos=True)
    assert len(prompts) == 20 * sum(len(t) for t in ravel.TEMPLATES.values())
    for p in prompts:
        assert p.tokens[0] == tok.bos_token_id
        assert tok.decode(p.tokens[1:p.entity_pos + 1]).endswith(p.city)
        assert not tok.decode(p.tokens[1:p.entity_pos]).endswith(p.city)
        assert tok.decode([p.answer]).strip() == tok.decode(
            tok(" " + p.value, add_special_tokens=False)["input_ids"][:1]).strip()


def test_pairs_have_the_right_targets(ref_model):
    prompts = ravel.build_prompts(ref_model.tokenizer, ravel.load_cities(60), True)
    pairs = ravel.make_pairs(prompts, "country", 40, np.random.default_rng(0))
    cause = [x for x in pairs if x[3]]
    isolation = [x for x in pairs if not x[3]]
    assert len(cause) == 40 and 0 < len(isolation) <= 40
    for base, source, target, is_cause in pairs:
        assert base.answer != source.answer and base.city != source.city
        assert base.attribute == source.attribute
        if is_cause:
            assert base.attribute == "country" and target == source.answer
        else:
            assert base.attribute != "country" and target == base.answer


def _lossless_sae(d: int) -> StandardSAE:
    """enc(x) = [relu(x), relu(-x)], dec = identity on the difference: exact reconstruction."""
    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_full_mask_equals_independent_activation_patching(ref_model):
    hook = HookSpec("blocks.1.hook_resid_post", 1)
    loaded = type("L", (), {"sae": _lossless_sae(ref_model.cfg.d_model), "hook": hook,
                            "d_sae": 2 * ref_model.cfg.d_model})()
    ctx = EvalContext(loaded=loaded, model=ref_model, tokens=None, device="cpu", seed=0,
                      special_ids=frozenset())
    prompts = ravel.build_prompts(ref_model.tokenizer, ravel.load_cities(8), True)
    pairs = ravel.make_pairs(prompts, "country", 4, np.random.default_rng(1))[:4]
    pad = ref_model.tokenizer.pad_token_id
    with torch.no_grad():
        got = ravel._intervened_logits(ctx, pairs, torch.ones(2 * ref_model.cfg.d_model), pad)
        for row, (base, source, _, _) in enumerate(pairs):
            _, cache = ref_model.run_with_cache(torch.tensor([source.tokens]))
            patch = cache[hook.name][0, source.entity_pos]

            def put(act, hook, at=base.entity_pos, value=patch):
                act[0, at] = value
                return act

            want = ref_model.run_with_hooks(torch.tensor([base.tokens]),
                                            fwd_hooks=[(hook.name, put)])[0, -1]
            torch.testing.assert_close(got[row], want, atol=1e-4, rtol=1e-4)
        # mask 0 with a lossless SAE leaves the base prompt as it was
        clean = ravel._intervened_logits(ctx, pairs, torch.zeros(2 * ref_model.cfg.d_model), pad)
        want = ref_model(torch.tensor([pairs[0][0].tokens]))[0, -1]
        torch.testing.assert_close(clean[0], want, atol=1e-4, rtol=1e-4)


def test_a_model_without_geography_is_not_scored():
    cfg = dataclasses.replace(ravel.PRESETS["fast"], top_n_entities=40)
    runner = make_runner(GOOD, ravel=cfg)
    res = runner.results(next(iter(runner.checkpoints)), evals=["ravel"]).evals["ravel"]
    assert res.metrics[ravel.IDS["disentanglement_score"]] is None
    assert "knows too little" in res.reasons[ravel.IDS["disentanglement_score"]]
    know = res.unstructured["knowledge"]
    assert set(know) == {"country", "continent"} and know["country"]["prompts"] == 80
