"""meta_structure_decoder_variance: how much of the decoder rows' variance a small BatchTopK
meta-SAE explains (METRICS.md §11; Matryoshka-SAE paper, App. D.1). Weight-only: no model
forward, no data, so it runs in every suite.

The meta-SAE is SAELens's own ``BatchTopKTrainingSAE`` trained by SAELens's ``SAETrainer`` on
decoder rows sampled with replacement. Unlike SAEBench's library call (which seeds only in its
CLI) it is always seeded, inside a forked RNG so the caller's random state is untouched.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch

from pytest_saebench.evals.base import EvalContext, EvalResult
from pytest_saebench.gates.registry import MetricSpec

EVAL_TYPE_ID = "meta_structure_decoder_variance"
CATEGORY = "meta_structure"
# wall-clock time: recorded, never compared with a baseline (MetricSpec.volatile)
VOLATILE = (f"{EVAL_TYPE_ID}.{CATEGORY}.train_time_seconds",)


@dataclass(frozen=True)
class Config:
    """SAEBench's settings and names."""

    width_ratio: float = 0.25
    k: int = 4
    train_steps: int = 1500
    train_batch_size: int = 1024
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    autocast: bool = False  # SAEBench: True (CUDA mixed precision); off for exact CPU runs
    eval_batch_size: int = 4096
    dead_feature_window: int = 2000
    feature_sampling_window: int = 200
    dtype: str = "float32"


PRESETS = {
    "fast": Config(train_steps=300, train_batch_size=256),
    "standard": Config(),
    "full": Config(),
}

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(f"{EVAL_TYPE_ID}.{CATEGORY}.decoder_fraction_variance_explained", "info",
               "decoder variance a BatchTopK meta-SAE explains"),
    MetricSpec(f"{EVAL_TYPE_ID}.{CATEGORY}.final_reconstruction_mse", "info",
               "meta-SAE reconstruction MSE per decoder entry"),
    MetricSpec(VOLATILE[0], "info", "meta-SAE training time", unit="s", volatile=True),
)


def unit_rows(w_dec: torch.Tensor) -> torch.Tensor:
    """The decoder with each row at unit norm: the decoder-norm-folded ``W_dec`` whether or
    not the loaded SAE could be folded (zero rows stay zero)."""
    norms = w_dec.norm(dim=-1, keepdim=True)
    return torch.where(norms > 0, w_dec / norms.clamp_min(1e-12), w_dec)


def _rows(decoder: torch.Tensor, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        yield decoder[torch.randint(0, decoder.shape[0], (batch,), generator=gen)]


def _no_progress_bar():
    # SAETrainer.fit draws a tqdm bar (on stderr) per meta-SAE; tqdm reads TQDM_DISABLE only
    # when it is imported, so the bar is sent nowhere instead
    return contextlib.redirect_stderr(io.StringIO())


@torch.enable_grad()  # a conftest or library may have turned gradients off globally
def train_meta_sae(decoder: torch.Tensor, cfg: Config, seed: int):
    """A BatchTopK meta-SAE trained on ``decoder``'s rows with SAELens; returns it and the
    seconds training took."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    width = max(math.ceil(decoder.shape[0] * cfg.width_ratio), cfg.k)
    device = str(decoder.device)
    with torch.random.fork_rng(devices=[]), _no_progress_bar():
        torch.manual_seed(seed)
        meta = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(
            d_in=decoder.shape[1], d_sae=width, k=cfg.k, device=device, dtype=cfg.dtype,
            rescale_acts_by_decoder_norm=True))
        trainer_cfg = SAETrainerConfig(
            total_training_samples=cfg.train_steps * cfg.train_batch_size,
            train_batch_size_samples=cfg.train_batch_size, lr=cfg.learning_rate,
            lr_end=cfg.learning_rate, lr_scheduler_name="constant", lr_warm_up_steps=0,
            lr_decay_steps=0, n_restart_cycles=0, adam_beta1=0.9, adam_beta2=0.999,
            device=device, autocast=cfg.autocast, dead_feature_window=cfg.dead_feature_window,
            feature_sampling_window=cfg.feature_sampling_window, n_checkpoints=0,
            checkpoint_path=None, save_final_checkpoint=False,
            logger=LoggingConfig(log_to_wandb=False))
        gen = torch.Generator(device="cpu").manual_seed(seed)
        trainer = SAETrainer(cfg=trainer_cfg, sae=meta,
                             data_provider=_rows(decoder, cfg.train_batch_size, gen))
        for group in trainer.optimizer.param_groups:
            group["weight_decay"] = cfg.weight_decay
        started = time.perf_counter()
        meta = trainer.fit()
        seconds = time.perf_counter() - started
    return meta, seconds


@torch.no_grad()
def variance_explained(meta, decoder: torch.Tensor, batch: int) -> tuple[float, float]:
    """``(FVE, mse)``: ``1 - Σ‖row - recon‖² / Σ‖row - mean‖²`` (0 when the rows do not vary)
    and ``Σ‖row - recon‖² / (F·D)``, in eval mode over row chunks."""
    meta.eval()
    mean = decoder.mean(0, keepdim=True)
    residual = total = 0.0
    for i in range(0, decoder.shape[0], batch):
        rows = decoder[i:i + batch]
        residual += float(((rows - meta(rows)) ** 2).sum())
        total += float(((rows - mean) ** 2).sum())
    mse = residual / decoder.numel()
    return (0.0 if total == 0 else 1 - residual / total), mse


def run(ctx: EvalContext, cfg: Config) -> EvalResult:
    """Train the meta-SAE on this checkpoint's decoder and score it."""
    res = EvalResult(EVAL_TYPE_ID, {**asdict(cfg), "random_seed": ctx.seed})
    dtype = getattr(torch, cfg.dtype)
    decoder = unit_rows(ctx.loaded.sae.W_dec.detach().to(torch.float32)).to(dtype).contiguous()
    meta, seconds = train_meta_sae(decoder, cfg, ctx.seed)
    fve, mse = variance_explained(meta, decoder, cfg.eval_batch_size)
    res.set(METRICS[0].id, fve)
    res.set(METRICS[1].id, mse)
    res.set(VOLATILE[0], seconds)
    res.unstructured["meta_sae_width"] = int(meta.cfg.d_sae)
    return res
