"""Synthetic ground truth: activations made from a known sparse dictionary in superposition,
and scores of how well an SAE recovers it. Needs no language model, so a training repository
can test its trainer in CI in seconds (README, "Synthetic ground truth").

    data = generate(SyntheticConfig(n_features=256, d=64), n=20_000)
    sae = my_trainer(data.activations)            # the code under test
    scores = data.score(sae)                      # {"mean_max_cosine": ..., ...}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class SyntheticConfig:
    """How the activations are made.

    ``n_features`` unit directions in ``d`` dimensions (superposition when n_features > d);
    each fires with probability ``p_active`` per sample, with magnitude ``1 + |N(0, s)|``;
    ``correlation`` in [0, 1) makes features of the same block of ``block_size`` co-fire.
    """

    n_features: int = 256
    d: int = 64
    p_active: float = 0.02
    magnitude_std: float = 0.5
    correlation: float = 0.0
    block_size: int = 8
    seed: int = 0


@dataclass
class SyntheticData:
    """Generated activations with their ground truth."""

    config: SyntheticConfig
    features: torch.Tensor  # [n_features, d], unit rows
    codes: torch.Tensor  # [n, n_features], the planted sparse codes
    activations: torch.Tensor  # [n, d] = codes @ features

    def score(self, sae: Any = None, decoder: torch.Tensor | None = None,
              codes: torch.Tensor | None = None, threshold: float = 0.9) -> dict[str, float]:
        """Recovery scores of an SAE (anything with ``W_dec`` and ``encode``) or of a
        ``decoder`` ``[d_sae, d]`` and optional learned ``codes`` ``[n, d_sae]``."""
        if sae is not None:
            decoder = sae.W_dec.detach().float().cpu()
            with torch.no_grad():
                codes = sae.encode(self.activations.to(sae.W_dec.device, sae.W_dec.dtype))
            codes = codes.float().cpu()
        if decoder is None:
            raise ValueError("pass an SAE or a decoder matrix")
        return recovery_scores(self.features, decoder, self.codes, codes, threshold)


def generate(config: SyntheticConfig = SyntheticConfig(), n: int = 20_000) -> SyntheticData:
    """``n`` samples from ``config`` (deterministic for a seed)."""
    gen = torch.Generator().manual_seed(config.seed)
    features = torch.randn(config.n_features, config.d, generator=gen)
    features /= features.norm(dim=-1, keepdim=True)
    threshold = math.sqrt(2) * torch.erfinv(torch.tensor(2 * config.p_active - 1))
    n_blocks = math.ceil(config.n_features / config.block_size)
    shared = torch.randn(n, n_blocks, generator=gen).repeat_interleave(config.block_size, dim=1)
    own = torch.randn(n, config.n_features, generator=gen)
    rho = config.correlation
    latent = math.sqrt(rho) * shared[:, :config.n_features] + math.sqrt(1 - rho) * own
    active = latent < threshold  # a Gaussian copula: marginal P(active) = p_active
    magnitude = 1 + (torch.randn(n, config.n_features, generator=gen) * config.magnitude_std).abs()
    codes = active * magnitude
    return SyntheticData(config, features, codes, codes @ features)


def recovery_scores(features: torch.Tensor, decoder: torch.Tensor,
                    planted_codes: torch.Tensor | None = None,
                    learned_codes: torch.Tensor | None = None,
                    threshold: float = 0.9) -> dict[str, float]:
    """``mean_max_cosine``: mean over planted features of the best cosine with a decoder row;
    ``frac_recovered``: share of planted features with such a cosine above ``threshold``;
    ``mcc``: mean |Pearson correlation| of planted and learned codes under the best one-to-one
    matching (only when both codes are given)."""
    from scipy.optimize import linear_sum_assignment

    f = torch.nn.functional.normalize(features.float(), dim=-1)
    w = torch.nn.functional.normalize(decoder.float(), dim=-1)
    best = (f @ w.T).max(dim=1).values
    out = {"mean_max_cosine": float(best.mean()),
           "frac_recovered": float((best > threshold).float().mean())}
    if planted_codes is not None and learned_codes is not None:
        a = _standardize(planted_codes.double())
        b = _standardize(learned_codes.double())
        corr = (a.T @ b / a.shape[0]).abs().numpy()
        rows, cols = linear_sum_assignment(-corr)
        matched = np.zeros(corr.shape[0])
        matched[rows] = corr[rows, cols]
        out["mcc"] = float(matched.mean())
    return out


def _standardize(x: torch.Tensor) -> torch.Tensor:
    std = x.std(0, unbiased=False)
    return (x - x.mean(0)) / torch.where(std > 0, std, torch.ones_like(std))
