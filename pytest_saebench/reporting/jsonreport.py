"""The results JSON (our envelope), one SAEBench-format file per (SAE, eval), and the
baseline; staged as (path, bytes) so the run writes them as one step (see outputs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_saebench.atomic import json_bytes
from pytest_saebench.results import envelope, per_eval_filename, saebench_output

Staged = list[tuple[Path, bytes]]


def results_files(runner: Any, checks: list[dict[str, Any]], eval_id: str) -> Staged:
    """``results-json`` and ``<results-json stem>/<eval_type_id>/<sae>_..json``, envelope last
    (it is what says the run finished).

    Per-eval files carry the per-latent details; the envelope leaves them out to stay small.
    """
    path = Path(runner.settings.results_json)
    results = runner.evaluated()
    data = envelope(results, runner.settings.suite, checks, runner.errors(), eval_id,
                    runner.run_info())
    if runner.evaluation_counts:
        data["evaluation_counts"] = runner.evaluation_counts
    for sae_id, gains in runner.null_gains.items():  # each gated metric against chance
        if sae_id in data["saes"]:
            data["saes"][sae_id]["null"] = _finite(gains)
    per_eval_dir = path.with_suffix("")
    files = [(per_eval_dir / eval_type_id / per_eval_filename(res.sae_id),
              json_bytes(saebench_output(res, eval_result, eval_id, True)))
             for res in results for eval_type_id, eval_result in res.evals.items()]
    return [*files, (path, json_bytes(data))]


def _finite(data: Any) -> Any:
    """``data`` with infinities (a z without noise) as null: the file stays strict JSON."""
    import math

    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    return None if isinstance(data, float) and not math.isfinite(data) else data


def stale_files(results_json: str | Path, written: list[Path]) -> list[Path]:
    """SAEBench-format files an earlier run left beside ``results_json`` that this run's
    ``written`` files do not replace (another checkpoint or eval): removed after the write,
    so the folder holds this run's files only."""
    root = Path(results_json).with_suffix("")
    keep = {p.resolve() for p in written}
    return sorted(p for p in root.glob("*/*.json") if p.resolve() not in keep)


def baseline_file(runner: Any, eval_id: str) -> Staged:
    """This run's results as the baseline (empty when no checkpoint was evaluated).

    The caller has refused already when the run was interrupted or an evaluation failed."""
    results = runner.evaluated()
    if not results:
        return []
    data = envelope(results, runner.settings.suite, [], {}, eval_id, runner.run_info())
    data["history"] = main_history(runner)[0]
    return [(Path(runner.settings.update_baseline), json_bytes(data))]


def main_history(runner: Any) -> tuple[list[dict[str, Any]], bool]:
    """``(main's runs, this run included)``: the baseline file's history, with this run
    appended when it writes the baseline (history.py). Raises SaebenchError for a malformed
    history."""
    from pytest_saebench import history
    from pytest_saebench.gates.regression import CKPT_PREFIX

    s = runner.settings
    path = s.update_baseline or (s.baseline if s.baseline and not s.baseline.startswith(
        CKPT_PREFIX) else None)
    if path is None:
        return [], False
    old = history.read(path)
    if not s.update_baseline:
        return old, False
    if "history-entry" not in runner._memo:
        runner._memo["history-entry"] = history.run_entry(
            runner.evaluated(), history.gated_metrics(s), s.suite, history.commit_id())
    return history.appended(old, runner._memo["history-entry"]), True
