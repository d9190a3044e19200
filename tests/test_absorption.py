"""Absorption: planted absorbing latents, feature splitting, and the not-fatal path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

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


def test_vocabulary_and_prompt():
    class Tok:
        def __len__(self):
            return 4

        def decode(self, ids):
            return ["the", " Cat", "ing!", "b4"][ids[0]]

    assert ab.vocabulary(Tok(), 10, 0) == ["Cat", "the"]
    prompt, prefix = ab.build_prompt("dog", ["cat", "emu"], "{word} has the first letter:")
    assert prompt == ("\ncat has the first letter: C\nemu has the first letter: E\n"
                      "dog has the first letter:")
    assert prefix.endswith("\ndog")


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
