"""LLM judges for autointerp: a small interface and an OpenAI-compatible HTTP client.

The client speaks ``POST {base_url}/chat/completions`` (OpenAI, vLLM, llama.cpp server,
Ollama, ...) with the standard library only. It retries timeouts, connection errors, HTTP 429
and 5xx and malformed replies with exponential backoff, keeps a minimum interval between
requests, and counts requests, tokens and (given prices) cost. Configuration comes from the
environment so keys never enter pyproject.toml:

    SAEBENCH_JUDGE_URL=http://localhost:8000/v1  SAEBENCH_JUDGE_MODEL=gpt-4o-mini
    SAEBENCH_JUDGE_KEY_ENV=OPENAI_API_KEY          (name of the variable holding the key)
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pytest_saebench.errors import SaebenchError


class JudgeError(SaebenchError):
    """The judge could not answer after all retries."""


class Judge(Protocol):
    """Anything that answers a prompt with text."""

    def complete(self, prompt: str, max_tokens: int = 200) -> str:
        """The judge's reply to ``prompt``."""
        ...


@dataclass
class Usage:
    """What the judge cost so far."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class OpenAICompatibleJudge:
    """Chat-completions client with retries, backoff, rate limiting and accounting."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 30.0
    max_retries: int = 4
    backoff_s: float = 0.5
    min_interval_s: float = 0.0
    usd_per_1k_prompt: float = 0.0
    usd_per_1k_completion: float = 0.0
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0.0

    def complete(self, prompt: str, max_tokens: int = 200) -> str:
        """One chat completion (temperature 0); raises :class:`JudgeError` when every attempt
        failed, naming the last reason."""
        body = json.dumps({"model": self.model, "temperature": 0, "max_tokens": max_tokens,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base_url.rstrip("/") + "/chat/completions"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.usage.retries += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            self._wait_turn()
            try:
                request = urllib.request.Request(url, body, headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    data = json.loads(reply.read().decode("utf-8"))
                text = data["choices"][0]["message"]["content"]
                if not isinstance(text, str):
                    raise TypeError("content is not text")
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code != 429 and exc.code < 500:
                    raise JudgeError(f"judge {url}: {last} ({exc.reason}); check the model "
                                     "name and key") from None
                continue
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                last = f"malformed reply ({type(exc).__name__}: {exc})"
                continue
            self._account(data.get("usage") or {})
            return text
        raise JudgeError(f"judge {url}: no answer after {self.max_retries + 1} attempt(s); "
                         f"last: {last}")

    def _wait_turn(self) -> None:
        with self._lock:
            wait = self._last + self.min_interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last = time.monotonic()
            self.usage.requests += 1

    def _account(self, usage: Mapping) -> None:
        p, c = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        with self._lock:  # autointerp calls the judge from several threads
            self.usage.prompt_tokens += p
            self.usage.completion_tokens += c
            self.usage.cost_usd += (p * self.usd_per_1k_prompt
                                    + c * self.usd_per_1k_completion) / 1e3


def judge_from_env(env: Mapping[str, str] = os.environ) -> OpenAICompatibleJudge | None:
    """The judge configured by ``SAEBENCH_JUDGE_*`` variables, or None (autointerp then skips
    with that reason)."""
    url, model = env.get("SAEBENCH_JUDGE_URL"), env.get("SAEBENCH_JUDGE_MODEL")
    if not url or not model:
        return None
    key_var = env.get("SAEBENCH_JUDGE_KEY_ENV", "OPENAI_API_KEY")
    return OpenAICompatibleJudge(
        url, model, api_key=env.get(key_var),
        min_interval_s=float(env.get("SAEBENCH_JUDGE_MIN_INTERVAL_S", "0")),
        usd_per_1k_prompt=float(env.get("SAEBENCH_JUDGE_USD_PER_1K_PROMPT", "0")),
        usd_per_1k_completion=float(env.get("SAEBENCH_JUDGE_USD_PER_1K_COMPLETION", "0")))


@dataclass
class TransformersJudge:
    """A local causal LM from ``transformers`` (a directory, or a name in the local HF cache),
    decoded greedily; usage counts tokens, cost stays 0. Offline and deterministic, but a small
    model is a weak judge: use it for plumbing and for comparing checkpoints, not for absolute
    scores."""

    model_path: str
    device: str = "cpu"
    gguf_file: str | None = None  # a GGUF file inside model_path, dequantised on load
    label: str = ""
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        try:
            self._tok = AutoTokenizer.from_pretrained(self.model_path, **extra)
            self._model = AutoModelForCausalLM.from_pretrained(self.model_path, **extra)
        except (OSError, ValueError) as exc:
            raise JudgeError(f"judge '{self.name}': cannot load it offline ({exc}); give a "
                             "local model directory") from None
        self._model.to(self.device).eval()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """What results record as the judge."""
        return self.label or f"transformers:{self.model_path}"

    def complete(self, prompt: str, max_tokens: int = 200) -> str:
        """Greedy continuation of ``prompt`` (chat template applied when the model has one)."""
        import torch

        tok = self._tok
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                          add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)["input_ids"]
        else:
            ids = tok(prompt, return_tensors="pt")["input_ids"]
        ids = ids.to(self.device)
        with self._lock, torch.inference_mode():
            out = self._model.generate(ids, attention_mask=torch.ones_like(ids),
                                       max_new_tokens=max_tokens, do_sample=False,
                                       pad_token_id=tok.pad_token_id or tok.eos_token_id)
            new = out[0, ids.shape[1]:]
            self.usage.requests += 1
            self.usage.prompt_tokens += int(ids.shape[1])
            self.usage.completion_tokens += int(new.shape[0])
        return tok.decode(new, skip_special_tokens=True)


NO_JUDGE = ("no autointerp judge configured: set SAEBENCH_JUDGE_URL and SAEBENCH_JUDGE_MODEL "
            "(any OpenAI-compatible endpoint), set [tool.pytest-saebench.evals.autointerp] "
            "judge = \"transformers:<local model dir>\" (or \"smollm2-135m\"), or return a "
            "judge from the pytest_saebench_autointerp_judge hook in conftest.py")


def judge_name(judge: Judge) -> str:
    """A judge's name for ``eval_config``: its ``name``, its model, or its class."""
    name = getattr(judge, "name", None) or getattr(judge, "model", None)
    if isinstance(name, str) and name:
        base = getattr(judge, "base_url", "")
        return f"{name} @ {base}" if base else name
    return type(judge).__name__


def resolve_judge(spec: str, from_hook: Judge | None = None,
                  env: Mapping[str, str] = os.environ, device: str = "cpu") -> Judge | None:
    """The judge to use: one given by the plugin hook, else ``spec``
    (``"transformers:<dir>"`` or ``"smollm2-135m"``), else the ``SAEBENCH_JUDGE_*``
    environment; None when none is configured (the eval then skips with :data:`NO_JUDGE`)."""
    if from_hook is not None:
        return from_hook
    if spec.startswith("transformers:"):
        return TransformersJudge(spec.split(":", 1)[1], device=device)
    from pytest_saebench.loading import smollm2

    if spec == smollm2.MODEL_NAME:  # offline, from PyPI; a weak judge, but a real LLM
        gguf = smollm2.gguf_path()
        return TransformersJudge(str(gguf.parent), device=device, gguf_file=gguf.name,
                                 label="smollm2-135m (SmolLM2-135M-Instruct, GGUF Q4_1)")
    if spec not in ("", "env"):
        raise JudgeError(f"autointerp judge = {spec!r}: expected \"\", \"env\", "
                         "\"smollm2-135m\" or \"transformers:<local model dir>\"")
    return judge_from_env(env)
