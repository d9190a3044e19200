"""Find SAE checkpoints (any format of :mod:`detect`) and read their cfg.json; torch is
imported only to convert a non-SAELens checkpoint."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pytest_saebench.errors import SaebenchError
from pytest_saebench.loading import hub
from pytest_saebench.loading.detect import (
    FORMATS,
    MARKERS,
    Format,
    format_of,
    looks_like_checkpoint,
    no_format_message,
    raw_files,
)
from pytest_saebench.loading.schema import read_json_object, validate_cfg

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
FIRST_INT = re.compile(r"(\d+)")
FORMATS_BY_NAME = {f.name: f for f in FORMATS}


@dataclass(frozen=True)
class CheckpointRef:
    """One SAE checkpoint found on disk, identified by a short id and a content hash."""

    id: str
    path: Path
    cfg: dict[str, Any] = field(repr=False, hash=False, compare=False)
    # What the user pointed at (``path`` is its SAELens copy) and the format it was read as.
    source: Path | None = field(default=None, compare=False)
    format: str = "SAELens"
    # Why this sweep member cannot be evaluated: its items fail with this line.
    error: str | None = field(default=None, compare=False)

    def where(self, name: str = CFG_FILE) -> str:
        """The user's file ``name`` for messages: in a SAELens folder itself; for a converted
        format (whose SAELens copy is temporary) the user's checkpoint and its format."""
        if self.source is None or self.source == self.path:
            return str(self.path / name)
        return f"{self.source} ({self.format} checkpoint)"

    @property
    def shown_path(self) -> str:
        """What the user pointed at (never the temporary converted copy)."""
        return str(self.source or self.path)

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
        found = FIRST_INT.search(self.hook_name)
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

    @property
    def matryoshka_widths(self) -> list[int]:
        """Nested prefix widths a Matryoshka SAE declares (``metadata.matryoshka_widths``, or
        SAELens's ``training_architecture_details``), ending at ``d_sae``; [] if none."""
        m = self.meta
        widths = m.get("matryoshka_widths") or (
            m.get("training_architecture_details") or {}).get("matryoshka_widths")
        d_sae = int(self.cfg.get("d_sae") or 0)
        if not widths:
            return []
        ok = (isinstance(widths, list) and all(isinstance(w, int) and not isinstance(w, bool)
                                               for w in widths)
              and all(0 < a < b for a, b in zip(widths, widths[1:], strict=False))
              and widths[0] > 0 and widths[-1] <= d_sae)
        if not ok:
            raise SaebenchError(f"{self.path / CFG_FILE}: matryoshka_widths must be strictly "
                                f"increasing integers in 1..d_sae={d_sae}, got {widths!r}")
        return widths if widths[-1] == d_sae else [*widths, d_sae]

    @cached_property
    def sha256(self) -> str:
        """SHA-256 over cfg.json (a converted copy's without its source path) and the weights
        file, in that order (read once per run:
        evaluation, xdist sharing and JUnit all need it); for a checkpoint that could not be
        read, over its path and the reason."""
        digest = hashlib.sha256()
        if self.error is not None:
            digest.update(f"{self.path}\0{self.error}".encode())
            return digest.hexdigest()
        # A converted copy records where it came from; the same checkpoint at another path
        # is the same artifact (baseline.py pairs it), so that path is not hashed.
        meta = self.cfg.get("metadata") if isinstance(self.cfg.get("metadata"), dict) else {}
        if "source_path" in meta:
            kept = {**self.cfg, "metadata": {k: v for k, v in meta.items()
                                             if k != "source_path"}}
            digest.update(json.dumps(kept, sort_keys=True).encode())
        else:
            with open(self.path / CFG_FILE, "rb") as fh:
                digest.update(fh.read())
        with open(self.path / WEIGHTS_FILE, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def _read_cfg(path: Path) -> dict[str, Any]:
    cfg_path = path / CFG_FILE
    cfg = read_json_object(cfg_path)
    validate_cfg(cfg_path, cfg)
    if not (path / WEIGHTS_FILE).is_file():
        raise SaebenchError(f"{path}: has {CFG_FILE} but no {WEIGHTS_FILE}")
    return cfg


def _sae_lens_dir(path: Path, fmt: Format) -> Path:
    """``path`` itself for a SAELens folder, else its converted SAELens copy."""
    from pytest_saebench.loading import formats, published, training_ckpt

    if fmt.name == "SAELens":
        if training_ckpt.is_training_checkpoint(read_json_object(path / CFG_FILE)):
            return training_ckpt.convert_training_checkpoint(path, formats.out_dir(path))
        return path

    if fmt.name == "dictionary_learning":
        return formats.convert_dictionary_learning(path)
    if fmt.name == "raw safetensors":
        found = raw_files(path)
        assert found is not None
        return formats.convert_raw(*found)
    convert = {"sparsify": published.convert_sparsify,
               "Gemma Scope": published.convert_gemma_scope,
               "Gemma Scope 2": published.convert_gemma_scope,
               "Llama Scope": published.convert_llama_scope,
               "Goodfire": published.convert_goodfire}[fmt.name]
    return convert(path, formats.out_dir(path))


def _one(ref_id: str, path: Path) -> CheckpointRef:
    """The checkpoint in folder (or Goodfire/raw file) ``path``; raises for a bad one."""
    if path.is_file():
        fmt = FORMATS_BY_NAME["Goodfire" if path.suffix in (".pt", ".pth")
                              else "raw safetensors"]
    else:
        if (path / "ae.pt").is_file() and not (path / "config.json").is_file():
            raise SaebenchError(
                f"{path}: ae.pt is a dictionary_learning SAE, but its trainer's config.json is "
                "missing; copy config.json from the training run's trainer_N/ folder (it holds "
                "trainer.dict_class, activation_dim, dict_size, lm_name and submodule_name)")
        fmt = format_of(path)
        if fmt is None:
            raise SaebenchError(f"{path}: {no_format_message(path)}")
    target = _sae_lens_dir(path, fmt)
    name = "SAELens training checkpoint" if fmt.name == "SAELens" and target != path else fmt.name
    ref = CheckpointRef(id=ref_id, path=target, cfg=_read_cfg(target), source=path,
                        format=name)
    _ = ref.matryoshka_widths  # validated where it enters, not mid-evaluation
    return ref


def _members(root: Path) -> list[Path]:
    """Folders under ``root`` holding a checkpoint (or looking like a broken one), sorted;
    a matching folder is not searched further. Symlinks are followed, each real folder once
    (a link back up the tree is no second sweep); a dangling one is said, once."""
    import warnings

    from pytest_saebench.errors import SaebenchWarning

    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, files in os.walk(root, followlinks=True):
        here = Path(dirpath)
        real = os.path.realpath(here)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        for name in sorted(d for d in [*dirnames, *files] if not d.startswith(".")):
            link = here / name
            if link.is_symlink() and not link.exists():
                warnings.warn(SaebenchWarning(f"{link}: a dangling symlink (to "
                                              f"{os.readlink(link)}); skipped"), stacklevel=2)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (here / d).exists()
                             and os.path.realpath(here / d) not in seen)
        if here != root and (format_of(here) is not None or looks_like_checkpoint(here)):
            found.append(here)
            dirnames[:] = []
    return sorted(found)


