"""sparse_probing_sae_probes: k-sparse probing on the 113 binary datasets of the ``sae-probes``
package, "normal" setting (METRICS.md §4; Kantamneni et al., arXiv 2502.16681).

The package is used for what it does: its dataset list and CSV loaders, labels, size table,
train/test split, latent normalisation and ranking, and probe fitting with C chosen on
validation (``find_best_reg``). Model activations are ours: TransformerLens up to the hook's
block (``stop_at_layer``), the last token of each prompt, prompts sorted by length into
right-padded batches, and a prompt longer than the model's context keeps its last tokens
(sae-probes truncates on the left too) and is counted. They are cached per (model, hook,
dataset) and shared by every checkpoint; so is the LLM baseline probe.

Without the package every metric is reported as not computed with the install line, so the
gates skip with it as the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from pytest_saebench.activations import hook_activations, right_pad
from pytest_saebench.errors import SaebenchError
from pytest_saebench.evals.base import EvalContext, EvalResult, mean_stderr
from pytest_saebench.gates.registry import MetricSpec

EVAL_TYPE_ID = "sparse_probing_sae_probes"
PACKAGE_VERSION = "0.4.2"
INSTALL = (f"pip install --no-deps sae-probes=={PACKAGE_VERSION} xgboost-cpu zstandard "
           "(or pip install -e '.[sae-probes]' plus the first)")
SCHEMA_K = (1, 2, 5, 10, 20, 50, 100)
SCORES = ("accuracy", "auc", "f1")
MAX_ROWS = 5000  # sae-probes' MAX_AMT for the normal setting

# fast: 12 datasets, the cheapest to read on a small model (short prompts, under 70k tokens
# each with the reference tokenizer; 390k in all), spread over the kinds of task the package
# covers: entity facts (5, 126, 154), geography (114, 117, 123), news (22), truthfulness
# (41), grammar (87), arithmetic (129), temporal (130) and discourse (133) questions.
FAST_DATASETS = (
    "5_hist_fig_ismale", "22_headline_isobama", "41_truthqa_tf", "87_glue_cola",
    "114_nyc_borough_Manhattan", "117_us_state_FL", "123_world_country_United_Kingdom",
    "126_art_type_book", "129_arith_mc_A", "130_temp_cat_Frequency",
    "133_context_type_Causality", "154_athlete_sport_football",
)


@dataclass(frozen=True)
class Config:
    """SAEBench's settings (its names); ``dataset_names`` empty means all of
    ``sae_probes.DATASETS``."""

    dataset_names: tuple[str, ...] = ()
    reg_type: str = "l1"
    setting: str = "normal"
    ks: tuple[int, ...] = (1, 2, 5)
    binarize: bool = False
    include_llm_baseline: bool = True
    baseline_method: str = "logreg"
    # SAEBench declares sae_test_accuracy (a probe on every latent) but never fills it; we
    # compute it, with sae-probes' L2 probe, where this is on.
    include_all_latents_probe: bool = False
    max_seq_len: int = 1024  # capped at the model's context
    llm_batch_tokens: int = 16384
    sae_batch_size: int = 128


PRESETS = {
    # the LLM baseline (info only) is off in fast: its probes on raw activations cost more
    # than everything else of the eval's one-time work
    "fast": Config(dataset_names=FAST_DATASETS, include_llm_baseline=False),
    "standard": Config(),
    "full": Config(include_all_latents_probe=True),
}

METRICS: tuple[MetricSpec, ...] = (
    *(MetricSpec(f"{EVAL_TYPE_ID}.llm.llm_test_{s}", "info", f"LLM probe test {s}")
      for s in SCORES),
    MetricSpec(f"{EVAL_TYPE_ID}.sae.sae_test_accuracy", "up", "probe on all SAE latents",
               default_severity="warn"),
    *(MetricSpec(f"{EVAL_TYPE_ID}.sae.sae_top_{k}_test_{s}", "up", f"top-{k} SAE probe {s}",
                 default_severity="warn") for k in SCHEMA_K for s in SCORES),
)


def available() -> bool:
    """Whether ``sae-probes`` (and what its import needs) is installed."""
    return all(importlib.util.find_spec(m) is not None
               for m in ("sae_probes", "xgboost", "zstandard", "sklearn"))


def _package() -> SimpleNamespace:
    """The sae-probes modules used here (importing the package reads its size table)."""
    import importlib

    import sae_probes

    # import_module: the package re-exports functions under its submodules' names
    def mod(name: str):
        return importlib.import_module(f"sae_probes.{name}")

    return SimpleNamespace(datasets=list(sae_probes.DATASETS), data=mod("utils_data"),
                           sizes=mod("generate_sae_activations").DATASET_SIZES,
                           ranking=mod("run_sae_evals"), training=mod("utils_training"))


def validate(cfg: Config, where: str = f"[tool.pytest-saebench.evals.{EVAL_TYPE_ID}]"
             ) -> None:
    """Settings sae-probes or SAEBench's aggregation cannot run, refused before evaluating."""
    if cfg.setting != "normal":
        raise SaebenchError(f"{where}: setting '{cfg.setting}' is not supported (only "
                            "'normal' is, as in SAEBench)")
    if cfg.reg_type not in ("l1", "l2"):
        raise SaebenchError(f"{where}: reg_type must be 'l1' or 'l2', got '{cfg.reg_type}'")
    if cfg.baseline_method != "logreg":
        raise SaebenchError(f"{where}: baseline_method must be 'logreg' (the only one SAEBench "
                            "aggregates)")
    if not cfg.ks or any(type(k) is not int or k < 1 for k in cfg.ks):
        raise SaebenchError(f"{where}: ks must be integers >= 1, got {list(cfg.ks)}")


