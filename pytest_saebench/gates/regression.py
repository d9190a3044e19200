"""Regression rules against a baseline: one engine for the gate items and the compare CLI.

A baseline is a results JSON written by this plugin (``--saebench-json`` or
``--saebench-update-baseline``), or ``ckpt:PATH``: an older checkpoint evaluated in the same run.
Nothing here imports torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pytest_saebench.errors import SaebenchError, did_you_mean
from pytest_saebench.gates import lineage
from pytest_saebench.gates.budget import budget_used, futility_note, gate_key, look_of
from pytest_saebench.gates.thresholds import Outcome, fmt

RULE_KEYS = ("max_drop", "max_drop_pct", "max_change_pct", "z", "severity", "run_sd")
CKPT_PREFIX = "ckpt:"
# Environment keys that change numbers; a difference warns but does not block the comparison.
# Config entries that describe the checkpoint rather than how it was evaluated.
CHECKPOINT_KEYS = frozenset({"decoder_norm_folded"})
# How the standard error groups the units: the values do not depend on it, so runs that differ
# in it are compared (unpaired where their groups differ, and the message says so).
STDERR_KEYS = frozenset({"stderr_groups"})
# The plugin's version is one: it changes when the embedded reference model is retrained.
ENV_KEYS = ("python", "torch", "transformer_lens", "sae_lens", "device", "dtype", "platform",
            "pytest_saebench")


@dataclass(frozen=True)
class RegressionRule:
    """How far one metric may move from its baseline value.

    ``max_drop`` (absolute) and ``max_drop_pct`` (percent of the baseline) limit a move in the
    bad direction of the metric; ``max_change_pct`` limits a move either way (band metrics such
    as L0). With ``z`` the verdict is three-way on the interval of the difference, ``c``
    standard errors wide, ``c`` Student's t quantile at the two-sided tail of ``z`` under the
    normal. ``run_sd``: the run-to-run standard deviation of the metric between two trainings
    of one configuration, for a retrain judged against a main with one run (gates.retrain).
    """

    metric: str
    max_drop: float | None = None
    max_drop_pct: float | None = None
    max_change_pct: float | None = None
    z: float = 0.0
    severity: str = "error"
    source: str = ""
    run_sd: float | None = None

    def limit_text(self) -> str:
        """E.g. ``drop <= 0.01`` or ``change <= 15%``, and the confidence: ``, z 3``."""
        parts = []
        if self.max_drop is not None:
            parts.append(f"drop <= {self.max_drop:g}")
        if self.max_drop_pct is not None:
            parts.append(f"drop <= {self.max_drop_pct:g}%")
        if self.max_change_pct is not None:
            parts.append(f"change <= {self.max_change_pct:g}%")
        text = ", ".join(parts)
        return text + (f", z {self.z:g}" if self.z else "")


def parse_rules(table: Any, label: str, resolve, gated: list[str], line_of=None,
                path: str = "", default_severity=lambda metric: "error"
                ) -> tuple[RegressionRule, ...]:
    """Rules from ``[tool.pytest-saebench.regression]``.

    ``default = {...}`` applies to every metric that has a threshold (``gated``) and no rule of
    its own; other keys are metric ids or aliases.
    """
    if not isinstance(table, dict):
        raise SaebenchError(f"{label}: 'regression' must be a table, e.g. "
                            "default = { max_drop = 0.01 }")
    rules: dict[str, RegressionRule] = {}
    default = None
    for name, spec in table.items():
        where = f"{label} '{name}'"
        if not isinstance(spec, dict):
            raise SaebenchError(f"{where}: expected a table like {{ max_drop = 0.01 }}, "
                                f"got {spec!r}")
        metric = "default" if name == "default" else _resolve(resolve, name, where)
        line = line_of(name) if line_of else None
        rule = make_rule(metric, spec, where, f"{path}:{line}" if path and line else path,
                         default_severity(metric) if metric != "default" else "error")
        if name == "default":
            default = rule
        else:
            rules[metric] = rule
    if default is not None:
        for metric in gated:
            if metric not in rules:
                rules[metric] = RegressionRule(metric, default.max_drop, default.max_drop_pct,
                                               default.max_change_pct, default.z,
                                               default.severity, default.source)
    # a run-to-run standard deviation is in one metric's units: never a default
    if default is not None and default.run_sd is not None:
        raise SaebenchError(f"{label} 'default': run_sd is in one metric's units; give it on "
                            "each metric's own rule")
    return tuple(rules.values())


def make_rule(metric: str, spec: dict[str, Any], where: str, source: str = "",
              severity: str = "error") -> RegressionRule:
    """Validated :class:`RegressionRule` from a TOML table."""
    unknown = sorted(set(spec) - set(RULE_KEYS))
    if unknown:
        raise SaebenchError(f"{where}: unknown key '{unknown[0]}'"
                            f"{did_you_mean(unknown[0], list(RULE_KEYS))}")
    for key in (*RULE_KEYS[:4], "run_sd"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or value < 0 or not math.isfinite(value)):
            raise SaebenchError(f"{where}: {key} must be a non-negative number, got {value!r}")
    if not any(k in spec for k in RULE_KEYS[:3]):
        raise SaebenchError(f"{where}: give max_drop, max_drop_pct or max_change_pct "
                            "(e.g. { max_drop = 0.01 })")
    sev = spec.get("severity", severity)
    if sev not in ("error", "warn"):
        raise SaebenchError(f"{where}: severity must be 'error' or 'warn', got {sev!r}")
    run_sd = spec.get("run_sd")
    return RegressionRule(metric, spec.get("max_drop"), spec.get("max_drop_pct"),
                          spec.get("max_change_pct"), float(spec.get("z", 0.0)), sev, source,
                          None if run_sd is None else float(run_sd))


def _resolve(resolve, name: str, where: str) -> str:
    try:
        return resolve(name)
    except SaebenchError as exc:
        raise SaebenchError(f"{where}: {exc}") from None


def compare(rule: RegressionRule, direction: str, new: float | None, old: float | None,
            new_se: float | None = None, old_se: float | None = None, context: str = "",
            paired: Any = None, unpaired: str = "", look: Any = None,
            dfs: tuple[int | None, int | None] = (None, None)) -> Outcome:
    """Check ``new`` against the baseline value ``old``.

    Without ``rule.z`` the values decide: ``fail`` (``warn`` for warn rules) past an
    allowance, ``improved`` when the metric moved the good way, else ``pass``. With ``z`` the
    interval of the difference decides, three ways (STATISTICS.md §3): its standard error is
    the paired one (``paired``, a ``gates.stats.Difference``) where the runs share units,
    else ``hypot(new_se, old_se)``, and the message says which and (``unpaired``) why.
    ``look`` (gates.budget.Look): an adaptive budget's stopping look, whose critical value
    replaces the fixed budget's. ``dfs``: the two standard errors' degrees of freedom, for
    the unpaired form (Welch-Satterthwaite). Where the runs share units, the difference is
    taken over those units with or without ``z``: two runs on nested prefixes of the same
    windows (an adaptive look against a whole budget) differ over the windows both evaluated.
    """
    mid = rule.metric
    if old is None or not math.isfinite(old):
        return Outcome("skip", f"{mid}: the baseline has no value {context}")
    if new is None or not math.isfinite(new):
        return Outcome("fail", f"{mid} is undefined now but was {fmt(old)} in the baseline "
                               f"{context}")
    if rule.z:
        return _compare_interval(rule, direction, new, old, new_se, old_se, context, paired,
                                 unpaired, look, dfs)
    delta = new - old
    sign = {"up": 1.0, "down": -1.0}.get(direction, 0.0)
    moved = f"({fmt(old)} -> {fmt(new)}, Δ {delta:+.4g})"
    if paired is not None and math.isfinite(paired.delta):
        delta = paired.delta
        if paired.n_paired < max(paired.n_new, paired.n_old):
            moved = (f"({fmt(old)} -> {fmt(new)}, Δ {delta:+.4g} over the "
                     f"{paired.n_paired} units both evaluated)")
    broken = [label for bad, allow, label in rule_limits(rule, sign, delta, old) if bad > allow]
    if broken:
        verb = "regressed" if sign and -sign * delta > 0 else "changed"
        return Outcome("warn" if rule.severity == "warn" else "fail",
                       f"{mid} {verb} {moved}, beyond {', '.join(broken)} {context}".rstrip())
    if sign and sign * delta > 0:
        return Outcome("improved", f"{mid} improved {moved} {context}".rstrip())
    return Outcome("pass", f"{mid} {moved} within {rule.limit_text()} {context}".rstrip())


def rule_limits(rule: RegressionRule, sign: float, delta: float, old: float
            ) -> list[tuple[float, float, str]]:
    """``(how far it moved the wrong way, the allowance, its name)`` for each limit."""
    bad = -sign * delta if sign else abs(delta)
    out = []
    if rule.max_drop is not None:
        out.append((bad, rule.max_drop, f"max_drop {rule.max_drop:g}"))
    if rule.max_drop_pct is not None:
        out.append((bad, abs(old) * rule.max_drop_pct / 100,
                    f"max_drop_pct {rule.max_drop_pct:g}%"))
    if rule.max_change_pct is not None:
        out.append((abs(delta), abs(old) * rule.max_change_pct / 100,
                    f"max_change_pct {rule.max_change_pct:g}%"))
    return out


def difference(new: float, old: float, new_se: float | None, old_se: float | None,
               paired: Any, unpaired: str, dfs: tuple[int | None, int | None] = (None, None)
               ) -> tuple[float, float, int | None, str]:
    """``(delta, its standard error, degrees of freedom, basis)``: paired where the runs
    share units, else the two standard errors added, with Welch-Satterthwaite's degrees of
    freedom from each one's (``dfs``; None for one: known exactly)."""
    if paired is not None and paired.stderr is not None:
        return (paired.delta, paired.stderr, paired.df,
                f"paired over {paired.n_paired} units with identical inputs")
    return (new - old, math.hypot(new_se or 0.0, old_se or 0.0),
            welch_df((new_se, dfs[0]), (old_se, dfs[1])),
            f"unpaired{': ' + unpaired if unpaired else ''}")


