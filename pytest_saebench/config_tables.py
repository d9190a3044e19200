"""The parts of ``[tool.pytest-saebench]`` and the command line that are parsed on their own:
eval selection, model kwargs, the shard, frontier rules, and the checks of paths and sizes
(torch-free, like config.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates.regression import CKPT_PREFIX
from pytest_saebench.paths import missing_path

FileConfig = Any  # config.FileConfig; named here without importing config (it imports this)

__all__ = ["check_paths_and_sizes", "frontier_rules", "model_kwargs", "null_rules",
           "select_evals", "shard"]


def select_evals(options: Mapping[str, Any], fc: FileConfig, env: Mapping[str, str]
                  ) -> tuple[str, ...]:
    """``--saebench-evals a,b`` > ``SAEBENCH_EVALS`` > ``select-evals = [...]``; empty = all."""
    raw = options.get("saebench_evals") or env.get("SAEBENCH_EVALS")
    if raw:
        return tuple(x.strip() for x in raw.split(",") if x.strip())
    listed = fc.table.get("select-evals", [])
    if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed):
        raise SaebenchError(f"{fc.label}: 'select-evals' must be a list of eval names")
    return tuple(listed)


def model_kwargs(options: Mapping[str, Any], fc: FileConfig, env: Mapping[str, str]
                 ) -> dict[str, Any]:
    """``--saebench-model-kwargs JSON`` > ``SAEBENCH_MODEL_KWARGS`` > the file's
    ``[tool.pytest-saebench.model-kwargs]``: keyword arguments for
    ``HookedTransformer.from_pretrained_no_processing``."""
    import json

    for where, raw in (("--saebench-model-kwargs", options.get("saebench_model_kwargs")),
                       ("SAEBENCH_MODEL_KWARGS", env.get("SAEBENCH_MODEL_KWARGS"))):
        if raw:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise SaebenchError(f"{where} {raw!r}: not JSON ({exc.msg}); give an object "
                                    "such as '{\"fold_ln\": true}'") from None
            return _kwargs_object(value, where)
    return _kwargs_object(fc.table.get("model-kwargs", {}), fc.section_label("model-kwargs"))


def _kwargs_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SaebenchError(f"{where}: expected a table of keyword arguments such as "
                            f"{{ fold_ln = true }}, got {value!r}")
    for key in ("device", "dtype", "torch_dtype"):
        if key in value:
            raise SaebenchError(f"{where}: '{key}' is set by the run; use "
                                f"--saebench-{'device' if key == 'device' else 'dtype'}")
    return dict(value)


def shard(options: Mapping[str, Any], env: Mapping[str, str]) -> tuple[int, int] | None:
    """``--saebench-shard K/N`` > ``SAEBENCH_SHARD``; None: every checkpoint."""
    from pytest_saebench.sharding import parse_shard

    if options.get("saebench_shard"):
        return parse_shard(options["saebench_shard"], "--saebench-shard")
    if env.get("SAEBENCH_SHARD"):
        return parse_shard(env["SAEBENCH_SHARD"], "SAEBENCH_SHARD")
    return None


def frontier_rules(fc: FileConfig, resolve, direction_of, written: str | None = None
                   ) -> tuple[Any, ...]:
    """``[tool.pytest-saebench.frontier]`` rules, ``against`` relative to the file (checked
    to exist unless it is ``written``, the baseline this run updates)."""
    from pytest_saebench.gates.frontier import parse_frontier

    table = fc.table.get("frontier")
    if table is None:
        return ()
    return parse_frontier(table, fc.section_label("frontier"), resolve or (lambda n: n),
                          direction_of or (lambda m: "up"),
                          fc.path.parent if fc.path else None,
                          lambda key: fc.line_of(key, "frontier"), str(fc.path or ""),
                          written, check_results_file)


def null_rules(fc: FileConfig, resolve, gated: list[str], direction_of) -> tuple[Any, ...]:
    """``[tool.pytest-saebench.null]`` rules: gains over a random SAE of the checkpoint's
    shape (gates.null); ``default`` covers the thresholded metrics with a better direction."""
    from pytest_saebench.gates.null import parse_rules

    table = fc.table.get("null")
    if table is None:
        return ()
    return parse_rules(table, fc.section_label("null"), resolve or (lambda n: n), gated,
                       direction_of or (lambda m: "up"), lambda key: fc.line_of(key, "null"),
                       str(fc.path or ""))


def check_results_file(path: str, where: str) -> None:
    """Before anything is evaluated: ``path`` is a pytest-saebench results JSON (the full
    schema check comes when the gate reads it)."""
    import json

    if not Path(path).is_file():
        raise SaebenchError(f"{where}: against = {path}: no such file; write it from the sweep "
                            f"with --saebench-update-baseline={path}")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SaebenchError(f"{where}: against = {path}: not a results JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("tool") != "pytest-saebench":
        raise SaebenchError(f"{where}: against = {path}: not a pytest-saebench results file "
                            "(no tool key); give a results JSON of the sweep")


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_paths_and_sizes(values: dict[str, Any], where: dict[str, str],
                           options: Mapping[str, Any], env: Mapping[str, str],
                           baseline: str | None, update: str | None) -> None:
    """Usage errors, before anything is evaluated, for settings that would otherwise pass
    silently or fail deep inside a library."""
    device = str(values["device"])
    if not _DEVICE.match(device):
        raise SaebenchError(f"{where['device']}: unknown device '{device}'; use auto, cpu, "
                            "cuda, cuda:N or mps")
    if int(values["cache-size-mb"]) < 0:
        raise SaebenchError(f"{where['cache-size-mb']}: must be at least 0, got "
                            f"{values['cache-size-mb']}")
    results = values["results-json"]
    if results not in (None, "", "none") and Path(results).is_dir():
        raise SaebenchError(f"{where['results-json']}: {results} is a directory; give a file path "
                            "(e.g. saebench-results.json) or 'none'")
    cache_dir = values["cache-dir"]
    if cache_dir and Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise SaebenchError(f"{where['cache-dir']}: {cache_dir} is a file, not a directory; give a "
                            "directory or --saebench-no-cache")
    for path, key in ((values["html"], where["html"]), (update, "--saebench-update-baseline")):
        if path and Path(path).is_dir():
            raise SaebenchError(f"{key}: {path} is a directory; give a file path")
    dataset = str(values["dataset"])
    if dataset != "auto" and ":" not in dataset and missing_path(dataset):
        raise SaebenchError(f"{where['dataset']}: {dataset}: no such file or directory; give "
                            "an existing local path, a Hub dataset name (owner/name) or "
                            "saebench-reference:train")
    explicit = options.get("saebench_baseline") is not None or "SAEBENCH_BASELINE" in env
    if (explicit and baseline and not baseline.startswith(CKPT_PREFIX) and update is None
            and not Path(baseline).is_file()):
        raise SaebenchError(f"--saebench-baseline {baseline}: no such file; write one with "
                            f"--saebench-update-baseline={baseline}")


def baseline_paths(options: Mapping[str, Any], fc: FileConfig, env: Mapping[str, str],
                    values: dict[str, Any]) -> tuple[str | None, str | None]:
    """The baseline (a path, made absolute against the file that names it) and the path
    ``--saebench-update-baseline`` writes to (None when not updating)."""
    baseline = values["baseline"]
    from_file = (options.get("saebench_baseline") is None and "SAEBENCH_BASELINE" not in env
                 and baseline is not None)
    if baseline is not None:
        kind, raw = ((CKPT_PREFIX, baseline[len(CKPT_PREFIX):])
                     if baseline.startswith(CKPT_PREFIX) else ("", baseline))
        base = fc.path.parent if from_file and fc.path else Path.cwd()
        baseline = kind + str(base / raw) if not Path(raw).is_absolute() else baseline
    update = options.get("saebench_update_baseline")
    if update is None:
        return baseline, None
    if update:
        return baseline, str(Path.cwd() / update)
    if baseline is None or baseline.startswith(CKPT_PREFIX):
        raise SaebenchError(
            "--saebench-update-baseline needs a results JSON path: give "
            "--saebench-update-baseline=PATH or set baseline = \"baselines/saebench.json\" in "
            "[tool.pytest-saebench]")
    return baseline, baseline