def _datasets(cfg: Config, known: list[str]) -> list[str]:
    names = list(cfg.dataset_names) or known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SaebenchError(f"[tool.pytest-saebench.evals.{EVAL_TYPE_ID}]: dataset_names: "
                            f"unknown sae-probes dataset(s) {', '.join(unknown[:5])} (see "
                            "sae_probes.DATASETS)")
    return names


@torch.inference_mode()
def last_token_activations(ctx: EvalContext, prompts: list[str], max_len: int,
                           batch_tokens: int) -> tuple[torch.Tensor, int]:
    """``[N, d_in]`` activation at the hook on each prompt's last token, and how many prompts
    were longer than ``max_len`` tokens (their last ``max_len`` are kept)."""
    tok = ctx.model.tokenizer
    ids = [list(x) for x in tok(prompts)["input_ids"]]
    fill = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ids = [x or [fill] for x in ids]  # an empty prompt is read at one filler token
    truncated = sum(len(x) > max_len for x in ids)
    ids = [x[-max_len:] for x in ids]
    pad = tok.pad_token_id if tok.pad_token_id is not None else fill
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.empty(len(ids), ctx.loaded.d_in)
    start = 0
    while start < len(order):
        end = start + 1  # ascending lengths: the batch is as wide as its last prompt
        while end < len(order) and (end - start + 1) * len(ids[order[end]]) <= batch_tokens:
            end += 1
        rows = order[start:end]
        tokens, last = right_pad([ids[i] for i in rows], pad)
        acts = hook_activations(ctx.model, tokens.to(ctx.device), ctx.loaded.hook)
        out[rows] = acts[torch.arange(len(rows)), last.to(acts.device)].cpu()
        start = end
    return out, truncated


