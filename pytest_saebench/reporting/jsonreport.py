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
    per_eval_dir = path.with_suffix("")
    files = [(per_eval_dir / eval_type_id / per_eval_filename(res.sae_id),
              json_bytes(saebench_output(res, eval_result, eval_id, True)))
             for res in results for eval_type_id, eval_result in res.evals.items()]
    return [*files, (path, json_bytes(data))]


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
    return [(Path(runner.settings.update_baseline), json_bytes(data))]
