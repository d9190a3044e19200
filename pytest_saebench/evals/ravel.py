"""ravel: can one attribute of an entity be swapped through a learned set of SAE latents
without disturbing its other attributes? (METRICS.md §9, RAVEL arXiv 2402.17700.)

Offline data: the most populous cities of GeoNames with their country and continent
(``reference/ravel/cities.tsv``), asked about with fixed templates. First the model's own
knowledge is measured: only prompts whose next token is the right answer's first token are
kept, and the accuracy per attribute is reported (``eval_result_unstructured.knowledge``).
A model that knows too little is not scored, with that reason.

Then, per cause attribute A, an interchange intervention at the base prompt's last city token
at the SAE hook: ``f' = (1 - m) * enc(base) + m * enc(source)`` replaces the activation by
``dec(f')`` (no error term, as in SAEBench). The mask ``m = sigmoid(logits / T)`` is trained
with Adam on pooled cause pairs (target: the source's A) and isolation pairs of the other
attributes (target: the base's own value), T annealed from 1 to 1e-4; it is evaluated hard
(``logits > 0``). ``cause``/``isolation`` are the accuracies on held-out pairs and
``disentanglement`` their mean, averaged over attributes.

Differences from SAEBench: the answer is checked on its first token instead of a 6-token
greedy generation (every kept prompt is one the model gets right on that token); the model
runs in TransformerLens, resumed after the hook with ``start_at_layer``, so any model with a
residual-stream SAE works; pairs and steps are fewer, with a larger learning rate.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pytest_saebench.activations import hook_activations, last_logits, right_pad
from pytest_saebench.evals.base import EvalContext, EvalResult
from pytest_saebench.gates.registry import MetricSpec

EVAL_TYPE_ID = "ravel"
# Reported as not computed for a transcoder (it reads one hook and writes another):
NOT_FOR_TRANSCODERS = (
    "it intervenes on latents and splices the decoded result back at the input hook")
CITIES = Path(__file__).parents[1] / "reference" / "ravel" / "cities.tsv"
TEMPLATES: dict[str, tuple[str, ...]] = {
    "country": ("{city} is a city in the country of",
                "The city of {city} is located in the country of"),
    "continent": ("{city} is a city on the continent of",
                  "The city of {city} is located on the continent of"),
}
IDS = {k: f"ravel.ravel.{k}" for k in ("disentanglement_score", "cause_score", "isolation_score")}


@dataclass(frozen=True)
class Config:
    """RAVEL settings (SAEBench names where they exist)."""

    top_n_entities: int = 300
    num_pairs_per_attribute: int = 200
    train_test_split: float = 0.7
    learning_rate: float = 1e-2  # SAEBench 1e-3 over ~25x more steps
    num_epochs: int = 2
    llm_batch_size: int = 16
    min_known_entities: int = 8  # per attribute, else the attribute is not scored


PRESETS = {"fast": Config(top_n_entities=150, num_pairs_per_attribute=100),
           "standard": Config(), "full": Config(num_pairs_per_attribute=500)}

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(IDS["disentanglement_score"], "up", "RAVEL disentanglement"),
    MetricSpec(IDS["cause_score"], "up", "RAVEL cause"),
    MetricSpec(IDS["isolation_score"], "up", "RAVEL isolation"),
)


def load_cities(limit: int) -> list[dict[str, str]]:
    """The first ``limit`` rows of the shipped gazetteer table."""
    with CITIES.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))[:limit]


@dataclass
class Prompt:
    """One templated question: its tokens, last city token and expected first token."""

    city: str
    attribute: str
    value: str
    tokens: list[int]
    entity_pos: int
    answer: int


def build_prompts(tokenizer, cities: list[dict[str, str]], prepend_bos: bool) -> list[Prompt]:
    """Every city under every template, tokenized as the model will see it."""
    bos = [tokenizer.bos_token_id] if prepend_bos and tokenizer.bos_token_id is not None else []
    out = []
    for row in cities:
        for attribute, templates in TEMPLATES.items():
            answer = tokenizer(" " + row[attribute], add_special_tokens=False)["input_ids"][0]
            for template in templates:
                text = template.format(city=row["city"])
                head = text[:text.index(row["city"]) + len(row["city"])]
                ids = bos + tokenizer(text, add_special_tokens=False)["input_ids"]
                n_head = len(bos) + len(tokenizer(head, add_special_tokens=False)["input_ids"])
                out.append(Prompt(row["city"], attribute, row[attribute], ids, n_head - 1,
                                  answer))
    return out


@torch.inference_mode()
def knowledge(ctx: EvalContext, cfg: Config) -> dict[str, Any]:
    """Which prompts the model answers right, and its accuracy per attribute (memoized:
    it does not depend on the SAE)."""
    key = f"ravel-knowledge:{ctx.model_key or id(ctx.model)}:{cfg.top_n_entities}:" \
          f"{ctx.loaded.ref.prepend_bos}"
    if key in ctx.memo:
        return ctx.memo[key]
    tok = ctx.model.tokenizer
    prompts = build_prompts(tok, load_cities(cfg.top_n_entities), ctx.loaded.ref.prepend_bos)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    correct: list[bool] = []
    for i in range(0, len(prompts), cfg.llm_batch_size):
        chunk = prompts[i:i + cfg.llm_batch_size]
        tokens, last = right_pad([p.tokens for p in chunk], pad)
        top = last_logits(ctx.model, tokens.to(ctx.device), last).argmax(-1).cpu()
        correct += [int(t) == p.answer for t, p in zip(top, chunk, strict=True)]
    known = [p for p, ok in zip(prompts, correct, strict=True) if ok]
    summary = {}
    for attribute in TEMPLATES:
        asked = [ok for p, ok in zip(prompts, correct, strict=True) if p.attribute == attribute]
        summary[attribute] = {"prompts": len(asked), "correct": int(sum(asked)),
                              "accuracy": float(np.mean(asked)),
                              "entities_known": len({p.city for p in known
                                                     if p.attribute == attribute})}
    ctx.memo[key] = out = {"known": known, "summary": summary}
    return out


def make_pairs(known: list[Prompt], cause: str, n: int, rng: np.random.Generator
               ) -> list[tuple[Prompt, Prompt, int, bool]]:
    """``(base, source, target token, is_cause)``: n cause pairs of ``cause`` prompts with
    different answers (target: the source's), and up to n isolation pairs of the other
    attributes (target: the base's own answer)."""
    by_attr: dict[str, list[Prompt]] = {}
    for p in known:
        by_attr.setdefault(p.attribute, []).append(p)

    def draw(pool: list[Prompt], count: int, is_cause: bool) -> list:
        out = []
        for _ in range(count * 20):
            if len(out) == count:
                break
            base, source = (pool[i] for i in rng.choice(len(pool), 2, replace=False))
            if base.answer != source.answer and base.city != source.city:
                out.append((base, source, source.answer if is_cause else base.answer,
                            is_cause))
        return out

    pairs = draw(by_attr[cause], n, True)
    others = [x for a, pool in by_attr.items() if a != cause and len(pool) > 1
              for x in draw(pool, n, False)]
    rng.shuffle(others)
    pairs += others[:n]
    order = rng.permutation(len(pairs))
    return [pairs[i] for i in order]


def _intervened_logits(ctx: EvalContext, pairs: list, mask: torch.Tensor, pad: int
                       ) -> torch.Tensor:
    """Last-position logits of each base prompt with its city token's latents mixed."""
    hook = ctx.loaded.hook
    sae = ctx.loaded.sae
    base_tok, base_last = right_pad([b.tokens for b, _, _, _ in pairs], pad)
    src_tok, _ = right_pad([s.tokens for _, s, _, _ in pairs], pad)
    rows = torch.arange(len(pairs))
    with torch.no_grad():
        resid = hook_activations(ctx.model, base_tok.to(ctx.device), hook)
        src = hook_activations(ctx.model, src_tok.to(ctx.device), hook)[
            rows, [s.entity_pos for _, s, _, _ in pairs]]
    pos = torch.tensor([b.entity_pos for b, _, _, _ in pairs])
    mixed = sae.decode((1 - mask) * sae.encode(resid[rows, pos]) + mask * sae.encode(src))
    resid = resid.clone()
    resid[rows, pos] = mixed.to(resid.dtype)
    return last_logits(ctx.model, resid, base_last, start_at_layer=hook.start_layer)


@torch.enable_grad()  # a conftest or library may have turned gradients off globally
def score_attribute(ctx: EvalContext, cfg: Config, known: list[Prompt], cause: str,
                    seed: int) -> dict[str, float]:
    """Train the mask for ``cause`` and return held-out cause and isolation accuracy."""
    rng = np.random.default_rng(seed)
    pairs = make_pairs(known, cause, cfg.num_pairs_per_attribute, rng)
    n_train = int(len(pairs) * cfg.train_test_split)
    train, test = pairs[:n_train], pairs[n_train:]
    pad = ctx.model.tokenizer.pad_token_id or 0
    logits = torch.zeros(ctx.loaded.d_sae, device=ctx.device, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=cfg.learning_rate)
    bs = cfg.llm_batch_size
    steps = cfg.num_epochs * ((len(train) + bs - 1) // bs)
    temps = np.logspace(0, -4, max(steps, 1))
    step = 0
    for _ in range(cfg.num_epochs):
        order = rng.permutation(len(train))
        for i in range(0, len(train), bs):
            batch = [train[j] for j in order[i:i + bs]]
            mask = torch.sigmoid(logits / float(temps[step]))
            out = _intervened_logits(ctx, batch, mask, pad)
            target = torch.tensor([t for _, _, t, _ in batch], device=ctx.device)
            loss = torch.nn.functional.cross_entropy(out.float(), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    hard = (logits.detach() > 0).float()
    hits: dict[bool, list[bool]] = {True: [], False: []}
    kept: list[bool] = []  # mask 0: the base answer survives the SAE's reconstruction alone
    with torch.no_grad():
        for i in range(0, len(test), bs):
            batch = test[i:i + bs]
            pred = _intervened_logits(ctx, batch, hard, pad).argmax(-1).cpu()
            plain = _intervened_logits(ctx, batch, torch.zeros_like(hard), pad).argmax(-1)
            for (base, _, t, is_cause), p, q in zip(batch, pred, plain.cpu(), strict=True):
                hits[is_cause].append(int(p) == t)
                kept.append(int(q) == base.answer)
    return {"cause": float(np.mean(hits[True])) if hits[True] else float("nan"),
            "isolation": float(np.mean(hits[False])) if hits[False] else float("nan"),
            "answers_kept_by_reconstruction": float(np.mean(kept)) if kept else float("nan"),
            "n_train": len(train), "n_test": len(test), "latents_in_mask": int(hard.sum())}


def run(ctx: EvalContext, cfg: Config) -> EvalResult:
    """Measure the model's knowledge, then score the SAE on each attribute it knows."""
    res = EvalResult(EVAL_TYPE_ID, dataclasses.asdict(cfg))
    if ctx.loaded.hook.start_layer is None:
        for spec in METRICS:
            res.not_computed[spec.id] = (f"ravel needs a residual-stream hook; this SAE reads "
                                         f"{ctx.loaded.hook.name}")
        return res
    know = knowledge(ctx, cfg)
    res.unstructured["knowledge"] = know["summary"]
    attrs = [a for a, s in know["summary"].items()
             if s["entities_known"] >= cfg.min_known_entities]
    if len(attrs) < len(TEMPLATES):
        what = ", ".join(f"{a} {s['entities_known']}/{cfg.top_n_entities} cities"
                         for a, s in know["summary"].items())
        for spec in METRICS:
            res.set(spec.id, None, reason=f"the model knows too little to test ({what}; need "
                                          f"{cfg.min_known_entities} per attribute)")
        return res
    params = [p for p in (*ctx.model.parameters(), *ctx.loaded.sae.parameters())]
    flags = [p.requires_grad for p in params]
    for p in params:  # only the mask is trained
        p.requires_grad_(False)
    try:
        per = {a: score_attribute(ctx, cfg, know["known"], a, ctx.seed + i)
               for i, a in enumerate(TEMPLATES)}
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    res.unstructured["attributes"] = per
    cause = float(np.mean([v["cause"] for v in per.values()]))
    isolation = float(np.mean([v["isolation"] for v in per.values()]))
    res.set(IDS["cause_score"], cause)
    res.set(IDS["isolation_score"], isolation)
    res.set(IDS["disentanglement_score"], (cause + isolation) / 2)
    return res
