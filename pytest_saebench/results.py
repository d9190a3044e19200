"""Results of a run: per-SAE eval outputs in SAEBench's schema inside our envelope."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_saebench import __version__

SCHEMA_VERSION = 1


@dataclass
class SaeResults:
    """Everything known about one evaluated checkpoint."""

    sae_id: str
    path: str
    sha256: str
    suite: str
    evals: dict[str, Any] = field(default_factory=dict)  # eval_type_id -> EvalResult
    sae_cfg: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    evaluated_by: str = "main"
    # What was evaluated, as it was loaded: "model" (loader, kwargs, processing flags),
    # "dataset" (name, streamed, pretokenized, ...), "sae" (folds applied at load).
    inputs: dict[str, Any] = field(default_factory=dict)
    # Its training run (loading.runs.run_record): run, position, seed, training fingerprint;
    # {} for a checkpoint outside a SAELens run.
    run: dict[str, Any] = field(default_factory=dict)

    def value(self, metric_id: str) -> float | None:
        """Value of ``metric_id`` (None if undefined or not computed)."""
        res = self.evals.get(metric_id.split(".", 1)[0])
        return None if res is None else res.metrics.get(metric_id)

    def stderr(self, metric_id: str) -> float | None:
        """Standard error of ``metric_id`` where one is defined."""
        res = self.evals.get(metric_id.split(".", 1)[0])
        return None if res is None else res.stderr.get(metric_id)

    def reason(self, metric_id: str) -> str | None:
        """Why ``metric_id`` is undefined or was not computed, if it is."""
        res = self.evals.get(metric_id.split(".", 1)[0])
        if res is None:
            return None
        return res.reasons.get(metric_id) or res.not_computed.get(metric_id)

    def units(self, metric_id: str) -> tuple[Any, Any] | None:
        """``(formula, units)`` (gates.stats) that ``metric_id``'s standard error resamples,
        or None where the eval recorded none (an older results file, a repeated run)."""
        from pytest_saebench.gates.stats import Formula, Units

        res = self.evals.get(metric_id.split(".", 1)[0])
        formula = None if res is None else getattr(res, "formulas", {}).get(metric_id)
        if formula is None:
            return None
        formula = Formula.from_json(formula)
        return formula, Units.from_json(res.units[formula.table])

    def dof(self, metric_id: str) -> int | None:
        """Degrees of freedom of ``metric_id``'s standard error: its units less one, or for
        ``--saebench-repeats N`` (the standard error of the mean over N seeds) N - 1; None:
        unknown, read as the normal."""
        found = self.units(metric_id)
        if found is not None and len(found[1]) >= 2:
            return len(found[1]) - 1
        res = self.evals.get(metric_id.split(".", 1)[0])
        repeats = (getattr(res, "unstructured", None) or {}).get("repeats")
        seeds = repeats.get("seeds") if isinstance(repeats, dict) else None
        return len(seeds) - 1 if isinstance(seeds, list) and len(seeds) >= 2 else None

    def computed(self, metric_id: str) -> bool:
        """True if the metric was computed (possibly as an undefined value)."""
        res = self.evals.get(metric_id.split(".", 1)[0])
        return (res is not None and metric_id in res.metrics
                and metric_id not in res.not_computed)

    def all_metrics(self) -> dict[str, float | None]:
        """Every computed metric id -> value."""
        return {k: v for res in self.evals.values() for k, v in res.metrics.items()}


def to_dict(res: SaeResults) -> dict[str, Any]:
    """Everything in ``res`` as JSON-ready data (details included)."""
    return dataclasses.asdict(res)


def from_dict(data: dict[str, Any]) -> SaeResults:
    """Inverse of :func:`to_dict`."""
    from pytest_saebench.evals.base import EvalResult

    evals = {k: EvalResult(**v) for k, v in data.get("evals", {}).items()}
    return SaeResults(**{**data, "evals": evals})


def config_hash(config: dict[str, Any]) -> str:
    """Short SHA-256 of an eval config (sorted JSON)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def environment(device: str, dtype: str, seed: int, threads: int = 0) -> dict[str, Any]:
    """Library versions and run settings that change numbers (CPU threads: the order of float
    sums)."""
    from pytest_saebench.versions import library_versions

    return {
        "python": platform.python_version(), **library_versions(), "device": device,
        "dtype": dtype, "seed": seed, "threads": threads,
        "platform": platform.platform(terse=True),
    }


