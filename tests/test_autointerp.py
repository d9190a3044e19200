"""autointerp: example selection and parsing, the no-judge skip, and a scripted judge over
HTTP on loopback that tells the trained example SAE from a random one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_saebench.evals import autointerp as ai
from pytest_saebench.evals import autointerp_examples as ex
from pytest_saebench.judge import NO_JUDGE, JudgeError, OpenAICompatibleJudge, resolve_judge
from tests.helpers import make_runner, random_sae_like
from tests.judges import ScriptedJudge, judge_server

GOOD = Path(__file__).parents[1] / "example_tests" / "checkpoints" / "good"
SMALL = ai.Config(n_latents=200, total_tokens=80_000, llm_context_size=64)


@given(st.sets(st.integers(1, 14)), st.sampled_from([", ", ",", " , "]), st.booleans())
def test_prediction_lists_parse_back(picked, sep, with_and):
    items = [str(i) for i in sorted(picked)]
    text = sep.join(items[:-1]) + (" and " if with_and else sep) + items[-1] if len(
        items) > 1 else "".join(items)
    assert ex.parse_prediction((text or "None") + ".", 14) == picked


@pytest.mark.parametrize("reply", ["1, two", "0", "15", "1; 2", "yes"])
def test_unparsable_predictions_are_none(reply):
    assert ex.parse_prediction(reply, 14) is None


def test_explanation_is_the_text_after_the_last_activates_on():
    reply = "Hmm. This neuron activates on X. Final: this neuron activates on dates and years."
    assert ex.parse_explanation(reply) == "dates and years"
    assert ex.parse_explanation("  numbers ") == "numbers"


def test_detection_score_counts_agreement():
    assert ex.detection_score({1, 3}, [True, False, True, False]) == 1.0
    assert ex.detection_score(set(), [True, False, True, False]) == 0.5


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.integers(1, 4))
def test_top_windows_are_whole_distinct_and_largest(seed, n, buffer):
    g = torch.Generator().manual_seed(seed)
    acts = torch.rand(6, 24, generator=g) * (torch.rand(6, 24, generator=g) > 0.6)
    picked = ex.top_positions(acts, n, buffer)
    for i, (s, p) in enumerate(picked):
        assert buffer <= p < 24 - buffer and acts[s, p] > 0
        assert all(s != s2 or abs(p - p2) > buffer for s2, p2 in picked[i + 1:])
    if picked:  # the first pick is the global maximum over whole windows
        assert acts[picked[0]] == acts[:, buffer:24 - buffer].max()


def test_importance_sampling_stays_below_the_top_examples():
    acts = torch.zeros(4, 30)
    acts[0, 10], acts[1, 12], acts[2, 15], acts[3, 3] = 5.0, 0.5, 0.2, 0.3
    picks = ex.importance_positions(acts, below=5.0, n=5, buffer=4,
                                    rng=np.random.default_rng(0))
    assert sorted(picks) == [(1, 12), (2, 15)]  # (0, 10) is a top example, (3, 3) too close


def _examples(random_inactive: bool):
    g = torch.Generator().manual_seed(0)
    acts = torch.rand(40, 32, generator=g)  # fires everywhere: random windows are active
    tokens = torch.randint(0, 100, (40, 32), generator=g)
    cfg = ai.Config(buffer=4, random_examples_inactive=random_inactive)
    return ex.latent_examples(tokens, acts, cfg, seed=3)


def test_random_windows_are_labelled_by_their_activations():
    ours, saebench = _examples(False), _examples(True)
    assert len(ours.generation) == 15 and len(ours.scoring) == 14
    kinds = [e.kind for e in ours.scoring]
    assert kinds.count("top") == 2 and kinds.count("importance") == 2
    assert all(ours.labels)  # a latent that fires everywhere fires in the random windows too
    assert [lab for e, lab in zip(saebench.scoring, saebench.labels, strict=True)
            if e.kind == "random"] == [False] * 10


def test_without_a_judge_autointerp_is_not_computed(monkeypatch):
    for var in ("SAEBENCH_JUDGE_URL", "SAEBENCH_JUDGE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    runner = make_runner(GOOD, autointerp=SMALL)
    res = runner.results(next(iter(runner.checkpoints)), evals=["autointerp"]).evals["autointerp"]
    assert res.metrics == {}
    assert res.not_computed[ai.SCORE] == NO_JUDGE


def test_unknown_judge_setting_is_a_clear_error():
    with pytest.raises(JudgeError, match="expected"):
        resolve_judge("gpt4")


def _score(path: Path, judge, cfg: ai.Config = SMALL, seed: int = 1):
    runner = make_runner(path, seed=seed, autointerp=cfg)
    runner.judge_provider = lambda: judge
    return runner.results(next(iter(runner.checkpoints)), evals=["autointerp"]).evals["autointerp"]


@pytest.fixture(scope="module")
def random_sae(tmp_path_factory) -> Path:
    """A random TopK SAE of the good example's shape, hook and model."""
    return random_sae_like(GOOD, tmp_path_factory.mktemp("random_sae"), seed=5)


