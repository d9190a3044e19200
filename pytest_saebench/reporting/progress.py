"""Progress while checkpoints are evaluated: one line per finished eval (CI logs), and on a
terminal also a live tqdm bar per checkpoint naming the eval that is running."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import IO, Any


class Progress:
    """Receives the runner's eval events. ``outside_capture`` steps out of pytest's output
    capture (evaluation runs inside a test); ``stream`` is the terminal to write to then;
    ``tty`` says whether it is a terminal (asked when the first eval starts); ``newline``
    ends the reporter's current line before a bar is drawn."""

    def __init__(self, write_line: Callable[[str], None], tty: Callable[[], bool],
                 outside_capture: Callable[[], AbstractContextManager[Any]] = (
                     contextlib.nullcontext),
                 stream: Callable[[], IO[str]] | None = None,
                 newline: Callable[[], None] = lambda: None) -> None:
        self.write_line, self.tty, self.newline = write_line, tty, newline
        self.outside_capture, self.stream = outside_capture, stream
        self._bar: Any = None
        self._sae = ""

    def started(self, sae_id: str, name: str, done: int, total: int) -> None:
        """An eval of ``sae_id`` begins (``done`` of ``total`` finished before it)."""
        if not self.tty():
            return
        with self.outside_capture():
            if self._bar is None or self._sae != sae_id:
                self._close()
                self.newline()
                from tqdm import tqdm

                self._bar = tqdm(total=total, initial=done, desc=f"saebench {sae_id}",
                                 unit="eval", leave=False, dynamic_ncols=True,
                                 file=self.stream() if self.stream else None)
                self._sae = sae_id
            self._bar.total = max(total, done)
            self._bar.set_postfix_str(name)

    def finished(self, sae_id: str, name: str, seconds: float, done: int, total: int,
                 elapsed: float) -> None:
        """An eval of ``sae_id`` finished in ``seconds``; ``elapsed`` is the checkpoint's."""
        line = (f"saebench: {sae_id}: {name} {seconds:.1f} s ({done}/{total} evals, "
                f"{elapsed:.1f} s)")
        if self._bar is None or self._sae != sae_id:
            self.write_line(line)
            return
        with self.outside_capture():
            self._bar.write(line, file=self.stream() if self.stream else None)
            self._bar.update(done - self._bar.n)
            if done >= total:
                self._close()

    def close(self) -> None:
        """Remove a bar still shown (a run that asked for part of a suite)."""
        with self.outside_capture():
            self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