def welch_df(*parts: tuple[float | None, int | None]) -> int | None:
    """Welch-Satterthwaite degrees of freedom of a sum of independent variances, each a
    ``(standard error, its degrees of freedom)``; None (the normal) when no part's degrees
    of freedom are known."""
    terms = [((se or 0.0) ** 2, df) for se, df in parts]
    total = sum(v for v, _ in terms)
    den = sum(v * v / df for v, df in terms if df and v > 0)
    if total <= 0 or den <= 0:
        return None
    return max(1, math.floor(total * total / den))


def _compare_interval(rule: RegressionRule, direction: str, new: float, old: float,
                      new_se: float | None, old_se: float | None, context: str, paired: Any,
                      unpaired: str, look: Any, dfs: tuple[int | None, int | None]) -> Outcome:
    from pytest_saebench.gates.stats import critical

    delta, se, df, basis = difference(new, old, new_se, old_se, paired, unpaired, dfs)
    c = look.critical(rule.z, df) if look is not None else critical(rule.z, df)
    moved = f"({fmt(old)} -> {fmt(new)}, Δ {delta:+.4g} ± {se:.2g}, {basis})"
    return decide(rule, direction, delta, se, c, old, moved, context, df)


def decide(rule: RegressionRule, direction: str, delta: float, se: float, c: float,
           old: float, moved: str, context: str, df: int | None = None) -> Outcome:
    """The three-way verdict of a rule with ``z`` on a difference ``delta ± c·se`` from the
    baseline value ``old`` (STATISTICS.md §3), carrying its fail test's evidence; ``moved``
    says what was compared, ``df`` the degrees of freedom ``c`` was taken at."""
    from pytest_saebench.gates.thresholds import evidence, with_evidence

    sign = {"up": 1.0, "down": -1.0}.get(direction, 0.0)
    limits = rule_limits(rule, sign, delta, old)
    found = evidence([bad - allow for bad, allow, _ in limits], se, c, df)
    return with_evidence(_decide(rule, sign, delta, se, c, limits, moved, context), found)


