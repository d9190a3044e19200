"""The null reference of a checkpoint: a random-init SAE of its shape, built by sae_lens's own
training constructor from the checkpoint's cfg (the initialisation its trainer starts from),
evaluated on the same windows, so that each metric's gain over chance is a paired difference.

One null per (architecture, width, model, hook, seed) of a run; its folder and its eval
results live in the cache directory, so a later run pays nothing for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pytest_saebench.errors import SaebenchError
from pytest_saebench.loading.checkpoints import CheckpointRef

NULL_PREFIX = "null:"
# cfg entries that decide the null's weights (besides the seed and sae_lens's version)
SHAPE_KEYS = ("architecture", "d_in", "d_sae", "k", "apply_b_dec_to_input",
              "rescale_acts_by_decoder_norm", "jumprelu_init_threshold", "dtype")


def shape_of(ref: CheckpointRef) -> dict[str, Any]:
    """What makes two checkpoints share a null: their SAE shape, model and hook."""
    cfg = ref.cfg
    return {**{k: cfg.get(k) for k in SHAPE_KEYS}, "model": ref.model_name,
            "hook": ref.hook_name, "hook_out": ref.meta.get("hook_name_out"),
            "widths": ref.meta.get("matryoshka_widths")}


def null_key(ref: CheckpointRef, seed: int) -> str:
    """Short content key of ``ref``'s null at ``seed``."""
    from pytest_saebench.versions import library_versions

    parts = {"shape": shape_of(ref), "seed": seed,
             "sae_lens": library_versions().get("sae_lens")}
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build(ref: CheckpointRef, seed: int, root: Path | None) -> CheckpointRef:
    """The null checkpoint of ``ref``: written once under ``root`` (the cache directory; a
    temporary one when the cache is off) and reused by every checkpoint of the same shape."""
    key = null_key(ref, seed)
    base = root if root is not None else Path(tempfile.gettempdir()) / "saebench-null"
    folder = base / "null" / key
    if not (folder / "cfg.json").is_file():
        _write(ref, seed, folder)
    cfg = json.loads((folder / "cfg.json").read_text(encoding="utf-8"))
    return CheckpointRef(id=f"{NULL_PREFIX}{key}", path=folder, cfg=cfg, format="SAELens")


def _write(ref: CheckpointRef, seed: int, folder: Path) -> None:
    import torch
    from sae_lens.saes.sae import TrainingSAE

    cfg = {k: v for k, v in ref.cfg.items() if k != "device"}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sae = TrainingSAE.from_dict({**cfg, "device": "cpu"})
    except (KeyError, ValueError, TypeError) as exc:
        raise SaebenchError(f"{ref.where()}: sae_lens cannot build a random SAE of this shape "
                            f"for the null reference ({exc}); turn it off with "
                            "null-reference = \"off\"") from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    sae.save_inference_model(tmp)
    cfg_file = tmp / "cfg.json"
    written = json.loads(cfg_file.read_text(encoding="utf-8"))
    # the checkpoint's metadata whole: the model, hook, dataset and windows are read exactly
    # as for the checkpoint (separator, concatenation, kwargs), so their units pair
    written["metadata"] = {**(written.get("metadata") or {}), **(ref.cfg.get("metadata") or {}),
                           "null_reference_of_shape": shape_of(ref),
                           "null_reference_seed": seed}
    cfg_file.write_text(json.dumps(written, default=str), encoding="utf-8")
    try:
        os.replace(tmp, folder)  # another worker may have written it first: theirs stays
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def cache_file(root: Path | None, null_id: str, eval_name: str, parts: dict[str, Any]
               ) -> Path | None:
    """Where the null's result of one eval is kept (None when the cache is off): keyed by
    everything that changes its numbers."""
    if root is None:
        return None
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    digest = hashlib.sha256(blob).hexdigest()[:20]
    return root / "null" / null_id.removeprefix(NULL_PREFIX) / "results" / \
        f"{eval_name}-{digest}.json"


def read_cached(path: Path | None) -> Any:
    """The cached :class:`~pytest_saebench.evals.base.EvalResult`, or None."""
    if path is None or not path.is_file():
        return None
    from pytest_saebench.evals.base import EvalResult

    try:
        return EvalResult(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None  # a torn or older file: evaluated again and rewritten


def write_cached(path: Path | None, result: Any) -> None:
    """Keep one eval's null result (atomically: a reader never sees half a file)."""
    if path is None:
        return
    import dataclasses

    from pytest_saebench.atomic import json_bytes, write_many_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    data = dataclasses.asdict(result)
    data["details"] = []  # per-latent details of a random SAE: not needed for any gate
    write_many_atomic([(path, json_bytes(data))])
