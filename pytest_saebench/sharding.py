"""Shards of a sweep for a CI job matrix (``--saebench-shard K/N``) and merging their results.

The partition is round-robin over the sorted checkpoint ids: stable for a given set of
checkpoints (every job of a matrix computes the same one), and shard sizes differ by at most
one. Merging refuses shards that were not parts of one run: a different suite, eval configs,
model, dataset, seed, dtype or plugin version, or a checkpoint in two shards.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pytest_saebench.errors import SaebenchError

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
# What must agree between shards of one run (the envelope's "run" table, besides "shard").
SAME = ("eval_configs", "model", "dataset", "seed", "dtype")


def parse_shard(raw: str, where: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``; one line naming ``where`` otherwise."""
    m = _SHARD.match(str(raw))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise SaebenchError(f"{where}: expected K/N with 1 <= K <= N (e.g. 2/3: the second of "
                            f"three shards), got {raw!r}")
    return int(m.group(1)), int(m.group(2))


def in_shard(ids: list[str], shard: tuple[int, int] | None) -> list[str]:
    """The ids of shard ``K`` of ``N`` (all of them when ``shard`` is None), in input order."""
    if shard is None:
        return list(ids)
    k, n = shard
    mine = {sid for i, sid in enumerate(sorted(ids)) if i % n == k - 1}
    return [sid for sid in ids if sid in mine]


def merge(paths: list[str]) -> dict[str, Any]:
    """One envelope from shard results files; raises :class:`SaebenchError` with the reason
    when they are not parts of one run or overlap."""
    from pytest_saebench.results import load_envelope

    if not paths:
        raise SaebenchError("merge: no results files given")
    merged: dict[str, Any] | None = None
    owner: dict[str, str] = {}
    for path in paths:
        load_envelope(path)  # the schema check, with its one-line errors
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        check_shard(path, data)
        if merged is None:
            merged = {**data, "saes": {}, "checks": [],
                      "run": {**(data.get("run") or {}), "shard": None, "merged_from": []}}
        else:
            _same_run(merged, data, paths[0], path)
        for sae_id, entry in data["saes"].items():
            if sae_id in owner:
                raise SaebenchError(f"merge: checkpoint '{sae_id}' is in both {owner[sae_id]} "
                                    f"and {path}; shards of one run never overlap")
            owner[sae_id] = path
            merged["saes"][sae_id] = entry
        merged["checks"].extend(data.get("checks", []))
        merged["run"]["merged_from"].append(
            {"file": Path(path).name, "shard": (data.get("run") or {}).get("shard")})
    assert merged is not None
    _complete(merged["run"]["merged_from"])
    merged.pop("evaluation_counts", None)
    from pytest_saebench.results import digest

    merged["digest"] = digest(merged)
    return merged


CHECK_TYPES = {"sae": str, "metric": str, "kind": str, "status": str, "message": str,
               "limit": str}


def check_shard(path: str, data: dict[str, Any]) -> None:
    """A shard as its run wrote it, or one line saying what is wrong: its checks of the right
    shape, each check's value the one its checkpoint's entry records, and the file's digest
    (results.digest) intact, so a verdict or value edited by hand is refused."""
    from pytest_saebench.gates import VERDICTS
    from pytest_saebench.results import digest, envelope_results

    checks = data.get("checks")
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        raise SaebenchError(f"merge: {path}: 'checks' must be a list of gate records; re-run "
                            "the shard")
    for i, c in enumerate(checks):
        for key, kind in CHECK_TYPES.items():
            if not isinstance(c.get(key), kind):
                raise SaebenchError(f"merge: {path}: checks[{i}].{key} must be a "
                                    f"{kind.__name__}; re-run the shard")
        if c["status"] not in VERDICTS:
            raise SaebenchError(f"merge: {path}: checks[{i}].status {c['status']!r} is no "
                                f"verdict ({', '.join(VERDICTS)}); re-run the shard")
        value = c.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise SaebenchError(f"merge: {path}: checks[{i}].value must be a number or null")
    if data.get("digest") != digest(data):
        raise SaebenchError(f"merge: {path}: its digest does not match its checkpoints and "
                            "checks (edited after the run wrote it, or written by an older "
                            "plugin); re-run the shard")
    values = {r.sae_id: r for r in envelope_results(data)}
    for i, c in enumerate(checks):
        res = values.get(c["sae"])
        if res is not None and c.get("value") is not None and res.computed(c["metric"]) and \
                res.value(c["metric"]) != c["value"]:
            raise SaebenchError(f"merge: {path}: checks[{i}] has {c['metric']} = {c['value']} "
                                f"but its checkpoint's entry has {res.value(c['metric'])}; "
                                "re-run the shard")


def _complete(parts: list[dict[str, Any]]) -> None:
    """Shards 1..N of one N, each once, N read from the files' own ``run.shard``: a shard
    job that died before writing its results must not give a baseline without its
    checkpoints."""
    specs = [(p["file"], p["shard"]) for p in parts]
    if all(spec is None for _, spec in specs) and len(specs) == 1:
        return  # one whole, unsharded run
    missing_spec = [f for f, spec in specs if spec is None]
    if missing_spec:
        raise SaebenchError(f"merge: {missing_spec[0]} is not a shard's results (no "
                            "run.shard); merge the files --saebench-shard K/N wrote")
    seen: dict[int, str] = {}
    totals = set()
    for file, spec in specs:
        k, n = parse_shard(spec, f"merge: {file} run.shard")
        totals.add(n)
        if k in seen:
            raise SaebenchError(f"merge: {seen[k]} and {file} are both shard {k}/{n}; give each "
                                "shard's results once")
        seen[k] = file
    if len(totals) != 1:
        raise SaebenchError(f"merge: the files come from runs split {sorted(totals)} ways; "
                            "merge shards of one run only")
    (n,) = totals
    absent = [f"{k}/{n}" for k in range(1, n + 1) if k not in seen]
    if absent:
        have = ", ".join(f"{k}/{n}" for k in sorted(seen))
        raise SaebenchError(f"merge: incomplete run: shard(s) {', '.join(absent)} missing (have "
                            f"{have}); a shard job ended without results, so the merge would "
                            "leave out its checkpoints (rerun it)")


def _same_run(first: dict[str, Any], other: dict[str, Any], first_path: str,
              path: str) -> None:
    for key in ("suite", "version"):  # eval_id is per job: each shard has its own
        if first.get(key) != other.get(key):
            raise SaebenchError(f"merge: {path} has {key} {other.get(key)!r} but {first_path} "
                                f"has {first.get(key)!r}; merge shards of one run only")
    a, b = first.get("run") or {}, other.get("run") or {}
    for key in SAME:
        if json.dumps(a.get(key), sort_keys=True) != json.dumps(b.get(key), sort_keys=True):
            raise SaebenchError(f"merge: {path} was run with another {key} than {first_path} "
                                f"({_short(b.get(key))} vs {_short(a.get(key))}); merge shards "
                                "of one run only")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