def _decide(rule: RegressionRule, sign: float, delta: float, se: float, c: float,
            limits: list[tuple[float, float, str]], moved: str, context: str) -> Outcome:
    from pytest_saebench.gates.stats import verdict

    mid = rule.metric
    half = c * se
    limits = [(bad, label, verdict(bad, se, allow, c)) for bad, allow, label in limits]
    how = "drop" if sign else "change"
    for bad, label, status in limits:
        if status == "fail":
            verb = "regressed" if sign and -sign * delta > 0 else "changed"
            return Outcome("warn" if rule.severity == "warn" else "fail",
                           f"{mid} {verb} {moved}: the {how} {fmt(bad)} ± {c:.3g}σ = "
                           f"[{fmt(bad - half)}, {fmt(bad + half)}] lies beyond {label} "
                           f"{context}")
    for bad, label, status in limits:
        if status == "inconclusive":
            return Outcome("inconclusive",
                           f"{mid} {moved}: the {how} {fmt(bad)} ± {c:.3g}σ = "
                           f"[{fmt(bad - half)}, {fmt(bad + half)}] holds {label}: "
                           f"inconclusive at z {rule.z:g} {context}")
    if sign and sign * delta - half > 0:
        return Outcome("improved", f"{mid} improved {moved} {context}")
    return Outcome("pass", f"{mid} {moved} within {rule.limit_text()} {context}")


