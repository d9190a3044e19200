"""The results JSON (our envelope), one SAEBench-format file per (SAE, eval), and the
baseline; staged as (path, bytes) so the run writes them as one step (see outputs.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_saebench.atomic import json_bytes
from pytest_saebench.results import digest, envelope, per_eval_filename, saebench_output

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
    data["digest"] = digest(data)
    per_eval_dir = path.with_suffix("")
    files = [(per_eval_dir / eval_type_id / per_eval_filename(res.sae_id),
              json_bytes(saebench_output(res, eval_result, eval_id, True)))
             for res in results for eval_type_id, eval_result in res.evals.items()]
    return [*files, manifest(path, [p for p, _ in files]), (path, json_bytes(data))]


def _finite(data: Any) -> Any:
    """``data`` with infinities (a z without noise) as null: the file stays strict JSON."""
    import math

    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    return None if isinstance(data, float) and not math.isfinite(data) else data


MANIFEST = ".pytest-saebench-manifest.json"  # beside the SAEBench files: what a run wrote


def manifest(results_json: str | Path, written: list[Path]) -> tuple[Path, bytes]:
    """The manifest of this run's SAEBench files (paths relative to their folder), staged."""
    root = Path(results_json).with_suffix("")
    files = sorted(p.relative_to(root).as_posix() for p in written
                   if p.is_relative_to(root) and p.name != MANIFEST)
    return root / MANIFEST, json_bytes({"tool": "pytest-saebench", "files": files})


def ours(path: Path) -> bool:
    """Whether ``path`` is a regular file this plugin wrote: a results envelope, or a
    SAEBench-format file carrying its ``sae_bench_commit_hash`` marker."""
    import json

    if path.is_symlink() or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and (data.get("tool") == "pytest-saebench" or str(
        data.get("sae_bench_commit_hash", "")).startswith("pytest-saebench"))


def foreign(staged: list[tuple[Path, bytes]]) -> str:
    """Why these outputs must not be written: a file already at one of their paths that this
    plugin did not write ('' when there is none)."""
    for path, _blob in staged:
        if path.name == MANIFEST:
            continue
        if path.exists() and (path.is_dir() or path.stat().st_size and not ours(path)):
            return (f"{path} is in the way and was not written by pytest-saebench; move it or "
                    "write this output elsewhere")
    return ""


def stale_files(results_json: str | Path, written: list[Path]) -> list[Path]:
    """SAEBench files the last run listed in its manifest that this run's ``written`` files
    do not replace (another checkpoint or eval), each still carrying this plugin's marker:
    removed after the write, so the folder holds this run's files only. Nothing else is
    ever removed."""
    import json

    root = Path(results_json).with_suffix("")
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("tool") != "pytest-saebench" or \
            not isinstance(data.get("files"), list):
        return []
    keep = {p.resolve() for p in written}
    out = []
    for name in data["files"]:
        path = root / str(name)
        if ".." in Path(str(name)).parts or path.resolve() in keep or not ours(path):
            continue
        out.append(path)
    return sorted(out)


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
