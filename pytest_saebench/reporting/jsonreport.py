"""The results JSON (our envelope) plus one SAEBench-format file per (SAE, eval)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_saebench.atomic import json_bytes, write_json_atomic, write_many_atomic
from pytest_saebench.results import envelope, per_eval_filename, saebench_output

PATH_KEY = pytest.StashKey[str]()


def write(runner: Any, checks: list[dict[str, Any]], eval_id: str) -> str:
    """Write ``results-json`` and ``<results-json stem>/<eval_type_id>/<sae>_..json``.

    Per-eval files carry the per-latent details; the envelope leaves them out to stay small.
    """
    path = Path(runner.settings.results_json)
    results = runner.evaluated()
    data = envelope(results, runner.settings.suite, checks, runner.errors(), eval_id)
    if runner.evaluation_counts:
        data["evaluation_counts"] = runner.evaluation_counts
    per_eval_dir = path.with_suffix("")
    files = [(per_eval_dir / eval_type_id / per_eval_filename(res.sae_id),
              json_bytes(saebench_output(res, eval_result, eval_id, True)))
             for res in results for eval_type_id, eval_result in res.evals.items()]
    # the envelope last: it is what says the run finished
    write_many_atomic([*files, (path, json_bytes(data))])
    return str(path)


def write_baseline(runner: Any, eval_id: str) -> str:
    """Write the results of this run as the baseline; returns a line for the terminal.

    The caller has refused already when the run was interrupted or an evaluation failed."""
    target = runner.settings.update_baseline
    results = runner.evaluated()
    if not results:
        return "baseline not written: no checkpoint was evaluated (deselected?)"
    try:
        write_json_atomic(target, envelope(results, runner.settings.suite, [], {}, eval_id))
    except OSError as exc:
        return f"baseline not written: {exc}"
    return f"baseline: wrote {target} ({len(results)} checkpoint(s))"
