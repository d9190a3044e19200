"""Absorption: planted absorbing latents, feature splitting, and the not-fatal path."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_saebench.evals import absorption as ab
from tests.helpers import make_runner


def _dictionary():
    d = torch.zeros(8)
    d[0] = 1.0
    other = torch.zeros(8)
    other[1] = 1.0
    w_dec = torch.stack([d, 0.9 * d + 0.436 * other, other, -d])  # main, absorber, unrelated
    return d, w_dec


@pytest.mark.parametrize("codes, fraction, full", [
    ([0.0, 2.2, 0.0, 0.0], 1.0, True),     # the main latent is silent, the absorber takes over
    ([2.0, 0.0, 0.0, 0.0], 0.0, False),    # the main latent carries the direction
    ([1.0, 1.2, 0.0, 0.0], 0.5, False),    # shared: A = min(T, P - M) = 1, M = 1
    ([0.0, 0.0, 3.0, 0.0], 0.0, False),    # nothing aligned fires: T / P < 0.4
])
def test_planted_absorption_is_detected(codes, fraction, full):
    d, w_dec = _dictionary()
    x = 2 * d
    got_fraction, got_full = ab.absorption_of(x, torch.tensor(codes), d, w_dec, split=[0])
    assert got_fraction == pytest.approx(fraction, abs=0.02)
    assert got_full is full


def test_feature_splitting_stops_when_f1_stops_jumping():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    codes = rng.random((600, 5)) * 0.1
    codes[:, 3] += (y == 1) * 2.0  # latent 3 alone detects letter 1
    weights = torch.zeros(26, 5)
    weights[1] = torch.tensor([0.0, 0.2, 0.1, 1.0, 0.3])
    cfg = ab.PRESETS["fast"]
    split = ab.split_features(codes[:400], y[:400], codes[400:], y[400:], weights, 1, cfg)
    assert split == [3]


class _Tok:
    """A tokenizer stand-in: byte-level entries plus one SentencePiece ``▁`` entry whose
    decoder drops the space, as SentencePiece does for a lone token."""

    pieces = ["the", "Ġcat", "ing!", "b4", "▁dog", " "]
    texts = ["the", " cat", "ing!", "b4", "dog", " "]

    def __len__(self):
        return len(self.texts)

    def decode(self, ids):
        return self.texts[ids[0]]

    def convert_ids_to_tokens(self, i):
        return self.pieces[i]


def test_vocabulary_keeps_the_leading_space_as_saebench():
    assert ab.vocabulary(_Tok(), 10, 0) == [" cat", " dog", "the"]
    assert ab.labels_of([" cat", "the", " Dog"]).tolist() == [2, 19, 3]
    prompt, prefix = ab.build_prompt(" dog", [" cat", "emu"], "{word} has the first letter:")
    assert prompt == ("\n cat has the first letter: C\nemu has the first letter: E\n"
                      " dog has the first letter:")
    assert prefix.endswith("\n dog")


def test_sample_is_letter_stratified():
    def names(letter, n, space=""):
        return [space + letter + chr(97 + i // 26) + chr(97 + i % 26) for i in range(n)]

    words = names("a", 50) + names("b", 2) + names("b", 1, " ") + names("c", 20)
    sample = ab.stratified_sample(words, 30, seed=1)
    by_letter = {c: sum(w.strip()[0] == c for w in sample) for c in "abc"}
    assert by_letter == {"a": 14, "b": 3, "c": 13}  # b is short; a and c share the rest
    assert sample == sorted(sample) == ab.stratified_sample(words, 30, seed=1)
    assert sample != ab.stratified_sample(words, 30, seed=2)
    assert sorted(ab.stratified_sample(words, 1000, seed=1)) == sorted(set(words))


def _fraction_by_hand(x, codes, direction, w_dec, split):
    """METRICS.md §7.2 step 9, written out with plain floats, one latent at a time."""
    norm = math.sqrt(sum(v * v for v in direction))
    d = [v / norm for v in direction]
    total = sum(a * b for a, b in zip(x, d, strict=True))
    proj, cos = [], []
    for f, row in enumerate(w_dec):
        row_norm = math.sqrt(sum(v * v for v in row))
        c = sum(a * b for a, b in zip(row, d, strict=True)) / row_norm
        cos.append(c)
        proj.append(codes[f] * c)
    main = sum(proj[f] for f in split)
    absorbers = sorted((proj[f] for f in range(len(w_dec))
                        if f not in split and cos[f] >= 0.1 and proj[f] > 0), reverse=True)
    top = sum(absorbers[:3])
    if main >= total or total <= 0 or top / total < 0.4:
        return 0.0
    if main <= 0:
        return 1.0
    a = min(top, total - main)
    return min(max(a / (a + main), 0.0), 1.0)


def test_planted_partial_absorption_matches_a_hand_computation():
    # x = 2 d. The main latent (decoder d) carries 1 of the 2; a token latent whose decoder is
    # 0.6 d + 0.8 e fires at 1.5 and carries 0.9; P = 2, M = 1, T = 0.9 (T/P = 0.45 >= 0.4),
    # A = min(0.9, 2 - 1) = 0.9, so the fraction is 0.9 / 1.9.
    d, e, u = torch.eye(3)
    w_dec = torch.stack([d, 0.6 * d + 0.8 * e, u, -d, 0.05 * d + e])
    codes = torch.tensor([1.0, 1.5, 4.0, 2.0, 3.0])  # u: unrelated, -d: negative, last: cos < 0.1
    x = 2 * d
    fraction, full = ab.absorption_of(x, codes, d, w_dec, split=[0])
    assert fraction == pytest.approx(0.9 / 1.9, abs=1e-6)
    assert fraction == pytest.approx(_fraction_by_hand(x.tolist(), codes.tolist(), d.tolist(),
                                                       w_dec.tolist(), [0]), abs=1e-6)
    assert full is False  # the main latent still fires


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3))
def test_absorption_fraction_equals_the_hand_computation(seed, n_split):
    gen = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(12, 6, generator=gen)
    direction = torch.randn(6, generator=gen)
    codes = torch.relu(torch.randn(12, generator=gen)) * 2
    x = direction / direction.norm() * 3 + 0.3 * torch.randn(6, generator=gen)
    split = list(range(n_split))
    got, _ = ab.absorption_of(x, codes, direction, w_dec, split)
    want = _fraction_by_hand(x.tolist(), codes.tolist(), direction.tolist(), w_dec.tolist(),
                             split)
    assert got == pytest.approx(want, abs=1e-5)


def test_unscorable_letters_are_reported_not_fatal(tiny_world):
    cfg = dataclasses.replace(ab.PRESETS["fast"], max_vocab_words=300, gt_probe_epochs=5,
                              k_sparse_probe_epochs=5)
    runner = make_runner(tiny_world.trained, absorption=cfg)
    res = runner.results("trained", ["absorption"]).evals["absorption_first_letter"]
    scored = res.unstructured["letters_scored"]
    not_scored = res.unstructured["letters_not_scored"]
    assert len(scored) + len(not_scored) == 26
    assert all("F1" in why or "true positives" in why for why in not_scored.values())
    metric = "absorption_first_letter.mean.mean_absorption_fraction_score"
    if not scored:
        assert res.metrics[metric] is None and "no letter could be scored" in res.reasons[metric]
    else:
        assert 0 <= res.metrics[metric] <= 1


def test_numpy_values_are_recorded_as_python_floats():
    """Absorption's means and stderrs are numpy scalars; their repr ("np.float64(...)") once
    reached the gate items' JUnit properties and broke the run summary."""
    import numpy as np

    from pytest_saebench.evals.base import EvalResult

    res = EvalResult("absorption_first_letter", {})
    res.set("m", np.float64(0.25), np.float32(0.5))
    assert type(res.metrics["m"]) is float and type(res.stderr["m"]) is float
    assert repr(res.stderr["m"]) == "0.5"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=40))
def test_binary_f1_equals_sklearn(pairs):
    from sklearn.metrics import f1_score

    truth = np.array([t for t, _ in pairs], dtype=bool)
    pred = np.array([p for _, p in pairs], dtype=bool)
    want = f1_score(truth.astype(int), pred.astype(int), zero_division=0.0) if pairs else 0.0
    assert ab.binary_f1(truth, pred) == pytest.approx(want, abs=1e-12)
