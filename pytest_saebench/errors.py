"""User-facing errors: one line that names the file, the key and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SaebenchError(Exception):
    """A problem with the user's input (checkpoint, model, data, config).

    Shown as a single line, never with a traceback into torch.
    """


class SaebenchWarning(UserWarning):
    """Something the run goes on without, said once (e.g. config keys that were ignored)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message (its type's name when it has none), at most
    ``limit`` characters: what a one-line error quotes of a library's complaint."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
