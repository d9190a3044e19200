"""absorption_first_letter: feature absorption on the first-letter task (METRICS.md §7).

The word set is SAEBench's: every vocabulary entry that is letters only once one optional
leading space is removed, kept with its space (`` cat`` and ``cat`` are different tokens and
both are scored; a SentencePiece ``▁`` gets its space back). Differences from SAEBench 0.6.0,
all deliberate:

- a letter-stratified seeded sample of ``max_vocab_words`` words (SAEBench: all of them), the
  same number per letter where a letter has enough; the summary is a mean over letters, so
  equal strata make it least noisy for a given number of forward passes;
- the word's position is found per prompt from the tokenization (not a fixed -6), and a word
  that does not stay one token in its prompt is dropped (counted in
  ``eval_result_unstructured.words_kept``; on the reference model and SmolLM2 almost none);
- the vocabulary split and ICL sampling are seeded;
- letters whose ground-truth probe is too weak are reported in ``eval_result_unstructured``
  instead of aborting the whole run.
"""

from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass

import numpy as np
import torch

from pytest_saebench.activations import hook_activations
from pytest_saebench.errors import SaebenchError
from pytest_saebench.evals.base import (
    EvalContext,
    EvalResult,
    input_fingerprint,
    record_mean_units,
)
from pytest_saebench.evals.probing import derive_seed
from pytest_saebench.gates.registry import MetricSpec

EVAL_TYPE_ID = "absorption_first_letter"
# Reported as not computed for a transcoder (it reads one hook and writes another):
NOT_FOR_TRANSCODERS = (
    "it compares decoder rows with probe directions in the input hook's space, and a "
    "transcoder's decoder writes another hook")
LETTERS = string.ascii_lowercase


@dataclass(frozen=True)
class Config:
    """Absorption settings (SAEBench names where SAEBench has them)."""

    prompt_template: str = "{word} has the first letter:"
    max_vocab_words: int = 4000
    n_icl_examples: int = 10
    train_fraction: float = 0.8
    gt_probe_epochs: int = 50
    k_sparse_probe_epochs: int = 50
    k_sparse_probe_l1_decay: float = 0.01
    max_k_value: int = 10
    f1_jump_threshold: float = 0.03
    min_gt_probe_f1: float = 0.6
    llm_batch_size: int = 16


PRESETS = {"fast": Config(max_vocab_words=2000), "standard": Config(), "full": Config()}

# warn by default: on the reference ladder both move by less than 3 noise units from 25 to
# 6000 steps, and full absorption is not monotone in training (benchmarks/gate_signal.py).
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(f"{EVAL_TYPE_ID}.mean.mean_absorption_fraction_score", "down", "absorption",
               default_severity="warn"),
    MetricSpec(f"{EVAL_TYPE_ID}.mean.mean_full_absorption_score", "down", "full absorption",
               default_severity="warn"),
    MetricSpec(f"{EVAL_TYPE_ID}.mean.mean_num_split_features", "info", "split features"),
    MetricSpec(f"{EVAL_TYPE_ID}.mean.std_dev_absorption_fraction_score", "info", "std"),
    MetricSpec(f"{EVAL_TYPE_ID}.mean.std_dev_full_absorption_score", "info", "std"),
    MetricSpec(f"{EVAL_TYPE_ID}.mean.std_dev_num_split_features", "info", "std"),
)


def token_strings(tokenizer) -> list[str]:
    """Each vocabulary entry as text, with the leading space a SentencePiece ``▁`` stands for
    restored (its decoder drops it for a lone token)."""
    out = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        piece = tokenizer.convert_ids_to_tokens(i)
        if isinstance(piece, str) and piece.startswith("\u2581") and not text.startswith(" "):
            text = " " + text
        out.append(text)
    return out