def test_scripted_judge_over_http_scores_trained_above_random(random_sae):
    scores = {}
    # Faults on the first requests: the client retries them and the run still completes.
    with judge_server(faults=["500", "malformed", "slow"]) as url:
        judge = OpenAICompatibleJudge(url, "scripted", timeout_s=0.3, backoff_s=0.01)
        for name, path in (("good", GOOD), ("random", random_sae)):
            res = _score(path, judge)
            scores[name] = res.metrics[ai.SCORE]
            usage = res.unstructured["judge_usage"]
            scored = [r for r in res.unstructured["latents"] if r["score"] is not None]
            assert len(scored) >= 150
            assert usage["requests"] >= 2 * len(scored)
            assert res.config["judge"].startswith("scripted @ http://127.0.0.1")
            assert 0 < res.stderr[ai.SCORE] < 0.02
            assert res.metrics[ai.STD] == pytest.approx(
                np.std([r["score"] for r in scored], ddof=1))
    assert judge.usage.retries >= 3
    assert scores["good"] > scores["random"] + 0.03, scores


def test_scores_match_the_judges_answers_and_repeat_exactly():
    judge = ScriptedJudge()
    cfg = ai.Config(n_latents=20, total_tokens=20_000, llm_context_size=64)
    first, again = _score(GOOD, judge, cfg), _score(GOOD, ScriptedJudge(), cfg)
    assert first.metrics == again.metrics
    assert len(judge.prompts) == 2 * len(first.unstructured["latents"])
    for record in first.unstructured["latents"]:
        # Recompute each score from the recorded predictions and labels.
        n = 14
        labels = [i in record["correct seqs"] for i in range(1, n + 1)]
        expect = sum((i in record["predictions"]) == lab
                     for i, lab in enumerate(labels, 1)) / n
        assert record["score"] == pytest.approx(expect)
        assert record["explanation"].startswith("the tokens")
    scores = [r["score"] for r in first.unstructured["latents"]]
    assert first.metrics[ai.SCORE] == pytest.approx(sum(scores) / len(scores))
    assert math.isfinite(first.metrics[ai.STD])


AUTOINTERP_PROJECT = """
[tool.pytest-saebench]
suite = "standard"
select-evals = ["autointerp"]

[tool.pytest-saebench.thresholds]
"autointerp_score" = { min = 0.3, severity = "error" }

[tool.pytest-saebench.evals.autointerp]
n_latents = 10
total_tokens = 10000
llm_context_size = 64
"""


def test_conftest_hook_supplies_the_judge(pytester, monkeypatch):
    monkeypatch.delenv("SAEBENCH_JUDGE_URL", raising=False)
    pytester.makefile(".toml", pyproject=AUTOINTERP_PROJECT)
    pytester.makeconftest("""
from tests.judges import ScriptedJudge

def pytest_saebench_autointerp_judge(config):
    return ScriptedJudge()
""")
    result = pytester.runpytest(f"--sae-path={GOOD}", "-v", "--saebench-json=out.json")
    result.stdout.fnmatch_lines(["*saebench::threshold[[]good::autointerp.autointerp."
                                 "autointerp_score[]] PASSED*"])
    data = json.loads((pytester.path / "out.json").read_text())
    entry = data["saes"]["good"]["evals"]["autointerp"]
    assert entry["eval_config"]["judge"] == "scripted"
    latents = entry["eval_result_unstructured"]["latents"]
    assert len(latents) == 10 and all(r["explanation"] for r in latents)


def test_no_judge_skips_the_gate_with_the_fix(pytester, monkeypatch):
    monkeypatch.delenv("SAEBENCH_JUDGE_URL", raising=False)
    pytester.makefile(".toml", pyproject=AUTOINTERP_PROJECT)
    result = pytester.runpytest(f"--sae-path={GOOD}", "-rs")
    result.stdout.fnmatch_lines(["*SKIPPED*no autointerp judge configured*"])
    assert result.ret == 0


def test_local_transformers_judge_is_offline_and_deterministic(tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from pytest_saebench import reference

    tok = AutoTokenizer.from_pretrained(reference.MODEL_DIR)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=2048, n_embd=32, n_layer=1,
                               n_head=2)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    judge = resolve_judge(f"transformers:{tmp_path}")
    first = judge.complete("This neuron activates on", max_tokens=6)
    assert isinstance(first, str) and first == judge.complete("This neuron activates on", 6)
    assert judge.usage.requests == 2 and judge.usage.completion_tokens <= 12
    assert judge.name == f"transformers:{tmp_path}"
    with pytest.raises(JudgeError, match="cannot load it offline"):
        resolve_judge(f"transformers:{tmp_path / 'missing'}")


def test_latents_scored_in_memory_bounded_groups_give_the_same_records(monkeypatch):
    cfg = ai.Config(n_latents=12, total_tokens=8_000, llm_context_size=64)
    whole = _score(GOOD, ScriptedJudge(), cfg)
    assert len(whole.unstructured["latents"]) == 12
    n_tokens = (8_000 // 64) * 64
    # Five latents per group; the LLM activations no longer fit either, so they are recomputed.
    monkeypatch.setattr(ai, "MAX_ACTIVATION_BYTES", n_tokens * 4 * 5)
    grouped = _score(GOOD, ScriptedJudge(), cfg)
    assert grouped.unstructured["latents"] == whole.unstructured["latents"]
    assert grouped.metrics == whole.metrics
