"""What every eval receives (EvalContext) and returns (EvalResult), plus shared statistics."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from pytest_saebench.cache import TensorCache

if TYPE_CHECKING:  # the metric registry imports every eval: keep sae_lens and TL out of it
    from transformer_lens import HookedTransformer

    from pytest_saebench.loading.sae import LoadedSAE

TokenSource = Callable[[int, int, bool], torch.Tensor]
"""``(n_windows, context_size, prepend_bos) -> LongTensor [n_windows, context_size]``."""


@dataclass
class EvalContext:
    """Everything an eval may use; all of it is deterministic given ``seed``."""

    loaded: LoadedSAE
    model: HookedTransformer
    tokens: TokenSource
    device: str
    seed: int
    special_ids: frozenset[int]
    dataset: str = ""
    # SAE-independent results shared by all checkpoints of a run (probe activations,
    # LLM-side probes); keys must name the model, hook and config they depend on.
    memo: dict[str, Any] = field(default_factory=dict)
    # This checkpoint's work that several evals read (pooled SAE codes of the probing texts);
    # the runner drops it when it moves to another checkpoint.
    sae_memo: dict[str, Any] = field(default_factory=dict)
    # Disk (or in-memory) cache of SAE-independent tensors, and the model's identity in keys.
    cache: TensorCache = field(default_factory=lambda: TensorCache(None))
    model_key: str = ""
    dataset_key: str = ""  # the dataset plus what identifies its content (size, mtime)
    # Returns the run's autointerp judge from the plugin hook (None: not configured there).
    judge: Callable[[], Any] | None = None
    # An adaptive budget (gates.budget): called with the results of each look and the look
    # (gates.budget.Look); True when every gate reading them is decided. None: fixed budget.
    stop_when_decided: Callable[[EvalResult, Any], bool] | None = None

    def valid(self, tokens: torch.Tensor) -> torch.Tensor:
        """True where ``tokens`` is not a special token (BOS/EOS/PAD), on ``tokens``' device."""
        special = torch.tensor(sorted(self.special_ids), dtype=torch.long, device=tokens.device)
        return ~torch.isin(tokens, special)

    def cache_parts(self, **extra: Any) -> dict[str, Any]:
        """What SAE-independent work depends on, plus ``extra``; never the checkpoint."""
        out = {"model": self.model_key or f"unhashed:{id(self.model)}",
               "hook": self.loaded.hook.name, "dtype": str(self.model.cfg.dtype),
               "device": str(self.device), "seed": self.seed,
               "special_ids": sorted(self.special_ids), **extra}
        if self.loaded.hook_out is not None:  # a transcoder's work reads two hooks
            out["hook_out"] = self.loaded.hook_out.name
        return out


@dataclass
class EvalResult:
    """An eval's output: canonical metric ids -> value (None = undefined, with a reason)."""

    eval_type_id: str
    config: dict[str, Any]
    metrics: dict[str, float | None] = field(default_factory=dict)
    stderr: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    not_computed: dict[str, str] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)
    unstructured: dict[str, Any] = field(default_factory=dict)
    # What the standard errors resample (STATISTICS.md §1), JSON-ready: per phase a table of
    # per-unit sums and fingerprints (gates.stats.Units), and per metric its formula over
    # them (gates.stats.Formula). A regression gate pairs two runs' units through these.
    units: dict[str, Any] = field(default_factory=dict)
    formulas: dict[str, Any] = field(default_factory=dict)

    def set(self, metric_id: str, value: float | None, stderr: float | None = None,
            reason: str | None = None) -> None:
        """Record one metric; a non-finite value becomes None with ``reason``."""
        # numpy scalars become Python floats here: their repr ("np.float64(0.1)") would reach
        # JUnit properties and reports, and they are not JSON.
        value = None if value is None else float(value)
        stderr = None if stderr is None else float(stderr)
        if value is not None and not math.isfinite(value):
            reason = reason or f"computed value is {value}"
            value = None
        self.metrics[metric_id] = value
        if value is None:
            self.reasons[metric_id] = reason or "undefined"
        elif stderr is not None and math.isfinite(stderr):
            self.stderr[metric_id] = stderr

    def eval_result_metrics(self) -> dict[str, dict[str, float | None]]:
        """SAEBench's two-level ``{category: {key: value}}`` mapping."""
        out: dict[str, dict[str, float | None]] = {}
        for metric_id, value in self.metrics.items():
            _, category, key = metric_id.split(".", 2)
            out.setdefault(category, {})[key] = value
        return out


