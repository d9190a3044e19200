"""Shared machinery of the probing evals (sparse probing, SCR, TPP): labeled text, masked and
mean-pooled activations, SAEBench's probes. Not an eval itself (METRICS.md §0.4, §3.2)."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from pytest_saebench.activations import HookSpec, hook_activations
from pytest_saebench.errors import SaebenchError

PROBING_DIR = Path(__file__).parents[1] / "reference" / "probing"


def derive_seed(seed: int, *parts: object) -> int:
    """An independent seed per purpose: SHA-256 of ``(seed, *parts)`` (METRICS.md §0.5)."""
    blob = json.dumps([seed, *map(str, parts)]).encode()
    return int(hashlib.sha256(blob).hexdigest()[:15], 16)


@functools.lru_cache(maxsize=64)
def set_digest(name: str) -> str:
    """A digest of a shipped labeled set's file: what decides a unit's texts besides the
    eval config and the seed (a revision of the set never pairs with the old one)."""
    path = PROBING_DIR / f"{name}.jsonl.gz"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else ""


def load_set(name: str) -> dict[str, list[dict]]:
    """A shipped labeled set as ``{label: rows}`` in file order."""
    path = PROBING_DIR / f"{name}.jsonl.gz"
    if not path.exists():
        known = ", ".join(sorted(p.name.split(".")[0] for p in PROBING_DIR.glob("*.jsonl.gz")))
        raise SaebenchError(f"unknown probing dataset '{name}' (shipped: {known})")
    by_label: dict[str, list[dict]] = defaultdict(list)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            by_label[row["label"]].append(row)
    return dict(by_label)


def split_classes(by_label: dict[str, list[dict]], classes: tuple[str, ...], n_train: int,
                  n_test: int, seed: int, name: str) -> tuple[dict, dict]:
    """Per class, a seeded shuffle, the first ``n_train`` rows for train, the next ``n_test``."""
    train, test = {}, {}
    for label in classes:
        rows = by_label.get(label, [])
        if len(rows) < n_train + n_test:
            raise SaebenchError(
                f"probing dataset '{name}' has {len(rows)} rows of class '{label}', fewer than "
                f"train {n_train} + test {n_test}; lower probe_train_set_size/probe_test_set_size")
        rng = np.random.default_rng(derive_seed(seed, name, label, "split"))
        order = rng.permutation(len(rows))
        train[label] = [rows[i] for i in order[:n_train]]
        test[label] = [rows[i] for i in order[n_train:n_train + n_test]]
    return train, test


def tokenize(tokenizer, texts: list[str], context_length: int) -> torch.Tensor:
    """Right-padded, truncated ``[N, context_length]`` ids (the tokenizer adds BOS only if it
    does so by itself, as SAEBench)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = pad
    out = tokenizer(texts, padding="max_length", truncation=True, max_length=context_length,
                    return_tensors="pt")
    return out["input_ids"]


@torch.inference_mode()
def activations(model, tokens: torch.Tensor, hook: HookSpec, special: frozenset[int],
                batch_size: int) -> torch.Tensor:
    """``[N, C, D]`` float32 activations with every special-token position set to zero."""
    device = model.cfg.device
    mask = torch.tensor(sorted(special), dtype=torch.long)
    chunks = []
    for i in range(0, tokens.shape[0], batch_size):
        t = tokens[i:i + batch_size]
        acts = hook_activations(model, t.to(device), hook).cpu()
        acts[torch.isin(t, mask)] = 0
        chunks.append(acts)
    return torch.cat(chunks)


