"""Atomic file writes: every output goes through a temporary file and ``os.replace``."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any


def _target_mode(path: Path) -> int:
    """The mode the file has now, else what the umask gives a new file (not mkstemp's 0600)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_many_atomic(files: list[tuple[str | Path, bytes]]) -> None:
    """Write several files as one step: every temporary file first, then one ``os.replace``
    each, so an interrupt or a full disk while writing leaves all the old files in place. A
    path that is a symlink is written through it, atomically in its target's folder."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, blob in files:
            path = Path(path)
            if path.is_symlink():  # write through the link: a shared target stays shared
                path = Path(os.path.realpath(path))
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = _target_mode(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.chmod(tmp, mode)
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


def json_bytes(data: Any) -> bytes:
    """The JSON every output file uses (indented, no NaN)."""
    return (json.dumps(data, indent=1, allow_nan=False) + "\n").encode("utf-8")


def write_bytes_atomic(path: str | Path, blob: bytes) -> Path:
    """Write via a temporary file in the same directory and ``os.replace``: never half-written,
    and the file keeps its mode."""
    write_many_atomic([(path, blob)])
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically (see :func:`write_bytes_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON (no NaN) to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    return write_bytes_atomic(path, json_bytes(data))
