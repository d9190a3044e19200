"""Paths as users read them: relative to a root they know (torch-free)."""

from __future__ import annotations

import os
from pathlib import Path


def relative_label(path: str, root: str | os.PathLike[str] | None = None) -> str:
    """``path`` relative to ``root`` (default: the working directory), in ``/`` form, when it
    lies below it; else ``path`` unchanged."""
    base = Path(root or os.getcwd()).resolve()
    try:
        return Path(path).resolve().relative_to(base).as_posix()
    except (ValueError, OSError):
        return path


# Files a dataset may be read from; a name ending in one is a path, never a Hub repository.
DATA_SUFFIXES = (".jsonl", ".json", ".txt", ".text", ".parquet", ".arrow", ".csv", ".gz",
                 ".zst", ".bz2", ".xz")


def looks_like_path(spec: str) -> bool:
    """True for a dataset spec that can only be a local path: absolute, home- or
    dot-relative, more than one ``/`` (a Hub id has exactly one), or a data file's suffix."""
    return (spec.startswith(("/", "~", ".", "\\")) or spec.count("/") > 1
            or spec.lower().endswith(DATA_SUFFIXES))


def missing_path(spec: str) -> bool:
    """True for a path-shaped ``spec`` (:func:`looks_like_path`) that does not exist."""
    return looks_like_path(spec) and not Path(spec).expanduser().exists()
