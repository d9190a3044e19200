"""Where a checkpoint stands in its training run, read from its id (torch-free, no files).

A baseline written on main holds the checkpoints of main's training run; a pull request's run
has its own. SAELens names a run's folder with a random id (``checkpoints/<run id>/<tokens
seen>/``), so the same point of training has another id in every run: it is matched by its
*position* instead, the id with the run-specific part and the step taken out (the series)
plus the step. When the steps differ, the nearest earlier step of the same series is the
comparison, and the message says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pytest_saebench.errors import SaebenchError

# SAELens: LanguageModelSAERunnerConfig appends uuid4().hex[:8] (or the wandb run id) to
# checkpoint_path, and SAETrainer names each checkpoint by n_training_samples (the final one
# ``final_<n>``). dictionary_learning: trainSAE saves ``trainer_<i>/checkpoints/ae_<step>.pt``.
# Other trainers: a trailing ``step_<n>``, ``checkpoint-<n>``, ``ckpt<n>``, ``iter_<n>``.
RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("SAELens run folder",
     re.compile(r"^(?P<head>(?:.*/)?)(?P<run>[a-z0-9]{8})/(?P<final>final_)?(?P<step>\d+)$"),
     "tokens"),
    ("dictionary_learning", re.compile(r"^(?P<head>.*?ae_)(?P<step>\d+)(?:\.pt)?$"), "steps"),
    ("step suffix",
     re.compile(r"^(?P<head>.*?(?:step|checkpoint|ckpt|iter)[-_]?)(?P<step>\d+)$", re.I),
     "steps"),
)


@dataclass(frozen=True)
class Position:
    """A checkpoint's place in training: its ``series`` (the id with the run id and the step
    replaced by ``*`` and ``#``), its ``step`` and what the step counts."""

    series: str
    step: int
    unit: str
    rule: str
    run: str = ""  # the id with the step alone replaced: one training run's checkpoints


def compile_pattern(pattern: str, where: str) -> re.Pattern[str]:
    """A user's ``step-pattern``: a regular expression with a ``step`` group (digits) and
    optionally a ``run`` group (the part that differs between training runs)."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise SaebenchError(f"{where}: not a regular expression ({exc}); e.g. "
                            r"'(?P<run>[^/]+)/step_(?P<step>\d+)'") from None
    if "step" not in compiled.groupindex:
        raise SaebenchError(f"{where}: needs a (?P<step>\\d+) group, e.g. "
                            r"'(?P<run>[^/]+)/step_(?P<step>\d+)'")
    return compiled


def position(sae_id: str, pattern: re.Pattern[str] | None = None) -> Position | None:
    """The training position ``sae_id`` names, or None (a checkpoint outside any run)."""
    if pattern is not None:
        found = pattern.search(sae_id)
        if found and found.group("step") and found.group("step").isdigit():
            return Position(_blank(sae_id, found), int(found.group("step")), "steps",
                            "step-pattern", _blank(sae_id, found, keep_run=True))
    for rule, regex, unit in RULES:
        found = regex.match(sae_id)
        if found:
            return Position(_blank(sae_id, found), int(found.group("step")), unit, rule,
                            _blank(sae_id, found, keep_run=True))
    return None


def _blank(sae_id: str, found: re.Match[str], keep_run: bool = False) -> str:
    """``sae_id`` with the ``run`` group as ``*`` (unless ``keep_run``) and the step
    (``final_`` included) as ``#``."""
    groups = found.re.groupindex
    spans = []
    if "run" in groups and found.group("run") is not None and not keep_run:
        spans.append((found.start("run"), found.end("run"), "*"))
    final = "final" in groups and found.group("final") is not None
    spans.append((found.start("final" if final else "step"), found.end("step"), "#"))
    out, at = [], 0
    for start, end, mark in sorted(spans):
        out += [sae_id[at:start], mark]
        at = end
    return "".join(out) + sae_id[at:]


@dataclass(frozen=True)
class Match:
    """The baseline entry a checkpoint is compared with, and how it was found ('' for the
    same id)."""

    entry: str
    how: str = ""