def saebench_output(res: SaeResults, eval_result: Any, eval_id: str, with_details: bool
                    ) -> dict[str, Any]:
    """One eval as SAEBench's ``BaseEvalOutput`` dict."""
    return {
        "eval_type_id": eval_result.eval_type_id,
        "eval_config": eval_result.config,
        "eval_id": eval_id,
        "datetime_epoch_millis": int(time.time() * 1000),
        "eval_result_metrics": eval_result.eval_result_metrics(),
        "eval_result_details": eval_result.details if with_details else [],
        "sae_bench_commit_hash": f"pytest-saebench {__version__}",
        "sae_lens_id": "custom_sae",
        "sae_lens_release_id": res.sae_id,
        "sae_lens_version": res.env.get("sae_lens"),
        "sae_cfg_dict": res.sae_cfg,
        "eval_result_unstructured": eval_result.unstructured,
    }


def envelope(results: list[SaeResults], suite: str, checks: list[dict[str, Any]],
             errors: dict[str, str], eval_id: str,
             run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole run as our JSON envelope (``run``: what shards of one run share)."""
    saes: dict[str, Any] = {}
    for res in results:
        saes[res.sae_id] = {
            "path": res.path, "sha256": res.sha256, "suite": res.suite, "env": res.env,
            "seconds": round(res.seconds, 3), "evaluated_by": res.evaluated_by,
            "inputs": res.inputs,
            "eval_config_hash": {k: config_hash(v.config) for k, v in res.evals.items()},
            "evals": {k: saebench_output(res, v, eval_id, False) for k, v in res.evals.items()},
            "stderr": {m: s for v in res.evals.values() for m, s in v.stderr.items()},
            "reasons": {m: r for v in res.evals.values() for m, r in v.reasons.items()},
            "not_computed": {m: r for v in res.evals.values() for m, r in v.not_computed.items()},
            "error": None,
        }
        units = {k: {"tables": v.units, "formulas": v.formulas}
                 for k, v in res.evals.items() if getattr(v, "units", None)}
        if units:  # what a later run pairs with (a baseline without it still loads)
            saes[res.sae_id]["units"] = units
        if res.run:  # its training run: what replicates at a position are found by
            saes[res.sae_id]["run"] = res.run
    for sae_id, message in errors.items():
        saes.setdefault(sae_id, {"evals": {}})["error"] = message
    return {
        "schema_version": SCHEMA_VERSION, "tool": "pytest-saebench", "version": __version__,
        "created_epoch_millis": int(time.time() * 1000), "suite": suite, "eval_id": eval_id,
        "saes": saes, "checks": checks, **({"run": run} if run is not None else {}),
    }


def digest(data: dict[str, Any]) -> str:
    """A digest of an envelope's checkpoints and checks (every key but itself): a shard whose
    verdicts or values were edited by hand no longer matches it (``merge`` refuses it)."""
    body = {k: v for k, v in data.items() if k != "digest"}
    blob = json.dumps(body, sort_keys=True, allow_nan=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def per_eval_filename(sae_id: str) -> str:
    """SAEBench's file name for a custom SAE: ``{name}_custom_sae_eval_results.json``."""
    return f"{sae_id.replace('/', '_')}_custom_sae_eval_results.json"


def load_envelope(path: str | Path) -> tuple[list[SaeResults], list[dict[str, Any]], str]:
    """Read a results JSON written by the plugin: ``(results, checks, suite)``.

    Raises :class:`SaebenchError` naming the file for anything that is not such a file.
    """
    from pytest_saebench.errors import SaebenchError

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SaebenchError(f"{path}: cannot read results JSON ({exc}); re-create it with "
                            "--saebench-update-baseline") from None
    except ValueError as exc:
        raise SaebenchError(f"{path}: {exc}: this plugin never writes one (a tampered or "
                            "hand-edited file); re-create it with --saebench-update-baseline"
                            ) from None
    if not isinstance(data, dict) or data.get("tool") != "pytest-saebench":
        raise SaebenchError(f"{path}: not a pytest-saebench results file (no tool key)")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise SaebenchError(f"{path}: schema_version {data.get('schema_version')} is not "
                            f"{SCHEMA_VERSION}; re-create it with this plugin version")
    if not isinstance(data.get("saes"), dict):
        raise SaebenchError(f"{path}: 'saes' must be an object of checkpoint id -> results, "
                            f"got {type(data.get('saes')).__name__}; re-create the file with "
                            "--saebench-update-baseline")
    try:
        results = _envelope_results(data)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SaebenchError(f"{path}: malformed results entry ({type(exc).__name__}: {exc}); "
                            "re-create the file with --saebench-update-baseline") from None
    return results, data.get("checks", []), data.get("suite", "")


def _no_constant(name: str) -> float:
    raise ValueError(f"holds {name}")


def written_by_newer(path: str | Path) -> str:
    """The plugin version that wrote the results file at ``path`` when it is newer than this
    one ('' otherwise, or when it says none)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_no_constant)
        theirs = str(data.get("version", "")) if isinstance(data, dict) else ""
    except (OSError, ValueError):
        return ""

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) if p.isdigit() else 0 for p in v.split(".")[:3])

    return theirs if theirs and key(theirs) > key(__version__) else ""


def envelope_results(data: dict[str, Any]) -> list[SaeResults]:
    """The checkpoints' results of an envelope already checked by :func:`load_envelope`."""
    return _envelope_results(data)


def _envelope_results(data: dict[str, Any]) -> list[SaeResults]:
    from pytest_saebench.evals.base import EvalResult

    results = []
    for sae_id, entry in data["saes"].items():
        evals = {}
        for eval_type_id, out in entry.get("evals", {}).items():
            metrics = {f"{eval_type_id}.{cat}.{key}": value
                       for cat, values in out["eval_result_metrics"].items()
                       for key, value in values.items()}
            bad = [m for m, v in metrics.items()
                   if v is not None and (isinstance(v, bool) or not isinstance(v, int | float))]
            if bad:
                raise ValueError(f"saes.{sae_id}: metric {bad[0]} is not a number")
            prefix = f"{eval_type_id}."
            evals[eval_type_id] = EvalResult(
                eval_type_id, out.get("eval_config", {}), metrics,
                {k: v for k, v in entry.get("stderr", {}).items() if k.startswith(prefix)},
                {k: v for k, v in entry.get("reasons", {}).items() if k.startswith(prefix)},
                {k: v for k, v in entry.get("not_computed", {}).items() if k.startswith(prefix)},
                [], out.get("eval_result_unstructured") or {},
                *_units_of(entry, eval_type_id))
        # every SAEBench eval output repeats the checkpoint's cfg (the report groups by it)
        cfgs = [out.get("sae_cfg_dict") for out in entry.get("evals", {}).values()]
        sae_cfg = next((c for c in cfgs if isinstance(c, dict) and c), {})
        results.append(SaeResults(sae_id, entry.get("path", ""), entry.get("sha256", ""),
                                  entry.get("suite", data.get("suite", "")), evals,
                                  sae_cfg=sae_cfg,
                                  env=entry.get("env", {}), seconds=entry.get("seconds", 0.0),
                                  evaluated_by=entry.get("evaluated_by", "main"),
                                  inputs=entry.get("inputs") or {},
                                  run=_run_of(entry, sae_id)))
    return results


def _run_of(entry: dict[str, Any], sae_id: str) -> dict[str, Any]:
    """An entry's training-run record, checked ({} for a file written before replicates)."""
    run = entry.get("run") or {}
    if not isinstance(run, dict) or not isinstance(run.get("position", ""), str) or \
            not isinstance(run.get("training") or "", str):
        raise ValueError(f"saes.{sae_id}.run must be an object with a position string")
    return dict(run)


def _units_of(entry: dict[str, Any], eval_type_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tables, formulas)`` an entry recorded for one eval, checked; ``({}, {})`` for a
    results file written before units were recorded."""
    from pytest_saebench.gates.stats import Formula, Units

    recorded = (entry.get("units") or {}).get(eval_type_id) or {}
    tables, formulas = recorded.get("tables") or {}, recorded.get("formulas") or {}
    for table in tables.values():
        Units.from_json(table)  # raises ValueError for a malformed table
    for metric, formula in formulas.items():
        if Formula.from_json(formula).table not in tables:
            raise ValueError(f"units of {metric}: no table '{formula['table']}'")
    return dict(tables), dict(formulas)


def load_frontier(rule: Any, higher_is_better: bool) -> list[tuple[float, float, float]]:
    """The frontier (gates.frontier.pareto) of the checkpoints in ``rule.against``, a
    results JSON: ``(x, metric, stderr)`` points."""
    from pytest_saebench.errors import SaebenchError
    from pytest_saebench.gates.frontier import pareto

    if not Path(rule.against).is_file():
        raise SaebenchError(f"frontier '{rule.metric}': no results file at {rule.against}; "
                            f"write one from the sweep with --saebench-update-baseline="
                            f"{rule.against}")
    points = [(res.value(rule.x), res.value(rule.metric), res.stderr(rule.metric) or 0.0)
              for res in load_envelope(rule.against)[0]]
    return pareto([p for p in points if p[0] is not None and p[1] is not None],
                  1.0 if higher_is_better else -1.0)