def _file_arg(path: Path) -> Path | None:
    """What a file argument stands for: its folder, itself (Goodfire/raw), or None."""
    if path.name in MARKERS or path.name == "config.json":
        return path.parent
    if path.suffix in (".pt", ".pth") or raw_files(path):
        return path
    return None


def discover(path_arg: str | Path) -> list[CheckpointRef]:
    """Checkpoints under ``path_arg``: the folder (or file) itself, or every folder below it
    that holds one, in any format of :mod:`detect`, ids ``<sweep>/<relative path>``.

    A single checkpoint that cannot be read raises; a sweep member that cannot be read is
    returned with ``error`` set, so the others are still evaluated.
    """
    spec = str(path_arg)
    if spec.startswith(hub.SAE_LENS_PREFIX):
        from pytest_saebench.loading.formats import converted_root

        ref_id, converted = hub.convert_sae_lens_release(spec, converted_root())
        return [CheckpointRef(id=ref_id, path=converted, cfg=_read_cfg(converted),
                              source=converted, format="SAELens")]
    if spec.startswith(hub.HF_PREFIX):
        ref_id, path = hub.cached_repo_path(spec)
        return [_renamed(ref, ref_id) for ref in _discover_path(path, spec)]
    return _discover_path(Path(path_arg).expanduser(), spec)


def _renamed(ref: CheckpointRef, repo_id: str) -> CheckpointRef:
    head, _, rest = ref.id.partition("/")
    return dataclasses.replace(ref, id=f"{repo_id}/{rest}" if rest else repo_id)


def _discover_path(path: Path, spec: str) -> list[CheckpointRef]:
    if not path.exists():
        raise SaebenchError(f"--sae-path {spec}: no such file or directory")
    if path.is_file():
        target = _file_arg(path)
        if target is None:
            raise SaebenchError(f"--sae-path {spec}: {no_format_message(path)}")
        path = target
    path = path.resolve()
    if path.is_file() or format_of(path) is not None:
        return [_one(path.stem if path.is_file() else path.name, path)]
    members = _members(path)
    if not members and looks_like_checkpoint(path):
        return [_one(path.name, path)]  # raises: a broken checkpoint, not a sweep
    if not members:
        raise SaebenchError(f"--sae-path {spec}: no SAE checkpoint in the directory or below "
                            f"it; {no_format_message(path)}")
    refs = []
    for member in members:
        ref_id = f"{path.name}/{member.relative_to(path).as_posix()}"
        try:
            refs.append(_one(ref_id, member))
        except SaebenchError as exc:
            refs.append(CheckpointRef(id=ref_id, path=member, cfg={}, source=member,
                                      format="unreadable", error=str(exc)))
    return refs


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
                ref = dataclasses.replace(ref, id=f"{ref.id}-{n}")
            refs.append(ref)
    return refs
