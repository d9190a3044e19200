"""sparse_probing_sae_probes: wired to the sae-probes package as it documents, activations
equal to unbatched forwards, numbers equal to an independent top-k probe, and a clear skip
without the package."""

from __future__ import annotations

import dataclasses
import re
import warnings

import numpy as np
import pytest
import torch

from pytest_saebench.evals import sparse_probing_sae_probes as M
from tests.helpers import make_runner

needs_package = pytest.mark.skipif(not M.available(), reason=f"needs sae-probes: {M.INSTALL}")
SMALL = dataclasses.replace(M.PRESETS["fast"], dataset_names=("117_us_state_FL",
                                                               "130_temp_cat_Frequency"))


def _result(sae_dir, cfg=SMALL, seed=42):
    runner = make_runner(sae_dir, **{"sparse_probing_sae_probes": cfg})
    sae_id = next(iter(runner.checkpoints))
    return runner.results(sae_id, ["sparse_probing_sae_probes"]).evals[M.EVAL_TYPE_ID]


@needs_package
def test_last_token_activations_equal_one_prompt_at_a_time(tiny_world):
    from pytest_saebench.evals.base import EvalContext
    from pytest_saebench.loading.checkpoints import discover
    from pytest_saebench.loading.model import load_model
    from pytest_saebench.loading.sae import load_sae

    model = load_model(str(tiny_world.model_dir), "cpu", "float32")
    loaded = load_sae(discover(tiny_world.trained)[0], "cpu")
    ctx = EvalContext(loaded=loaded, model=model, tokens=None, device="cpu", seed=0,
                      special_ids=frozenset())
    prompts = ["a", "the cat sat on the mat " * 9, "", "one two three", "x y"]
    batched, truncated = M.last_token_activations(ctx, prompts, 16, batch_tokens=40)
    assert truncated == 1  # only the long prompt is over 16 tokens
    for i, text in enumerate(prompts):
        ids = model.tokenizer(text)["input_ids"][-16:] or [model.tokenizer.bos_token_id
                                                          or model.tokenizer.eos_token_id]
        _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=[loaded.hook.name])
        torch.testing.assert_close(batched[i], cache[loaded.hook.name][0, -1], atol=1e-5,
                                   rtol=1e-5)


@needs_package
def test_top_k_accuracy_matches_an_independent_probe(tiny_world):
    """The eval's top-1/top-2 numbers equal a probe written here from METRICS.md §4 with plain
    scikit-learn on the package's own split."""
    from sae_probes.utils_data import get_train_test_indices, get_yvals, read_numbered_dataset_df
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score

    from pytest_saebench.loading.checkpoints import discover
    from pytest_saebench.loading.model import load_model
    from pytest_saebench.loading.sae import load_sae

    cfg = dataclasses.replace(SMALL, dataset_names=("117_us_state_FL",), ks=(1, 2))
    res = _result(tiny_world.trained, cfg)
    model = load_model(str(tiny_world.model_dir), "cpu", "float32")
    loaded = load_sae(discover(tiny_world.trained)[0], "cpu")
    name = "117_us_state_FL"
    prompts = read_numbered_dataset_df(name)["prompt"].tolist()
    hook, n_ctx = loaded.hook.name, model.cfg.n_ctx
    acts = []
    with torch.no_grad():
        for text in prompts:
            ids = model.tokenizer(text)["input_ids"][-n_ctx:]
            _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=[hook])
            acts.append(cache[hook][0, -1])
        codes = loaded.sae.encode(torch.stack(acts)).numpy()
    y = get_yvals(name)
    num_train = min(len(y) - 100, 1024)
    train, test = get_train_test_indices(y, num_train, len(y) - num_train - 1, 0.5, 42)
    x_tr, x_te, y_tr, y_te = codes[train], codes[test], y[train], y[test]
    scale = np.abs(x_tr).sum(0) / ((x_tr != 0).sum(0) + 1e-6) + 1e-6
    diff = (x_tr / scale)[y_tr == 1].mean(0) - (x_tr / scale)[y_tr == 0].mean(0)
    order = np.argsort(-np.abs(diff), kind="stable")
    n_val = min(int(0.2 * len(y_tr)), 100)
    for k in (1, 2):
        cols = order[:k]
        a, b = x_tr[:, cols], x_te[:, cols]

        def fit(c, xa, ya):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return LogisticRegression(C=c, penalty="l1", solver="saga", random_state=42,
                                          max_iter=1000).fit(xa, ya)
        aucs = [roc_auc_score(y_tr[-n_val:], fit(c, a[:-n_val], y_tr[:-n_val])
                              .predict_proba(a[-n_val:])[:, 1]) for c in np.logspace(5, -5, 10)]
        best = np.logspace(5, -5, 10)[int(np.argmax(aucs))]
        shuffle = np.random.RandomState(42).permutation(len(a))
        final = fit(best, a[shuffle], y_tr[shuffle])
        got = res.metrics[f"{M.EVAL_TYPE_ID}.sae.sae_top_{k}_test_accuracy"]
        assert got == pytest.approx(accuracy_score(y_te, final.predict(b)), abs=1e-9)
    assert res.metrics[f"{M.EVAL_TYPE_ID}.sae.sae_top_5_test_accuracy"] is None
    assert "k not in" in res.not_computed[f"{M.EVAL_TYPE_ID}.sae.sae_top_5_test_accuracy"]


