"""SIGTERM handled as Ctrl-C while the plugin evaluates (torch-free).

A cancelled CI job is sent SIGTERM (GitHub Actions: SIGINT, then SIGTERM, then SIGKILL).
Python's default for SIGTERM ends the process at once, outside pytest's interrupt handling;
raised as ``KeyboardInterrupt`` instead, the run ends the way Ctrl-C ends it: exit code 2,
"interrupted" in the summary, and no output written.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


def _as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def terminate_as_interrupt() -> Callable[[], None]:
    """Route SIGTERM to ``KeyboardInterrupt`` when it has the default disposition (a handler
    someone else installed, or SIGTERM ignored, is left alone); returns the undo."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None
    signal.signal(signal.SIGTERM, _as_interrupt)

    def undo() -> None:
        if signal.getsignal(signal.SIGTERM) is _as_interrupt:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return undo
