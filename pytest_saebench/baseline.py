"""Main's baseline file, owned in one place (torch-free): its checkpoints' results, their
training runs and main's history, read and checked once, and the comparison a checkpoint of
this run gets from it (STATISTICS.md §6):

- the **same artifact** (its weights are a baseline entry's): paired with that entry;
- a **retrain** (a checkpoint of a training run whose weights are not main's): main's
  replicate runs at its position, and main's history where it holds more runs of the same
  training configuration;
- else the entry of the same id (or lineage's match), compared as an artifact.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_saebench.errors import SaebenchError
from pytest_saebench.gates import lineage
from pytest_saebench.gates.regression import entry_label, pick
from pytest_saebench.gates.retrain import Replicate
from pytest_saebench.results import SaeResults

ARTIFACT, RETRAIN = "artifact", "retrain"
SAME_WEIGHTS = "the same weights as main's: evaluation noise only"
# Main's history supplies replicates of a position when it holds at least this many runs of
# the same training configuration there (2 degrees of freedom: t at z = 2 is 4.5).
HISTORY_MIN_RUNS = 3


@dataclass(frozen=True)
class Comparison:
    """What a checkpoint is compared with: an ``entry`` (an artifact, paired), or main's
    ``main`` replicates at ``position`` (a retrain); ``label`` names it for messages."""

    kind: str
    entry: SaeResults
    label: str
    main: tuple[SaeResults, ...] = ()
    position: lineage.RunPlace | None = None
    training: str | None = None  # the replicates' configuration fingerprint
    how: str = ""  # how the position was found, when it is not the checkpoint's own
    why: str = "the same artifact: evaluation noise only"  # for an artifact: why so
    history: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    def main_text(self, n: int) -> str:
        """``main's 3 runs at 33,280 tokens`` (``n`` replicates)."""
        where = self.position.describe() if self.position is not None else "its position"
        return f"main's {n} run{'s' if n != 1 else ''} at {where}"


@dataclass(frozen=True)
class Missing:
    """Nothing in the baseline to compare a checkpoint with, and the whole reason why."""

    message: str


class BaselineStore:
    """A baseline results file: loaded on first use, then asked per checkpoint."""

    def __init__(self, path: str | Path, label: str, pattern: re.Pattern[str] | None = None):
        self.path, self.label, self.pattern = Path(path), label, pattern
        self._entries: dict[str, SaeResults] | None = None
        self._history: list[dict[str, Any]] | None = None
        self.newer = ""  # the version of a newer plugin that wrote the file, if one did

    def exists(self) -> bool:
        """Whether the file is there."""
        return self.path.exists()

    @property
    def entries(self) -> dict[str, SaeResults]:
        """Every checkpoint's results by id (raises SaebenchError for a file that is not a
        results JSON)."""
        if self._entries is None:
            from pytest_saebench.results import load_envelope, written_by_newer

            self._entries = {r.sae_id: r for r in load_envelope(self.path)[0]}
            self.newer = written_by_newer(self.path)
        return self._entries

    @property
    def history(self) -> list[dict[str, Any]]:
        """Main's history in the file (history.py), [] without one."""
        if self._history is None:
            from pytest_saebench import history

            self._history = history.read(self.path)
        return self._history

    def entry(self, sae_id: str) -> tuple[SaeResults | None, str]:
        """``(entry, how)`` by id or lineage (gates.regression.pick), or ``(None, why)``."""
        return pick(self.entries, sae_id, self.pattern)

    def comparison(self, res: SaeResults) -> Comparison | Missing | str:
        """What checkpoint ``res`` is compared with (module docstring), or why nothing: a
        whole message (:class:`Missing`), or lineage's reason its id matched no entry."""
        place = lineage.run_place(res.sae_id)
        recorded = [e for e in self.entries.values() if e.run.get("position")]
        if place is not None and recorded:
            found = self._replicates(res, place, recorded)
            if isinstance(found, Comparison):
                same = [e for e in found.main if res.sha256 and e.sha256 == res.sha256]
                if same:  # main's own run evaluated again: the same artifact
                    other = f"the same {_step(place)} of another training run"
                    how = "" if same[0].sae_id == res.sae_id else found.how or other
                    return Comparison(ARTIFACT, same[0], entry_label(self.label, same[0].sae_id,
                                                                     how), why=SAME_WEIGHTS)
            return found
        entry, how = self.entry(res.sae_id)
        if entry is None:
            return how
        label = entry_label(self.label, entry.sae_id, how)
        if res.sha256 and entry.sha256 == res.sha256:
            return Comparison(ARTIFACT, entry, label, why=SAME_WEIGHTS)
        if place is None and lineage.position(res.sae_id, self.pattern) is None:
            return Comparison(ARTIFACT, entry, label,  # a checkpoint outside any run
                              why="a checkpoint outside any training run: evaluation noise "
                                  "only")
        return Comparison(RETRAIN, entry, label, (entry,),
                          place or lineage.run_place(entry.sae_id), None, how)

    def _replicates(self, res: SaeResults, place: lineage.RunPlace,
                    recorded: list[SaeResults]) -> Comparison | Missing:
        groups: dict[str | None, list[SaeResults]] = {}
        for e in recorded:
            groups.setdefault(e.run.get("training"), []).append(e)
        mine = res.run.get("training")
        if mine in groups:
            key = mine
        elif len(groups) == 1:
            key = next(iter(groups))
        else:  # several configurations on main: the one lineage matches this checkpoint with
            found, why = self.entry(res.sae_id)
            if found is None or not found.run:
                return Missing(f"baseline {self.label} holds runs of {len(groups)} training "
                               "configurations and none is this checkpoint's; gate them from "
                               f"separate baseline files ({why or 'no entry matches'})")
            key = found.run.get("training")
        group = groups[key]
        at = lineage.nearest_position(place, {e.run["position"] for e in group})
        if isinstance(at, str):
            return Missing(f"baseline {self.label}: {at}: nothing to compare this "
                           f"checkpoint at {place.describe()} with")
        position, how = at
        main = tuple(sorted((e for e in group if e.run["position"] == position),
                            key=lambda e: e.sae_id))
        shown = lineage.RunPlace("", position)
        label = f"{self.label}: main's runs at {shown.describe()}" + (f" ({how})" if how else "")
        history = tuple(self._history_runs(shown.position, key, res.suite))
        return Comparison(RETRAIN, main[0], label, main, shown, key, how, history)

    def _history_runs(self, position: str, training: str | None, suite: str
                      ) -> list[dict[str, Any]]:
        """Main's history entries that ran this configuration at ``position`` (its runs
        written with a training fingerprint, the same suite)."""
        if training is None:
            return []
        try:
            runs = self.history
        except SaebenchError:
            return []  # a malformed history: the reports say so; the file's entries decide
        return [entry for entry in runs if entry.get("suite") == suite and any(
            isinstance(r, dict) and r.get("position") == position and
            r.get("training") == training for r in (entry.get("runs") or {}).values())]


