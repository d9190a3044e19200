"""unlearning: the skip that names what is missing, latent selection, the clamping hook
against an independent computation, the score rule, and the sweep on user-supplied files."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pytest
import torch
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig

from pytest_saebench import reference
from pytest_saebench.evals import unlearning as ul
from tests.helpers import make_runner

GOOD = Path(__file__).parents[1] / "example_tests" / "checkpoints" / "good"


def _run(cfg: ul.Config):
    runner = make_runner(GOOD, unlearning=cfg)
    return runner.results(next(iter(runner.checkpoints)), evals=["unlearning"]).evals["unlearning"]


def test_without_data_it_says_exactly_what_is_missing():
    res = _run(ul.PRESETS["fast"])
    why = res.not_computed[ul.SCORE]
    for needed in ("forget_corpus", "wmdp_questions", "mmlu_questions",
                   "instruction-tuned model (got 'saebench-reference')"):
        assert needed in why
    assert res.metrics == {}


def test_latents_are_ranked_by_forget_frequency_below_the_retain_threshold():
    forget = torch.tensor([0.5, 0.9, 0.1, 0.7, 0.0], dtype=torch.float64)
    retain = torch.tensor([0.0, 0.2, 0.0, 0.001, 0.0], dtype=torch.float64)
    assert ul.select_latents(forget, retain, 0.01, 2) == [3, 0]
    assert ul.select_latents(forget, retain, 0.001, 10) == [0, 2, 4]


def test_score_uses_only_settings_that_keep_general_knowledge():
    settings = [{"wmdp_accuracy": 0.2, "mmlu_accuracy": 0.9},
                {"wmdp_accuracy": 0.6, "mmlu_accuracy": 1.0},
                {"wmdp_accuracy": 0.7, "mmlu_accuracy": 0.995}]
    assert ul.unlearning_score(settings, 0.99) == pytest.approx(0.4)
    assert ul.unlearning_score(settings[:1], 0.99) == 0.0


def test_clamp_hook_changes_only_the_chosen_firing_latents():
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=6, d_sae=10))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    x = torch.randn(2, 5, 6)
    untouched = ul.clamp_hook(sae, [], 50.0, zero_bos=True)(x.clone(), None)
    torch.testing.assert_close(untouched, x)
    codes = sae.encode(x)
    fired = [i for i in range(10) if (codes[..., i] > 0).any()][:2]
    out = ul.clamp_hook(sae, fired, 50.0, zero_bos=False)(x.clone(), None)
    delta = torch.zeros_like(codes)
    for i in fired:
        delta[..., i] = torch.where(codes[..., i] > 0, -50.0 - codes[..., i], 0.0)
    torch.testing.assert_close(out, x + delta @ sae.W_dec, atol=1e-4, rtol=1e-4)


def _write_inputs(tmp_path: Path) -> dict[str, str]:
    with gzip.open(reference.CORPUS_DIR / "heldout.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh]
    forget = tmp_path / "forget.jsonl"
    forget.write_text("\n".join(json.dumps({"text": r["text"]}) for r in rows
                                if r["source"] == "kjv"))
    questions = [{"question": f"Which word comes after {w}?", "choices": [w, "and", "of", "the"],
                  "answer": i % 4} for i, w in enumerate(["light", "water", "earth", "king"])]
    for name in ("wmdp", "mmlu"):
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(q) for q in questions))
    return {"forget_corpus": str(forget), "wmdp_questions": str(tmp_path / "wmdp.jsonl"),
            "mmlu_questions": str(tmp_path / "mmlu.jsonl")}


def test_sweep_runs_on_supplied_files(tmp_path, monkeypatch):
    paths = _write_inputs(tmp_path)
    cfg = dataclasses.replace(ul.PRESETS["fast"], dataset_size=8, seq_len=64,
                              allow_base_model=True, multipliers=(25.0, 200.0), **paths)
    honest = _run(cfg)  # the tiny model cannot answer under all 24 orders: said, not faked
    assert honest.metrics[ul.SCORE] is None
    assert "24 choice orders" in honest.reasons[ul.SCORE]
    monkeypatch.setattr(ul, "robust_questions", lambda ctx, rows, batch: rows)
    res = _run(cfg)
    settings = res.unstructured["settings"]
    assert len(settings) == 2 * 2 * 2
    assert all(len(s["latents"]) == s["n_features"] for s in settings)
    assert res.metrics[ul.SCORE] == pytest.approx(ul.unlearning_score(settings, 0.99))


def test_questions_go_through_the_chat_template_when_there_is_one():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(reference.MODEL_DIR)
    row = {"question": "Which is a bird?", "choices": ["oak", "lark", "salt", "iron"],
           "answer": 1}
    plain = tok.decode(ul.mcq_prompt(tok, row, (1, 0, 2, 3)))
    assert plain == "Which is a bird?\nA. lark\nB. oak\nC. salt\nD. iron\nAnswer:"
    tok.chat_template = ("{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}"
                         "{% if add_generation_prompt %}<bot>{% endif %}")
    ids = ul.mcq_prompt(tok, row, (1, 0, 2, 3))
    assert all(isinstance(i, int) for i in ids)
    assert tok.decode(ids) == f"<user>{plain}</user><bot>"
