"""The parts of ``[tool.pytest-saebench]`` and the command line that are parsed on their own:
eval selection, model kwargs, the shard, frontier rules (torch-free, like config.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_saebench.errors import SaebenchError

FileConfig = Any  # config.FileConfig; named here without importing config (it imports this)

__all__ = ["frontier_rules", "model_kwargs", "select_evals", "shard"]


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
    from pytest_saebench.frontier import parse_frontier

    table = fc.table.get("frontier")
    if table is None:
        return ()
    return parse_frontier(table, fc.section_label("frontier"), resolve or (lambda n: n),
                          direction_of or (lambda m: "up"),
                          fc.path.parent if fc.path else None,
                          lambda key: fc.line_of(key, "frontier"), str(fc.path or ""),
                          written)