def valid_positions(acts: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` bool: a position is valid iff its activation vector is not all zero."""
    return acts.sum(-1) != 0


def pool(acts: torch.Tensor) -> torch.Tensor:
    """Mean over valid positions: ``[N, C, D] -> [N, D]``."""
    valid = valid_positions(acts)
    return acts.sum(1) / valid.sum(1, keepdim=True).clamp_min(1)


SPARSE_MEMO_BYTES = 64 * 2**20


@torch.inference_mode()
def sae_pool(sae, acts: torch.Tensor, batch_size: int,
             memo: dict | None = None) -> torch.Tensor:
    """Mean-pooled SAE codes over the valid positions of ``acts`` ``[N, C, D]``.

    Only valid positions are encoded (zeroed ones would be masked out anyway, and probing
    texts are mostly padding); ``batch_size`` texts' worth of positions go through the SAE at
    once. With ``memo`` (one checkpoint's), evals reading the same activations tensor share
    the codes: sparse probing and TPP read the same texts.
    """
    key = f"sae_pool/{id(acts)}"
    if memo is not None and key in memo and memo[key][0] is acts:
        held = memo[key][1]
        return held.to_dense() if held.is_sparse else held
    device = sae.W_dec.device
    valid = valid_positions(acts)
    rows, cols = valid.nonzero(as_tuple=True)
    out = torch.zeros(acts.shape[0], sae.cfg.d_sae)
    step = max(1, batch_size * acts.shape[1])
    for i in range(0, rows.shape[0], step):
        r, c = rows[i:i + step], cols[i:i + step]
        codes = sae.encode(acts[r, c].to(device, sae.dtype)).float().cpu()
        out.index_add_(0, r, codes)
    out /= valid.sum(1, keepdim=True).clamp_min(1)
    if memo is not None:
        # Large and mostly zero (a 16k-latent TopK SAE's codes are ~97% zero): kept sparse,
        # as densifying costs less than holding them; small ones are kept as they are.
        big = out.numel() * 4 > SPARSE_MEMO_BYTES
        memo[key] = (acts, out.to_sparse() if big and float((out != 0).float().mean()) < 0.1
                     else out)
    return out


def memo_key(ctx, eval_name: str, cfg: object, dataset: str) -> str:
    """Key of SAE-independent work in ``ctx.memo``: model, hook, data, seed and config."""
    blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return f"{eval_name}/{id(ctx.model)}/{ctx.loaded.hook.name}/{dataset}/{ctx.seed}/{digest}"


def memoized(ctx, eval_name: str, cfg: object, dataset: str, compute) -> dict:
    """``compute()`` once per run for this eval, config and data (see :func:`memo_key`)."""
    key = memo_key(ctx, eval_name, cfg, dataset)
    if key not in ctx.memo:
        ctx.memo[key] = compute()
    return ctx.memo[key]


def text_activations(ctx, texts: list[str], context_length: int, batch_size: int,
                     split: str) -> dict[str, torch.Tensor]:
    """``{split}_acts`` (masked ``[N, C, D]``), ``{split}_pooled`` and
    ``{split}_invalid_ratio`` (zeroed / valid positions per text) for ``texts``."""
    def compute() -> dict[str, torch.Tensor]:
        tokens = tokenize(ctx.model.tokenizer, texts, context_length)
        acts = activations(ctx.model, tokens, ctx.loaded.hook, ctx.special_ids, batch_size)
        n_valid = valid_positions(acts).sum(1).clamp_min(1).float()
        return {"acts": acts, "pooled": pool(acts),
                "invalid_ratio": (acts.shape[1] - n_valid) / n_valid}

    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    parts = ctx.cache_parts(texts=digest, n_texts=len(texts), context_length=context_length,
                            batch_size=batch_size)
    out = ctx.cache.get("probing-acts", parts, compute)
    return {f"{split}_{key}": value for key, value in out.items()}


def labeled_activations(ctx, name: str, classes: tuple[str, ...], n_train: int, n_test: int,
                        context_length: int, batch_size: int) -> dict:
    """For one shipped set: per split the labels, masked activations ``[N, C, D]``, pooled
    vectors and the zeroed-position ratio, plus each class's one-vs-rest task indices."""
    train, test = split_classes(load_set(name), classes, n_train, n_test, ctx.seed, name)
    side: dict = {"classes": classes}
    for split, rows in (("train", train), ("test", test)):
        side[f"{split}_labels"] = [c for c in classes for _ in rows[c]]
        side.update(text_activations(ctx, [r["text"] for c in classes for r in rows[c]],
                                     context_length, batch_size, split))
    side["tasks"] = {c: {s: one_vs_rest(side[f"{s}_labels"], c,
                                        derive_seed(ctx.seed, name, c, s))
                         for s in ("train", "test")} for c in classes}
    return side


def one_vs_rest(labels: list[str], target: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and 0/1 labels of a balanced one-vs-rest task (METRICS.md §3.2 step 5)."""
    rng = np.random.default_rng(seed)
    labels_arr = np.array(labels)
    pos = np.flatnonzero(labels_arr == target)
    others = sorted(set(labels) - {target})
    per_class = math.ceil(len(pos) / len(others))
    pool_idx = np.concatenate([
        rng.choice(np.flatnonzero(labels_arr == o), size=min(per_class, (labels_arr == o).sum()),
                   replace=False) for o in others])
    neg = rng.choice(pool_idx, size=min(len(pos), len(pool_idx)), replace=False)
    idx = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = rng.permutation(len(idx))
    return idx[order], y[order]


@torch.enable_grad()  # a conftest or library may have turned gradients off globally
def train_probe(x_train: torch.Tensor, y_train: np.ndarray, x_test: torch.Tensor,
                y_test: np.ndarray, seed: int, lr: float = 1e-2, epochs: int = 100,
                batch_size: int = 250, patience: int = 10, l1: float = 0.0,
                weight_decay: float = 0.01) -> tuple[float, torch.Tensor, float]:
    """SAEBench's linear probe: BCE (+ ``l1``·Σ|w|), AdamW, best **test** accuracy over epochs
    with early stopping (optimistic by design, METRICS.md §3.2 step 6). Returns the best
    accuracy and the weight vector and bias of that epoch."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x_train.shape[1], 1)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    yt = torch.tensor(y_train, dtype=torch.float32)
    ye = torch.tensor(y_test, dtype=torch.float32)
    best, best_w, best_b, stale = -1.0, probe.weight.detach()[0].clone(), 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(x_train.shape[0], generator=gen)
        for i in range(0, len(order), batch_size):
            sel = order[i:i + batch_size]
            logits = probe(x_train[sel])[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt[sel])
            if l1:
                loss = loss + l1 * probe.weight.abs().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = float(((probe(x_test)[:, 0] > 0).float() == ye).float().mean())
        if acc > best:
            best, best_w, best_b, stale = acc, probe.weight.detach()[0].clone(), \
                float(probe.bias.detach()), 0
        else:
            stale += 1
            if stale >= patience:
                break
    return best, best_w, best_b


def accuracy(x: torch.Tensor, y: np.ndarray, w: torch.Tensor, b: float) -> float:
    """Accuracy of the linear probe ``(w, b)`` (positive iff logit > 0)."""
    pred = (x @ w + b > 0).numpy()
    return float((pred == (y == 1)).mean())


@torch.inference_mode()
def sae_codes_at_zero(sae) -> torch.Tensor:
    """``encode(0)``: what a zeroed (padded or special) position encodes to."""
    zero = torch.zeros(1, sae.cfg.d_in, device=sae.W_dec.device, dtype=sae.dtype)
    return sae.encode(zero)[0].float().cpu()


def ablated(pooled: torch.Tensor, codes: torch.Tensor, invalid_ratio: torch.Tensor,
            enc0: torch.Tensor, w_dec: torch.Tensor, latents: torch.Tensor,
            remask: bool) -> torch.Tensor:
    """Mean-pooled activations after zeroing ``latents`` with the error term kept.

    Without ``remask`` (SAEBench), zeroed positions also contribute ``-encode(0)`` terms.
    """
    removed = codes[:, latents]
    if not remask:
        removed = removed + invalid_ratio[:, None] * enc0[latents][None, :]
    return pooled - removed @ w_dec[latents]


def top_latents(effect: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` latents with the largest strictly positive effect, largest first, fewer if
    fewer are positive. A latent with zero or negative effect does not carry the probed
    class, so ablating it is no targeted ablation; SAEBench's ``torch.topk`` fills N with
    such latents (in no defined order among ties) once N exceeds the positive ones, which
    the ``standard`` suite's N = 100 and 500 do."""
    order = torch.argsort(effect, descending=True, stable=True)
    return order[: min(n, int((effect > 0).sum()))]


def top_k_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                   y_test: np.ndarray, k: int) -> float:
    """Logistic regression (L2, C=1) on the k dimensions with the largest train mean
    difference, kept in column order (METRICS.md §3.2 step 7)."""
    from sklearn.linear_model import LogisticRegression

    diff = np.abs(x_train[y_train == 1].mean(0) - x_train[y_train == 0].mean(0))
    cols = np.sort(np.argsort(-diff, kind="stable")[:k])
    clf = LogisticRegression(C=1.0, max_iter=1000)
    clf.fit(x_train[:, cols].astype(np.float32), y_train)
    return float(clf.score(x_test[:, cols].astype(np.float32), y_test))