def stratified_sample(words: list[str], limit: int, seed: int) -> list[str]:
    """At most ``limit`` words with the same number per first letter where a letter has
    enough (water-filling: letters with fewer words give their share to the others), seeded,
    in sorted order. The summary metrics are means over letters, so equal strata minimise
    their variance for a given number of words."""
    groups: dict[str, list[str]] = {}
    for word in sorted(words):
        groups.setdefault(word.strip()[0].lower(), []).append(word)
    quota, left = {}, limit
    for n, letter in enumerate(sorted(groups, key=lambda c: (len(groups[c]), c))):
        quota[letter] = min(len(groups[letter]), left // (len(groups) - n))
        left -= quota[letter]
    rng = np.random.default_rng(derive_seed(seed, "absorption", "vocab"))
    chosen = []
    for letter in sorted(groups):
        pool = groups[letter]
        picks = rng.choice(len(pool), size=quota[letter], replace=False)
        chosen += [pool[i] for i in picks]
    return sorted(chosen)


def vocabulary(tokenizer, limit: int, seed: int) -> list[str]:
    """SAEBench's word set: vocabulary entries that are letters only once one optional
    leading space is removed, kept with their space (`` cat`` and ``cat`` are different
    tokens); a letter-stratified seeded sample of at most ``limit`` of them."""
    words = {t for t in token_strings(tokenizer)
             if re.fullmatch(r"[A-Za-z]+", t[1:] if t.startswith(" ") else t)}
    return stratified_sample(sorted(words), limit, seed)


def build_prompt(word: str, examples: list[str], template: str) -> tuple[str, str]:
    """``(prompt, prefix ending with the word)``; examples are answered, the word is not."""
    shots = "\n".join(f"{template.format(word=ex)} {ex.strip()[0].upper()}" for ex in examples)
    prefix = f"\n{shots}\n{word}"
    return prefix + template.format(word=word)[len(word):], prefix


@torch.inference_mode()
def word_activations(ctx: EvalContext, words: list[str], pool: list[str], cfg: Config,
                     purpose: str) -> tuple[list[str], torch.Tensor]:
    """Activation at each word's last token in its own prompt; words that do not stay a
    single token in context are dropped. Returns the kept words and ``[N, d_in]``."""
    tok = ctx.model.tokenizer
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    rng = np.random.default_rng(derive_seed(ctx.seed, "absorption", purpose))
    rows: list[tuple[str, list[int], int]] = []
    n_ctx = ctx.model.cfg.n_ctx
    for word in words:
        candidates = [w for w in pool if w != word]
        shots = min(cfg.n_icl_examples, len(candidates))
        examples = [candidates[i] for i in rng.choice(len(candidates), shots, replace=False)]
        prompt, prefix = build_prompt(word, examples, cfg.prompt_template)
        ids = bos + tok(prompt, add_special_tokens=False)["input_ids"]
        while len(ids) > n_ctx and examples:  # short-context models get fewer examples
            examples = examples[:-1]
            prompt, prefix = build_prompt(word, examples, cfg.prompt_template)
            ids = bos + tok(prompt, add_special_tokens=False)["input_ids"]
        before = bos + tok(prefix[: -len(word)], add_special_tokens=False)["input_ids"]
        upto = bos + tok(prefix, add_special_tokens=False)["input_ids"]
        if len(upto) != len(before) + 1 or ids[:len(upto)] != upto:
            continue  # the word is split, or merges with its neighbours
        rows.append((word, ids, len(upto) - 1))
    kept, acts = [r[0] for r in rows], []
    for i in range(0, len(rows), cfg.llm_batch_size):
        batch = rows[i:i + cfg.llm_batch_size]
        width = max(len(r[1]) for r in batch)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        tokens = torch.tensor([r[1] + [pad] * (width - len(r[1])) for r in batch])
        out = hook_activations(ctx.model, tokens.to(ctx.model.cfg.device), ctx.loaded.hook)
        acts.append(out[torch.arange(len(batch)), torch.tensor([r[2] for r in batch])].cpu())
    return kept, torch.cat(acts) if acts else torch.zeros(0, ctx.loaded.d_in)


def labels_of(words: list[str]) -> torch.Tensor:
    """Letter index 0-25 of each word's first letter."""
    return torch.tensor([LETTERS.index(w.strip()[0].lower()) for w in words])


def train_multiprobe(x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, lr: float,
                     weight_decay: float, l1: float, seed: int) -> torch.nn.Linear:
    """26 one-vs-rest logits, BCE with per-letter ``pos_weight``, Adam with exponential decay
    from ``lr`` to 1e-5 over the epochs, optional ``l1`` · mean_c Σ_f |w_cf|."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], 26)
    targets = torch.nn.functional.one_hot(y, 26).float()
    n_pos = targets.sum(0)
    pos_weight = (len(y) - n_pos) / n_pos.clamp_min(1)
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=(1e-5 / lr) ** (1 / epochs))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            sel = order[i:i + batch_size]
            loss = loss_fn(probe(x[sel]), targets[sel])
            if l1:
                loss = loss + l1 * probe.weight.abs().sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return probe


def f1_per_letter(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """F1 of ``logit > 0`` against ``y == c`` for each letter (0 where undefined)."""
    pred = (logits > 0).numpy()
    truth = torch.nn.functional.one_hot(y, 26).bool().numpy()
    tp = (pred & truth).sum(0)
    denom = pred.sum(0) + truth.sum(0)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def _llm_side(ctx: EvalContext, cfg: Config) -> dict[str, torch.Tensor]:
    """Word activations, letters and the ground-truth probe, shared by all SAEs (and kept in
    the tensor cache): ``x_*`` / ``y_*`` for train, test and the probe's true positives."""
    # "layout" names what the entry holds; bump it when _compute_llm_side's output changes.
    parts = ctx.cache_parts(config=dataclasses.asdict(cfg), tokenizer_size=len(
        ctx.model.tokenizer), layout=2)
    return ctx.cache.get("absorption-llm", parts, lambda: _compute_llm_side(ctx, cfg))


def _compute_llm_side(ctx: EvalContext, cfg: Config) -> dict[str, torch.Tensor]:
    words = vocabulary(ctx.model.tokenizer, cfg.max_vocab_words, ctx.seed)
    order = np.random.default_rng(derive_seed(ctx.seed, "absorption", "split")).permutation(
        len(words))
    cut = int(len(words) * cfg.train_fraction)
    train_words = [words[i] for i in order[:cut]]
    test_words = [words[i] for i in order[cut:]]
    train_words, x_train = word_activations(ctx, train_words, train_words, cfg, "train")
    test_words, x_test = word_activations(ctx, test_words, test_words, cfg, "test")
    if not train_words or not test_words:
        raise SaebenchError(
            f"absorption: no vocabulary word of model '{ctx.model.cfg.model_name}' stays a single "
            f"token in the prompt '{cfg.prompt_template}'; this tokenizer cannot run the eval "
            "(drop it with select-evals)")
    y_train, y_test = labels_of(train_words), labels_of(test_words)
    probe = train_multiprobe(x_train, y_train, cfg.gt_probe_epochs, 64, 1e-2, 1e-4, 0.0,
                             derive_seed(ctx.seed, "absorption", "gt-probe"))
    with torch.no_grad():
        test_logits = probe(x_test)
    # Probe true positives get a fresh prompt with examples from the whole vocabulary.
    tp = [w for i, w in enumerate(test_words) if test_logits[i, y_test[i]] > 0]
    tp_words, x_tp = word_activations(ctx, tp, words, cfg, "absorption")
    return {"x_train": x_train, "x_test": x_test, "x_tp": x_tp, "y_train": y_train,
            "y_test": y_test, "y_tp": labels_of(tp_words) if tp_words else
            torch.zeros(0, dtype=torch.long), "gt_w": probe.weight.detach().clone(),
            "gt_f1": torch.from_numpy(f1_per_letter(test_logits, y_test)),
            "n_words": torch.tensor(len(words)),
            # Sampled words that stayed one token in their prompt, with and without a space.
            "kept": torch.tensor([sum(w.startswith(" ") for w in train_words + test_words),
                                  sum(not w.startswith(" ") for w in train_words + test_words)])}


def split_features(codes_train, y_train, codes_test, y_test, weights: torch.Tensor,
                   letter: int, cfg: Config) -> list[int]:
    """Feature splitting: grow k while the k-sparse probe's test F1 jumps by more than
    ``f1_jump_threshold``; return the latents of the last accepted k."""
    from sklearn.linear_model import LogisticRegression

    ranked = torch.argsort(weights[letter], descending=True, stable=True).tolist()
    best, chosen = -100.0, ranked[:1]
    for k in range(1, cfg.max_k_value + 1):
        feats = ranked[:k]
        clf = LogisticRegression(max_iter=500, class_weight="balanced")
        clf.fit(codes_train[:, feats], (y_train == letter).astype(int))
        f1 = binary_f1(y_test == letter, clf.predict(codes_test[:, feats]) == 1)
        if f1 <= best + cfg.f1_jump_threshold:
            break
        best, chosen = f1, feats
    return chosen


def binary_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """F1 of boolean ``pred`` against ``truth``; 0 when undefined (sklearn's
    ``zero_division=0``), without sklearn's per-call input validation."""
    tp = int((truth & pred).sum())
    denom = int(truth.sum()) + int(pred.sum())
    return 2 * tp / denom if denom else 0.0


def letter_cosines(direction: torch.Tensor, w_dec: torch.Tensor) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """The unit probe direction and every latent's decoder cosine with it."""
    d = direction / direction.norm()
    return d, (w_dec @ d) / w_dec.norm(dim=-1).clamp_min(1e-12)


def absorption_of(x: torch.Tensor, codes: torch.Tensor, direction: torch.Tensor,
                  w_dec: torch.Tensor, split: list[int],
                  cosines: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[float, bool]:
    """Absorption fraction and full-absorption flag of one word (METRICS.md §7.2 step 9);
    ``cosines``: :func:`letter_cosines` of the letter, when already computed."""
    d, cos = cosines or letter_cosines(direction, w_dec)
    proj = codes * cos
    total = float(x @ d)
    main = float(proj[split].sum())
    mask = torch.ones_like(cos, dtype=torch.bool)
    mask[split] = False
    absorbers = proj[mask & (cos >= 0.1) & (proj > 0)]
    top = float(absorbers.topk(min(3, absorbers.numel())).values.sum())
    if main >= total or total <= 0 or top / total < 0.4:
        fraction = 0.0
    elif main <= 0:
        fraction = 1.0
    else:
        a = min(top, total - main)
        fraction = float(np.clip(a / (a + main), 0, 1))
    best = int(proj.argmax())
    full = bool((codes[split] < 1e-8).all() and cos[best] >= 0.025 and total >= 0
                and float(proj[best]) / total >= 0.4) if total > 0 else False
    return fraction, full


@torch.inference_mode()
def _encode(sae, x: torch.Tensor) -> torch.Tensor:
    return sae.encode(x.to(sae.W_dec.device, sae.dtype)).float().cpu()


def run(ctx: EvalContext, cfg: Config) -> EvalResult:
    """Run the first-letter absorption eval."""
    side = _llm_side(ctx, cfg)
    sae = ctx.loaded.sae
    res = EvalResult(EVAL_TYPE_ID, {**dataclasses.asdict(cfg), "random_seed": ctx.seed,
                                    "model_name": ctx.model.cfg.model_name,
                                    "hook_name": ctx.loaded.hook.name,
                                    "prompt_token_pos": "computed per prompt",
                                    "n_vocab_words": int(side["n_words"])})
    c_train, c_test, c_tp = (_encode(sae, side[k]) for k in ("x_train", "x_test", "x_tp"))
    with torch.enable_grad():
        l1_probe = train_multiprobe(c_train, side["y_train"], cfg.k_sparse_probe_epochs, 4096,
                                    1e-2, 1e-6, cfg.k_sparse_probe_l1_decay,
                                    derive_seed(ctx.seed, "absorption", "l1-probe"))
    weights = l1_probe.weight.detach()
    w_dec = sae.W_dec.detach().float().cpu()
    gt_w, y_tp, gt_f1 = side["gt_w"], side["y_tp"], side["gt_f1"].numpy()
    rows, skipped = [], {}
    for letter, name in enumerate(LETTERS):
        f1 = float(gt_f1[letter])
        if not f1 > cfg.min_gt_probe_f1:
            skipped[name] = f"ground-truth probe F1 {f1:.2f} <= {cfg.min_gt_probe_f1}"
            continue
        idx = (y_tp == letter).nonzero().flatten().tolist()
        if not idx:
            skipped[name] = "no probe true positives among the test words"
            continue
        split = split_features(c_train.numpy(), side["y_train"].numpy(), c_test.numpy(),
                               side["y_test"].numpy(), weights, letter, cfg)
        cosines = letter_cosines(gt_w[letter], w_dec)
        scores = [absorption_of(side["x_tp"][i], c_tp[i], gt_w[letter], w_dec, split, cosines)
                  for i in idx]
        rows.append({"first_letter": name,
                     "mean_absorption_fraction": float(np.mean([s[0] for s in scores])),
                     "full_absorption_rate": float(np.mean([s[1] for s in scores])),
                     "num_full_absorption": int(sum(s[1] for s in scores)),
                     "num_probe_true_positives": len(idx), "num_split_features": len(split),
                     "split_features": split})
    res.details = rows
    kept = side["kept"].tolist()
    res.unstructured = {"letters_scored": [r["first_letter"] for r in rows],
                        "words_kept": {"with_leading_space": kept[0], "without": kept[1],
                                       "dropped": int(side["n_words"]) - sum(kept)},
                        "letters_not_scored": skipped,
                        "ground_truth_f1": dict(zip(LETTERS, gt_f1.round(4).tolist(),
                                                    strict=True))}
    keys = (("absorption_fraction_score", "mean_absorption_fraction"),
            ("full_absorption_score", "full_absorption_rate"),
            ("num_split_features", "num_split_features"))
    why = (f"no letter could be scored ({len(skipped)} skipped; see eval_result_unstructured)"
           if not rows else None)
    for key, column in keys:
        values = np.array([r[column] for r in rows], dtype=float)
        mean = float(values.mean()) if rows else None
        std = float(values.std(ddof=1)) if len(rows) > 1 else None
        stderr = std / np.sqrt(len(rows)) if std is not None else None
        res.set(f"{EVAL_TYPE_ID}.mean.mean_{key}", mean, stderr, reason=why)
        res.set(f"{EVAL_TYPE_ID}.mean.std_dev_{key}", std,
                reason=why or "needs at least two scored letters")
    record_mean_units(res, "letter", {r["first_letter"]: r for r in rows},
                      {f"{EVAL_TYPE_ID}.mean.mean_{key}": column for key, column in keys},
                      input_fingerprint(ctx, EVAL_TYPE_ID, config=dataclasses.asdict(cfg),
                                        seed=ctx.seed, vocabulary=_vocabulary_digest(ctx)))
    return res


def _vocabulary_digest(ctx: EvalContext) -> str:
    """What decides the words each letter is scored on besides the config and the seed: the
    tokenizer's vocabulary (a revision of it never pairs with the old one)."""
    import hashlib
    import json

    vocab = sorted(ctx.model.tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]
