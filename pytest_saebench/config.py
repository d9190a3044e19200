"""Settings from the command line, ``SAEBENCH_*`` variables and ``[tool.pytest-saebench]``.

Precedence: CLI > environment > pyproject.toml > defaults. Nothing here imports torch; metric
ids are validated against a registry passed in by the caller.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_saebench.config_tables import (  # re-exported: cli.py and tests read them here
    baseline_paths,
    check_paths_and_sizes,
    frontier_rules,
    model_kwargs,
    null_rules,
    select_evals,
    shard,
)
from pytest_saebench.errors import SaebenchError, did_you_mean
from pytest_saebench.gates.lineage import compile_pattern
from pytest_saebench.gates.regression import RegressionRule, parse_rules
from pytest_saebench.gates.thresholds import Threshold, make_threshold, parse_cli_rule

TABLES = ("pytest-saebench", "saebench")
SCALAR_KEYS: dict[str, type] = {
    "suite": str, "model": str, "dataset": str, "device": str, "dtype": str, "seed": int,
    "results-json": str, "baseline": str, "on-missing-baseline": str, "html": str,
    "cache-dir": str, "cache-size-mb": int, "repeats": int, "threads": int,
    "step-pattern": str, "on-inconclusive": str, "budget": str, "null-reference": str,
    "family": str,
}
TABLE_KEYS = ("sae-path", "thresholds", "evals", "select-evals", "regression", "frontier",
              "model-kwargs", "null")
DEFAULTS: dict[str, Any] = {
    "suite": "fast", "model": "auto", "dataset": "auto", "device": "auto", "dtype": "float32",
    "seed": 42, "results-json": "saebench-results.json", "baseline": None,
    "on-missing-baseline": "skip", "html": None, "cache-dir": None, "cache-size-mb": 4096,
    "repeats": 1, "threads": 0, "step-pattern": None, "on-inconclusive": "warn",
    "budget": "fixed", "null-reference": "on", "family": "none",
}
CHOICES = {"budget": ("fixed", "adaptive"), "family": ("none", "holm"),
           "null-reference": ("on", "off"), "on-inconclusive": ("warn", "fail", "pass")}
# CLI dest / env variable for each scalar key.
CLI_DEST = {k: "saebench_" + k.replace("-", "_") for k in SCALAR_KEYS}
CLI_DEST["results-json"] = "saebench_json"
ENV_VAR = {k: "SAEBENCH_" + k.replace("-", "_").upper() for k in SCALAR_KEYS}
ENV_VAR["results-json"] = "SAEBENCH_JSON"


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one pytest run."""

    sae_paths: tuple[str, ...] = ()
    suite: str = "fast"
    model: str = "auto"
    dataset: str = "auto"
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 42
    results_json: str | None = "saebench-results.json"
    thresholds: tuple[Threshold, ...] = ()
    eval_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    select_evals: tuple[str, ...] = ()
    config_file: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict)  # key -> input it came from
    baseline: str | None = None  # results JSON path or ckpt:PATH
    on_missing_baseline: str = "skip"
    update_baseline: str | None = None  # where --saebench-update-baseline writes
    ini_arg: str | None = None  # pytest's -c, repeated in the commands messages suggest
    regressions: tuple[RegressionRule, ...] = ()
    html: str | None = None  # --saebench-html report path
    cache_dir: str | None = None  # tensor cache; None: in memory only
    cache: bool = True  # False: --saebench-no-cache
    cache_size_mb: int = 4096
    repeats: int = 1  # --saebench-repeats: run every eval with seeds seed .. seed + N - 1
    threads: int = 0  # --saebench-threads: torch's CPU threads; 0 = the CPUs this process may use
    shard: tuple[int, int] | None = None  # --saebench-shard K/N: evaluate shard K of N
    frontier: tuple[Any, ...] = ()  # [tool.pytest-saebench.frontier] rules (frontier.py)
    # Added to the checkpoint's model_from_pretrained_kwargs (TransformerLens names only).
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # step-pattern: how a checkpoint id names its training step (lineage.py), or None
    step_pattern: re.Pattern[str] | None = None
    # What an inconclusive gate (its interval holds its bound) does: warn | fail | pass.
    on_inconclusive: str = "warn"
    # fixed: every eval spends its whole budget; adaptive: the budget is a cap, evaluated in
    # looks that stop when every gate is decided (gates.budget)
    budget: str = "fixed"
    # on: each threshold also compares its metric with a random SAE of the checkpoint's
    # shape (null.py) and warns without signal; [tool.pytest-saebench.null] rules gate that
    # gain either way (gates.null)
    null_reference: str = "on"
    null_rules: tuple[Any, ...] = ()
    # none: each gate at its own z; holm: the run's fails obey Holm's step-down (family.py)
    family: str = "none"

    @property
    def active(self) -> bool:
        """True when there is something to evaluate."""
        return bool(self.sae_paths)