def match(sae_id: str, entries: Iterable[str], pattern: re.Pattern[str] | None = None
          ) -> Match | str:
    """The baseline entry for ``sae_id`` among ``entries``, or why there is none.

    Same id first; else the same series at the same step (another training run); else its
    nearest earlier step; else, for a checkpoint outside any run, the only entry there is.
    """
    names = list(entries)
    if sae_id in names:
        return Match(sae_id)
    mine = position(sae_id, pattern)
    if mine is not None:
        same = sorted((p.step, name) for name in names
                      if (p := position(name, pattern)) is not None and p.series == mine.series)
        if same:
            at = [name for step, name in same if step == mine.step]
            if at:
                return Match(at[-1], f"the same {_step(mine)} of another training run")
            earlier = [(step, name) for step, name in same if step < mine.step]
            if earlier:
                step, name = earlier[-1]
                return Match(name, f"the nearest earlier step: baseline at {step:,} "
                                   f"{mine.unit}, this checkpoint at {mine.step:,}")
            return (f"the baseline's checkpoints of series {mine.series} are all later than "
                    f"this one ({mine.step:,} {mine.unit}; it has {same[0][0]:,} and up)")
    if len(names) == 1:
        return Match(names[0], "the only checkpoint the baseline holds")
    return ""


def _step(p: Position) -> str:
    return f"step ({p.step:,} {p.unit})"


# -- a checkpoint's place among replicate training runs (STATISTICS.md §6) -----------------

# SAELens's layout of one training run: checkpoints/<run id>/<tokens>/ while it trains and
# the final SAE beside them (the quick start's output_path, final/). A folder of such runs
# (runs/seed0/, runs/seed1/, ...) holds replicates: the part before checkpoints/ or final
# names the run.
RUN_CHECKPOINT = re.compile(
    r"^(?:(?P<run>.*)/)?checkpoints/[a-z0-9]{8}/(?P<final>final_)?(?P<step>\d+)$")
RUN_FINAL = re.compile(r"^(?:(?P<run>.*)/)?final$")
FINAL = "final"


@dataclass(frozen=True)
class RunPlace:
    """Where a checkpoint stands among replicate runs: ``run`` (the folder of its training
    run, '' for a run given as ``--sae-path checkpoints --sae-path final``) and ``position``
    (``tokens:<n>`` or ``final``), the same in every replicate of one configuration."""

    run: str
    position: str

    @property
    def tokens(self) -> int | None:
        """Tokens seen at a mid-training position, None for the final SAE."""
        kind, _, n = self.position.partition(":")
        return int(n) if kind == "tokens" and n.isdigit() else None

    def describe(self) -> str:
        """``33,280 tokens`` or ``the final SAE``, for messages."""
        return f"{self.tokens:,} tokens" if self.tokens is not None else "the final SAE"


def run_place(sae_id: str) -> RunPlace | None:
    """The place of ``sae_id`` in a SAELens training run, or None (outside any run)."""
    found = RUN_CHECKPOINT.match(sae_id)
    if found:
        return RunPlace(found.group("run") or "", f"tokens:{int(found.group('step'))}")
    found = RUN_FINAL.match(sae_id)
    if found:
        return RunPlace(found.group("run") or "", FINAL)
    return None


def replicate_set(run: str) -> str:
    """The folder of replicate runs a run belongs to (``runs`` for ``runs/seed0``)."""
    return run.rpartition("/")[0]


def nearest_position(mine: RunPlace, positions: Iterable[str]) -> tuple[str, str] | str:
    """``(position, how)``: among ``positions`` (main's), the one a checkpoint at ``mine``
    is compared with: the same, else the nearest earlier tokens seen (said), or why none."""
    known = set(positions)
    if mine.position in known:
        return mine.position, ""
    steps = sorted(int(p.partition(":")[2]) for p in known if p.startswith("tokens:"))
    held = ", ".join([f"{n:,} tokens" for n in steps] + ["the final SAE"] * (FINAL in known))
    if mine.tokens is None:
        return f"main's replicates hold no final SAE (they hold {held})"
    earlier = [n for n in steps if n < mine.tokens]
    if not earlier:
        return (f"main's replicates hold nothing at or before {mine.describe()} "
                f"(they hold {held})")
    return (f"tokens:{earlier[-1]}", f"the nearest earlier step: baseline at {earlier[-1]:,} "
                                     f"tokens, this checkpoint at {mine.tokens:,}")
