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
