"""Main's history of every gated metric, kept inside the baseline file: each
``--saebench-update-baseline`` appends one run (commit, date, value and standard error of
each gated metric per checkpoint), the last :data:`LIMIT` runs. Torch-free.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates import lineage

LIMIT = 100
SPARKS = "▁▂▃▄▅▆▇█"


def commit_id(env: dict[str, str] | None = None) -> str | None:
    """The commit being gated: ``GITHUB_SHA`` in Actions, else git's HEAD, else None."""
    env = os.environ if env is None else env
    if env.get("GITHUB_SHA"):
        return env["GITHUB_SHA"]
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def gated_metrics(settings: Any) -> list[str]:
    """Every metric a gate of the run reads, in the order the gates were written."""
    found = [t.metric for t in settings.thresholds]
    for rules in (settings.regressions, settings.null_rules, settings.frontier):
        found += [r.metric for r in rules]
    return list(dict.fromkeys(found))


def run_entry(results: list[Any], metrics: list[str], suite: str,
              commit: str | None = None, when: float | None = None) -> dict[str, Any]:
    """This run as one history entry."""
    values: dict[str, dict[str, list[float | None]]] = {}
    runs: dict[str, dict[str, Any]] = {}
    for res in results:
        row = {m: [res.value(m), res.stderr(m)] for m in metrics if res.computed(m)}
        values[res.sae_id] = {m: [_finite(v), _finite(s)] for m, (v, s) in row.items()}
        if res.run.get("position") and res.run.get("training"):
            # what a later retrain finds replicates of its position by (baseline.replicates)
            runs[res.sae_id] = {"position": res.run["position"],
                                "training": res.run["training"]}
    stamp = time.gmtime(time.time() if when is None else when)
    return {"commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp),
            "suite": suite, "values": values, **({"runs": runs} if runs else {})}


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def read(path: str | Path) -> list[dict[str, Any]]:
    """The history in the baseline file at ``path`` ([] when the file has none, as a
    baseline written before histories; raises for a malformed one, naming the key)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:  # none yet (or a new, empty file)
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SaebenchError(f"{path}: cannot read the baseline's history ({exc})") from None
    history = data.get("history", []) if isinstance(data, dict) else []
    if not isinstance(history, list):
        raise SaebenchError(f"{path}: 'history' must be a list of runs; delete the key to "
                            "start the history anew")
    for i, entry in enumerate(history):
        ok = isinstance(entry, dict) and isinstance(entry.get("values"), dict) and all(
            isinstance(row, dict) and all(_pair(v) for v in row.values())
            for row in entry["values"].values())
        runs = entry.get("runs", {}) if isinstance(entry, dict) else {}
        ok = ok and isinstance(runs, dict) and all(
            isinstance(r, dict) and isinstance(r.get("position"), str) and
            isinstance(r.get("training"), str) for r in runs.values())
        if not ok:
            raise SaebenchError(f"{path}: history[{i}] is not a run of "
                                "{commit, date, values: {checkpoint: {metric: [value, "
                                "stderr]}}}; delete the key 'history' to start it anew")
    return history


def _pair(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(
        x is None or (isinstance(x, int | float) and not isinstance(x, bool)) for x in v)


def appended(history: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """``history`` with ``entry`` added, the oldest runs dropped past :data:`LIMIT`."""
    return [*history, entry][-LIMIT:]


def series(history: list[dict[str, Any]], sae_id: str, metric: str, pattern: Any = None
           ) -> list[tuple[int, float, float | None, str]]:
    """``(run number from 1, value, stderr, commit)`` of ``sae_id``'s ``metric`` on main:
    in each run the entry that checkpoint would be compared with (lineage.match)."""
    out = []
    for i, entry in enumerate(history, 1):
        found = lineage.match(sae_id, entry["values"], pattern)
        if isinstance(found, str):
            continue
        value, stderr = entry["values"][found.entry].get(metric, [None, None])
        if value is not None:
            out.append((i, float(value), stderr, str(entry.get("commit") or "")[:7]))
    return out


def replicate_band(history: list[dict[str, Any]], sae_id: str, metric: str
                   ) -> list[tuple[int, float, float, int]]:
    """``(run number from 1, mean, standard deviation, replicates)`` of main's replicate
    runs at ``sae_id``'s position in its training run, for each of main's runs that gated two
    or more replicates there (their spread is the noise a retrain is judged against)."""
    place = lineage.run_place(sae_id)
    if place is None:
        return []
    out = []
    for i, entry in enumerate(history, 1):
        at = [sid for sid, r in (entry.get("runs") or {}).items()
              if r.get("position") == place.position]
        values = [v for sid in at
                  if (v := (entry["values"].get(sid) or {}).get(metric, [None])[0]) is not None]
        if len(values) >= 2:
            mean = math.fsum(values) / len(values)
            sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
            out.append((i, mean, sd, len(values)))
    return out


def sparkline(values: list[float], noise: float = 0.0) -> str:
    """``▁▃▅█``: each value's place between the smallest and the largest, on a scale at
    least ``4 * noise`` tall (a standard error), so that runs within the noise of each other
    draw nearly flat instead of stretching a difference of 0.0001 to the full height."""
    lo, hi = min(values), max(values)
    scale = max(hi - lo, 4.0 * noise)
    if scale <= 0 or not math.isfinite(scale):
        return SPARKS[3] * len(values)
    pad = (scale - (hi - lo)) / 2  # the values' band centred on the scale
    top = len(SPARKS) - 1
    return "".join(SPARKS[round((v - lo + pad) / scale * top)] for v in values)