def _dataset(ctx: EvalContext, cfg: Config, name: str, pkg: SimpleNamespace
             ) -> dict[str, Any]:
    """The SAE-independent part of one dataset: activations, labels, split, LLM baseline."""
    key = f"{EVAL_TYPE_ID}/{id(ctx.model)}/{ctx.loaded.hook.name}/{name}/{ctx.seed}/{cfg}"
    if key in ctx.memo:
        return ctx.memo[key]
    utils_data = pkg.data
    max_len = min(cfg.max_seq_len, int(ctx.model.cfg.n_ctx))
    prompts = [str(p) for p in utils_data.read_numbered_dataset_df(name)["prompt"].tolist()]
    prompts = prompts[:MAX_ROWS]

    def compute() -> dict[str, torch.Tensor]:
        x, truncated = last_token_activations(ctx, prompts, max_len, cfg.llm_batch_tokens)
        return {"x": x, "truncated": torch.tensor(truncated)}

    parts = ctx.cache_parts(dataset=name, rows=len(prompts), max_seq_len=max_len,
                            sae_probes=PACKAGE_VERSION)
    parts.pop("seed")  # activations do not depend on it
    acts = ctx.cache.get("sae-probes-acts", parts, compute)
    y = np.asarray(utils_data.get_yvals(name))[:MAX_ROWS]
    n = len(y)
    num_train = min(pkg.sizes[name] - 100, 1024)
    num_test = n - num_train - 1
    if num_train < 1 or num_train + min(100, num_test) > n:
        raise SaebenchError(f"sae-probes dataset '{name}' has {n} rows, too few for "
                            f"{num_train} train + 100 test; drop it from dataset_names")
    train, test = utils_data.get_train_test_indices(y, num_train, num_test, 0.5, ctx.seed)
    side = {"x": acts["x"], "y": y, "train": train, "test": test,
            "truncated": int(acts["truncated"]), "num_train": num_train, "num_test": num_test}
    if cfg.include_llm_baseline:
        def baseline() -> dict[str, torch.Tensor]:
            x = acts["x"].numpy()
            with _quiet_sklearn():  # sae-probes' "logreg" baseline: find_best_reg with L2
                scores = _probe(pkg.training, x[train], y[train], x[test], y[test], "l2",
                                ctx.seed)
            return {"scores": torch.tensor([scores[s] for s in SCORES], dtype=torch.float64)}

        llm = ctx.cache.get("sae-probes-llm", ctx.cache_parts(
            dataset=name, rows=n, max_seq_len=max_len, sae_probes=PACKAGE_VERSION,
            method=cfg.baseline_method), baseline)["scores"].tolist()
        side["llm"] = dict(zip(SCORES, llm, strict=True))
    ctx.memo[key] = side
    return side


@torch.inference_mode()
def _encode(ctx: EvalContext, x: torch.Tensor, batch: int) -> torch.Tensor:
    sae = ctx.loaded.sae
    out = [sae.encode(x[i:i + batch].to(sae.W_dec.device, sae.dtype)).float().cpu()
           for i in range(0, x.shape[0], batch)]
    return torch.cat(out)


@contextlib.contextmanager
def _quiet_sklearn():
    """sae-probes silences ConvergenceWarning; scikit-learn >= 1.8 also warns that the
    ``penalty`` argument sae-probes passes is deprecated: nothing a user can act on."""
    from sklearn.exceptions import ConvergenceWarning  # here: the metric registry imports us

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", module="sklearn")
        yield


def _probe(training, x_tr, y_tr, x_te, y_te, penalty: str, seed: int) -> dict[str, float]:
    m = training.find_best_reg(x_tr, y_tr, x_te, y_te, n_jobs=1, parallel=False,
                               penalty=penalty, seed=seed).metrics
    return {"accuracy": m.test_acc, "auc": m.test_auc, "f1": m.test_f1}