@dataclass
class FileConfig:
    """The ``[tool.pytest-saebench]`` table and where it came from."""

    path: Path | None
    table: dict[str, Any]
    label: str
    text: str = ""

    def section_label(self, section: str) -> str:
        """``pyproject.toml [tool.pytest-saebench.<section>]`` for messages (or ``section``)."""
        return f"{self.label.rsplit(']', 1)[0]}.{section}]" if self.label else section

    def line_of(self, key: str, section: str = "") -> int | None:
        """1-based line where ``key`` first appears (quoted or bare) in the file, inside
        ``[tool.<table>.<section>]`` when ``section`` is given."""
        inside = not section
        for number, line in enumerate(self.text.splitlines(), 1):
            head = line.strip()
            if section and head.startswith("["):
                # A header may carry a comment and spaces inside its brackets.
                name = head.split("#", 1)[0].strip().strip("[]").strip()
                inside = name.endswith(f".{section}")
                continue
            if inside and (f'"{key}"' in head or f"'{key}'" in head
                           or head.split("=", 1)[0].strip() == key):
                return number
        return None


def read_file_config(*start_dirs: Path) -> FileConfig:
    """Read ``[tool.pytest-saebench]`` (alias ``[tool.saebench]``) from the nearest
    pyproject.toml that has it, searching each of ``start_dirs`` and its parents."""
    seen: set[Path] = set()
    for start in start_dirs:
        for directory in (start, *start.parents):
            path = directory / "pyproject.toml"
            if path in seen or not path.is_file():
                continue
            seen.add(path)
            fc = _parse(path)
            if fc.table or fc.label:
                return fc
    return FileConfig(None, {}, "")


def _parse(path: Path) -> FileConfig:
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SaebenchError(f"{path}: invalid TOML ({exc})") from None
    tool = data.get("tool", {})
    for name in TABLES:
        if name in tool:
            return FileConfig(path, dict(tool[name]), f"{path.name} [tool.{name}]", text)
    return FileConfig(path, {}, "", text)


def _check_keys(fc: FileConfig) -> None:
    known = [*SCALAR_KEYS, *TABLE_KEYS]
    for key, value in fc.table.items():
        if key not in known:
            raise SaebenchError(f"{fc.label}: unknown key '{key}'{did_you_mean(key, known)}")
        expected = SCALAR_KEYS.get(key)
        if expected and (not isinstance(value, expected) or isinstance(value, bool)):
            raise SaebenchError(
                f"{fc.label}: '{key}' must be a {expected.__name__}, got {value!r}"
            )


def _file_paths(fc: FileConfig) -> list[str]:
    raw = fc.table.get("sae-path")
    if raw is None:
        return []
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise SaebenchError(f"{fc.label}: 'sae-path' must be a string or a list of strings")
    base = fc.path.parent if fc.path else Path.cwd()
    # a Hub spec is no path: it is not joined onto the pyproject's folder
    return [p if p.startswith(("sae_lens:", "hf:")) or Path(p).is_absolute()
            else str((base / p).resolve()) for p in items]


def sae_paths(cli_paths: list[str] | None, enabled: bool, fc: FileConfig,
              env: Mapping[str, str]) -> list[str]:
    """Checkpoints to evaluate: ``--sae-path``, else (only with ``--saebench``) env or file."""
    if cli_paths:
        return list(cli_paths)
    if not enabled:
        return []
    if env.get("SAEBENCH_SAE_PATH"):
        return env["SAEBENCH_SAE_PATH"].split(os.pathsep)
    paths = _file_paths(fc)
    if not paths:
        raise SaebenchError(
            "--saebench was given but no checkpoint: pass --sae-path PATH or set sae-path in "
            "[tool.pytest-saebench] of pyproject.toml"
        )
    return paths


