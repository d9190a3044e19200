"""Eval registry. An eval is one module with ``EVAL_TYPE_ID``, ``Config``, ``PRESETS``
(``fast``/``standard``/``full``), ``METRICS`` and ``run(ctx, cfg)``; listing it here is the
only other change needed. Modules are imported lazily (they import torch)."""

from __future__ import annotations

import importlib
from types import ModuleType

EVAL_MODULES: dict[str, str] = {
    "core": "pytest_saebench.evals.core",
    "sparse_probing": "pytest_saebench.evals.sparse_probing",
    "tpp": "pytest_saebench.evals.tpp",
    "scr": "pytest_saebench.evals.scr",
    "absorption": "pytest_saebench.evals.absorption",
    "properties": "pytest_saebench.evals.properties",
    "synthetic": "pytest_saebench.evals.synthetic",
    "autointerp": "pytest_saebench.evals.autointerp",
    "ravel": "pytest_saebench.evals.ravel",
    "unlearning": "pytest_saebench.evals.unlearning",
    "sparse_probing_sae_probes": "pytest_saebench.evals.sparse_probing_sae_probes",
    "meta_structure": "pytest_saebench.evals.meta_structure",
}

# Short names users may write instead of the SAEBench eval type id.
EVAL_ALIASES: dict[str, str] = {name: name for name in EVAL_MODULES} | {
    "sae_probes": "sparse_probing_sae_probes", "meta_structure": "meta_structure_decoder_variance"}


def get_eval(name: str) -> ModuleType:
    """Import and return the module of eval ``name`` (a key of ``EVAL_MODULES``)."""
    return importlib.import_module(EVAL_MODULES[name])


def metric_registry():
    """All metrics of all registered evals (imports every eval module)."""
    from pytest_saebench.gates.registry import MetricRegistry

    specs = [spec for name in EVAL_MODULES for spec in get_eval(name).METRICS]
    return MetricRegistry(specs, EVAL_ALIASES)