def _sae_side(ctx: EvalContext, cfg: Config, side: dict, pkg: SimpleNamespace
              ) -> dict[str, Any]:
    """Top-k probes (and, if on, the all-latents probe) on the SAE's codes."""
    sae_evals, training = pkg.ranking, pkg.training
    codes_tr = _encode(ctx, side["x"][side["train"]], cfg.sae_batch_size)
    codes_te = _encode(ctx, side["x"][side["test"]], cfg.sae_batch_size)
    y_tr, y_te = side["y"][side["train"]], side["y"][side["test"]]
    ranked = sae_evals.get_sorted_indices(codes_tr, torch.from_numpy(y_tr),
                                          sae_evals.mean_act_normalization)
    out: dict[str, Any] = {"by_k": {}}
    with _quiet_sklearn():
        for k in cfg.ks:
            top = ranked[:k]
            x_tr, x_te = codes_tr[:, top].numpy(), codes_te[:, top].numpy()
            if cfg.binarize:
                x_tr, x_te = (x_tr != 0).astype(np.float32), (x_te != 0).astype(np.float32)
            out["by_k"][k] = _probe(training, x_tr, y_tr, x_te, y_te, cfg.reg_type, ctx.seed)
        if cfg.include_all_latents_probe:
            out["all"] = _probe(training, codes_tr.numpy(), y_tr, codes_te.numpy(), y_te,
                                "l2", ctx.seed)
    return out


def _unavailable(res: EvalResult) -> EvalResult:
    why = f"needs the sae-probes package: {INSTALL}"
    for spec in METRICS:
        res.metrics[spec.id] = None
        res.not_computed[spec.id] = why
    return res


def run(ctx: EvalContext, cfg: Config) -> EvalResult:
    """Probe every configured sae-probes dataset with the SAE's top-k latents."""
    res = EvalResult(EVAL_TYPE_ID, {**dataclasses.asdict(cfg), "random_seed": ctx.seed,
                                    "model_name": ctx.model.cfg.model_name,
                                    "hook_name": ctx.loaded.hook.name})
    if not available():
        return _unavailable(res)
    validate(cfg)
    pkg = _package()
    names = _datasets(cfg, pkg.datasets)
    res.config["dataset_names"] = names
    rows: list[dict[str, float]] = []
    for name in names:
        side = _dataset(ctx, cfg, name, pkg)
        sae = _sae_side(ctx, cfg, side, pkg)
        row: dict[str, Any] = {"dataset_name": name}
        for s, v in side.get("llm", {}).items():
            row[f"llm_test_{s}"] = v
        if "all" in sae:
            row["sae_test_accuracy"] = sae["all"]["accuracy"]
        for k, scores in sae["by_k"].items():
            for s, v in scores.items():
                row[f"sae_top_{k}_test_{s}"] = v
        row["sae_metrics_by_k"] = {str(k): {f"test_{s}": v for s, v in scores.items()}
                                   for k, scores in sae["by_k"].items()}
        res.details.append(row)
        res.unstructured[name] = {"num_train": side["num_train"], "num_test": side["num_test"],
                                  "prompts_truncated": side["truncated"]}
        rows.append(row)
    _aggregate(res, cfg, rows)
    return res


def _aggregate(res: EvalResult, cfg: Config, rows: list[dict[str, Any]]) -> None:
    """Means over datasets (stderr over datasets), per id; ids this config does not compute
    are reported as such."""
    for spec in METRICS:
        key = spec.key
        values = [r[key] for r in rows if key in r and math.isfinite(r[key])]
        if values:
            res.set(spec.id, *mean_stderr(values))
            continue
        res.metrics[spec.id] = None
        if key.startswith("llm_"):
            res.not_computed[spec.id] = "include_llm_baseline is off"
        elif key == "sae_test_accuracy":
            res.not_computed[spec.id] = ("include_all_latents_probe is off (suite 'full' "
                                         "turns it on)")
        else:
            res.not_computed[spec.id] = f"k not in this config's ks {list(cfg.ks)}"
    res.unstructured["sae_metrics_by_k"] = {
        str(k): {f"test_{s}": res.metrics.get(f"{EVAL_TYPE_ID}.sae.sae_top_{k}_test_{s}")
                 for s in SCORES} for k in cfg.ks}
