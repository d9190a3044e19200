"""Settings + checkpoints -> a Runner, for the plugin's ``--sae-path`` checkpoints and for the
``saebench_evaluate`` fixture's (a checkpoint a test made, e.g. a training smoke test)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_saebench.errors import SaebenchWarning


def file_config(config: pytest.Config):
    """The ``[tool.pytest-saebench]`` table for this session."""
    from pytest_saebench.config import read_file_config

    # pytest may pick a rootdir above the project when --sae-path's value looks like a test
    # path, so search from the ini file and the invocation directory too.
    starts = [p.parent for p in (config.inipath,) if p and p.name == "pyproject.toml"]
    return read_file_config(*starts, config.invocation_params.dir, config.rootpath)


def few_units(settings: Any, configs: dict[str, Any]) -> list[str]:
    """One line per gate with ``z`` on an eval whose standard error rests on fewer than 3
    units at this suite (SCR at ``fast``: 2 class pairs, 1 degree of freedom): such a gate is
    inconclusive unless far from its bound, which the user should know before the run."""
    from pytest_saebench.evals import get_eval
    from pytest_saebench.gates.stats import critical

    units = {}
    for name, cfg in configs.items():
        module = get_eval(name)
        if hasattr(module, "n_units"):
            units[module.EVAL_TYPE_ID] = (name, module.n_units(cfg))
    out = []
    rules = [*settings.thresholds, *settings.regressions, *settings.null_rules]
    for rule in rules:
        found = units.get(rule.metric.split(".", 1)[0])
        if not rule.z or found is None or found[1] >= 3:
            continue
        name, n = found
        df = n - 1
        what = (f"{df} degree(s) of freedom: t at z {rule.z:g} is {critical(rule.z, df):.3g}, "
                "so the gate stays inconclusive unless far from its bound" if df >= 1 else
                "no standard error, so z changes nothing: the value alone decides")
        out.append(f"{rule.metric} has z {rule.z:g}, but eval '{name}' at suite "
                   f"'{settings.suite}' averages {n} unit(s) ({what}); raise its budget "
                   f"([tool.pytest-saebench.evals.{name}]), use suite 'standard', or drop z")
    return list(dict.fromkeys(out))


def check_baseline(runner: Any, config: pytest.Config) -> None:
    """Read and check the baseline file now, when the run compares with it: a tampered or
    truncated one stops the run with one line (exit 4) instead of an error per gate; one a
    newer plugin wrote is said once."""
    s = runner.settings
    if not s.baseline or s.baseline.startswith("ckpt:") or s.update_baseline or \
            not s.regressions or not Path(s.baseline).is_file():
        return
    store = runner.baseline().open_store()
    if store is not None and store.newer:
        config.issue_config_time_warning(SaebenchWarning(
            f"{store.label}: written by pytest-saebench {store.newer}, newer than this "
            f"{__import__('pytest_saebench').__version__}: its entries are read as this "
            "version understands them"), stacklevel=2)


def build_runner(config: pytest.Config, sae_paths: list[str] | None = None,
                 say: Any = None) -> Any:
    """The session's Runner (None when nothing asks for an evaluation); with ``sae_paths``,
    one for those checkpoints under the same settings. ``say(line)`` tells the user what
    the slow start-up does (the imports, reading the checkpoints) as it happens."""
    from pytest_saebench.config import build_settings, check_sae_paths

    options = vars(config.option)
    if sae_paths is not None:
        options = {**options, "sae_path": sae_paths, "saebench_shard": None}
    elif not options.get("sae_path") and not options.get("saebench"):
        return None
    fc = file_config(config)
    settings = build_settings(options, fc, os.environ, resolve_metric=lambda n: n)
    if not settings.active:
        return None
    check_sae_paths(settings.sae_paths)
    import time

    started = time.perf_counter()
    if say is not None:  # the imports below take 10-20 s on a 2-core runner, before any line
        say("saebench: loading torch, transformer_lens and sae_lens ...")
    # Heavy imports (torch) only from here on: the user asked for an evaluation.
    from pytest_saebench.evals import metric_registry
    from pytest_saebench.loading.checkpoints import discover_all
    from pytest_saebench.runner import Runner
    from pytest_saebench.suites import check_suite, default_thresholds, eval_configs

    registry = metric_registry()
    settings = build_settings(options, fc, os.environ, resolve_metric=registry.resolve,
                              default_severity=lambda m: registry[m].default_severity,
                              volatile=lambda m: registry[m].volatile,
                              direction_of=lambda m: registry[m].direction)
    check_suite(settings.suite, settings.sources.get("suite", ""))
    configs = eval_configs(settings.suite, dict(settings.eval_overrides),
                           fc.section_label("evals"), settings.select_evals)
    settings = dataclasses.replace(settings, thresholds=settings.thresholds + default_thresholds(
        registry, configs, settings.thresholds))
    for message in few_units(settings, configs):
        config.issue_config_time_warning(SaebenchWarning(message), stacklevel=2)
    from pytest_saebench.evals import get_eval

    if settings.budget == "adaptive" and not any(getattr(get_eval(n), "ADAPTIVE", False)
                                                 for n in configs):
        config.issue_config_time_warning(SaebenchWarning(
            f"budget = 'adaptive', but none of this run's evals ({', '.join(configs)}) "
            "evaluates in looks (core does): every budget stays fixed"), stacklevel=2)
    if settings.cache and settings.cache_dir is None and getattr(config, "cache", None):
        settings = dataclasses.replace(settings, cache_dir=str(config.cache.mkdir("saebench")))
    for key in ("results_json", "html", "cache_dir"):
        value = getattr(settings, key)
        if value and not Path(value).is_absolute():
            settings = dataclasses.replace(
                settings, **{key: str(config.invocation_params.dir / value)})
    from pytest_saebench.loading.runs import check_replicates
    from pytest_saebench.sharding import in_shard

    refs = discover_all(list(settings.sae_paths))
    check_replicates(refs)  # a folder of runs holds replicates of one configuration
    mine = set(in_shard([r.id for r in refs], settings.shard))
    runner = Runner(settings, [r for r in refs if r.id in mine], configs, registry)
    runner.other_shards = [r.id for r in refs if r.id not in mine]
    check_baseline(runner, config)
    from pytest_saebench.evals import get_eval

    modules = [get_eval(name) for name in configs]
    if any(getattr(m, "NEEDS_MODEL", True) for m in modules):  # synthetic alone needs none
        runner.inputs.preflight(list(runner.checkpoints.values()),
                                any(getattr(m, "READS_DATASET", False) for m in modules))
    if say is not None:
        say(f"saebench: {len(refs)} checkpoint(s) read and checked in "
            f"{time.perf_counter() - started:.1f} s; the model loads at the first evaluation")
    return runner