def check_sae_paths(paths: list[str] | tuple[str, ...]) -> None:
    """A checkpoint path that does not exist stops the run before anything heavy is imported
    (``sae_lens:``/``hf:`` specs are resolved by discovery)."""
    for spec in paths:
        if spec.startswith(("sae_lens:", "hf:")):
            continue
        if not Path(spec).expanduser().exists():
            raise SaebenchError(f"--sae-path {spec}: no such file or directory")


def _thresholds(fc: FileConfig, cli_rules: list[str], resolve,
                default_severity=lambda metric: "error") -> tuple[Threshold, ...]:
    table = fc.table.get("thresholds", {})
    if not isinstance(table, dict):
        raise SaebenchError(f"{fc.label}: 'thresholds' must be a table")
    found: dict[str, Threshold] = {}
    label = fc.section_label("thresholds")
    for name, spec in table.items():
        where = f"{label} '{name}'"
        if not isinstance(spec, dict):
            raise SaebenchError(f"{where}: expected a table like {{ min = 0.8 }}, got {spec!r}")
        unknown = set(spec) - {"min", "max", "severity", "z"}
        if unknown:
            key = sorted(unknown)[0]
            raise SaebenchError(f"{where}: unknown key '{key}'"
                                f"{did_you_mean(key, ['min', 'max', 'severity', 'z'])}")
        for bound in ("min", "max"):
            if bound in spec and (isinstance(spec[bound], bool)
                                  or not isinstance(spec[bound], int | float)):
                raise SaebenchError(f"{where}: {bound} must be a number, got {spec[bound]!r}")
        metric = _resolve(resolve, name, where)
        line = fc.line_of(name, "thresholds")
        source = f"{fc.path}:{line}" if fc.path and line else str(fc.path or "")
        threshold = make_threshold(metric, spec.get("min"), spec.get("max"),
                                   spec.get("severity", default_severity(metric)), where,
                                   spec.get("z", 0.0))
        found[metric] = dataclasses.replace(threshold, source=source,
                                            severity_explicit="severity" in spec)
    for rule in cli_rules:
        name, op, number = parse_cli_rule(rule)
        metric = _resolve(resolve, name, f"--saebench-threshold '{rule}'")
        old = found.get(metric, Threshold(metric, severity=default_severity(metric),
                                          source="command line"))
        lo, hi = (number, old.max) if op == ">=" else (old.min, number)
        found[metric] = make_threshold(metric, lo, hi, old.severity,
                                       f"--saebench-threshold '{rule}'", old.z)
    return tuple(found.values())


def _resolve(resolve, name: str, where: str) -> str:
    try:
        return resolve(name)
    except SaebenchError as exc:
        raise SaebenchError(f"{where}: {exc}") from None


