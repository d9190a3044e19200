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
    ends the reporter's current line before a bar is drawn; ``resume`` gives the line back to
    the reporter once a checkpoint's evaluation has printed (pytest's result letters then
    continue under their own prefix, not on a line of their own)."""

    def __init__(self, write_line: Callable[[str], None], tty: Callable[[], bool],
                 outside_capture: Callable[[], AbstractContextManager[Any]] = (
                     contextlib.nullcontext),
                 stream: Callable[[], IO[str]] | None = None,
                 newline: Callable[[], None] = lambda: None,
                 resume: Callable[[str], None] = lambda nodeid: None) -> None:
        self.write_line, self.tty, self.newline = write_line, tty, newline
        self.outside_capture, self.stream, self._resume = outside_capture, stream, resume
        self._bar: Any = None
        self._sae = ""
        self._printed = False

    def started(self, sae_id: str, name: str, done: int, total: int) -> None:
        """An eval of ``sae_id`` begins (``done`` of ``total`` finished before it)."""
        if not self.tty():
            return
        self._printed = True
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
        self._printed = True
        if self._bar is None or self._sae != sae_id:
            self.write_line(line)
            return
        with self.outside_capture():
            self._bar.write(line, file=self.stream() if self.stream else None)
            self._bar.update(done - self._bar.n)
            if done >= total:
                self._close()

    def item_done(self, nodeid: str) -> None:
        """The item ``nodeid`` that asked for an evaluation has its results (or its failure):
        remove the bar and hand the line back, if anything was printed."""
        if not self._printed:
            return
        self._printed = False
        with self.outside_capture():
            self._close()
            self._resume(nodeid)

    def close(self) -> None:
        """Remove a bar still shown (a run that asked for part of a suite)."""
        with self.outside_capture():
            self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