Stats = Mapping[str, torch.Tensor]


Groups = int | list[int]
"""How many contiguous groups (split evenly), or their boundaries (an adaptive budget's
prefix keeps the whole budget's)."""


def _bounds(n_units: int, groups: Groups) -> list[int]:
    return list(groups) if isinstance(groups, list) else group_bounds(n_units, groups)


def grouped_jackknife(
    per_unit: Stats, statistic: Callable[[Stats], float], n_groups: Groups = 20
) -> tuple[float, float | None]:
    """Value of ``statistic`` on the totals of ``per_unit`` and its grouped-jackknife stderr.

    ``per_unit`` maps names to tensors whose first dim indexes independent units (contexts).
    Units are split into ``n_groups`` contiguous groups (or at the given boundaries); tokens
    inside a context are correlated, so the context (not the token) is the unit of resampling.
    """
    totals = {k: v.sum(0) for k, v in per_unit.items()}
    value = statistic(totals)
    n_units = next(iter(per_unit.values())).shape[0]
    bounds = _bounds(n_units, n_groups)
    groups = len(bounds) - 1
    if groups < 2 or not math.isfinite(value):
        return value, None
    # each group's sums in one pass per key (not one slice per group and key: 128 groups)
    ids = torch.repeat_interleave(torch.arange(groups), torch.tensor(bounds).diff())
    lo, hi = bounds[0], bounds[-1]
    sums = {k: torch.zeros((groups, *v.shape[1:]), dtype=v.dtype, device=v.device)
            .index_add_(0, ids.to(v.device), v[lo:hi]) for k, v in per_unit.items()}
    loo = [statistic({k: totals[k] - sums[k][g] for k in per_unit}) for g in range(groups)]
    if not all(math.isfinite(x) for x in loo):
        return value, None
    mean = sum(loo) / groups
    var = (groups - 1) / groups * sum((x - mean) ** 2 for x in loo)
    return value, math.sqrt(var)


def group_bounds(n_units: int, n_groups: int) -> list[int]:
    """Where the contiguous groups of :func:`grouped_jackknife` start and end."""
    groups = max(1, min(n_groups, n_units))
    return torch.linspace(0, n_units, groups + 1).round().long().tolist()


def input_fingerprint(ctx: EvalContext, phase: str, **extra: Any) -> str:
    """What a unit's inputs depend on besides its own token ids: the model as loaded, its
    dtype, the hook(s) read and the special tokens (never the SAE, the device or the seed,
    which the token ids already reflect)."""
    # A model without a content key pairs with nothing: an object's id is no identity of its
    # weights (the unpaired form applies, and says so).
    parts = {"model": ctx.model_key or f"unkeyed:{uuid.uuid4().hex}",
             "dtype": str(ctx.model.cfg.dtype), "hook": ctx.loaded.hook.name,
             "hook_out": ctx.loaded.hook_out.name if ctx.loaded.hook_out is not None else None,
             "special_ids": sorted(ctx.special_ids), "phase": phase, **extra}
    return json.dumps(parts, sort_keys=True, default=str)


