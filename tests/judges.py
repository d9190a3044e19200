"""A scripted autointerp judge whose answers are derived from the prompt, so the eval's
example selection, labelling, prompting and parsing are all exercised; served in-process or
over HTTP on loopback."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def scripted_answer(prompt: str) -> str:
    """Explain a latent by the three tokens marked most often; detect by looking for them."""
    head, _, body = prompt.partition("The excerpts:")
    if "This neuron fires on" not in head:  # generation: excerpts with <<marked>> tokens
        counts = Counter(m for m in re.findall(r"<<(.*?)>>", body) if m.strip())
        tokens = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]
        return "This neuron activates on the tokens " + ", ".join(f'"{t}"' for t in tokens) + "."
    line = next(x for x in head.splitlines() if x.startswith("This neuron fires on"))
    tokens = re.findall(r'"(.*?)"', line)
    excerpts = body.split("\n\nAnswer with")[0].strip().splitlines()
    hits = [x.split(". ", 1)[0] for x in excerpts
            if any(t in x.split(". ", 1)[1] for t in tokens)]
    return ", ".join(hits) or "None"


class ScriptedJudge:
    """In-process scripted judge."""

    name = "scripted"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def complete(self, prompt: str, max_tokens: int = 200) -> str:
        """The scripted answer to ``prompt``."""
        self.prompts.append(prompt)
        return scripted_answer(prompt)


class LoopbackHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint: ``answer(prompt)`` is the reply; ``faults`` are consumed
    one per request ("500", "429", "401", "malformed", "slow"; anything else answers)."""

    answer = staticmethod(scripted_answer)
    faults: list[str] = []
    seen: list[dict] = []  # request bodies and Authorization headers

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with _LOCK:
            LoopbackHandler.seen.append({"body": body, "auth": self.headers.get("Authorization")})
            fault = LoopbackHandler.faults.pop(0) if LoopbackHandler.faults else "ok"
        if fault in ("500", "429", "401"):
            self.send_response(int(fault))
            self.end_headers()
            return
        if fault == "slow":
            threading.Event().wait(0.5)
        prompt = body["messages"][0]["content"]
        reply = {"choices": [{"message": {"content": LoopbackHandler.answer(prompt)}}],
                 "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 3}}
        data = b'{"choices": [' if fault == "malformed" else json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep test output clean
        pass


_LOCK = threading.Lock()


@contextmanager
def judge_server(faults: list[str] | None = None,
                 answer: Callable[[str], str] = scripted_answer) -> Iterator[str]:
    """Serve ``answer`` on loopback; yields the ``/v1`` base URL."""
    LoopbackHandler.faults, LoopbackHandler.seen = list(faults or []), []
    LoopbackHandler.answer = staticmethod(answer)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), LoopbackHandler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()
