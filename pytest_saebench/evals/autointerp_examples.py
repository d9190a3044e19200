"""Autointerp's examples and prompts (METRICS.md §8 steps 4-7): picking windows, labelling
them, the two judge prompts and the parsing of the judge's answers."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

GENERATION_PROMPT = """\
We are studying neurons in a neural network. Each neuron looks for one particular thing in \
a short piece of text. Below are text excerpts where one neuron fires; the tokens it fires on \
are marked <<like this>>. Work out what the neuron is looking for and describe it in one \
sentence of at most 20 words. Do not list the example words back.

Answer in the form "This neuron activates on <description>."
Examples of good answers:
This neuron activates on the word "knows" in rhetorical questions.
This neuron activates on verbs about choosing or preferring.
This neuron activates on an opening parenthesis that starts an aside.
This neuron activates on years and dates.

The excerpts:
{examples}
"""

SCORING_PROMPT = """\
We are studying neurons in a neural network. Each neuron looks for one particular thing in \
a short piece of text. Below is a description of what one neuron fires on, and {n} numbered \
text excerpts. Say in which excerpts the neuron fires.

This neuron fires on {explanation}.

The excerpts:
{examples}

Answer with the numbers of the excerpts where the neuron fires, separated by commas \
(for example "2, 5, 11"), or "None" if it fires in none. Answer with nothing else.
"""


@dataclass(frozen=True)
class Example:
    """One window of tokens around a position, with the latent's activations."""

    tokens: tuple[int, ...]
    acts: tuple[float, ...]
    kind: str  # "top", "importance" or "random"
    seq: int
    pos: int

    @property
    def max_act(self) -> float:
        """The largest activation in the window."""
        return max(self.acts)


def _window(tokens: torch.Tensor, acts: torch.Tensor, seq: int, pos: int, buffer: int,
            kind: str) -> Example:
    lo, hi = pos - buffer, pos + buffer + 1
    return Example(tuple(tokens[seq, lo:hi].tolist()), tuple(acts[seq, lo:hi].tolist()),
                   kind, seq, pos)


def top_positions(acts: torch.Tensor, n: int, buffer: int) -> list[tuple[int, int]]:
    """Up to ``n`` (seq, pos) with the largest positive activations, whole windows only, and
    no two centres of one sequence within ``buffer`` of each other."""
    inner = acts[:, buffer:acts.shape[1] - buffer]
    width = inner.shape[1]
    flat = inner.reshape(-1)
    # Enough candidates for n non-overlapping picks in all but pathological cases.
    vals, idx = torch.topk(flat, min(flat.numel(), n * (2 * buffer + 1) * 8))
    chosen: list[tuple[int, int]] = []
    for v, i in zip(vals.tolist(), idx.tolist(), strict=True):
        if v <= 0 or len(chosen) == n:
            break
        seq, pos = divmod(i, width)
        pos += buffer
        if all(s != seq or abs(p - pos) > buffer for s, p in chosen):
            chosen.append((seq, pos))
    return chosen