@needs_package
def test_same_seed_same_numbers_and_a_cached_llm_side(tiny_world):
    cfg = dataclasses.replace(SMALL, include_llm_baseline=True)
    first, again = _result(tiny_world.trained, cfg), _result(tiny_world.trained, cfg)
    assert first.metrics == again.metrics
    llm = first.metrics[f"{M.EVAL_TYPE_ID}.llm.llm_test_accuracy"]
    assert llm is not None and 0.4 < llm <= 1.0
    random = _result(tiny_world.random, cfg)
    assert random.metrics[f"{M.EVAL_TYPE_ID}.llm.llm_test_accuracy"] == llm  # SAE-independent
    details = {d["dataset_name"]: d for d in first.details}
    assert set(details) == set(SMALL.dataset_names)
    assert set(details["117_us_state_FL"]["sae_metrics_by_k"]) == {"1", "2", "5"}


def test_without_the_package_every_metric_is_not_computed(tiny_world, monkeypatch):
    monkeypatch.setattr(M, "available", lambda: False)
    res = _result(tiny_world.trained)
    assert all(v is None for v in res.metrics.values())
    assert set(res.not_computed) == {spec.id for spec in M.METRICS}
    assert all("pip install --no-deps sae-probes==0.4.2" in why
               for why in res.not_computed.values())


@needs_package
def test_unknown_dataset_and_setting_are_one_line(tiny_world):
    from pytest_saebench.errors import SaebenchError

    for bad, message in (({"dataset_names": ("nope",)}, "unknown sae-probes dataset(s) nope"),
                         ({"setting": "scarcity"}, "only 'normal'")):
        with pytest.raises(SaebenchError, match=re.escape(message)):
            _result(tiny_world.trained, dataclasses.replace(SMALL, **bad))


def test_unsupported_settings_are_usage_errors_at_configuration():
    from pytest_saebench.errors import SaebenchError
    from pytest_saebench.suites import eval_configs

    for setting, message in ((["setting", "imbalance"], "only 'normal'"),
                             (["reg_type", "l3"], "reg_type must be 'l1' or 'l2'"),
                             (["ks", [0, 2]], "ks must be integers >= 1")):
        with pytest.raises(SaebenchError, match=re.escape(message)) as exc:
            eval_configs("standard", {"sparse_probing_sae_probes": dict([setting])})
        assert "[tool.pytest-saebench.evals].sparse_probing_sae_probes" in str(exc.value)


def test_in_standard_and_full_suites():
    from pytest_saebench.suites import SUITES

    assert "sparse_probing_sae_probes" in SUITES["standard"]
    assert "sparse_probing_sae_probes" in SUITES["full"]


@pytest.mark.slow
@needs_package
def test_trained_sae_beats_random_init_on_the_forty_cheapest_datasets():
    """Where the ordering holds on the reference model: over 12 datasets (the fast preset) it
    is noise, over 40 the trained SAE's top-5 AUC beats the random init (3 seeds: 0.651 ± 0.005
    against 0.632 ± 0.003, z 3.4; README). The 40 are the cheapest to read (fewest characters,
    each prompt counted up to 600), not picked on the ladder."""
    from pathlib import Path

    import sae_probes
    from sae_probes.utils_data import read_numbered_dataset_df

    from pytest_saebench.config import Settings
    from pytest_saebench.evals import metric_registry
    from pytest_saebench.loading.checkpoints import discover_all
    from pytest_saebench.runner import Runner

    def size(name: str) -> int:
        prompts = read_numbered_dataset_df(name)["prompt"].astype(str).head(M.MAX_ROWS)
        return int(prompts.str.len().clip(upper=600).sum())

    sizes = {d: size(d) for d in sae_probes.DATASETS}
    names = tuple(sorted(sizes, key=lambda d: (sizes[d], d))[:40])
    # each k is fitted on its own, so ks=(5,) gives the same top-5 numbers for a third of the fits
    cfg = dataclasses.replace(M.PRESETS["fast"], dataset_names=names, ks=(5,))
    ladder = Path(__file__).parents[1] / "example_tests" / "checkpoints" / "ladder"
    paths = [str(ladder / "step_6000"), str(ladder / "step_0000")]
    runner = Runner(Settings(sae_paths=tuple(paths), device="cpu", results_json=None),
                    discover_all(paths), {"sparse_probing_sae_probes": cfg}, metric_registry())
    auc = {}
    for sae_id in runner.checkpoints:
        res = runner.results(sae_id, ["sparse_probing_sae_probes"]).evals[M.EVAL_TYPE_ID]
        auc[sae_id] = res.metrics[f"{M.EVAL_TYPE_ID}.sae.sae_top_5_test_auc"]
    good, random = (auc[s] for s in runner.checkpoints)
    assert good > random + 0.01, auc
