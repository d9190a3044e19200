"""Content-addressed cache of SAE-independent tensors (activations, clean losses, probing sets).

An entry is named by the SHA-256 of what produced it: model weights fingerprint, hook, data,
token budget, context size, dtype, seed, eval settings, and the library versions. Never by a
checkpoint. Each entry is ``<key>.safetensors`` (no pickle) plus ``<key>.json`` holding the
parts and the SHA-256 of the tensor file; a missing or mismatching sidecar means the entry is
recomputed. Writers hold a file lock per key and publish with ``os.replace``, so concurrent
pytest processes (or xdist workers) compute an entry once and never read half a file; the
lock's file is removed after it (no 0-byte files left behind).
Without a directory the cache lives in memory for the run only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from pytest_saebench.atomic import write_bytes_atomic
from pytest_saebench.versions import library_versions

Tensors = dict[str, torch.Tensor]
DEFAULT_MAX_BYTES = 4 << 30


@torch.inference_mode()
def model_fingerprint(model: torch.nn.Module, full_below: int = 200_000_000) -> str:
    """SHA-256 over every parameter's name, shape, dtype and bytes (models up to
    ``full_below`` elements); larger models hash a strided sample of each tensor."""
    h = hashlib.sha256()
    state = model.state_dict()
    total = sum(t.numel() for t in state.values())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        flat = t.reshape(-1)
        if total > full_below and flat.numel() > 65536:
            flat = flat[:: max(1, flat.numel() // 65536)]
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


class TensorCache:
    """``get(kind, parts, compute)``: the cached tensors for ``parts``, computing them once."""

    def __init__(self, root: Path | None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.root = Path(root) if root is not None else None
        self.max_bytes = max_bytes
        self._memory: dict[str, Tensors] = {}
        self.stats = {"hit": 0, "miss": 0, "corrupt": 0, "memory": 0}

    @staticmethod
    def key(kind: str, parts: dict[str, Any]) -> str:
        """Entry name: ``<kind>-<sha256 of the sorted JSON of parts + library versions>``."""
        blob = json.dumps({"kind": kind, **parts, "versions": library_versions()},
                          sort_keys=True, default=str)
        return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:32]}"

    def memory(self, kind: str, parts: dict[str, Any]) -> Tensors | None:
        """What this run holds in memory for ``parts`` (:meth:`get` or :meth:`hold`), or
        None; never reads the disk."""
        return self._memory.get(self.key(kind, parts))

    def hold(self, kind: str, parts: dict[str, Any], tensors: Tensors) -> None:
        """Keep ``tensors`` in memory for ``parts`` for the run (not written to disk): an
        object assembled from entries of its own, such as core's segmented sides."""
        self._memory[self.key(kind, parts)] = tensors

    def get(self, kind: str, parts: dict[str, Any], compute: Callable[[], Tensors],
            remember: bool = True) -> Tensors:
        """Tensors for ``parts``: from memory, else from disk, else ``compute()`` (stored).
        ``remember=False``: not kept in memory, for a caller that holds them itself."""
        key = self.key(kind, parts)
        if key in self._memory:
            self.stats["memory"] += 1
            return self._memory[key]
        out = self._get(key, kind, parts, compute)
        if remember:
            self._memory[key] = out
        return out

    def _get(self, key: str, kind: str, parts: dict[str, Any], compute: Callable[[], Tensors]
             ) -> Tensors:
        if self.root is None:
            self.stats["miss"] += 1
            return compute()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.root / f"{key}.lock"))
            lock.acquire()
        except OSError as exc:  # a full disk, a read-only folder: evaluate without the cache
            self._unwritable(exc)
            self.stats["miss"] += 1
            return compute()
        try:
            out = self._read(key)
            if out is None:
                self.stats["miss"] += 1
                out = compute()
                try:
                    self._write(key, kind, parts, out)
                except OSError as exc:
                    self._unwritable(exc)
            else:
                self.stats["hit"] += 1
        finally:
            lock.release()
            # The lock only spares a second writer the work (publishing is atomic), so its
            # file goes with it: one waiting on the old file still reads the published entry.
            Path(lock.lock_file).unlink(missing_ok=True)
        return out

    def _unwritable(self, exc: OSError) -> None:
        """Say once, in one line naming the folder and the fix, that the cache cannot be
        written; the run goes on with what it computes in memory."""
        import warnings

        from pytest_saebench.errors import SaebenchWarning

        if not self.stats.get("unwritable"):
            self.stats["unwritable"] = 1
            warnings.warn(SaebenchWarning(
                f"{self.root}: the tensor cache cannot be written ({exc.strerror or exc}); "
                "this run evaluates without it: free space there, or give "
                "--saebench-cache-dir elsewhere or --saebench-no-cache"), stacklevel=3)

    def entries(self, kind: str) -> list[Tensors]:
        """The entries of ``kind`` held in memory by this run."""
        return [v for k, v in self._memory.items() if k.startswith(f"{kind}-")]

    def _read(self, key: str) -> Tensors | None:
        data_path, meta_path = self.root / f"{key}.safetensors", self.root / f"{key}.json"
        if not data_path.exists() and not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            blob = data_path.read_bytes()
            if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
                raise ValueError("checksum mismatch")
            out = load_bytes(blob)
        except (OSError, ValueError, KeyError, TypeError):
            # A torn or edited entry is recomputed, never trusted.
            self.stats["corrupt"] += 1
            for p in (data_path, meta_path):
                p.unlink(missing_ok=True)
            return None
        os.utime(meta_path)  # mark as recently used for the size cap
        return out

    def _write(self, key: str, kind: str, parts: dict[str, Any], tensors: Tensors) -> None:
        blob = save_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
        meta = {"kind": kind, "parts": parts, "versions": library_versions(),
                "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        write_bytes_atomic(self.root / f"{key}.safetensors", blob)
        text = json.dumps(meta, default=str, indent=1)
        write_bytes_atomic(self.root / f"{key}.json", text.encode())
        self._trim(keep=key)

    def _trim(self, keep: str) -> None:
        """Delete least recently used entries until the cache is under ``max_bytes``."""
        entries = []
        for meta in self.root.glob("*.json"):
            data = meta.with_suffix(".safetensors")
            size = (data.stat().st_size if data.exists() else 0) + meta.stat().st_size
            entries.append((meta.stat().st_mtime, meta.stem, size))
        total = sum(e[2] for e in entries)
        for _, stem, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if stem == keep:
                continue
            for suffix in (".json", ".safetensors", ".lock"):
                (self.root / f"{stem}{suffix}").unlink(missing_ok=True)
            total -= size
