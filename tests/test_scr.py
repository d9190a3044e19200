"""SCR: task layout, a known answer (a dead SAE removes nothing), and a run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pytest_saebench import testing as T
from pytest_saebench.evals import scr
from pytest_saebench.loading.model import load_local_model
from tests.helpers import make_runner

TINY = dataclasses.replace(scr.PRESETS["fast"], pairs=(("tragedies", "comedies"),),
                           train_set_size=200, test_set_size=40, context_length=32,
                           probe_epochs=3, n_values=(2, 10))


def test_task_layout_matches_saebench_sets():
    n = 3
    layout = np.array(["Pm"] * 2 * n + ["Qm"] * n + ["Pf"] * n + ["Qf"] * 2 * n)
    tasks = scr._tasks(n)
    for name, pos, neg in (("G", {"Pm", "Qm"}, {"Pf", "Qf"}), ("R", {"Pm", "Pf"}, {"Qm", "Qf"}),
                           ("S", {"Pm"}, {"Qf"})):
        idx, y = tasks[name]
        assert set(layout[idx[y == 1]]) == pos and set(layout[idx[y == 0]]) == neg
        assert (y == 1).sum() == (y == 0).sum() == 2 * n


def _run(sae_dir):
    runner = make_runner(sae_dir, scr=TINY)
    return runner.results(next(iter(runner.checkpoints)), ["scr"]).evals["scr"]


def test_dead_sae_removes_nothing(tiny_world, tmp_path):
    d = load_local_model(tiny_world.model_dir, "cpu", "float32").cfg.d_model
    sae = T.make_sae(d, 32, "standard", metadata=tiny_world.metadata())
    with torch.no_grad():
        sae.b_enc.fill_(-1e6)
    sae.save_model(tmp_path / "dead")
    res = _run(tmp_path / "dead")
    for n in TINY.n_values:
        assert res.metrics[f"scr.scr_metrics.scr_dir1_threshold_{n}"] == 0
        assert res.metrics[f"scr.scr_metrics.scr_dir2_threshold_{n}"] == 0


def test_scr_runs_on_a_trained_sae(tiny_world):
    res = _run(tiny_world.trained)
    value = res.metrics["scr.scr_metrics.scr_dir1_threshold_10"]
    assert value is not None and np.isfinite(value)
    assert res.metrics["scr.scr_metrics.scr_metric_threshold_500"] is None
    assert set(res.unstructured["tragedies_comedies"]) == {"A_R", "A_G", "S1", "S2"}
    assert res.config["remask_after_ablation"] is True
    assert res.details[0]["dataset_name"] == \
        "genre_form_shakespeare_scr_tragedies_comedies_results"


def test_too_few_rows_is_a_clear_error(tiny_world):
    from pytest_saebench.errors import SaebenchError

    with pytest.raises(SaebenchError, match=r"has \d+ (verse|prose) speeches of \w+, fewer"):
        scr._quadrants("tragedies", "comedies", 1000, 100, 0)