def _step(place: lineage.RunPlace) -> str:
    return f"step ({place.tokens:,} tokens)" if place.tokens is not None else "final SAE"


def replicates(comparison: Comparison, metric: str) -> tuple[list[Replicate], str]:
    """Main's replicates of ``metric`` at the comparison's position, and where they came
    from: the baseline's own runs, or main's history when it holds more (at least
    :data:`HISTORY_MIN_RUNS` runs of the same training configuration)."""
    own = [Replicate(float(v), e.stderr(metric), e.dof(metric)) for e in comparison.main
           if (v := e.value(metric)) is not None]
    past, commits = [], set()
    for entry in comparison.history:
        for sae_id, r in (entry.get("runs") or {}).items():
            if r.get("position") == comparison.position.position and \
                    r.get("training") == comparison.training:
                value, stderr = (entry["values"].get(sae_id) or {}).get(metric, [None, None])
                if value is not None:
                    past.append(Replicate(float(value), stderr))
                    commits.add(str(entry.get("commit") or ""))
    if len(past) >= HISTORY_MIN_RUNS and len(past) > len(own):
        return past, f"main's history: {len(past)} runs of this configuration over " \
                     f"{len(commits)} commit(s)"
    return own, "the baseline's runs"


class Baselines:
    """The run's baseline (``baseline`` setting: a results file, or ``ckpt:PATH`` evaluated
    in this run) and each checkpoint's comparison with it; ``runner`` evaluates."""

    def __init__(self, runner: Any):
        self.runner, self.settings = runner, runner.settings
        self.store: BaselineStore | None = None
        self._records: dict[str, dict[str, Any]] = {}

    def record(self, sae_id: str) -> dict[str, Any]:
        """``sae_id``'s training-run record (loading.runs.run_record), read once."""
        if sae_id not in self._records:
            from pytest_saebench.loading.runs import run_record

            self._records[sae_id] = run_record(sae_id, self.runner.ref(sae_id).source)
        return self._records[sae_id]

    def open_store(self) -> BaselineStore | None:
        """The baseline file read and checked (None when it is not a file); raises
        SaebenchError naming the file for one that is not a valid results JSON."""
        from pytest_saebench.paths import relative_label

        spec = self.settings.baseline
        if self.store is None and spec and Path(spec).is_file():
            self.store = BaselineStore(spec, relative_label(spec), self.settings.step_pattern)
        if self.store is not None:
            _ = self.store.entries
        return self.store

    def comparison_for(self, sae_id: str) -> Comparison | tuple[str, str]:
        """What ``sae_id`` is compared with, or ``(why not, label)``; raises SaebenchError
        for a baseline file that is not a results JSON."""
        from pytest_saebench.gates.regression import CKPT_PREFIX
        from pytest_saebench.paths import relative_label

        spec = self.settings.baseline
        if spec is None:
            return ("no baseline configured: set baseline = \"baselines/saebench.json\" in "
                    "[tool.pytest-saebench] or pass --saebench-baseline PATH"), "-"
        if spec.startswith(CKPT_PREFIX):
            found = self._checkpoint_baseline(sae_id, spec[len(CKPT_PREFIX):])
            if isinstance(found, str):
                return found, spec
            return Comparison(ARTIFACT, found, spec, why="a ckpt: baseline is another "
                                                          "artifact evaluated on these windows")
        label = relative_label(spec)
        again = create_command(self.settings.sae_paths, label, self.settings.ini_arg)
        if self.store is None:
            if not Path(spec).exists():
                return f"no baseline at {label}; {update_advice(again, 'create')}", label
            self.store = BaselineStore(spec, label, self.settings.step_pattern)
        ref = self.runner.ref(sae_id)
        me = SaeResults(sae_id, ref.shown_path, ref.sha256, self.settings.suite,
                        run=self.record(sae_id))
        found = self.store.comparison(me)
        if isinstance(found, Missing):
            return f"{found.message}; {update_advice(again)}", label
        if isinstance(found, str):
            return (f"baseline {label} has no checkpoint '{sae_id}' ("
                    f"{found + '; ' if found else ''}it has "
                    f"{', '.join(self.store.entries) or 'none'}); {update_advice(again)}"
                    ), label
        return found

    def replicates_here(self, sae_id: str) -> list[str]:
        """This run's checkpoints that are replicates of ``sae_id``: the same position of
        another run of the same training configuration (``sae_id`` first)."""
        mine = lineage.run_place(sae_id)
        if mine is None:
            return [sae_id]
        training = self.record(sae_id).get("training")
        out = [sae_id]
        for other, ref in self.runner.checkpoints.items():
            place = lineage.run_place(other)
            if other != sae_id and ref.error is None and place is not None and \
                    place.position == mine.position and place.run != mine.run and \
                    self.record(other).get("training") == training:
                out.append(other)
        return out

    def _checkpoint_baseline(self, sae_id: str, path: str) -> SaeResults | str:
        """``ckpt:PATH``: the older checkpoint of ``sae_id`` there, evaluated in this run."""
        import dataclasses

        from pytest_saebench.loading.checkpoints import discover_all

        runner = self.runner
        if runner.baseline_checkpoints is None:
            runner.baseline_checkpoints = {f"baseline:{r.id}": dataclasses.replace(
                r, id=f"baseline:{r.id}") for r in discover_all([path])}
        names = {k.removeprefix("baseline:"): k for k in runner.baseline_checkpoints}
        found, _how = pick(names, sae_id, self.settings.step_pattern)
        if found is None:
            return (f"baseline checkpoints at {path} hold no '{sae_id}' (they are "
                    f"{', '.join(names)})")
        return runner.results(found)


def update_advice(command: str, verb: str = "update", env: Mapping[str, str] | None = None
                  ) -> str:
    """What to do about a baseline that is missing or lacks this checkpoint. A pull request
    must not write main's baseline: there the advice is to let main's workflow write it."""
    env = os.environ if env is None else env
    if env.get("GITHUB_EVENT_NAME", "").startswith("pull_request"):
        return ("this is a pull request: main's workflow writes the baseline when it gates "
                "main (--saebench-update-baseline on a push), and later pull requests compare "
                "with it; nothing to do here")
    return f"{verb} it with: {command}"


def create_command(sae_paths: tuple[str, ...], target: str,
                   config_file: str | None = None) -> str:
    """The command that writes a missing baseline (with the run's ``-c`` config file)."""
    paths = " ".join(f"--sae-path {shlex.quote(p)}" for p in sae_paths)
    config = f"-c {shlex.quote(config_file)} " if config_file else ""
    return f"pytest {config}{paths} --saebench-update-baseline={shlex.quote(target)}"