def pair(metric: str, new: Any, old: Any) -> tuple[Any, str]:
    """``(gates.stats.Difference, '')`` of ``metric`` between two results over the units both
    evaluated with identical inputs, or ``(None, why not)``."""
    from pytest_saebench.gates.stats import paired_difference

    mine, theirs = new.units(metric), old.units(metric)
    if mine is None and not new.stderr(metric):
        return None, "the metric has no standard error"
    if theirs is None:
        return None, "the baseline recorded no per-unit sums (written before paired gates)"
    if mine is None:
        return None, "this run recorded no per-unit sums (repeated seeds)"
    found = paired_difference(mine[0], mine[1], theirs[1], theirs[0])
    if found is None:
        return None, ("no unit has the baseline's inputs (another seed, dataset, budget, "
                      "model or stderr_groups)")
    return found, ""


def check_metric(rule: RegressionRule, direction: str, new: Any, old: Any, label: str,
                 context: str) -> Outcome:
    """Compare one metric of two :class:`~pytest_saebench.results.SaeResults`; ``skip`` when
    the baseline lacks it or its eval ran with a different config."""
    metric, eval_type = rule.metric, rule.metric.split(".", 1)[0]
    if not old.computed(metric) or old.value(metric) is None:
        return Outcome("skip", f"{metric}: baseline {label} has no value for it "
                               f"(its suite is '{old.suite}')")
    diffs = config_differences(new.evals[eval_type].config, old.evals[eval_type].config)
    if diffs:
        return Outcome("skip", f"{metric} not compared: the {eval_type} eval config differs "
                               f"from baseline {label} in {', '.join(diffs)}")
    paired, why = pair(metric, new, old)
    used, base_used = budget_used(new.evals[eval_type].unstructured), \
        budget_used(old.evals[eval_type].unstructured)
    if paired is None and base_used < used:
        return Outcome("skip", f"{metric} not compared: baseline {label} evaluated "
                               f"{base_used:.0%} of the budget (an adaptive run) and this run "
                               f"{used:.0%}, and a metric without per-unit sums is comparable "
                               "only at equal budgets; write the baseline with "
                               f"--saebench-budget fixed {context}")
    unstructured = new.evals[eval_type].unstructured
    out = compare(rule, direction, new.value(metric), old.value(metric), new.stderr(metric),
                  old.stderr(metric), f"vs baseline {label} {context}", paired, why,
                  look_of(unstructured), (new.dof(metric), old.dof(metric)))
    return futility_note(out, unstructured, gate_key(rule))


def delta_stderr(metric: str, new: Any, old: Any) -> float | None:
    """The standard error of ``new - old`` on ``metric`` that a verdict with ``z`` uses:
    paired where the two runs share units, else the two standard errors added."""
    a, b = new.value(metric), old.value(metric) if old.computed(metric) else None
    if a is None or b is None:
        return None
    paired, why = pair(metric, new, old)
    se = difference(a, b, new.stderr(metric), old.stderr(metric), paired, why)[1]
    return se if se and math.isfinite(se) else None


def config_differences(new_config: dict[str, Any], old_config: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two eval configs (sorted), ignoring entries that
    describe the checkpoint itself."""
    keys = (set(new_config) | set(old_config)) - CHECKPOINT_KEYS - STDERR_KEYS
    return sorted(k for k in keys if _norm(new_config.get(k)) != _norm(old_config.get(k)))


def _norm(value: Any) -> Any:
    # JSON turns tuples into lists; compare them as equal.
    if isinstance(value, tuple | list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def env_differences(new_env: dict[str, Any], old_env: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for environment entries that differ."""
    return [f"{k}: {old_env.get(k)} -> {new_env.get(k)}" for k in ENV_KEYS
            if k in new_env and k in old_env and new_env[k] != old_env[k]]


def pick(baseline: dict[str, Any], sae_id: str, pattern: re.Pattern[str] | None = None
         ) -> tuple[Any, str]:
    """``(entry, how)``: the baseline entry for ``sae_id`` (same id, else the same point of
    another training run, else its nearest earlier step, else the only entry; see
    :mod:`lineage`) and how it was found ('' for the same id), or ``(None, why)``."""
    found = lineage.match(sae_id, baseline, pattern)
    if isinstance(found, str):
        return None, found
    return baseline[found.entry], found.how


def entry_label(label: str, entry: str, how: str) -> str:
    """``label`` naming the entry compared with when it is not the checkpoint's own id."""
    return f"{label} entry '{entry}' ({how})" if how else label
