"""Find SAE checkpoints on disk and read their cfg.json, without importing torch."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pytest_saebench.errors import SaebenchError
from pytest_saebench.loading.schema import read_json_object, validate_cfg

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
_FIRST_INT = re.compile(r"(\d+)")


@dataclass(frozen=True)
class CheckpointRef:
    """One SAE checkpoint found on disk, identified by a short id and a content hash."""

    id: str
    path: Path
    cfg: dict[str, Any] = field(repr=False, hash=False, compare=False)

    @property
    def meta(self) -> dict[str, Any]:
        """SAELens v6 ``metadata`` merged over legacy top-level keys."""
        return {**self.cfg, **(self.cfg.get("metadata") or {})}

    @property
    def hook_name(self) -> str:
        """TransformerLens hook name the SAE reads (``hook_point`` in old configs)."""
        m = self.meta
        return str(m.get("hook_name") or m.get("hook_point"))

    @property
    def hook_layer(self) -> int:
        """Layer of the hook: ``hook_layer`` if given, else the first integer in the name."""
        m = self.meta
        if m.get("hook_layer") is not None:
            return int(m["hook_layer"])
        found = _FIRST_INT.search(self.hook_name)
        return int(found.group(1)) if found else 0

    @property
    def model_name(self) -> str | None:
        """Model named in the checkpoint, if any."""
        name = self.meta.get("model_name")
        return str(name) if name else None

    @property
    def context_size(self) -> int:
        """Context length the SAE was trained on (128 when unknown, as SAEBench)."""
        return int(self.meta.get("context_size") or 128)

    @property
    def prepend_bos(self) -> bool:
        """Whether training windows started with BOS (SAELens default True)."""
        value = self.meta.get("prepend_bos")
        return True if value is None else bool(value)

    @cached_property
    def sha256(self) -> str:
        """SHA-256 over cfg.json and the weights file, in that order (read once per run:
        evaluation, xdist sharing and JUnit all need it)."""
        digest = hashlib.sha256()
        for name in (CFG_FILE, WEIGHTS_FILE):
            with open(self.path / name, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()


def _is_checkpoint(path: Path) -> bool:
    return (path / CFG_FILE).is_file()


def _read_cfg(path: Path) -> dict[str, Any]:
    cfg_path = path / CFG_FILE
    cfg = read_json_object(cfg_path)
    validate_cfg(cfg_path, cfg)
    if not (path / WEIGHTS_FILE).is_file():
        raise SaebenchError(f"{path}: has {CFG_FILE} but no {WEIGHTS_FILE}")
    return cfg


def discover(path_arg: str | Path) -> list[CheckpointRef]:
    """Checkpoints under ``path_arg``: the directory itself, or each sub-directory holding one.

    A sweep directory yields one checkpoint per sub-directory with a cfg.json, ids
    ``<sweep>/<relative path>`` in sorted order.
    """
    if str(path_arg).startswith("sae_lens:"):
        from pytest_saebench.loading.formats import convert_sae_lens_release

        ref_id, converted = convert_sae_lens_release(str(path_arg))
        return [CheckpointRef(id=ref_id, path=converted, cfg=_read_cfg(converted))]
    path = Path(path_arg).expanduser()
    if not path.exists():
        raise SaebenchError(f"--sae-path {path_arg}: no such file or directory")
    if path.is_file() and path.name in (CFG_FILE, WEIGHTS_FILE):
        path = path.parent
    path = path.resolve()
    if _is_checkpoint(path):
        return [CheckpointRef(id=path.name, path=path, cfg=_read_cfg(path))]
    converted = _convert_foreign(path)
    if converted is not None:
        name = path.stem if path.is_file() else path.name
        return [CheckpointRef(id=name, path=converted, cfg=_read_cfg(converted))]
    if path.is_file():
        raise SaebenchError(
            f"--sae-path {path_arg}: expected a checkpoint directory holding {CFG_FILE} and "
            f"{WEIGHTS_FILE} (or ae.pt + config.json, or X.safetensors + X.json), got a file"
        )
    found = sorted({p.parent for p in path.rglob(CFG_FILE)}
                   | {p.parent for p in path.rglob("ae.pt") if (p.parent / "config.json").exists()})
    if not found:
        raise SaebenchError(
            f"--sae-path {path_arg}: no SAE checkpoint found (no {CFG_FILE} in the directory "
            "or below it); point it at a SAELens checkpoint or a directory of them"
        )
    refs = []
    for p in found:
        target = p if _is_checkpoint(p) else _convert_foreign(p)
        refs.append(CheckpointRef(id=f"{path.name}/{p.relative_to(path).as_posix()}",
                                  path=target, cfg=_read_cfg(target)))
    return refs


def _convert_foreign(path: Path) -> Path | None:
    """A SAELens copy of a dictionary_learning or raw safetensors checkpoint, else None."""
    from pytest_saebench.loading import formats

    if path.is_dir() and formats.is_dictionary_learning(path):
        return formats.convert_dictionary_learning(path)
    raw = formats.raw_files(path)
    return formats.convert_raw(*raw) if raw else None


def discover_all(paths: list[str]) -> list[CheckpointRef]:
    """Checkpoints for every ``--sae-path``; duplicate ids get a ``-2``, ``-3`` suffix."""
    refs: list[CheckpointRef] = []
    seen: dict[str, int] = {}
    seen_paths: set[Path] = set()
    for arg in paths:
        for ref in discover(arg):
            if ref.path in seen_paths:
                continue
            seen_paths.add(ref.path)
            n = seen.get(ref.id, 0) + 1
            seen[ref.id] = n
            if n > 1:
                ref = CheckpointRef(id=f"{ref.id}-{n}", path=ref.path, cfg=ref.cfg)
            refs.append(ref)
    return refs
