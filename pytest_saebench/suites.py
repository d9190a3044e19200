"""Suites: which evals run, each with the preset of the same name from its module."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from pytest_saebench.errors import SaebenchError, did_you_mean
from pytest_saebench.evals import EVAL_MODULES, get_eval

SUITES: dict[str, tuple[str, ...]] = {
    # tpp is in fast because it is the one probing metric that separates a 25-step SAE from a
    # trained one on the reference model at this budget (README, "Which gates carry signal").
    # meta_structure reads only the decoder (about 1 s): every suite has it.
    "fast": ("core", "properties", "absorption", "sparse_probing", "tpp", "synthetic",
             "meta_structure"),
    "standard": ("core", "properties", "absorption", "sparse_probing", "scr", "tpp",
                 "synthetic", "autointerp", "meta_structure", "sparse_probing_sae_probes"),
    "full": ("core", "properties", "absorption", "sparse_probing", "scr", "tpp", "synthetic",
             "autointerp", "ravel", "unlearning", "meta_structure", "sparse_probing_sae_probes"),
}


def check_suite(name: str, where: str = "") -> str:
    """Return ``name`` if it is a suite, else raise with a hint (``where``: the input that
    set it)."""
    if name not in SUITES:
        raise SaebenchError(
            f"{where + ': ' if where else ''}unknown suite '{name}'"
            f"{did_you_mean(name, SUITES)} (choose {', '.join(SUITES)})"
        )
    return name


def evals_computing(eval_type_id: str) -> list[str]:
    """Suites whose evals include ``eval_type_id``."""
    return [s for s, evals in SUITES.items()
            if any(eval_type_id == get_eval(e).EVAL_TYPE_ID for e in evals)]


def eval_configs(suite: str, overrides: dict[str, dict[str, Any]] | None = None,
                 source: str = "[tool.pytest-saebench.evals]",
                 select: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{eval name: Config}`` for ``suite`` (only the ``select``-ed evals, if any), with
    per-eval field overrides applied."""
    overrides = overrides or {}
    for name in select:
        if name not in EVAL_MODULES:
            hint = did_you_mean(name, EVAL_MODULES)
            raise SaebenchError(f"select-evals: unknown eval '{name}'{hint}")
    for name in overrides:
        if name not in EVAL_MODULES:
            hint = did_you_mean(name, EVAL_MODULES)
            raise SaebenchError(f"{source}: unknown eval '{name}'{hint}")
    configs: dict[str, Any] = {}
    names = list(SUITES[check_suite(suite)])
    for name in select:  # named explicitly: runs even where the suite leaves it out
        if name not in names:
            if suite not in get_eval(name).PRESETS:
                having = [s for s, evals in SUITES.items() if name in evals]
                raise SaebenchError(f"select-evals: eval '{name}' has no setting for suite "
                                    f"'{suite}'; it runs in {', '.join(having)} "
                                    f"(--saebench-suite {having[0]})")
            names.append(name)
    for name in names:
        if select and name not in select:
            continue
        module = get_eval(name)
        cfg = module.PRESETS[suite]
        extra = overrides.get(name, {})
        fields = {f.name: f for f in dataclasses.fields(cfg)}
        for key, value in extra.items():
            if key not in fields:
                raise SaebenchError(
                    f"{source}.{name}: unknown setting '{key}'{did_you_mean(key, fields)}"
                )
            expected = type(getattr(cfg, key))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if expected is tuple and isinstance(value, list):
                value = extra[key] = tuple(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise SaebenchError(
                    f"{source}.{name}.{key}: expected {expected.__name__}, got {value!r}"
                )
            _check_count(f"{source}.{name}.{key}", value, getattr(cfg, key))
        configs[name] = dataclasses.replace(cfg, **extra)
        if hasattr(module, "validate"):  # an eval's own rules for its settings
            module.validate(configs[name], f"{source}.{name}")
    return configs


def _check_count(where: str, value: Any, default: Any) -> None:
    """Budgets, sizes and counts (ints whose preset is positive) must stay at least 1: a
    budget of 0 would evaluate nothing and pass; no int setting may be negative; no float
    setting may be NaN or infinite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SaebenchError(f"{where}: must be a finite number, got {value!r}")
    if type(value) is not int:
        return
    floor = 1 if default > 0 else 0
    if value < floor:
        raise SaebenchError(f"{where}: must be at least {floor}, got {value}")


def default_thresholds(registry: Any, configs: dict[str, Any], configured: tuple) -> tuple:
    """Gates the suite's evals ask for by default (``MetricSpec.default_min``), for every
    metric the user did not gate; added after the configured ones."""
    from pytest_saebench.gates.thresholds import Threshold

    types = {get_eval(name).EVAL_TYPE_ID for name in configs}
    have = {t.metric for t in configured}
    return tuple(Threshold(spec.id, min=spec.default_min, source="default gate")
                 for spec in registry.values()
                 if spec.default_min is not None and spec.eval_type_id in types
                 and spec.id not in have)