def unit_table(kind: str, per_unit: Stats, n_groups: Groups, tokens: torch.Tensor,
               inputs: str) -> dict[str, Any]:
    """A ``gates.stats.Units`` table (JSON form) of the contiguous groups
    :func:`grouped_jackknife` resamples: each scalar key of ``per_unit`` summed per group,
    and each group's fingerprint, a hash of ``inputs`` and its token ids."""
    from pytest_saebench.gates.stats import Units

    keys = tuple(k for k, v in per_unit.items() if v.dim() == 1)
    bounds = _bounds(tokens.shape[0], n_groups)
    sums, prints = [], []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        sums.append(tuple(float(per_unit[k][lo:hi].double().sum()) for k in keys))
        digest = hashlib.sha256(inputs.encode())
        digest.update(tokens[lo:hi].to(torch.int64).contiguous().numpy().tobytes())
        prints.append(digest.hexdigest()[:16])
    return Units(kind, keys, tuple(sums), tuple(prints)).to_json()


def record_mean_units(res: EvalResult, kind: str, rows: Mapping[str, Mapping[str, float]],
                      metrics: Mapping[str, str], inputs: str,
                      data: Mapping[str, str] | None = None) -> None:
    """Units for metrics that are means over units (datasets, classes, letters):
    ``rows`` maps each unit to its values by column, ``metrics`` each metric id to its
    column. Each unit's fingerprint hashes ``inputs`` with the unit's name and ``data[name]``,
    a digest of the data that decides the unit's inputs (a dataset file's content, a
    vocabulary), so a dataset revision never pairs; each metric becomes the mean of its
    column over the units that have it (gates.stats)."""
    from pytest_saebench.gates.stats import Formula, Units

    columns = sorted({c for m, c in metrics.items() if res.metrics.get(m) is not None})
    if len(rows) < 1 or not columns:
        return
    keys = tuple(k for c in columns for k in (f"v:{c}", f"n:{c}"))
    sums, prints = [], []
    for name, row in rows.items():
        sums.append(tuple(x for c in columns for x in (
            (float(row[c]), 1.0) if c in row and math.isfinite(row[c]) else (0.0, 0.0))))
        digest = (data or {}).get(name, "")
        prints.append(hashlib.sha256(f"{inputs}|{name}|{digest}".encode()).hexdigest()[:16])
    res.units[kind] = Units(kind, keys, tuple(sums), tuple(prints)).to_json()
    for metric, column in metrics.items():
        if column in columns:
            res.formulas[metric] = Formula(kind, {f"v:{column}": 1.0},
                                           {f"n:{column}": 1.0}).to_json()


def mean_stderr(values: list[float]) -> tuple[float, float | None]:
    """Mean of ``values`` and the standard error of that mean (None for fewer than 2)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def combine_repeats(results: list[EvalResult], seeds: list[int]) -> EvalResult:
    """One result from the same eval run with several seeds: each metric is the mean over the
    seeds and its stderr the standard error of that mean; every seed's value and the spread
    are kept under ``unstructured["repeats"]``. Details come from the first seed."""
    first = results[0]
    out = EvalResult(first.eval_type_id, {**first.config, "random_seed": seeds,
                                          "repeats": len(seeds)})
    values: dict[str, list[float | None]] = {}
    spread: dict[str, float] = {}
    for metric in first.metrics:
        vals = [r.metrics.get(metric) for r in results]
        values[metric] = vals
        if metric in first.not_computed:
            out.metrics[metric] = None
        elif any(v is None for v in vals):
            out.set(metric, None, reason=next((r.reasons.get(metric) for r in results
                                               if r.metrics.get(metric) is None), None))
        else:
            mean, stderr = mean_stderr([float(v) for v in vals])
            out.set(metric, mean, stderr)
            spread[metric] = max(vals) - min(vals)
    out.not_computed = dict(first.not_computed)
    out.details = first.details  # units stay empty: the seeds' runs share no windows to pair
    out.unstructured = {**first.unstructured,
                        "repeats": {"seeds": seeds, "values": values, "range": spread}}
    return out
