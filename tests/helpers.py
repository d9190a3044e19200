"""Test helpers: run the core eval through the Runner on a checkpoint directory."""

from __future__ import annotations

from pathlib import Path

from pytest_saebench.config import Settings
from pytest_saebench.evals import metric_registry
from pytest_saebench.evals.core import Config
from pytest_saebench.loading.checkpoints import discover_all
from pytest_saebench.runner import Runner

SMALL = Config(batch_size_prompts=4, n_eval_reconstruction_batches=2,
               n_eval_sparsity_variance_batches=4, context_size=0)


def make_runner(sae_dir: Path | str, model: str = "auto", dataset: str = "auto",
                cfg: Config = SMALL, seed: int = 42, **others) -> Runner:
    """A Runner over the checkpoint(s) in ``sae_dir`` whose suite is core with ``cfg`` plus
    any ``eval_name=Config`` given in ``others``."""
    settings = Settings(sae_paths=(str(sae_dir),), model=model, dataset=dataset, device="cpu",
                        seed=seed, results_json=None)
    return Runner(settings, discover_all([str(sae_dir)]), {"core": cfg, **others},
                  metric_registry())


def run_core(sae_dir: Path | str, cfg: Config = SMALL, seed: int = 42, **kwargs):
    """Core ``EvalResult`` for the single checkpoint in ``sae_dir``."""
    runner = make_runner(sae_dir, cfg=cfg, seed=seed, **kwargs)
    sae_id = next(iter(runner.checkpoints))
    return runner.results(sae_id).evals["core"]


def random_sae_like(trained: Path, directory: Path, seed: int) -> Path:
    """Save to ``directory`` a randomly initialised SAE with ``trained``'s architecture,
    shape, k and metadata (the "random SAE" a trained one must beat)."""
    import json

    from pytest_saebench import testing as T

    cfg = json.loads((Path(trained) / "cfg.json").read_text())
    T.make_sae(cfg["d_in"], cfg["d_sae"], cfg["architecture"], k=cfg.get("k", 8),
               metadata=cfg["metadata"], seed=seed).save_model(directory)
    return directory
