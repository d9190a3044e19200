"""The OpenAI-compatible judge client against a scripted server on loopback: answers derived
from the prompt, retries on 5xx/429/timeouts/malformed replies, clear errors, accounting."""

from __future__ import annotations

import time

import pytest

from pytest_saebench.judge import JudgeError, OpenAICompatibleJudge, judge_from_env
from tests.judges import LoopbackHandler, judge_server


def _reversed(prompt: str) -> str:
    return " ".join(reversed(prompt.split()))


@pytest.fixture
def server():
    """The loopback endpoint answering with the prompt's words reversed."""
    with judge_server(answer=_reversed) as url:
        yield url


def _judge(url: str, **kw) -> OpenAICompatibleJudge:
    return OpenAICompatibleJudge(url, "scripted", api_key="k", backoff_s=0.01, **kw)


def test_answer_request_and_accounting(server):
    judge = _judge(server, usd_per_1k_prompt=1.0, usd_per_1k_completion=2.0)
    assert judge.complete("latent fires on dates") == "dates on fires latent"
    sent = LoopbackHandler.seen[0]
    assert sent["auth"] == "Bearer k" and sent["body"]["model"] == "scripted"
    assert sent["body"]["temperature"] == 0
    assert (judge.usage.requests, judge.usage.prompt_tokens, judge.usage.completion_tokens) == \
        (1, 4, 3)
    assert judge.usage.cost_usd == pytest.approx((4 * 1.0 + 3 * 2.0) / 1000)


@pytest.mark.parametrize("failure", ["500", "429", "malformed", "slow"])
def test_transient_failures_are_retried(server, failure):
    LoopbackHandler.faults = [failure, failure]
    judge = _judge(server, timeout_s=0.2)
    assert judge.complete("a b") == "b a"
    assert judge.usage.retries == 2 and judge.usage.requests == 3


def test_gives_up_with_the_last_reason(server):
    LoopbackHandler.faults = ["malformed"] * 3
    with pytest.raises(JudgeError, match=r"no answer after 3 attempt\(s\); last: malformed"):
        _judge(server, max_retries=2).complete("x")


def test_client_errors_are_not_retried(server):
    LoopbackHandler.faults = ["401"]
    with pytest.raises(JudgeError, match="HTTP 401"):
        _judge(server).complete("x")
    assert len(LoopbackHandler.seen) == 1


def test_unreachable_server():
    judge = OpenAICompatibleJudge("http://127.0.0.1:9/v1", "m", max_retries=1, backoff_s=0.01,
                                  timeout_s=1)
    with pytest.raises(JudgeError, match="no answer after 2 attempt"):
        judge.complete("x")


def test_rate_limit_spaces_requests(server):
    judge = _judge(server, min_interval_s=0.15)
    started = time.monotonic()
    for _ in range(3):
        judge.complete("x")
    assert time.monotonic() - started >= 0.3


def test_configuration_from_environment():
    assert judge_from_env({}) is None
    judge = judge_from_env({"SAEBENCH_JUDGE_URL": "http://h/v1", "SAEBENCH_JUDGE_MODEL": "m",
                            "SAEBENCH_JUDGE_KEY_ENV": "MY_KEY", "MY_KEY": "secret"})
    assert (judge.base_url, judge.model, judge.api_key) == ("http://h/v1", "m", "secret")
