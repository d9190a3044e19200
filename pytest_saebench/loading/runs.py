"""Replicate training runs (STATISTICS.md §6), torch-free: where each checkpoint stands in
its run (gates.lineage.run_place), the training configuration it came from (SAELens's
``runner_cfg.json`` beside the weights), and the check that a folder of runs holds
replicates of one configuration, differing in the seed alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates.lineage import replicate_set, run_place
from pytest_saebench.loading.schema import read_json_object

RUNNER_CFG = "runner_cfg.json"  # sae_lens.constants.RUNNER_CFG_FILENAME
# Keys of a runner config that differ between replicates of one configuration by design:
# the seed, and the folders SAELens writes to (its checkpoint_path carries a random run id).
_UNSET = "(unset)"
PER_RUN_KEYS = frozenset({"seed", "checkpoint_path", "output_path", "resume_from_checkpoint",
                          "logger.wandb_id"})


def training_config(folder: Path) -> dict[str, Any] | None:
    """The flattened training configuration of the checkpoint in ``folder``: SAELens's
    ``runner_cfg.json`` when the trainer wrote one, else its ``cfg.json``; None if neither."""
    for name in (RUNNER_CFG, "cfg.json"):
        path = folder / name
        if path.is_file():
            return flatten(read_json_object(path))
    return None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}`` (lists kept whole)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def fingerprint(config: dict[str, Any]) -> str:
    """A short hash of a training configuration without its per-run keys: equal for
    replicates of one configuration, whatever their seeds."""
    kept = {k: v for k, v in config.items() if k not in PER_RUN_KEYS}
    blob = json.dumps(kept, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_record(sae_id: str, folder: Path | None) -> dict[str, Any]:
    """What the results and the baseline record of a checkpoint's training run: its run,
    position, seed and configuration fingerprint ({} outside a SAELens run)."""
    place = run_place(sae_id)
    if place is None:
        return {}
    config = training_config(folder) if folder is not None else None
    seed = config.get("seed") if config else None
    return {"run": place.run, "position": place.position,
            "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            "training": fingerprint(config) if config else None}


def check_replicates(refs: Iterable[Any], label: str = "--sae-path") -> None:
    """Refuse a folder of runs (``--sae-path runs/``, each subfolder one SAELens run) whose
    configurations differ in more than the seed, naming the keys that differ and what each
    run has (one line)."""
    runs: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {}
    for ref in refs:
        place = run_place(ref.id)
        if place is None or place.run in runs.get(replicate_set(place.run), {}) or \
                getattr(ref, "error", None):
            continue
        config = training_config(Path(ref.source or ref.path))
        if config is not None:
            runs.setdefault(replicate_set(place.run), {})[place.run] = (ref.id, config)
    for folder, members in runs.items():
        if not folder or len(members) < 2:  # runs given one by one are not a folder of runs
            continue
        names = sorted(members)
        first = members[names[0]][1]
        keys = sorted({k for name in names[1:] for k in set(first) | set(members[name][1])
                       if k not in PER_RUN_KEYS
                       and first.get(k, _UNSET) != members[name][1].get(k, _UNSET)})
        if keys:
            shown = "; ".join(
                f"{k}: " + ", ".join(f"{n.rpartition('/')[2]} {members[n][1].get(k, _UNSET)!r}"
                                     for n in names) for k in keys[:3])
            more = f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""
            raise SaebenchError(
                f"{label} {folder or '.'}: its training runs are not replicates of one "
                f"configuration: they differ in {shown}{more}; replicates differ in the seed "
                "alone: give each configuration its own folder of runs")