def importance_positions(acts: torch.Tensor, below: float, n: int, buffer: int,
                         rng: np.random.Generator) -> list[tuple[int, int]]:
    """``n`` positions sampled without replacement with probability ∝ act², among those
    whose activation is positive and below ``below`` (the weakest top example)."""
    inner = acts[:, buffer:acts.shape[1] - buffer].double()
    weights = torch.where(inner < below, inner.clamp(min=0) ** 2, torch.zeros_like(inner))
    flat = weights.reshape(-1).numpy()
    nonzero = np.flatnonzero(flat)
    if nonzero.size == 0:
        return []
    p = flat[nonzero] / flat[nonzero].sum()
    picks = rng.choice(nonzero, size=min(n, nonzero.size), replace=False, p=p)
    width = inner.shape[1]
    return [(int(i) // width, int(i) % width + buffer) for i in picks]


def random_positions(shape: tuple[int, int], n: int, buffer: int,
                     rng: np.random.Generator) -> list[tuple[int, int]]:
    """``n`` uniformly random (seq, pos) with whole windows."""
    seqs = rng.integers(0, shape[0], n)
    poss = rng.integers(buffer, shape[1] - buffer, n)
    return [(int(s), int(p)) for s, p in zip(seqs, poss, strict=True)]


@dataclass
class LatentExamples:
    """The generation and scoring examples of one latent, with scoring labels."""

    generation: list[Example]
    scoring: list[Example]
    labels: list[bool]
    threshold: float


def latent_examples(tokens: torch.Tensor, acts: torch.Tensor, cfg, seed: int
                    ) -> LatentExamples | str:
    """Examples for a latent whose activations over ``tokens`` are ``acts`` ``[N, C]``; a
    string says why the latent cannot be scored."""
    n_top = cfg.n_top_ex_for_generation + cfg.n_top_ex_for_scoring
    n_iw = cfg.n_iw_sampled_ex_for_generation + cfg.n_iw_sampled_ex_for_scoring
    rng = np.random.default_rng(seed)
    top = top_positions(acts, n_top, cfg.buffer)
    if len(top) < n_top:
        return f"only {len(top)} non-overlapping activating windows (need {n_top})"
    top_ex = [_window(tokens, acts, s, p, cfg.buffer, "top") for s, p in top]
    below = min(float(acts[s, p]) for s, p in top)
    iw = importance_positions(acts, below, n_iw, cfg.buffer, rng)
    if not iw:
        return "no activation left below the top examples for importance sampling"
    iw_ex = [_window(tokens, acts, s, p, cfg.buffer, "importance") for s, p in iw]
    rand_ex = [_window(tokens, acts, s, p, cfg.buffer, "random")
               for s, p in random_positions(tuple(acts.shape), cfg.n_random_ex_for_scoring,
                                            cfg.buffer, rng)]
    shuffle = random.Random(seed)
    shuffle.shuffle(top_ex)
    shuffle.shuffle(iw_ex)
    n_top_gen, n_iw_gen = cfg.n_top_ex_for_generation, cfg.n_iw_sampled_ex_for_generation
    generation = sorted(top_ex[:n_top_gen] + iw_ex[:n_iw_gen], key=lambda e: -e.max_act)
    scoring = top_ex[n_top_gen:] + iw_ex[n_iw_gen:] + rand_ex
    shuffle.shuffle(scoring)
    threshold = cfg.act_threshold_frac * max(e.max_act for e in top_ex)
    labels = [e.max_act > threshold and not (cfg.random_examples_inactive and e.kind == "random")
              for e in scoring]
    return LatentExamples(generation, scoring, labels, threshold)


def render(example: Example, piece: Callable[[int], str], threshold: float | None) -> str:
    """The window as text; tokens above ``threshold`` (when given) wrapped in ``<<>>``."""
    out = []
    for t, a in zip(example.tokens, example.acts, strict=True):
        s = piece(t).replace("\n", "↵")
        out.append(f"<<{s}>>" if threshold is not None and a > threshold else s)
    return "".join(out)


def generation_prompt(ex: LatentExamples, piece: Callable[[int], str]) -> str:
    """The explanation request, strongest example first."""
    lines = [f"Excerpt {i}: {render(e, piece, ex.threshold)}"
             for i, e in enumerate(ex.generation, 1)]
    return GENERATION_PROMPT.format(examples="\n".join(lines))


def scoring_prompt(ex: LatentExamples, explanation: str, piece: Callable[[int], str]) -> str:
    """The detection request: unmarked, numbered excerpts after the explanation."""
    lines = [f"{i}. {render(e, piece, None)}" for i, e in enumerate(ex.scoring, 1)]
    return SCORING_PROMPT.format(n=len(ex.scoring), explanation=explanation,
                                 examples="\n".join(lines))


def parse_explanation(reply: str) -> str:
    """The text after the last "activates on", without a trailing period."""
    text = reply.strip()
    cut = text.lower().rfind("activates on")
    if cut >= 0:
        text = text[cut + len("activates on"):]
    return text.strip().removesuffix(".").strip()


def parse_prediction(reply: str, n: int) -> set[int] | None:
    """1-based excerpt numbers in the judge's answer; None when it is not a list of numbers
    in 1..n (such latents are dropped, as in SAEBench)."""
    text = reply.strip().removesuffix(".")
    text = re.sub(r"\band\b", ",", text).replace("None", "")
    picked: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or not 1 <= int(item) <= n:
            return None
        picked.add(int(item))
    return picked


def detection_score(predicted: set[int], labels: Sequence[bool]) -> float:
    """Fraction of excerpts whose predicted firing matches the label."""
    return sum((i in predicted) == lab for i, lab in enumerate(labels, 1)) / len(labels)
