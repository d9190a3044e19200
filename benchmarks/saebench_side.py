"""SAEBench 0.6.0's own code, fed the inputs the plugin uses (for ``vs_saebench.py``).

SAEBench 0.6.0 reads sae_lens 5's flat SAE config and downloads its probing sets from the
Hub; these adapters give it the same SAE object as sae_lens 6 loads it, the plugin's token
windows and the plugin's shipped labeled sets, so both sides compute on identical inputs.
Nothing here changes what SAEBench computes.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

# SAEBench's annotations check shapes with jaxtyping, whose current releases share one memo
# between its nested probe functions (train_dataset_size is 500 in one, 1000 in the next);
# the checks are off so that its code runs unchanged.
os.environ.setdefault("JAXTYPING_DISABLE", "1")


class PhaseClock:
    """Wall seconds per named phase, summed over calls of the wrapped functions."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def wrapping(self, module: Any, name: str, phase: str):
        """Time every call of ``module.name`` under ``phase`` while the block runs."""
        original = getattr(module, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        setattr(module, name, timed)
        try:
            yield
        finally:
            setattr(module, name, original)


def load_sae(path: Path):
    """The checkpoint as sae_lens 6 loads it, with the flat config fields SAEBench reads and
    the decoder norm folded as SAEBench's runner does."""
    from sae_lens import SAE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae = SAE.load_from_disk(str(path), device="cpu")
    meta = sae.cfg.metadata
    for key in {*vars(meta), "hook_head_index", "hook_layer", "prepend_bos", "context_size",
                "dataset_path", "model_name"}:
        object.__setattr__(sae.cfg, key, getattr(meta, key, None))
    if sae.cfg.hook_layer is None:  # sae_lens 6 reads the layer from the hook name
        object.__setattr__(sae.cfg, "hook_layer", int(sae.cfg.hook_name.split(".")[1]))
    object.__setattr__(sae.cfg, "architecture_str", sae.cfg.architecture())
    with suppress(NotImplementedError):  # TopK and others keep their decoder
        sae.fold_W_dec_norm()
    return sae


def core(model, sae, windows, preset, clock: PhaseClock) -> dict[str, float]:
    """SAEBench's ``run_evals`` on ``windows`` (reconstruction batches first, as it reads
    them); returns the headline metrics."""
    import torch
    from sae_bench.evals.core import main as sb_core
    from sae_bench.evals.core.eval_config import CoreEvalConfig
    from sae_lens.training.activations_store import ActivationsStore

    from pytest_saebench.reference import corpus_dataset

    cfg = CoreEvalConfig(model_name=model.cfg.model_name,
                         batch_size_prompts=preset.batch_size_prompts,
                         n_eval_reconstruction_batches=preset.n_eval_reconstruction_batches,
                         n_eval_sparsity_variance_batches=preset.n_eval_sparsity_variance_batches,
                         context_size=windows.shape[1], compute_kl=True, compute_ce_loss=True,
                         compute_l2_norms=True, compute_sparsity_metrics=True,
                         compute_variance_metrics=True,
                         compute_featurewise_density_statistics=True,
                         compute_featurewise_weight_based_metrics=True,
                         exclude_special_tokens_from_reconstruction=True)
    tok = model.tokenizer
    special = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the store's notes on an untokenized, small dataset
        store = ActivationsStore.from_sae(model, sae, context_size=windows.shape[1],
                                          dataset=corpus_dataset("train"), streaming=False,
                                          store_batch_size_prompts=preset.batch_size_prompts)
    store.iterable_sequences = iter(list(windows))
    with (clock.wrapping(sb_core, "get_downstream_reconstruction_metrics", "reconstruction"),
          clock.wrapping(sb_core, "get_sparsity_and_variance_metrics", "sparsity/variance"),
          torch.no_grad()):
        metrics, _ = sb_core.run_evals(sae, store, model, cfg, ignore_tokens=special)
    return {"explained_variance_v0_6": metrics["reconstruction_quality"]["explained_variance"],
            "l0": metrics["sparsity"]["l0"],
            "ce_loss_score": metrics["model_performance_preservation"]["ce_loss_score"],
            "kl_div_score": metrics["model_behavior_preservation"]["kl_div_score"]}


@contextmanager
def shipped_labeled_sets(classes: dict[str, tuple[str, ...]], n_train: int, n_test: int,
                         seed: int):
    """SAEBench's dataset loaders (sparse probing's and TPP's) answering with the plugin's
    labeled sets, split as the plugin splits them (per class: ``n_train`` and ``n_test``)."""
    from sae_bench.evals.scr_and_tpp import main as sb_tpp
    from sae_bench.evals.sparse_probing import main as sb_probing
    from sae_bench.sae_bench_utils import dataset_info

    from pytest_saebench.evals import probing

    def data(name: str, *_args):
        train, test = probing.split_classes(probing.load_set(name), classes[name], n_train,
                                            n_test, seed, name)
        return ({k: [r["text"] for r in v] for k, v in train.items()},
                {k: [r["text"] for r in v] for k, v in test.items()})

    def tpp_data(name: str, spurious: bool, *_args):
        assert not spurious, "SCR is not compared"
        return data(name)

    patched = [(sb_probing.dataset_utils, "get_multi_label_train_test_data", data),
               (sb_tpp.dataset_creation, "get_train_test_data", tpp_data)]
    originals = [(mod, name, getattr(mod, name)) for mod, name, _ in patched]
    chosen = dict(dataset_info.chosen_classes_per_dataset)
    column2 = dict(sb_tpp.COLUMN2_VALS_LOOKUP)
    for mod, name, fn in patched:
        setattr(mod, name, fn)
    dataset_info.chosen_classes_per_dataset.update({k: list(v) for k, v in classes.items()})
    sb_tpp.COLUMN2_VALS_LOOKUP.update({k: None for k in classes})
    try:
        yield
    finally:
        for mod, name, fn in originals:
            setattr(mod, name, fn)
        for table, saved in ((dataset_info.chosen_classes_per_dataset, chosen),
                             (sb_tpp.COLUMN2_VALS_LOOKUP, column2)):
            table.clear()
            table.update(saved)


def sparse_probing(model, sae, cfg, seed: int, artifacts: Path, clock: PhaseClock
                   ) -> dict[str, float]:
    """SAEBench's ``run_eval_single_sae`` with its activation cache in ``artifacts`` (so its
    second and later checkpoints reuse the LLM side, as its own runner does)."""
    from sae_bench.evals.sparse_probing import main as sb_probing
    from sae_bench.evals.sparse_probing.eval_config import SparseProbingEvalConfig

    from pytest_saebench.evals.sparse_probing import CLASSES

    sb_cfg = SparseProbingEvalConfig(
        random_seed=seed, dataset_names=list(cfg.dataset_names),
        probe_train_set_size=cfg.probe_train_set_size,
        probe_test_set_size=cfg.probe_test_set_size, context_length=cfg.context_length,
        sae_batch_size=cfg.sae_batch_size, llm_batch_size=cfg.llm_batch_size,
        llm_dtype="float32", model_name=model.cfg.model_name, k_values=list(cfg.k_values))
    artifacts.mkdir(parents=True, exist_ok=True)
    with (shipped_labeled_sets(CLASSES, cfg.probe_train_set_size // 2,
                              cfg.probe_test_set_size // 2, seed),
          clock.wrapping(sb_probing, "get_dataset_activations", "LLM activations"),
          clock.wrapping(sb_probing.probe_training, "train_probe_on_activations", "probes")):
        out, _ = sb_probing.run_eval_single_sae(sb_cfg, sae, model, "cpu", str(artifacts),
                                                save_activations=True)
    return {"llm_test_accuracy": out["llm_test_accuracy"],
            "sae_test_accuracy": out["sae_test_accuracy"],
            **{f"sae_top_{k}_test_accuracy": out[f"sae_top_{k}_test_accuracy"]
               for k in cfg.k_values}}


def tpp(model, sae, cfg, seed: int, artifacts: Path, clock: PhaseClock) -> dict[str, float]:
    """SAEBench's TPP (``scr_and_tpp`` with ``perform_scr=False``), its activation and probe
    cache in ``artifacts``. SAEBench does not re-mask after ablation; the plugin's
    ``remask_after_ablation`` is set to match by the caller."""
    from sae_bench.evals.scr_and_tpp import main as sb_tpp
    from sae_bench.evals.scr_and_tpp.eval_config import ScrAndTppEvalConfig

    from pytest_saebench.evals.tpp import CLASSES

    sb_cfg = ScrAndTppEvalConfig(
        random_seed=seed, dataset_names=list(cfg.dataset_names), perform_scr=False,
        train_set_size=cfg.train_set_size, test_set_size=cfg.test_set_size,
        context_length=cfg.context_length, probe_train_batch_size=cfg.probe_batch_size,
        probe_epochs=cfg.probe_epochs, probe_lr=cfg.probe_lr,
        probe_l1_penalty=cfg.probe_l1_penalty, sae_batch_size=cfg.sae_batch_size,
        llm_batch_size=cfg.llm_batch_size, llm_dtype="float32", model_name=model.cfg.model_name,
        n_values=list(cfg.n_values))
    artifacts.mkdir(parents=True, exist_ok=True)
    with (shipped_labeled_sets(CLASSES, cfg.train_set_size // 2, cfg.test_set_size // 2, seed),
          clock.wrapping(sb_tpp, "get_dataset_activations", "LLM activations"),
          clock.wrapping(sb_tpp, "get_effects_per_class_precomputed_acts", "TPP effects")):
        out, _ = sb_tpp.run_eval_single_sae(sb_cfg, sae, model, "cpu", str(artifacts),
                                            save_activations=True)
    return {f"tpp_threshold_{n}_total_metric": out[f"tpp_threshold_{n}_total_metric"]
            for n in cfg.n_values}


def one_token_words(tokenizer, words: list[str], template: str
                    ) -> tuple[list[str], set[str]]:
    """The words that stay one token between a newline and the template's suffix (the only
    ones SAEBench's fixed prompt position reads), and those of them whose answered line, as
    an in-context example, adds one token for the answer letter: SAEBench pads batches on
    the right and reads a fixed position, so a longer example line (on the reference
    tokenizer `` X`` is two tokens) would shift what it reads in every shorter prompt of the
    batch, and its calculator raises on it."""
    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    suffix, head = template.format(word=""), ids("\n")
    keep, examples = [], set()
    for w in words:
        word, tail = ids("\n" + w), f"{suffix} {w.strip()[0].upper()}"
        if len(word) != len(head) + 1 or ids(f"\n{w}{suffix}") != word + ids(suffix):
            continue
        keep.append(w)
        if len(ids(tail)) == len(ids(suffix)) + 1 and ids(f"\n{w}{tail}") == word + ids(tail):
            examples.add(w)
    return keep, examples


def absorption(model, sae, cfg, seed: int, artifacts: Path, name: str, clock: PhaseClock
               ) -> dict[str, float]:
    """SAEBench's k-sparse probing and feature-absorption experiments, aggregated as its
    ``run_eval`` does, on the plugin's word sample (less the words its fixed position cannot
    read); its probe and word activations cached in ``artifacts`` across checkpoints, as its
    runner caches them. Its unseeded ``random`` is seeded so that repeats draw alike."""
    import contextlib
    import io
    import random
    import statistics

    from sae_bench.evals.absorption import (
        common,
        feature_absorption,
        feature_absorption_calculator,
        k_sparse_probing,
    )
    from sae_bench.evals.absorption import main as sb_absorption
    from sae_bench.evals.absorption import probing as sb_probing
    from sae_bench.evals.absorption.eval_config import AbsorptionEvalConfig

    from pytest_saebench.evals import absorption as ours

    sb_cfg = AbsorptionEvalConfig(model_name=model.cfg.model_name, random_seed=seed,
                                  llm_batch_size=cfg.llm_batch_size,
                                  k_sparse_probe_num_epochs=cfg.k_sparse_probe_epochs)
    words, usable = one_token_words(model.tokenizer, ours.vocabulary(
        model.tokenizer, cfg.max_vocab_words, seed), sb_cfg.prompt_template)
    make_prompt, pools = sb_probing.create_icl_prompt, {}

    def prompt(word, examples, **kwargs):  # in-context examples from the usable words only
        if id(examples) not in pools:
            pools[id(examples)] = [e for e in examples if e in usable]
        return make_prompt(word, pools[id(examples)], **kwargs)

    layer, common_args = sae.cfg.hook_layer, dict(
        sae_name=name, max_k_value=sb_cfg.max_k_value, prompt_template=sb_cfg.prompt_template,
        prompt_token_pos=sb_cfg.prompt_token_pos, device="cpu", probes_dir=artifacts / "probes",
        force=False)
    random.seed(seed)
    originals = [(mod, "get_alpha_tokens", lambda *_a, **_k: list(words))
                 for mod in (common, feature_absorption)]
    originals += [(mod, "create_icl_prompt", prompt)
                  for mod in (sb_probing, feature_absorption_calculator)]
    originals = [(mod, attr, getattr(mod, attr), new) for mod, attr, new in originals]
    for mod, attr, _, new in originals:
        setattr(mod, attr, new)
    try:
        with (contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(),
              contextlib.redirect_stderr(io.StringIO()),  # its probe trainers' bars
              clock.wrapping(common, "train_and_save_probes", "LLM activations + probe"),
              clock.wrapping(k_sparse_probing, "train_k_sparse_probes", "k-sparse probes"),
              clock.wrapping(feature_absorption, "calculate_projection_and_cos_sims",
                             "absorption prompts + scores")):
            warnings.simplefilter("ignore")  # sklearn's notes on letters without test words
            probing = k_sparse_probing.run_k_sparse_probing_experiment(
                model=model, sae=sae, layer=layer, **common_args,
                experiment_dir=artifacts / "k_sparse_probing",
                f1_jump_threshold=sb_cfg.f1_jump_threshold,
                k_sparse_probe_l1_decay=sb_cfg.k_sparse_probe_l1_decay,
                k_sparse_probe_batch_size=sb_cfg.k_sparse_probe_batch_size,
                k_sparse_probe_num_epochs=sb_cfg.k_sparse_probe_num_epochs,
                eval_batch_size=sb_cfg.eval_k_sparse_probe_batch_size)
            raw = feature_absorption.run_feature_absortion_experiment(
                model=model, sae=sae, layer=layer, **common_args,
                experiment_dir=artifacts / "feature_absorption",
                sparse_probing_experiment_dir=artifacts / "k_sparse_probing",
                feature_split_f1_jump_threshold=sb_cfg.f1_jump_threshold,
                batch_size=sb_cfg.llm_batch_size)
    finally:
        for mod, attr, old, _ in originals:
            setattr(mod, attr, old)
    good = set(probing.loc[probing["f1_probe"] > sb_cfg.min_GT_probe_f1, "letter"])
    rows = sb_absorption._aggregate_results_df(raw)
    rows = rows[rows["letter"].isin(good)]
    return {"mean_absorption_fraction_score": statistics.mean(rows["mean_absorption_fraction"]),
            "mean_full_absorption_score": statistics.mean(rows["full_absorption_rate"]),
            "mean_num_split_features": statistics.mean(rows["num_split_feats"])}
