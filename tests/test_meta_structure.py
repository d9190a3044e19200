"""meta_structure_decoder_variance: SAELens's BatchTopK meta-SAE on the decoder rows; the FVE
formula checked by hand, structure found where it was planted, seeded, and its training time
never compared with a baseline."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pytest_saebench.evals import meta_structure as M
from tests.helpers import make_runner

QUICK = dataclasses.replace(M.PRESETS["fast"], train_steps=150, train_batch_size=128)
FVE = f"{M.EVAL_TYPE_ID}.meta_structure.decoder_fraction_variance_explained"
MSE = f"{M.EVAL_TYPE_ID}.meta_structure.final_reconstruction_mse"


def _result(sae_dir, cfg=QUICK, seed=42):
    runner = make_runner(sae_dir, seed=seed, meta_structure=cfg)
    sae_id = next(iter(runner.checkpoints))
    return runner.results(sae_id, ["meta_structure"]).evals[M.EVAL_TYPE_ID]


def test_fve_and_mse_match_a_hand_computation():
    gen = torch.Generator().manual_seed(0)
    decoder = M.unit_rows(torch.randn(96, 16, generator=gen))
    meta, seconds = M.train_meta_sae(decoder, QUICK, seed=3)
    assert meta.cfg.d_sae == 24 and seconds > 0  # ceil(0.25 * 96)
    # one chunk: BatchTopK picks its top k over the whole batch even in eval mode, so the
    # chunking is part of the metric (SAEBench: chunks of eval_batch_size 4096)
    fve, mse = M.variance_explained(meta, decoder, batch=4096)
    with torch.no_grad():
        meta.eval()
        recon = meta(decoder)
    residual = ((decoder - recon) ** 2).sum().item()
    total = ((decoder - decoder.mean(0)) ** 2).sum().item()
    assert fve == pytest.approx(1 - residual / total, rel=1e-6)
    assert mse == pytest.approx(residual / (96 * 16), rel=1e-6)
    assert M.unit_rows(torch.zeros(2, 3)).abs().sum() == 0  # a dead row stays zero


def test_planted_shared_directions_explain_more_than_random_rows():
    """Rows that are each one of 8 directions (plus a little noise) are what a k=4 meta-SAE of
    width F/4 can explain; unrelated random rows are not."""
    gen = torch.Generator().manual_seed(1)
    atoms = torch.randn(8, 32, generator=gen)
    planted = M.unit_rows(atoms[torch.randint(0, 8, (256,), generator=gen)]
                          + 0.05 * torch.randn(256, 32, generator=gen))
    random = M.unit_rows(torch.randn(256, 32, generator=gen))
    scores = {}
    for name, rows in (("planted", planted), ("random", random)):
        meta, _ = M.train_meta_sae(rows, QUICK, seed=0)
        scores[name] = M.variance_explained(meta, rows, 4096)[0]
    assert scores["planted"] > 0.8 and scores["planted"] > scores["random"] + 0.3, scores


def test_seeded_and_leaves_the_callers_rng_alone(tiny_world):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    M.train_meta_sae(M.unit_rows(torch.ones(8, 4)), QUICK, seed=0)
    assert torch.rand(1) == expected_next  # training did not consume the global RNG
    first = _result(tiny_world.trained)
    again = _result(tiny_world.trained)
    other = _result(tiny_world.trained, seed=7)
    assert first.metrics[FVE] == again.metrics[FVE] and first.metrics[MSE] == again.metrics[MSE]
    assert other.metrics[FVE] != first.metrics[FVE]
    assert 0 < first.metrics[FVE] < 1


def test_training_time_is_never_compared_with_a_baseline(tmp_path):
    from pytest_saebench.config import build_settings, read_file_config
    from pytest_saebench.errors import SaebenchError
    from pytest_saebench.evals import metric_registry

    registry = metric_registry()
    assert registry[M.VOLATILE[0]].volatile
    (tmp_path / "pyproject.toml").write_text(
        "[tool.pytest-saebench.regression]\n"
        '"meta_structure.train_time_seconds" = { max_change_pct = 50 }\n')
    with pytest.raises(SaebenchError, match="never compared with a baseline"):
        build_settings({"sae_path": ["x"]}, read_file_config(tmp_path), {}, registry.resolve,
                       volatile=lambda m: registry[m].volatile)


def test_in_every_suite():
    from pytest_saebench.suites import SUITES

    assert all("meta_structure" in evals for evals in SUITES.values())