def build_settings(
    options: Mapping[str, Any],
    fc: FileConfig,
    env: Mapping[str, str],
    resolve_metric=None,
    default_severity=None,
    volatile=None,
    direction_of=None,
) -> Settings:
    """Merge CLI ``options`` (argparse dests), ``env`` and the file into :class:`Settings`.

    Returns an inactive ``Settings()`` when nothing asks for an evaluation; only then is the
    file left unvalidated, so a run without ``--sae-path`` changes nothing.
    """
    paths = sae_paths(options.get("sae_path"), bool(options.get("saebench")), fc, env)
    if not paths:
        return Settings()
    _check_keys(fc)
    values: dict[str, Any] = {}
    where: dict[str, str] = {}  # which input each value came from, for the error line
    for key, default in DEFAULTS.items():
        cli = options.get(CLI_DEST[key])
        where[key] = f"{fc.label}: '{key}'"
        if cli is not None:
            values[key] = cli
            where[key] = "--" + CLI_DEST[key].replace("_", "-")
        elif ENV_VAR[key] in env:
            where[key] = ENV_VAR[key]
            raw = env[ENV_VAR[key]]
            try:
                values[key] = SCALAR_KEYS[key](raw)
            except ValueError:
                raise SaebenchError(f"{ENV_VAR[key]}={raw!r}: expected an integer") from None
        else:
            values[key] = fc.table.get(key, default)
    evals = fc.table.get("evals", {})
    if not isinstance(evals, dict) or not all(isinstance(v, dict) for v in evals.values()):
        raise SaebenchError(f"{fc.label}: 'evals' must hold one table per eval, e.g. "
                            "[tool.pytest-saebench.evals.core]")
    thresholds = _thresholds(fc, list(options.get("saebench_threshold") or []),
                             resolve_metric or (lambda name: name),
                             default_severity or (lambda metric: "error"))
    results_json = values["results-json"]
    regressions = regression_rules(fc, resolve_metric or (lambda name: name),
                                   [t.metric for t in thresholds],
                                   default_severity or (lambda metric: "error"))
    for rule in regressions:
        if volatile is not None and volatile(rule.metric):
            raise SaebenchError(f"{fc.section_label('regression')}: '{rule.metric}' is a "
                                "run-dependent value (a wall-clock time); it is recorded but "
                                "never compared with a baseline, remove its rule")
    baseline, update = baseline_paths(options, fc, env, values)
    check_paths_and_sizes(values, where, options, env, baseline, update)
    for key, allowed in CHOICES.items():
        if values[key] not in allowed:
            names = [f"'{a}'" for a in allowed]
            raise SaebenchError(f"{where[key]}: must be {', '.join(names[:-1])} or "
                                f"{names[-1]}, got {values[key]!r}")
    if values["on-missing-baseline"] not in ("skip", "fail"):
        raise SaebenchError(f"{fc.label}: on-missing-baseline must be 'skip' or 'fail', "
                            f"got {values['on-missing-baseline']!r}")
    shard_spec = shard(options, env)
    frontier = frontier_rules(fc, resolve_metric, direction_of, update)
    if shard_spec is not None and update:
        raise SaebenchError("--saebench-update-baseline with --saebench-shard would write one "
                            "shard's checkpoints as the whole baseline; write it from the "
                            "merged results: python -m pytest_saebench merge SHARD.json... "
                            f"-o {update}")
    return Settings(
        ini_arg=options.get("inifilename"), shard=shard_spec, frontier=frontier,
        baseline=baseline, update_baseline=update, regressions=regressions,
        html=values["html"], cache_dir=values["cache-dir"],
        cache=not options.get("saebench_no_cache"), cache_size_mb=int(values["cache-size-mb"]),
        repeats=_positive(values["repeats"], where["repeats"]),
        threads=_at_least_zero(values["threads"], where["threads"]),
        on_missing_baseline=values["on-missing-baseline"],
        on_inconclusive=values["on-inconclusive"], budget=values["budget"],
        null_reference=values["null-reference"], family=values["family"],
        null_rules=null_rules(fc, resolve_metric, [t.metric for t in thresholds],
                              direction_of),
        select_evals=select_evals(options, fc, env),
        model_kwargs=model_kwargs(options, fc, env),
        step_pattern=(compile_pattern(values["step-pattern"], where["step-pattern"])
                      if values["step-pattern"] else None),
        sae_paths=tuple(paths), suite=values["suite"], model=values["model"],
        dataset=values["dataset"], device=values["device"], dtype=values["dtype"],
        seed=_seed(values["seed"], where["seed"]),
        results_json=None if results_json in ("", "none") else results_json,
        thresholds=thresholds, eval_overrides=evals, config_file=fc.path, sources=where,
    )


def regression_rules(fc: FileConfig, resolve, gated: list[str],
                     default_severity=lambda metric: "error") -> tuple[RegressionRule, ...]:
    """The file's ``[tool.pytest-saebench.regression]`` rules (``default`` covers ``gated``)."""
    return parse_rules(fc.table.get("regression", {}), fc.section_label("regression"), resolve,
                       gated, lambda key: fc.line_of(key, "regression"), str(fc.path or ""),
                       default_severity)


def _seed(value: Any, key: str) -> int:
    """numpy's generators take seeds from 0 to 2**32 - 1 only (``--saebench-repeats`` adds to
    it); anything else would fail inside every eval."""
    if not 0 <= int(value) < 2 ** 32:
        raise SaebenchError(f"{key}: the seed must be an integer from 0 to {2 ** 32 - 1}, got "
                            f"{value}")
    return int(value)


def _at_least_zero(value: Any, key: str) -> int:
    if int(value) < 0:
        raise SaebenchError(f"{key}: must be 0 (the CPUs this process may use) or more, got "
                            f"{value}")
    return int(value)


def _positive(value: Any, key: str) -> int:
    if int(value) < 1:
        raise SaebenchError(f"{key}: must be at least 1, got {value}")
    return int(value)
